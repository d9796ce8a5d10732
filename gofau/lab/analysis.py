"""Summaries of recorded training runs for the results chapters (image classification, robustness,
initialisation, depth, gamma, gradient flow).

Runs are selected by the grid file that produced them (:func:`grid_runs`: the configuration hashes
of its product stage and of its tune stage, and which of them the grid picked), so a chapter shows
exactly one grid's records and the picks the grid made. Comparisons between methods are paired by
seed (:func:`paired_comparisons`: bootstrap intervals and Wilcoxon signed-rank tests) or compare
spreads (:func:`spread_comparisons`: Brown-Forsythe), with Holm's correction across a chapter's
family (:func:`holm`). The early phase of training is read from step logs (:func:`early_phase`:
steps and seconds to a fixed loss target, a miss counting as never, as in AlgoPerf; mean loss up to
a fixed horizon).
"""
from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from gofau.lab import records as gresults

DEPTH = {"resnet9": 9, "vgg16": 16, "resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101}


def _by(by) -> list[str]:
    if isinstance(by, str):
        return [by]
    if not isinstance(by, (list, tuple)) or not all(isinstance(b, str) for b in by):
        raise TypeError(f"by must be a column name or a list of column names, got {by!r}")
    return list(by)


def _need(df: pd.DataFrame, columns, arg: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{arg} lacks column(s) {missing}; it has {sorted(map(str, df.columns))}")


# ---------------------------------------------------------------- which runs

def grid_ids(grid_file: str | Path, out: str | Path = "results") -> dict[str, tuple[str, bool]]:
    """Run id -> (stage, picked) for every configuration of ``grid_file``: stage "grid" (the product
    stage), "tune" (the runs its picks imply, given the records in ``out``) or "sweep" (the picks
    with their step sizes scaled, :func:`gofau.lab.grid.swept`), and whether the run is at a picked
    setting (:func:`gofau.lab.grid.picks`, the grid runner's own pick; a swept run is not)."""
    from gofau.lab.config import identity, run_id
    from gofau.lab.grid import make, picks, read_grid, swept, tuned, tuning_configs

    spec = read_grid(grid_file)
    configs = tuning_configs(spec, out)
    chosen = picks(spec, configs, out)
    unseeded = [{k: v for k, v in identity(make(c)).items() if k != "seed"} for c in chosen]
    ids = {}
    for c in configs:
        ident = identity(make(c))
        ids[run_id(make(c))] = ("grid", {k: v for k, v in ident.items() if k != "seed"} in unseeded)
    for c in tuned(spec, chosen):
        ids.setdefault(run_id(make(c)), ("tune", True))
    for c in swept(spec, chosen):
        ids.setdefault(run_id(make(c)), ("sweep", False))
    return ids


def grid_runs(grid_file, out: str | Path = "results") -> pd.DataFrame:
    """The rows of :func:`gofau.lab.records.load` (one per run) that belong to ``grid_file`` (one grid
    file, or a list of them run side by side), with ``stage`` ("grid" or "tune") and ``picked`` (see
    :func:`grid_ids`). Empty (no columns) when ``out`` holds none of them."""
    ids = {}
    for f in [grid_file] if isinstance(grid_file, (str, Path)) else grid_file:
        ids.update(grid_ids(f, out))
    df = gresults.load(out) if Path(out).exists() else pd.DataFrame()
    if df.empty or not df["id"].isin(ids).any():
        return pd.DataFrame()
    df = df[df["id"].isin(ids)].copy()
    df["stage"] = df["id"].map(lambda i: ids[i][0])
    df["picked"] = df["id"].map(lambda i: ids[i][1])
    return df.reset_index(drop=True)


def picked_runs(runs: pd.DataFrame, by, over) -> pd.DataFrame:
    """The finished runs at each group's picked setting (the grid runner's pick, every seed), with
    ``tried``: how many settings of ``over`` (a column or a list: the grid's ``tune.over``) the group's
    tuning stage finished, its tuning budget."""
    by, over = _by(by), _by(over)
    _need(runs, [*by, *over, "status", "stage", "picked"], "runs")
    done = runs[runs["status"] == "finished"]
    tried = (done[done["stage"] == "grid"].groupby(by)[over]
             .apply(lambda d: len(d.drop_duplicates())).rename("tried"))
    picked = done[done["picked"].astype(bool)]
    return picked.join(tried, on=by).reset_index(drop=True)


def ladder_ends(tried: pd.DataFrame, pick, columns=("lr",)) -> dict[str, str]:
    """The settings of ``pick`` (a run, as a mapping) at an end of the ladder ``tried`` (the tuning runs of
    its group, extensions included): ``{column: "smallest" | "largest"}`` for each of ``columns`` with at
    least two values tried, where a value beyond the grid might have done better."""
    _need(tried, columns, "tried")
    ends = {}
    for col in columns:
        values = tried[col].dropna()
        if values.nunique() >= 2 and pick[col] in (values.min(), values.max()):
            ends[col] = "largest" if pick[col] == values.max() else "smallest"
    return ends


def pick_scale(grids: dict, out: str | Path = "results", scale: str = "auto") -> str | None:
    """The scale to show: ``scale`` itself if it is a key of ``grids``; for "auto", the first key
    (in the order given, largest scale first) whose grid (a file or a list of files) has a finished
    record in ``out``, else None."""
    if scale != "auto":
        if scale not in grids:
            raise ValueError(f"scale must be 'auto' or one of {list(grids)}, got {scale!r}")
        return scale
    for name, path in grids.items():
        df = grid_runs(path, out)
        if not df.empty and (df["status"] == "finished").any():
            return name
    return None


def record_fields(out: str | Path, ids, fields=("n_params", "device_name", "threads", "torch_version", "started",
                                                 "finished", "git_commit")) -> pd.DataFrame:
    """One row per record of ``ids`` in ``out`` with its top-level ``fields`` and the data set's
    ``dataset``, ``n_train``, ``n_val`` and ``n_test`` (what :func:`gofau.lab.records.load` leaves out)."""
    ids = set(ids)
    rows = []
    for r in gresults.records(out) if Path(out).exists() else []:
        if r["id"] in ids:
            ds = r.get("dataset") or {}
            rows.append({"id": r["id"], **{f: r.get(f) for f in fields}, "dataset": ds.get("name"),
                         "n_train": ds.get("n_train"), "n_val": ds.get("n_val"), "n_test": ds.get("n_test")})
    return pd.DataFrame(rows, columns=["id", *fields, "dataset", "n_train", "n_val", "n_test"])


def describe_records(out: str | Path, ids) -> str:
    """One sentence saying what the records ``ids`` are: how many, which networks at which width (for
    language models: layers, heads, width, context and parameters), data set and subset sizes, epochs
    (steps), device and threads, torch, and the UTC dates they finished."""
    ids = list(ids)
    info = record_fields(out, ids)
    if info.empty:
        return "no records"
    runs = gresults.load(out)
    runs = runs[runs["id"].isin(ids)]

    def values(col, fmt=str, frame=info):
        vals = sorted({v for v in frame[col] if v is not None and not (isinstance(v, float) and math.isnan(v))},
                      key=str)
        return ", ".join(fmt(v) for v in vals) or "unknown"

    def count(n):
        return f"{int(n):,}"

    if "n_layer" in runs and runs["n_layer"].notna().all():  # language models (gofau.lab.lm)
        shapes = runs[["n_layer", "n_head", "n_embd", "block_size"]].astype(int).itertuples(index=False)
        nets = ", ".join(f"GPT ({n} layers, {h} heads, width {e}, context {b})" for n, h, e, b in sorted(set(shapes)))
        nets += f" with {values('n_params', count)} parameters"
        data = f"{values('n_train', count)} training / {values('n_val', count)} validation characters"
        length = f"{values('iters', count, runs)} steps"
    else:
        nets = ", ".join(f"{a} (width {w:g})" for a, w in sorted(set(zip(runs["arch"], runs["width"]))))
        data = f"{values('n_train', count)} training / {values('n_test', count)} test images"
        length = f"{values('epochs', count, runs)} epoch(s)"
    when = sorted(d for d in info["finished"].dropna())
    dates = "unknown dates"
    if when:
        first, last = (datetime.fromisoformat(d).strftime("%Y-%m-%d %H:%M") for d in (when[0], when[-1]))
        dates = f"finished {first} to {last} UTC" if first != last else f"finished {first} UTC"
    threads = values("threads", lambda t: f"{int(t)} thread{'s' if int(t) != 1 else ''}")
    return (f"{len(info)} run{'s' if len(info) != 1 else ''}: {nets}; {data} of {values('dataset')}; "
            f"{length}; {values('device_name')} ({threads}); "
            f"torch {values('torch_version')}; {dates}")


# ---------------------------------------------------------------- the early phase


def early_phase(steps: pd.DataFrame, target: float, horizon: int, metric: str = "train_loss") -> pd.DataFrame:
    """Per run (``id``) of a step log (:func:`gofau.lab.records.load_steps`): ``steps_to_target``, the
    first logged step whose ``metric`` is at or below ``target``, and ``seconds_to_target``, the
    training seconds then (both inf when the run never gets there: a miss counts as never); and
    ``auc``, the mean of ``metric`` from the first logged step to ``horizon`` (the trapezoidal area
    under the logged curve divided by that span; NaN when the log ends before ``horizon``, inf when the
    loss is not finite on the way, as for a diverged run). Fix ``target`` and ``horizon`` before
    looking at the runs."""
    _need(steps, ["id", "step", metric, "train_time_s"], "steps")
    if not (isinstance(target, (int, float)) and math.isfinite(target)):
        raise ValueError(f"target must be a finite number, got {target!r}")
    if not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
    rows = []
    for rid, run in steps.sort_values("step").groupby("id", sort=True):
        y = run[metric].astype(float).to_numpy()
        x = run["step"].to_numpy()
        hit = np.flatnonzero(y <= target)
        k = hit[0] if len(hit) else None
        inside = x <= horizon
        auc = math.nan
        if x.max() >= horizon and not np.isfinite(y[x <= horizon]).all():
            auc = math.inf
        elif x.max() >= horizon and inside.sum() >= 2:
            auc = float(np.trapezoid(np.interp(np.append(x[inside], horizon), x, y),
                                     np.append(x[inside], horizon)) / (horizon - x[inside][0]))
        rows.append((rid, math.inf if k is None else int(x[k]),
                     math.inf if k is None else float(run["train_time_s"].iloc[k]), auc))
    return pd.DataFrame(rows, columns=["id", "steps_to_target", "seconds_to_target", "auc"])


# ---------------------------------------------------------------- spread and tests

def spread(runs: pd.DataFrame, by, metric: str = "final_test_acc") -> pd.DataFrame:
    """Per group: ``n``, ``mean``, sample ``std`` (ddof 1), ``min``, ``max``, ``range``; std and range
    are NaN for a single run (no spread can be measured)."""
    by = _by(by)
    _need(runs, [*by, metric], "runs")
    g = runs.groupby(by)[metric]
    out = pd.DataFrame({"n": g.size(), "mean": g.mean(), "std": g.std(ddof=1), "min": g.min(), "max": g.max()})
    out["range"] = (out["max"] - out["min"]).where(out["n"] >= 2)
    return out


def mean_interval(values, n_boot: int = 10_000, seed: int = 0, test: str = "wilcoxon") -> tuple[float, float, float]:
    """(mean, lo, hi): the mean of ``values`` and its 95% interval, the one that goes with ``test`` as in
    :func:`paired_difference`: the percentile bootstrap (``n_boot`` resamples, generator seeded by
    ``seed``) with ``"wilcoxon"``, the t-interval with ``"t"``."""
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or len(x) < 2 or not np.isfinite(x).all():
        raise ValueError(f"values must be at least 2 finite numbers, got {values!r}")
    if test not in PAIRED_TESTS:
        raise ValueError(f"test must be one of {PAIRED_TESTS}, got {test!r}")
    return (float(x.mean()), *_interval(x, test, n_boot, seed))


def _interval(x: np.ndarray, test: str, n_boot: int, seed: int) -> tuple[float, float]:
    """The 95% interval of the mean of ``x``: mean -+ t_{0.975, n-1} sd / sqrt n with ``test="t"``, else
    the 2.5 and 97.5 percentiles of ``n_boot`` bootstrap means."""
    from scipy import stats

    if test == "t":
        half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
        return float(x.mean() - half), float(x.mean() + half)
    boots = x[np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return float(lo), float(hi)


def sd_interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """(sd, lo, hi): the sample standard deviation s (ddof 1) of ``values`` and its chi-square interval,
    exact for normal data: s sqrt((n - 1) / q_hi) to s sqrt((n - 1) / q_lo), with q_lo and q_hi the
    (1 -+ level) / 2 quantiles of chi^2 with n - 1 degrees of freedom."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or len(x) < 2 or not np.isfinite(x).all():
        raise ValueError(f"values must be at least 2 finite numbers, got {values!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    n, sd = len(x), float(x.std(ddof=1))
    q_lo, q_hi = stats.chi2.ppf([(1 - level) / 2, (1 + level) / 2], n - 1)
    return sd, sd * math.sqrt((n - 1) / q_hi), sd * math.sqrt((n - 1) / q_lo)


def curve_spread(epochs: pd.DataFrame, by, metric: str = "train_loss") -> pd.DataFrame:
    """Spread over seeds of a whole curve, per group: at each epoch the across-run std (ddof 1) and
    range of ``metric``; reported as their mean over epochs (``mean_std``, ``mean_range``) and the
    largest range (``max_range``); NaN for a group of a single run."""
    by = _by(by)
    _need(epochs, [*by, "epoch", metric], "epochs")
    g = epochs.groupby([*by, "epoch"])[metric]
    per = pd.DataFrame({"std": g.std(ddof=1), "range": (g.max() - g.min()).where(g.size() >= 2),
                        "n": g.size()}).reset_index()
    h = per.groupby(by)
    return pd.DataFrame({"n": h["n"].max(), "mean_std": h["std"].mean(), "mean_range": h["range"].mean(),
                         "max_range": h["range"].max()})


PAIRED_TESTS = ("wilcoxon", "t")


def paired_difference(a, b, n_boot: int = 10_000, seed: int = 0, test: str = "wilcoxon") -> dict:
    """Paired comparison of samples ``a`` and ``b`` (a[k] and b[k] share seed k): ``n`` pairs, the
    mean difference ``diff`` = mean(a - b), its 95% interval ``lo``..``hi`` and a two-sided ``p``.
    With ``test="wilcoxon"``: the percentile-bootstrap interval (``n_boot`` resamples of the pairs,
    generator seeded by ``seed``) and the Wilcoxon signed-rank test (scipy's default: exact without
    ties or zeros for n <= 50, else the normal approximation), whose smallest possible p with n pairs
    and no ties is 2 / 2^n (0.0625 for 5 pairs). With ``test="t"``: the paired t-test, t = mean(d) /
    (sd(d) / sqrt n) on n - 1 degrees of freedom, which assumes roughly normal differences and can
    reach any p (0 when every difference is the same nonzero number), and its own interval
    mean(d) -+ t_{0.975, n-1} sd(d) / sqrt n, which excludes 0 exactly when p < 0.05 (a bootstrap
    interval over a few seeds is too narrow for it). p is 1.0 when every difference is zero."""
    from scipy import stats

    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.ndim != 1 or a.shape != b.shape or not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("a and b must be one-dimensional samples of finite numbers of the same length")
    if len(a) < 2:
        raise ValueError(f"a and b need at least 2 pairs, got {len(a)}")
    if not isinstance(n_boot, int) or n_boot < 100:
        raise ValueError(f"n_boot must be an integer >= 100, got {n_boot!r}")
    if test not in PAIRED_TESTS:
        raise ValueError(f"test must be one of {PAIRED_TESTS}, got {test!r}")
    d = a - b
    lo, hi = _interval(d, test, n_boot, seed)
    if not d.any():
        p = 1.0
    elif test == "wilcoxon":
        p = float(stats.wilcoxon(d).pvalue)  # exact for n <= 50 without ties or zeros
    elif (d == d[0]).all():
        p = 0.0  # no spread: t is infinite
    else:
        p = float(2 * stats.t.sf(abs(d.mean()) / (d.std(ddof=1) / math.sqrt(len(d))), len(d) - 1))
    return dict(n=len(d), diff=float(d.mean()), lo=float(lo), hi=float(hi), p=p)


def wilcoxon_floor(n_pairs: int) -> float:
    """The smallest two-sided p-value of Wilcoxon's exact signed-rank test on ``n_pairs`` pairs without
    ties or zeros: 2 / 2^n, when every difference has the same sign."""
    if not (isinstance(n_pairs, (int, np.integer)) and n_pairs >= 1):
        raise ValueError(f"n_pairs must be an integer >= 1, got {n_pairs!r}")
    return 2 / 2 ** int(n_pairs)


def rank_test_pairs(n_tests: int, alpha: float = 0.05) -> int:
    """The fewest pairs with which a Wilcoxon signed-rank test can pass the first step of Holm's
    correction over ``n_tests`` comparisons: the least n with :func:`wilcoxon_floor` (n) < alpha / n_tests."""
    if not (isinstance(n_tests, (int, np.integer)) and n_tests >= 1):
        raise ValueError(f"n_tests must be an integer >= 1, got {n_tests!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    n = 1
    while wilcoxon_floor(n) >= alpha / n_tests:
        n += 1
    return n


def planned_test(planned: int, n_tests: int, alpha: float = 0.05) -> str:
    """The paired test a grid's design allows, chosen before any run from its ``planned`` seeds and
    the ``n_tests`` comparisons of its family: "wilcoxon" where that many pairs can pass Holm's first
    step (see :func:`rank_test_pairs`), else "t" (the paired t-test, which can reach any p)."""
    if not (isinstance(planned, (int, np.integer)) and planned >= 2):
        raise ValueError(f"planned must be an integer >= 2 (seeds per method), got {planned!r}")
    return "wilcoxon" if planned >= rank_test_pairs(n_tests, alpha) else "t"


def wilson(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson's score interval for a success rate of ``successes`` out of ``n`` (95% by default):
    (p + z^2/2n -+ z sqrt(p(1 - p)/n + z^2/4n^2)) / (1 + z^2/n), with p = successes / n."""
    if not (isinstance(n, (int, np.integer)) and n >= 1 and 0 <= successes <= n):
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got successes={successes!r}, n={n!r}")
    p = successes / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def holm(p_values, m: int | None = None) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (same order as given): the k-th smallest
    p becomes max over j <= k of min(1, (m - j + 1) p_(j)); reject where the adjusted p < alpha. ``m``
    (default: the number of p-values) is the family's planned size when some of its tests cannot be
    made yet: those count as never rejected, so the correction is as strict as the plan's."""
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1 or ((p < 0) | (p > 1) | ~np.isfinite(p)).any():
        raise ValueError(f"p_values must be a one-dimensional list of numbers in [0, 1], got {p_values!r}")
    if m is not None and not (isinstance(m, (int, np.integer)) and not isinstance(m, bool) and m >= len(p)):
        raise ValueError(f"m must be an integer at least the number of p-values ({len(p)}), got {m!r}")
    order = np.argsort(p, kind="stable")
    m = len(p) if m is None else int(m)
    adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(len(p))) * p[order]))
    out = np.empty(len(p))
    out[order] = adjusted
    return out


def _against(runs: pd.DataFrame, by: list, against: dict):
    """(key, group, reference) for every group of ``by`` that is not itself a reference; the reference
    has the settings of ``against`` and the same other columns of ``by``."""
    if not set(against) <= set(by):
        raise ValueError(f"against must name columns of by {by}, got {sorted(against)}")
    for key, g in runs.groupby(by):
        key = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        if all(key[k] == v for k, v in against.items()):
            continue
        ref = runs
        for k in by:
            ref = ref[ref[k] == (against[k] if k in against else key[k])]
        yield tuple(key.values()), g, ref


def _family(rows: dict, by: list, columns: list, alpha: float, one_metric: bool, m: int | None = None) -> pd.DataFrame:
    """Rows keyed by (metric, *by) as a table with Holm's correction across all of them (a family of ``m``
    planned tests, see :func:`holm`); the ``metric`` level is dropped when the caller asked for one metric."""
    if not rows:  # empty, with the index levels a full family has, so it concatenates and drops levels alike
        names = by if one_metric else ["metric", *by]
        index = pd.MultiIndex.from_tuples([], names=names) if len(names) > 1 else pd.Index([], name=names[0])
        return pd.DataFrame(columns=[*columns, "p_holm", "significant"], index=index)
    out = pd.DataFrame(list(rows.values()), index=pd.MultiIndex.from_tuples(list(rows), names=["metric", *by]))
    out["p_holm"] = holm(out["p"], m)
    out["significant"] = out["p_holm"] < alpha
    return out.droplevel("metric") if one_metric else out


def paired_comparisons(runs: pd.DataFrame, by, against: dict, metric="final_test_acc", pair: str = "seed",
                       alpha: float = 0.05, m: int | None = None, **boot) -> pd.DataFrame:
    """Every group of ``by`` against its reference (the group with the settings of ``against``, e.g.
    ``{"rule": "additive"}``, and the same other columns of ``by``), paired on ``pair``: one row per
    comparison and metric (``metric``: a column or a list of them) with :func:`paired_difference`'s
    n, diff, lo, hi and p (``boot``: its n_boot, seed and test), ``p_holm`` (Holm across every row:
    the family, or a planned family of ``m`` tests of which some cannot be made yet, see :func:`holm`) and
    ``significant`` (p_holm < alpha). With several metrics the index starts with
    ``metric``. Pairs with a non-finite value (a diverged run) are left out, so ``n`` counts the pairs
    used; groups need ``by`` to make ``pair`` unique."""
    by = _by(by)
    metrics = [metric] if isinstance(metric, str) else list(metric)
    _need(runs, [*by, pair, *metrics, *against], "runs")
    rows = {}
    for col in metrics:
        for key, g, ref in _against(runs, by, against):
            for side in (g, ref):
                if side[pair].duplicated().any():
                    raise ValueError(f"{key}: {pair} repeats within a group; add the column that varies to by")
            both = g.set_index(pair)[col].to_frame("a").join(ref.set_index(pair)[col].rename("b"), how="inner")
            both = both.astype(float)
            both = both[np.isfinite(both).all(axis=1)]  # a diverged run (no finite metric) has no pair
            if len(both) >= 2:
                rows[(col, *key)] = {**paired_difference(both["a"], both["b"], **boot)}
    return _family(rows, by, ["n", "diff", "lo", "hi", "p"], alpha, isinstance(metric, str), m)


def spread_comparisons(runs: pd.DataFrame, by, against: dict, metric="final_test_acc",
                       alpha: float = 0.05) -> pd.DataFrame:
    """The spread over runs (seeds) of every group of ``by`` against its reference (as in
    :func:`paired_comparisons`): ``n`` and ``n_ref`` runs, ``sd`` and ``sd_ref`` (ddof 1),
    ``sd_ratio`` = sd / sd_ref, and the Brown-Forsythe test of equal variances (Levene's test
    centred on the median) ``p``, with ``p_holm`` and ``significant`` across every row. Non-finite
    values (diverged runs) are left out, and so are groups with fewer than 3 runs or no spread on
    either side (with 2 runs both deviations from the median are equal)."""
    from scipy import stats

    by = _by(by)
    metrics = [metric] if isinstance(metric, str) else list(metric)
    _need(runs, [*by, *metrics, *against], "runs")
    rows = {}
    for m in metrics:
        for key, g, ref in _against(runs, by, against):
            a, b = g[m].astype(float).to_numpy(), ref[m].astype(float).to_numpy()
            a, b = a[np.isfinite(a)], b[np.isfinite(b)]  # diverged runs have no spread to compare
            if min(len(a), len(b)) >= 3 and a.std() > 0 and b.std() > 0:
                rows[(m, *key)] = dict(n=len(a), n_ref=len(b), sd=a.std(ddof=1), sd_ref=b.std(ddof=1),
                                       sd_ratio=a.std(ddof=1) / b.std(ddof=1),
                                       p=float(stats.levene(a, b, center="median").pvalue))
    return _family(rows, by, ["n", "n_ref", "sd", "sd_ref", "sd_ratio", "p"], alpha, isinstance(metric, str))


def lr_sensitivity(runs: pd.DataFrame, by, lr: str = "lr", metric: str = "final_test_acc") -> pd.DataFrame:
    """Per group over its learning-rate grid: ``n_lr`` values tried, ``best_lr`` and ``best``
    (highest ``metric``), ``worst``, ``drop`` = best - worst, and ``within_1pt``: how many lrs reach
    within 0.01 of the best. Runs with a non-finite metric (diverged) count as 0."""
    by = _by(by)
    _need(runs, [*by, lr, metric], "runs")
    df = runs.assign(_m=runs[metric].where(np.isfinite(runs[metric].astype(float)), 0.0))
    rows = {}
    for key, g in df.groupby(by):
        per_lr = g.groupby(lr)["_m"].median()
        best = per_lr.max()
        rows[key] = dict(n_lr=len(per_lr), best_lr=per_lr.idxmax(), best=best, worst=per_lr.min(),
                         drop=best - per_lr.min(), within_1pt=int((per_lr >= best - 0.01).sum()))
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index = pd.MultiIndex.from_tuples(out.index, names=by) if len(by) > 1 else pd.Index(
        [k[0] if isinstance(k, tuple) else k for k in out.index], name=by[0])
    return out


# ---------------------------------------------------------------- gradient flow

def grad_flow_steps(grad: pd.DataFrame, by) -> pd.DataFrame:
    """Per group and recorded step, over all parameter tensors: global ``grad_norm``, ``update_norm``
    and ``param_norm`` (square root of the sum of the tensors' squared norms), ``rel_update`` =
    update_norm / param_norm, ``saturated`` (the numel-weighted fraction of entries with a saturated
    tanh), and ``frozen``: the fraction of entries in tensors that did not move at that step."""
    by = _by(by)
    _need(grad, [*by, "step", "numel", "grad_norm", "update_norm", "param_norm", "saturated"], "grad")
    g = grad.assign(_g2=grad["grad_norm"] ** 2, _u2=grad["update_norm"] ** 2, _p2=grad["param_norm"] ** 2,
                    _sat=grad["saturated"].fillna(0) * grad["numel"],
                    _frozen=(grad["update_norm"] == 0) * grad["numel"]).groupby([*by, "step"])
    out = pd.DataFrame({"grad_norm": np.sqrt(g["_g2"].sum()), "update_norm": np.sqrt(g["_u2"].sum()),
                        "param_norm": np.sqrt(g["_p2"].sum()), "saturated": g["_sat"].sum() / g["numel"].sum(),
                        "frozen": g["_frozen"].sum() / g["numel"].sum()})
    out["rel_update"] = out["update_norm"] / out["param_norm"]
    return out.reset_index()


def param_kind(names: pd.Series, numel: pd.Series) -> pd.Series:
    """"bias" for a tensor named ``*.bias``; "norm scale" for ``*.weight`` whose sibling ``*.bias`` has
    as many entries (a normalisation layer's scale); otherwise "weight" (convolution or linear)."""
    size = dict(zip(names, numel))

    def kind(name):
        if name.endswith(".bias"):
            return "bias"
        if name.endswith(".weight") and size.get(name[:-len("weight")] + "bias") == size[name]:
            return "norm scale"
        return "weight"
    return names.map(kind)


def grad_flow_layers(grad: pd.DataFrame, by) -> pd.DataFrame:
    """Per group and parameter tensor (in model order, ``layer`` = its index; ``kind`` from
    :func:`param_kind`): medians over the recorded steps of grad_norm, update_norm, param_norm,
    rel_update and saturated."""
    by = _by(by)
    _need(grad, [*by, "param", "numel", "step", "grad_norm", "update_norm", "param_norm", "rel_update", "saturated"],
          "grad")
    first = grad[grad["step"] == grad["step"].min()].drop_duplicates("param")
    order = {p: i for i, p in enumerate(first["param"])}
    kinds = dict(zip(first["param"], param_kind(first["param"], first["numel"])))
    cols = ["grad_norm", "update_norm", "param_norm", "rel_update", "saturated"]
    out = grad.groupby([*by, "param"])[cols].median().reset_index()
    out["layer"] = out["param"].map(order)
    out["kind"] = out["param"].map(kinds)
    return out.sort_values([*by, "layer"]).reset_index(drop=True)
