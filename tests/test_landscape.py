"""The 2D protocol: randomised instances, equal tuning budgets with edge extension, exact batching,
and verdicts that need a Holm-corrected test."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from gofau.lab import analysis
from gofau.lab import functions as F
from gofau.lab import landscape as L

INF = math.inf


def t64(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_every_rule_gets_the_same_budget_on_x2_ladders():
    grids = {r: L.Method("Adam", r).grid() for r in L.COMPARED_RULES}
    assert {r: len(g) for r, g in grids.items()} == {r: 24 for r in L.COMPARED_RULES}
    for rule, axes in L.AXES.items():
        for name, values in axes.items():
            if name not in L.FIXED:
                assert np.allclose(np.diff(np.log2(values)), 1.0)  # x2-spaced
    assert sorted({c["lr_in"] for c in grids["multiplicative"]}) == [0.1, 1.0, 10.0]
    assert 0.5 in [c["lr"] for c in grids["additive"]]  # the sphere's one-step lr for plain SGD


def test_methods_cover_every_base_and_rule_and_bad_ones_are_rejected():
    ms = L.methods()
    assert len(ms) == len(L.BASES) * 4 and {m.rule for m in ms} == set(L.COMPARED_RULES)
    with pytest.raises(ValueError, match="base must be one of"):
        L.Method("Lion", "additive")
    with pytest.raises(ValueError, match="rule must be one of additive, multiplicative, proportional, hybrid"):
        L.Method("Adam", "exponential")


def test_additive_sgd_on_the_original_sphere_is_gradient_descent():
    lr, steps = 0.1, 5
    fam = F.instances(F.SPHERE, 1, seed=0)
    index = torch.zeros(1, dtype=torch.int64)
    _, pos = L.run(fam, index, L.Method("SGD", "additive"), [{"lr": lr}], t64([1.0, -2.0]), steps,
                   keep_positions=True)
    expected = t64([1.0, -2.0]) * (1 - 2 * lr) ** torch.arange(steps + 1, dtype=torch.float64)[:, None]
    assert torch.allclose(pos[:, 0, 0], expected, rtol=1e-14)


def test_on_a_moved_and_rotated_instance_the_multiplicative_step_is_its_formula():
    fam = F.instances(F.SPHERE, 3, seed=4)
    index = torch.tensor([2], dtype=torch.int64)
    x0 = fam.starts(index, seed=1)
    lr, lr_in = 0.3, 0.7
    _, pos = L.run(fam, index, L.Method("SGD", "multiplicative"), [{"lr": lr, "lr_in": lr_in}], x0, 1,
                   keep_positions=True)
    grad = 2 * (x0 - fam.centres[2])  # a rotated sphere is still the sphere, about its new centre
    assert torch.allclose(pos[1, 0], x0 - lr * x0.abs() * torch.tanh(lr_in * grad), rtol=1e-13)


@pytest.mark.parametrize("base", list(L.BASES))
@pytest.mark.parametrize("rule", L.COMPARED_RULES)
def test_batched_starts_and_configurations_follow_their_solo_trajectories(base, rule):
    m = L.Method(base, rule)
    fam = F.instances(F.ROSENBROCK, 3, seed=0)
    index = torch.tensor([0, 1, 2], dtype=torch.int64)
    starts, configs = fam.starts(index, seed=1), m.grid()[:2]
    batch = L.run(fam, index, m, configs, starts, 15)
    for k, c in enumerate(configs):
        for i in range(3):
            solo = L.run(fam, index[i:i + 1], m, [c], starts[i:i + 1], 15)
            assert torch.allclose(batch[:, k, i], solo[:, 0, 0], rtol=1e-13, atol=1e-15, equal_nan=True)


def test_steps_to_tolerance_and_the_tuning_score_by_hand():
    gap = t64([5.0, 5.0, 5.0], [0.5, 2.0, 5.0], [0.01, 0.5, 5.0], [0.001, 0.2, 5.0])  # (steps + 1, n)
    hit = L.steps_to_tolerance(gap, 0.5)
    assert hit.tolist() == [1.0, 2.0, INF]
    score = L.tuning_score(hit, gap[-1], steps=3)
    assert score[0] == pytest.approx((1 + 2 + 4) / 3)  # a miss counts steps + 1
    assert score[1] == pytest.approx(math.log10(0.2))


def test_gaps_treat_divergence_as_infinite():
    g = L.gaps(F.STYBLINSKI_TANG, t64(F.STYBLINSKI_TANG.f_min + 1, math.nan, math.inf))
    assert g[0].item() == pytest.approx(1.0) and g[1:].tolist() == [INF, INF]


def test_a_pick_on_an_edge_extends_that_ladder_but_never_eta_in():
    configs = L.Method("SGD", "multiplicative").grid()
    top = {"lr": 1.0, "lr_in": 10.0}  # the top of the eta_out ladder and of the (fixed) eta_in set
    assert L.extensions(top, configs) == [{"lr": 2.0, "lr_in": 10.0}]
    assert L.extensions({"lr": 2.0**-4, "lr_in": 1.0}, configs) == []  # inside
    hybrid = L.Method("SGD", "hybrid").grid()
    corner = {"lr": 2.0**-8, "lr_out": 2.0**-3}
    assert L.extensions(corner, hybrid) == [{"lr": 2.0**-9, "lr_out": 2.0**-3}, {"lr": 2.0**-8, "lr_out": 2.0**-2}]


@pytest.fixture(scope="module")
def small():
    return L.protocol([F.SPHERE, F.SHIFTED], L.methods(bases=("SGD", "Adam")), steps=40, n_tune=3, n_eval=5,
                      n_starts=2, extend=3, n_boot=200)


def test_the_pick_is_the_best_tuning_score_and_the_evaluation_is_a_rerun_at_it(small):
    s = small["summary"]
    assert len(s) == 2 * 8 and set(small["tuning"].columns) >= {"lr", "score", "log_gap"}
    for _, row in s.iterrows():
        t = small["tuning"]
        t = t[(t.function == row.function) & (t.base == row.base) & (t.rule == row.rule)]
        assert len(t) == row.configs >= 24
        best = t.sort_values(["score", "log_gap"], kind="stable").iloc[0]
        assert best.lr == row.lr
    row = s[(s.function == "sphere") & (s.base == "Adam") & (s.rule == "hybrid")].iloc[0]
    fam = F.instances(F.SPHERE, 1 + 3 + 5, seed=0)
    index = torch.arange(4, 9).repeat_interleave(2)
    starts = fam.starts(torch.arange(9).repeat_interleave(2), seed=1)[8:]
    losses = L.run(fam, index, L.Method("Adam", "hybrid"), [{"lr": row.lr, "lr_out": row.lr_out}], starts, 40)
    final = L.gaps(F.SPHERE, losses)[-1, 0]
    assert row.success == pytest.approx(float((final <= 1e-3).double().mean()))
    assert row.final_gap == pytest.approx(float(final.median()))
    assert (row.success_lo, row.success_hi) == analysis.wilson(round(row.success * 10), 10)


def test_the_tables_are_deterministic_and_workers_give_the_same(small):
    again = L.protocol([F.SPHERE, F.SHIFTED], L.methods(bases=("SGD", "Adam")), steps=40, n_tune=3, n_eval=5,
                       n_starts=2, extend=3, n_boot=200, workers=2)
    for name in ("summary", "instances", "tuning"):
        pd.testing.assert_frame_equal(small[name], again[name])
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        L.protocol([F.SPHERE], L.methods(), workers=0)


def test_bad_settings_are_rejected_naming_them():
    with pytest.raises(ValueError, match="n_tune must be a positive int"):
        L.compare(F.SPHERE, L.methods(), n_tune=0)
    with pytest.raises(ValueError, match="tol must be > 0"):
        L.compare(F.SPHERE, L.methods(), tol=0)
    fam, index = F.instances(F.SPHERE, 1, 0), torch.zeros(1, dtype=torch.int64)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        L.run(fam, index, L.Method("SGD", "additive"), [{"lr": 0.1}], t64([1.0, 1.0]), 0)
    with pytest.raises(ValueError, match=r"starts must have shape \(1, 2\)"):
        L.run(fam, index, L.Method("SGD", "additive"), [{"lr": 0.1}], t64(1.0, 1.0), 3)


def test_the_multiplicative_rule_keeps_signs_where_the_hybrid_crosses():
    fam, index = F.instances(F.SHIFTED, 1, 0), torch.zeros(2, dtype=torch.int64)  # the original: minimum at x = -1
    starts = t64([1.5, 1.5], [0.0, 1.5])
    mult = L.paths(F.SHIFTED, fam, 0, [(L.Method("Adam", "multiplicative"), {"lr": 0.1, "lr_in": 1.0})], starts, 300)
    assert (mult[mult.start == 0].x > 0).all() and (mult[mult.start == 1].x == 0).all()
    hybrid = L.run(fam, index, L.Method("Adam", "hybrid"), [{"lr": 0.1, "lr_out": 0.1}], starts, 300)
    assert (L.gaps(F.SHIFTED, hybrid)[-1] < 1e-3).all()


def test_verdicts_need_the_corrected_test():
    rng = np.random.default_rng(0)
    rows = []
    for inst in range(12):
        base = 50 + rng.normal(0, 5)
        rows += [dict(function="f", base="A", rule="additive", instance=inst, steps=base, success=1.0),
                 dict(function="f", base="A", rule="hybrid", instance=inst, steps=base - 20 - rng.random(), success=1.0),
                 dict(function="f", base="A", rule="proportional", instance=inst, steps=base + 30 + rng.random(),
                      success=1.0),
                 dict(function="f", base="A", rule="multiplicative", instance=inst, steps=base + rng.normal(0, 3),
                      success=1.0)]
    v = L.verdicts(pd.DataFrame(rows), n_boot=200).set_index("rule")
    assert v.loc["hybrid", "verdict"] == "better" and v.loc["proportional", "verdict"] == "worse"
    assert v.loc["multiplicative", "verdict"] == "tie"
    assert (v.p_holm >= v.p).all()


@pytest.mark.parametrize("name", list(L.RELATIVES))
def test_a_relative_gives_every_start_its_own_tensor_and_follows_its_solo_trajectory(name):
    m = L.relatives([name])[0]
    fam = F.instances(F.BEALE, 3, seed=2)
    index = torch.tensor([0, 1, 2], dtype=torch.int64)
    starts, configs = fam.starts(index, seed=1), [{"lr": 0.01}, {"lr": 0.1}]
    batch = L.run(fam, index, m, configs, starts, 12)
    for k, c in enumerate(configs):
        for i in range(3):
            solo = L.run(fam, index[i:i + 1], m, [c], starts[i:i + 1], 12)
            assert torch.allclose(batch[:, k, i], solo[:, 0, 0], rtol=1e-13, atol=1e-15, equal_nan=True)
    assert len(m.grid()) == 24 and m.per_start
    with pytest.raises(ValueError, match=f"{name} updates with its own rule"):
        L.Method(name, "multiplicative")


def test_stored_protocol_reads_back_the_same_tables_and_recomputes_for_other_settings(tmp_path, monkeypatch):
    fs = [F.FUNCTIONS["sphere"]]
    ms = L.methods(["SGD"], ["additive", "multiplicative"]) + L.relatives(["Fromage"])
    st = dict(steps=20, n_tune=2, n_eval=3, n_starts=2, tol=1e-3, seed=0, extend=1)
    first = L.stored_protocol(tmp_path, fs, ms, **st)
    (path,) = tmp_path.glob("*.json")
    monkeypatch.setattr(L, "protocol", lambda *a, **k: pytest.fail("recomputed a stored protocol"))
    again = L.stored_protocol(tmp_path, fs, ms, **st)
    for name in first:
        pd.testing.assert_frame_equal(first[name], again[name])
    monkeypatch.undo()
    L.stored_protocol(tmp_path, fs, ms, **{**st, "steps": 21})  # another setting: another file
    assert len(list(tmp_path.glob("*.json"))) == 2
    assert L.stored_protocol(None, fs, ms, **st)["summary"].equals(first["summary"])  # None: never written
    other = tmp_path / "other"
    other.mkdir()
    (other / path.name).write_text(path.read_text().replace('"sphere"', '"rastrigin"'))
    with pytest.raises(ValueError, match="holds the tables of another protocol run"):
        L.stored_protocol(other, fs, ms, **st)
