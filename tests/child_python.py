"""Run code in a child Python that imports the same fastopt as the tests do.

The tests run against the source tree or against an installed wheel; a child
process must see the same copy, so the directory holding the imported
``fastopt`` goes first on its PYTHONPATH (for an installed wheel that is
site-packages, already on the path: no change).
"""

import os
import subprocess
import sys

import fastopt

IMPORT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastopt.__file__)))


def child_env(**variables):
    env = dict(os.environ, **variables)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (IMPORT_ROOT, env.get("PYTHONPATH")) if p)
    return env


def run_python(args, cwd=None, check=True, timeout=600, **variables):
    """``python *args`` with `variables` set; with `check`, a failure fails the test, with the child's output."""
    result = subprocess.run([sys.executable, *args], env=child_env(**variables), cwd=cwd,
                            capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"python {' '.join(args)} exited {result.returncode}\n"
                             f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
    return result
