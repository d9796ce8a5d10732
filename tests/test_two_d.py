"""What the discussion of notebooks/two_d.ipynb says, checked at the notebook's default settings.

The chapter's numbers reach its prose through glue, so they are always those of the run the page
shows; what glue cannot keep true is the text around them ("wins almost only where the minimum is at
the origin", "ties or loses more often than it wins"). This test runs the chapter's protocol through
the library, with the defaults read from the notebook's parameters cell, and asserts the values
that text relies on, so that a change to the package that moves them fails here instead of leaving
the chapter wrong. The functions are independent, so they run in two worker processes (about a
minute on two CPU cores instead of two).
"""

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gofau.lab import functions as F
from gofau.lab import landscape as L

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "two_d.ipynb"


def defaults() -> dict:
    """The literal assignments of the notebook's cell tagged ``parameters``."""
    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    cell = next(c for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))
    tree = ast.parse("".join(cell["source"]))
    return {t.id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)}


P = defaults()
SAME = {0.0: "additive", 0.5: "hybrid", 1.0: "multiplicative"}  # the gammas the main comparison already ran


@pytest.fixture(scope="module")
def chapter():
    assert P["smoke"] is False and P["steps"] == 500 and P["n_eval"] == 20  # the settings the text describes
    settings = dict(lrs=L.lr_grid(P["lr_low"], P["lr_high"], P["n_lrs"]), steps=P["steps"], n_tune=P["n_tune"],
                    n_eval=P["n_eval"], tol=P["tol"], lr_in=P["lr_in"], seed=P["seed"])
    gamma_methods = [L.Method(b, "hybrid", g) for b in P["gamma_bases"] for g in P["gammas"] if g not in SAME]
    summary = L.protocol(list(F.FUNCTIONS.values()), L.methods(), **settings, workers=2).summary
    extra = L.protocol([F.FUNCTIONS[n] for n in P["gamma_functions"]], gamma_methods, **settings, workers=2).summary
    reused = summary[summary.function.isin(P["gamma_functions"]) & summary.base.isin(P["gamma_bases"])]
    reused = reused.assign(gamma=reused.rule.map({r: g for g, r in SAME.items()}), rule="hybrid")
    gamma = pd.concat([extra, reused], ignore_index=True)
    verdicts = L.verdicts(summary)
    counts = pd.crosstab(verdicts.function, [verdicts.rule, verdicts.verdict])
    return (summary.set_index(["function", "base", "rule"]), verdicts.set_index(["function", "base", "rule"]).verdict,
            counts, gamma.set_index(["function", "base", "gamma"]).sort_index())


def col(S, f, bases, rule, key):
    return [S.loc[(f, b, rule), key] for b in bases]


def test_multiplicative_wins_where_the_minimum_is_at_the_origin_and_almost_only_there(chapter):
    S, V, counts, _ = chapter
    assert {f for f in counts.index if counts.loc[f, ("multiplicative", "better")]} == {"sphere", "rastrigin"}
    assert col(S, "sphere", ["SGD-m", "RMSprop", "Adam"], "multiplicative", "median_steps") == [1.5, 1, 1]
    assert col(S, "sphere", ["SGD-m", "RMSprop", "Adam"], "additive", "median_steps") == [14, 49.5, 44.5]
    assert [S.loc[("sphere", "Adagrad", r), "median_steps"] for r in ("multiplicative", "additive")] == [78.5, 8]
    assert 1e-11 < S.loc[("sphere", "Adam", "multiplicative"), "final_gap"] < 1e-8  # "stalls" (Figure 3)
    assert col(S, "rastrigin", ["SGD", "SGD-m", "RMSprop"], "multiplicative", "success") == [1, 1, 1]
    assert col(S, "rastrigin", ["SGD", "SGD-m", "RMSprop"], "additive", "success") == [0, 0, 0]
    assert np.allclose(col(S, "rastrigin", ["SGD", "SGD-m", "RMSprop"], "multiplicative", "lr"), [1, 10**-0.5, 1])


def test_multiplicative_fails_where_the_minimum_is_not_in_the_start_quadrant(chapter):
    S, V, _, _ = chapter
    assert max(col(S, "shifted", L.BASES, "multiplicative", "success")) == 0
    assert np.allclose(col(S, "shifted", L.BASES, "multiplicative", "final_gap"), 1, atol=0.01)
    assert max(col(S, "ill_conditioned", L.BASES, "multiplicative", "success")) == 0.2
    assert max(col(S, "beale", L.BASES, "multiplicative", "success")) == 0.2
    assert max(col(S, "beale", L.BASES, "additive", "success")) == 0.8
    assert [S.loc[("himmelblau", "Adam", r), "success"] for r in L.COMPARED_RULES] == [1, 1, 1]
    assert [S.loc[("himmelblau", "Adam", r), "median_steps"] for r in L.COMPARED_RULES] == [85.5, 80, 80]
    assert all(V.loc[("himmelblau", b, "multiplicative")] == "worse" for b in ["SGD", "SGD-m", "Adagrad", "RMSprop"])


def test_hybrid_helps_on_beale_and_hurts_on_the_convex_quadratics(chapter):
    S, V, counts, _ = chapter
    assert counts.loc["beale", ("hybrid", "better")] == 5
    assert col(S, "beale", ["Adam", "Adagrad"], "hybrid", "success") == [0.95, 0.85]
    assert col(S, "beale", ["Adam", "Adagrad"], "additive", "success") == [0.8, 0.4]
    worse_on_both = [b for b in L.BASES if all(V.loc[(f, b, "hybrid")] == "worse" for f in ("ill_conditioned", "shifted"))]
    assert worse_on_both == ["SGD", "Adagrad", "RMSprop"]
    assert [S.loc[("shifted", "RMSprop", r), "success"] for r in ("hybrid", "additive")] == [0.3, 1]
    hybrid = counts.sum()["hybrid"]
    assert hybrid["better"] < hybrid["tie"] + hybrid["worse"]  # "ties or loses more often than it wins"


def test_gamma_trades_the_two_behaviours(chapter):
    _, _, _, G = chapter
    for b in P["gamma_bases"]:
        assert [G.loc[("shifted", b, g), "success"] for g in P["gammas"]] == [1, 1, 1, 1, 0]
        assert G.loc[("beale", b)].success.idxmax() == 0.5


def test_rosenbrock_and_styblinski_tang_are_hard_for_every_rule(chapter):
    S, _, _, _ = chapter
    rosenbrock = S.xs("rosenbrock").success
    assert rosenbrock.max() == S.loc[("rosenbrock", "Adam", "additive"), "success"] == 0.45
    assert (rosenbrock == rosenbrock.max()).sum() == 1
    # Styblinski-Tang: success is the share of starts in the global minimum's basin (both coordinates below
    # the quartic's local maximum), and for the multiplicative rule the share with both coordinates negative.
    t0 = np.sort(np.roots([4, 0, -32, 5]).real)[1]
    starts = F.STYBLINSKI_TANG.sample_starts(P["n_eval"], P["seed"] + 1).numpy()
    basin, negative = (starts < t0).all(1).mean(), (starts < 0).all(1).mean()
    assert (basin, negative) == (0.3, 0.25)
    st = S.xs("styblinski_tang").success
    assert np.isclose(st, basin).sum() == 9
    assert np.isclose(st.xs("multiplicative", level="rule"), negative).sum() == 4
