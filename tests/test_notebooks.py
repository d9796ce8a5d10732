"""Every chapter in notebooks/ follows the conventions of book/reproducibility.md.

Executing them is `make smoke` (papermill with smoke=True, then nbval); these checks are static.
"""

import ast
import json
import re
from pathlib import Path

import pytest

from gofau.lab.chapter import compare_parameters

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|tmp|root|home|Users)/")


def code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def source(cell):
    return "".join(cell["source"])


@pytest.fixture(params=NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def chapter(request):
    path = request.param
    return path, json.loads(path.read_text(encoding="utf-8"))


def test_size_under_2_mb(chapter):
    path, _ = chapter
    assert path.stat().st_size < 2 * 1024 * 1024


def test_committed_without_outputs(chapter):
    _, nb = chapter
    assert [i for i, c in enumerate(code_cells(nb)) if c.get("outputs") or c.get("execution_count")] == []


def test_no_machine_paths_or_papermill_metadata(chapter):
    path, nb = chapter
    assert "papermill" not in nb["metadata"]
    assert MACHINE_PATH.findall(path.read_text(encoding="utf-8")) == []


def test_python3_kernel(chapter):
    _, nb = chapter
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


def test_first_code_cell_is_parameters_with_smoke(chapter):
    _, nb = chapter
    first = code_cells(nb)[0]
    assert "parameters" in first["metadata"].get("tags", [])
    tree = ast.parse(source(first))
    assigned = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
                if isinstance(t, ast.Name)}
    assert "smoke" in assigned
    # a mistyped name is caught against this very cell
    with pytest.raises(ValueError, match="smoke"):
        compare_parameters(source(first), "# Parameters\nsmoek = True\n")


def test_second_code_cell_checks_the_parameters(chapter):
    _, nb = chapter
    assert "check_parameters()" in source(code_cells(nb)[1])
