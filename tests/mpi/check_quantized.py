"""8-bit state sharded: shards end on quantization block boundaries.

Usage: mpiexec -n N python tests/mpi/check_quantized.py

The tensors mix sizes below and above fastopt.optim.QUANTIZE_MIN_SIZE, and
sizes that are not multiples of the block, so that the equal-chunk bounds fall
inside blocks and move.  Each rank's gradients are multiples of 2^-8 and small,
so their sum over ranks is exact whatever the order: the sharded run must equal
one process stepping on the mean gradient bit for bit, its state_dict the one
process's (codes and scales), and a state_dict saved sharded must resume in the
plain optimizer and go on bit for bit.

A state buffer a hyperparameter turns on after the first steps (Adam's
max_exp_avg_sq, RMSprop's momentum buffer and grad_avg, SGD's momentum buffer)
is made then, on pieces some ranks own fewer than QUANTIZE_MIN_SIZE elements of:
it must be 8-bit where the whole tensor's is, as in the one process.  These runs
sum the gradients with reduce_scatter="reduce".
"""

import ml_dtypes
import numpy as np
from _harness import run

from fastopt import QuantizedState, optim
from fastopt.distributed import ShardedOptimizer, flatten_params

SHAPES = [(70, 90), (13,), (5000,), (4096,), (3, 7), (9001,)]
STEPS = 3
BF16 = np.dtype(ml_dtypes.bfloat16)
CASES = [("Adam", dict(lr=1e-2), 256, np.float32), ("AdamW", dict(lr=1e-2, weight_decay=0.1), 64, np.float32),
         ("SGD", dict(lr=1e-2, momentum=0.9), 4096, np.float32),
         ("RMSprop", dict(lr=1e-3, momentum=0.5), 128, np.float32),
         # bfloat16 weights, float32 master weights, 8-bit state: the gradients are summed in float32
         ("Adam", dict(lr=1e-2, master_weights=True), 256, BF16)]
# (optimizer, hyperparameters, those set at step LATE_AT, block size)
LATE = [("Adam", dict(lr=1e-2), dict(amsgrad=True), 256),
        ("RMSprop", dict(lr=1e-3), dict(momentum=0.5, centered=True), 128),
        ("SGD", dict(lr=1e-2), dict(momentum=0.9), 64)]
LATE_AT = 3


def start(dtype):
    rng = np.random.default_rng(0)
    return [rng.standard_normal(s).astype(np.float32).astype(dtype) for s in SHAPES]


def rank_grads(step, rank, dtype=np.float32):
    rng = np.random.default_rng([step, rank])
    return [(np.round(rng.standard_normal(s) * 64) / 256).astype(np.float32).astype(dtype) for s in SHAPES]


def mean_grads(step, world, dtype=np.float32):
    total = [np.zeros(s, np.float32) for s in SHAPES]
    for rank in range(world):
        for t, g in zip(total, rank_grads(step, rank, dtype)):
            t += g.astype(np.float32)
    return [t / np.float32(world) for t in total]


def groups_of(params):
    return [{"params": params[:3]}, {"params": params[3:], "lr": 3e-3}]


def same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a.view(np.uint8), b.view(np.uint8))


def assert_same_state(saved, expected, name):
    assert set(saved) == set(expected), (name, set(saved) ^ set(expected))
    for key, value in expected.items():
        if isinstance(value, np.ndarray):
            assert same(saved[key], value), (name, key)
        else:
            assert saved[key] == value, (name, key)


def check_turned_on_late(comm):
    for name, hyper, later, block in LATE:
        make = getattr(optim, name)
        _, views = flatten_params(start(np.float32))
        # summed by one Reduce per owner (uneven counts), where the cases above take Reduce_scatter
        sharded = ShardedOptimizer(make(groups_of(views), num_threads=1, state_dtype="8bit", block_size=block,
                                        **hyper), comm, reduce_scatter="reduce")
        alone = make(groups_of(start(np.float32)), num_threads=1, state_dtype="8bit", block_size=block, **hyper)
        for t in range(1, LATE_AT + 2):
            if t == LATE_AT:  # the new buffer is made now, on every rank and in the one process
                for optimizer in (sharded, alone):
                    for group in optimizer.param_groups:
                        group.update(later)
            sharded.step(rank_grads(t, comm.rank))
            alone.step(mean_grads(t, comm.size))
            for a, b in zip(sharded.params, alone.params):
                assert same(a, b), (name, t)
        assert_same_state(sharded.state_dict(), alone.state_dict(), name)


def main(comm, args):
    for name, hyper, block, dtype in CASES:
        make = getattr(optim, name)
        _, views = flatten_params(start(dtype))
        sharded = ShardedOptimizer(make(groups_of(views), num_threads=1, state_dtype="8bit", block_size=block,
                                        **hyper), comm)
        alone = make(groups_of(start(dtype)), num_threads=1, state_dtype="8bit", block_size=block, **hyper)
        for t in range(1, STEPS + 1):
            sharded.step(rank_grads(t, comm.rank, dtype))
            alone.step(mean_grads(t, comm.size, dtype))
        for a, b in zip(sharded.params, alone.params):
            assert same(a, b), name
        saved, expected = sharded.state_dict(), alone.state_dict()
        assert_same_state(saved, expected, name)
        assert any(k.endswith(".codes") for k in saved), name
        rooted = sharded.state_dict(root=0)
        if comm.rank == 0:
            assert all(same(rooted[k], v) if isinstance(v, np.ndarray) else rooted[k] == v for k, v in saved.items())
        else:
            assert rooted is None
        # a sharded checkpoint resumes in the plain optimizer, and the other way round
        resumed = make(groups_of([p.copy() for p in sharded.params]), num_threads=1, state_dtype="8bit",
                       block_size=block, **hyper)
        resumed.load_state_dict(saved)
        assert any(isinstance(b, QuantizedState) for state in resumed.state for bs in state.values()
                   if isinstance(bs, list) for b in bs)
        _, views = flatten_params([p.copy() for p in alone.params])
        again = ShardedOptimizer(make(groups_of(views), num_threads=1, state_dtype="8bit", block_size=block,
                                      **hyper), comm)
        again.load_state_dict(expected)
        t = STEPS + 1
        resumed.step(mean_grads(t, comm.size, dtype))
        again.step(rank_grads(t, comm.rank, dtype))
        alone.step(mean_grads(t, comm.size, dtype))
        for a, b, c in zip(resumed.params, again.params, alone.params):
            assert same(a, c) and same(b, c), name
        assert sharded.state_nbytes() > 0 or comm.size > len(SHAPES)
    check_turned_on_late(comm)
    if comm.rank == 0:
        print(f"8-bit state: {len(CASES)} cases on {comm.size} ranks", flush=True)
        print(f"8-bit state turned on late: {len(LATE)} cases on {comm.size} ranks", flush=True)


if __name__ == "__main__":
    run(main)
