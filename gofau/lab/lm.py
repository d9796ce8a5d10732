"""Train a character-level GPT and record the run: ``gofau-lm --optimizer adam --rule hybrid ...``.

The language-model counterpart of :mod:`gofau.lab.train`, with its conventions: one JSON record
per run named by the hash of the settings that determine its numbers, resume from the last
checkpoint, progress bars, and a command line built from the settings' dataclass
(:class:`LMConfig`). The defaults are nanoGPT's CPU configuration of shakespeare_char: 4 layers, 4
heads, n_embd 128, block 64, batch 12, 2000 steps, dropout 0, AdamW at lr 1e-3 with 100 warm-up
steps and a cosine decay to 1e-4, beta2 0.99, weight decay 0.1 on the matrices only.

A run is ``evals`` chunks of ``iters / evals`` steps. After each chunk the validation loss is
measured on a fixed set of ``eval_windows`` windows, the chunk's metrics are appended to the
record's ``epochs`` (one row per chunk: step, training loss, validation loss, time, sign flips,
exact zeros, and how far the tensors that start at 0 or 1 have moved: :func:`initial_moves`) and a
checkpoint is written. The training loss is logged every ``log_every`` steps.
A short sample generated at the end is recorded too. Seed k draws the same windows for every
method, so runs with the same seed are paired.

Optimizers: ``adamw`` is ``torch.optim.AdamW`` (decoupled weight decay, the baseline); a GOFAU base
(``sgd``, ``adam``, ...) takes any ``rule`` with L2 weight decay; a relative (``madam``, ``lamb``,
...) its own rule. Biases and LayerNorm gains and shifts (the tensors with one dimension, which
start at exactly 0 or 1) get no weight decay, and under GOFAU the rule ``bias_rule`` (None: ``rule``),
an explicit choice, since a multiplicative rule never moves a zero.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

import gofau
from gofau.directions import DIRECTIONS
from gofau.lab import gpt, provenance, text
from gofau.lab import records as gresults
from gofau.lab.config import RUN_CONTROL, check_types, command_line, parse_device, resolve_device, run_id
from gofau.relatives import RELATIVE_RULES, RELATIVES
from gofau.rules import READS_LR_IN, RULES

OPTIMIZERS = ("adamw",) + tuple(DIRECTIONS) + tuple(RELATIVES)
STEP_COLUMNS = ("step", "train_loss", "n_steps", "lr", "train_time_s")


@dataclass
class LMConfig:
    """Every setting of a language-model run; the fields outside RUN_CONTROL define its id."""

    dataset: str = "tinyshakespeare"
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    dropout: float = 0.0
    optimizer: str = "adamw"
    rule: str = "additive"
    lr: float = 1e-3
    lr_in: float = 1.0
    lr_out: float | None = None
    gamma: float = 0.5
    beta2: float = 0.99              # Adam-type second-moment decay (adamw, adam, lamb)
    weight_decay: float = 0.1        # on the matrices only
    bias_rule: str | None = None     # GOFAU rule for biases and LayerNorm parameters (None: rule)
    iters: int = 2000
    warmup_iters: int = 100
    min_lr: float = 1e-4             # the cosine decay's end
    batch_size: int = 12
    evals: int = 20                  # validation evaluations (and checkpoints) per run, evenly spaced
    eval_windows: int = 240
    log_every: int = 10
    sample_chars: int = 200
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    data_dir: str | None = None
    download: bool = False
    out: str | None = "results"
    force: bool = False
    checkpoint_dir: str | None = "checkpoints"
    progress: bool = True

    def validate(self, here: bool = True) -> None:
        """ValueError/TypeError naming the setting and its accepted range; with ``here``, also when the
        device does not exist on this machine."""
        check_types(self)
        for name, choices in (("dataset", text.NAMES), ("optimizer", OPTIMIZERS), ("rule", tuple(RULES))):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        if self.bias_rule is not None and self.bias_rule not in RULES:
            raise ValueError(f"bias_rule must be None or one of {tuple(RULES)}, got {self.bias_rule!r}")
        own = "additive" if self.optimizer == "adamw" else RELATIVE_RULES.get(self.optimizer)
        if own is not None and self.rule != own:
            raise ValueError(f"optimizer {self.optimizer!r} updates with its own rule: rule must be {own!r}, "
                             f"got {self.rule!r}")
        if own is not None and self.bias_rule is not None:
            raise ValueError(f"bias_rule needs a GOFAU optimizer ({', '.join(DIRECTIONS)}), not {self.optimizer!r}")
        for name in ("n_layer", "n_head", "n_embd", "block_size", "iters", "batch_size", "evals", "eval_windows",
                     "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        for name in ("warmup_iters", "sample_chars", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {getattr(self, name)!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd must be a multiple of n_head, got n_embd={self.n_embd}, n_head={self.n_head}")
        if self.evals > self.iters:
            raise ValueError(f"evals must be at most iters ({self.iters}), got {self.evals}")
        for name in ("lr", "lr_in", "weight_decay", "min_lr") + (("lr_out",) if self.lr_out is not None else ()):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)!r}")
        for name, low, high in (("gamma", 0, 1), ("beta2", 0, 0.999999), ("dropout", 0, 0.999999)):
            if not low <= getattr(self, name) <= high:
                raise ValueError(f"{name} must be a number in [{low}, {high}], got {getattr(self, name)!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be None or an integer >= 1, got {self.threads!r}")
        (resolve_device if here else parse_device)(self.device)

    def identity(self) -> dict:
        """The settings that determine the run's numbers, with those its choices ignore set to None."""
        d = {k: v for k, v in dataclasses.asdict(self).items() if k not in RUN_CONTROL}
        d["device"] = parse_device(self.device).type
        if self.rule != "hybrid" and self.bias_rule != "hybrid":
            d["gamma"] = d["lr_out"] = None
        if self.rule not in READS_LR_IN and self.bias_rule not in READS_LR_IN:
            d["lr_in"] = None
        if self.optimizer not in ("adamw", "adam", "lamb"):
            d["beta2"] = None
        if self.optimizer in ("madam", "fromage"):
            d["weight_decay"] = None
        for k in ("lr", "lr_in", "lr_out", "gamma", "beta2", "weight_decay", "min_lr", "dropout"):
            if d[k] is not None:
                d[k] = float(d[k])
        return d


def build_optimizer(cfg: LMConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The configured optimizer over two groups (``gofau.param_groups(select="bias_and_norm")``):
    matrices (with weight decay) and the tensors with one dimension (biases, LayerNorm gains and
    shifts: no decay; under GOFAU, rule ``bias_rule``)."""
    decay = 0.0 if cfg.optimizer in ("madam", "fromage") else cfg.weight_decay
    groups = gofau.param_groups(model, select="bias_and_norm", weight_decay=0.0)
    groups[0]["weight_decay"] = decay
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, cfg.beta2))
    if cfg.optimizer in RELATIVES:
        if cfg.optimizer in ("madam", "fromage"):
            groups = [{"params": g["params"]} for g in groups]
        extra = dict(lamb=dict(betas=(0.9, cfg.beta2))).get(cfg.optimizer, {})
        return RELATIVES[cfg.optimizer](groups, lr=cfg.lr, **extra)
    groups[1]["rule"] = cfg.bias_rule or cfg.rule
    base = dict(betas=(0.9, cfg.beta2)) if cfg.optimizer == "adam" else {}
    lr_out = cfg.lr_out if "hybrid" in (cfg.rule, cfg.bias_rule) else None
    return gofau.GOFAU(groups, direction=cfg.optimizer, rule=cfg.rule, lr=cfg.lr, lr_in=cfg.lr_in, lr_out=lr_out,
                       gamma=cfg.gamma, **base)


def lr_factor(cfg: LMConfig):
    """nanoGPT's schedule as a multiple of lr: linear warm-up over warmup_iters, then a cosine from lr
    to min_lr at the last step."""
    floor = cfg.min_lr / cfg.lr if cfg.lr else 1.0

    def factor(step):
        if step < cfg.warmup_iters:
            return (step + 1) / (cfg.warmup_iters + 1)
        span = max(1, cfg.iters - cfg.warmup_iters)
        return floor + 0.5 * (1 - floor) * (1 + math.cos(math.pi * min(step - cfg.warmup_iters, span) / span))
    return factor


@torch.no_grad()
def evaluate(model, windows) -> float:
    """Mean loss over the fixed validation windows, in batches of 60."""
    model.eval()
    x, y = windows
    losses = [model.loss(x[i:i + 60], y[i:i + 60]).item() * len(x[i:i + 60]) for i in range(0, len(x), 60)]
    model.train()
    return sum(losses) / len(x)


def train(config: LMConfig | dict, on_epoch_end=None) -> dict:
    """Run (or resume) one language-model run and return its record (also saved under ``out``).
    ``on_epoch_end(chunk, record)`` is called after each chunk's checkpoint is written (tests use it
    to interrupt a run)."""
    cfg = LMConfig(**config) if isinstance(config, dict) else config
    cfg.validate()
    rid = run_id(cfg)
    if cfg.out is not None and not cfg.force and gresults.finished(cfg.out, rid):
        return gresults.read(gresults.record_path(cfg.out, rid))
    device = resolve_device(cfg.device)
    if device.type == "cpu" and cfg.threads:
        torch.set_num_threads(cfg.threads)
    data = text.load(cfg.dataset, cfg.data_dir, cfg.download)
    torch.manual_seed(cfg.seed)
    model = gpt.GPT(data.vocab_size, cfg.block_size, cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.dropout).to(device)
    opt = build_optimizer(cfg, model)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(cfg))
    val = tuple(t.to(device) for t in text.eval_windows(data.val, cfg.block_size, cfg.eval_windows))
    rules = [cfg.rule] + ([cfg.bias_rule] if cfg.bias_rule else [])
    record = dict(id=rid, status="running", config=cfg.identity(), seed=cfg.seed, epochs=[], dataset=data.identity,
                  n_params=sum(p.numel() for p in model.parameters()), device_name=provenance.device_name(device),
                  threads=torch.get_num_threads() if device.type == "cpu" else None,
                  torch_version=str(torch.__version__), gofau_version=gofau.__version__,
                  git_commit=provenance.git_commit(), python_version=platform.python_version(),
                  optimizer_code=None if cfg.optimizer == "adamw" else provenance.optimizer_code(cfg.optimizer, rules),
                  steps=dict(every=cfg.log_every, columns=list(STEP_COLUMNS), rows=[]),
                  started=datetime.now(timezone.utc).isoformat(timespec="seconds"), wall_time_s=0.0)
    checkpoint = Path(cfg.checkpoint_dir) / f"{rid}.pt" if cfg.checkpoint_dir else None
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        record = state["record"]
        record.setdefault("resumed_at_epochs", []).append(len(record["epochs"]))
    bounds = [round(k * cfg.iters / cfg.evals) for k in range(cfg.evals + 1)]
    t_run = time.perf_counter() - record["wall_time_s"]
    bar = _progress(cfg, bounds[len(record["epochs"])])
    for chunk in range(len(record["epochs"]), cfg.evals):
        ep = _train_chunk(cfg, model, opt, sched, data.train, record, bounds[chunk], bounds[chunk + 1], device, bar)
        ep["val_loss"] = evaluate(model, val)
        record["epochs"].append(ep)
        record["wall_time_s"] = time.perf_counter() - t_run
        if bar is not None:
            bar.set_postfix(val_loss=f"{ep['val_loss']:.3f}")
        if not (math.isfinite(ep["train_loss"]) and math.isfinite(ep["val_loss"])):
            record["diverged"] = True  # the run is over, and ranks worst in every pick
            break
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            state = dict(model=model.state_dict(), optimizer=opt.state_dict(), scheduler=sched.state_dict(),
                         record=record)
            gresults.atomic_write(checkpoint, lambda tmp: torch.save(state, tmp))
        if on_epoch_end is not None:
            on_epoch_end(chunk + 1, record)
    if bar is not None:
        bar.close()
    if not record.get("diverged"):  # a model with non-finite weights has nothing to say
        prompt = data.train[:1].view(1, 1).to(device)
        sample = model.eval().generate(prompt, cfg.sample_chars, torch.Generator(device).manual_seed(cfg.seed))
        record["sample"] = data.decode(sample[0].tolist())
    record.update(status="finished", wall_time_s=time.perf_counter() - t_run,
                  finished=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    if cfg.out is not None:
        gresults.save(record, cfg.out, force=True)
    if checkpoint is not None and checkpoint.is_file():
        checkpoint.unlink()
    return record


def _train_chunk(cfg, model, opt, sched, ids, record, first: int, last: int, device, bar) -> dict:
    """Steps first..last-1; each step's batch and dropout masks come from generators seeded by (seed,
    step), so a resumed run draws what an uninterrupted one would."""
    before = [p.detach().clone() for p in model.parameters()]
    t0, window, n_window, total = time.perf_counter(), 0.0, 0, 0.0
    done = sum(e["train_time_s"] for e in record["epochs"])
    for step in range(first, last):
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        x, y = (t.to(device) for t in text.windows(ids, cfg.block_size, cfg.batch_size, gen))
        torch.manual_seed(cfg.seed * 1_000_003 + step)  # dropout
        loss = model.loss(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        lr = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
        value = loss.item()
        window, n_window, total = window + value, n_window + 1, total + value
        if (step + 1) % cfg.log_every == 0 or step + 1 == last:
            record["steps"]["rows"].append([step + 1, window / n_window, n_window, lr,
                                            done + time.perf_counter() - t0])
            window, n_window = 0.0, 0
        if bar is not None:
            bar.update(1)
    numel = sum(p.numel() for p in before)
    return dict(epoch=len(record["epochs"]) + 1, step=last, train_loss=total / (last - first),
                train_time_s=time.perf_counter() - t0, lr_end=opt.param_groups[0]["lr"],
                sign_flip_frac=sum(int((p.detach() * b < 0).sum()) for p, b in zip(model.parameters(), before)) / numel,
                zero_frac=sum(int((p.detach() == 0).sum()) for p in model.parameters()) / numel,
                **initial_moves(model))


def initial_moves(model) -> dict:
    """Where the tensors that start at a constant have gone: over the entries that start at 0
    (biases, LayerNorm shifts; ``zero_init_*``) and at 1 (LayerNorm gains; ``unit_init_*``), the
    share no longer at that value (``*_moved_frac``) and the mean of |theta - theta_0| (``*_mean_dist``)."""
    out = {}
    for kind, start in (("zero_init", 0.0), ("unit_init", 1.0)):
        ps = [p.detach() for name, p in model.named_parameters() if gpt.initial_value(name) == start]
        n = sum(p.numel() for p in ps)
        out[f"{kind}_moved_frac"] = sum(int((p != start).sum()) for p in ps) / n
        out[f"{kind}_mean_dist"] = sum(float((p - start).abs().sum()) for p in ps) / n
    return out


def _progress(cfg, done):
    if not cfg.progress:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=cfg.iters, initial=done, desc="steps", file=sys.stderr, dynamic_ncols=True)


def parser() -> argparse.ArgumentParser:
    return command_line(LMConfig, "gofau-lm", __doc__.split("\n\n")[0], _HELP,
                        dict(optimizer=OPTIMIZERS, rule=tuple(RULES), dataset=text.NAMES))


_HELP = dict(
    optimizer="adamw (torch.optim.AdamW), a GOFAU base direction, or a relative", rule="update rule (GOFAU bases)",
    lr="peak lr: eta, or eta_out for the multiplicative rules", bias_rule="GOFAU rule for biases and LayerNorm "
    "parameters (none: --rule)", beta2="second-moment decay of adamw, adam and lamb",
    weight_decay="on the matrices: decoupled for adamw and lamb, L2 for GOFAU", iters="optimizer steps",
    warmup_iters="linear warm-up steps", min_lr="lr at the end of the cosine decay",
    evals="validation evaluations and checkpoints per run", eval_windows="fixed validation windows",
    log_every="log the training loss every N steps", sample_chars="characters generated at the end",
    threads="CPU threads (torch.set_num_threads)", out="folder for the JSON record (none: do not save)",
    checkpoint_dir="checkpoints for resuming (none: off)")


def main(argv=None) -> int:
    cfg = LMConfig(**vars(parser().parse_args(argv)))
    try:
        record = train(cfg)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    last = record["epochs"][-1] if record["epochs"] else {}
    print(json.dumps(dict(id=record["id"], val_loss=round(last.get("val_loss", math.nan), 4),
                          train_loss=round(last.get("train_loss", math.nan), 4), diverged=bool(record.get("diverged")),
                          wall_time_s=round(record["wall_time_s"], 1))))
    print(record.get("sample", "(diverged: no sample)"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
