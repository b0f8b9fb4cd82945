"""The type stubs: they match the compiled functions, accept the README's
examples under mypy --strict, and reject wrong calls.  Skipped without mypy."""

import os
import re

import pytest

import fastopt
import optional_packages
from child_python import run_python
from fastopt._stubs import STUBS

optional_packages.importorskip("mypy")

TYPING_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "typing")
CONFIG = os.path.join(TYPING_DIR, "mypy.ini")


def _mypy(tmp_path, *args, check=True):
    # From an empty directory, so fastopt is found where the tests import it from.
    return run_python(["-m", "mypy", "--config-file", CONFIG, "--cache-dir", str(tmp_path / "cache"),
                       "--no-error-summary", *args], cwd=tmp_path, check=check)


def test_stubs_match_the_compiled_signatures(tmp_path):
    """stubtest compares each stub with the runtime object: names, parameter
    kinds, defaults; and reports any public function the stub lacks.  The
    reference twins must have the same signatures."""
    run_python(["-m", "mypy.stubtest", "--mypy-config-file", CONFIG,
                "--allowlist", os.path.join(TYPING_DIR, "stubtest_allowlist.txt"),
                "fastopt._core", "fastopt.steps", "fastopt.reference", "fastopt.factored"], cwd=tmp_path)


@pytest.mark.parametrize("name", sorted(STUBS))
def test_shipped_stubs_are_the_registry_s(name):
    """The step functions' stubs are written from fastopt.rules: regenerate with python -m fastopt._stubs."""
    with open(os.path.join(os.path.dirname(fastopt.__file__), name)) as f:
        assert f.read() == STUBS[name](), f"fastopt/{name} is stale: run python -m fastopt._stubs"


def test_readme_examples_pass_mypy_strict(tmp_path):
    _mypy(tmp_path, "--strict", os.path.join(TYPING_DIR, "readme_examples.py"))


def test_wrong_calls_are_type_errors(tmp_path):
    path = os.path.join(TYPING_DIR, "type_errors.py")
    with open(path) as f:
        expected = {n for n, line in enumerate(f, 1) if "  # E:" in line}
    result = _mypy(tmp_path, path, check=False)
    reported = {int(m) for m in re.findall(r"type_errors\.py:(\d+): error", result.stdout)}
    assert expected and reported == expected, result.stdout + result.stderr


def test_readme_examples_run(tmp_path):
    output = run_python([os.path.join(TYPING_DIR, "readme_examples.py")], cwd=tmp_path).stdout
    assert "openmp_runtime" in output
