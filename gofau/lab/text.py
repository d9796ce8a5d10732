"""Character-level text data: a vocabulary from the corpus, a 90/10 split by position, seeded windows.

``load(name)`` finds the corpus like the image data (``data_dir``, ``$GOFAU_DATA``, ``../shared/data``,
the download folder; see :mod:`gofau.lab.data`), checks its SHA-256 and returns a :class:`CharData`
whose ``train`` and ``val`` are int64 token ids: the first 90% of the characters and the last 10%,
as nanoGPT's shakespeare_char splits them. :func:`windows` draws a batch of (input, target)
windows at offsets from a seeded generator, so that seed k gives every method the same batches;
:func:`eval_windows` is a fixed set of windows for the validation loss.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from gofau.lab import data as gdata

NAMES = tuple(gdata.TEXTS)


@dataclass
class CharData:
    """Token ids of the training and validation text, the vocabulary and where the text came from."""

    train: torch.Tensor
    val: torch.Tensor
    vocab: list[str]
    identity: dict = field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def decode(self, ids) -> str:
        return "".join(self.vocab[int(i)] for i in ids)

    def encode(self, text: str) -> torch.Tensor:
        index = {c: i for i, c in enumerate(self.vocab)}
        unknown = sorted(set(text) - set(index))
        if unknown:
            raise ValueError(f"text has characters outside the vocabulary: {''.join(unknown)!r}")
        return torch.tensor([index[c] for c in text], dtype=torch.int64)


def load(name: str = "tinyshakespeare", data_dir: str | os.PathLike | None = None, download: bool = False,
         val_fraction: float = 0.1) -> CharData:
    """The corpus ``name`` (one of :data:`NAMES`) as a :class:`CharData` (see the module doc)."""
    if name not in NAMES:
        raise ValueError(f"name must be one of {NAMES}, got {name!r}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    _, reader, digests = gdata.resolve(name, data_dir, download)
    d = reader()
    vocab = sorted(set(d["text"]))
    index = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([index[c] for c in d["text"]], dtype=torch.int64)
    n = int(len(ids) * (1 - val_fraction))
    identity = dict(d["identity"], sha256=digests[0][1], n_chars=len(ids), n_train=n, n_val=len(ids) - n,
                    vocab_size=len(vocab))
    return CharData(ids[:n], ids[n:], vocab, identity)


def windows(ids: torch.Tensor, block: int, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` windows of ``block`` tokens at offsets drawn from ``generator``: inputs (batch, block)
    and targets shifted by one."""
    if not 1 <= block < len(ids):
        raise ValueError(f"block must be in [1, {len(ids) - 1}], got {block!r}")
    starts = torch.randint(len(ids) - block, (batch,), generator=generator)
    offsets = starts[:, None] + torch.arange(block + 1)
    chunk = ids[offsets]
    return chunk[:, :-1], chunk[:, 1:]


def eval_windows(ids: torch.Tensor, block: int, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed set of ``n`` windows (seeded by ``seed``) for a loss every run measures alike."""
    return windows(ids, block, n, torch.Generator().manual_seed(seed))
