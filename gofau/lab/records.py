"""Run records: one JSON file per run, named by its id (a hash of its configuration), and loaders.

A record is a dict with at least ``id`` (the hash), ``status`` ("finished" or "failed"),
``config`` (the settings that determine the result) and ``epochs`` (a list of per-epoch metric
dicts). Files are strict JSON written atomically (a temporary file, then ``os.replace``), so a
killed writer never leaves half a record; a non-finite number is written as null and its place
listed under ``non_finite``. Reading is strict too: a file that is not a record, or whose name is
not ``<id>.json`` (a stray copy), is an error naming the file. ``load`` turns a folder of records
into a pandas DataFrame.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

REQUIRED = ("id", "status", "config", "epochs")


def config_hash(config: dict) -> str:
    """First 16 hex digits of the SHA-256 of the configuration as sorted, compact JSON."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def record_path(out: str | os.PathLike, run_id: str) -> Path:
    return Path(out) / f"{run_id}.json"


def read(path: str | os.PathLike) -> dict:
    """The record in ``path``; ValueError naming the file when it is not a record or not named by its id."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}): a truncated or damaged record; delete it to rerun "
                         "that run") from None
    missing = [k for k in REQUIRED if not isinstance(record, dict) or k not in record]
    if missing:
        raise ValueError(f"{path} is not a run record: it lacks {', '.join(missing)}")
    if path.name != f"{record['id']}.json":
        raise ValueError(f"{path} holds run {record['id']}, whose record is {path.with_name(record['id'] + '.json')}: "
                         "a copy or a renamed file; remove it")
    return record


def finished(out: str | os.PathLike, run_id: str) -> bool:
    """True when ``out`` holds a record of run ``run_id`` with status "finished"."""
    path = record_path(out, run_id)
    return path.is_file() and read(path)["status"] == "finished"


def atomic_write(path: Path, write) -> None:
    """``write(tmp)`` writes a temporary file beside ``path``, which then replaces ``path`` in one step;
    a reader never sees half a file, and a write that fails leaves neither file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save(record: dict, out: str | os.PathLike, force: bool = False) -> Path | None:
    """Write ``record`` to ``<out>/<id>.json`` atomically; returns the path, or None when a finished
    record with that id exists and ``force`` is False (a failed record is always replaced)."""
    path = record_path(out, record["id"])
    if not force and finished(out, record["id"]):
        return None
    found = []
    strict = _finite(record, "", found)
    if found:
        strict["non_finite"] = sorted(set(found) | set(record.get("non_finite", [])))
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(strict, indent=1, sort_keys=True, allow_nan=False) + "\n"))
    return path


def _finite(value, where: str, found: list):
    """``value`` with every non-finite float replaced by None; their places appended to ``found``."""
    if isinstance(value, float) and not math.isfinite(value):
        found.append(where)
        return None
    if isinstance(value, dict):
        return {k: _finite(v, f"{where}.{k}" if where else str(k), found) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v, f"{where}[{i}]", found) for i, v in enumerate(value)]
    return value


def records(path: str | os.PathLike = "results") -> list[dict]:
    """Every record (``*.json`` directly under ``path``, or ``path`` itself when it is a file); any
    other JSON file there is an error naming it (see :func:`read`)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.glob("*.json"))
    return [read(f) for f in files]


def load(path: str | os.PathLike = "results"):
    """One row per run: ``id``, ``status``, every config key, the data set, device, wall time,
    ``diverged``, ``num_classes`` (the classes a model chooses among: a language model's vocabulary),
    ``optimizer_code`` (the hash of the optimizer's math it ran under; codes joined by
    "+" for a run resumed under changed math; "None" for records older than the hash), and the last
    epoch's metrics as ``final_<metric>`` plus ``best_test_acc``."""
    import pandas as pd
    rows = []
    for r in records(path):
        row = {"id": r["id"], "status": r.get("status"), **r["config"]}
        codes = list(dict.fromkeys(map(str, r.get("optimizer_codes") or [r.get("optimizer_code")])))
        row.update(dataset_name=r.get("dataset", {}).get("name"), device_name=r.get("device_name"),
                   wall_time_s=r.get("wall_time_s"), git_commit=r.get("git_commit"), diverged=bool(r.get("diverged")),
                   num_classes=r.get("num_classes", r.get("dataset", {}).get("vocab_size")),
                   optimizer_code="+".join(codes),
                   epochs_done=len(r.get("epochs", [])), error=r.get("error"))
        if r.get("epochs"):
            for k, v in r["epochs"][-1].items():
                if k != "epoch":
                    row[f"final_{k}"] = v
            row["best_test_acc"] = max((e["test_acc"] for e in r["epochs"] if e.get("test_acc") is not None),
                                       default=math.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def load_epochs(path: str | os.PathLike = "results"):
    """Long format: one row per (run, epoch) with the run's config columns and that epoch's metrics."""
    import pandas as pd
    rows = [{"id": r["id"], **r["config"], **e} for r in records(path) for e in r.get("epochs", [])]
    return pd.DataFrame(rows)


def load_grad_stats(path: str | os.PathLike = "results"):
    """Long format: one row per (run, recorded step, parameter tensor) of the gradient-flow statistics."""
    return _long(path, "grad_stats")


def load_steps(path: str | os.PathLike = "results"):
    """Long format: one row per (run, logged step) of the training-loss log (``log_every``)."""
    return _long(path, "steps")


def load_evals(path: str | os.PathLike = "results"):
    """Long format: one row per (run, validation evaluation) (``validation`` and ``evals_per_epoch``)."""
    return _long(path, "evals")


def _long(path, key: str):
    """The rows of every record's ``key`` table (``columns`` and ``rows``) with the run's id and settings."""
    import pandas as pd
    rows = []
    for r in records(path):
        table = r.get(key)
        if table:
            rows.extend({"id": r["id"], **r["config"], **dict(zip(table["columns"], v))} for v in table["rows"])
    return pd.DataFrame(rows)
