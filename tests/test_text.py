"""Character-level data on the real Tiny Shakespeare and the small GPT: split, windows, shapes,
causality and the loss at initialisation."""
import math

import pytest
import torch

from gofau.lab import data, gpt, text

SHARED = data.default_data_dir()
needs_text = pytest.mark.skipif(not (SHARED / "tinyshakespeare.txt").is_file(),
                                reason=f"Tiny Shakespeare absent: expected {SHARED}/tinyshakespeare.txt "
                                       "(set GOFAU_DATA to the shared data folder)")


@pytest.fixture(scope="module")
def shakespeare():
    return text.load("tinyshakespeare")


@needs_text
def test_the_corpus_is_split_90_10_by_position_with_a_vocabulary_from_it(shakespeare):
    d = shakespeare
    assert d.identity["n_chars"] == 1_115_394 and d.vocab_size == 65  # nanoGPT's shakespeare_char numbers
    assert len(d.train) == 1_003_854 and len(d.val) == 111_540
    assert d.decode(d.train[:14]) == "First Citizen:"
    assert d.identity["sha256"] == data.KNOWN_SHA256["tinyshakespeare.txt"]
    assert torch.equal(d.encode("First"), d.train[:5])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        d.encode("€")


@needs_text
def test_windows_are_seeded_and_targets_are_the_inputs_shifted(shakespeare):
    ids = shakespeare.train
    a = text.windows(ids, 64, 12, torch.Generator().manual_seed(3))
    b = text.windows(ids, 64, 12, torch.Generator().manual_seed(3))
    c = text.windows(ids, 64, 12, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])
    x, y = a
    assert x.shape == y.shape == (12, 64) and torch.equal(x[:, 1:], y[:, :-1])
    with pytest.raises(ValueError, match="block must be in"):
        text.windows(ids[:10], 10, 2, torch.Generator())


def test_a_corpus_that_is_nowhere_is_an_error_listing_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("GOFAU_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="(?s)not found in data_dir.*tinyshakespeare.txt"):
        text.load("tinyshakespeare", data_dir=tmp_path)
    with pytest.raises(ValueError, match="name must be one of"):
        text.load("enwik8")


def test_a_damaged_copy_is_refused(tmp_path):
    (tmp_path / "tinyshakespeare.txt").write_text("not the corpus")
    with pytest.raises(ValueError, match="is damaged or another file"):
        text.load("tinyshakespeare", data_dir=tmp_path)


def model(**kw):
    torch.manual_seed(0)
    return gpt.GPT(65, **{**dict(block_size=16, n_layer=2, n_head=2, n_embd=32), **kw})


def test_shapes_weight_tying_and_initial_values():
    m = model()
    idx = torch.randint(65, (3, 16))
    assert m(idx).shape == (3, 16, 65) and m(idx[:, :5]).shape == (3, 5, 65)
    assert m.head.weight is m.wte.weight
    assert all((p == 0).all() for n, p in m.named_parameters() if n.endswith("bias"))
    assert all((p == 1).all() for n, p in m.named_parameters() if "ln" in n and n.endswith("weight"))
    with pytest.raises(ValueError, match="sequence length 17 exceeds block_size 16"):
        m(torch.zeros(1, 17, dtype=torch.int64))
    with pytest.raises(ValueError, match="n_embd must be a multiple of n_head"):
        gpt.GPT(65, n_embd=30, n_head=4)


def test_a_future_token_cannot_change_a_past_logit():
    m = model().eval()
    idx = torch.randint(65, (2, 16))
    changed = idx.clone()
    changed[:, 9:] = (changed[:, 9:] + 7) % 65
    a, b = m(idx), m(changed)
    assert torch.equal(a[:, :9], b[:, :9])  # positions before the change see the same inputs
    assert not torch.allclose(a[:, 9:], b[:, 9:])


def test_the_initial_loss_is_about_ln_vocab():
    m = model(n_layer=4, n_embd=64, n_head=4)
    idx = torch.randint(65, (8, 16))
    loss = m.loss(idx, torch.randint(65, (8, 16))).item()
    assert abs(loss - math.log(65)) < 0.05  # logits start near zero: a uniform guess


def test_generation_is_seeded_and_continues_the_prompt():
    m = model().eval()
    prompt = torch.zeros(1, 3, dtype=torch.int64)
    a = m.generate(prompt, 20, torch.Generator().manual_seed(1))
    b = m.generate(prompt, 20, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (1, 23) and torch.equal(a[:, :3], prompt)
