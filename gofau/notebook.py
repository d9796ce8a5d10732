"""Helpers for the book's chapters: parameter checking, data and repository paths, environment.

Chapters are papermill notebooks. Papermill inserts a cell tagged ``injected-parameters``
right after the cell tagged ``parameters`` and only *warns* about names the notebook does
not define, so a mistyped ``-p semed 3`` would silently run with the default seed. The cell
after the parameters cell therefore calls :func:`check_parameters`, which compares the two
cells and raises.
"""

from __future__ import annotations

import ast
import os
import platform
import sys
from pathlib import Path

from gofau.provenance import ROOT

INJECTED_HEADER = "# Parameters"  # papermill's first line of the injected-parameters cell


def repo_root() -> Path:
    """The repository root: the folder holding the ``gofau`` package (editable install)."""
    return ROOT


def data_dir(name: str | None = None) -> Path:
    """The offline data folder (:func:`gofau.data.default_data_dir`), or the file ``name`` in it.

    Raises FileNotFoundError saying where it looked and how to provide the data.
    """
    from gofau.data import default_data_dir

    folder = default_data_dir()
    source = "GOFAU_DATA" if "GOFAU_DATA" in os.environ else \
        "the default <repo root>/../shared/data (GOFAU_DATA is unset)"
    target = folder / name if name else folder
    if not target.exists():
        raise FileNotFoundError(
            f"data not found: {target} (looked in {folder}, from {source}). "
            "Put the data set archives (e.g. cifar10-jpeg.tar.gz) in one folder and set "
            "GOFAU_DATA=/path/to/that/folder; see README.md, section 'Image experiments'."
        )
    return target


def _assignments(source: str, what: str) -> dict[str, ast.expr]:
    """Names assigned at top level in a cell's source, with their value expressions."""
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise ValueError(f"the {what} cell is not valid Python: {err}") from None
    found: dict[str, ast.expr] = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) and node.value is not None else [])
        for target in targets:
            if isinstance(target, ast.Name):
                found[target.id] = node.value
    return found


def _literal(expr: ast.expr):
    try:
        return True, ast.literal_eval(expr)
    except (ValueError, TypeError, SyntaxError):
        return False, None


def _type_ok(default, given) -> bool:
    """Whether ``given`` may replace ``default``: bool for bool, int for int, a number for float,
    str for str, list or tuple for a sequence; a None default accepts anything."""
    if default is None:
        return True
    if isinstance(default, bool):
        return isinstance(given, bool)
    if isinstance(default, int):
        return isinstance(given, int) and not isinstance(given, bool)
    if isinstance(default, float):
        return isinstance(given, (int, float)) and not isinstance(given, bool)
    if isinstance(default, (list, tuple)):
        return isinstance(given, (list, tuple))
    return isinstance(given, type(default))


def compare_parameters(parameters_source: str, injected_source: str) -> dict:
    """Check papermill's injected assignments against the parameters cell's defaults.

    Every injected name must be assigned in the parameters cell (else ValueError naming it and
    listing the accepted names), and a literal value must have the default's type (else
    TypeError). Returns the injected literal values by name.
    """
    defaults = _assignments(parameters_source, "parameters")
    injected = _assignments(injected_source, "injected-parameters")
    unknown = sorted(set(injected) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown notebook parameter(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(sorted(defaults)) or '(none: no cell is tagged parameters)'}"
        )
    values = {}
    for name, expr in injected.items():
        known, given = _literal(expr)
        has_default, default = _literal(defaults[name])
        if known and has_default and not _type_ok(default, given):
            raise TypeError(
                f"notebook parameter {name}={given!r} is a {type(given).__name__}; "
                f"its default {default!r} is a {type(default).__name__}"
            )
        if known:
            values[name] = given
    return values


def check_parameters() -> None:
    """Call in the cell right after the ``parameters`` cell.

    Reads the kernel's input history: when the previous cell is papermill's injected cell
    (it starts with ``# Parameters``), its names are checked against the cell before it with
    :func:`compare_parameters`. Without injection (book build, JupyterLab) there is nothing to check.
    """
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        raise RuntimeError("check_parameters() runs inside a Jupyter kernel (IPython)")
    history = shell.user_ns["In"]  # history[-1] is the cell calling this function
    if len(history) >= 3 and history[-2].lstrip().startswith(INJECTED_HEADER):
        compare_parameters(history[-3], history[-2])


def environment() -> dict[str, str]:
    """The software and hardware a page was executed with: Python, torch, device, commit."""
    import torch

    from gofau.provenance import device_name, git_commit

    return {
        "Python": sys.version.split()[0],
        "torch": torch.__version__,
        "device": device_name("cuda" if torch.cuda.is_available() else "cpu"),
        "torch threads": str(torch.get_num_threads()),
        "platform": platform.platform(),
        "gofau commit": git_commit() or "unknown",
    }
