"""A protocol that compares update rules on randomised 2D instances, tuning every method alike.

Instances. Each test function becomes a seeded family (:func:`gofau.lab.functions.instances`):
instance 0 is the original, the others have the minimiser moved to a random point and the
coordinates rotated by a random angle. Instances 1..n_tune tune, the next n_eval evaluate, and the
original is run at the picked settings as a named check of what the origin does.

Tuning. Every method gets the same budget of step-size configurations (``AXES``): the additive rule
a x2-spaced ladder of 24 learning rates; the multiplicative and proportional rules 8 x2-spaced
eta_out (``lr``) times eta_in (``lr_in``) in {0.1, 1, 10}; the hybrid 6 eta (``lr``) times 4
eta_out (``lr_out``), both x2-spaced, at gamma 0.5. A configuration scores the mean over the
tuning starts of its steps to tolerance (a start that never gets there counts ``steps + 1``), ties
broken by the median final gap; a pick on the edge of a ladder extends that ladder by one step,
up to ``extend`` times, and the number of configurations used is reported.

Batching. All starts of all instances at one configuration are one ``(n, 2)`` parameter in a param
group of its own; the loss is the sum over rows, so each row's gradient is its own instance's, and
as the base optimizers and these rules act element-wise each start follows exactly the trajectory it
would follow alone. Evaluation rows run beside the tuning rows and are read at the pick only.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from gofau.lab import analysis
from gofau.lab.functions import Function2D, Instances, instances
from gofau.optimizer import GOFAU
from gofau.relatives import RELATIVE_RULES
from gofau.relatives import RELATIVES as RELATIVE_CLASSES

BASES = {
    "SGD": ("sgd", {}),
    "SGD-m": ("sgd", {"momentum": 0.9}),
    "Adagrad": ("adagrad", {}),
    "RMSprop": ("rmsprop", {}),
    "Adam": ("adam", {}),
}
"""Base optimizers by display name: (gofau direction, base hyperparameters)."""

COMPARED_RULES = ("additive", "multiplicative", "hybrid", "proportional")
"""The rules the protocol compares, the additive one first (the reference)."""

RELATIVES = {"Madam": "madam", "Fromage": "fromage", "LARS": "lars", "LAMB": "lamb"}
"""GOFAU's relatives by display name (``gofau.relatives``), each with its own rule, weight decay off.
Their steps depend on whole tensors (norms, a bound from the initial RMS), so every start of a
relative is a tensor of its own."""


def ladder(first: int, n: int) -> list[float]:
    """``n`` step sizes 2^first, 2^(first + 1), ...: a x2-spaced ladder."""
    return [2.0**k for k in range(first, first + n)]


LR_IN = (0.1, 1.0, 10.0)
AXES = {
    "additive": {"lr": ladder(-12, 24)},
    "multiplicative": {"lr": ladder(-7, 8), "lr_in": list(LR_IN)},
    "proportional": {"lr": ladder(-7, 8), "lr_in": list(LR_IN)},
    "hybrid": {"lr": ladder(-8, 6), "lr_out": ladder(-6, 4)},
}
"""Each rule's starting grid (their products: 24 configurations each); ``lr_in`` is not extended."""
FIXED = ("lr_in",)


@dataclass(frozen=True)
class Method:
    """A base optimizer from ``BASES`` with an update rule (the hybrid at gamma 0.5), or a relative
    from ``RELATIVES`` with its own rule (tuned on the additive rule's ladder of learning rates)."""

    base: str
    rule: str

    def __post_init__(self):
        if self.base in RELATIVES:
            own = RELATIVE_RULES[RELATIVES[self.base]]
            if self.rule != own:
                raise ValueError(f"{self.base} updates with its own rule: rule must be {own!r}, got {self.rule!r}")
        elif self.base not in BASES:
            raise ValueError(f"base must be one of {', '.join([*BASES, *RELATIVES])}, got {self.base!r}")
        elif self.rule not in AXES:
            raise ValueError(f"rule must be one of {', '.join(AXES)}, got {self.rule!r}")

    @property
    def per_start(self) -> bool:
        """Whether each start needs a tensor of its own (a relative's steps depend on whole tensors)."""
        return self.base in RELATIVES

    def optimizer(self, params: list, configs: list[dict]) -> torch.optim.Optimizer:
        """One optimizer with ``params[k]`` (a tensor, or a list of them) in a group with the step sizes
        of ``configs[k]``."""
        groups = [{"params": p if isinstance(p, list) else [p], **c} for p, c in zip(params, configs)]
        if self.per_start:
            name = RELATIVES[self.base]
            return RELATIVE_CLASSES[name](groups, **({} if name in ("madam", "fromage") else {"weight_decay": 0.0}))
        direction, hyper = BASES[self.base]
        return GOFAU(groups, direction=direction, rule=self.rule, lr=configs[0]["lr"], **hyper)

    def grid(self) -> list[dict]:
        """The starting configurations: the product of the rule's axes."""
        axes = AXES["additive" if self.per_start else self.rule]
        return [dict(zip(axes, values)) for values in _product(list(axes.values()))]


def _product(lists):
    out = [[]]
    for values in lists:
        out = [o + [v] for o in out for v in values]
    return out


def methods(bases=tuple(BASES), rules=COMPARED_RULES) -> list[Method]:
    """Every base with every rule."""
    return [Method(b, r) for b in bases for r in rules]


def relatives(names=tuple(RELATIVES)) -> list[Method]:
    """The relatives, each with its own rule."""
    return [Method(n, RELATIVE_RULES[RELATIVES[n]]) for n in names]


def run(family: Instances, index: torch.Tensor, method: Method, configs: list[dict], starts: torch.Tensor,
        steps: int, keep_positions: bool = False):
    """Optimises instance ``index[i]`` from ``starts[i]`` (n, 2), for every configuration at once.
    Returns the losses (steps + 1, K, n), and the positions (steps + 1, K, n, 2) when asked."""
    if starts.ndim != 2 or starts.shape != (len(index), 2):
        raise ValueError(f"starts must have shape ({len(index)}, 2), got {tuple(starts.shape)}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if method.per_start:
        params = [[torch.nn.Parameter(s.detach().clone()) for s in starts] for _ in configs]
    else:
        params = [torch.nn.Parameter(starts.detach().clone()) for _ in configs]
    opt = method.optimizer(params, configs)
    losses = torch.empty(steps + 1, len(configs), len(index), dtype=starts.dtype)
    positions = torch.empty(steps + 1, len(configs), *starts.shape, dtype=starts.dtype) if keep_positions else None
    for t in range(steps + 1):
        x = torch.stack([torch.stack(p) for p in params] if method.per_start else params)
        loss = family(x, index)
        losses[t] = loss.detach()
        if keep_positions:
            positions[t] = x.detach()
        if t == steps:
            break
        opt.zero_grad(set_to_none=False)
        loss.sum().backward()
        opt.step()
    return (losses, positions) if keep_positions else losses


def gaps(function: Function2D, losses: torch.Tensor) -> torch.Tensor:
    """f - f_min, with diverged (non-finite) values set to +inf."""
    gap = losses - function.f_min
    return torch.where(torch.isfinite(gap), gap, torch.full_like(gap, math.inf))


def steps_to_tolerance(gap: torch.Tensor, tol: float) -> torch.Tensor:
    """First step index at which ``gap <= tol`` along dim 0; +inf where it never happens."""
    hit = gap <= tol
    first = hit.to(torch.int64).argmax(0).to(gap.dtype)
    return torch.where(hit.any(0), first, torch.full_like(first, math.inf))


def tuning_score(hit: torch.Tensor, final_gap: torch.Tensor, steps: int) -> tuple[float, float]:
    """A configuration's score on its tuning starts, lower is better: the mean steps to tolerance
    with misses counted as ``steps + 1``, then the median log10 final gap."""
    return float(censored_steps(hit, steps).mean()), float(torch.log10(final_gap.clamp(min=1e-300)).median())


def extensions(pick: dict, configs: list[dict]) -> list[dict]:
    """For each axis (but ``FIXED``) with two values or more on whose edge ``pick`` lies, the pick with
    that axis one x2 step further out, unless already tried."""
    new = []
    for name in pick:
        values = sorted({c[name] for c in configs})
        if name in FIXED or len(values) < 2 or pick[name] not in (values[0], values[-1]):
            continue
        c = {**pick, name: pick[name] * (2.0 if pick[name] == values[-1] else 0.5)}
        if c not in configs and c not in new:
            new.append(c)
    return new


def censored_steps(hit: torch.Tensor, steps: int) -> torch.Tensor:
    """Steps to tolerance with a miss (inf) counted as ``steps + 1``."""
    return torch.where(torch.isfinite(hit), hit, torch.full_like(hit, steps + 1.0))


def compare(function: Function2D, methods, *, n_tune: int = 20, n_eval: int = 40, n_starts: int = 4,
            steps: int = 200, tol: float = 1e-3, seed: int = 0, extend: int = 10, n_boot: int = 2000) -> dict:
    """The protocol (see the module doc) on one function: tables ``summary`` (per method: the pick,
    the configurations used, whether the pick is still on an edge after ``extend`` extensions,
    success rate with its Wilson interval, median steps to tolerance with a bootstrap interval over
    instances, median final gap; the same at the original instance, at the
    pick and at the configuration that is best on the original instance itself),
    ``instances`` (per method and evaluation instance: mean censored steps and success rate, the pairs
    of :func:`verdicts`) and ``tuning`` (every configuration's tuning score)."""
    for name, v in (("n_tune", n_tune), ("n_eval", n_eval), ("n_starts", n_starts)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol!r}")
    family = instances(function, 1 + n_tune + n_eval, seed)
    index = torch.arange(1 + n_tune + n_eval).repeat_interleave(n_starts)
    starts = family.starts(index, seed + 1)
    tune = (index >= 1) & (index <= n_tune)
    evaluate = index > n_tune
    summary, per_instance, tuning = [], [], []
    for m in methods:
        key = {"function": function.name, "base": m.base, "rule": m.rule}
        configs, new, hits, finals = [], m.grid(), [], []
        for _ in range(extend + 1):
            gap = gaps(function, run(family, index, m, new, starts, steps))
            hits.append(steps_to_tolerance(gap, tol))
            finals.append(gap[-1])
            configs += new
            hit, final = torch.cat(hits), torch.cat(finals)  # (K, n)
            scores = [tuning_score(h[tune], f[tune], steps) for h, f in zip(hit, final)]
            best = min(range(len(configs)), key=lambda k: scores[k])
            new = extensions(configs[best], configs)
            if not new:
                break
        tuning += [{**key, **c, "score": s[0], "log_gap": s[1]} for c, s in zip(configs, scores)]
        h, f = hit[best], final[best]
        ev_steps = censored_steps(h[evaluate], steps).reshape(n_eval, n_starts)
        ev_hit = (f[evaluate] <= tol).double().reshape(n_eval, n_starts)
        per_instance += [{**key, "instance": 1 + n_tune + i, "steps": float(s.mean()), "success": float(w.mean())}
                         for i, (s, w) in enumerate(zip(ev_steps, ev_hit))]
        lo, hi = analysis.wilson(int(ev_hit.sum()), ev_hit.numel())
        s_lo, s_hi = _median_interval(ev_steps.numpy(), n_boot, seed)
        orig = index == 0
        on_orig = min(range(len(configs)), key=lambda k: tuning_score(hit[k][orig], final[k][orig], steps))
        summary.append({**key, **{k: configs[best].get(k) for k in ("lr", "lr_in", "lr_out")},
                        "configs": len(configs), "on_edge": bool(new), "success": float(ev_hit.mean()),
                        "success_lo": lo, "success_hi": hi,
                        "median_steps": _never(_median(ev_steps), steps),
                        "steps_lo": _never(s_lo, steps), "steps_hi": _never(s_hi, steps),
                        "final_gap": float(f[evaluate].median()),
                        "original_success": float((f[orig] <= tol).double().mean()),
                        "original_steps": _never(_median(censored_steps(h[orig], steps)), steps),
                        "original_tuned_success": float((final[on_orig][orig] <= tol).double().mean()),
                        "original_tuned_steps": _never(_median(censored_steps(hit[on_orig][orig], steps)), steps)})
    return dict(summary=pd.DataFrame(summary), instances=pd.DataFrame(per_instance), tuning=pd.DataFrame(tuning))


def _median(x: torch.Tensor) -> float:
    return float(np.median(x.numpy()))  # the mean of the middle two for an even count


def _never(steps_value: float, steps: int) -> float:
    return math.inf if steps_value > steps else steps_value


def _median_interval(values: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the median of ``values`` (instances x starts), resampling
    instances (the starts of one instance are not independent)."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(values), size=(n_boot, len(values)))
    medians = np.median(values[picks].reshape(n_boot, -1), axis=1)
    lo, hi = np.percentile(medians, [2.5, 97.5])
    return float(lo), float(hi)


def protocol(functions, methods, workers: int = 1, **settings) -> dict:
    """:func:`compare` on every function, its tables joined; with ``workers`` > 1 the functions run
    in that many processes (one torch thread each), which gives the same tables."""
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if workers > 1 and len(functions) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        from functools import partial

        with ProcessPoolExecutor(min(workers, len(functions)), mp_context=multiprocessing.get_context("spawn"),
                                 initializer=torch.set_num_threads, initargs=(1,)) as pool:
            parts = list(pool.map(partial(compare, methods=methods, **settings), functions))
    else:
        parts = [compare(f, methods, **settings) for f in functions]
    return {k: pd.concat([p[k] for p in parts], ignore_index=True) for k in parts[0]}


def _key(functions, methods, settings) -> dict:
    """What determines :func:`protocol`'s tables: the functions, the methods, the settings, the math of
    each method's optimizer and the source of this module and of ``gofau.lab.functions``."""
    import inspect

    from gofau.lab import functions as F
    from gofau.lab.provenance import optimizer_code
    code = {f"{m.base} · {m.rule}": optimizer_code(RELATIVES[m.base] if m.per_start else BASES[m.base][0], [m.rule])
            for m in methods}
    source = hashlib.sha256("".join(inspect.getsource(mod) for mod in (F, sys.modules[__name__])).encode())
    return dict(functions=[f.name for f in functions], methods=list(code), settings=dict(sorted(settings.items())),
                optimizer_code=code, source=source.hexdigest()[:12])


def stored_protocol(folder, functions, methods, workers: int = 1, **settings) -> dict:
    """:func:`protocol`, kept on disk: read from ``folder`` when it holds the tables for the same
    functions, methods and settings under the same optimizer math and protocol code (:func:`_key`),
    else computed and, unless ``folder`` is None, written there (``<hash of the key>.json``, with
    the git commit, the worker processes and the wall seconds it took). A changed setting or changed code never reads an
    older file."""
    from gofau.lab import records
    from gofau.lab.provenance import git_commit

    key = _key(functions, methods, settings)
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16] + ".json"
    path = None if folder is None else Path(folder) / name
    if path is not None and path.is_file():
        stored = json.loads(path.read_text())
        if stored["key"] != key:
            raise ValueError(f"{path} holds the tables of another protocol run; delete it")
        return {k: pd.DataFrame(**v) for k, v in stored["tables"].items()}
    start = time.time()
    result = protocol(functions, methods, workers, **settings)
    if path is not None:
        body = dict(key=key, git_commit=git_commit(), created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    workers=workers, wall_seconds=round(time.time() - start, 1),
                    tables={k: v.to_dict(orient="split") for k, v in result.items()})
        records.atomic_write(path, lambda tmp: tmp.write_text(json.dumps(body)))
    return result


def verdicts(per_instance: pd.DataFrame, alpha: float = 0.05, n_boot: int = 2000) -> pd.DataFrame:
    """Each rule against the additive rule of its base on each function, paired on the evaluation
    instances (:func:`gofau.lab.analysis.paired_comparisons` on the mean censored steps: ``diff``
    < 0 is faster), Holm-corrected across the whole table; ``verdict`` is "better" or "worse" where
    the corrected test rejects, else "tie"."""
    out = analysis.paired_comparisons(per_instance, by=["function", "base", "rule"], against={"rule": "additive"},
                                      metric="steps", pair="instance", alpha=alpha, n_boot=n_boot)
    out["verdict"] = np.where(~out["significant"], "tie", np.where(out["diff"] < 0, "better", "worse"))
    return out.reset_index()


def paths(function: Function2D, family: Instances, k: int, picks, starts: torch.Tensor, steps: int) -> pd.DataFrame:
    """Rows (base, rule, start, step, x, y): each ``(method, config)`` of ``picks`` from ``starts``
    (n, 2) on instance ``k``."""
    index = torch.full((len(starts),), k, dtype=torch.int64)
    frames = []
    for m, config in picks:
        _, pos = run(family, index, m, [config], starts, steps, keep_positions=True)
        for i in range(len(starts)):
            frames.append(pd.DataFrame({"function": function.name, "base": m.base, "rule": m.rule, "start": i,
                                        "step": np.arange(steps + 1), "x": pos[:, 0, i, 0], "y": pos[:, 0, i, 1]}))
    return pd.concat(frames, ignore_index=True)
