"""Grids through submitit (local processes) and many workers on one results folder, on real CIFAR-10
JPEG data at smoke scale: the same records as inline, a killed job resumes, each run trained once."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from gofau.lab import grid, records

from test_grid import BASE, needs_cifar_jpeg  # the smoke scale and the data check

pytestmark = needs_cifar_jpeg
CLOCK = ("started", "finished")  # and every field in seconds (_s) or per second (_per_s)


def write(tmp_path, spec, name="grid.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def numbers(record: dict) -> dict:
    """A record without what depends on the machine's timing: the numbers a run computed."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in CLOCK and not k.endswith("_s")}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x
    return strip(record)


def test_local_jobs_write_the_records_an_inline_run_writes(tmp_path):
    spec = dict(base={**BASE, "checkpoint_dir": str(tmp_path / "ckpt")},
                axes=dict(optimizer="sgd", rule=["additive", "multiplicative"], lr=[0.05, 0.2]),
                tune=dict(over="lr", seeds=[1]))
    path = write(tmp_path, spec)
    inline = grid.run_grid(path, tmp_path / "inline")
    local = grid.run_grid(path, tmp_path / "local", jobs=grid.Jobs("local", jobs=2))
    assert [r["status"] for r in local] == ["finished"] * 6  # 4 tuning runs, then 2 picks on seed 1
    assert sorted(r["id"] for r in local) == sorted(r["id"] for r in inline)
    for r in inline:
        a = records.read(records.record_path(tmp_path / "inline", r["id"]))
        b = records.read(records.record_path(tmp_path / "local", r["id"]))
        assert numbers(a) == numbers(b)
    assert list((tmp_path / "local" / ".jobs").iterdir())  # the jobs' logs
    again = grid.run_grid(path, tmp_path / "local", jobs=grid.Jobs("local", jobs=2))
    assert [r["status"] for r in again] == ["skipped"] * 6  # finished runs are never resubmitted


def test_a_killed_job_is_recorded_as_failed_with_its_log_and_a_rerun_resumes_it(tmp_path):
    ckpt = tmp_path / "ckpt"
    spec = dict(base={**BASE, "epochs": 2, "limit": 2048, "checkpoint_dir": str(ckpt)},  # epoch 2: seconds
                axes=dict(lr=[0.1]))
    path, out = write(tmp_path, spec), tmp_path / "results"

    def kill_after_first_epoch():  # the worker's pid is in its claim; its first checkpoint marks epoch 1
        deadline = time.time() + 600
        while time.time() < deadline and not list(ckpt.glob("*.pt")):
            time.sleep(0.2)
        held = json.loads(next((out / ".claims").glob("*.claim")).read_text())
        os.kill(held["pid"], signal.SIGKILL)

    killer = threading.Thread(target=kill_after_first_epoch)
    killer.start()
    rows = grid.run_grid(path, out, jobs=grid.Jobs("local", jobs=1))
    killer.join()
    assert [r["status"] for r in rows] == ["failed"]
    failed = records.read(records.record_path(out, rows[0]["id"]))
    assert "ended without a result" in failed["error"] and (out / failed["log"]).is_file()  # relative to out
    rows = grid.run_grid(path, out, jobs=grid.Jobs("local", jobs=1))
    done = records.read(records.record_path(out, rows[0]["id"]))
    assert rows[0]["status"] == "finished" and done["resumed_at_epochs"] == [1] and len(done["epochs"]) == 2
    assert not list((out / ".claims").iterdir())


def test_two_grid_invocations_on_one_folder_write_each_record_once(tmp_path):
    spec = dict(base={**BASE, "checkpoint_dir": str(tmp_path / "ckpt")}, axes=dict(lr=[0.02, 0.05, 0.1, 0.2]))
    path, out = write(tmp_path, spec), tmp_path / "results"
    cmd = [sys.executable, "-m", "gofau.lab.grid", str(path), "--out", str(out)]
    workers = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for _ in range(2)]
    tables = [w.communicate(timeout=600)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers)
    trained = [line.split()[-1] for t in tables for line in t.splitlines() if " finished " in f" {line} "]
    assert sorted(trained) == sorted(records.load(out)["id"]) and len(trained) == 4  # each run trained once
    assert not list((out / ".claims").iterdir())


def test_a_claim_is_held_while_its_heartbeat_beats_and_taken_over_once_it_stops(tmp_path):
    path = grid._claim_path(tmp_path, "abc")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(dict(token="theirs", host="elsewhere", pid=1, job="42", time=time.time(),
                                    heartbeat_s=grid.HEARTBEAT_S)))
    old = time.time() - grid.STALE_CLAIM_S - 1
    os.utime(path, (old, old))
    stop = threading.Event()
    beat = threading.Thread(target=grid._heartbeat, args=(path, stop, 0.05))
    beat.start()
    time.sleep(0.3)
    assert time.time() - path.stat().st_mtime < 1  # the beat touched it
    assert grid.claim(tmp_path, "abc") is None  # beating: held
    stop.set()
    beat.join()
    os.utime(path, (old, old))
    token = grid.claim(tmp_path, "abc")  # silent for longer than STALE_CLAIM_S: its job is gone
    assert token and json.loads(path.read_text())["token"] == token
    grid.release(tmp_path, "abc", "theirs")  # a worker whose claim was taken over removes nothing
    assert path.exists()
    grid.release(tmp_path, "abc", token)
    assert not path.exists()


def test_grids_for_other_machines_are_checked_without_their_devices(tmp_path):
    rows = grid.run_grid(Path(__file__).resolve().parents[1] / "grids" / "lm_gpu.yaml", tmp_path, dry_run=True)
    assert len(rows) == 14 and {r["status"] for r in rows} == {"planned"}  # cuda, on a machine without one
    spec = dict(base={**BASE, "device": "auto"}, axes=dict(lr=[0.1]))
    with pytest.raises(ValueError, match="device 'auto' resolves on the machine that runs each job"):
        grid.run_grid(write(tmp_path, spec), tmp_path / "r", jobs=grid.Jobs("local"))
    lm_spec = dict(base=dict(dataset="tinyshakespeare", width=0.5), axes=dict(lr=[0.1]))
    with pytest.raises(ValueError, match="width do not apply to a language-model run"):
        grid.run_grid(write(tmp_path, lm_spec, "lm.yaml"), tmp_path / "r", dry_run=True)


def test_slurm_jobs_carry_the_partition_gpus_cpus_time_and_array_parallelism(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="executor 'slurm' is not available here"):
        monkeypatch.setenv("PATH", str(tmp_path / "empty"))
        grid._executor(grid.Jobs("slurm"), tmp_path)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # submitit looks for srun to know it is on a cluster
    jobs = grid.Jobs("slurm", jobs=16, partition="gpu", gpus_per_job=1, cpus_per_job=8, time_min=30)
    executor = grid._executor(jobs, tmp_path)
    assert executor._executor.parameters["array_parallelism"] == 16
    script = executor._executor._make_submission_file_text("python -m x", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--time=30", "--job-name=gofau-grid",
                 f"--output={tmp_path}/.jobs/%j/"):
        assert f"#SBATCH {line}" in script


def test_bad_executor_settings_are_refused_naming_the_setting(tmp_path):
    with pytest.raises(ValueError, match="executor must be one of inline, local, slurm"):
        grid.Jobs("cluster")
    with pytest.raises(ValueError, match="jobs must be an integer >= 1, got 0"):
        grid.Jobs("local", jobs=0)
    with pytest.raises(ValueError, match="time_min must be an integer >= 1"):
        grid.Jobs("slurm", time_min=0)


def test_the_help_documents_the_executors(capsys):
    with pytest.raises(SystemExit):
        grid.main(["--help"])
    text = capsys.readouterr().out
    assert "--executor {inline,local,slurm}" in text and "--jobs" in text and "--partition" in text
