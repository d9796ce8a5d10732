"""The grid runner on real CIFAR-10 JPEG data at smoke scale: products, tune stage, skip, failure."""
import pytest
import yaml

from gofau.lab import data, grid, records

SHARED = data.default_data_dir()
needs_cifar_jpeg = pytest.mark.skipif(
    not (SHARED / "cifar10-jpeg.tar.gz").is_file() and not (SHARED / "cifar10-jpeg").is_dir(),
    reason=f"CIFAR-10 JPEG copy absent: expected {SHARED}/cifar10-jpeg.tar.gz (set GOFAU_DATA to the shared data folder)")

BASE = dict(dataset="cifar10-jpeg", arch="resnet9", width=0.125, limit=128, test_limit=100, epochs=1, batch_size=64,
            device="cpu", threads=1, progress=False)


def write(tmp_path, spec):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_expand_products_and_blocks():
    spec = dict(base=dict(epochs=2), grids=[dict(optimizer="sgd", lr=[0.1, 0.2], seed=[0, 1]),
                                           dict(optimizer="adam", rule=["additive", "hybrid"])])
    cs = grid.expand(spec)
    assert len(cs) == 6 and all(c["epochs"] == 2 for c in cs)
    assert [(c["lr"], c["seed"]) for c in cs[:4]] == [(0.1, 0), (0.1, 1), (0.2, 0), (0.2, 1)]
    assert [c.get("rule") for c in cs[4:]] == ["additive", "hybrid"]
    assert len(grid.expand(dict(base={}, axes=dict(lr=[1, 2, 3])))) == 3


def test_unknown_setting_and_key(tmp_path):
    with pytest.raises(ValueError, match="unknown setting 'learning_rate'"):
        grid.expand(dict(axes=dict(learning_rate=[0.1])))
    with pytest.raises(ValueError, match="unknown top-level keys"):
        grid.read_grid(write(tmp_path, dict(base={}, sweeps={})))


@needs_cifar_jpeg
def test_grid_runs_tunes_skips_and_survives_failure(tmp_path, capsys):
    spec = dict(base=BASE, grids=[dict(optimizer="sgd", rule="additive", lr=[0.01, 0.1]),
                                  dict(dataset="cifar100", data_dir=str(tmp_path / "nowhere"), lr=0.1)],
                tune=dict(over="lr", seeds=[1]))
    out = tmp_path / "results"
    rc = grid.main([str(write(tmp_path, spec)), "--out", str(out)])
    assert rc == 1  # one run failed
    table = capsys.readouterr().out
    assert "failed" in table and "finished" in table and "tune" in table
    runs = records.load(out)
    failed = runs[runs.status == "failed"]
    assert len(failed) == 1 and "data set 'cifar100' not found" in failed.iloc[0]["error"]
    done = runs[runs.status == "finished"]
    seed0 = done[(done.seed == 0) & (done.dataset == "cifar10-jpeg")]
    assert len(seed0) == 2
    best_lr = seed0.sort_values("final_test_acc").iloc[-1]["lr"]
    tuned = done[done.seed == 1]
    assert tuned["lr"].tolist() == [best_lr]
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*.json")}
    # a second call skips every finished run and retries only the failed one
    rows = grid.run_grid(write(tmp_path, spec), out)
    assert sorted(r["status"] for r in rows) == ["failed", "skipped", "skipped", "skipped"]
    assert all(p.stat().st_mtime_ns == m for p, m in mtimes.items() if records.read(p)["status"] == "finished")


def test_dry_run_lists_without_training(tmp_path):
    spec = dict(base=BASE, axes=dict(rule=["additive", "multiplicative", "hybrid"]))
    rows = grid.run_grid(write(tmp_path, spec), tmp_path / "out", dry_run=True)
    assert [r["rule"] for r in rows] == ["additive", "multiplicative", "hybrid"]
    assert not (tmp_path / "out").exists()


def test_invalid_config_is_rejected_before_training(tmp_path):
    spec = dict(base=BASE, axes=dict(rule=["additive", "sideways"]))
    with pytest.raises(ValueError, match="rule must be one of"):
        grid.run_grid(write(tmp_path, spec), tmp_path / "out")


def test_failure_text_has_no_machine_paths():
    text = f"FileNotFoundError: {data.ROOT.parent}/shared/data/x.tar.gz missing"
    assert grid._relative(text) == "FileNotFoundError: ../shared/data/x.tar.gz missing"


def _fake_record(out, config, acc, status="finished"):
    from gofau.lab.config import TrainConfig, identity, run_id
    cfg = TrainConfig(**config)
    records.save(dict(id=run_id(cfg), status=status, config=identity(cfg), seed=cfg.seed,
                      epochs=[dict(epoch=1, test_acc=acc)] if status == "finished" else []), out, force=True)


def test_picks_average_over_tuning_seeds_and_rank_divergence_and_failure_last(tmp_path):
    spec = dict(base=BASE, grids=[dict(optimizer="sgd", lr=[0.1, 0.3, 1.0], seed=[0, 1])],
                tune=dict(over="lr", seeds=[5, 6]))
    configs = grid.expand(spec)
    out = tmp_path / "results"
    accs = {(0.1, 0): 0.5, (0.1, 1): 0.5, (0.3, 0): 0.7, (0.3, 1): 0.2}  # 0.3 has the best single run, 0.1 the mean
    for c in configs[:-1]:
        _fake_record(out, c, accs.get((c["lr"], c["seed"]), float("nan")))  # lr 1.0, seed 0 diverged (NaN)
    assert grid.picks(spec, configs, out) == []  # lr 1.0 seed 1 not tried yet: no pick
    _fake_record(out, configs[-1], None, status="failed")
    (pick,) = grid.picks(spec, configs, out)
    assert pick["lr"] == 0.1
    assert [(c["lr"], c["seed"]) for c in grid.tuned(spec, grid.picks(spec, configs, out))] == [(0.1, 5), (0.1, 6)]
    two = dict(spec, grids=[dict(optimizer="sgd", lr=[0.1, 0.3, 1.0], seed=[0, 1]),
                            dict(optimizer="adam", lr=[0.01], seed=[0, 1])])
    configs = grid.expand(two)
    for c in configs[6:]:
        _fake_record(out, c, 0.6)
    # seed by seed: an evaluation stopped part-way leaves both methods with the same seeds (paired)
    assert [(c["optimizer"], c["seed"]) for c in grid.tuned(two, grid.picks(two, configs, out))] == [
        ("sgd", 5), ("adam", 5), ("sgd", 6), ("adam", 6)]
    assert grid.score(None) == grid.score(dict(status="failed")) == float("-inf")
    assert grid.score(dict(status="finished", epochs=[dict(test_acc=float("nan"))])) == float("-inf")


@pytest.mark.parametrize("spec, msg", [
    (dict(base=BASE, axes=dict(lr=[0.1]), tune=dict(over="lrr")), "tune.over must name a setting that defines a run"),
    (dict(base=BASE, axes=dict(lr=[0.1]), tune=[1, 2]), r"tune must be a mapping \{over"),
    (dict(base=BASE, axes=dict(lr=[0.1]), tune=dict(over="lr", seeds=[])), "tune.seeds must be a non-empty list"),
    (dict(base=BASE, axes=dict(lr=[0.1]), tune=dict(over="lr", seeds=[1, 1])), "distinct integers"),
    (dict(base=BASE, axes=dict(lr=[])), r"axes.lr is an empty list: the grid would have no runs"),
    (dict(base=BASE, axes=dict(lr=[0.1]), grids=[dict(lr=[0.2])]), "either axes .* or grids"),
    (dict(base=dict(BASE, lr=[0.1, 0.2])), "base.lr must be one value"),
    (dict(base=BASE, grids=[]), "grids must be a non-empty list"),
    (dict(base=BASE, axes=dict(lr=[0.1]), description=3), "description must be text"),
    ([1, 2], "a grid must be a mapping"),
])
def test_a_malformed_grid_is_refused_before_any_run(tmp_path, spec, msg):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=msg):
        grid.run_grid(write(tmp_path, spec), out)
    assert not out.exists()


def test_a_bad_value_anywhere_in_the_grid_or_its_tune_stage_is_refused_up_front(tmp_path):
    with pytest.raises(TypeError, match="epochs must be int"):
        grid.run_grid(write(tmp_path, dict(base=BASE, axes=dict(epochs=[1, "2"]))), tmp_path / "out")
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        grid.check_spec(dict(base=BASE, axes=dict(lr=[0.1]), tune=dict(over="lr", seeds=[1])))  # fine
        grid.run_grid(write(tmp_path, dict(base=BASE, axes=dict(lr=[0.1], seed=[-1]))), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_thread_count_does_not_change_a_run_id(tmp_path):
    from gofau.lab.config import TrainConfig, run_id
    assert run_id(TrainConfig(**BASE)) == run_id(TrainConfig(**dict(BASE, threads=2)))


def test_a_pick_on_the_edge_extends_that_axis_and_the_chapters_see_the_same_runs(tmp_path):
    spec = dict(base=BASE, axes=dict(optimizer="sgd", rule="multiplicative", lr=[0.25, 0.5, 1.0], lr_in=[1.0, 10.0]),
                tune=dict(over=["lr", "lr_in"], seeds=[7], extend=2))
    grid.check_spec(spec)
    configs = grid.expand(spec)
    out = tmp_path / "results"
    for c in configs:  # accuracy grows with lr and with lr_in: the pick (1.0, 10.0) is on both edges
        _fake_record(out, c, c["lr"] / 10 + c["lr_in"] / 100)
    new = grid.extensions(spec, configs, out)
    assert sorted((c["lr"], c["lr_in"]) for c in new) == [(1.0, 100.0), (2.0, 10.0)]  # one step beyond the pick
    for c in new:
        _fake_record(out, c, 0.05)  # both worse: the pick is inside the grid now
    assert grid.extensions(spec, configs + new, out) == []
    assert [(c["lr"], c["lr_in"]) for c in grid.picks(spec, configs + new, out)] == [(1.0, 10.0)]
    assert len(grid.tuning_configs(spec, out)) == 8  # rebuilt from the records, as the chapters do
    from gofau.lab import analysis
    ids = analysis.grid_ids(write(tmp_path, spec), out)
    assert sum(stage == "grid" for stage, _ in ids.values()) == 8 and sum(p for _, p in ids.values()) == 2


def test_a_sweep_scales_each_picks_step_sizes_on_tune_seeds_and_the_chapters_see_it(tmp_path):
    spec = dict(base=BASE, grids=[dict(optimizer="sgd", rule="hybrid", lr=[0.1, 0.2], lr_out=[1.0, 3.0]),
                                  dict(optimizer="sgd", rule="multiplicative", lr=[0.5, 1.0], lr_in=[10.0])],
                tune=dict(over=["lr", "lr_out"], seeds=[1, 2]), sweep=dict(scale=["lr", "lr_out"], by=[0.1, 4], seeds=[2]))
    configs = grid.expand(spec)
    out = tmp_path / "results"
    assert grid.swept(spec, grid.picks(spec, configs, out)) == []  # no picks yet
    for c in configs:
        _fake_record(out, c, c["lr"] + (c.get("lr_out") or 0) / 100)  # picks: hybrid (0.2, 3.0), multiplicative 1.0
    chosen = grid.picks(spec, configs, out)
    got = [(c["rule"], c["lr"], c.get("lr_out"), c.get("lr_in"), c["seed"]) for c in grid.swept(spec, chosen)]
    # the whole step scaled (lr_out too for the hybrid, the multiplicative rule's lr_out stays unset; 0.2 * 0.1
    # is 0.020000000000000004 in floats), lr_in untouched, seed 2 only
    assert got == [("hybrid", 0.02, 0.3, None, 2), ("hybrid", 0.8, 12.0, None, 2),
                   ("multiplicative", 0.1, None, 10.0, 2), ("multiplicative", 4.0, None, 10.0, 2)]
    from gofau.lab import analysis
    ids = analysis.grid_ids(write(tmp_path, spec), out)
    assert sorted(stage for stage, _ in ids.values()).count("sweep") == 4
    assert not any(p for stage, p in ids.values() if stage == "sweep")


@pytest.mark.parametrize("sweep, msg", [
    (dict(scale="lr_in", by=[2], seeds=[1]), "sweep.scale must name step sizes"),
    (dict(scale="lr", by=[1, 2], seeds=[1]), "sweep.by must be a non-empty list of distinct positive factors other than 1"),
    (dict(scale="lr", by=[-2], seeds=[1]), "sweep.by must be"),
    (dict(scale="lr", by=[2], seeds=[3]), r"sweep.seeds must be a non-empty list of distinct seeds of the tune stage \(\[1\]\)"),
    (dict(scale="lr", by=[2]), "sweep must be a mapping"),
])
def test_a_malformed_sweep_is_refused(sweep, msg):
    with pytest.raises(ValueError, match=msg):
        grid.check_spec(dict(base=BASE, axes=dict(lr=[0.1]), tune=dict(over="lr", seeds=[1]), sweep=sweep))
    with pytest.raises(ValueError, match="sweep needs a tune stage"):
        grid.check_spec(dict(base=BASE, axes=dict(lr=[0.1]), sweep=dict(scale="lr", by=[2], seeds=[1])))


def test_tune_across_evaluates_each_pick_under_other_settings_seed_by_seed(tmp_path):
    across = [{"init": "he"}, {"init": "scaled", "init_scale": 0.1}]
    spec = dict(base=dict(BASE, init="he"), grids=[dict(optimizer="sgd", rule=["additive", "multiplicative"],
                                                        lr=[0.1, 0.2])],
                tune=dict(over="lr", seeds=[1, 2], across=across))
    configs = grid.expand(spec)
    out = tmp_path / "results"
    for c in configs:
        _fake_record(out, c, c["lr"] if c["rule"] == "additive" else -c["lr"])  # picks: additive 0.2, mult 0.1
    got = [(c["rule"], c["lr"], c["init"], c.get("init_scale"), c["seed"])
           for c in grid.tuned(spec, grid.picks(spec, configs, out))]
    assert got == [("additive", 0.2, "he", None, 1), ("additive", 0.2, "scaled", 0.1, 1),
                   ("multiplicative", 0.1, "he", None, 1), ("multiplicative", 0.1, "scaled", 0.1, 1),
                   ("additive", 0.2, "he", None, 2), ("additive", 0.2, "scaled", 0.1, 2),
                   ("multiplicative", 0.1, "he", None, 2), ("multiplicative", 0.1, "scaled", 0.1, 2)]
    from gofau.lab import analysis
    ids = analysis.grid_ids(write(tmp_path, spec), out)
    assert sum(stage == "tune" and picked for stage, picked in ids.values()) == 8


@pytest.mark.parametrize("across, msg", [
    ([], "tune.across must be a non-empty list"),
    ([{"init": ["he", "default"]}], r"tune.across\[0\].init must be one value"),
    ([{"initialisation": "he"}], r"unknown setting 'initialisation' in tune.across\[0\]"),
    ([{"init": "he"}, {"lr": 0.5}], r"tune.across\[1\] sets lr: the seed and the tuned settings"),
    ([{"seed": 3}], r"tune.across\[0\] sets seed"),
])
def test_a_malformed_across_is_refused(across, msg):
    with pytest.raises(ValueError, match=msg):
        grid.check_spec(dict(base=BASE, axes=dict(lr=[0.1]), tune=dict(over="lr", seeds=[1], across=across)))


def test_tune_over_must_name_settings_and_extend_be_bounded():
    with pytest.raises(ValueError, match="tune.over must name a setting that defines a run"):
        grid.check_spec(dict(base=BASE, axes=dict(lr=[0.1]), tune=dict(over=["lr", "lr"], seeds=[1])))
    with pytest.raises(ValueError, match=r"tune.extend must be an integer in \[0, 10\]"):
        grid.check_spec(dict(base=BASE, axes=dict(lr=[0.1]), tune=dict(over="lr", seeds=[1], extend=-1)))


def test_an_extension_never_leaves_a_settings_range(tmp_path):
    spec = dict(base=dict(BASE, rule="hybrid", lr=0.1), axes=dict(gamma=[0.5, 1.0]), tune=dict(over="gamma", seeds=[3],
                                                                                                 extend=1))
    configs = grid.expand(spec)
    out = tmp_path / "results"
    for c in configs:
        _fake_record(out, c, c["gamma"])  # the pick, gamma 1, is on the edge; gamma 2 does not exist
    assert grid.extensions(spec, configs, out) == []


def test_a_key_given_twice_in_a_grid_file_is_refused(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("base:\n  lr: 0.1\n  epochs: 1\n  lr: 0.2\naxes: {seed: [0]}\n")
    with pytest.raises(ValueError, match="key.s. lr given twice"):
        grid.read_grid(path)


def test_the_book_grids_are_valid(tmp_path):
    from pathlib import Path
    for path in sorted((Path(__file__).resolve().parents[1] / "grids").glob("*.yaml")):
        # reads and checks the file, then validates every run it implies (without training any)
        assert grid.run_grid(path, tmp_path / "results", dry_run=True)


def test_two_workers_on_one_folder_run_each_configuration_once(tmp_path, monkeypatch):
    import threading
    import time as clock
    from gofau.lab.config import TrainConfig, identity, run_id
    calls = []

    def fake_train(cfg):  # stands in for training: slow enough for the workers to meet
        calls.append(run_id(cfg))
        clock.sleep(0.2)
        record = dict(id=run_id(cfg), status="finished", config=identity(cfg), seed=cfg.seed,
                      epochs=[dict(epoch=1, test_acc=0.5)])
        records.save(record, cfg.out)
        return record
    monkeypatch.setattr(grid, "train", fake_train)
    path = write(tmp_path, dict(base=BASE, axes=dict(lr=[0.1, 0.2, 0.3, 0.4], seed=[0, 1])))
    out = tmp_path / "results"
    workers = [threading.Thread(target=grid.run_grid, args=(path, out)) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(calls) == 8 and len(set(calls)) == 8  # each of the 8 runs trained once
    assert len(list(out.glob("*.json"))) == 8 and not list((out / ".claims").iterdir())


def test_the_claim_of_a_killed_worker_is_taken_over(tmp_path):
    import json as js
    import subprocess
    import sys
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path = grid._claim_path(tmp_path, "abc")
    path.parent.mkdir(parents=True)
    path.write_text(js.dumps(dict(host=grid.socket.gethostname(), pid=int(dead.stdout), time=grid.time.time())))
    assert grid.claim(tmp_path, "abc")  # its process has ended: the claim is stale
    assert not grid.claim(tmp_path, "abc")  # now held by this (live) process
