"""Train an image classifier with a GOFAU optimizer and record the run: ``train(config) -> record``.

Command line: ``gofau-train --dataset cifar10-jpeg --arch resnet9 --width 0.25 --limit 2000
--optimizer sgd --rule hybrid --lr 0.05 --epochs 1`` (``--help`` lists every setting).

The whole data set sits on the device as uint8; each epoch draws its order and augmentation
(random crop after 4-pixel zero padding, horizontal flip) from a CPU generator seeded by
(seed, epoch), so a run is a pure function of its configuration on CPU, and a run resumed from a
checkpoint repeats the numbers of an uninterrupted one. On CUDA: bf16 autocast, channels_last, and
optionally torch.compile; on CPU float32, channels_last when asked (``channels_last``: about 1.4 times
the throughput of the small networks on this project's CPU). Loss: cross-entropy with optional label smoothing.
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
from gofau.lab import data as gdata
from gofau.lab import models, provenance
from gofau.lab import records as gresults
from gofau.lab.config import CHOICES, TrainConfig, command_line, identity, resolve_device, run_id, validate
from gofau.relatives import RELATIVES

SATURATION = 2.0  # |eta_in u| above this counts as a saturated tanh (tanh(2) = 0.964)
GRAD_COLUMNS = ("step", "epoch", "param", "numel", "grad_norm", "update_norm", "param_norm", "rel_update",
                "saturated")
STEP_COLUMNS = ("step", "epoch", "train_loss", "n_steps", "lr", "train_time_s")  # train_loss: mean of n_steps steps
EVAL_COLUMNS = ("step", "epoch", "val_loss", "val_acc", "train_time_s")  # train_time_s: training seconds so far
GIT_COMMIT = provenance.git_commit()  # the code that runs: HEAD when this module was imported


def build_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """gofau.GOFAU with the configured direction, rule and base hyperparameters, or the named relative
    (gofau.relatives) with the settings it reads, the others at their authors' defaults."""
    if cfg.optimizer in RELATIVES:
        extra = dict(lars=dict(momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay),
                     lamb=dict(weight_decay=cfg.weight_decay)).get(cfg.optimizer, {})
        return RELATIVES[cfg.optimizer](model.parameters(), lr=cfg.lr, **extra)
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



def _grad_stats_step(model, opt, step, epoch, rows):
    """One optimizer step that also appends, per parameter tensor: gradient norm, update norm
    |theta_{t+1} - theta_t|, parameter norm |theta_t|, relative update (their ratio) and the fraction
    of entries with |eta_in u| > SATURATION, u observed through the optimizer's direction hook."""
    named = [(n, p) for n, p in model.named_parameters() if p.grad is not None]
    before = {n: p.detach().clone() for n, p in named}
    saturated = {}

    def observe(opt, group, params, u):
        if group["rule"] in ("multiplicative", "hybrid", "power"):  # the rules with a tanh
            for p, ui in zip(params, u):
                saturated[p] = float(((ui * group["lr_in"]).abs() > SATURATION).float().mean())

    handle = opt.register_direction_hook(observe)
    try:
        opt.step()
    finally:
        handle.remove()
    for n, p in named:
        pn = before[n].float().norm().item()
        un = (p.detach() - before[n]).float().norm().item()
        rows.append([step, epoch, n, p.numel(), p.grad.float().norm().item(), un, pn,
                     un / pn if pn > 0 else float("nan"), saturated.get(p, float("nan"))])


def evaluate(model, x, y, mean, std, device, channels_last=False, batch_size=256):
    """(mean cross-entropy, accuracy) over (x, y) without augmentation."""
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad(), _autocast(device):
        for xb, yb in gdata.batches(x, y, batch_size):
            out = model(_prepare(xb, mean, std, channels_last)).float()
            loss_sum += F.cross_entropy(out, yb, reduction="sum").item()
            correct += (out.argmax(1) == yb).sum().item()
    return loss_sum / len(y), correct / len(y)


def _autocast(device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _prepare(xb, mean, std, channels_last: bool):
    x = gdata.normalize(xb, mean, std)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@dataclass
class _Run:
    """What one run holds while it trains."""

    cfg: TrainConfig
    device: torch.device
    channels_last: bool
    data: tuple  # train_x, train_y, test_x, test_y, mean, std (on the device)
    val: tuple | None  # val_x, val_y (on the device), with cfg.validation > 0
    model: torch.nn.Module
    forward: torch.nn.Module  # the model, compiled when cfg.compile
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    record: dict
    checkpoint: Path | None
    steps_per_epoch: int


def _setup(cfg: TrainConfig, rid: str) -> _Run:
    """Data on the device, the seeded model, optimizer and schedule, and a fresh record."""
    device = resolve_device(cfg.device)
    if device.type == "cpu" and cfg.threads:
        torch.set_num_threads(cfg.threads)
    ds = gdata.subset(gdata.load(cfg.dataset, cfg.data_dir, cfg.cache_dir, cfg.download), cfg.limit, cfg.test_limit,
                      cfg.validation)
    if cfg.out is not None and "stands_in_for" in ds.identity:
        raise ValueError(f"dataset {cfg.dataset!r} is not on this machine and {ds.identity['name']} ({ds.identity['source']}) "
                         "stood in for it; a recorded run must name the copy it trains on: use --dataset cifar10, or "
                         "--out none for an unrecorded run")
    mean, std = ds.mean_std()
    data = tuple(t.to(device) for t in (ds.train_x, ds.train_y, ds.test_x, ds.test_y, mean, std))
    val = (ds.val_x.to(device), ds.val_y.to(device)) if cfg.validation else None
    torch.manual_seed(cfg.seed)
    model = models.build(cfg.arch, ds.num_classes, cfg.width, ds.image_size, cfg.init, cfg.init_scale,
                         cfg.norm).to(device)
    channels_last = device.type == "cuda" if cfg.channels_last is None else cfg.channels_last
    if channels_last:
        model = models.channels_last(model, device)
    opt = build_optimizer(cfg, model)
    steps_per_epoch = math.ceil(len(ds.train_y) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(cfg, steps_per_epoch * cfg.epochs))
    record = dict(id=rid, status="running", config=identity(cfg), seed=cfg.seed, epochs=[],
                  dataset=ds.identity, num_classes=ds.num_classes, image_size=ds.image_size,
                  n_params=sum(p.numel() for p in model.parameters()), device_name=provenance.device_name(device),
                  threads=torch.get_num_threads() if device.type == "cpu" else None,
                  torch_version=str(torch.__version__), gofau_version=gofau.__version__, git_commit=GIT_COMMIT,
                  optimizer_code=_optimizer_code(cfg), python_version=platform.python_version(),
                  started=datetime.now(timezone.utc).isoformat(timespec="seconds"), wall_time_s=0.0)
    if cfg.grad_stats_every:
        record["grad_stats"] = dict(every=cfg.grad_stats_every, saturation_threshold=SATURATION,
                                    columns=list(GRAD_COLUMNS), rows=[])
    if cfg.log_every:
        record["steps"] = dict(every=cfg.log_every, columns=list(STEP_COLUMNS), rows=[])
    if cfg.validation:
        record["evals"] = dict(per_epoch=min(cfg.evals_per_epoch, steps_per_epoch), columns=list(EVAL_COLUMNS),
                               rows=[])
    checkpoint = Path(cfg.checkpoint_dir) / f"{rid}.pt" if cfg.checkpoint_dir else None
    return _Run(cfg, device, channels_last, data, val, model, torch.compile(model) if cfg.compile else model, opt,
                sched, record, checkpoint, steps_per_epoch)


def _resume(run: _Run) -> int:
    """Loads the run's checkpoint, if there is one; returns the number of epochs already done."""
    if run.checkpoint is None or not run.checkpoint.is_file():
        return 0
    try:  # weights_only: tensors and plain Python values only, so a planted pickle cannot run code
        state = torch.load(run.checkpoint, map_location=run.device, weights_only=True)
        run.model.load_state_dict(state["model"])
        run.opt.load_state_dict(state["optimizer"])
        run.sched.load_state_dict(state["scheduler"])
        record = state["record"]
    except Exception as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        why = " ".join(lines[:1] + [ln for ln in lines[1:] if "GLOBAL" in ln])  # torch's long text: its gist
        raise ValueError(f"checkpoint {run.checkpoint} cannot be resumed ({type(e).__name__}: {why}); it is "
                         "damaged, unsafe or from other settings: delete it to start the run from its first "
                         "epoch") from None
    done = len(record["epochs"])
    record.setdefault("resumed_at_epochs", []).append(done)
    for key, now in (("git_commit", GIT_COMMIT), ("torch_version", str(torch.__version__)),
                     ("optimizer_code", _optimizer_code(run.cfg))):
        seen = record.setdefault(f"{key}s", [record.get(key)])  # every version the run ran under, in order
        if seen[-1] != now:
            seen.append(now)
    run.record = record
    return done


def _train_epoch(run: _Run, epoch: int) -> dict:
    """One pass over the training images in the order seeded by (seed, epoch): the epoch's mean
    training loss and accuracy, its training time (evaluations excluded), and the fractions of
    parameter entries whose sign at its end differs from that at its start and that are exactly
    zero at its end. Appends the
    step log and the validation evaluations due in this epoch to the record."""
    cfg, model, opt, rec = run.cfg, run.model, run.opt, run.record
    train_x, train_y, _, _, mean, std = run.data
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    per_epoch = min(cfg.evals_per_epoch, run.steps_per_epoch)  # at most one evaluation a step
    evals_at = {round(k * run.steps_per_epoch / per_epoch) for k in range(1, per_epoch + 1)}
    before = [p.detach().clone() for p in model.parameters()]
    model.train()
    t_done = sum(e["train_time_s"] for e in rec["epochs"])  # training seconds of the earlier epochs
    t0, t_eval = time.perf_counter(), 0.0
    loss_sum = torch.zeros((), device=run.device)
    correct = torch.zeros((), device=run.device, dtype=torch.long)
    window, in_window = torch.zeros((), device=run.device), 0  # the losses since the last step-log row
    bar = _progress(cfg, run.steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}")
    step = epoch * run.steps_per_epoch
    for i, (xb, yb) in enumerate(gdata.batches(train_x, train_y, cfg.batch_size, gen)):
        if cfg.augment:
            xb = gdata.augment(xb, gen)
        with _autocast(run.device):
            out = run.forward(_prepare(xb, mean, std, run.channels_last))
            loss = F.cross_entropy(out.float(), yb, label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_stats_every and step % cfg.grad_stats_every == 0:
            _grad_stats_step(model, opt, step, epoch + 1, rec["grad_stats"]["rows"])
        else:
            opt.step()
        lr = opt.param_groups[0]["lr"]
        run.sched.step()
        step += 1
        loss_sum += loss.detach() * len(yb)
        correct += (out.argmax(1) == yb).sum()
        window += loss.detach()
        in_window += 1
        now = t_done + time.perf_counter() - t0 - t_eval
        if cfg.log_every and (step % cfg.log_every == 0 or i == run.steps_per_epoch - 1):
            rec["steps"]["rows"].append([step, epoch + 1, window.item() / in_window, in_window, lr, now])
            window.zero_()
            in_window = 0
        if run.val is not None and i + 1 in evals_at:
            t1 = time.perf_counter()
            val_loss, val_acc = evaluate(model, *run.val, mean, std, run.device, run.channels_last)
            model.train()
            t_eval += time.perf_counter() - t1
            rec["evals"]["rows"].append([step, epoch + 1, val_loss, val_acc, now])
        if bar is not None:
            if i % 10 == 0 or i == run.steps_per_epoch - 1:
                n = min((i + 1) * cfg.batch_size, len(train_y))
                bar.set_postfix(loss=f"{loss_sum.item() / n:.3f}", acc=f"{correct.item() / n:.3f}")
            bar.update(1)
    if run.device.type == "cuda":
        torch.cuda.synchronize()
    if bar is not None:
        bar.close()
    n = len(train_y)
    t_train = time.perf_counter() - t0 - t_eval
    numel = sum(p.numel() for p in before)
    flips = sum(int((p.detach() * b < 0).sum()) for p, b in zip(model.parameters(), before))
    zeros = sum(int((p.detach() == 0).sum()) for p in model.parameters())
    return dict(epoch=epoch + 1, train_loss=loss_sum.item() / n, train_acc=correct.item() / n,
                train_time_s=t_train, train_images_per_s=n / t_train, sign_flip_frac=flips / numel,
                zero_frac=zeros / numel)


def _end_epoch(run: _Run, ep: dict) -> dict:
    """Completes the epoch's metrics: validation loss and accuracy (the last evaluation) when the run
    has a validation split, test loss and accuracy at every epoch without one and at the last epoch
    with one (the test set is then used once), the lr at the epoch's end, and the timings."""
    cfg = run.cfg
    _, _, test_x, test_y, mean, std = run.data
    ep = dict(ep, lr_end=run.opt.param_groups[0]["lr"])
    if run.val is not None:
        _, _, ep["val_loss"], ep["val_acc"], _ = run.record["evals"]["rows"][-1]
    t_eval = 0.0
    if run.val is None or ep["epoch"] == cfg.epochs:
        t1 = time.perf_counter()
        ep["test_loss"], ep["test_acc"] = evaluate(run.model, test_x, test_y, mean, std, run.device, run.channels_last)
        t_eval = time.perf_counter() - t1
        ep["eval_images_per_s"] = len(test_y) / t_eval
    ep["epoch_time_s"] = ep["train_time_s"] + t_eval
    losses = [ep["train_loss"], ep.get("val_loss", 0.0), ep.get("test_loss", 0.0)]
    if not all(math.isfinite(v) for v in losses):
        ep["diverged"] = True
    if cfg.progress:
        shown = ", ".join(f"{k.replace('_', ' ')} {ep[k]:.3f}" for k in ("val_acc", "test_acc") if k in ep)
        print(f"epoch {ep['epoch']}/{cfg.epochs}: {shown}", file=sys.stderr)
    return ep


def _save_checkpoint(run: _Run) -> None:
    if run.checkpoint is None:
        return
    state = dict(model=run.model.state_dict(), optimizer=run.opt.state_dict(), scheduler=run.sched.state_dict(),
                 record=run.record)
    gresults.atomic_write(run.checkpoint, lambda tmp: torch.save(state, tmp))


def _optimizer_code(cfg: TrainConfig) -> str:
    return provenance.optimizer_code(cfg.optimizer, [cfg.rule] + ([cfg.bias_rule] if cfg.bias_rule else []))


def _writable(folder: str | None, name: str) -> None:
    """Creates ``folder`` if needed; ValueError naming the setting unless a file can be written there."""
    if folder is None:
        return
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with open(path / f".write-test-{os.getpid()}", "w") as f:
            f.write("ok")
        (path / f".write-test-{os.getpid()}").unlink()
    except OSError as e:
        raise ValueError(f"{name} must be a folder this process can write to; {folder!r} is not ({e.strerror})") from None


def train(config: TrainConfig | dict, on_epoch_end=None) -> dict:
    """Run (or resume) one training run and return its record; it is also saved under ``config.out``
    unless that is None. A finished record with the same configuration is returned as is, without
    training, unless ``force``. A run whose loss becomes non-finite stops there, marked ``diverged``.
    ``on_epoch_end(epoch, record)`` is called after each epoch's checkpoint is written (tests use it
    to interrupt a run)."""
    cfg = TrainConfig(**config) if isinstance(config, dict) else config
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"config must be a TrainConfig or a dict, got {type(config).__name__}")
    validate(cfg)
    rid = run_id(cfg)
    if cfg.out is not None and not cfg.force and gresults.finished(cfg.out, rid):
        return gresults.read(gresults.record_path(cfg.out, rid))
    _writable(cfg.out, "out")
    _writable(cfg.checkpoint_dir, "checkpoint_dir")
    run = _setup(cfg, rid)
    start = _resume(run)
    t_run = time.perf_counter() - run.record["wall_time_s"]
    for epoch in range(start, cfg.epochs):
        ep = _end_epoch(run, _train_epoch(run, epoch))
        run.record["epochs"].append(ep)
        run.record["wall_time_s"] = time.perf_counter() - t_run
        if ep.get("diverged"):  # a non-finite loss: the run is over, and ranks worst in every pick
            run.record["diverged"] = True
            break
        _save_checkpoint(run)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, run.record)
    record = run.record
    record.update(status="finished", finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  wall_time_s=time.perf_counter() - t_run)
    if cfg.out is not None:
        gresults.save(record, cfg.out, force=True)
    if run.checkpoint is not None and run.checkpoint.is_file():
        run.checkpoint.unlink()
    return record


def _progress(cfg, total, desc):
    if not cfg.progress:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, leave=True, file=sys.stderr, dynamic_ncols=True)


# ---------------------------------------------------------------- command line

_HELP = dict(
    dataset="data set: " + ", ".join(gdata.NAMES), arch="model: " + ", ".join(models.ARCHS),
    width="channel multiplier of every layer", init="weight init: " + ", ".join(models.INITS),
    init_scale="factor for --init scaled", norm="batch: BatchNorm after each convolution; none: left out",
    optimizer="base optimizer (direction)", rule="update rule",
    lr="eta (additive, hybrid) or eta_out (multiplicative, power, proportional)",
    lr_in="eta_in: the scale of u in the multiplicative, hybrid, power and proportional rules",
    lr_out="the hybrid's eta_out (none: lr)", gamma="the hybrid's weight of the multiplicative term",
    momentum="SGD/RMSprop momentum", weight_decay="L2 added to the gradient",
    bias_rule="rule for biases and norm parameters (none: --rule)", bias_lr="their lr (none: --lr)",
    schedule="per-step lr schedule: none, cosine, linear (warm-up then decay)",
    warmup="warm-up fraction of steps for --schedule linear", limit="train on the first N images of a fixed permutation",
    test_limit="test on the first N images of a fixed permutation", device="auto, cpu, cuda, cuda:1, ...",
    validation="hold out N training images (stratified) for evaluation; the test set is then used once, at the end",
    evals_per_epoch="validation evaluations per epoch, evenly spaced", log_every="log the training loss every N steps",
    compile="torch.compile the model", channels_last="channels_last memory format (none: on CUDA only)", grad_stats_every="record gradient-flow statistics every N steps (0: off)",
    threads="CPU threads (torch.set_num_threads)", data_dir="data folder (default: the first of $GOFAU_DATA, ../shared/data, ~/.cache/gofau/data holding it)",
    cache_dir="decoded-tensor cache (default $GOFAU_CACHE or .cache/)", download="allow torchvision's CIFAR download (also GOFAU_DOWNLOAD=1)",
    out="folder for the JSON record (none: do not save)", force="rerun and overwrite a finished record",
    checkpoint_dir="per-epoch checkpoints for resuming (none: off)", progress="tqdm progress bars",
)


def parser() -> argparse.ArgumentParser:
    return command_line(TrainConfig, "gofau-train", __doc__.split("\n\n")[0], _HELP, CHOICES)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    cfg = TrainConfig(**vars(args))
    try:
        record = train(cfg)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    last = record["epochs"][-1] if record["epochs"] else {}

    def rounded(key, digits=4):
        v = last.get(key)
        return round(v, digits) if isinstance(v, float) and math.isfinite(v) else None
    print(json.dumps(dict(id=record["id"], test_acc=rounded("test_acc"), val_acc=rounded("val_acc"),
                          train_loss=rounded("train_loss"), diverged=bool(record.get("diverged")),
                          wall_time_s=round(record["wall_time_s"], 1))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
