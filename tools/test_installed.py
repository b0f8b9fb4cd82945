"""Run fastopt's test suite against the installed fastopt, from outside the source tree.

    python tools/test_installed.py [pytest arguments]

Copies tests/ (with pyproject.toml, for pytest's settings, and the README,
docs/ and bench/ scripts that tests run) into a temporary directory, checks that ``import fastopt`` there finds the copy installed in
this Python's environment and not the source tree, prints show_config(), and
runs pytest on the copied tests.  Used by cibuildwheel's test-command and by
tools/build_and_test_wheel.py.
"""

import os
import shutil
import subprocess
import sys
import tempfile

SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _inside(path, directory):
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    try:
        return os.path.commonpath([path, directory]) == directory
    except ValueError:  # Windows: different drives
        return False


def main(pytest_args):
    # nothing may point the child back at the source tree
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with tempfile.TemporaryDirectory(prefix="fastopt-installed-") as tmp:
        skip = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache", ".benchmarks")
        for folder in ("tests", "bench", "docs"):
            shutil.copytree(os.path.join(SOURCE_ROOT, folder), os.path.join(tmp, folder), ignore=skip)
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(os.path.join(SOURCE_ROOT, name), tmp)

        code = "import fastopt; print(fastopt.__file__); fastopt.show_config()"
        shown = subprocess.run([sys.executable, "-c", code], cwd=tmp, env=env,
                               capture_output=True, text=True)
        if shown.returncode != 0:
            sys.exit(f"cannot import the installed fastopt:\n{shown.stderr}")
        location, config = shown.stdout.split("\n", 1)
        if _inside(location, SOURCE_ROOT) or not _inside(location, sys.prefix):
            sys.exit(f"fastopt was imported from {location}, not from this environment "
                     f"({sys.prefix}): the tests would not test an installed fastopt")
        print(f"testing the fastopt installed at {os.path.dirname(location)}\n{config}", flush=True)

        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "tests", *pytest_args]
        return subprocess.run(command, cwd=tmp, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
