"""gofau.lab.analysis: each summary against hand arithmetic, the grid selection against records written
for a small grid file, and the error messages."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gofau.lab import analysis as A
from gofau.lab import records as gresults
from gofau.lab.config import TrainConfig, identity


def epochs_frame():
    """Two rules, three seeds each, three epochs; accuracy = base + 0.1 * epoch + seed offset."""
    rows = []
    for rule, base in (("additive", 0.3), ("hybrid", 0.4)):
        for seed, off in ((0, 0.0), (1, 0.02), (2, 0.07)):
            for epoch in (1, 2, 3):
                rows.append(dict(id=f"{rule}{seed}", rule=rule, seed=seed, epoch=epoch,
                                 test_acc=base + 0.1 * epoch + off, train_loss=2.0 - 0.5 * epoch + off,
                                 train_time_s=10.0 + seed))
    return pd.DataFrame(rows)


def test_spread_and_curve_spread():
    ep = epochs_frame()
    last = ep[ep.epoch == 3].rename(columns={"test_acc": "final_test_acc"})
    s = A.spread(last, "rule")
    assert s.loc["additive", "std"] == pytest.approx(np.std([0.6, 0.62, 0.67], ddof=1))
    assert s.loc["hybrid", "range"] == pytest.approx(0.07)
    c = A.curve_spread(ep, "rule", "train_loss")
    # the offsets are the same at every epoch, so the per-epoch std and range are constant
    assert c.loc["additive", "mean_std"] == pytest.approx(np.std([0, 0.02, 0.07], ddof=1))
    assert c.loc["additive", "max_range"] == pytest.approx(0.07)
    one = A.spread(last[last.seed == 0], "rule")
    assert one.loc["hybrid", "n"] == 1 and one[["std", "range"]].isna().all().all()
    assert A.curve_spread(ep[ep.seed == 0], "rule")[["mean_std", "mean_range", "max_range"]].isna().all().all()


def test_lr_sensitivity_treats_divergence_as_zero():
    runs = pd.DataFrame(dict(rule=["a"] * 3 + ["m"] * 3, lr=[0.1, 0.3, 1.0] * 2,
                             final_test_acc=[0.5, 0.55, 0.545, 0.4, float("nan"), 0.3]))
    s = A.lr_sensitivity(runs, "rule")
    assert s.loc["a"].tolist() == pytest.approx([3, 0.3, 0.55, 0.5, 0.05, 2])
    assert s.loc["m", "worst"] == 0.0 and s.loc["m", "best_lr"] == 0.1


def grad_frame():
    rows = []
    for rule, sat in (("additive", float("nan")), ("multiplicative", 0.5)):
        for step in (0, 10):
            rows.append(dict(rule=rule, step=step, param="w", numel=3, grad_norm=3.0, update_norm=0.3,
                             param_norm=4.0, rel_update=0.075, saturated=sat))
            moved = 0.4 if rule == "additive" else 0.0
            rows.append(dict(rule=rule, step=step, param="b", numel=1, grad_norm=4.0, update_norm=moved,
                             param_norm=3.0 if rule == "additive" else 0.0,
                             rel_update=moved / 3.0 if rule == "additive" else float("nan"), saturated=0.0))
    return pd.DataFrame(rows)


def test_grad_flow_steps_global_norms_and_fractions():
    s = A.grad_flow_steps(grad_frame(), "rule").set_index(["rule", "step"])
    add = s.loc[("additive", 0)]
    assert add.grad_norm == pytest.approx(5.0) and add.param_norm == pytest.approx(5.0)
    assert add.update_norm == pytest.approx(0.5) and add.rel_update == pytest.approx(0.1)
    mul = s.loc[("multiplicative", 10)]
    assert mul.saturated == pytest.approx(1.5 / 4)  # 0.5 of 3 entries + 0 of 1, over 4 entries
    assert mul.frozen == pytest.approx(1 / 4)  # the zero bias never moves
    assert add.frozen == 0


def test_grad_flow_layers_keeps_model_order():
    lay = A.grad_flow_layers(grad_frame(), "rule")
    assert lay[lay.rule == "additive"]["param"].tolist() == ["w", "b"]
    assert lay[lay.rule == "additive"]["layer"].tolist() == [0, 1]


def test_param_kind_tells_weights_norm_scales_and_biases_apart():
    names = pd.Series(["f.0.0.weight", "f.0.1.weight", "f.0.1.bias", "fc.weight", "fc.bias"])
    numel = pd.Series([432, 16, 16, 640, 10])
    assert A.param_kind(names, numel).tolist() == ["weight", "norm scale", "bias", "weight", "bias"]


# ---------------------------------------------------------------- grid selection on records

GRID = """
description: test grid
base: {dataset: cifar10-jpeg, arch: resnet9, width: 0.25, epochs: 2, device: cpu, limit: 64, test_limit: 32}
grids:
  - {optimizer: sgd, rule: additive, lr: [0.1, 0.3]}
tune: {over: lr, seeds: [1]}
"""


def _save(out, config, accs, status="finished"):
    ident = identity(TrainConfig(**config))
    rid = gresults.config_hash(ident)
    gresults.save(dict(id=rid, status=status, config=ident, seed=config.get("seed", 0),
                       epochs=[dict(epoch=i + 1, test_acc=a, train_time_s=1.0) for i, a in enumerate(accs)],
                       dataset=dict(name="CIFAR-10 (JPEG q75)", n_train=64, n_test=32), device_name="CPU: test",
                       threads=1, torch_version="x", finished=f"2026-01-0{len(accs)}T10:00:00+00:00"), out)
    return rid


def test_grid_runs_selects_the_tuned_lr_over_seeds(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(GRID)
    out = tmp_path / "results"
    assert A.grid_runs(grid, out).empty
    assert A.pick_scale({"gpu": grid}, out) is None
    base = dict(dataset="cifar10-jpeg", arch="resnet9", width=0.25, epochs=2, device="cpu", limit=64, test_limit=32,
                optimizer="sgd", rule="additive")
    low = _save(out, {**base, "lr": 0.1}, [0.2, 0.3])
    df = A.grid_runs(grid, out)
    assert df["id"].tolist() == [low] and df["stage"].tolist() == ["grid"]
    # no pick while a value is untried: the chapter shows the grid runner's pick, made once all are tried
    assert A.picked_runs(df, "rule", "lr").empty
    high = _save(out, {**base, "lr": 0.3}, [0.3, 0.4])
    tuned = _save(out, {**base, "lr": 0.3, "seed": 1}, [0.25, 0.35])
    _save(out, {**base, "lr": 0.3, "epochs": 5}, [0.1] * 5)  # another grid's run: left out
    df = A.grid_runs(grid, out).set_index("id")
    assert set(df.index) == {low, high, tuned}
    assert df.loc[tuned, "stage"] == "tune" and df.loc[high, "stage"] == "grid"
    picked = A.picked_runs(df.reset_index(), "rule", "lr")
    assert set(picked["id"]) == {high, tuned} and picked["tried"].tolist() == [2, 2]
    assert A.pick_scale({"gpu": tmp_path / "none.yaml", "cpu": grid}, out, scale="cpu") == "cpu"
    assert A.pick_scale({"cpu": grid}, out) == "cpu"
    with pytest.raises(ValueError, match="scale must be"):
        A.pick_scale({"cpu": grid}, out, scale="tpu")
    text = A.describe_records(out, df.index)
    assert text.startswith("3 runs: resnet9 (width 0.25); 64 training / 32 test images of CIFAR-10 (JPEG q75); "
                           "2 epoch(s)")
    assert "CPU: test (1 thread)" in text and "finished 2026-01-02 10:00 UTC" in text
    fields = A.record_fields(out, [low])
    assert fields[["n_train", "n_test", "threads"]].iloc[0].tolist() == [64, 32, 1]


def test_language_model_records_are_described_by_their_shape_and_characters(tmp_path):
    from gofau.lab import records
    out = tmp_path / "results"
    for image in (False, True):  # a folder that holds image runs too: their NaNs do not leak into the text
        config = (dict(arch="resnet9", width=0.25, epochs=1) if image else
                  dict(n_layer=4, n_head=4, n_embd=128, block_size=64, iters=2000))
        records.save(dict(id=f"r{image:d}", status="finished", config=config, n_params=809856, threads=1,
                          device_name="CPU: test", torch_version="2.x", finished="2026-01-02T10:00:00+00:00",
                          dataset=dict(name="Tiny Shakespeare", n_train=1003854, n_val=111540), epochs=[]), out)
    assert A.describe_records(out, ["r0"]) == (
        "1 run: GPT (4 layers, 4 heads, width 128, context 64) with 809,856 parameters; 1,003,854 training / "
        "111,540 validation characters of Tiny Shakespeare; 2,000 steps; CPU: test (1 thread); torch 2.x; "
        "finished 2026-01-02 10:00 UTC")


def test_depth_table_orders_architectures():
    assert sorted(A.DEPTH, key=A.DEPTH.get) == ["resnet9", "vgg16", "resnet18", "resnet34", "resnet50", "resnet101"]
    assert math.isclose(A.DEPTH["resnet101"] / A.DEPTH["resnet18"], 101 / 18)


# ---------------------------------------------------------------- paired statistics

def test_paired_difference_known_answers():
    r = A.paired_difference([1, 2, 3, 4, 5], [0, 0, 0, 0, 0])
    assert r["n"] == 5 and r["diff"] == 3.0
    assert r["p"] == pytest.approx(2 / 2**5)  # all five differences positive: the exact test's floor
    assert r["lo"] < 3.0 < r["hi"] and r["lo"] >= 1 and r["hi"] <= 5
    same = A.paired_difference([3, 4, 5], [1, 2, 3])  # every difference is 2: no spread to resample
    assert (same["lo"], same["diff"], same["hi"]) == (2.0, 2.0, 2.0)
    assert A.paired_difference([1, 2], [1, 2])["p"] == 1.0
    # the pairing matters: a shift hidden by a large between-seed spread is still found
    base = np.array([10.0, 50.0, 30.0, 70.0, 90.0, 20.0])
    assert A.paired_difference(base + 1, base)["p"] == pytest.approx(2 / 2**6)
    assert stats.ttest_ind(base + 1, base).pvalue > 0.9  # unpaired, the shift drowns in the spread


def test_the_paired_t_test_known_answers():
    # d = 1..5: t = 3 / (sqrt(2.5) / sqrt(5)) = 4.2426 on 4 degrees of freedom, two-sided p = 0.013236
    r = A.paired_difference([1, 2, 3, 4, 5], [0] * 5, test="t")
    assert r["p"] == pytest.approx(0.0132356, rel=1e-5)
    # its interval: 3 -+ t_{0.975, 4} sqrt(2.5 / 5) = 3 -+ 2.776445 * 0.707107
    assert (r["lo"], r["hi"]) == (pytest.approx(3 - 1.963243, rel=1e-6), pytest.approx(3 + 1.963243, rel=1e-6))
    near = A.paired_difference([0.5, 2.5, 1.0, -0.2], [0] * 4, test="t")  # the interval excludes 0 iff p < 0.05
    assert (near["lo"] > 0) == (near["p"] < 0.05)
    assert A.paired_difference([1, 2, 3, 4, 5], [0] * 5)["p"] == pytest.approx(2 / 2**5)  # Wilcoxon's floor
    assert A.paired_difference([3, 4, 5], [1, 2, 3], test="t")["p"] == 0.0  # the same difference every time
    assert A.paired_difference([1, 2], [1, 2], test="t")["p"] == 1.0
    assert A.paired_difference([0, 0, 0, 3], [1, 1, 1, 0], test="t")["p"] == pytest.approx(1.0)  # mean 0
    with pytest.raises(ValueError, match="test must be one of"):
        A.paired_difference([1, 2], [2, 3], test="sign")


def test_paired_difference_refuses_bad_input():
    with pytest.raises(ValueError, match="same length"):
        A.paired_difference([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 2 pairs"):
        A.paired_difference([1], [2])
    with pytest.raises(ValueError, match="n_boot"):
        A.paired_difference([1, 2], [2, 3], n_boot=10)


def test_wilcoxon_floor_is_the_exact_tests_p_when_every_difference_has_one_sign():
    from scipy.stats import wilcoxon
    for n in range(1, 13):
        assert A.wilcoxon_floor(n) == pytest.approx(2 / 2**n)
        if n >= 2:
            assert A.wilcoxon_floor(n) == pytest.approx(wilcoxon(np.arange(1.0, n + 1), method="exact").pvalue)
    with pytest.raises(ValueError, match=r"n_pairs must be an integer >= 1, got 0"):
        A.wilcoxon_floor(0)


def test_the_planned_test_is_wilcoxon_only_where_its_smallest_p_can_pass_holms_first_step():
    # 1 test at 0.05: 2/2^5 = 0.0625 fails, 2/2^6 = 0.031 passes; 9 tests: 0.05/9 = 0.0056 needs 2/2^9 = 0.0039
    assert [A.rank_test_pairs(m) for m in (1, 3, 9, 12)] == [6, 7, 9, 9]
    assert A.rank_test_pairs(1, alpha=0.0625) == 6  # 2/2^5 = alpha exactly: not below it
    assert A.planned_test(10, 9) == "wilcoxon" and A.planned_test(8, 9) == "t" and A.planned_test(3, 1) == "t"
    for m in range(1, 30):  # the smallest p of n pairs, 2/2^n, is below alpha/m from rank_test_pairs(m) on
        n = A.rank_test_pairs(m)
        assert 2 / 2**n < 0.05 / m <= 2 / 2 ** (n - 1)
    with pytest.raises(ValueError, match=r"planned must be an integer >= 2"):
        A.planned_test(1, 3)
    with pytest.raises(ValueError, match=r"n_tests must be an integer >= 1"):
        A.rank_test_pairs(0)
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\)"):
        A.rank_test_pairs(3, alpha=1.5)


def test_holm_by_hand():
    # sorted: 0.01*4 = 0.04, 0.03*3 = 0.09, 0.04*2 = 0.08 -> 0.09 (monotone), 0.5*1 = 0.5
    assert A.holm([0.01, 0.04, 0.03, 0.5]).tolist() == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert A.holm([0.3, 0.6]).tolist() == pytest.approx([0.6, 0.6])
    with pytest.raises(ValueError, match="p_values"):
        A.holm([0.1, 1.5])
    # a planned family of 4 with 2 tests made so far: 0.01*4 = 0.04, 0.04*3 = 0.12, as if the others had p = 1
    assert A.holm([0.04, 0.01], m=4).tolist() == pytest.approx([0.12, 0.04])
    assert A.holm([0.04, 0.01], m=4).tolist() == pytest.approx(A.holm([0.04, 0.01, 1.0, 1.0])[:2].tolist())
    with pytest.raises(ValueError, match=r"m must be an integer at least the number of p-values \(2\), got 1"):
        A.holm([0.04, 0.01], m=1)
    with pytest.raises(ValueError, match="m must be an integer"):
        A.holm([0.04, 0.01], m=True)


def test_paired_comparisons_pairs_on_seed_and_corrects_the_family():
    rows = []
    for seed in range(7):
        rows += [dict(optimizer="sgd", rule="additive", seed=seed, acc=0.5 + 0.05 * seed),
                 dict(optimizer="sgd", rule="hybrid", seed=seed, acc=0.52 + 0.05 * seed),  # +0.02 every seed
                 dict(optimizer="sgd", rule="multiplicative", seed=seed, acc=0.5 + 0.05 * seed + (-1) ** seed * 0.01)]
    rows.append(dict(optimizer="sgd", rule="hybrid", seed=9, acc=0.9))  # no additive partner: left out
    t = A.paired_comparisons(pd.DataFrame(rows), ["optimizer", "rule"], {"rule": "additive"}, metric="acc")
    assert list(t.index) == [("sgd", "hybrid"), ("sgd", "multiplicative")]
    hyb, mul = t.loc[("sgd", "hybrid")], t.loc[("sgd", "multiplicative")]
    assert hyb["n"] == 7 and hyb["diff"] == pytest.approx(0.02) and hyb["p"] == pytest.approx(2 / 2**7)
    assert abs(mul["diff"]) < 0.002 and mul["p"] > 0.5 and not mul["significant"]
    assert hyb["p_holm"] == pytest.approx(2 * hyb["p"]) and bool(hyb["significant"])
    planned = A.paired_comparisons(pd.DataFrame(rows), ["optimizer", "rule"], {"rule": "additive"}, metric="acc", m=5)
    assert planned.loc[("sgd", "hybrid"), "p_holm"] == pytest.approx(5 * hyb["p"])  # 3 planned tests not made yet


def test_paired_comparisons_with_several_metrics_correct_across_all():
    rows = [dict(rule=r, seed=s, a=s + (2 if r == "hybrid" else 0), b=s) for r in ("additive", "hybrid")
            for s in range(7)]
    t = A.paired_comparisons(pd.DataFrame(rows), "rule", {"rule": "additive"}, metric=["a", "b"])
    assert list(t.index) == [("a", "hybrid"), ("b", "hybrid")]
    assert t.loc[("a", "hybrid"), "p"] == pytest.approx(2 / 2**7) and t.loc[("b", "hybrid"), "p"] == 1.0
    assert t.loc[("a", "hybrid"), "p_holm"] == pytest.approx(2 * 2 / 2**7)  # two comparisons in the family
    # no pair yet (one seed): an empty family that still has the levels of a full one, so chapters can
    # concatenate it with others and drop its levels in any state of a grid
    one = A.paired_comparisons(pd.DataFrame(rows[:1] + rows[7:8]), "rule", {"rule": "additive"}, metric=["a", "b"])
    assert one.empty and one.index.names == ["metric", "rule"]
    assert pd.concat({"x": one, "y": t}, names=["against"]).index.nlevels == 3
    assert A.paired_comparisons(pd.DataFrame(rows[:1]), ["rule"], {"rule": "additive"}, "a").index.names == ["rule"]


def test_spread_comparisons_is_brown_forsythe_against_the_reference():
    wide, narrow = [0.0, 4.0, -4.0, 8.0, -8.0], [0.0, 0.1, -0.1, 0.2, -0.2]
    rows = ([dict(opt="sgd", rule="additive", acc=v) for v in narrow]
            + [dict(opt="sgd", rule="hybrid", acc=v) for v in wide]
            + [dict(opt="sgd", rule="multiplicative", acc=v) for v in [1.0, 2.0]])  # 2 runs: no test
    t = A.spread_comparisons(pd.DataFrame(rows), ["opt", "rule"], {"rule": "additive"}, metric="acc")
    assert list(t.index) == [("sgd", "hybrid")]
    r = t.loc[("sgd", "hybrid")]
    assert r["sd_ratio"] == pytest.approx(40.0)
    assert r["p"] == pytest.approx(stats.levene(wide, narrow, center="median").pvalue)
    assert r["p_holm"] == r["p"] and bool(r["significant"]) == (r["p"] < 0.05)


def test_early_phase_by_hand():
    steps = pd.DataFrame({"id": ["a"] * 4 + ["b"] * 4, "step": [10, 20, 30, 40] * 2,
                          "train_loss": [2.0, 1.0, 0.5, 0.4, 2.0, 2.0, 1.8, 1.6],
                          "train_time_s": [1.0, 2.0, 3.0, 4.0, 2.0, 4.0, 6.0, 8.0]})
    e = A.early_phase(steps, target=1.0, horizon=30).set_index("id")
    assert e.loc["a", "steps_to_target"] == 20 and e.loc["a", "seconds_to_target"] == 2.0
    assert math.isinf(e.loc["b", "steps_to_target"]) and math.isinf(e.loc["b", "seconds_to_target"])  # never
    # trapezoids from step 10 to 30: a: (2 + 1) / 2 * 10 + (1 + 0.5) / 2 * 10 = 22.5 over 20 steps
    assert e.loc["a", "auc"] == pytest.approx(22.5 / 20)
    assert e.loc["b", "auc"] == pytest.approx(((2 + 2) / 2 * 10 + (2 + 1.8) / 2 * 10) / 20)
    assert A.early_phase(steps, 1.0, horizon=50)["auc"].isna().all()  # the logs end before step 50
    with pytest.raises(ValueError, match="horizon must be an integer >= 1"):
        A.early_phase(steps, 1.0, horizon=0)


def test_paired_comparisons_leave_out_a_diverged_pair_and_name_a_repeated_seed():
    rows = [dict(rule=r, seed=s, acc=float(s) + (1 if r == "hybrid" else 0)) for r in ("additive", "hybrid")
            for s in range(5)]
    rows[9]["acc"] = float("nan")  # hybrid, seed 4 diverged
    t = A.paired_comparisons(pd.DataFrame(rows), "rule", {"rule": "additive"}, metric="acc")
    assert t.loc["hybrid", "n"] == 4 and t.loc["hybrid", "diff"] == 1.0
    with pytest.raises(ValueError, match="seed repeats within a group"):
        A.paired_comparisons(pd.DataFrame(rows + rows[:1]), "rule", {"rule": "additive"}, metric="acc")
    assert A.describe_records("/nonexistent/folder", ["x"]) == "no records"


def test_wilson_interval_by_hand():
    # 8 of 10: p = 0.8, z = 1.96: centre (0.8 + 0.19208) / 1.38416, half 1.96 sqrt(0.016 + 0.0009604) / 1.38416
    lo, hi = A.wilson(8, 10)
    assert lo == pytest.approx(0.4901625, abs=1e-6) and hi == pytest.approx(0.9433178, abs=1e-6)
    lo, hi = A.wilson(0, 20)  # never 0 wide, never outside [0, 1]
    assert lo == pytest.approx(0.0, abs=1e-15) and 0.16 < hi < 0.17
    assert A.wilson(20, 20)[1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="need 0 <= successes <= n and n >= 1"):
        A.wilson(3, 2)


def test_mean_interval_by_hand():
    assert A.mean_interval([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)  # no spread: every resample has the mean
    # the t-interval: mean 2, sd 1 over 3 values, half-width t_{0.975, 2} / sqrt 3 = 4.302653 / 1.732051
    assert A.mean_interval([1.0, 2.0, 3.0], test="t") == pytest.approx((2.0, 2.0 - 2.484138, 2.0 + 2.484138))
    with pytest.raises(ValueError, match="test must be one of"):
        A.mean_interval([1.0, 2.0], test="z")
    m, lo, hi = A.mean_interval([0.0, 10.0])  # resamples of 2: means 0, 5 or 10 with chances 1/4, 1/2, 1/4
    assert m == 5.0 and lo == 0.0 and hi == 10.0
    m, lo, hi = A.mean_interval(np.arange(100.0))
    assert lo < m < hi and hi - lo == pytest.approx(2 * 1.96 * np.arange(100.0).std() / 10, rel=0.1)
    with pytest.raises(ValueError, match="at least 2 finite numbers"):
        A.mean_interval([1.0, float("nan")])


def test_sd_interval_by_hand():
    sd, lo, hi = A.sd_interval([1.0, 2.0, 3.0, 4.0, 5.0])  # s^2 = 2.5, 4 degrees of freedom
    assert sd == pytest.approx(math.sqrt(2.5))
    # chi^2_4 quantiles 0.4844 (2.5%) and 11.1433 (97.5%), from tables
    assert lo == pytest.approx(math.sqrt(4 * 2.5 / 11.1433), rel=1e-4)
    assert hi == pytest.approx(math.sqrt(4 * 2.5 / 0.4844), rel=1e-3)
    with pytest.raises(ValueError, match="level must be in"):
        A.sd_interval([1.0, 2.0], level=1.5)


def test_ladder_ends_names_the_settings_of_a_pick_at_an_end_of_its_ladder():
    tried = pd.DataFrame({"lr": [0.1, 0.2, 0.4, 0.8], "lr_in": [1.0, 10.0, 1.0, 10.0], "lr_out": [0.5] * 4})
    assert A.ladder_ends(tried, {"lr": 0.8, "lr_in": 1.0}, ("lr", "lr_in")) == {"lr": "largest", "lr_in": "smallest"}
    assert A.ladder_ends(tried, {"lr": 0.2, "lr_in": 10.0}, ("lr", "lr_in")) == {"lr_in": "largest"}
    assert A.ladder_ends(tried, {"lr": 0.4}) == {}
    assert A.ladder_ends(tried, {"lr_out": 0.5}, ("lr_out",)) == {}      # a single value tried is no ladder
    assert A.ladder_ends(tried.assign(lr=[0.1, None, None, 0.8]), {"lr": 0.1}) == {"lr": "smallest"}
    with pytest.raises(ValueError, match=r"tried lacks column\(s\) \['gamma'\]"):
        A.ladder_ends(tried, {"gamma": 0.5}, ("gamma",))
