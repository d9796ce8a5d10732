"""Run records: one JSON file per run, named by a hash of its configuration, and loaders for them.

A record is a dict with at least ``id`` (the hash), ``status`` ("finished" or "failed"),
``config`` (the settings that determine the result) and ``epochs`` (a list of per-epoch metric
dicts). Files are written atomically (a temporary file, then ``os.replace``), so a killed writer
never leaves half a record. ``load`` turns a folder of records into a pandas DataFrame.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def config_hash(config: dict) -> str:
    """First 16 hex digits of the SHA-256 of the configuration as sorted, compact JSON."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def record_path(out: str | os.PathLike, run_id: str) -> Path:
    return Path(out) / f"{run_id}.json"


def read(path: str | os.PathLike) -> dict:
    with open(path) as f:
        return json.load(f)


def finished(out: str | os.PathLike, run_id: str) -> bool:
    """True when ``out`` holds a record of run ``run_id`` with status "finished"."""
    path = record_path(out, run_id)
    if not path.is_file():
        return False
    try:
        return read(path).get("status") == "finished"
    except (OSError, json.JSONDecodeError):
        return False


def save(record: dict, out: str | os.PathLike, force: bool = False) -> Path | None:
    """Write ``record`` to ``<out>/<id>.json`` atomically; returns the path, or None when a finished
    record with that id exists and ``force`` is False (a failed record is always replaced)."""
    path = record_path(out, record["id"])
    if not force and finished(out, record["id"]):
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    return path


def records(path: str | os.PathLike = "results") -> list[dict]:
    """Every record (``*.json`` directly under ``path``, or ``path`` itself when it is a file)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.glob("*.json"))
    out = []
    for f in files:
        r = read(f)
        if isinstance(r, dict) and "config" in r and "id" in r:
            out.append(r)
    return out


def load(path: str | os.PathLike = "results"):
    """One row per run: ``id``, ``status``, every config key, the data set, device, wall time, and
    the last epoch's metrics as ``final_<metric>`` plus ``best_test_acc``."""
    import pandas as pd
    rows = []
    for r in records(path):
        row = {"id": r["id"], "status": r.get("status"), **r["config"]}
        row.update(dataset_name=r.get("dataset", {}).get("name"), device_name=r.get("device_name"),
                   wall_time_s=r.get("wall_time_s"), git_commit=r.get("git_commit"),
                   epochs_done=len(r.get("epochs", [])), error=r.get("error"))
        if r.get("epochs"):
            for k, v in r["epochs"][-1].items():
                if k != "epoch":
                    row[f"final_{k}"] = v
            row["best_test_acc"] = max(e["test_acc"] for e in r["epochs"])
        rows.append(row)
    return pd.DataFrame(rows)


def load_epochs(path: str | os.PathLike = "results"):
    """Long format: one row per (run, epoch) with the run's config columns and that epoch's metrics."""
    import pandas as pd
    rows = [{"id": r["id"], **r["config"], **e} for r in records(path) for e in r.get("epochs", [])]
    return pd.DataFrame(rows)


def load_grad_stats(path: str | os.PathLike = "results"):
    """Long format: one row per (run, recorded step, parameter tensor) of the gradient-flow statistics."""
    import pandas as pd
    rows = []
    for r in records(path):
        g = r.get("grad_stats")
        if g:
            cols = g["columns"]
            rows.extend({"id": r["id"], **r["config"], **dict(zip(cols, v))} for v in g["rows"])
    return pd.DataFrame(rows)
