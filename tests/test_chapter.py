"""gofau.lab.chapter: papermill parameter checking, data and repository paths, environment."""

import os
import subprocess

import nbformat
import papermill
import pytest

from gofau.lab import chapter

PARAMETERS = "smoke = False\nseed = 0\nlr = 0.1\nname = 'cifar10'\nwidths = (16, 32)\ndata = None\n"


def injected(**values):
    return "# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in values.items())


def test_known_parameters_pass_and_are_returned():
    assert chapter.compare_parameters(PARAMETERS, injected(seed=3, smoke=True)) == {"seed": 3, "smoke": True}


def test_mistyped_name_is_named_with_the_accepted_ones():
    with pytest.raises(ValueError) as err:
        chapter.compare_parameters(PARAMETERS, injected(semed=3, seed=1))
    message = str(err.value)
    assert "semed" in message and "seed" not in message.split(";")[0]
    assert message.endswith("accepted: data, lr, name, seed, smoke, widths")


def test_notebook_without_parameters_cell_accepts_nothing():
    with pytest.raises(ValueError, match=r"unknown notebook parameter\(s\) smoke; accepted: \(none"):
        chapter.compare_parameters("", injected(smoke=True))


@pytest.mark.parametrize("name, value", [("smoke", "True"), ("smoke", 1), ("seed", 1.5), ("seed", True),
                                         ("lr", "0.1"), ("name", 3), ("widths", 16)])
def test_value_of_the_wrong_type_is_a_type_error(name, value):
    with pytest.raises(TypeError, match=rf"notebook parameter {name}="):
        chapter.compare_parameters(PARAMETERS, injected(**{name: value}))


@pytest.mark.parametrize("name, value", [("lr", 1), ("lr", 0.5), ("widths", [8, 8]), ("data", "/x"), ("data", 3)])
def test_compatible_values_pass(name, value):
    assert chapter.compare_parameters(PARAMETERS, injected(**{name: value})) == {name: value}


def test_non_literal_default_is_not_type_checked():
    assert chapter.compare_parameters("steps = 10 * 2\n", injected(steps="many")) == {"steps": "many"}


def test_unparsable_cell_is_reported():
    with pytest.raises(ValueError, match="parameters cell is not valid Python"):
        chapter.compare_parameters("smoke = = 1", injected(smoke=True))


def _chapter(tmp_path):
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    parameters = nbformat.v4.new_code_cell("smoke = False\nseed = 0")
    parameters.metadata["tags"] = ["parameters"]
    nb.cells = [parameters,
                nbformat.v4.new_code_cell("from gofau.lab.chapter import check_parameters\ncheck_parameters()"),
                nbformat.v4.new_code_cell("print('seed', seed)")]
    path = tmp_path / "chapter.ipynb"
    nbformat.write(nb, path)
    return path


def test_papermill_run_with_known_parameter(tmp_path):
    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(_chapter(tmp_path), out, parameters={"seed": 3}, progress_bar=False)
    assert nbformat.read(out, 4).cells[-1].outputs[0]["text"] == "seed 3\n"


def test_papermill_run_with_mistyped_parameter_fails_naming_it(tmp_path):
    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(_chapter(tmp_path), tmp_path / "out.ipynb", parameters={"semed": 3},
                                   progress_bar=False)
    assert err.value.ename == "ValueError"
    assert err.value.evalue == "unknown notebook parameter(s) semed; accepted: seed, smoke"


def test_check_parameters_outside_a_kernel_is_an_error():
    with pytest.raises(RuntimeError, match="inside a Jupyter kernel"):
        chapter.check_parameters()


def test_repo_root_holds_the_project():
    root = chapter.repo_root()
    assert (root / "pyproject.toml").is_file() and (root / "gofau" / "lab" / "chapter.py").is_file()


def test_data_dir_from_environment(tmp_path, monkeypatch):
    (tmp_path / "cifar10-jpeg.tar.gz").write_bytes(b"")
    monkeypatch.setenv("GOFAU_DATA", str(tmp_path))
    assert chapter.data_dir() == tmp_path
    assert chapter.data_dir("cifar10-jpeg.tar.gz") == tmp_path / "cifar10-jpeg.tar.gz"


def test_missing_data_says_where_it_looked_and_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("GOFAU_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError) as err:
        chapter.data_dir("cifar10-jpeg.tar.gz")
    message = str(err.value)
    assert str(tmp_path / "nowhere" / "cifar10-jpeg.tar.gz") in message
    assert "from GOFAU_DATA" in message and "set GOFAU_DATA=" in message


def test_data_dir_default_is_shared_data_beside_the_repo(monkeypatch):
    monkeypatch.delenv("GOFAU_DATA", raising=False)
    expected = chapter.repo_root().parent / "shared" / "data"
    if expected.exists():
        assert chapter.data_dir() == expected
    else:
        with pytest.raises(FileNotFoundError, match="GOFAU_DATA is unset"):
            chapter.data_dir()


def test_environment_names_python_torch_and_device():
    import platform

    import torch

    env = chapter.environment()
    assert env["Python"] == platform.python_version()
    assert env["torch"] == torch.__version__
    if torch.cuda.is_available():
        assert env["device"] == torch.cuda.get_device_name(0)
    else:
        assert env["device"].startswith("CPU: ") and env["device"].endswith(f"({os.cpu_count()} cores)")


def test_git_commit_is_head_and_flags_changed_tracked_files():
    from gofau.lab import provenance

    commit = provenance.git_commit()
    assert commit is not None and commit.split("+")[0] == subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=chapter.repo_root(), capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=chapter.repo_root(),
                           capture_output=True, text=True).stdout.strip()
    assert commit.endswith("+dirty") == bool(dirty)
