"""What the book's chapters share: records loading, one figure theme and palette, HTML tables,
glued numbers, papermill parameter checking, the repository root, environment.

A results chapter reads one grid's records with :func:`load`, sets the figure style once with
:func:`theme` (seaborn; every rule and optimizer keeps the colour and marker of :data:`RULE_STYLE`
and :data:`OPTIMIZER_STYLE` in every chapter), shows tables through :func:`table`, and puts numbers
into its Markdown prose with ``myst_nb.glue`` (:func:`interval` formats a difference with its CI).

Chapters are papermill notebooks. Papermill inserts a cell tagged ``injected-parameters``
right after the cell tagged ``parameters`` and only *warns* about names the notebook does
not define, so a mistyped ``-p semed 3`` would silently run with the default seed. The cell
after the parameters cell therefore calls :func:`check_parameters`, which compares the two
cells and raises.
"""

from __future__ import annotations

import ast
import math
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gofau.lab.provenance import ROOT

if TYPE_CHECKING:
    import pandas as pd

INJECTED_HEADER = "# Parameters"  # papermill's first line of the injected-parameters cell


def repo_root() -> Path:
    """The repository root: the folder holding the ``gofau`` package (editable install)."""
    return ROOT


def _assignments(source: str, what: str) -> dict[str, ast.expr]:
    """Names assigned at top level in a cell's source, with their value expressions."""
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise ValueError(f"the {what} cell is not valid Python: {err}") from None
    found: dict[str, ast.expr] = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) and node.value is not None else [])
        for target in targets:
            if isinstance(target, ast.Name):
                found[target.id] = node.value
    return found


def _literal(expr: ast.expr):
    try:
        return True, ast.literal_eval(expr)
    except (ValueError, TypeError, SyntaxError):
        return False, None


def _type_ok(default, given) -> bool:
    """Whether ``given`` may replace ``default``: bool for bool, int for int, a number for float,
    str for str, list or tuple for a sequence; a None default accepts anything."""
    if default is None:
        return True
    if isinstance(default, bool):
        return isinstance(given, bool)
    if isinstance(default, int):
        return isinstance(given, int) and not isinstance(given, bool)
    if isinstance(default, float):
        return isinstance(given, (int, float)) and not isinstance(given, bool)
    if isinstance(default, (list, tuple)):
        return isinstance(given, (list, tuple))
    return isinstance(given, type(default))


def compare_parameters(parameters_source: str, injected_source: str) -> dict:
    """Check papermill's injected assignments against the parameters cell's defaults.

    Every injected name must be assigned in the parameters cell (else ValueError naming it and
    listing the accepted names), and a literal value must have the default's type (else
    TypeError). Returns the injected literal values by name.
    """
    defaults = _assignments(parameters_source, "parameters")
    injected = _assignments(injected_source, "injected-parameters")
    unknown = sorted(set(injected) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown notebook parameter(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(sorted(defaults)) or '(none: no cell is tagged parameters)'}"
        )
    values = {}
    for name, expr in injected.items():
        known, given = _literal(expr)
        has_default, default = _literal(defaults[name])
        if known and has_default and not _type_ok(default, given):
            raise TypeError(
                f"notebook parameter {name}={given!r} is a {type(given).__name__}; "
                f"its default {default!r} is a {type(default).__name__}"
            )
        if known:
            values[name] = given
    return values


def check_parameters() -> None:
    """Call in the cell right after the ``parameters`` cell.

    Reads the kernel's input history: when the previous cell is papermill's injected cell
    (it starts with ``# Parameters``), its names are checked against the cell before it with
    :func:`compare_parameters`. Without injection (book build, JupyterLab) there is nothing to check.
    """
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        raise RuntimeError("check_parameters() runs inside a Jupyter kernel (IPython)")
    history = shell.user_ns["In"]  # history[-1] is the cell calling this function
    if len(history) >= 3 and history[-2].lstrip().startswith(INJECTED_HEADER):
        compare_parameters(history[-3], history[-2])


def environment() -> dict[str, str]:
    """The software and hardware a page was executed with: Python, torch, device, commit."""
    import torch

    from gofau.lab.provenance import device_name, git_commit

    return {
        "Python": sys.version.split()[0],
        "torch": torch.__version__,
        "device": device_name("cuda" if torch.cuda.is_available() else "cpu"),
        "torch threads": str(torch.get_num_threads()),
        "platform": platform.platform(),
        "gofau commit": git_commit() or "unknown",
    }


# ---------------------------------------------------------------- figures: one theme, one palette

# Okabe and Ito's colour-blind-safe palette; each rule and each optimizer keeps its colour and marker.
RULE_STYLE = {
    "additive": dict(color="#0072B2", marker="o"),        # blue
    "multiplicative": dict(color="#E69F00", marker="s"),  # orange
    "hybrid": dict(color="#009E73", marker="^"),          # bluish green
    "power": dict(color="#CC79A7", marker="D"),           # reddish purple
    "proportional": dict(color="#56B4E9", marker="v"),    # sky blue
    "exponentiated": dict(color="#D55E00", marker="P"),   # vermillion: Madam's rule
    "trust": dict(color="#999999", marker="X"),           # grey: Fromage's and LAMB's
}
OPTIMIZER_STYLE = {
    "sgd": dict(color="#000000", marker="o"),      # black
    "adamw": dict(color="#56B4E9", marker="p"),    # sky blue
    "adam": dict(color="#D55E00", marker="s"),     # vermillion
    "adagrad": dict(color="#999999", marker="^"),  # grey
    "rmsprop": dict(color="#F0E442", marker="D"),  # yellow
    "madam": dict(color="#CC79A7", marker="P"),    # reddish purple
    "fromage": dict(color="#009E73", marker="X"),  # bluish green
    "lars": dict(color="#0072B2", marker="*"),     # blue
    "lamb": dict(color="#E69F00", marker="h"),     # orange
}
SEQUENTIAL = "viridis"
"""The colour map for an ordered setting (gamma, depth, initial scale)."""
FIGURE_WIDTH = 7.0
"""Inches: the width of the book's text column at the theme's 110 dpi."""


def theme() -> None:
    """The book's figure style: seaborn's whitegrid, fonts sized for the page width, no legend frame;
    and numpy's global generator seeded, since seaborn's strip-plot jitter draws from it, so a chapter
    run twice on the same records draws the same figures."""
    import numpy as np
    import seaborn as sns

    np.random.seed(0)
    sns.set_theme(context="notebook", style="whitegrid", font_scale=0.85,
                  palette=[s["color"] for s in RULE_STYLE.values()],
                  rc={"figure.figsize": (FIGURE_WIDTH, 3.2), "figure.dpi": 110, "legend.frameon": False,
                      "axes.titlesize": "medium", "savefig.bbox": "tight"})


def palette(kind: str, names) -> dict:
    """``{name: colour}`` for seaborn's ``palette=``; ``kind`` is "rule" or "optimizer"."""
    return {n: _styles(kind)[n]["color"] for n in names}


def markers(kind: str, names) -> dict:
    """``{name: marker}`` for seaborn's ``markers=``; ``kind`` is "rule" or "optimizer"."""
    return {n: _styles(kind)[n]["marker"] for n in names}


def _styles(kind):
    styles = {"rule": RULE_STYLE, "optimizer": OPTIMIZER_STYLE}
    if kind not in styles:
        raise ValueError(f"kind must be one of {sorted(styles)}, got {kind!r}")
    return styles[kind]


def ordered(kind: str, names) -> list:
    """The names that occur in ``names``, in the book's fixed order of rules or optimizers."""
    present = set(names)
    return [n for n in _styles(kind) if n in present]


# ---------------------------------------------------------------- tables and numbers in prose

class Table:
    """A table shown as HTML in the book and JupyterLab, and as plain text elsewhere (nbval
    compares the text, so it must not change between runs)."""

    def __init__(self, df, formats: dict | str | None = None, name: str = "table"):
        self.df = df
        self.formats = formats
        self.name = name

    def _repr_html_(self):
        styler = self.df.style.format(self.formats, na_rep="–").set_uuid(self.name)
        return styler.set_table_attributes('class="gofau-table"').to_html()

    def __repr__(self):
        fmt = self.formats or {}
        return self.df.to_string(na_rep="–", formatters={c: (fmt if isinstance(fmt, str) else fmt[c]).format
                                                         for c in self.df.columns if isinstance(fmt, str) or c in fmt})


def table(df, formats: dict | str | None = None, name: str = "table") -> Table:
    """``df`` as a :class:`Table`; ``formats`` is a format string for every column or a dict of
    them per column (e.g. ``{"accuracy (%)": "{:.1f}"}``); ``name`` keeps the HTML ids stable."""
    return Table(df, formats, name)


def interval(estimate: float, low: float, high: float, unit: str = "points", digits: int = 1,
             cell: bool = False, note: str = "") -> str:
    """"+0.4 points (95% CI -0.2 to +1.0)": a signed estimate with its interval, for glued prose, and
    ``note`` inside the parentheses after it ("..., 5 pairs)"); with ``cell``, "+0.4 [-0.2, +1.0]" for a
    table whose header names the unit and the interval."""
    f = f"{{:+.{digits}f}}"
    if cell:
        return f"{f.format(estimate)} [{f.format(low)}, {f.format(high)}]".replace("-", "\u2212")
    text = f"{f.format(estimate)} {unit} (95% CI {f.format(low)} to {f.format(high)}".replace("-", "\u2212")
    return text + (f", {note})" if note else ")")


def finds(n: int) -> str:
    """How many tests of a family find a difference, in words: "none finds a difference", "1 finds a
    difference", "4 find a difference"."""
    if not (isinstance(n, int) and n >= 0):
        raise ValueError(f"n must be an integer >= 0 (tests that find a difference), got {n!r}")
    return "none finds a difference" if n == 0 else f"{n} {'finds' if n == 1 else 'find'} a difference"


def listing(items) -> str:
    """"a", "a and b", "a, b and c": the items joined as a list in prose."""
    items = [str(i) for i in items]
    return " and ".join([", ".join(items[:-1]), items[-1]] if len(items) > 1 else items)


def glue(name: str, value) -> None:
    """``myst_nb.glue(name, value, display=False)``: the value for ``{glue:text}`name``` in the prose."""
    from myst_nb import glue as _glue

    _glue(name, value, display=False)


# ---------------------------------------------------------------- a grid's records

SCALE_NAMES = {"gpu": "full-scale GPU runs", "cpu": "reduced-scale CPU runs", "yours": "runs of your own grid"}


@dataclass
class Records:
    """One grid's records as a chapter reads them (see :func:`load`)."""

    scale: str | None   # the key of ``grids`` shown, or None when no grid has records
    grids: list         # its grid files, relative to the repository root
    out: Path           # the records folder
    runs: pd.DataFrame    # one row per recorded run of the grid, with ``stage`` and ``picked``
    epochs: pd.DataFrame  # one row per (finished run, epoch), with the run's settings

    @property
    def finished(self):
        return self.runs[self.runs["status"] == "finished"]

    @property
    def scale_name(self) -> str:
        return SCALE_NAMES.get(self.scale, str(self.scale))

    @property
    def grid(self) -> str:
        """The grid file(s) shown, for the text."""
        return " and ".join(self.grids)

    def picked(self, by):
        """The finished runs at each group's tuned setting (every seed), with the group's tuning budget
        ``tried`` counted over the grid's own ``tune.over``; see :func:`analysis.picked_runs`."""
        from gofau.lab import analysis, grid
        overs = {tuple(grid.tune_over(grid.read_grid(ROOT / g))) for g in self.grids}
        if len(overs) != 1:
            raise ValueError(f"the grids {self.grid} tune different settings ({sorted(overs)}): load them one by one")
        return analysis.picked_runs(self.runs, by, list(overs.pop()))

    def where(self, ids=None) -> str:
        """What the records ``ids`` (default: every finished run) are: networks, data, device, dates."""
        from gofau.lab import analysis
        return analysis.describe_records(self.out, self.finished["id"] if ids is None else ids)

    def info(self, ids=None):
        """Per record: parameters, device, threads, torch, dates, data set and its sizes."""
        from gofau.lab import analysis
        return analysis.record_fields(self.out, self.finished["id"] if ids is None else ids)

    def chance(self, final: str = "test_acc") -> float:
        """``final`` of a constant guess among the runs' classes: 100 / classes (%) for an accuracy,
        ln(classes) nats for a loss (a language model's classes are its vocabulary)."""
        classes = self.finished["num_classes"].dropna().unique()
        if len(classes) != 1:
            found = sorted(map(int, classes)) or "unrecorded"
            raise ValueError(f"the runs of {self.grid} predict among {found} numbers of classes: chance needs "
                             "exactly one")
        return 100 / int(classes[0]) if final.endswith("acc") else math.log(classes[0])

    def scored(self, runs: pd.DataFrame, final: str = "test_acc") -> pd.DataFrame:
        """``runs`` (some of this grid's finished runs) with ``diverged`` (see :func:`diverged`) and
        ``final``: the last evaluation's ``final`` metric, in % for an accuracy, and :meth:`chance`'s
        value where the run diverged."""
        failed = diverged(runs, final)
        value = (100 if final.endswith("acc") else 1) * runs[f"final_{final}"].astype(float)
        return runs.assign(diverged=failed, final=value.where(~failed, self.chance(final)))

    def evaluation(self, planned: int, target_loss: float, horizon: int, final: str = "test_acc",
                   settings: tuple = ()) -> Evaluation:
        """The tuned grid's evaluation runs (its ``tune`` stage: every configuration at its pick, on the
        evaluation seeds), with ``final`` (the last evaluation's ``final`` metric: ``test_acc`` in %, or a
        language model's ``val_loss`` in nats) and the early phase of
        :func:`analysis.early_phase` (``target_loss`` and ``horizon`` fixed before the runs); ``planned``
        is the number of evaluation seeds the grid will run. A run that diverged (its loss stopped being
        finite, which ended it) is a failure of its configuration, not a missing seed: it is marked
        ``diverged`` and its ``final`` is a constant guess's (:attr:`Evaluation.chance`), where the means
        and the paired tests count it (see :meth:`scored`); so does its early phase, by the same
        convention: where it diverged before ``horizon``, its ``auc`` is a uniform guess's loss,
        ln(classes). A configuration is a method (:data:`METHOD`) and its values of ``settings`` (e.g.
        ``("arch",)`` for a pick per network); a setting of the grid's ``tune.across`` (e.g. ``init``)
        reruns the pick tuned without it. Raises RuntimeError while no configuration has an evaluation
        seed."""
        from gofau.lab import analysis, grid
        from gofau.lab import records as R

        by = [*METHOD, *settings]
        missing = [c for c in settings if c not in self.runs or self.runs[c].isna().any()]
        if missing:
            raise ValueError(f"settings {missing} must be columns of the runs without missing values (a setting a "
                             "run's choices ignore is recorded as missing: fill it with the value it stands for)")
        across = {k for g in self.grids for a in (grid.read_grid(ROOT / g).get("tune") or {}).get("across", [])
                  for k in a}
        tuned = [c for c in by if c not in across]  # the settings each pick was tuned for
        picked = self.picked(tuned)
        runs = picked[picked["stage"] == "tune"]
        rank = {c: {v: i for i, v in enumerate(ordered(c, self.runs[c]))} for c in METHOD}
        methods = sorted(set(map(tuple, self.runs[by].itertuples(index=False))),
                         key=lambda k: tuple(rank[c][v] if c in rank else v for c, v in zip(by, k)))
        n_seeds = runs.groupby(by)["seed"].nunique().reindex(methods, fill_value=0)
        order = [k for k in methods if n_seeds[k] > 0]
        if not order:
            raise RuntimeError(f"no evaluation seed of {self.grid} has finished yet: nothing to show")
        runs = self.scored(runs, final)
        steps = R.load_steps(self.out)
        steps = steps[steps["id"].isin(runs["id"])].reset_index(drop=True)
        runs = runs.merge(analysis.early_phase(steps, target_loss, horizon), on="id")
        auc = runs["auc"].astype(float)
        runs["auc"] = auc.where(~runs["diverged"] | auc.map(math.isfinite), self.chance("train_loss"))
        picks = picked[picked["stage"] == "grid"].set_index(tuned)

        def name(k):
            return ", ".join([label(k[:2]), *(f"{c} {v}" for c, v in zip(settings, k[2:]))])

        tuning = [name(k) for k in methods if tuple(v for c, v in zip(by, k) if c in tuned) not in picks.index]
        waiting = [name(k) for k in methods if name(k) not in tuning and k not in order]
        low, high = int(n_seeds[order].min()), int(n_seeds[order].max())
        seeds = f"{low}" if low == high else f"{low} to {high}"
        what, sep = ("configuration", "; ") if settings else ("method", ", ")
        status = (f"All {planned} evaluation seeds of every {what} have finished." if low >= planned and not (
            waiting or tuning) else
            f"The grid is still running: {seeds} of the {planned} evaluation seeds per {what} have finished, and "
            f"the evaluation results below are computed from those (the seeds run one at a time for all {what}s, "
            "so the comparisons stay paired)"
            + (f"; {sep.join(waiting)} {'has' if len(waiting) == 1 else 'have'} no evaluation seed yet" if waiting else "")
            + (f"; the tuning of {sep.join(tuning)} is still running" if tuning else "")
            + (", so the tables below leave them out" if waiting or tuning else "")
            + ". This page is rebuilt from the records as they are committed.")
        return Evaluation(picks, runs, steps, methods, order, n_seeds, status, self.chance(final))


def diverged(runs: pd.DataFrame, final: str = "test_acc") -> pd.Series:
    """Per run, whether it diverged: the trainer stopped it at a non-finite loss, or its last
    ``final`` metric is not finite."""
    import numpy as np

    return runs["diverged"].fillna(False).astype(bool) | ~np.isfinite(runs[f"final_{final}"].astype(float))


METHOD = ("optimizer", "rule")
"""The settings that name a method in a protocol grid's chapters."""


def label(method) -> str:
    """"sgd / hybrid": a method's name in tables and prose; an optimizer that updates by its own rule
    (AdamW, the relatives) by its class's name alone, e.g. "LAMB"."""
    import torch

    from gofau.relatives import RELATIVES

    own = {"adamw": torch.optim.AdamW, **RELATIVES}.get(method[0])
    return own.__name__ if own is not None else " / ".join(map(str, method))


@dataclass
class Evaluation:
    """A tuned grid's evaluation, as its chapters read it (see :meth:`Records.evaluation`)."""

    picks: pd.DataFrame    # each tuning group's run at its pick (the tuning seed), indexed by the tuned settings,
                           # with ``tried``
    runs: pd.DataFrame     # the finished evaluation runs, with ``final`` and the early-phase columns
    steps: pd.DataFrame    # their training-loss logs
    methods: list          # every configuration of the grid (a method, then its settings), in the book's order
    order: list            # the configurations with at least one finished evaluation seed
    n_seeds: pd.Series     # finished evaluation seeds per configuration of ``methods``
    status: str            # a paragraph for the page: how far the grid has come
    chance: float          # ``final`` of a constant guess, at which a diverged run counts: 100 / classes (%)
                           # for an accuracy, ln(classes) nats for a loss

    @property
    def n_min(self) -> int:
        """The fewest finished evaluation seeds of a configuration shown."""
        return int(self.n_seeds[self.order].min())


def load(grids: dict, scale: str = "auto", results_dir: str = "results") -> Records:
    """The records of one of ``grids`` (scale name -> grid file, or list of grid files run side by side,
    relative to the repository root; largest scale first) in ``results_dir``: ``scale`` itself, or with
    "auto" the first that has a finished run. Paths are resolved from the repository root, so a chapter
    runs from any folder.
    Raises FileNotFoundError, with the commands that make the records, when the grid has none, and
    ValueError when its runs were computed by different versions of the optimizer's math."""
    import pandas as pd

    from gofau.lab import analysis
    from gofau.lab import records as R

    out = ROOT / results_dir
    files = {k: [v] if isinstance(v, str) else list(v) for k, v in grids.items()}
    shown = analysis.pick_scale({k: [ROOT / f for f in fs] for k, fs in files.items()}, out, scale)
    runs = analysis.grid_runs([ROOT / f for f in files[shown]], out) if shown else pd.DataFrame()
    if runs.empty or not (runs["status"] == "finished").any():
        wanted = [f for k, fs in files.items() if scale in ("auto", k) for f in fs]
        raise FileNotFoundError(f"{out} holds no finished run of {', '.join(wanted)}; make the records "
                                "with " + " and ".join(f"`gofau-grid {g} --out {results_dir}`" for g in wanted))
    done = runs[runs["status"] == "finished"]
    method = [c for c in ("optimizer", "rule", "bias_rule") if c in done.columns]
    for key, g in done.groupby(method, dropna=False):  # each method's runs under one version of its math
        codes = g["optimizer_code"].unique()  # "None": older than the hash
        if len(codes) > 1 or any("+" in c for c in codes):
            raise ValueError(f"the runs of {' and '.join(files[shown])} in {out} with {dict(zip(method, key))} were "
                             f"computed by different versions of the optimizer's math (optimizer_code "
                             f"{', '.join(sorted(codes))}); rerun the older ones (gofau-grid --force) before "
                             "comparing them")
    epochs = R.load_epochs(out)
    epochs = epochs[epochs["id"].isin(runs.loc[runs["status"] == "finished", "id"])].reset_index(drop=True)
    return Records(shown, files[shown], out, runs, epochs)
