"""Throughput of the trainer's pieces on this device: images/s for training and evaluation of each
architecture, and of the data pipeline (augmentation + normalisation; decoding and cache loading).

    python bench/train.py                         # every architecture, CIFAR size, full width
    python bench/train.py --archs resnet18 --batch-size 512 --steps 20 --compile   # on a GPU
    python bench/train.py --decode                # also time a cold decode of the CIFAR-10 JPEG copy

A training step is the trainer's: augment (crop + flip) -> normalise -> forward (bf16 autocast
and channels_last on CUDA) -> cross-entropy -> backward -> GOFAU step (SGD momentum, hybrid rule).
Inputs are random uint8 images already on the device. Each measurement runs ``--warmup`` untimed
steps, then ``--steps`` timed ones. "CIFAR epoch" is 50,000 / (training images/s).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

import gofau
from gofau.lab import data, models
from gofau.lab.provenance import device_name
from gofau.lab.config import TrainConfig, resolve_device
from gofau.lab.train import _autocast, _prepare, build_optimizer


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, steps, warmup, device):
    for _ in range(warmup):
        fn()
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - t) / steps


def arch_steps(arch, device, width, batch_size, image_size, compile_model, channels_last):
    """(model, train_step, eval_step) for ``arch``: the trainer's steps on one batch of random images
    (set the model's mode, ``model.train()`` or ``model.eval()``, before timing either)."""
    torch.manual_seed(0)
    model = models.build(arch, 10, width, image_size).to(device)
    if channels_last:
        model = models.channels_last(model, device)
    opt = build_optimizer(TrainConfig(optimizer="sgd", rule="hybrid", lr=0.01, lr_out=0.1), model)
    forward = torch.compile(model) if compile_model else model
    x = torch.randint(0, 256, (batch_size, 3, image_size, image_size), dtype=torch.uint8, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    mean, std = torch.full((3,), 0.5, device=device), torch.full((3,), 0.25, device=device)
    gen = torch.Generator().manual_seed(0)

    def train_step():
        with _autocast(device):
            out = forward(_prepare(data.augment(x, gen), mean, std, channels_last))
            loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def eval_step():
        with torch.no_grad(), _autocast(device):
            forward(_prepare(x, mean, std, channels_last)).float()

    return model, train_step, eval_step


def bench_archs(archs, device, width, batch_size, image_size, steps, warmup, compile_model, channels_last, rounds=1):
    """Per architecture: parameters, training and evaluation images/s (medians over ``rounds``) and the
    training step's median, lowest and highest milliseconds. The rounds interleave the architectures
    (each is timed once per round, ``steps`` steps after ``warmup`` untimed ones), so a change in the
    machine's load falls on all of them alike and their ratios stay comparable."""
    built = {a: arch_steps(a, device, width, batch_size, image_size, compile_model, channels_last) for a in archs}
    train_s = {a: [] for a in archs}
    eval_s = {a: [] for a in archs}
    for _ in range(rounds):
        for a in archs:
            model, train_step, eval_step = built[a]
            model.train()
            train_s[a].append(_timed(train_step, steps, warmup, device))
            model.eval()
            eval_s[a].append(_timed(eval_step, steps, warmup, device))
    rows = []
    for a in archs:
        t, e = statistics.median(train_s[a]), statistics.median(eval_s[a])
        rows.append(dict(arch=a, params_M=sum(p.numel() for p in built[a][0].parameters()) / 1e6,
                         train_img_s=batch_size / t, eval_img_s=batch_size / e, cifar_epoch_s=50_000 * t / batch_size,
                         train_step_ms=1000 * t, train_step_ms_min=1000 * min(train_s[a]),
                         train_step_ms_max=1000 * max(train_s[a]), rounds=rounds))
    return rows


SHARE_CASES = [  # (label, factory): the book's SGD recipe (Nesterov momentum 0.9) under each rule and path
    ("torch SGD(fused)", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, fused=True)),
    ("gofau SGD (additive)", lambda p: gofau.SGD(p, lr=0.1, momentum=0.9, nesterov=True)),
    ("gofau MSGD", lambda p: gofau.MSGD(p, lr=0.5, lr_in=10.0, momentum=0.9, nesterov=True)),
    ("gofau HSGD", lambda p: gofau.HSGD(p, lr=0.4, lr_out=1.0, momentum=0.9, nesterov=True)),
    ("gofau MSGD(fused=True)", lambda p: gofau.MSGD(p, lr=0.5, lr_in=10.0, momentum=0.9, nesterov=True, fused=True)),
    ("gofau HSGD(fused=True)", lambda p: gofau.HSGD(p, lr=0.4, lr_out=1.0, momentum=0.9, nesterov=True, fused=True)),
]


def optimizer_share(device, steps, warmup, arch="airnet", width=0.25, batch_size=256):
    """Per optimizer of SHARE_CASES, for the book's CPU recipe (AirNet at width 0.25, batch 256,
    channels_last): the median ms of a whole training step and of its optimizer step, and the share
    of the latter; the optimizers take their steps in turn, round after round, on one model each."""
    torch.manual_seed(0)
    x = torch.randint(0, 256, (batch_size, 3, 32, 32), dtype=torch.uint8, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    mean, std = torch.full((3,), 0.5, device=device), torch.full((3,), 0.25, device=device)
    runs = []
    for _, make in SHARE_CASES:
        model = models.build(arch, 10, width, 32).to(device).to(memory_format=torch.channels_last)
        runs.append((model, make(model.parameters()), [], []))
    for i in range(warmup + steps):
        for model, opt, whole, step in runs:
            _sync(device)
            t0 = time.perf_counter()
            loss = F.cross_entropy(model(_prepare(x, mean, std, True)).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            _sync(device)
            t1 = time.perf_counter()
            opt.step()
            _sync(device)
            if i >= warmup:
                whole.append(time.perf_counter() - t0)
                step.append(time.perf_counter() - t1)
    return [dict(optimizer=label, step_ms=1e3 * statistics.median(whole), optimizer_ms=1e3 * statistics.median(st),
                 share=statistics.median(st) / statistics.median(whole))
            for (label, _), (_, _, whole, st) in zip(SHARE_CASES, runs)]


def bench_pipeline(device, batch_size, steps):
    """Augment + normalise a batch of 32x32 uint8 images on the device, images/s."""
    x = torch.randint(0, 256, (batch_size, 3, 32, 32), dtype=torch.uint8, device=device)
    mean, std = torch.full((3,), 0.5, device=device), torch.full((3,), 0.25, device=device)
    gen = torch.Generator().manual_seed(0)
    t = _timed(lambda: data.normalize(data.augment(x, gen), mean, std), steps, 2, device)
    return batch_size / t


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", nargs="+", default=list(models.ARCHS), choices=models.ARCHS)
    p.add_argument("--device", default="auto")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=None, help="default: 512 on CUDA, 32 on CPU")
    p.add_argument("--image-size", type=int, default=32, help="32 (CIFAR) or 64 (Tiny ImageNet)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 on CUDA, 3 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 5 on CUDA, 1 on CPU)")
    p.add_argument("--rounds", type=int, default=1,
                   help="time the architectures in this many interleaved rounds and report medians (default 1)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last memory format (default: on CUDA only, as the trainer)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU")
    p.add_argument("--decode", action="store_true", help="time a cold decode of the CIFAR-10 JPEG copy")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--optimizer-share", action="store_true",
                   help="only the share of a training step that the optimizer takes, for the book's CPU recipe, "
                        "per rule and path (torch's fused SGD for scale)")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds must be at least 1, got {args.rounds}")
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    bs = args.batch_size or (512 if cuda else 32)
    channels_last = cuda if args.channels_last is None else args.channels_last
    steps = args.steps or (20 if cuda else 3)
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    if cuda:
        torch.backends.cudnn.benchmark = True
    if args.optimizer_share:
        rows = optimizer_share(device, args.steps or 20, args.warmup if args.warmup is not None else 3)
        print(f"# {device_name(device)}, {torch.get_num_threads()} threads, torch {torch.__version__}: AirNet width "
              "0.25, batch 256, channels_last; medians\n\n| optimizer | training step (ms) | optimizer step (ms) | "
              "share |\n|---|---:|---:|---:|")
        for r in rows:
            print(f"| {r['optimizer']} | {r['step_ms']:.1f} | {r['optimizer_ms']:.2f} | {100 * r['share']:.1f}% |")
        return 0

    head = dict(device=device_name(device), torch=torch.__version__, python=platform.python_version(),
                threads=torch.get_num_threads() if not cuda else None, batch_size=bs, width=args.width,
                image_size=args.image_size, steps=steps, rounds=args.rounds, compile=args.compile,
                channels_last=channels_last,
                precision="bf16 autocast" if cuda else "float32")
    out = dict(header=head, pipeline={}, archs=[])
    out["pipeline"]["augment_normalize_img_s"] = bench_pipeline(device, max(bs, 512), max(steps, 5))
    t = time.perf_counter()
    ds = data.load("cifar10-jpeg")
    out["pipeline"]["cached_load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    ds.train_x.to(device), ds.test_x.to(device)
    _sync(device)
    out["pipeline"]["to_device_s"] = time.perf_counter() - t
    if args.decode:
        with tempfile.TemporaryDirectory() as cache:
            t = time.perf_counter()
            data.load("cifar10-jpeg", cache_dir=cache)
            out["pipeline"]["cold_decode_60k_s"] = time.perf_counter() - t
    if not args.json:
        print(" | ".join(f"{k}: {v}" for k, v in head.items()))
        for k, v in out["pipeline"].items():
            print(f"{k}: {v:,.1f}" if v > 100 else f"{k}: {v:.2f}")
        print(f"{'arch':<10} {'params(M)':>9} {'train img/s':>12} {'eval img/s':>11} {'CIFAR epoch (s)':>16} "
              f"{'step ms (min-max)':>20}")
    out["archs"] = bench_archs(args.archs, device, args.width, bs, args.image_size, steps, warmup, args.compile,
                               channels_last, args.rounds)
    if not args.json:
        for r in out["archs"]:
            print(f"{r['arch']:<10} {r['params_M']:>9.2f} {r['train_img_s']:>12,.1f} {r['eval_img_s']:>11,.1f} "
                  f"{r['cifar_epoch_s']:>16,.1f} {r['train_step_ms']:>8.1f} ({r['train_step_ms_min']:.1f}-"
                  f"{r['train_step_ms_max']:.1f})")
    if args.json:
        print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
