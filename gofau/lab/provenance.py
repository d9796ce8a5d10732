"""Where a result came from: the code's git commit, the optimizer's math, and the device's name."""
import ast
import hashlib
import inspect
import os
import platform
import subprocess
from pathlib import Path

import torch

import gofau.directions
import gofau.optimizer
import gofau.relatives
import gofau.rules

ROOT = Path(__file__).resolve().parents[2]  # the repository holding the gofau package (editable install)


def git_commit() -> str | None:
    """HEAD of the repository holding gofau, with "+dirty" when tracked files differ from it
    (new untracked files, such as result records being written, do not count); None outside git."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    try:
        return git("rev-parse", "HEAD") + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return None


def device_name(device: torch.device | str = "cpu") -> str:
    """The GPU's name, or "CPU: <model> (<n> cores)" from /proc/cpuinfo where it exists."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), model)
    except OSError:
        pass
    return f"CPU: {model} ({os.cpu_count()} cores)"


def _module_tree(module):
    """The AST of ``module``'s source, without docstrings (read once, when this module is imported)."""
    tree = ast.parse(inspect.getsource(module))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(
                getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return {n.name: n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}


# The optimizer's code as this process loaded it: a file edited while a long grid runs does not
# change the hash of the runs that process still starts.
_CODE = {m.__name__: _module_tree(m) for m in (gofau.directions, gofau.rules, gofau.optimizer, gofau.relatives)}
_HELPERS = [("gofau.rules", "_add_product"), ("gofau.rules", "_add_scaled"), ("gofau.rules", "_is_tensor"),
            ("gofau.rules", "_scaled"), ("gofau.rules", "_tanh"), ("gofau.rules", "eta_out"),
            ("gofau.optimizer", "_update"), ("gofau.optimizer", "_step_tensors"), ("gofau.optimizer", "_as_tensors")]
_RELATIVE_PARTS = [("gofau.relatives", "_Relative"), ("gofau.relatives", "NormalisedGradient"),
                   ("gofau.relatives", "_positive"), ("gofau.optimizer", "buckets"),
                   ("gofau.directions", "SGD"), ("gofau.directions", "Adam"), ("gofau.rules", "trust_ratios")]


def optimizer_code(direction: str, rules) -> str:
    """A short hash of the math a run's optimizer executes: the code of its direction (a class of
    gofau.directions), of its update rules (functions of gofau.rules) and of what they share (the
    helpers of gofau.rules and the step in gofau.optimizer), without docstrings and comments, as
    this process loaded it; for a relative (gofau.relatives), its class and every part the relatives
    are built from. A change to that code changes the hash; adding another rule or direction, or
    editing a docstring, does not. Runs with different hashes may have been computed by different
    formulas."""
    from gofau.directions import DIRECTIONS
    from gofau.relatives import RELATIVES
    from gofau.rules import RULES

    if direction in RELATIVES:
        names = [("gofau.relatives", RELATIVES[direction].__name__), *_RELATIVE_PARTS]
    else:
        names = [("gofau.directions", type(DIRECTIONS[direction]).__name__)]
    names += [("gofau.directions", "_each")]
    names += [("gofau.rules", RULES[r].__name__) for r in sorted(set(rules))] + _HELPERS
    if "trust" in rules and direction not in RELATIVES:
        names.append(("gofau.rules", "trust_ratios"))
    dumps = "".join(ast.dump(ast.Module(body=[_CODE[module][name]], type_ignores=[])) for module, name in names)
    return hashlib.sha256(dumps.encode()).hexdigest()[:12]
