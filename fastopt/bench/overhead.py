"""Per-call overhead, import time and the first call of a process, all Adam float32 with fastopt.

The import and first-call figures come from fresh child interpreters that
import this very fastopt (an in-place build or an install).
"""

import os
import statistics
import subprocess
import sys

import numpy as np

import fastopt
from fastopt.bench.peers import BENCH_STEP, make_step
from fastopt.bench.rules import RULES
from fastopt.bench.timing import measure
from fastopt.bench.workloads import make_buffers

OVERHEAD_TENSORS = 148      # as many as gpt2-small has
FIRST_CALL_ELEMENTS = 100_000


def _subprocess_env():
    """Run child interpreters on this very fastopt (an in-place build or an install)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastopt.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else root
    return root, env


_IMPORT_PROBE = """
import time
t0 = time.perf_counter()
import numpy
t1 = time.perf_counter()
import fastopt
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""

_FIRST_CALL_PROBE = """
import statistics, time
import numpy as np
import fastopt
n = {n}
rng = np.random.default_rng(0)
p, g = rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)
m, v = np.full(n, 0.0, np.float32), np.full(n, 0.0, np.float32)   # pages touched now
times = []
for step in range(1, 102):
    t0 = time.perf_counter()
    fastopt.adam_step(p, g, m, v, step=step, num_threads={threads})
    times.append(time.perf_counter() - t0)
print(times[0], statistics.median(times[1:]))
"""


def _probe(code, runs):
    root, env = _subprocess_env()
    results = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True,
                             text=True, check=True).stdout
        results.append([float(x) for x in out.split()])
    return [statistics.median(column) for column in zip(*results)]


def measure_overhead(repeat, threads, progress=None, probe_runs=5):
    """Per-call figures, all Adam float32 with fastopt.

    - ``adam16_us``: one call on a 16-element array;
    - ``per_tensor_us``: the extra time per tensor of a list call, from lists of
      OVERHEAD_TENSORS and of 1 tensor of 16 elements, timed side by side;
    - ``import_ms``: ``import fastopt`` in a fresh interpreter with numpy already
      imported (``import_numpy_ms``: numpy's own import, for scale);
    - ``first_call_ratio``: the first call of a fresh process over the median
      of the next 100, on FIRST_CALL_ELEMENTS elements at ``threads`` threads
      (``first_call_ratio_1thread``: the same on one thread, where no thread
      pool has to start).
    """
    rule = RULES["adam"]
    single = make_buffers([(16,)], "float32")
    many = make_buffers([(16,)] * OVERHEAD_TENSORS, "float32")
    one = make_buffers([(16,)], "float32")
    if progress:
        progress.show("overhead: 16-element Adam calls")
    states = {name: np.zeros(16, np.float32) for name in rule.states}
    hyper = dict(rule.hyper, step=BENCH_STEP, num_threads=threads)
    p, g = single[0][0], single[1][0]
    steps = {
        "array": lambda: fastopt.adam_step(p, g, *states.values(), **hyper),
        "list-1": make_step("fastopt", rule, "float32", *one, threads),
        f"list-{OVERHEAD_TENSORS}": make_step("fastopt", rule, "float32", *many, threads),
    }
    medians = {k: statistics.median(v) for k, v in measure(steps, repeat).items()}
    per_tensor = (medians[f"list-{OVERHEAD_TENSORS}"] - medians["list-1"]) / (OVERHEAD_TENSORS - 1)
    if progress:
        progress.show("overhead: import fastopt, first call (fresh interpreters)")
    import_numpy, import_fastopt = _probe(_IMPORT_PROBE, probe_runs)
    first, later = _probe(_FIRST_CALL_PROBE.format(n=FIRST_CALL_ELEMENTS, threads=threads), probe_runs)
    first_1, later_1 = _probe(_FIRST_CALL_PROBE.format(n=FIRST_CALL_ELEMENTS, threads=1), probe_runs)
    if progress:
        progress.advance()
    return {
        "adam16_us": medians["array"] * 1e6,
        "adam16_list1_us": medians["list-1"] * 1e6,
        f"adam16_list{OVERHEAD_TENSORS}_us": medians[f"list-{OVERHEAD_TENSORS}"] * 1e6,
        "per_tensor_us": per_tensor * 1e6,
        "import_ms": import_fastopt * 1e3,
        "import_numpy_ms": import_numpy * 1e3,
        "first_call_us": first * 1e6,
        "later_call_us": later * 1e6,
        "first_call_ratio": first / later,
        "first_call_threads": threads,
        "first_call_1thread_us": first_1 * 1e6,
        "later_call_1thread_us": later_1 * 1e6,
        "first_call_ratio_1thread": first_1 / later_1,
    }

