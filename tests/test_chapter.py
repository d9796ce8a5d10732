"""gofau.lab.chapter: papermill parameter checking, data and repository paths, environment."""

import math
import os
import subprocess

import nbformat
import papermill
import pytest

from gofau.lab import chapter

PARAMETERS = "smoke = False\nseed = 0\nlr = 0.1\nname = 'cifar10'\nwidths = (16, 32)\ndata = None\n"


def injected(**values):
    return "# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in values.items())


def test_known_parameters_pass_and_are_returned():
    assert chapter.compare_parameters(PARAMETERS, injected(seed=3, smoke=True)) == {"seed": 3, "smoke": True}


def test_mistyped_name_is_named_with_the_accepted_ones():
    with pytest.raises(ValueError) as err:
        chapter.compare_parameters(PARAMETERS, injected(semed=3, seed=1))
    message = str(err.value)
    assert "semed" in message and "seed" not in message.split(";")[0]
    assert message.endswith("accepted: data, lr, name, seed, smoke, widths")


def test_notebook_without_parameters_cell_accepts_nothing():
    with pytest.raises(ValueError, match=r"unknown notebook parameter\(s\) smoke; accepted: \(none"):
        chapter.compare_parameters("", injected(smoke=True))


@pytest.mark.parametrize("name, value", [("smoke", "True"), ("smoke", 1), ("seed", 1.5), ("seed", True),
                                         ("lr", "0.1"), ("name", 3), ("widths", 16)])
def test_value_of_the_wrong_type_is_a_type_error(name, value):
    with pytest.raises(TypeError, match=rf"notebook parameter {name}="):
        chapter.compare_parameters(PARAMETERS, injected(**{name: value}))


@pytest.mark.parametrize("name, value", [("lr", 1), ("lr", 0.5), ("widths", [8, 8]), ("data", "/x"), ("data", 3)])
def test_compatible_values_pass(name, value):
    assert chapter.compare_parameters(PARAMETERS, injected(**{name: value})) == {name: value}


def test_non_literal_default_is_not_type_checked():
    assert chapter.compare_parameters("steps = 10 * 2\n", injected(steps="many")) == {"steps": "many"}


def test_unparsable_cell_is_reported():
    with pytest.raises(ValueError, match="parameters cell is not valid Python"):
        chapter.compare_parameters("smoke = = 1", injected(smoke=True))


def _chapter(tmp_path):
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    parameters = nbformat.v4.new_code_cell("smoke = False\nseed = 0")
    parameters.metadata["tags"] = ["parameters"]
    nb.cells = [parameters,
                nbformat.v4.new_code_cell("from gofau.lab.chapter import check_parameters\ncheck_parameters()"),
                nbformat.v4.new_code_cell("print('seed', seed)")]
    path = tmp_path / "chapter.ipynb"
    nbformat.write(nb, path)
    return path


def test_papermill_run_with_known_parameter(tmp_path):
    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(_chapter(tmp_path), out, parameters={"seed": 3}, progress_bar=False)
    assert nbformat.read(out, 4).cells[-1].outputs[0]["text"] == "seed 3\n"


def test_papermill_run_with_mistyped_parameter_fails_naming_it(tmp_path):
    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(_chapter(tmp_path), tmp_path / "out.ipynb", parameters={"semed": 3},
                                   progress_bar=False)
    assert err.value.ename == "ValueError"
    assert err.value.evalue == "unknown notebook parameter(s) semed; accepted: seed, smoke"


def test_check_parameters_outside_a_kernel_is_an_error():
    with pytest.raises(RuntimeError, match="inside a Jupyter kernel"):
        chapter.check_parameters()


def test_repo_root_holds_the_project():
    root = chapter.repo_root()
    assert (root / "pyproject.toml").is_file() and (root / "gofau" / "lab" / "chapter.py").is_file()


def test_environment_names_python_torch_and_device():
    import platform

    import torch

    env = chapter.environment()
    assert env["Python"] == platform.python_version()
    assert env["torch"] == torch.__version__
    if torch.cuda.is_available():
        assert env["device"] == torch.cuda.get_device_name(0)
    else:
        assert env["device"].startswith("CPU: ") and env["device"].endswith(f"({os.cpu_count()} cores)")


def test_git_commit_is_head_and_flags_changed_tracked_files():
    from gofau.lab import provenance

    commit = provenance.git_commit()
    assert commit is not None and commit.split("+")[0] == subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=chapter.repo_root(), capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=chapter.repo_root(),
                           capture_output=True, text=True).stdout.strip()
    assert commit.endswith("+dirty") == bool(dirty)


# ---------------------------------------------------------------- the chapter loader and presentation

GRID = """
base: {dataset: cifar10-jpeg, arch: resnet9, width: 0.25, epochs: 1, device: cpu, limit: 64, test_limit: 32,
       optimizer: sgd}
axes: {rule: [additive, hybrid], seed: [0, 1]}
"""


def _records(tmp_path, codes):
    from gofau.lab import records
    from gofau.lab.config import TrainConfig, identity, run_id
    tmp_path.mkdir(exist_ok=True)
    grid = tmp_path / "g.yaml"
    grid.write_text(GRID)
    out = tmp_path / "results"
    for (rule, seed), code in zip([(r, s) for r in ("additive", "hybrid") for s in (0, 1)], codes):
        cfg = TrainConfig(dataset="cifar10-jpeg", arch="resnet9", width=0.25, epochs=1, device="cpu", limit=64,
                          test_limit=32, optimizer="sgd", rule=rule, seed=seed)
        records.save(dict(id=run_id(cfg), status="finished", config=identity(cfg), seed=seed, optimizer_code=code,
                          epochs=[dict(epoch=1, test_acc=0.5 + seed / 10, train_loss=1.0)]), out)
    return grid, out


def test_load_reads_a_grid_and_refuses_mixed_optimizer_math_within_a_method(tmp_path):
    grid, out = _records(tmp_path, ["a1", "a1", "h1", "h1"])  # each rule its own math: fine
    rec = chapter.load({"cpu": str(grid)}, "auto", str(out))
    assert rec.scale == "cpu" and rec.scale_name == "reduced-scale CPU runs" and len(rec.finished) == 4
    assert sorted(rec.epochs.test_acc) == [0.5, 0.5, 0.6, 0.6]
    grid, out = _records(tmp_path / "mixed", ["a1", "b2", "h1", "h1"])  # the additive runs under two versions
    with pytest.raises(ValueError, match="'rule': 'additive'.* different versions of the optimizer's math .*a1, b2"):
        chapter.load({"cpu": str(grid)}, "auto", str(out))
    grid, out = _records(tmp_path / "older", ["a1", "a1", None, "h1"])  # a record from before the hash
    with pytest.raises(ValueError, match="'rule': 'hybrid'.* different versions of the optimizer's math .*None, h1"):
        chapter.load({"cpu": str(grid)}, "auto", str(out))


def test_load_without_records_says_how_to_make_them(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(GRID)
    with pytest.raises(FileNotFoundError, match=f"gofau-grid {grid} --out"):
        chapter.load({"cpu": str(grid)}, "auto", str(tmp_path / "empty"))


def test_table_text_is_stable_and_html_is_styled():
    import pandas as pd
    df = pd.DataFrame({"accuracy (%)": [52.345, float("nan")], "n": [5, 4]}, index=["additive", "hybrid"])
    t = chapter.table(df, {"accuracy (%)": "{:.1f}"}, name="t1")
    assert repr(t).splitlines()[1:] == ["additive         52.3  5", "hybrid              –  4"]
    html = t._repr_html_()
    assert 'class="gofau-table"' in html and "T_t1" in html and "52.3" in html and html == t._repr_html_()


def test_interval_and_styles():
    assert chapter.interval(0.4, -0.2, 1.0) == "+0.4 points (95% CI \u22120.2 to +1.0)"
    assert chapter.interval(0.4, -0.2, 1.0, note="5 pairs") == "+0.4 points (95% CI \u22120.2 to +1.0, 5 pairs)"
    assert [chapter.label(k) for k in (("sgd", "hybrid"), ("adamw", "additive"), ("lamb", "trust"))] == [
        "sgd / hybrid", "AdamW", "LAMB"]
    assert chapter.ordered("rule", ["hybrid", "additive", "hybrid"]) == ["additive", "hybrid"]
    assert chapter.palette("rule", ["additive"]) == {"additive": chapter.RULE_STYLE["additive"]["color"]}
    colours = [s["color"] for s in chapter.RULE_STYLE.values()]
    assert len(set(colours)) == len(colours)  # every rule its own colour
    with pytest.raises(ValueError, match="kind must be one of"):
        chapter.markers("rules", ["additive"])


def test_interval_in_a_table_cell():
    assert chapter.interval(-1.25, -3.0, 0.5, cell=True) == "\u22121.2 [\u22123.0, +0.5]"


def test_load_joins_grid_files_run_side_by_side(tmp_path):
    grid, out = _records(tmp_path, ["a1"] * 4)
    halves = []
    for rule in ("additive", "hybrid"):
        half = tmp_path / f"{rule}.yaml"
        half.write_text(GRID.replace("rule: [additive, hybrid]", f"rule: [{rule}]"))
        halves.append(str(half))
    rec = chapter.load({"cpu": halves}, "auto", str(out))
    assert len(rec.finished) == 4 and rec.grid == " and ".join(halves)
    assert sorted(rec.runs.rule.unique()) == ["additive", "hybrid"]


def test_optimizer_code_follows_the_math_a_run_uses():
    from gofau.lab.provenance import optimizer_code
    a = optimizer_code("sgd", ["multiplicative"])
    assert a == optimizer_code("sgd", ["multiplicative"]) and len(a) == 12
    assert len({a, optimizer_code("adam", ["multiplicative"]), optimizer_code("sgd", ["additive"]),
                optimizer_code("sgd", ["multiplicative", "additive"])}) == 4


TUNED = """
base: {dataset: cifar10-jpeg, arch: resnet9, width: 0.25, epochs: 1, device: cpu, limit: 64, test_limit: 32,
       optimizer: sgd}
grids:
  - {rule: additive, lr: [0.1, 0.2]}
  - {rule: hybrid, lr: [0.1, 0.2]}
tune: {over: lr, seeds: [1, 2]}
"""


def test_evaluation_reads_the_picks_seeds_and_early_phase_and_says_how_far_the_grid_is(tmp_path):
    from gofau.lab import records
    from gofau.lab.config import TrainConfig, identity, run_id
    grid = tmp_path / "g.yaml"
    grid.write_text(TUNED)
    out = tmp_path / "results"

    def save(rule, lr, seed, val, test, losses, diverged=False):
        cfg = TrainConfig(dataset="cifar10-jpeg", arch="resnet9", width=0.25, epochs=1, device="cpu", limit=64,
                          test_limit=32, optimizer="sgd", rule=rule, lr=lr, seed=seed)
        records.save(dict(id=run_id(cfg), status="finished", config=identity(cfg), seed=seed, optimizer_code="c",
                          num_classes=10, diverged=diverged,
                          epochs=[dict(epoch=1, val_acc=val, test_acc=test, val_loss=3 - val)],
                          steps=dict(columns=["step", "train_loss", "train_time_s"],
                                     rows=[[10 * i, x, float(i)] for i, x in enumerate(losses, 1)])), out)

    for rule in ("additive", "hybrid"):
        save(rule, 0.1, 0, 0.5, 0.5, [2.0, 1.0])
        save(rule, 0.2, 0, 0.6 if rule == "additive" else 0.4, 0.5, [2.0, 1.0])  # picks: additive 0.2, hybrid 0.1
    save("additive", 0.2, 1, 0.6, 0.7, [2.0, 1.5, 1.0])  # reaches loss 1.5 at step 20
    save("additive", 0.1, 1, 0.9, 0.9, [2.0, 1.0])      # not at the pick: left out
    rec = chapter.load({"cpu": str(grid)}, "auto", str(out))
    ev = rec.evaluation(planned=2, target_loss=1.5, horizon=30)
    assert ev.methods == [("sgd", "additive"), ("sgd", "hybrid")] and ev.order == [("sgd", "additive")]
    assert ev.n_seeds.tolist() == [1, 0] and ev.n_min == 1
    (run,) = ev.runs.itertuples()
    assert run.lr == 0.2 and run.final == pytest.approx(70.0) and run.steps_to_target == 20
    assert run.auc == pytest.approx((1.75 + 1.25) / 2)  # trapezoids over steps 10-30, divided by 20
    assert ev.picks.loc[("sgd", "hybrid"), "lr"] == 0.1 and ev.picks.loc[("sgd", "additive"), "tried"] == 2
    assert set(ev.steps.id) == set(ev.runs.id)
    as_loss = rec.evaluation(planned=2, target_loss=1.5, horizon=30, final="val_loss")  # a language model's
    assert as_loss.runs.final.tolist() == [pytest.approx(2.4)]  # the last val_loss itself, in nats
    assert "1 of the 2 evaluation seeds" in ev.status and "sgd / hybrid has no evaluation seed yet" in ev.status
    assert not run.diverged and ev.chance == pytest.approx(10.0) and as_loss.chance == pytest.approx(math.log(10))
    save("hybrid", 0.1, 1, 0.5, 0.6, [2.0, 1.0])
    save("additive", 0.2, 2, 0.6, 0.7, [2.0, 1.0])
    save("hybrid", 0.1, 2, math.nan, math.nan, [2.0, math.nan], diverged=True)  # a failure, not a missing seed
    rec = chapter.load({"cpu": str(grid)}, "auto", str(out))
    ev = rec.evaluation(planned=2, target_loss=1.5, horizon=30)
    assert ev.n_seeds.tolist() == [2, 2] and ev.status == "All 2 evaluation seeds of every method have finished."
    failed = ev.runs.set_index(["rule", "seed"]).loc[("hybrid", 2)]
    assert failed.diverged and failed.final == pytest.approx(10.0)  # at chance: 100 / 10 classes
    assert ev.runs.diverged.sum() == 1
    as_loss = rec.evaluation(planned=2, target_loss=1.5, horizon=30, final="val_loss")
    assert as_loss.runs.set_index(["rule", "seed"]).loc[("hybrid", 2)].final == pytest.approx(math.log(10))
    # its log ends before the horizon: its early phase counts at a uniform guess's loss, not as a missing pair
    assert failed.auc == pytest.approx(math.log(10))
    short = ev.runs.set_index(["rule", "seed"]).loc[("additive", 2)]  # did not diverge; its log is short of the horizon
    assert not short.diverged and math.isnan(short.auc)  # no early phase to score: left out, not filled in


ACROSS = """
base: {dataset: cifar10-jpeg, width: 0.25, epochs: 1, device: cpu, limit: 64, test_limit: 32, optimizer: sgd,
       rule: additive, init: he}
grids:
  - {arch: [resnet9, airnet], lr: [0.1, 0.2]}
tune:
  over: lr
  seeds: [1]
  across: [{init: he}, {init: scaled, init_scale: 0.1}]
"""


def test_evaluation_compares_configurations_a_pick_per_network_rerun_across_inits(tmp_path):
    from gofau.lab import records
    from gofau.lab.config import TrainConfig, identity, run_id
    grid = tmp_path / "g.yaml"
    grid.write_text(ACROSS)
    out = tmp_path / "results"

    def save(arch, lr, seed, val, init="he", scale=1.0):
        cfg = TrainConfig(dataset="cifar10-jpeg", arch=arch, width=0.25, epochs=1, device="cpu", limit=64,
                          test_limit=32, optimizer="sgd", rule="additive", init=init, init_scale=scale, lr=lr,
                          seed=seed)
        records.save(dict(id=run_id(cfg), status="finished", config=identity(cfg), seed=seed, optimizer_code="c",
                          num_classes=10, epochs=[dict(epoch=1, val_acc=val, test_acc=val)],
                          steps=dict(columns=["step", "train_loss", "train_time_s"], rows=[[10, 1.0, 1.0]])), out)

    save("resnet9", 0.1, 0, 0.5)
    save("resnet9", 0.2, 0, 0.6)  # resnet9's pick: 0.2; airnet's tuning has not finished
    save("airnet", 0.1, 0, 0.7)
    save("resnet9", 0.2, 1, 0.8)
    save("resnet9", 0.2, 1, 0.3, init="scaled", scale=0.1)
    save("resnet9", 0.1, 1, 0.9, init="scaled", scale=0.1)  # not the pick: left out
    rec = chapter.load({"cpu": str(grid)}, "auto", str(out))
    with pytest.raises(ValueError, match=r"settings \['init_scale'\] must be columns .* without missing values"):
        rec.evaluation(planned=1, target_loss=1.5, horizon=10, settings=("arch", "init", "init_scale"))
    rec.runs["init_scale"] = rec.runs.init_scale.fillna(1.0)  # he ignores the scale: x1
    ev = rec.evaluation(planned=1, target_loss=1.5, horizon=10, settings=("arch", "init", "init_scale"))
    assert ev.order == [("sgd", "additive", "resnet9", "he", 1.0), ("sgd", "additive", "resnet9", "scaled", 0.1)]
    assert ev.runs.set_index("init").final.to_dict() == {"he": pytest.approx(80.0), "scaled": pytest.approx(30.0)}
    assert ev.picks.loc[("sgd", "additive", "resnet9"), "lr"] == 0.2  # tuned per network, not per init
    assert "the tuning of sgd / additive, arch airnet, init he, init_scale 1.0" in ev.status
    assert "evaluation seeds per configuration" in ev.status


def test_evaluation_without_a_finished_seed_says_so(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(TUNED)
    grid_only, out = _records(tmp_path, ["a1"] * 4)
    rec = chapter.load({"cpu": str(grid_only)}, "auto", str(out))
    with pytest.raises(RuntimeError, match="no evaluation seed of .* has finished yet"):
        rec.evaluation(planned=10, target_loss=1.0, horizon=10)


def test_chance_is_a_constant_guess_and_needs_one_number_of_classes(tmp_path):
    grid, out = _records(tmp_path, ["a1"] * 4)
    rec = chapter.load({"cpu": str(grid)}, "auto", str(out))
    rec.runs["num_classes"] = 200  # Tiny ImageNet
    assert type(rec.chance()) is float and rec.chance() == pytest.approx(0.5) and rec.chance("val_loss") == pytest.approx(math.log(200))
    rec.runs.loc[0, "num_classes"] = 10
    with pytest.raises(ValueError, match=r"predict among \[10, 200\] numbers of classes"):
        rec.chance()


def test_a_run_diverged_when_flagged_or_its_final_metric_is_not_finite_and_scores_at_chance(tmp_path):
    import pandas as pd
    runs = pd.DataFrame(dict(diverged=[False, True, False], final_test_acc=[0.5, 0.5, math.nan],
                             final_val_loss=[1.5, 1.5, math.inf]))
    assert chapter.diverged(runs).tolist() == [False, True, True]
    grid, out = _records(tmp_path, ["a1"] * 4)
    rec = chapter.load({"cpu": str(grid)}, "auto", str(out))
    rec.runs["num_classes"] = 10
    scored = rec.scored(runs)
    assert scored.final.tolist() == [pytest.approx(50.0), pytest.approx(10.0), pytest.approx(10.0)]
    assert scored.diverged.tolist() == [False, True, True] and "final" not in runs  # the input is left as it was
    as_loss = rec.scored(runs, "val_loss")
    assert as_loss.final.tolist() == [pytest.approx(1.5), pytest.approx(math.log(10)), pytest.approx(math.log(10))]


def test_a_strip_plot_drawn_after_the_theme_is_the_same_on_every_run():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd
    import seaborn as sns

    data = pd.DataFrame({"rule": ["additive", "hybrid"] * 5, "final": range(10)})

    def points():
        chapter.theme()
        ax = sns.stripplot(data=data, x="rule", y="final", jitter=0.2)
        xy = np.concatenate([c.get_offsets() for c in ax.collections])
        plt.close(ax.figure)
        return xy

    first = points()
    assert np.ptp(first[:, 0] - np.round(first[:, 0])) > 0  # jittered
    np.random.uniform(size=7)  # whatever a chapter drew before
    assert np.array_equal(points(), first)


def test_finds_counts_the_tests_that_find_a_difference_in_words():
    assert chapter.finds(0) == "none finds a difference"
    assert chapter.finds(1) == "1 finds a difference"
    assert chapter.finds(4) == "4 find a difference"
    with pytest.raises(ValueError, match=r"n must be an integer >= 0 .*got -1"):
        chapter.finds(-1)


def test_listing_joins_items_as_prose():
    assert [chapter.listing(x) for x in ([], ["a"], ["a", "b"], ["a", "b", 3])] == ["", "a", "a and b", "a, b and 3"]
