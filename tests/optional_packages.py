"""The optional packages some tests need, and the extra of pyproject.toml that brings each.

The README's test command installs every one of these extras, so the whole
suite runs.  Without one, the tests that need it are skipped, and the skip
reason says what to install: use ``importorskip(name)`` or ``reason(name)``
rather than a bare "not installed".  tests/test_docs.py checks this table
against pyproject.toml and the README.
"""

import importlib.util

import pytest

# module -> the extra that installs it (the distribution has the module's name)
EXTRA = {
    "torch": "peers",
    "numba": "peers",
    "jax": "peers",
    "optax": "peers",
    "schedulefree": "peers",
    "mpi4py": "mpi",
    "matplotlib": "demo",
    "mlxtend": "demo",
    "tqdm": "demo",
    "mypy": "test",
}


def reason(module, what=None):
    """The skip reason for a test that needs `module` (`what` names it otherwise, e.g. with its launcher)."""
    extra = EXTRA[module]
    return (f"{what or module} is not installed: pip install -e \".[{extra}]\" in a checkout "
            f"(the README's test command installs it)")


def installed(module):
    return importlib.util.find_spec(module) is not None


def importorskip(module):
    __tracebackhide__ = True  # the skip is reported at the test's line, not this one
    return pytest.importorskip(module, reason=reason(module))
