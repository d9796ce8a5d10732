"""A fair multi-start protocol for comparing update rules on 2D test functions.

Every method gets the same budget: the same number of steps and a log-spaced learning-rate grid of
the same size (the grid is over ``lr``, which is eta for the additive rule and eta_out for the
multiplicative one; eta_in = ``lr_in`` stays fixed). The setting with the lowest median final loss
over a few seeded *tuning* starts is chosen, and the method is then scored on separate seeded
*evaluation* starts: success rate (final gap f - f_min <= tol), median number of steps until the
gap first reaches tol (a start that never reaches it counts as never, so the median is infinite
when fewer than half succeed), and median final gap.

Batching. All starts and all learning rates of one method run together: learning rate ``k`` is a
param group holding one ``(n_starts, 2)`` parameter, and the loss is the sum of ``f`` over every
row. Each row's gradient is then the gradient of ``f`` at that row alone, and the four base
optimizers (SGD, Adagrad, RMSprop, Adam) and all update rules act element-wise, so every start
follows exactly the trajectory it would follow alone. Running the evaluation starts at every
grid point and reading them at the chosen one is therefore the same as tuning first and
evaluating afterwards; only the tuning starts decide the choice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from gofau.lab.functions import Function2D
from gofau.optimizer import GOFAU
from gofau.rules import RULES

BASES = {
    "SGD": ("sgd", {}),
    "SGD-m": ("sgd", {"momentum": 0.9}),
    "Adagrad": ("adagrad", {}),
    "RMSprop": ("rmsprop", {}),
    "Adam": ("adam", {}),
}
"""Base optimizers by display name: (gofau direction, base hyperparameters)."""

COMPARED_RULES = ("additive", "multiplicative", "hybrid")
"""The rules the protocol compares by default."""


@dataclass(frozen=True)
class Method:
    """A base optimizer from ``BASES`` combined with an update rule (and the hybrid's gamma)."""

    base: str
    rule: str
    gamma: float = 0.5

    def __post_init__(self):
        if self.base not in BASES:
            raise ValueError(f"base must be one of {sorted(BASES)}, got {self.base!r}")
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}, got {self.rule!r}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma!r}")

    def optimizer(self, params: list[torch.Tensor], lrs: list[float], lr_in: float) -> GOFAU:
        """One GOFAU optimizer with ``params[k]`` in a group of learning rate ``lrs[k]``."""
        direction, hyper = BASES[self.base]
        groups = [{"params": [p], "lr": lr} for p, lr in zip(params, lrs)]
        return GOFAU(groups, direction=direction, rule=self.rule, lr=lrs[0], lr_in=lr_in, gamma=self.gamma, **hyper)


def methods(bases=tuple(BASES), rules=COMPARED_RULES, gamma: float = 0.5) -> list[Method]:
    """Every base with every rule."""
    return [Method(b, r, gamma) for b in bases for r in rules]


def lr_grid(low: float, high: float, size: int) -> list[float]:
    """``size`` learning rates spaced evenly in log from ``low`` to ``high``."""
    if not (0 < low < high):
        raise ValueError(f"need 0 < low < high, got low={low!r}, high={high!r}")
    if not isinstance(size, int) or size < 2:
        raise ValueError(f"size must be an int >= 2, got {size!r}")
    return np.geomspace(low, high, size).tolist()


@dataclass
class Run:
    """Trajectories of one method from ``n`` starts at each of ``L`` learning rates.

    ``positions`` has shape (steps + 1, L, n, 2), ``losses`` (steps + 1, L, n); index 0 is the start.
    """

    lrs: list[float]
    positions: torch.Tensor
    losses: torch.Tensor


def run(function: Function2D, method: Method, lrs, starts: torch.Tensor, steps: int, lr_in: float = 1.0) -> Run:
    """Optimise ``function`` with ``method`` from every row of ``starts`` (n, 2) at every lr."""
    if starts.ndim != 2 or starts.shape[1] != 2:
        raise ValueError(f"starts must have shape (n, 2), got {tuple(starts.shape)}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    lrs = [float(lr) for lr in lrs]
    params = [torch.nn.Parameter(starts.detach().clone()) for _ in lrs]
    opt = method.optimizer(params, lrs, lr_in)
    positions = torch.empty(steps + 1, len(lrs), *starts.shape, dtype=starts.dtype)
    losses = torch.empty(steps + 1, len(lrs), starts.shape[0], dtype=starts.dtype)
    for t in range(steps + 1):
        x = torch.stack(params)
        loss = function(x)
        positions[t] = x.detach()
        losses[t] = loss.detach()
        if t == steps:
            break
        opt.zero_grad(set_to_none=False)
        loss.sum().backward()
        opt.step()
    return Run(lrs, positions, losses)


def gaps(function: Function2D, losses: torch.Tensor) -> torch.Tensor:
    """f - f_min, with diverged (non-finite) values set to +inf."""
    gap = losses - function.f_min
    return torch.where(torch.isfinite(gap), gap, torch.full_like(gap, math.inf))


def score(gap: torch.Tensor, tol: float) -> dict:
    """Success rate, median steps to tolerance (misses count as never) and median final gap of
    the gaps ``(steps + 1, n)`` of ``n`` runs."""
    return {
        "success": (gap[-1] <= tol).double().mean().item(),
        "median_steps": float(np.median(steps_to_tolerance(gap, tol).numpy())),
        "final_gap": float(np.median(gap[-1].numpy())),
    }


def steps_to_tolerance(gap: torch.Tensor, tol: float) -> torch.Tensor:
    """First step index at which ``gap <= tol`` along dim 0; +inf where it never happens."""
    hit = gap <= tol
    first = hit.to(torch.int64).argmax(0).to(gap.dtype)
    return torch.where(hit.any(0), first, torch.full_like(first, math.inf))


@dataclass
class Comparison:
    """Results of :func:`protocol` as tables.

    ``summary``: one row per function and method with the chosen lr and the evaluation scores.
    ``lr_scan``: median final tuning gap at every grid point (what the choice was made from).
    ``curves``: per step, the 25th, 50th and 75th percentile of the evaluation gap at the chosen lr.
    ``paths``: positions of the first ``n_paths`` evaluation starts at the chosen lr.
    """

    summary: pd.DataFrame
    lr_scan: pd.DataFrame
    curves: pd.DataFrame
    paths: pd.DataFrame
    settings: dict = field(default_factory=dict)


def protocol(
    functions,
    methods,
    *,
    lrs,
    steps: int,
    n_tune: int = 5,
    n_eval: int = 20,
    tol: float = 1e-3,
    lr_in: float = 1.0,
    seed: int = 0,
    n_paths: int = 4,
    workers: int = 1,
) -> Comparison:
    """Tune each method's lr on ``n_tune`` starts, score it on ``n_eval`` other starts (see module doc).

    Tuning starts use seed ``seed`` and evaluation starts ``seed + 1``; all methods share them.
    With ``workers`` > 1 the functions run in that many processes (one torch thread each) and their
    tables are joined: the result is the same, as every function draws its own starts.
    """
    if not isinstance(n_tune, int) or n_tune < 1 or not isinstance(n_eval, int) or n_eval < 1:
        raise ValueError(f"n_tune and n_eval must be positive ints, got {n_tune!r} and {n_eval!r}")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if workers > 1 and len(functions) > 1:
        return _in_workers(functions, methods, workers, dict(lrs=lrs, steps=steps, n_tune=n_tune, n_eval=n_eval,
                                                             tol=tol, lr_in=lr_in, seed=seed, n_paths=n_paths))
    lrs = [float(lr) for lr in lrs]
    summary, scan, curves, paths = [], [], [], []
    for f in functions:
        starts = torch.cat([f.sample_starts(n_tune, seed), f.sample_starts(n_eval, seed + 1)])
        for m in methods:
            key = {"function": f.name, "base": m.base, "rule": m.rule, "gamma": m.gamma}
            r = run(f, m, lrs, starts, steps, lr_in)
            gap = gaps(f, r.losses)
            tune_final = gap[-1, :, :n_tune].median(dim=1).values  # per lr (the lower middle value if n_tune is even)
            best = int(torch.argmin(tune_final))  # ties go to the smaller lr
            scan += [{**key, "lr": lr, "tune_gap": g} for lr, g in zip(lrs, tune_final.tolist())]
            ev = gap[:, best, n_tune:]  # (steps + 1, n_eval)
            summary.append({**key, "lr": lrs[best], **score(ev, tol)})
            quartiles = torch.tensor([0.25, 0.5, 0.75], dtype=ev.dtype)
            q = torch.quantile(ev.clamp(max=torch.finfo(ev.dtype).max), quartiles, dim=1)  # inf - inf would be nan
            curves.append(pd.DataFrame({**key, "step": np.arange(steps + 1), "q25": q[0], "median": q[1], "q75": q[2]}))
            paths += _paths(key, r.positions[:, best, n_tune:n_tune + n_paths])
    settings = dict(lrs=lrs, steps=steps, n_tune=n_tune, n_eval=n_eval, tol=tol, lr_in=lr_in, seed=seed)
    return Comparison(pd.DataFrame(summary), pd.DataFrame(scan), pd.concat(curves, ignore_index=True),
                      pd.concat(paths, ignore_index=True), settings)


def _in_workers(functions, methods, workers: int, settings: dict) -> Comparison:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    with ProcessPoolExecutor(min(workers, len(functions)), mp_context=multiprocessing.get_context("spawn"),
                             initializer=torch.set_num_threads, initargs=(1,)) as pool:
        parts = list(pool.map(partial(protocol, methods=methods, **settings), [[f] for f in functions]))
    tables = (pd.concat([getattr(p, k) for p in parts], ignore_index=True)
              for k in ("summary", "lr_scan", "curves", "paths"))
    return Comparison(*tables, {k: v for k, v in parts[0].settings.items()})


def from_starts(function: Function2D, picks, starts: torch.Tensor, steps: int, tol: float = 1e-3,
                lr_in: float = 1.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run each ``(method, lr)`` in ``picks`` from the given starts (n, 2).

    Returns one row per method and start (start, end point, final gap, steps to tolerance) and
    the paths as rows (method columns, start, step, x, y).
    """
    rows, paths = [], []
    for m, lr in picks:
        r = run(function, m, [lr], starts, steps, lr_in)
        gap = gaps(function, r.losses[:, 0])
        hit = steps_to_tolerance(gap, tol)
        key = {"function": function.name, "base": m.base, "rule": m.rule, "gamma": m.gamma, "lr": lr}
        for i in range(starts.shape[0]):
            (x0, y0), (x1, y1) = r.positions[0, 0, i].tolist(), r.positions[-1, 0, i].tolist()
            rows.append({**key, "start": i, "x0": x0, "y0": y0, "x_end": x1, "y_end": y1,
                         "final_gap": gap[-1, i].item(), "steps": hit[i].item()})
        paths += _paths(key, r.positions[:, 0])
    return pd.DataFrame(rows), pd.concat(paths, ignore_index=True)


def _paths(key: dict, positions: torch.Tensor) -> list[pd.DataFrame]:
    """Rows (key, start, step, x, y) for positions of shape (steps + 1, n, 2)."""
    step = np.arange(positions.shape[0])
    return [pd.DataFrame({**key, "start": i, "step": step, "x": positions[:, i, 0], "y": positions[:, i, 1]})
            for i in range(positions.shape[1])]


def verdicts(summary: pd.DataFrame, reference: str = "additive") -> pd.DataFrame:
    """Whether each rule beats ``reference`` on each function and base, from a :func:`protocol` summary.

    In order: a success rate higher (lower) by at least 0.1 is "better" ("worse"); else, when both
    median step counts are finite, a ratio <= 0.8 is better and >= 1.25 worse; else a finite median
    beats an infinite one; else a median final gap 10 times lower (higher) is better (worse);
    anything else is a "tie".
    """
    ref = summary[summary.rule == reference].set_index(["function", "base"])
    rows = []
    for _, r in summary[summary.rule != reference].iterrows():
        a = ref.loc[(r.function, r.base)]
        rows.append({"function": r.function, "base": r.base, "rule": r.rule, "gamma": r.gamma,
                     "verdict": _verdict(r, a)})
    return pd.DataFrame(rows)


def _verdict(r, a) -> str:
    if abs(r.success - a.success) >= 0.1 - 1e-12:
        return "better" if r.success > a.success else "worse"
    finite_r, finite_a = math.isfinite(r.median_steps), math.isfinite(a.median_steps)
    if finite_r and finite_a:
        ratio = r.median_steps / max(a.median_steps, 1e-300)
        return "better" if ratio <= 0.8 else "worse" if ratio >= 1.25 else "tie"
    if finite_r != finite_a:
        return "better" if finite_r else "worse"
    if r.final_gap * 10 <= a.final_gap:
        return "better"
    return "worse" if r.final_gap >= 10 * a.final_gap else "tie"


def rounded(summary: pd.DataFrame, digits: int = 3, floor: float = 1e-12) -> pd.DataFrame:
    """A printable copy: lr and final gap to ``digits`` significant digits, gaps below ``floor``
    shown as "<floor" (their last digits depend on the platform), success in %, and steps as
    integers or "never"."""
    out = summary.copy()
    out["lr"] = [f"{v:.{digits - 1}e}" for v in out.lr]
    out["success"] = [f"{round(100 * v)}%" for v in out.success]
    out["median_steps"] = ["never" if not math.isfinite(v) else f"{v:g}" for v in out.median_steps]
    out["final_gap"] = [f"<{floor:.0e}" if v < floor else "inf" if not math.isfinite(v) else f"{v:.{digits - 1}e}"
                        for v in out.final_gap]
    return out
