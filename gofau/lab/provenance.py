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


def optimizer_code() -> str:
    """A short hash of the optimizer's math: the code of gofau.directions, gofau.rules and the step in
    gofau.optimizer, without docstrings and comments (an edit to those changes no number). Runs with
    different values may have been computed by different formulas."""
    import ast
    import inspect
    import textwrap

    import gofau.directions
    import gofau.optimizer
    import gofau.rules

    code = []
    for obj in (gofau.directions, gofau.rules, gofau.optimizer._update, gofau.optimizer.GOFAU._step_tensors,
                gofau.optimizer._as_tensors):
        tree = ast.parse(textwrap.dedent(inspect.getsource(obj)))
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(
                    getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
        code.append(ast.dump(tree))
    return hashlib.sha256("".join(code).encode()).hexdigest()[:12]
