"""Who decides how many threads a step uses, seen by a real parallel loop.

``_core._openmp_probe(n)`` runs an n-iteration loop on the threads a step
would use (static schedule) and returns the OpenMP thread ids that ran it, so
these tests watch the threads themselves, not only ``get_num_threads()``.
Order of precedence: ``num_threads=`` of a call, then ``set_num_threads``,
then the OpenMP default, which ``OMP_NUM_THREADS`` and
``threadpoolctl.threadpool_limits`` set.
"""

import io
import json
import os
import re
import sys

import numpy as np
import pytest

import fastopt
from fastopt import _core
from child_python import run_python

try:
    import threadpoolctl
except ImportError:
    threadpoolctl = None

OPENMP = _core.build_info()["openmp"]
needs_openmp = pytest.mark.skipif(not OPENMP, reason="serial build: fastopt has no OpenMP")
needs_threadpoolctl = pytest.mark.skipif(threadpoolctl is None, reason="threadpoolctl is not installed")
PROBE_ITERATIONS = 4096


def probe():
    return _core._openmp_probe(PROBE_ITERATIONS)


@pytest.fixture(autouse=True)
def default_thread_count():
    fastopt.set_num_threads(None)
    yield
    fastopt.set_num_threads(None)


@needs_openmp
@pytest.mark.parametrize("n", [1, 2, 3])
def test_set_num_threads_sets_the_threads_that_run(n):
    fastopt.set_num_threads(n)
    assert fastopt.get_num_threads() == n
    assert probe() == list(range(n))


def test_set_num_threads_rejects_bad_counts():
    for bad, error in [(0, ValueError), (-1, ValueError), (True, TypeError), (1.5, TypeError)]:
        with pytest.raises(error):
            fastopt.set_num_threads(bad)


@needs_openmp
@needs_threadpoolctl
def test_threadpoolctl_controls_the_runtime_fastopt_uses():
    controlled = [info["filepath"] for info in threadpoolctl.threadpool_info()
                  if info["user_api"] == "openmp"]
    assert any(os.path.samefile(path, _core.openmp_library()) for path in controlled), controlled


@needs_openmp
@needs_threadpoolctl
def test_threadpool_limits_limits_fastopt():
    default = fastopt.get_num_threads()
    # 2 first: the limit must change something even where the default is 1
    with threadpoolctl.threadpool_limits(limits=2, user_api="openmp"):
        assert fastopt.get_num_threads() == 2
        assert probe() == [0, 1]
    with threadpoolctl.threadpool_limits(limits=1):
        assert fastopt.get_num_threads() == 1
        assert probe() == [0]
    assert fastopt.get_num_threads() == default


@needs_openmp
@needs_threadpoolctl
def test_set_num_threads_wins_over_threadpool_limits():
    with threadpoolctl.threadpool_limits(limits=1):
        fastopt.set_num_threads(2)
        assert probe() == [0, 1]
        fastopt.set_num_threads(None)
        assert probe() == [0]


@needs_openmp
@pytest.mark.parametrize("omp_num_threads", [1, 2, 3])
def test_omp_num_threads_sets_the_default(omp_num_threads):
    code = ("import json, fastopt; from fastopt import _core; "
            f"print(json.dumps([fastopt.__file__, fastopt.get_num_threads(), _core._openmp_probe({PROBE_ITERATIONS})]))")
    out = run_python(["-c", code], OMP_NUM_THREADS=str(omp_num_threads)).stdout
    path, default, ids = json.loads(out.splitlines()[-1])
    assert os.path.samefile(path, fastopt.__file__)
    assert default == omp_num_threads
    assert ids == list(range(omp_num_threads))


def _show_config_line(key):
    out = io.StringIO()
    fastopt.show_config(file=out)
    lines = [line for line in out.getvalue().splitlines() if line.split(":")[0].strip() == key]
    assert len(lines) == 1, out.getvalue()
    return lines[0].split(":", 1)[1].strip()


# Each compiler's OpenMP runtime, by the start of its file name.
RUNTIME_OF_COMPILER = {"gcc": "libgomp", "clang": ("libomp", "libgomp", "libiomp"), "msvc": "vcomp"}


@needs_openmp
@needs_threadpoolctl
def test_show_config_names_the_openmp_library_loaded():
    path = _core.openmp_library()
    assert os.path.isfile(path), path
    line = _show_config_line("openmp_runtime")
    # the runtime fastopt is bound to comes first: "<name> [version] (<file>)"
    first = re.match(r"(\S+)[^(]*\(([^)]+)\)", line)
    assert first, line
    name, listed_path = first.groups()
    assert os.path.samefile(listed_path, path)
    assert os.path.basename(path).lower().startswith(name.lower())
    compiler = _core.build_info()["compiler"].split()[0]
    if compiler == "gcc" and sys.platform.startswith("linux"):
        assert name == "libgomp"
    elif compiler in RUNTIME_OF_COMPILER:
        assert name.lower().startswith(RUNTIME_OF_COMPILER[compiler])


def test_show_config_says_when_the_build_is_serial():
    if OPENMP:
        assert _show_config_line("openmp") == "enabled"
    else:
        assert "serial" in _show_config_line("openmp_runtime")
        assert _core.openmp_library() == ""


FORK_CHILD = """
import os, numpy as np, fastopt
from fastopt import reference
rng = np.random.default_rng(0)
p, g, m, v = (rng.standard_normal(2**20) for _ in range(4))
v = np.abs(v)
fastopt.adam_step(p, g, m, v, step=1, num_threads=2)   # the parent's thread pool is in use
expected = [a.copy() for a in (p, m, v)]
reference.adam_step(*expected[:1], g, *expected[1:], step=2)
pid = os.fork()
if pid == 0:
    fastopt.adam_step(p, g, m, v, step=2, num_threads=2)   # would hang inside a parallel region
    norm = fastopt.clip_grad_norm([g.copy()], 1e300, num_threads=2)
    ok = all(np.array_equal(a, b) for a, b in zip((p, m, v), expected))
    os._exit(0 if ok and fastopt.get_num_threads() == 1 and norm > 0 else 3)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
assert fastopt.get_num_threads() >= 1
print("ok")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")
def test_a_forked_child_steps_on_one_thread_instead_of_hanging():
    """libgomp's threads do not survive fork(): the child must not enter a parallel region."""
    result = run_python(["-c", FORK_CHILD], timeout=60)
    assert result.stdout.strip() == "ok"


FORK_BEFORE_ANY_STEP = """
import os, fastopt
fastopt.set_num_threads(2)
pid = os.fork()
if pid == 0:
    os._exit(0 if fastopt.get_num_threads() == 2 and fastopt._core._openmp_probe(100) == [0, 1] else 3)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
print("ok")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")
@pytest.mark.skipif(not _core.build_info()["openmp"], reason="serial build")
def test_a_child_forked_before_any_parallel_step_keeps_its_threads():
    result = run_python(["-c", FORK_BEFORE_ANY_STEP], timeout=60)
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize("user_setting, expected", [
    ({}, "GOMP_SPINCOUNT=50000"),                          # fastopt's short spin
    ({"GOMP_SPINCOUNT": "5"}, "GOMP_SPINCOUNT=5"),         # the user's own wins
    ({"OMP_WAIT_POLICY": "active"}, "OMP_WAIT_POLICY=active"),
])
def test_idle_openmp_threads_spin_briefly_unless_the_user_says_otherwise(user_setting, expected):
    import subprocess

    from child_python import child_env

    env = child_env()
    for key in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY"):
        env.pop(key, None)
    env.update(user_setting)
    code = ("import os, fastopt; from fastopt._config import config; "
            "print(os.environ.get('GOMP_SPINCOUNT'), '|', config()['openmp_idle_wait'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    spin, idle_wait = (part.strip() for part in out.split("|"))
    assert idle_wait.startswith(expected)
    assert spin == {"GOMP_SPINCOUNT=50000": "50000", "GOMP_SPINCOUNT=5": "5"}.get(expected, "None")


@needs_openmp
def test_after_a_region_a_thread_sat_out_steps_run_on_one_thread_for_a_doubling_stretch():
    """A thread the OS left waiting makes the next calls serial, 4, 8, 16 ... of them; one region
    in which every thread works ends it.  Results are the same bits either way."""
    from fastopt import _core
    p0 = np.random.default_rng(0).standard_normal(200_000)
    g = np.ones_like(p0)
    expected = p0.copy()
    fastopt.sgd_step(expected, g, lr=0.1, num_threads=1)
    _core._record_region(True)
    assert _core._contention() == (0, 0)
    _core._record_region(False)
    assert _core._contention() == (4, 4)
    for left in (3, 2, 1, 0):
        p = p0.copy()
        fastopt.sgd_step(p, g, lr=0.1, num_threads=2)
        assert np.array_equal(p, expected)
        assert _core._contention() == (left, 4)
    _core._record_region(False)
    assert _core._contention() == (8, 8)
    _core._record_region(True)
    assert _core._contention() == (0, 0)


@needs_openmp
def test_adafactor_steps_take_the_serial_stretch_and_small_ones_run_on_one_thread():
    """Adafactor's passes (one region each) count as one call of the stretch, as a step's plan."""
    from fastopt import _core
    from fastopt.bench.factored import new_state
    rng = np.random.default_rng(1)

    def step(shape, threads):
        p, g = rng.standard_normal(shape), rng.standard_normal(shape)
        state = new_state([p])
        twin = [b.copy() for b in (p, state["row_var"][0], state["col_var"][0])]
        fastopt.adafactor_step(p, g, state["row_var"][0], state["col_var"][0], None, step=2, num_threads=threads)
        fastopt.adafactor_step(twin[0], g, twin[1], twin[2], None, step=2, num_threads=1)
        assert np.array_equal(p, twin[0])

    _core._record_region(True)
    _core._record_region(False)
    assert _core._contention() == (4, 4)
    step((400, 300), 2)
    assert _core._contention() == (3, 4)
    step((40, 30), 2)   # 1200 elements: one thread whatever the stretch, which it leaves as it is
    assert _core._contention() == (3, 4)
    _core._record_region(True)
