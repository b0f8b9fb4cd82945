"""What a distribution of fastopt must carry: one version, its stubs, its license
and, in a repaired wheel, its own OpenMP runtime.

Run from the source tree, the checks look at the tree's declarations; run
against an installed wheel (tools/test_installed.py), at the installed files.
"""

import importlib.metadata
import os
import re
import sys

import pytest

import fastopt
from child_python import IMPORT_ROOT, run_python

PACKAGE_DIR = os.path.dirname(os.path.abspath(fastopt.__file__))
PYPROJECT = os.path.join(IMPORT_ROOT, "pyproject.toml")


def installed_distribution():
    """The installed distribution that holds the imported fastopt, or None (a source tree)."""
    try:
        dist = importlib.metadata.distribution("fastopt")
    except importlib.metadata.PackageNotFoundError:
        return None
    init = dist.locate_file("fastopt/__init__.py")
    if not (os.path.exists(init) and os.path.samefile(init, fastopt.__file__)):
        return None  # metadata of another copy
    return dist


def test_version_is_pep440():
    assert re.fullmatch(r"\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?", fastopt.__version__)


def test_version_has_one_source():
    dist = installed_distribution()
    if dist is not None:
        assert dist.version == fastopt.__version__
        return
    if not os.path.exists(PYPROJECT):
        pytest.skip("neither an installed distribution nor a source tree")
    tomllib = pytest.importorskip("tomllib")
    with open(PYPROJECT, "rb") as f:
        project = tomllib.load(f)
    assert "version" in project["project"]["dynamic"] and "version" not in project["project"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "fastopt.__version__"}


def test_license_is_shipped():
    dist = installed_distribution()
    if dist is None:
        assert os.path.exists(os.path.join(IMPORT_ROOT, "LICENSE"))
        return
    assert dist.metadata["License-Expression"] == "BSD-3-Clause"
    assert any(os.path.basename(str(f)) == "LICENSE" for f in dist.files)


@pytest.mark.parametrize("name", ["_core.pyi", "py.typed", "reference.pyi", "steps.pyi"])
def test_type_information_is_shipped(name):
    assert os.path.isfile(os.path.join(PACKAGE_DIR, name))


def vendored_library_dirs():
    """Where auditwheel/delvewheel (beside the package) and delocate (inside it) put libraries."""
    candidates = [os.path.join(IMPORT_ROOT, "fastopt.libs"), os.path.join(PACKAGE_DIR, ".dylibs")]
    return [d for d in candidates if os.path.isdir(d)]


def test_repaired_wheel_uses_its_own_openmp_runtime():
    dirs = vendored_library_dirs()
    if not dirs:
        pytest.skip("not a repaired wheel: no vendored libraries beside fastopt")
    # a fresh process, so no other package's OpenMP runtime is loaded first
    code = "from fastopt import _core; print(_core.openmp_library())"
    path = run_python(["-c", code]).stdout.strip()
    assert path, "fastopt reports no OpenMP runtime"
    real = os.path.realpath(path)
    assert any(real.startswith(os.path.realpath(d) + os.sep) for d in dirs), (path, dirs)
    if sys.platform.startswith("linux"):
        assert os.path.basename(real).startswith("libgomp")
