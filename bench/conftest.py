"""pytest-benchmark suite of every step, Adafactor's too: ``python -m pytest bench/``.

Options:
  --bench-full       add the big workloads (1e7, gpt2-small); minutes to an hour
  --bench-threads N  thread count of fastopt, torch and numba (default: fastopt's default)
  --bench-rounds N   timed rounds per benchmark (default 7)

Compare runs with pytest-benchmark's own options, e.g.
``--benchmark-autosave`` then ``--benchmark-compare``; groups are
``{optimizer}-{dtype}-{workload}-{threads}t``, one row per implementation.
"""

import numpy as np
import pytest

import fastopt
from fastopt.bench import factored, peers, rules, workloads

QUICK_WORKLOADS = ("1e5", "mnist-mlp")
FULL_WORKLOADS = QUICK_WORKLOADS + ("1e7", "gpt2-small")


def pytest_addoption(parser):
    group = parser.getgroup("fastopt bench")
    group.addoption("--bench-full", action="store_true",
                    help="also benchmark the big workloads (1e7, gpt2-small)")
    group.addoption("--bench-threads", type=int, default=None,
                    help="thread count (default: fastopt.get_num_threads())")
    group.addoption("--bench-rounds", type=int, default=7, help="timed rounds per benchmark")


def pytest_generate_tests(metafunc):
    names = FULL_WORKLOADS if metafunc.config.getoption("bench_full") else QUICK_WORKLOADS
    if "adafactor_case" in metafunc.fixturenames:
        cases = [(workload, dtype, implementation) for workload in names for dtype in factored.DTYPES
                 for implementation in factored.IMPLEMENTATIONS]
        metafunc.parametrize("adafactor_case", cases, ids=["adafactor-" + "-".join(c) for c in cases])
    if "case" not in metafunc.fixturenames:
        return
    # workload outermost, so one workload's buffers serve all its tests in a row
    cases = [(workload, dtype, rule, implementation)
             for workload in names
             for dtype in workloads.DTYPES
             for rule in rules.RULES
             for implementation in peers.IMPLEMENTATIONS]
    metafunc.parametrize("case", cases, ids=["-".join(c) for c in cases])


@pytest.fixture(scope="session")
def threads(request):
    # read before torch or numba can change the OpenMP default
    return request.config.getoption("bench_threads") or fastopt.get_num_threads()


@pytest.fixture(scope="session")
def rounds(request):
    return request.config.getoption("bench_rounds")


@pytest.fixture(scope="session")
def buffers():
    """``get(workload, dtype)`` gives params and grads, params reset to their
    first values (thousands of steps of one rule can drive them far, e.g. to
    1e30, where the next step no longer changes them).  Only the latest
    workload and dtype are kept: gpt2-small in float64 is 3 GB of them."""
    cache = {}

    def get(workload, dtype):
        if (workload, dtype) not in cache:
            cache.clear()
            params, grads = workloads.make_buffers(workloads.workload_shapes(workload), dtype)
            cache[(workload, dtype)] = (params, grads, [p.copy() for p in params])
        params, grads, first = cache[(workload, dtype)]
        for p, p0 in zip(params, first):
            np.copyto(p, p0)
        return params, grads
    return get
