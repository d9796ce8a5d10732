"""Train an image classifier with a GOFAU optimizer and record the run: ``train(config) -> record``.

Command line: ``python -m gofau.train --dataset cifar10-jpeg --arch resnet9 --width 0.25 --limit 2000
--optimizer sgd --rule hybrid --lr 0.05 --epochs 1`` (``--help`` lists every setting).

The whole data set sits on the device as uint8; each epoch draws its order and augmentation
(random crop after 4-pixel zero padding, horizontal flip) from a CPU generator seeded by
(seed, epoch), so a run is a pure function of its configuration on CPU, and a run resumed from a
checkpoint repeats the numbers of an uninterrupted one. On CUDA: bf16 autocast, channels_last, and
optionally torch.compile; on CPU float32. Loss: cross-entropy with optional label smoothing.
The learning rate follows ``schedule`` per step: "none" (constant), "cosine" (cos decay to 0),
or "linear" (linear warm-up over the first ``warmup`` fraction of steps, then linear decay to 0).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

import gofau
from gofau import data as gdata
from gofau import models, provenance
from gofau import results as gresults
from gofau.directions import DIRECTIONS
from gofau.rules import RULES as ALL_RULES

OPTIMIZERS = tuple(DIRECTIONS)  # sgd, adagrad, rmsprop, adam
RULES = tuple(ALL_RULES)  # additive, multiplicative, hybrid, power
SCHEDULES = ("none", "cosine", "linear")
SATURATION = 2.0  # |eta_in u| above this counts as a saturated tanh (tanh(2) = 0.964)

# Settings that do not change a run's numbers: left out of its identity (hash) and record config.
RUN_CONTROL = ("data_dir", "cache_dir", "download", "out", "force", "checkpoint_dir", "progress")


@dataclass
class TrainConfig:
    """Every setting of a run; the fields outside RUN_CONTROL define the run and its record's hash."""

    dataset: str = "cifar10-jpeg"
    arch: str = "resnet9"
    width: float = 1.0
    init: str = "default"
    init_scale: float = 1.0
    optimizer: str = "sgd"
    rule: str = "additive"
    lr: float = 0.05
    lr_in: float = 1.0
    lr_out: float | None = None
    gamma: float = 0.5
    momentum: float = 0.9          # sgd and rmsprop only (recorded as None for adam and adagrad)
    nesterov: bool = False          # sgd only
    weight_decay: float = 5e-4
    bias_rule: str | None = None    # a separate rule for biases and norm parameters (None: same as rule)
    bias_lr: float | None = None    # their lr (None: lr)
    schedule: str = "none"
    warmup: float = 0.2
    label_smoothing: float = 0.0
    augment: bool = True
    epochs: int = 1
    batch_size: int = 128
    seed: int = 0
    limit: int | None = None        # first N training images of a fixed permutation (seed 0)
    test_limit: int | None = None   # likewise for the test set
    device: str = "auto"
    compile: bool = False
    grad_stats_every: int = 0       # record per-tensor gradient-flow statistics every N steps (0: off)
    threads: int | None = None      # torch.set_num_threads on CPU (None: leave as is)
    data_dir: str | None = None
    cache_dir: str | None = None
    download: bool = False
    out: str | None = "results"
    force: bool = False
    checkpoint_dir: str | None = "checkpoints"
    progress: bool = True


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def validate(cfg: TrainConfig) -> None:
    """Raise ValueError/TypeError naming the setting and its accepted range."""
    choices = dict(dataset=gdata.NAMES, arch=models.ARCHS, init=models.INITS, optimizer=OPTIMIZERS, rule=RULES,
                   schedule=SCHEDULES)
    for name, ok in choices.items():
        if getattr(cfg, name) not in ok:
            raise ValueError(f"{name} must be one of {ok}, got {getattr(cfg, name)!r}")
    if cfg.bias_rule is not None and cfg.bias_rule not in RULES:
        raise ValueError(f"bias_rule must be None or one of {RULES}, got {cfg.bias_rule!r}")
    for name in ("epochs", "batch_size"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    for name in ("limit", "test_limit", "threads"):
        v = getattr(cfg, name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ValueError(f"{name} must be None or an integer >= 1, got {v!r}")
    if not isinstance(cfg.grad_stats_every, int) or cfg.grad_stats_every < 0:
        raise ValueError(f"grad_stats_every must be an integer >= 0, got {cfg.grad_stats_every!r}")
    if not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {cfg.seed!r}")
    for name in ("lr", "lr_in", "weight_decay", "momentum", "label_smoothing") + tuple(
            n for n in ("lr_out", "bias_lr") if getattr(cfg, n) is not None):
        v = getattr(cfg, name)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not v >= 0 or math.isinf(v):
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    for name in ("gamma", "warmup"):
        v = getattr(cfg, name)
        if not isinstance(v, (int, float)) or not 0 <= v <= 1:
            raise ValueError(f"{name} must be a number in [0, 1], got {v!r}")
    if not (isinstance(cfg.width, (int, float)) and cfg.width > 0):
        raise ValueError(f"width must be a number > 0, got {cfg.width!r}")


def identity(cfg: TrainConfig) -> dict:
    """The settings that determine the run's numbers, normalised (settings a choice ignores are None,
    ``device`` reduced to its type), so equal runs get equal hashes."""
    d = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RUN_CONTROL}
    d["device"] = resolve_device(cfg.device).type
    if cfg.optimizer not in ("sgd", "rmsprop"):
        d["momentum"] = None
    if cfg.optimizer != "sgd":
        d["nesterov"] = None
    if cfg.rule != "hybrid" and cfg.bias_rule != "hybrid":
        d["gamma"] = d["lr_out"] = None
    if cfg.rule == "additive" and cfg.bias_rule in (None, "additive"):
        d["lr_in"] = None
    if cfg.bias_rule is None:
        d["bias_lr"] = None
    if cfg.schedule != "linear":
        d["warmup"] = None
    if cfg.init != "scaled":
        d["init_scale"] = None
    if d["device"] == "cuda":
        d["threads"] = None
    for k in ("lr", "lr_in", "lr_out", "gamma", "momentum", "weight_decay", "width", "bias_lr", "warmup",
              "init_scale", "label_smoothing"):
        if d[k] is not None:
            d[k] = float(d[k])
    return d


def build_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """gofau.GOFAU with the configured direction, rule and base hyperparameters."""
    base = {}
    if cfg.optimizer == "sgd":
        base = dict(momentum=cfg.momentum, nesterov=cfg.nesterov)
    elif cfg.optimizer == "rmsprop":
        base = dict(momentum=cfg.momentum)
    params = model.parameters()
    if cfg.bias_rule is not None:
        params = gofau.param_groups(model, select="bias_and_norm", rule=cfg.bias_rule,
                                    lr=cfg.lr if cfg.bias_lr is None else cfg.bias_lr)
    lr_out = cfg.lr_out if cfg.rule == "hybrid" or cfg.bias_rule == "hybrid" else None
    return gofau.GOFAU(params, direction=cfg.optimizer, rule=cfg.rule, lr=cfg.lr, lr_in=cfg.lr_in, lr_out=lr_out,
                       gamma=cfg.gamma, weight_decay=cfg.weight_decay, **base)


def lr_factor(cfg: TrainConfig, total_steps: int):
    """Per-step multiplier of every group's lr (LambdaLR)."""
    if cfg.schedule == "cosine":
        return lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps))
    if cfg.schedule == "linear":
        warm = max(1, round(cfg.warmup * total_steps)) if cfg.warmup > 0 else 0

        def f(s):
            if s < warm:
                return (s + 1) / warm
            return max(0.0, (total_steps - s) / max(1, total_steps - warm))
        return f
    return lambda s: 1.0


@contextlib.contextmanager
def capture_directions(store: dict):
    """While active, every GOFAU rule call stores its direction tensors u (by id of the parameter)."""
    from gofau import rules
    originals = dict(rules.RULES)

    def wrap(fn):
        def wrapped(group, params, u, c):
            for p, ui in zip(params, u):
                store[id(p)] = (ui.detach().clone(), group["lr_in"])
            return fn(group, params, u, c)
        return wrapped

    for k, fn in originals.items():
        rules.RULES[k] = wrap(fn)
    try:
        yield store
    finally:
        rules.RULES.update(originals)


GRAD_COLUMNS = ("step", "epoch", "param", "numel", "grad_norm", "update_norm", "param_norm", "rel_update",
                "saturated")


def _grad_stats_step(model, opt, step, epoch, rows):
    """One optimizer step that also appends, per parameter tensor: gradient norm, update norm
    |theta_{t+1} - theta_t|, parameter norm |theta_t|, relative update (their ratio) and the fraction
    of entries with |eta_in u| > SATURATION."""
    named = [(n, p) for n, p in model.named_parameters() if p.grad is not None]
    before = {n: p.detach().clone() for n, p in named}
    store = {}
    with capture_directions(store):
        opt.step()
    for n, p in named:
        pn = before[n].float().norm().item()
        un = (p.detach() - before[n]).float().norm().item()
        u = store.get(id(p))
        sat = float(((u[0] * u[1]).abs() > SATURATION).float().mean()) if u is not None else float("nan")
        rows.append([step, epoch, n, p.numel(), p.grad.float().norm().item(), un, pn,
                     un / pn if pn > 0 else float("nan"), sat])


GIT_COMMIT = provenance.git_commit()  # the code that runs: HEAD when this module was imported


def evaluate(model, x, y, mean, std, device, batch_size=256):
    """(mean cross-entropy, accuracy) over (x, y) without augmentation."""
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad(), _autocast(device):
        for xb, yb in gdata.batches(x, y, batch_size):
            out = model(_prepare(xb, mean, std, device)).float()
            loss_sum += F.cross_entropy(out, yb, reduction="sum").item()
            correct += (out.argmax(1) == yb).sum().item()
    return loss_sum / len(y), correct / len(y)


def _autocast(device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _prepare(xb, mean, std, device):
    x = gdata.normalize(xb, mean, std)
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


def train(config: TrainConfig | dict, on_epoch_end=None) -> dict:
    """Run (or resume) one training run and return its record; it is also saved under ``config.out``
    unless that is None. A finished record with the same configuration is returned as is, without
    training, unless ``force``. ``on_epoch_end(epoch, record)`` is called after each epoch's
    checkpoint is written (tests use it to interrupt a run)."""
    cfg = TrainConfig(**config) if isinstance(config, dict) else config
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"config must be a TrainConfig or a dict, got {type(config).__name__}")
    validate(cfg)
    ident = identity(cfg)
    run_id = gresults.config_hash(ident)
    if cfg.out is not None and not cfg.force and gresults.finished(cfg.out, run_id):
        return gresults.read(gresults.record_path(cfg.out, run_id))
    device = resolve_device(cfg.device)
    if device.type == "cpu" and cfg.threads:
        torch.set_num_threads(cfg.threads)

    ds = gdata.load(cfg.dataset, cfg.data_dir, cfg.cache_dir, cfg.download)
    ds = gdata.subset(ds, cfg.limit, cfg.test_limit)
    mean, std = ds.mean_std()
    train_x, train_y = ds.train_x.to(device), ds.train_y.to(device)
    test_x, test_y = ds.test_x.to(device), ds.test_y.to(device)
    mean, std = mean.to(device), std.to(device)

    torch.manual_seed(cfg.seed)
    model = models.build(cfg.arch, ds.num_classes, cfg.width, ds.image_size, cfg.init, cfg.init_scale).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = build_optimizer(cfg, model)
    steps_per_epoch = math.ceil(len(train_y) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(cfg, steps_per_epoch * cfg.epochs))
    forward = torch.compile(model) if cfg.compile else model

    record = dict(id=run_id, status="running", config=ident, seed=cfg.seed, epochs=[],
                  dataset=ds.identity, num_classes=ds.num_classes, image_size=ds.image_size,
                  n_params=sum(p.numel() for p in model.parameters()), device_name=provenance.device_name(device),
                  threads=torch.get_num_threads() if device.type == "cpu" else None,
                  torch_version=torch.__version__, gofau_version=gofau.__version__, git_commit=GIT_COMMIT,
                  python_version=platform.python_version(),
                  started=datetime.now(timezone.utc).isoformat(timespec="seconds"), wall_time_s=0.0)
    if cfg.grad_stats_every:
        record["grad_stats"] = dict(every=cfg.grad_stats_every, saturation_threshold=SATURATION,
                                    columns=list(GRAD_COLUMNS), rows=[])
    ckpt = Path(cfg.checkpoint_dir) / f"{run_id}.pt" if cfg.checkpoint_dir else None
    start_epoch = 0
    if ckpt is not None and ckpt.is_file():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        record = state["record"]
        start_epoch = len(record["epochs"])
        record.setdefault("resumed_at_epochs", []).append(start_epoch)

    t_run = time.perf_counter() - record["wall_time_s"]
    step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, cfg.epochs):
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        model.train()
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        bar = _progress(cfg, steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}")
        for i, (xb, yb) in enumerate(gdata.batches(train_x, train_y, cfg.batch_size, gen)):
            if cfg.augment:
                xb = gdata.augment(xb, gen)
            with _autocast(device):
                out = forward(_prepare(xb, mean, std, device))
                loss = F.cross_entropy(out.float(), yb, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_stats_every and step % cfg.grad_stats_every == 0:
                _grad_stats_step(model, opt, step, epoch + 1, record["grad_stats"]["rows"])
            else:
                opt.step()
            sched.step()
            step += 1
            loss_sum += loss.detach() * len(yb)
            correct += (out.argmax(1) == yb).sum()
            if bar is not None and (i % 10 == 0 or i == steps_per_epoch - 1):
                n = min((i + 1) * cfg.batch_size, len(train_y))
                bar.set_postfix(loss=f"{loss_sum.item() / n:.3f}", acc=f"{correct.item() / n:.3f}")
            if bar is not None:
                bar.update(1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t_train = time.perf_counter() - t0
        t1 = time.perf_counter()
        test_loss, test_acc = evaluate(model, test_x, test_y, mean, std, device)
        t_eval = time.perf_counter() - t1
        n = len(train_y)
        ep = dict(epoch=epoch + 1, train_loss=loss_sum.item() / n, train_acc=correct.item() / n,
                  test_loss=test_loss, test_acc=test_acc, lr_end=opt.param_groups[0]["lr"],
                  epoch_time_s=t_train + t_eval, train_time_s=t_train, train_images_per_s=n / t_train,
                  eval_images_per_s=len(test_y) / t_eval)
        if bar is not None:
            bar.set_postfix(loss=f"{ep['train_loss']:.3f}", acc=f"{ep['train_acc']:.3f}", test_acc=f"{test_acc:.3f}")
            bar.close()
        if not math.isfinite(ep["train_loss"]):
            ep["diverged"] = True
        record["epochs"].append(ep)
        record["wall_time_s"] = time.perf_counter() - t_run
        if ckpt is not None:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            tmp = ckpt.with_suffix(f".tmp{os.getpid()}")
            torch.save(dict(model=model.state_dict(), optimizer=opt.state_dict(), scheduler=sched.state_dict(),
                            record=record), tmp)
            os.replace(tmp, ckpt)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, record)

    record["status"] = "finished"
    record["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record["wall_time_s"] = time.perf_counter() - t_run
    if cfg.out is not None:
        gresults.save(record, cfg.out, force=True)
    if ckpt is not None and ckpt.is_file():
        ckpt.unlink()
    return record


def _progress(cfg, total, desc):
    if not cfg.progress:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, leave=True, file=sys.stderr, dynamic_ncols=True)


# ---------------------------------------------------------------- command line

def _optional(kind):
    def parse(text):
        return None if text.lower() == "none" else kind(text)
    parse.__name__ = kind.__name__
    return parse


_HELP = dict(
    dataset="data set: " + ", ".join(gdata.NAMES), arch="model: " + ", ".join(models.ARCHS),
    width="channel multiplier of every layer", init="weight init: " + ", ".join(models.INITS),
    init_scale="factor for --init scaled", optimizer="base optimizer (direction)", rule="update rule",
    lr="eta (additive, hybrid) or eta_out (multiplicative)", lr_in="eta_in inside the tanh",
    lr_out="the hybrid's eta_out (none: lr)", gamma="the hybrid's weight of the multiplicative term",
    momentum="SGD/RMSprop momentum", weight_decay="L2 added to the gradient",
    bias_rule="rule for biases and norm parameters (none: --rule)", bias_lr="their lr (none: --lr)",
    schedule="per-step lr schedule: none, cosine, linear (warm-up then decay)",
    warmup="warm-up fraction of steps for --schedule linear", limit="train on the first N images of a fixed permutation",
    test_limit="test on the first N images of a fixed permutation", device="auto, cpu, cuda, cuda:1, ...",
    compile="torch.compile the model", grad_stats_every="record gradient-flow statistics every N steps (0: off)",
    threads="CPU threads (torch.set_num_threads)", data_dir="data folder (default $GOFAU_DATA or ../shared/data)",
    cache_dir="decoded-tensor cache (default $GOFAU_CACHE or .cache/)", download="download CIFAR if missing",
    out="folder for the JSON record (none: do not save)", force="rerun and overwrite a finished record",
    checkpoint_dir="per-epoch checkpoints for resuming (none: off)", progress="tqdm progress bars",
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gofau.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = {"float": float, "int": int, "str": str, "bool": bool}[str(f.type).split(" ")[0]]
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=_HELP.get(f.name))
        else:
            optional = "None" in str(f.type)
            choices = dict(dataset=gdata.NAMES, arch=models.ARCHS, init=models.INITS, optimizer=OPTIMIZERS,
                           rule=RULES, schedule=SCHEDULES).get(f.name)
            p.add_argument(flag, type=_optional(kind) if optional else kind, default=f.default, choices=choices,
                           help=_HELP.get(f.name, ""))
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    cfg = TrainConfig(**vars(args))
    try:
        record = train(cfg)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    last = record["epochs"][-1]
    print(json.dumps(dict(id=record["id"], test_acc=round(last["test_acc"], 4),
                          train_loss=round(last["train_loss"], 4), wall_time_s=round(record["wall_time_s"], 1))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
