"""Run records: hashing, atomic writes, skip/force, and the pandas loaders."""
import json
import math
import os

import pytest

from gofau.lab import records


def record(run_id="abc", status="finished", **config):
    config = config or {"optimizer": "sgd", "rule": "additive", "lr": 0.1, "seed": 0}
    return dict(id=run_id, status=status, config=config, dataset={"name": "toy"}, wall_time_s=1.5,
                epochs=[dict(epoch=1, train_loss=2.0, test_acc=0.3), dict(epoch=2, train_loss=1.5, test_acc=0.25)])


def test_hash_is_order_independent_and_sensitive():
    a = records.config_hash({"lr": 0.1, "rule": "hybrid"})
    assert a == records.config_hash({"rule": "hybrid", "lr": 0.1})
    assert a != records.config_hash({"rule": "hybrid", "lr": 0.2})
    assert len(a) == 16 and int(a, 16) >= 0


def test_save_is_atomic_and_skips_finished(tmp_path):
    path = records.save(record(), tmp_path)
    assert path == tmp_path / "abc.json" and json.loads(path.read_text())["status"] == "finished"
    assert not [p for p in os.listdir(tmp_path) if "tmp" in p]  # no temporary file left behind
    changed = record()
    changed["wall_time_s"] = 99.0
    assert records.save(changed, tmp_path) is None
    assert records.read(path)["wall_time_s"] == 1.5
    assert records.save(changed, tmp_path, force=True) == path
    assert records.read(path)["wall_time_s"] == 99.0


def test_failed_record_is_replaced(tmp_path):
    records.save(record(status="failed"), tmp_path)
    assert not records.finished(tmp_path, "abc")
    assert records.save(record(), tmp_path) is not None and records.finished(tmp_path, "abc")


def test_a_damaged_record_is_an_error_naming_its_file(tmp_path):
    (tmp_path / "abc.json").write_text('{"id": "abc", "status": "fini')
    with pytest.raises(ValueError, match=r"abc\.json is not valid JSON .*delete it to rerun"):
        records.finished(tmp_path, "abc")
    with pytest.raises(ValueError, match=r"abc\.json is not valid JSON"):
        records.load(tmp_path)
    (tmp_path / "abc.json").write_text('{"id": "abc", "status": "finished"}')
    with pytest.raises(ValueError, match=r"abc\.json is not a run record: it lacks config, epochs"):
        records.load(tmp_path)


def test_a_stray_copy_of_a_record_is_an_error_naming_both_files(tmp_path):
    path = records.save(record(), tmp_path)
    (tmp_path / "abc (copy).json").write_text(path.read_text())
    with pytest.raises(ValueError, match=r"abc \(copy\)\.json holds run abc, whose record is .*abc\.json"):
        records.load(tmp_path)


def test_non_finite_numbers_are_written_as_null_and_flagged(tmp_path):
    r = record()
    r["epochs"][1].update(train_loss=float("nan"), test_loss=float("inf"))
    path = records.save(r, tmp_path)
    strict = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert strict["epochs"][1]["train_loss"] is None and strict["epochs"][1]["test_loss"] is None
    assert strict["non_finite"] == ["epochs[1].test_loss", "epochs[1].train_loss"]
    assert r["epochs"][1]["train_loss"] != r["epochs"][1]["train_loss"]  # the caller's dict is left as it was


def test_load_frames(tmp_path):
    records.save(record("r1"), tmp_path)
    records.save(record("r2", optimizer="adam", rule="hybrid", lr=0.01, seed=1), tmp_path)
    records.save(dict(id="r3", status="failed", config={"optimizer": "adam"}, epochs=[], error="boom"), tmp_path)
    runs = records.load(tmp_path)
    assert sorted(runs["id"]) == ["r1", "r2", "r3"]
    r2 = runs.set_index("id").loc["r2"]
    assert (r2["optimizer"], r2["rule"], r2["final_test_acc"], r2["best_test_acc"], r2["epochs_done"]) == \
        ("adam", "hybrid", 0.25, 0.3, 2)
    assert runs.set_index("id").loc["r3", "error"] == "boom"
    ep = records.load_epochs(tmp_path)
    assert len(ep) == 4 and set(ep.columns) >= {"id", "optimizer", "epoch", "train_loss", "test_acc"}
    assert ep[ep.id == "r1"]["train_loss"].tolist() == [2.0, 1.5]


def test_load_gives_the_classes_a_model_chooses_among(tmp_path):
    records.save(dict(record("image"), num_classes=10), tmp_path)
    records.save(dict(record("text"), dataset={"name": "tinyshakespeare", "vocab_size": 65}), tmp_path)  # its vocabulary
    records.save(record("old"), tmp_path)  # recorded neither
    classes = records.load(tmp_path).set_index("id").num_classes
    assert classes["image"] == 10 and classes["text"] == 65 and math.isnan(classes["old"])


def test_load_grad_stats(tmp_path):
    r = record("g")
    r["grad_stats"] = dict(columns=["step", "param", "grad_norm"], rows=[[0, "fc.weight", 1.0], [5, "fc.weight", 0.5]])
    records.save(r, tmp_path)
    g = records.load_grad_stats(tmp_path)
    assert g["grad_norm"].tolist() == [1.0, 0.5] and (g["rule"] == "additive").all()


@pytest.mark.parametrize("fn", [records.load, records.load_epochs, records.load_grad_stats])
def test_empty_folder_gives_empty_frame(tmp_path, fn):
    assert len(fn(tmp_path)) == 0


def test_a_failed_write_leaves_the_old_record_and_no_temporary_file(tmp_path):
    path = records.save(record(), tmp_path)
    bad = record()
    bad["wall_time_s"] = object()  # not JSON
    with pytest.raises(TypeError):
        records.save(bad, tmp_path, force=True)
    assert records.read(path)["wall_time_s"] == 1.5 and sorted(p.name for p in tmp_path.iterdir()) == ["abc.json"]
