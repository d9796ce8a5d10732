"""Where a result came from: the code's git commit, the optimizer's math, and the device's name."""
import hashlib
import os
import platform
import subprocess
from pathlib import Path

import torch

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


def optimizer_code(direction: str, rules) -> str:
    """A short hash of the math a run's optimizer executes: the code of its direction (a class of
    gofau.directions), of its update rules (functions of gofau.rules) and of what they share (the
    helpers of gofau.rules and the step in gofau.optimizer), without docstrings and comments. A change
    to that code changes the hash; adding another rule or direction, or editing a docstring, does not.
    Runs with different hashes may have been computed by different formulas."""
    import ast
    import inspect
    import textwrap

    import gofau.optimizer
    from gofau.directions import DIRECTIONS, _each
    from gofau.rules import RULES, _add_product, _add_scaled, _is_tensor, _scaled, _tanh, eta_out

    parts = [type(DIRECTIONS[direction]), _each, *(RULES[r] for r in sorted(set(rules))), _add_product, _add_scaled,
             _is_tensor, _scaled, _tanh, eta_out, gofau.optimizer._update, gofau.optimizer.GOFAU._step_tensors,
             gofau.optimizer._as_tensors]
    code = []
    for obj in parts:
        tree = ast.parse(textwrap.dedent(inspect.getsource(obj)))
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(
                    getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
        code.append(ast.dump(tree))
    return hashlib.sha256("".join(code).encode()).hexdigest()[:12]
