"""The benchmark scripts refuse bad arguments before timing anything."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"


def run(*args, script="step.py"):
    return subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["--steps", "5"], "--steps must be at least 20, got 5"),
    (["--families", "SGD,Lion"], "--families: unknown ['Lion']"),
    (["--device", "tpu0"], "--device: Invalid device string: 'tpu0'"),
])
def test_bad_arguments_are_refused_naming_them(args, message):
    out = run(*args)
    assert out.returncode == 2 and message in out.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the CUDA table can run here")
def test_the_cuda_table_without_a_cuda_device_says_so():
    out = run("--device", "cuda")
    assert out.returncode == 2 and "this machine has no CUDA device; use --device cpu" in out.stderr


def test_the_training_benchmark_refuses_zero_rounds():
    out = run("--rounds", "0", script="train.py")
    assert out.returncode == 2 and "--rounds must be at least 1, got 0" in out.stderr
