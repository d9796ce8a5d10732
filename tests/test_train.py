"""The trainer on real CIFAR-10 JPEG data at smoke scale: records, determinism, resume, options."""
import json
import math
import os

import pytest
import torch

import gofau
from gofau.lab import config, data, records, train

SHARED = data.default_data_dir()
needs_cifar_jpeg = pytest.mark.skipif(
    not (SHARED / "cifar10-jpeg.tar.gz").is_file() and not (SHARED / "cifar10-jpeg").is_dir(),
    reason=f"CIFAR-10 JPEG copy absent: expected {SHARED}/cifar10-jpeg.tar.gz (set GOFAU_DATA to the shared data folder)")


def smoke(tmp_path, **kw):
    base = dict(dataset="cifar10-jpeg", arch="resnet9", width=0.125, limit=256, test_limit=200, epochs=2,
                batch_size=64, device="cpu", threads=1, progress=False, out=str(tmp_path / "results"),
                checkpoint_dir=str(tmp_path / "ckpt"), lr=0.05)
    base.update(kw)
    return base


@needs_cifar_jpeg
def test_record_contents_and_skip(tmp_path):
    cfg = smoke(tmp_path, optimizer="sgd", rule="hybrid", schedule="linear")
    rec = train.train(cfg)
    path = tmp_path / "results" / f"{rec['id']}.json"
    assert path.is_file() and json.loads(path.read_text())["id"] == rec["id"]
    assert rec["status"] == "finished" and rec["seed"] == 0 and len(rec["epochs"]) == 2
    for k in ("train_loss", "train_acc", "test_loss", "test_acc", "epoch_time_s", "train_images_per_s",
              "eval_images_per_s", "lr_end"):
        assert math.isfinite(rec["epochs"][-1][k])
    assert rec["dataset"]["name"] == "CIFAR-10 (JPEG q75)"
    assert rec["dataset"]["n_train"] == 256 and rec["dataset"]["n_test"] == 200
    assert rec["config"]["rule"] == "hybrid" and rec["config"]["gamma"] == 0.5 and rec["config"]["schedule"] == "linear"
    for k in ("started", "finished", "wall_time_s", "device_name", "torch_version", "gofau_version", "git_commit"):
        assert k in rec
    assert rec["id"] == records.config_hash(rec["config"])
    assert not any(k in rec["config"] for k in config.RUN_CONTROL)  # no machine paths in the record
    assert rec["epochs"][-1]["lr_end"] == pytest.approx(0.0, abs=1e-3)  # linear decay ends at zero
    # the same configuration is not trained again
    mtime = path.stat().st_mtime_ns
    again = train.train(cfg)
    assert again["started"] == rec["started"] and path.stat().st_mtime_ns == mtime
    assert not list((tmp_path / "ckpt").glob("*.pt"))  # a finished run leaves no checkpoint


@needs_cifar_jpeg
def test_deterministic_and_resume_equals_uninterrupted(tmp_path):
    cfg = smoke(tmp_path, optimizer="adam", rule="multiplicative", lr=0.01, epochs=3, out=None)
    full = train.train(cfg)

    class Killed(Exception):
        pass

    def kill(epoch, record):
        if epoch == 1:
            raise Killed

    with pytest.raises(Killed):
        train.train(cfg, on_epoch_end=kill)
    assert len(list((tmp_path / "ckpt").glob("*.pt"))) == 1
    resumed = train.train(cfg)
    assert resumed["resumed_at_epochs"] == [1]
    keys = ("train_loss", "train_acc", "test_loss", "test_acc")
    assert [[e[k] for k in keys] for e in resumed["epochs"]] == [[e[k] for k in keys] for e in full["epochs"]]
    again = train.train(cfg)
    assert [e["test_loss"] for e in again["epochs"]] == [e["test_loss"] for e in full["epochs"]]


@needs_cifar_jpeg
def test_seed_changes_the_run(tmp_path):
    a = train.train(smoke(tmp_path, epochs=1, out=None))
    b = train.train(smoke(tmp_path, epochs=1, out=None, seed=1))
    assert a["id"] != b["id"] and a["epochs"][0]["train_loss"] != b["epochs"][0]["train_loss"]


@needs_cifar_jpeg
def test_grad_stats(tmp_path):
    rec = train.train(smoke(tmp_path, epochs=1, optimizer="sgd", rule="multiplicative", lr=0.5,
                            grad_stats_every=2, out=None))
    g = rec["grad_stats"]
    rows = [dict(zip(g["columns"], r)) for r in g["rows"]]
    steps = sorted({r["step"] for r in rows})
    assert steps == [0, 2]  # 256 images / 64 per batch = 4 steps
    zero = [r for r in rows if r["param_norm"] == 0]
    assert zero and all(r["update_norm"] == 0 for r in zero)  # zero biases never move multiplicatively
    live = [r for r in rows if r["param_norm"] > 0]
    assert all(r["rel_update"] == pytest.approx(r["update_norm"] / r["param_norm"]) for r in live)
    # a multiplicative step is at most lr * |theta| per entry: relative update <= lr
    assert all(r["rel_update"] <= 0.5 + 1e-6 for r in live)
    assert all(0 <= r["saturated"] <= 1 for r in rows)


def test_identity_normalises_ignored_settings():
    a = config.identity(config.TrainConfig(optimizer="adam", momentum=0.9, gamma=0.3, device="cpu"))
    b = config.identity(config.TrainConfig(optimizer="adam", momentum=0.0, gamma=0.7, device="cpu"))
    assert a == b and a["momentum"] is None and a["gamma"] is None
    c = config.identity(config.TrainConfig(rule="hybrid", gamma=0.3, device="cpu"))
    assert c["gamma"] == 0.3 and records.config_hash(c) != records.config_hash(a)


def test_build_optimizer_passes_settings():
    model = torch.nn.Linear(3, 2)
    opt = train.build_optimizer(config.TrainConfig(optimizer="sgd", rule="hybrid", lr=0.1, lr_out=0.5, gamma=0.25,
                                                  momentum=0.8, weight_decay=0.0), model)
    g = opt.param_groups[0]
    assert (g["direction"], g["rule"], g["lr"], g["lr_out"], g["gamma"], g["momentum"]) == \
        ("sgd", "hybrid", 0.1, 0.5, 0.25, 0.8)
    opt = train.build_optimizer(config.TrainConfig(optimizer="adam", rule="multiplicative", bias_rule="additive",
                                                  bias_lr=0.01, lr=0.02), model)
    assert [(g["rule"], g["lr"], len(g["params"])) for g in opt.param_groups] == \
        [("multiplicative", 0.02, 1), ("additive", 0.01, 1)]


def test_lr_schedules():
    cfg = config.TrainConfig(schedule="linear", warmup=0.25)
    f = train.lr_factor(cfg, 8)
    assert [f(s) for s in range(8)] == pytest.approx([0.5, 1.0, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])
    f = train.lr_factor(config.TrainConfig(schedule="cosine"), 4)
    assert [f(s) for s in range(5)] == pytest.approx([1, (1 + math.cos(math.pi / 4)) / 2, 0.5,
                                                      (1 + math.cos(3 * math.pi / 4)) / 2, 0])


def test_the_relatives_train_with_their_own_rule_and_the_settings_they_read():
    model = torch.nn.Linear(3, 2)
    lars = train.build_optimizer(config.TrainConfig(optimizer="lars", lr=0.5, momentum=0.8, nesterov=True,
                                                   weight_decay=1e-3), model)
    assert isinstance(lars, gofau.LARS) and (lars.defaults["momentum"], lars.defaults["nesterov"],
                                             lars.defaults["weight_decay"]) == (0.8, True, 1e-3)
    lamb = train.build_optimizer(config.TrainConfig(optimizer="lamb", rule="trust", lr=0.01, weight_decay=0.02), model)
    assert isinstance(lamb, gofau.LAMB) and lamb.defaults["weight_decay"] == 0.02
    madam = config.identity(config.TrainConfig(optimizer="madam", rule="exponentiated", weight_decay=0.1, lr_in=3.0))
    assert madam["weight_decay"] is None and madam["lr_in"] is None and madam["momentum"] is None
    assert config.identity(config.TrainConfig(optimizer="lars"))["nesterov"] is False


@needs_cifar_jpeg
@pytest.mark.parametrize("optimizer,rule,lr", [("madam", "exponentiated", 0.01), ("fromage", "trust", 0.01),
                                               ("lars", "additive", 1.0), ("lamb", "trust", 0.005)])
def test_each_relative_trains_and_is_recorded(tmp_path, optimizer, rule, lr):
    record = train.train(smoke(tmp_path, optimizer=optimizer, rule=rule, lr=lr, epochs=1))
    assert record["status"] == "finished" and record["config"]["optimizer"] == optimizer
    assert record["epochs"][0]["train_loss"] < 2.5 and record["optimizer_code"]


@pytest.mark.parametrize("kw, msg", [
    (dict(optimizer="lbfgs"), "optimizer must be one of"),
    (dict(optimizer="madam"), "optimizer 'madam' updates with its own rule: rule must be 'exponentiated', "
                              "got 'additive'"),
    (dict(optimizer="lamb", rule="trust", bias_rule="additive"), "bias_rule needs a GOFAU optimizer"),
    (dict(optimizer="lars", grad_stats_every=5), "grad_stats_every needs a GOFAU optimizer"),
    (dict(rule="power2"), "rule must be one of"),
    (dict(epochs=0), "epochs must be an integer >= 1"),
    (dict(lr=-1.0), "lr must be a finite number >= 0"),
    (dict(gamma=1.5), r"gamma must be a number in \[0, 1\]"),
    (dict(limit=0), "limit must be None or an integer >= 1"),
    (dict(schedule="step"), "schedule must be one of"),
    (dict(grad_stats_every=-1), "grad_stats_every must be an integer >= 0"),
    (dict(width=float("inf")), "width must be a finite number > 0"),
    (dict(lr=float("nan")), "lr must be a finite number >= 0"),
    (dict(device="tpu"), "device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
    (dict(device="cuda:7"), "device 'cuda:7' is not available here"),
])
def test_bad_config(kw, msg):
    with pytest.raises(ValueError, match=msg):
        train.train(dict(kw, out=None))


@pytest.mark.parametrize("kw, msg", [(dict(epochs=2.5), "epochs must be int"), (dict(augment="yes"), "augment must be bool"),
                                     (dict(lr_out="0.1"), "lr_out must be float or None")])
def test_wrong_types_are_refused(kw, msg):
    with pytest.raises(TypeError, match=msg):
        train.train(dict(kw, out=None))


def test_unusable_out_is_refused_before_any_data_is_read(tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("data was loaded before out was checked")
    monkeypatch.setattr(data, "load", never)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="out must be a folder this process can write to; '.*a-file' is not"):
        train.train(smoke(tmp_path, out=str(blocker)))
    with pytest.raises(ValueError, match="checkpoint_dir must be a folder"):
        train.train(smoke(tmp_path, checkpoint_dir=str(blocker / "sub")))


@needs_cifar_jpeg
def test_a_planted_checkpoint_is_refused_without_running_its_code(tmp_path):
    cfg = smoke(tmp_path, epochs=1)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    ckpt = tmp_path / "ckpt" / f"{config.run_id(config.TrainConfig(**cfg))}.pt"
    ckpt.parent.mkdir()
    torch.save({"model": Exploit()}, ckpt)
    with pytest.raises(ValueError, match=r"checkpoint .*\.pt cannot be resumed .*delete it to start the run"):
        train.train(cfg)
    assert not marker.exists()


@needs_cifar_jpeg
def test_a_diverged_run_stops_is_flagged_and_is_never_picked(tmp_path):
    from gofau.lab import grid
    import yaml
    spec = dict(base=smoke(tmp_path, epochs=2, optimizer="sgd", schedule="none"), axes=dict(lr=[0.0, 1.0e20]),
                tune=dict(over="lr", seeds=[1]))
    del spec["base"]["out"], spec["base"]["checkpoint_dir"]
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "results"
    grid.run_grid(path, out)
    runs = records.load(out).set_index(["lr", "seed"])
    blown = records.read(out / f"{runs.loc[(1e20, 0), 'id']}.json")
    assert blown["diverged"] and blown["epochs"][0]["diverged"] and len(blown["epochs"]) == 1  # stopped there
    assert blown["non_finite"]  # NaN and inf written as null, and listed
    assert list(runs.xs(1, level="seed").index) == [0.0]  # lr 0 (no learning at all) beats the diverged run


@needs_cifar_jpeg
def test_a_run_resumed_under_other_code_records_every_version(tmp_path, monkeypatch):
    cfg = smoke(tmp_path, epochs=2)

    class Killed(Exception):
        pass

    def kill(epoch, record):
        raise Killed

    with pytest.raises(Killed):
        train.train(cfg, on_epoch_end=kill)
    monkeypatch.setattr(train, "GIT_COMMIT", "after-a-change")
    rec = train.train(cfg)
    assert rec["git_commits"] == [rec["git_commit"], "after-a-change"] and rec["resumed_at_epochs"] == [1]
    assert rec["optimizer_codes"] == [rec["optimizer_code"]] and rec["torch_versions"] == [rec["torch_version"]]


def test_cli_rejects_bad_choice(capsys):
    with pytest.raises(SystemExit):
        train.main(["--rule", "sideways"])
    assert "invalid choice" in capsys.readouterr().err


@needs_cifar_jpeg
def test_cli_smoke(tmp_path, capsys):
    rc = train.main(["--width", "0.125", "--limit", "128", "--test-limit", "100", "--epochs", "1", "--device", "cpu",
                     "--optimizer", "rmsprop", "--rule", "multiplicative", "--lr", "0.01", "--no-progress",
                     "--out", str(tmp_path), "--checkpoint-dir", str(tmp_path / "ck"), "--lr-out", "none"])
    assert rc == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (tmp_path / f"{line['id']}.json").is_file() and 0 <= line["test_acc"] <= 1


@needs_cifar_jpeg
def test_validation_split_step_logs_and_test_used_once(tmp_path):
    rec = train.train(smoke(tmp_path, validation=100, evals_per_epoch=4, log_every=2, epochs=2, limit=256,
                            out=None, optimizer="sgd", rule="multiplicative", lr=0.5))
    assert rec["dataset"]["n_val"] == 100 and rec["dataset"]["n_train"] == 256 and len(rec["dataset"]["val_sha256"]) == 16
    first, last = rec["epochs"]
    assert "test_acc" not in first and 0 <= last["test_acc"] <= 1  # the test set is used once, at the end
    ev = [dict(zip(rec["evals"]["columns"], r)) for r in rec["evals"]["rows"]]
    assert [e["step"] for e in ev] == [1, 2, 3, 4, 5, 6, 7, 8]  # 4 steps an epoch, 4 evaluations an epoch
    assert first["val_acc"] == ev[3]["val_acc"] and last["val_acc"] == ev[-1]["val_acc"]
    steps = [dict(zip(rec["steps"]["columns"], r)) for r in rec["steps"]["rows"]]
    assert [s["step"] for s in steps] == [2, 4, 6, 8]
    assert all(a["train_time_s"] < b["train_time_s"] for a, b in zip(steps, steps[1:]))
    assert steps[0]["lr"] == 0.5
    # biases start at zero and never move under the multiplicative rule; no weight can change sign at lr 0.5
    assert first["sign_flip_frac"] == 0 and 0 < first["zero_frac"] < 0.05
    again = train.train(smoke(tmp_path, validation=100, epochs=1, limit=128, out=None, seed=3))
    assert again["dataset"]["val_sha256"] == rec["dataset"]["val_sha256"]  # the split does not follow the seed


def test_settings_added_later_keep_the_ids_of_earlier_runs():
    base = config.TrainConfig(device="cpu")
    assert "validation" not in config.identity(base) and "log_every" not in config.identity(base)
    assert config.run_id(config.TrainConfig(device="cpu", evals_per_epoch=4)) == config.run_id(base)  # no split
    assert config.run_id(config.TrainConfig(device="cpu", validation=5000)) != config.run_id(base)
    assert config.run_id(config.TrainConfig(device="cpu", norm="batch")) == config.run_id(base)
    assert config.run_id(config.TrainConfig(device="cpu", norm="none")) != config.run_id(base)
