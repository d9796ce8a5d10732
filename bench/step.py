"""Time one optimizer step over a ResNet-18-sized parameter list (11.2M parameters in 62 tensors).

Each gofau optimizer is timed against its torch.optim base (foreach) and the fastest torch peer
(fused) in the same process, on parameters and gradients drawn alike. Within a family the
optimizers step in turn, round after round, so that load from other processes falls on all of
them alike; the table gives the median over --steps rounds after --warmup rounds (compilation of
the fused step included in warm-up), the ratios to those two peers' medians, and the time of each
optimizer's first two steps (for the fused steps, torch.compile's cold compilation). Run by hand, not in CI:

    python bench/step.py --threads 2 --steps 30
"""
import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import torch
import torchvision

import gofau
from gofau.lab.provenance import device_name

FAMILIES = {  # base name -> [(label, factory)], the torch.optim base (foreach) first
    "SGD": [
        ("torch SGD(momentum=0.9, foreach)", lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, foreach=True)),
        ("torch SGD(momentum=0.9, fused)", lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, fused=True)),
        ("gofau SGD(momentum=0.9)", lambda p: gofau.SGD(p, lr=0.01, momentum=0.9)),
        ("gofau MSGD(momentum=0.9)", lambda p: gofau.MSGD(p, lr=0.01, momentum=0.9)),
        ("gofau HSGD(momentum=0.9)", lambda p: gofau.HSGD(p, lr=0.01, momentum=0.9)),
        ("gofau HSGD(momentum=0.9, foreach=False)", lambda p: gofau.HSGD(p, lr=0.01, momentum=0.9, foreach=False)),
        ("gofau SGD(momentum=0.9, fused=True)", lambda p: gofau.SGD(p, lr=0.01, momentum=0.9, fused=True)),
        ("gofau MSGD(momentum=0.9, fused=True)", lambda p: gofau.MSGD(p, lr=0.01, momentum=0.9, fused=True)),
        ("gofau HSGD(momentum=0.9, fused=True)", lambda p: gofau.HSGD(p, lr=0.01, momentum=0.9, fused=True)),
        ("gofau LARS(momentum=0.9)", lambda p: gofau.LARS(p, lr=1.0, momentum=0.9)),
        ("gofau Fromage", lambda p: gofau.Fromage(p, lr=0.01)),
    ],
    "Adam": [
        ("torch Adam(foreach)", lambda p: torch.optim.Adam(p, lr=1e-3, foreach=True)),
        ("torch Adam(fused)", lambda p: torch.optim.Adam(p, lr=1e-3, fused=True)),
        ("gofau Adam", lambda p: gofau.Adam(p, lr=1e-3)),
        ("gofau MAdam", lambda p: gofau.MAdam(p, lr=1e-3)),
        ("gofau HAdam", lambda p: gofau.HAdam(p, lr=1e-3)),
        ("gofau HAdam(foreach=False)", lambda p: gofau.HAdam(p, lr=1e-3, foreach=False)),
        ("gofau Adam(fused=True)", lambda p: gofau.Adam(p, lr=1e-3, fused=True)),
        ("gofau MAdam(fused=True)", lambda p: gofau.MAdam(p, lr=1e-3, fused=True)),
        ("gofau HAdam(fused=True)", lambda p: gofau.HAdam(p, lr=1e-3, fused=True)),
        ("gofau LAMB", lambda p: gofau.LAMB(p, lr=1e-3)),
        ("gofau Madam", lambda p: gofau.Madam(p, lr=0.01)),
    ],
    "Adagrad": [
        ("torch Adagrad(foreach)", lambda p: torch.optim.Adagrad(p, lr=1e-2, foreach=True)),
        ("gofau MAdagrad", lambda p: gofau.MAdagrad(p, lr=1e-2)),
        ("gofau HAdagrad", lambda p: gofau.HAdagrad(p, lr=1e-2)),
    ],
    "RMSprop": [
        ("torch RMSprop(foreach)", lambda p: torch.optim.RMSprop(p, lr=1e-2, foreach=True)),
        ("gofau MRMSprop", lambda p: gofau.MRMSprop(p, lr=1e-2)),
        ("gofau HRMSprop", lambda p: gofau.HRMSprop(p, lr=1e-2)),
    ],
}


def make_params(shapes, device):
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=gen).to(device).requires_grad_() for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen).to(device) * 1e-2
    return params


def time_family(cases, shapes, device, warmup, steps):
    """Per optimizer, the seconds of its first two step()s (compilation included: a fused SGD step
    compiles at its second step, the first being eager) and the median ms of
    one step() after warm-up, the optimizers stepping in turn each round."""
    opts = [make(make_params(shapes, device)) for _, make in cases]
    times = [[] for _ in opts]
    for i in range(warmup + steps):
        for opt, record in zip(opts, times):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i < 2 or i >= warmup:
                record.append((time.perf_counter() - start) * 1e3)
    return [((t[0] + t[1]) / 1e3, statistics.median(t[2:])) for t in times]


def time_kernels(n, rounds=15):
    """Median ms of the elementwise kernels a step is made of, over n float32 elements, out of place
    into a preallocated buffer: the cost of tanh against that of an add says what eager steps pay."""
    x, y, out = torch.randn(n), torch.randn(n), torch.empty(n)
    xn, outn = x.numpy(), out.numpy()
    kernels = {
        "torch.add": lambda: torch.add(x, y, out=out),
        "torch.abs": lambda: torch.abs(x, out=out),
        "torch.sigmoid": lambda: torch.sigmoid(x, out=out),
        "torch.tanh": lambda: torch.tanh(x, out=out),
        "torch.compile(tanh) in place": torch.compile(lambda: out.copy_(x).tanh_()),
        "numpy.tanh (single-threaded)": lambda: np.tanh(xn, out=outn),
    }
    medians = {}
    for label, run in kernels.items():
        run()
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            run()
            times.append((time.perf_counter() - start) * 1e3)
        medians[label] = statistics.median(times)
    return medians


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30, help="timed rounds (median reported), at least 20")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--families", default=",".join(FAMILIES), help=f"comma-separated subset of {list(FAMILIES)}")
    parser.add_argument("--warm-cache", action="store_true",
                        help="keep torch.compile's on-disk cache (default: a fresh one, so a first step compiles cold)")
    args = parser.parse_args()
    if args.steps < 20:
        parser.error(f"--steps must be at least 20, got {args.steps}")
    if args.warmup < 2:
        parser.error(f"--warmup must be at least 2 (the first two steps are reported apart), got {args.warmup}")
    unknown = set(args.families.split(",")) - set(FAMILIES)
    if unknown:
        parser.error(f"--families: unknown {sorted(unknown)}; choose from {list(FAMILIES)}")
    try:
        device = torch.device(args.device)
    except RuntimeError as e:
        parser.error(f"--device: {e}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: this machine has no CUDA device; use --device cpu")
    torch.set_num_threads(args.threads)
    if not args.warm_cache:  # a first step compiles as it would on a fresh machine, not from an earlier run's cache
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="gofau-bench-inductor-")
    shapes = [p.shape for p in torchvision.models.resnet18(num_classes=10).parameters()]
    n = sum(torch.Size(s).numel() for s in shapes)
    print(f"# step() over {n / 1e6:.1f}M float32 parameters in {len(shapes)} tensors (torchvision ResNet-18 shapes)")
    print(f"# {device_name(device)}, {args.threads} threads, torch {torch.__version__}, "
          f"median of {args.steps} rounds after {args.warmup} warm-up rounds; load average {os.getloadavg()[0]:.1f}\n")
    print(f"| elementwise kernel over {n / 1e6:.1f}M floats | ms | ratio to torch.add |\n|---|---:|---:|")
    kernels = time_kernels(n)
    for label, ms in kernels.items():
        print(f"| {label} | {ms:.1f} | {ms / kernels['torch.add']:.2f} |", flush=True)
    print("\n| optimizer | ms / step | ratio to torch base (foreach) | ratio to fastest torch peer | first two steps (s) |\n"
          "|---|---:|---:|---:|---:|")
    for family in args.families.split(","):
        cases = FAMILIES[family]
        timed = time_family(cases, shapes, device, args.warmup, args.steps)
        medians = [ms for _, ms in timed]
        fastest = min(ms for (label, _), ms in zip(cases, medians) if label.startswith("torch"))
        for (label, _), (first, ms) in zip(cases, timed):
            print(f"| {label} | {ms:.1f} | {ms / medians[0]:.2f} | {ms / fastest:.2f} | {first:.1f} |", flush=True)


if __name__ == "__main__":
    main()
