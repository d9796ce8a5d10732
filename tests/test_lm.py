"""The language-model trainer on the real Tiny Shakespeare at smoke scale: records, resume, the
explicit rule for zero- and one-initialised tensors, errors, and a grid of language-model runs."""
import json

import pytest
import torch
import yaml

import gofau
from gofau.lab import grid, lm, records
from test_text import needs_text

TINY = dict(n_layer=1, n_head=2, n_embd=32, block_size=16, batch_size=8, iters=30, evals=3, eval_windows=30,
            warmup_iters=5, log_every=5, sample_chars=20, device="cpu", threads=1, progress=False)


def tiny(tmp_path, **kw):
    return dict(TINY, out=str(tmp_path / "results"), checkpoint_dir=str(tmp_path / "ckpt"), **kw)


@needs_text
def test_a_run_records_losses_steps_sample_and_provenance(tmp_path):
    r = lm.train(tiny(tmp_path, optimizer="adam", rule="hybrid", lr=3e-3))
    assert r["status"] == "finished" and len(r["epochs"]) == 3
    assert [e["step"] for e in r["epochs"]] == [10, 20, 30]
    assert r["epochs"][-1]["val_loss"] < r["epochs"][0]["val_loss"] < 4.2  # ln 65 = 4.17 at the start
    rows = r["steps"]["rows"]
    assert [row[0] for row in rows] == [5, 10, 15, 20, 25, 30] and all(row[2] == 5 for row in rows)
    assert len(r["sample"]) == 21 and r["sample"][0] == "F"  # the prompt, the first character of the text
    assert r["dataset"]["vocab_size"] == 65 and r["optimizer_code"] and r["config"]["gamma"] == 0.5
    assert records.read(records.record_path(tmp_path / "results", r["id"])) == json.loads(json.dumps(r))


@needs_text
def test_an_interrupted_run_resumes_to_the_uninterrupted_numbers(tmp_path):
    whole = lm.train(tiny(tmp_path / "a"))

    def stop(chunk, record):
        if chunk == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        lm.train(tiny(tmp_path / "b"), on_epoch_end=stop)
    resumed = lm.train(tiny(tmp_path / "b"))
    assert resumed["resumed_at_epochs"] == [2]
    for a, b in zip(whole["epochs"], resumed["epochs"]):
        assert a["train_loss"] == b["train_loss"] and a["val_loss"] == b["val_loss"]
    assert whole["sample"] == resumed["sample"]


@needs_text
@pytest.mark.parametrize("bias_rule", [None, "additive"])
def test_zero_initialised_tensors_move_only_under_an_additive_bias_rule(tmp_path, bias_rule):
    r = lm.train(tiny(tmp_path, optimizer="adam", rule="multiplicative", lr=0.01, bias_rule=bias_rule))
    torch.manual_seed(0)
    n_zero = sum(int((p == 0).sum()) for p in gofau.lab.gpt.GPT(65, 16, 1, 2, 32).parameters())
    zero_frac = r["epochs"][-1]["zero_frac"]
    last = r["epochs"][-1]
    if bias_rule is None:  # the multiplicative rule never moves a zero: biases and LayerNorm shifts stay at 0
        assert zero_frac == pytest.approx(n_zero / r["n_params"])
        assert last["zero_init_moved_frac"] == 0.0 and last["zero_init_mean_dist"] == 0.0
    else:
        assert zero_frac == 0.0
        assert last["zero_init_moved_frac"] == 1.0 and last["zero_init_mean_dist"] > 0
    assert last["unit_init_moved_frac"] == 1.0 and last["unit_init_mean_dist"] > 0  # gains move either way


def test_initial_moves_counts_the_entries_that_left_their_starting_value():
    model = gofau.lab.gpt.GPT(65, 16, 1, 2, 32)
    assert lm.initial_moves(model) == dict(zero_init_moved_frac=0.0, zero_init_mean_dist=0.0,
                                          unit_init_moved_frac=0.0, unit_init_mean_dist=0.0)
    named = dict(model.named_parameters())
    zeros = sum(p.numel() for n, p in named.items() if n.endswith("bias"))
    ones = sum(p.numel() for n, p in named.items() if "ln" in n and n.endswith("weight"))
    with torch.no_grad():
        named["ln_f.bias"][:4] = torch.tensor([0.5, -0.5, 0.0, 1.0])  # three of the zeros moved, by 2 in all
        named["ln_f.weight"][0] = 0.25  # one gain moved, by 0.75
    moves = lm.initial_moves(model)
    assert moves["zero_init_moved_frac"] == pytest.approx(3 / zeros)
    assert moves["zero_init_mean_dist"] == pytest.approx(2 / zeros)
    assert moves["unit_init_moved_frac"] == pytest.approx(1 / ones)
    assert moves["unit_init_mean_dist"] == pytest.approx(0.75 / ones)


def test_the_optimizers_get_their_groups_and_settings():
    model = gofau.lab.gpt.GPT(65, 16, 1, 2, 32)
    adamw = lm.build_optimizer(lm.LMConfig(), model)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["betas"] == (0.9, 0.99)
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.1, 0.0]
    assert all(p.dim() < 2 for p in adamw.param_groups[1]["params"])
    mixed = lm.build_optimizer(lm.LMConfig(optimizer="sgd", rule="multiplicative", bias_rule="additive"), model)
    assert [g["rule"] for g in mixed.param_groups] == ["multiplicative", "additive"]
    assert isinstance(lm.build_optimizer(lm.LMConfig(optimizer="lamb", rule="trust"), model), gofau.LAMB)
    a, b = lm.LMConfig(optimizer="madam", rule="exponentiated", weight_decay=0.3), lm.LMConfig(
        optimizer="madam", rule="exponentiated", beta2=0.5)
    assert a.identity() == b.identity()  # settings Madam ignores do not change the run's id


@pytest.mark.parametrize("kw, msg", [
    (dict(optimizer="adamw", rule="hybrid"), "optimizer 'adamw' updates with its own rule: rule must be 'additive'"),
    (dict(optimizer="lion"), "optimizer must be one of"),
    (dict(evals=50, iters=10), r"evals must be at most iters \(10\), got 50"),
    (dict(n_embd=0), "n_embd must be an integer >= 1"),
    (dict(beta2=1.0), r"beta2 must be a number in \[0, 0.999999\]"),
    (dict(n_embd=30, n_head=4), "n_embd must be a multiple of n_head"),
    (dict(iters=2.5), "iters must be int"),
    (dict(optimizer="lamb", rule="trust", bias_rule="additive"), "bias_rule needs a GOFAU optimizer"),
])
def test_bad_settings_are_refused_naming_them(kw, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        lm.train(dict(kw, out=None))


@needs_text
def test_a_language_model_grid_tunes_on_validation_loss(tmp_path):
    spec = dict(base=dict(tiny(tmp_path), dataset="tinyshakespeare", optimizer="adam"),
                axes=dict(rule=["additive", "multiplicative"], lr=[1e-4, 3e-3]), tune=dict(over="lr", seeds=[1]))
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    rows = grid.run_grid(path, tmp_path / "results")
    assert [r["status"] for r in rows] == ["finished"] * 6
    runs = {r["id"]: records.read(records.record_path(tmp_path / "results", r["id"])) for r in rows}
    for rule in ("additive", "multiplicative"):
        tuning = {r["config"]["lr"]: r for r in runs.values() if r["config"]["rule"] == rule and r["seed"] == 0}
        best = min(tuning, key=lambda lr: tuning[lr]["epochs"][-1]["val_loss"])
        assert [r["config"]["lr"] for r in runs.values() if r["config"]["rule"] == rule and r["seed"] == 1] == [best]


@needs_text
def test_a_diverging_run_is_finished_marked_diverged_and_leaves_no_checkpoint(tmp_path):
    r = lm.train(tiny(tmp_path, optimizer="sgd", lr=1e6))
    assert r["status"] == "finished" and r["diverged"] and "sample" not in r
    assert not list((tmp_path / "ckpt").glob("*.pt"))
    assert grid.score(r) == float("-inf")


@needs_text
def test_with_dropout_a_resumed_run_repeats_the_uninterrupted_one(tmp_path):
    whole = lm.train(tiny(tmp_path / "a", dropout=0.2))

    def stop(chunk, record):
        if chunk == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        lm.train(tiny(tmp_path / "b", dropout=0.2), on_epoch_end=stop)
    resumed = lm.train(tiny(tmp_path / "b", dropout=0.2))
    assert [e["val_loss"] for e in whole["epochs"]] == [e["val_loss"] for e in resumed["epochs"]]


def test_a_gpu_run_is_named_alike_on_a_machine_without_one():
    cfg = lm.LMConfig(device="cuda")
    cfg.validate(here=False)  # a job elsewhere may have the device
    assert cfg.identity()["device"] == "cuda"
