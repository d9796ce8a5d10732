import math

import numpy as np
import pandas as pd
import pytest
import torch

from gofau.lab import functions as F
from gofau.lab import landscape as L

INF = math.inf


def t64(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_lr_grid_is_log_spaced_with_the_given_ends():
    g = L.lr_grid(1e-4, 1.0, 9)
    assert len(g) == 9 and g[0] == pytest.approx(1e-4) and g[-1] == pytest.approx(1.0)
    assert np.allclose(np.diff(np.log10(g)), 0.5)
    with pytest.raises(ValueError, match="0 < low < high"):
        L.lr_grid(1.0, 0.1, 3)
    with pytest.raises(ValueError, match="size must be an int >= 2"):
        L.lr_grid(0.1, 1.0, 1)


def test_methods_cover_every_base_and_rule_and_bad_ones_are_rejected():
    ms = L.methods()
    assert len(ms) == len(L.BASES) * 3 and {m.rule for m in ms} == set(L.COMPARED_RULES)
    with pytest.raises(ValueError, match="base must be one of"):
        L.Method("Lion", "additive")
    with pytest.raises(ValueError, match="rule must be one of additive, multiplicative, hybrid, power"):
        L.Method("Adam", "exponential")
    with pytest.raises(ValueError, match=r"gamma must be in \[0, 1\]"):
        L.Method("Adam", "hybrid", gamma=1.5)


def test_additive_sgd_on_the_sphere_is_gradient_descent():
    lr, steps = 0.1, 5
    r = L.run(F.SPHERE, L.Method("SGD", "additive"), [lr], t64([1.0, -2.0]), steps)
    expected = t64([1.0, -2.0]) * (1 - 2 * lr) ** torch.arange(steps + 1, dtype=torch.float64)[:, None]
    assert torch.allclose(r.positions[:, 0, 0], expected, rtol=1e-14)
    assert torch.allclose(r.losses[:, 0, 0], (expected**2).sum(1), rtol=1e-14)


def test_multiplicative_sgd_step_matches_the_formula():
    lr, lr_in = 0.3, 0.7
    x0 = t64([1.5, -0.5])
    r = L.run(F.SPHERE, L.Method("SGD", "multiplicative"), [lr], x0, 1, lr_in=lr_in)
    x1 = x0 - lr * x0.abs() * torch.tanh(lr_in * 2 * x0)
    assert torch.allclose(r.positions[1, 0], x1, rtol=1e-14)


@pytest.mark.parametrize("base", list(L.BASES))
@pytest.mark.parametrize("rule", ["additive", "multiplicative", "hybrid"])
def test_batched_starts_and_lrs_follow_their_solo_trajectories(base, rule):
    m, f = L.Method(base, rule), F.ROSENBROCK
    starts, lrs = f.sample_starts(3, seed=0), [1e-3, 1e-2]
    batch = L.run(f, m, lrs, starts, 15)
    for k, lr in enumerate(lrs):
        for i in range(3):
            solo = L.run(f, m, [lr], starts[i:i + 1], 15)
            assert torch.allclose(batch.positions[:, k, i], solo.positions[:, 0, 0],
                                  rtol=1e-13, atol=1e-15, equal_nan=True)


def test_steps_to_tolerance_and_score_by_hand():
    gap = t64([5.0, 5.0, 5.0], [0.5, 2.0, 5.0], [0.01, 0.5, 5.0], [0.001, 0.2, 5.0])  # (steps + 1, n)
    assert L.steps_to_tolerance(gap, 0.5).tolist() == [1.0, 2.0, INF]
    s = L.score(gap, 0.5)
    assert s["success"] == pytest.approx(2 / 3)
    assert s["median_steps"] == 2.0 and s["final_gap"] == 0.2
    # With an even count the median averages the middle two, so half misses read as never.
    assert L.score(gap[:, 1:], 0.5)["median_steps"] == INF


def test_gaps_treat_divergence_as_infinite():
    g = L.gaps(F.STYBLINSKI_TANG, t64(F.STYBLINSKI_TANG.f_min + 1, math.nan, math.inf))
    assert g[0].item() == pytest.approx(1.0) and g[1:].tolist() == [INF, INF]


@pytest.fixture(scope="module")
def small():
    return L.protocol([F.SPHERE, F.SHIFTED], L.methods(bases=("SGD", "Adam")), lrs=L.lr_grid(1e-2, 1.0, 3),
                     steps=30, n_tune=3, n_eval=5, tol=1e-3, n_paths=2)


def test_compare_picks_the_lr_with_the_lowest_median_tuning_gap(small):
    assert len(small.summary) == 2 * 6 and len(small.lr_scan) == 2 * 6 * 3
    for _, row in small.summary.iterrows():
        scan = small.lr_scan[(small.lr_scan.function == row.function) & (small.lr_scan.base == row.base)
                             & (small.lr_scan.rule == row.rule)]
        assert row.lr == scan.lr.iloc[int(np.argmin(scan.tune_gap.to_numpy()))]


def test_compare_scores_match_a_rerun_of_the_chosen_lr_on_the_evaluation_starts(small):
    row = small.summary.iloc[4]  # Adam additive on the sphere
    f, m = F.FUNCTIONS[row.function], L.Method(row.base, row.rule)
    r = L.run(f, m, [row.lr], f.sample_starts(5, seed=1), 30)
    assert L.score(L.gaps(f, r.losses[:, 0]), 1e-3) == {k: row[k] for k in ("success", "median_steps", "final_gap")}
    curve = small.curves[(small.curves.function == row.function) & (small.curves.base == row.base)
                         & (small.curves.rule == row.rule)]
    assert np.allclose(curve["median"], np.median(L.gaps(f, r.losses[:, 0]).numpy(), axis=1), rtol=1e-12, atol=0)
    assert len(small.paths) == 2 * 6 * 2 * 31


def test_compare_is_deterministic(small):
    again = L.protocol([F.SPHERE, F.SHIFTED], L.methods(bases=("SGD", "Adam")), lrs=L.lr_grid(1e-2, 1.0, 3),
                      steps=30, n_tune=3, n_eval=5, tol=1e-3, n_paths=2)
    pd.testing.assert_frame_equal(small.summary, again.summary)
    assert small.settings == dict(lrs=L.lr_grid(1e-2, 1.0, 3), steps=30, n_tune=3, n_eval=5, tol=1e-3, lr_in=1.0, seed=0)


def test_compare_rejects_bad_settings():
    with pytest.raises(ValueError, match="n_tune and n_eval must be positive ints"):
        L.protocol([F.SPHERE], L.methods(), lrs=[0.1, 1.0], steps=3, n_tune=0)
    with pytest.raises(ValueError, match="tol must be > 0"):
        L.protocol([F.SPHERE], L.methods(), lrs=[0.1, 1.0], steps=3, tol=0)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        L.run(F.SPHERE, L.Method("SGD", "additive"), [0.1], t64([1.0, 1.0]), 0)
    with pytest.raises(ValueError, match=r"starts must have shape \(n, 2\)"):
        L.run(F.SPHERE, L.Method("SGD", "additive"), [0.1], t64(1.0, 1.0), 3)


def test_multiplicative_keeps_signs_and_zeros_while_hybrid_crosses():
    picks = [(L.Method("Adam", r), 0.1) for r in ("multiplicative", "hybrid")]
    rows, paths = L.from_starts(F.SHIFTED, picks, t64([1.5, 1.5], [0.0, 1.5]), 300)
    mult = paths[paths.rule == "multiplicative"]
    assert (mult[mult.start == 0].x > 0).all() and (mult[mult.start == 1].x == 0).all()
    hyb = rows[rows.rule == "hybrid"]
    assert (hyb.x_end < 0).all() and (hyb.final_gap < 1e-3).all()
    assert rows[rows.rule == "multiplicative"].final_gap.min() > 0.99  # (x + 1)^2 >= 1 for x >= 0


def _summary(rows):
    return pd.DataFrame([dict(function="f", base=b, rule=r, gamma=0.5, lr=0.1, success=s, median_steps=n, final_gap=g)
                         for b, r, s, n, g in rows])


def test_verdict_rules_by_hand():
    s = _summary([
        ("A", "additive", 0.5, 10, 1e-4), ("A", "hybrid", 0.6, INF, 1.0), ("A", "multiplicative", 0.45, 7, 1e-4),
        ("B", "additive", 0.2, INF, 1.0), ("B", "hybrid", 0.2, INF, 0.05), ("B", "multiplicative", 0.25, INF, 5.0),
        ("C", "additive", 0.6, 100, 1e-4), ("C", "hybrid", 0.6, 130, 1e-4), ("C", "multiplicative", 0.6, INF, 1e-3),
    ])
    v = L.verdicts(s).set_index(["base", "rule"]).verdict
    assert v["A", "hybrid"] == "better"  # success +0.1
    assert v["A", "multiplicative"] == "better"  # success within 0.1, 7 / 10 <= 0.8
    assert v["B", "hybrid"] == "better"  # both never: gap 20 times lower
    assert v["B", "multiplicative"] == "tie"  # both never: gap 5 times higher
    assert v["C", "hybrid"] == "worse"  # 130 / 100 >= 1.25
    assert v["C", "multiplicative"] == "worse"  # never vs 100 steps


def test_rounded_hides_platform_digits():
    s = _summary([("A", "additive", 0.55, INF, 3.14159e-20), ("A", "hybrid", 1.0, 12.5, 0.012345)])
    r = L.rounded(s)
    assert r.final_gap.tolist() == ["<1e-12", "1.23e-02"]
    assert r.median_steps.tolist() == ["never", "12.5"] and r.success.tolist() == ["55%", "100%"]
    assert r.lr.tolist() == ["1.00e-01", "1.00e-01"]


def test_workers_give_the_same_tables_as_one_process():
    kw = dict(lrs=L.lr_grid(1e-2, 1.0, 3), steps=20, n_tune=2, n_eval=3)
    one = L.protocol([F.SPHERE, F.SHIFTED], L.methods(bases=("SGD",)), **kw)
    two = L.protocol([F.SPHERE, F.SHIFTED], L.methods(bases=("SGD",)), **kw, workers=2)
    for name in ("summary", "lr_scan", "curves", "paths"):
        pd.testing.assert_frame_equal(getattr(one, name), getattr(two, name))
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        L.protocol([F.SPHERE], L.methods(), **kw, workers=0)
