"""Run a grid of training runs from a YAML file: ``gofau-grid GRID.yaml [--out DIR]``.

The file has a ``base`` configuration (any :class:`gofau.lab.config.TrainConfig` fields, or
:class:`gofau.lab.lm.LMConfig` fields for a text data set: a language-model grid) and either
``axes`` (a mapping from setting to a list of values: their Cartesian product) or ``grids`` (a list
of such mappings, each a product of its own; the runs are their union, in order). An optional
``tune`` stage follows: ``{over: lr, seeds: [1, 2]}`` picks (:func:`picks`), for each group of runs
that differ only in ``over`` (one setting or a list, e.g. ``[lr, lr_in]``) and the seed, the values
whose runs score best on average over their seeds (:func:`score`), once every run has a finished or
failed record, then runs them with each listed seed (and, with ``across: [{init: he}, {init: scaled,
init_scale: 0.1}]``, under each of those settings too: step sizes tuned in one condition, evaluated in
several). With ``extend: N``, a pick on the edge of a numeric axis first extends that axis one step
beyond it (the same ratio as its last step), up to N times (:func:`extensions`), so that no pick is
an artefact of where the grid stopped. An optional
``sweep`` stage comes last: ``{scale: [lr, lr_out], by: [0.5, 2], seeds: [1, 2]}`` reruns every pick
with those step sizes multiplied by each factor, on seeds of the tune stage (:func:`swept`), so the
chapters can show how each method's result changes with its whole step scale, against the tune
stage's runs of the same seeds at factor 1. The chapters read the same picks, so they show what was tuned. The score is the final validation accuracy (the test
accuracy for runs without a validation split, which the chapters then say).

Finished runs (a record with the same configuration hash in the output folder) are skipped, so an
interrupted grid resumes where it stopped. Several invocations may work on one folder at once: each
run is claimed first (:func:`claim`), so no two workers train the same configuration, and a killed
worker's claim is taken over. A run that raises is recorded with status "failed" and
its error, and the grid goes on. A summary table ends the run.

Executors (``--executor``): ``inline`` trains the runs one after another in this process; ``local``
and ``slurm`` send each pending run of a stage to submitit (local processes, or Slurm jobs) with at
most ``--jobs`` running at once, wait for the stage, then go on to the next (:func:`run_jobs`). The
jobs call the same :func:`run_one` and write the same records; a job that ends without a result
(killed, timed out) is recorded as failed with its log path, and reruns resume from its checkpoint.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import socket
import sys
import threading
import time
import traceback
import uuid
from datetime import datetime, timezone
from pathlib import Path

from gofau.lab import records as gresults
from gofau.lab import lm
from gofau.lab.config import RUN_CONTROL, TrainConfig, identity, run_id, validate
from gofau.lab.provenance import ROOT
from gofau.lab.train import train

FIELDS = {f.name for f in dataclasses.fields(TrainConfig) + dataclasses.fields(lm.LMConfig)}


def make(c: dict) -> TrainConfig | lm.LMConfig:
    """The run a configuration describes: a language-model run for a text data set, else an image run."""
    kind = lm.LMConfig if c.get("dataset") in lm.text.NAMES else TrainConfig
    unknown = sorted(set(c) - {f.name for f in dataclasses.fields(kind)})
    if unknown:
        what = "a language-model run (text data set)" if kind is lm.LMConfig else "an image run"
        raise ValueError(f"setting(s) {', '.join(unknown)} do not apply to {what}; accepted: "
                         f"{', '.join(f.name for f in dataclasses.fields(kind))}")
    return kind(**c)


TOP_LEVEL = ("description", "base", "axes", "grids", "tune", "sweep")


def read_grid(path: str | Path) -> dict:
    """The grid file's specification, checked (:func:`check_spec`); ValueError naming the file."""
    import yaml

    class Strict(yaml.SafeLoader):  # a key given twice is an error, not the last one silently winning
        def construct_mapping(self, node, deep=False):
            keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
            twice = sorted({str(k) for k in keys if keys.count(k) > 1})
            if twice:
                raise yaml.constructor.ConstructorError(None, None, f"key(s) {', '.join(twice)} given twice",
                                                        node.start_mark)
            return super().construct_mapping(node, deep=deep)

    try:
        with open(path) as f:
            spec = yaml.load(f, Loader=Strict)
    except yaml.YAMLError as e:
        raise ValueError(f"grid file {path} is not valid YAML: {e}") from None
    try:
        check_spec(spec)
    except (TypeError, ValueError) as e:
        raise ValueError(f"grid file {path}: {e}") from None
    return spec


def check_spec(spec) -> None:
    """Checks a grid specification's shape before anything runs: known keys, a mapping of settings in
    ``base``, non-empty lists of values in ``axes`` (or in each mapping of ``grids``), and ``tune`` as
    ``{over: <setting or list>, seeds: [<int>, ...], extend: <int>, across: [<settings>, ...]}``, and
    ``sweep`` as ``{scale: <setting or list>, by: [<factor>, ...], seeds: [<tune seed>, ...]}``. Every
    configuration it implies is then checked by :func:`gofau.lab.config.validate`, in :func:`run_grid`."""
    if not isinstance(spec, dict):
        raise ValueError("a grid must be a mapping with 'base' and 'axes' or 'grids'")
    unknown = sorted(set(map(str, spec)) - set(TOP_LEVEL))
    if unknown:
        raise ValueError(f"unknown top-level keys {unknown}; accepted: {', '.join(TOP_LEVEL)}")
    if not isinstance(spec.get("description", ""), str):
        raise ValueError("description must be text")
    if "axes" in spec and "grids" in spec:
        raise ValueError("give either axes (one product) or grids (a list of products), not both")
    _settings(spec.get("base") or {}, "base", lists=False)
    if "axes" in spec:
        _settings(spec["axes"], "axes", lists=True)
    if "grids" in spec:
        if not isinstance(spec["grids"], list) or not spec["grids"]:
            raise ValueError("grids must be a non-empty list of mappings from setting to values")
        for i, block in enumerate(spec["grids"]):
            _settings(block, f"grids[{i}]", lists=True)
    tune = spec.get("tune")
    if tune is not None:
        if not isinstance(tune, dict) or set(map(str, tune)) - {"over", "seeds", "extend", "across"}:
            raise ValueError(f"tune must be a mapping {{over: <setting(s)>, seeds: [<int>, ...], extend: <int>, "
                             f"across: [<settings>, ...]}}, got {tune!r}")
        over = tune.get("over", "lr")
        names = _names(over)
        if (not isinstance(names, list) or not names or len(set(map(str, names))) != len(names)
                or any(n not in FIELDS or n in ("seed", *RUN_CONTROL) for n in names)):
            raise ValueError(f"tune.over must name a setting that defines a run (not seed, nor one of "
                             f"{', '.join(RUN_CONTROL)}), or a list of them, got {over!r}")
        extend = tune.get("extend", 0)
        if not isinstance(extend, int) or isinstance(extend, bool) or not 0 <= extend <= 10:
            raise ValueError(f"tune.extend must be an integer in [0, 10], got {extend!r}")
        seeds = tune.get("seeds")
        if (not isinstance(seeds, list) or not seeds or len(set(map(str, seeds))) != len(seeds)
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
            raise ValueError(f"tune.seeds must be a non-empty list of distinct integers >= 0, got {seeds!r}")
        across = tune.get("across", [{}])
        if not isinstance(across, list) or not across:
            raise ValueError(f"tune.across must be a non-empty list of mappings from setting to value, got {across!r}")
        for i, block in enumerate(across):
            _settings(block, f"tune.across[{i}]", lists=False)
            fixed = sorted(set(block) & {"seed", *map(str, names)})
            if fixed:
                raise ValueError(f"tune.across[{i}] sets {', '.join(fixed)}: the seed and the tuned settings "
                                 "come from the tune stage itself")
    if spec.get("sweep") is not None:
        _check_sweep(spec["sweep"], tune)


def _names(value):
    """A stage's setting(s) as given: one name, or a list of them (returned as is, for checking)."""
    return [value] if isinstance(value, str) else value


def _check_sweep(sweep, tune) -> None:
    if not isinstance(sweep, dict) or set(map(str, sweep)) != {"scale", "by", "seeds"}:
        raise ValueError(f"sweep must be a mapping {{scale: <setting(s)>, by: [<factor>, ...], seeds: [<int>, ...]}}, "
                         f"got {sweep!r}")
    if tune is None:
        raise ValueError("sweep needs a tune stage: it scales the tune stage's picks")
    names = _names(sweep["scale"])
    if (not isinstance(names, list) or not names or len(set(map(str, names))) != len(names)
            or any(n not in SWEEPABLE for n in names)):
        raise ValueError(f"sweep.scale must name step sizes among {', '.join(SWEEPABLE)} (or a list of them), "
                         f"got {sweep['scale']!r}")
    by = sweep["by"]
    if (not isinstance(by, list) or not by or len(set(map(str, by))) != len(by) or not all(
            isinstance(f, (int, float)) and not isinstance(f, bool) and math.isfinite(f) and f > 0 and f != 1
            for f in by)):
        raise ValueError(f"sweep.by must be a non-empty list of distinct positive factors other than 1 (factor 1 "
                         f"is the tune stage's own run), got {by!r}")
    seeds = sweep["seeds"]
    if (not isinstance(seeds, list) or not seeds or len(set(map(str, seeds))) != len(seeds)
            or not set(map(str, seeds)) <= set(map(str, tune.get("seeds", [])))):
        raise ValueError(f"sweep.seeds must be a non-empty list of distinct seeds of the tune stage "
                         f"({tune.get('seeds')}), so each swept run is paired with its factor-1 run, got {seeds!r}")


def _settings(block, where: str, lists: bool) -> None:
    if not isinstance(block, dict):
        raise ValueError(f"{where} must be a mapping from setting to {'values' if lists else 'value'}, got {block!r}")
    for key, value in block.items():
        if key not in FIELDS:
            raise ValueError(f"unknown setting {key!r} in {where}; accepted: {', '.join(sorted(FIELDS))}")
        values = value if lists and isinstance(value, list) else [value]
        if not values:
            raise ValueError(f"{where}.{key} is an empty list: the grid would have no runs")
        if any(isinstance(v, (list, dict)) for v in values):
            raise ValueError(f"{where}.{key} must be {'a value or a list of values' if lists else 'one value'}, "
                             f"got {value!r}")


def expand(spec: dict) -> list[dict]:
    """The configurations (dicts of run settings) of the product stage(s), in order."""
    check_spec(spec)
    base = dict(spec.get("base") or {})
    blocks = spec.get("grids") or ([spec["axes"]] if spec.get("axes") else [{}])
    configs = []
    for block in blocks:
        keys = list(block)
        values = [v if isinstance(v, list) else [v] for v in block.values()]
        for combo in itertools.product(*values):
            configs.append({**base, **dict(zip(keys, combo))})
    return configs


def score(record: dict | None) -> float:
    """A tuning run's score: its final validation accuracy, or its final test accuracy when it has no
    validation split (the book's early grids), or minus its final validation loss (a language
    model); -inf when it failed, diverged or is missing."""
    if not record or record.get("status") != "finished" or not record.get("epochs") or record.get("diverged"):
        return -math.inf
    last = record["epochs"][-1]
    acc = last.get("val_acc", last.get("test_acc"))
    if acc is None and "val_loss" in last:  # a language model: the lower its validation loss, the better
        acc = -last["val_loss"]
    return acc if acc is not None and math.isfinite(acc) else -math.inf


def tune_over(spec: dict) -> list[str]:
    """The settings the grid's tune stage picks (``tune.over``: one or a list; default lr)."""
    over = (spec.get("tune") or {}).get("over", "lr")
    return list(_names(over))


def _groups(spec: dict, configs: list[dict]) -> list[dict[str, list]]:
    """``configs`` grouped by every setting but the tune stage's ``over`` settings and the seed; in a
    group, the configurations by their values of ``over`` (a JSON list)."""
    over = tune_over(spec)
    groups: dict[str, dict[str, list]] = {}
    for c in configs:
        ident = identity(make(c))
        rest = {k: v for k, v in ident.items() if k not in (*over, "seed")}
        values = groups.setdefault(gresults.config_hash(rest), {})
        values.setdefault(json.dumps([ident.get(k) for k in over]), []).append(c)
    return list(groups.values())


def _best(values: dict[str, list], out) -> str | None:
    """The key of ``values`` whose runs score best on average over their seeds (the first on a tie);
    None while a run has no finished or failed record, or none has finished."""
    found = {v: [_record(out, c) for c in cs] for v, cs in values.items()}
    runs = [r for rs in found.values() for r in rs]
    if any(r is None or r.get("status") not in ("finished", "failed") for r in runs) or not any(
            r.get("status") == "finished" for r in runs):
        return None
    mean = {v: sum(score(r) for r in rs) / len(rs) for v, rs in found.items()}
    return max(mean, key=mean.get)


def picks(spec: dict, configs: list[dict], out: str | Path) -> list[dict]:
    """Per group of ``configs`` that differ only in the tune stage's ``over`` settings and the seed,
    the configuration at the values of ``over`` whose runs score best on average over their seeds
    (the first on a tie), once every run of the group has a finished or failed record and one has
    finished. Groups still running, and grids without a tune stage, give none."""
    if not spec.get("tune"):
        return []
    chosen = []
    for values in _groups(spec, configs):
        best = _best(values, out)
        if best is not None:
            chosen.append(values[best][0])
    return chosen


def extensions(spec: dict, configs: list[dict], out: str | Path) -> list[dict]:
    """New tuning configurations for every group whose pick lies on the edge of a numeric axis of
    ``over`` with at least two values: the pick with that axis one step further out (the edge value
    times the ratio of the last step), on each of the pick's seeds."""
    over, known = tune_over(spec), {run_id(make(c)) for c in configs}
    new = []
    for values in _groups(spec, configs):
        best = _best(values, out)
        if best is None:
            continue
        pick = json.loads(best)
        points = [json.loads(v) for v in values]
        for d, name in enumerate(over):
            axis = sorted({p[d] for p in points if isinstance(p[d], float)})  # float settings: step sizes
            if len(axis) < 2 or pick[d] not in (axis[0], axis[-1]) or 0 in axis[:2] + axis[-2:]:
                continue
            edge, inner = (axis[0], axis[1]) if pick[d] == axis[0] else (axis[-1], axis[-2])
            step = float(f"{edge * edge / inner:.6g}")  # 0.3 * 0.3 / 0.1 is 0.8999999999999999
            for c in values[best]:  # the pick, one step further out along this axis, on each of its seeds
                c2 = {**c, name: step}
                try:
                    validate(make(c2), here=False)
                except (TypeError, ValueError):
                    continue  # beyond the setting's range (gamma > 1, say): the edge is the range's own
                if run_id(make(c2)) not in known:
                    known.add(run_id(make(c2)))
                    new.append(c2)
    return new


def _extension_rounds(spec: dict, configs: list[dict], out):
    """Yields each round of :func:`extensions` (at most ``tune.extend``), appending it to ``configs``;
    the next round is computed when the caller asks for it, so a runner can run each round first."""
    for _ in range((spec.get("tune") or {}).get("extend", 0)):
        new = extensions(spec, configs, out)
        if not new:
            return
        configs += new
        yield new


def tuning_configs(spec: dict, out: str | Path) -> list[dict]:
    """The tuning stage as far as the records in ``out`` take it: the product stage, then each round
    of :func:`extensions` (at most ``tune.extend`` rounds) whose predecessors have records."""
    configs = expand(spec)
    for _ in _extension_rounds(spec, configs, out):
        pass
    return configs


def tuned(spec: dict, chosen: list[dict]) -> list[dict]:
    """The tune stage's configurations: each of ``chosen`` (the grid's :func:`picks`) under each
    setting of ``tune.across`` (default: as tuned) with each of the tune stage's seeds, seed by seed
    (every pick on the first seed, then on the next), so a grid stopped part-way leaves every method
    with the same seeds and its comparisons stay paired."""
    tune = spec.get("tune") or {}
    return [{**c, **a, "seed": s} for s in tune.get("seeds", []) for c in chosen for a in tune.get("across", [{}])]


SWEEPABLE = ("lr", "lr_out", "bias_lr")  # step sizes a sweep may scale (lr_in is inside the tanh: not a step size)


def swept(spec: dict, chosen: list[dict]) -> list[dict]:
    """The sweep stage's configurations: each of ``chosen`` (the grid's :func:`picks`) with its
    ``sweep.scale`` step sizes (those it sets; a setting that is None, such as lr_out outside the
    hybrid, stays None) multiplied by each factor of ``sweep.by``, seed by seed as in :func:`tuned`.
    Empty without a sweep stage."""
    sweep = spec.get("sweep")
    if not sweep:
        return []
    names = _names(sweep["scale"])
    runs = []
    for s in sweep["seeds"]:
        for c in chosen:
            ident = identity(make(c))
            for f in sweep["by"]:
                scaled = {n: float(f"{ident[n] * f:.6g}") for n in names if ident.get(n) is not None}
                runs.append({**c, **scaled, "seed": s})
    return runs


def _record(out, config: dict) -> dict | None:
    path = gresults.record_path(out, run_id(make(config)))
    return gresults.read(path) if path.is_file() else None


def run_one(config: dict, out: str | Path, force: bool = False) -> tuple[str, dict | None]:
    """Train one configuration: ("skipped" | "claimed" | "finished" | "failed", record). "claimed":
    another worker (another grid invocation on the same folder) is running it (:func:`claim`)."""
    cfg = make({**config, "out": str(out), "force": force})
    rid = run_id(cfg)
    if not force and gresults.finished(out, rid):
        return "skipped", gresults.read(gresults.record_path(out, rid))
    token = claim(out, rid)
    if token is None:
        return "claimed", None
    started = _now()
    beating = threading.Event()
    heart = threading.Thread(target=_heartbeat, args=(_claim_path(out, rid), beating), daemon=True)
    heart.start()
    try:
        if not force and gresults.finished(out, rid):  # finished by a worker whose claim just ended
            return "skipped", gresults.read(gresults.record_path(out, rid))
        return "finished", (lm.train if isinstance(cfg, lm.LMConfig) else train)(cfg)
    except KeyboardInterrupt:
        raise
    except Exception as e:
        print(f"run {rid} failed: {type(e).__name__}: {e}", file=sys.stderr)
        return "failed", _record_failure(cfg, out, started, f"{type(e).__name__}: {e}",
                                         traceback=traceback.format_exc(limit=5))
    finally:
        beating.set()
        heart.join()
        release(out, rid, token)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _record_failure(cfg: TrainConfig | lm.LMConfig, out, started: str, error: str, **details) -> dict:
    """Saves (and returns) a "failed" record for ``cfg``, unless a finished one exists (a failed
    rerun with --force keeps it)."""
    rid = run_id(cfg)
    record = dict(id=rid, status="failed", config=identity(cfg), seed=cfg.seed, epochs=[], started=started,
                  error=_relative(error), **{k: _relative(v) for k, v in details.items()})
    if not gresults.finished(out, rid):
        gresults.save(record, out, force=True)
    return record


HEARTBEAT_S = 60  # a worker touches its claim this often
STALE_CLAIM_S = 600  # a claim not touched for this long is taken over


def _claim_path(out, rid: str) -> Path:
    return Path(out) / ".claims" / f"{rid}.claim"


def claim(out: str | Path, rid: str) -> str | None:
    """Claims run ``rid`` for this process: a token when it may run it (pass it to :func:`release`),
    else None. A claim is a file created atomically (O_EXCL) in ``<out>/.claims``, holding a unique
    token, the host, process id, Slurm job and time, and touched every HEARTBEAT_S while its run
    trains (:func:`_heartbeat`). It is taken over when its process is gone (same host) or it has not
    been touched for STALE_CLAIM_S: by an atomic rename, checked against the token read before, so
    that of two workers only one takes it and a fresh claim is never taken by mistake."""
    path = _claim_path(out, rid)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            held = _held(path)
            if held is None:
                continue  # released meanwhile: try again
            if not _stale(*held):
                return None
            aside = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex}")
            try:
                os.rename(path, aside)
            except FileNotFoundError:
                continue
            moved = _held(aside)
            if moved is None or moved[0].get("token") != held[0].get("token"):  # a fresh claim: put it back
                try:
                    os.link(aside, path)
                except FileExistsError:
                    pass
                aside.unlink(missing_ok=True)
                return None
            aside.unlink()
            continue
        token = uuid.uuid4().hex
        with os.fdopen(fd, "w") as f:
            json.dump(dict(token=token, host=socket.gethostname(), pid=os.getpid(), job=os.environ.get("SLURM_JOB_ID"),
                           time=time.time(), heartbeat_s=HEARTBEAT_S), f)
        return token
    return None


def release(out: str | Path, rid: str, token: str) -> None:
    """Removes run ``rid``'s claim if it is still the one ``token`` names (not a successor's)."""
    path = _claim_path(out, rid)
    held = _held(path)
    if held is not None and held[0].get("token") == token:
        path.unlink(missing_ok=True)


def _held(path: Path) -> tuple[dict, float] | None:
    """A claim's contents and seconds since it was last touched; None when it is gone. A claim still
    being written or unreadable reads as {}."""
    try:
        idle = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        return json.loads(path.read_text()), idle
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}, idle


def _stale(held: dict, idle: float) -> bool:
    if not held:
        return idle > 60  # never finished writing
    if held.get("host") == socket.gethostname():
        try:
            os.kill(held["pid"], 0)
        except ProcessLookupError:
            return True  # its process has ended: killed, or crashed
        except PermissionError:
            pass
    if "heartbeat_s" in held:
        return idle > STALE_CLAIM_S  # its worker stopped beating: killed, suspended, or its pid reused
    return held.get("host") != socket.gethostname() and idle > 24 * 3600  # a claim from before heartbeats


def _heartbeat(path: Path, stop: threading.Event, every: float = HEARTBEAT_S) -> None:
    """Touches the claim at ``path`` every ``every`` seconds until ``stop`` is set or the claim is gone."""
    while not stop.wait(every):
        try:
            os.utime(path)
        except FileNotFoundError:
            return
        except OSError as e:  # a passing file-system error (NFS): try again at the next beat
            print(f"could not touch claim {path}: {e}", file=sys.stderr)


def _relative(text: str) -> str:
    """Machine paths in an error message, written relative to the repository root's parent."""
    return text.replace(str(ROOT.parent) + "/", "../")


EXECUTORS = ("inline", "local", "slurm")


@dataclasses.dataclass
class Jobs:
    """How a grid's runs are executed: ``inline`` (one after another, here) or as submitit jobs
    (``local`` processes or ``slurm`` jobs), at most ``jobs`` at once; the Slurm settings, and the
    folder for the jobs' logs (default ``<out>/.jobs``)."""

    executor: str = "inline"
    jobs: int = 1
    partition: str | None = None
    gpus_per_job: int = 0
    cpus_per_job: int | None = None
    time_min: int = 120
    log_dir: str | None = None

    def __post_init__(self):
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        for name, low in (("jobs", 1), ("gpus_per_job", 0), ("cpus_per_job", 1), ("time_min", 1)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _executor(jobs: Jobs, out: Path):
    try:
        import submitit
    except ImportError:
        raise ValueError(f"executor {jobs.executor!r} needs submitit: pip install submitit") from None
    try:
        executor = submitit.AutoExecutor(folder=jobs.log_dir or out / ".jobs" / "%j", cluster=jobs.executor)
    except RuntimeError as e:  # slurm off a cluster: 'Could not detect "srun"'
        raise ValueError(f"executor {jobs.executor!r} is not available here: {e}") from None
    executor.update_parameters(name="gofau-grid", timeout_min=jobs.time_min, gpus_per_node=jobs.gpus_per_job,
                               cpus_per_task=jobs.cpus_per_job, slurm_partition=jobs.partition,
                               slurm_array_parallelism=jobs.jobs)
    return executor


def run_jobs(executor, configs: list[dict], out: Path, force: bool, limit: int):
    """Runs ``configs`` as submitit jobs of :func:`run_one`, at most ``limit`` at once (on Slurm, one
    job array throttled by its array parallelism); yields ``(config, status, record)`` as each ends.
    A job that ends without a result is recorded as failed, with the reason submitit gives and its
    log (relative to ``out`` when inside it). Interrupting cancels the jobs still running."""
    queue, running = list(configs), []
    if executor.cluster == "slurm":
        now = _now()
        running = [(job, c, now) for job, c in zip(
            executor.map_array(run_one, queue, [out] * len(queue), [force] * len(queue)), queue)]
        queue = []
    try:
        while queue or running:
            while queue and len(running) < limit:
                c = queue.pop(0)
                running.append((executor.submit(run_one, c, out, force), c, _now()))
            for entry in [e for e in running if e[0].done()]:
                running.remove(entry)
                job, c, submitted = entry
                try:
                    status, record = job.result()
                except Exception as e:  # killed, timed out or out of memory: no result came back
                    status = "failed"
                    why = (str(e).strip().splitlines() or [""])[0][:300]
                    log = Path(job.paths.stderr)
                    record = _record_failure(make({**c, "out": str(out)}), out, submitted,
                                             f"job {job.job_id} ended without a result: {type(e).__name__}: {why}",
                                             log=str(log.relative_to(out) if log.is_relative_to(out) else log))
                    print(f"job {job.job_id} failed; its log: {log}", file=sys.stderr)
                yield c, status, record
            time.sleep(0.5 if running else 0)
    except BaseException:
        for job, _, _ in running:
            job.cancel(check=False)
        raise


def _absolute(config: dict) -> dict:
    """``config`` with its folders made absolute, for a job that may start elsewhere."""
    defaults = make(config)
    folders = {k: str(Path(getattr(defaults, k)).resolve())
               for k in ("data_dir", "cache_dir", "checkpoint_dir") if getattr(defaults, k, None)}
    return {**config, **folders}


def run_grid(path: str | Path, out: str | Path = "results", force: bool = False, overrides: dict | None = None,
             dry_run: bool = False, jobs: Jobs | None = None) -> list[dict]:
    """Run every configuration of grid file ``path`` (then its tune and sweep stages) with ``jobs`` (default:
    inline); returns summary rows."""
    jobs = jobs or Jobs()
    spec = read_grid(path)
    if overrides:
        spec["base"] = {**(spec.get("base") or {}), **overrides}
    configs = expand(spec)
    seeds = (spec.get("tune") or {}).get("seeds", [])
    across = (spec.get("tune") or {}).get("across", [])
    elsewhere = jobs.executor != "inline"  # jobs may run where the devices differ from this machine's
    for c in configs + [{**configs[0], "seed": s} for s in seeds] + [{**configs[0], **a} for a in across]:
        # the tune stage's settings too
        cfg = make(c)
        validate(cfg, here=not (elsewhere or dry_run))
        if elsewhere and cfg.device == "auto":
            raise ValueError("device 'auto' resolves on the machine that runs each job, so this machine would "
                             "compute other run ids: set device to cpu or cuda in the grid file")
    rows = []
    out = Path(out).resolve() if jobs.executor != "inline" else out
    executor = _executor(jobs, out) if jobs.executor != "inline" and not dry_run else None

    def row(stage, c, status, r):
        last = r["epochs"][-1] if r and r.get("epochs") else {}
        rows.append(dict(stage=stage, status=status, **_brief(c), val_loss=last.get("val_loss"),
                         test_acc=last.get("test_acc"), wall_s=round(r.get("wall_time_s") or 0, 1) if r else None,
                         id=r["id"] if r else None))

    def run_all(cs, stage):
        if dry_run:
            rows.extend(dict(stage=stage, status="planned", **_brief(c)) for c in cs)
        elif executor is None:
            for i, c in enumerate(cs, 1):
                print(f"[{stage} {i}/{len(cs)}] {_brief(c)}", file=sys.stderr, flush=True)
                row(stage, c, *run_one(c, out, force))
        else:
            pending = []
            for c in cs:  # finished runs are never sent to a job
                rid = run_id(make(c))
                if not force and gresults.finished(out, rid):
                    row(stage, c, "skipped", gresults.read(gresults.record_path(out, rid)))
                else:
                    pending.append(_absolute(c))
            print(f"[{stage}] {len(pending)} run(s) to {jobs.executor} jobs, {jobs.jobs} at once",
                  file=sys.stderr, flush=True)
            for i, (c, status, r) in enumerate(run_jobs(executor, pending, out, force, jobs.jobs), 1):
                print(f"[{stage} {i}/{len(pending)}] {status}: {_brief(c)}", file=sys.stderr, flush=True)
                row(stage, c, status, r)

    run_all(configs, "grid")
    if not dry_run:
        for new in _extension_rounds(spec, configs, out):  # picks on an edge extend the grid
            run_all(new, "extend")
        chosen = picks(spec, configs, out)
        run_all(tuned(spec, chosen), "tune")
        run_all(swept(spec, chosen), "sweep")
        claimed = sum(r["status"] == "claimed" for r in rows)
        if claimed:
            print(f"{claimed} run(s) claimed by other workers on {out}: run this grid again once they have "
                  "finished, to complete the stages that wait for them", file=sys.stderr)
    return rows


def _brief(c: dict) -> dict:
    keys = ("optimizer", "rule", "lr", "seed")
    return {k: getattr(make(c), k) for k in keys}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="gofau-grid", description=__doc__.split("\n\n")[0])
    p.add_argument("config", help="YAML grid file")
    p.add_argument("--out", default="results", help="folder for the JSON records")
    p.add_argument("--force", action="store_true", help="rerun finished runs")
    p.add_argument("--dry-run", action="store_true", help="list the grid stage's runs without training")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per run")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    e = p.add_argument_group("executors", "run each pending run as a submitit job: local processes, or Slurm jobs "
                             "(every stage waits for the one before; Ctrl-C cancels the jobs, a rerun resumes)")
    e.add_argument("--executor", choices=EXECUTORS, default="inline",
                   help="inline: one run after another in this process (default); local: submitit processes on "
                        "this machine; slurm: submitit jobs on a Slurm cluster")
    e.add_argument("--jobs", type=int, default=1, help="jobs running at once (Slurm: the array parallelism)")
    e.add_argument("--partition", help="Slurm partition")
    e.add_argument("--gpus-per-job", type=int, default=0,
                   help="GPUs per job (local jobs see the first N GPUs only: with 0 they run on the CPU)")
    e.add_argument("--cpus-per-job", type=int, help="CPUs per job (Slurm)")
    e.add_argument("--time-min", type=int, default=120, help="time limit per job, in minutes")
    e.add_argument("--log-dir", help="folder for the jobs' logs (default: OUT/.jobs/JOB_ID)")
    args = p.parse_args(argv)
    overrides = {}
    if args.threads:
        overrides["threads"] = args.threads
    if args.no_progress or args.executor != "inline":
        overrides["progress"] = False  # a job's bars would only fill its log
    try:
        jobs = Jobs(args.executor, args.jobs, args.partition, args.gpus_per_job, args.cpus_per_job, args.time_min,
                    args.log_dir)
        rows = run_grid(args.config, args.out, args.force, overrides, args.dry_run, jobs)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import pandas as pd
    table = pd.DataFrame(rows)
    with pd.option_context("display.max_rows", None, "display.width", 200):
        print(table.to_string(index=False) if len(table) else "no runs")
    return 1 if (len(table) and (table["status"] == "failed").any()) else 0


if __name__ == "__main__":
    sys.exit(main())
