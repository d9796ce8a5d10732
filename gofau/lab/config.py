"""The settings of one training run, their checks, and the run's identity.

:class:`TrainConfig` holds every setting with its default (the one place defaults live; the
command line and grid files are built from it). :func:`identity` keeps the settings that determine
a run's numbers, normalised, and :func:`run_id` hashes them: two configurations with the same id
give the same record. Rule and direction names come from the optimizer's own registries.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass

import torch

from gofau.directions import DIRECTIONS
from gofau.lab import data as gdata
from gofau.lab import models
from gofau.lab.records import config_hash
from gofau.relatives import RELATIVE_RULES, RELATIVES
from gofau.rules import READS_LR_IN, RULES

SCHEDULES = ("none", "cosine", "linear")
CHOICES = dict(dataset=gdata.NAMES, arch=models.ARCHS, init=models.INITS, norm=models.NORMS,
               optimizer=tuple(DIRECTIONS) + tuple(RELATIVES), rule=tuple(RULES), schedule=SCHEDULES)
"""The accepted values of each setting that takes a name. An optimizer is a GOFAU base direction,
combined with any rule, or one of GOFAU's relatives (``gofau.relatives``), each with its own rule."""
MOMENTUM = ("sgd", "rmsprop", "lars")  # the optimizers that read momentum
NESTEROV = ("sgd", "lars")
NO_DECAY = ("madam", "fromage")  # the relatives without weight decay


# Settings that do not change a run's numbers: left out of its identity (hash) and record config.
# (The CPU thread count is recorded beside the config, as ``threads``: it changes speed, not the run.)
RUN_CONTROL = ("data_dir", "cache_dir", "download", "out", "force", "checkpoint_dir", "progress", "threads")


@dataclass
class TrainConfig:
    """Every setting of a run; the fields outside RUN_CONTROL define the run and its record's hash."""

    dataset: str = "cifar10-jpeg"
    arch: str = "resnet9"
    width: float = 1.0
    init: str = "default"
    init_scale: float = 1.0
    norm: str = "batch"             # "none": the network without BatchNorm
    optimizer: str = "sgd"
    rule: str = "additive"
    lr: float = 0.05
    lr_in: float = 1.0
    lr_out: float | None = None
    gamma: float = 0.5
    momentum: float = 0.9          # sgd and rmsprop only (recorded as None for adam and adagrad)
    nesterov: bool = False          # sgd only
    weight_decay: float = 5e-4
    bias_rule: str | None = None    # a separate rule for biases and norm parameters (None: same as rule)
    bias_lr: float | None = None    # their lr (None: lr)
    schedule: str = "none"
    warmup: float = 0.2
    label_smoothing: float = 0.0
    augment: bool = True
    epochs: int = 1
    batch_size: int = 128
    seed: int = 0
    limit: int | None = None        # first N training images of a fixed permutation (seed 0)
    test_limit: int | None = None   # likewise for the test set
    validation: int = 0             # images held out of the training set, stratified by class (0: none)
    evals_per_epoch: int = 1        # validation evaluations per epoch, evenly spaced (with validation > 0)
    log_every: int = 0              # record the training loss every N steps (0: per epoch only)
    device: str = "auto"
    compile: bool = False
    channels_last: bool | None = None  # memory format of the model and its inputs (None: on CUDA only)
    grad_stats_every: int = 0       # record per-tensor gradient-flow statistics every N steps (0: off)
    threads: int | None = None      # torch.set_num_threads on CPU (None: leave as is)
    data_dir: str | None = None
    cache_dir: str | None = None
    download: bool = False
    out: str | None = "results"
    force: bool = False
    checkpoint_dir: str | None = "checkpoints"
    progress: bool = True


def parse_device(device: str) -> torch.device:
    """"auto" (CUDA when available, else the CPU) or a CPU or CUDA device name, as a torch.device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    return dev


def resolve_device(device: str) -> torch.device:
    """:func:`parse_device`, and ValueError when that device does not exist on this machine."""
    dev = parse_device(device)
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"device {device!r} is not available here ({torch.cuda.device_count()} CUDA device(s)); "
                         "use --device cpu or auto")
    return dev


_KINDS = {"str": str, "float": float, "int": int, "bool": bool}


def _type_ok(value, annotation: str) -> bool:
    """Whether ``value`` fits a TrainConfig annotation such as "float | None" (an int is a float here)."""
    kinds = [k.strip() for k in annotation.split("|")]
    if value is None:
        return "None" in kinds
    if isinstance(value, bool):
        return "bool" in kinds
    return any(isinstance(value, (int, float) if k == "float" else _KINDS[k]) for k in kinds if k in _KINDS)


def check_types(cfg) -> None:
    """TypeError naming the first field of the settings dataclass ``cfg`` whose value does not fit its
    annotation."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if not _type_ok(value, str(f.type)):
            raise TypeError(f"{f.name} must be {str(f.type).replace(' | ', ' or ')}, got {value!r}")


def validate(cfg: TrainConfig, here: bool = True) -> None:
    """Raise ValueError/TypeError naming the setting and its accepted range (before any data or training);
    with ``here``, also when the device does not exist on this machine (a job elsewhere may have it)."""
    if not isinstance(cfg, TrainConfig):
        return cfg.validate(here)
    check_types(cfg)
    for name, ok in CHOICES.items():
        if getattr(cfg, name) not in ok:
            raise ValueError(f"{name} must be one of {ok}, got {getattr(cfg, name)!r}")
    if cfg.bias_rule is not None and cfg.bias_rule not in RULES:
        raise ValueError(f"bias_rule must be None or one of {CHOICES['rule']}, got {cfg.bias_rule!r}")
    if cfg.optimizer in RELATIVES:
        own = RELATIVE_RULES[cfg.optimizer]
        if cfg.rule != own:
            raise ValueError(f"optimizer {cfg.optimizer!r} updates with its own rule: rule must be {own!r}, "
                             f"got {cfg.rule!r}")
        for name in ("bias_rule", "grad_stats_every"):
            if getattr(cfg, name):
                raise ValueError(f"{name} needs a GOFAU optimizer ({', '.join(DIRECTIONS)}), not "
                                 f"{cfg.optimizer!r}; got {getattr(cfg, name)!r}")
    for name in ("epochs", "batch_size", "evals_per_epoch"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {getattr(cfg, name)!r}")
    for name in ("limit", "test_limit", "threads"):
        v = getattr(cfg, name)
        if v is not None and v < 1:
            raise ValueError(f"{name} must be None or an integer >= 1, got {v!r}")
    for name in ("grad_stats_every", "seed", "validation", "log_every"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {getattr(cfg, name)!r}")
    for name in ("lr", "lr_in", "weight_decay", "momentum", "label_smoothing") + tuple(
            n for n in ("lr_out", "bias_lr") if getattr(cfg, n) is not None):
        v = getattr(cfg, name)
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    for name in ("gamma", "warmup"):
        v = getattr(cfg, name)
        if not 0 <= v <= 1:
            raise ValueError(f"{name} must be a number in [0, 1], got {v!r}")
    for name in ("width", "init_scale"):
        v = getattr(cfg, name)
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    (resolve_device if here else parse_device)(cfg.device)


def identity(cfg: TrainConfig) -> dict:
    """The settings that determine the run's numbers, normalised (settings a choice ignores are None,
    ``device`` reduced to its type), so equal runs get equal hashes. Another kind of run (a language
    model's :class:`gofau.lab.lm.LMConfig`) gives its own."""
    if not isinstance(cfg, TrainConfig):
        return cfg.identity()
    d = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RUN_CONTROL}
    d["device"] = parse_device(cfg.device).type
    if cfg.optimizer not in MOMENTUM:
        d["momentum"] = None
    if cfg.optimizer not in NESTEROV:
        d["nesterov"] = None
    if cfg.optimizer in NO_DECAY:
        d["weight_decay"] = None
    if cfg.rule != "hybrid" and cfg.bias_rule != "hybrid":
        d["gamma"] = d["lr_out"] = None
    if cfg.rule not in READS_LR_IN and cfg.bias_rule not in READS_LR_IN:
        d["lr_in"] = None
    if cfg.bias_rule is None:
        d["bias_lr"] = None
    if cfg.schedule != "linear":
        d["warmup"] = None
    if cfg.init != "scaled":
        d["init_scale"] = None
    if cfg.validation == 0:
        d["evals_per_epoch"] = LATER["evals_per_epoch"]
    for k in ("lr", "lr_in", "lr_out", "gamma", "momentum", "weight_decay", "width", "bias_lr", "warmup",
              "init_scale", "label_smoothing"):
        if d[k] is not None:
            d[k] = float(d[k])
    return {k: v for k, v in d.items() if not (k in LATER and v == LATER[k])}


# Settings added after records existed, whose default reproduces those records: left out of the
# identity while at that default, so the earlier records keep their ids.
LATER = {f.name: f.default for f in dataclasses.fields(TrainConfig)
         if f.name in ("validation", "evals_per_epoch", "log_every", "channels_last", "norm")}


def run_id(cfg: TrainConfig) -> str:
    """The run's id: the hash of its :func:`identity`; the record is ``<out>/<id>.json``."""
    return config_hash(identity(cfg))


def command_line(cls, prog: str, description: str, helps: dict, choices: dict) -> argparse.ArgumentParser:
    """A parser with one ``--flag`` per field of the settings dataclass ``cls``, with its default, type,
    accepted ``choices`` and help; "none" stands for None where a setting is optional."""
    p = argparse.ArgumentParser(prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        kind = {"float": float, "int": int, "str": str, "bool": bool}[str(f.type).split(" ")[0]]
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=helps.get(f.name))
        else:
            p.add_argument(flag, type=_optional(kind) if "None" in str(f.type) else kind, default=f.default,
                           choices=choices.get(f.name), help=helps.get(f.name, ""))
    return p


def _optional(kind):
    def parse(text):
        return None if text.lower() == "none" else kind(text)
    parse.__name__ = kind.__name__
    return parse
