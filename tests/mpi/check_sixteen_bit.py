"""16-bit parameters sharded: in-dtype state, float32 state, float32 master weights.

Usage: mpiexec -n N python tests/mpi/check_sixteen_bit.py

Each rank's gradients are multiples of 2^-8 and small, so their sum over ranks
(in float32, as the sharded step sums 16-bit gradients) is exact whatever the
order: the sharded run must equal one process stepping on the mean gradient
bit for bit, and its state_dict the one process's.
"""

import ml_dtypes
import numpy as np
from _harness import run

from fastopt import optim
from fastopt.distributed import ShardedOptimizer, flatten_params

BF16 = np.dtype(ml_dtypes.bfloat16)
SHAPES = [(7, 5), (13,), (3,), (2, 9)]
STEPS = 4
OPTIONS = [
    dict(),
    dict(state_dtype="float32"),
    dict(master_weights=True),
    # each element's random bits are those of its index in the whole param, whichever rank owns it
    dict(stochastic_rounding=True, seed=3),
]


def start(dtype):
    rng = np.random.default_rng(0)
    return [rng.standard_normal(s).astype(np.float32).astype(dtype) for s in SHAPES]


def rank_grads(step, rank, dtype):
    rng = np.random.default_rng([step, rank])
    return [(np.round(rng.standard_normal(s) * 64) / 256).astype(np.float32).astype(dtype) for s in SHAPES]


def mean_grads(step, world, dtype):
    total = [np.zeros(s, np.float32) for s in SHAPES]
    for rank in range(world):
        for t, g in zip(total, rank_grads(step, rank, dtype)):
            t += g.astype(np.float32)
    return [(t / np.float32(world)) for t in total]


def bits(a):
    return a.view(np.uint16) if a.dtype.itemsize == 2 else a.view(np.uint32)


def main(comm, args):
    for dtype in (BF16, np.dtype(np.float16)):
        for options in OPTIONS:
            _, views = flatten_params(start(dtype))
            groups = [{"params": views[:2]}, {"params": views[2:], "lr": 3e-3}]
            sharded = ShardedOptimizer(optim.AdamW(groups, lr=1e-2, num_threads=1, **options), comm)
            alone = optim.AdamW([{"params": start(dtype)[:2]}, {"params": start(dtype)[2:], "lr": 3e-3}],
                                lr=1e-2, num_threads=1, **options)
            for t in range(1, STEPS + 1):
                sharded.step(rank_grads(t, comm.rank, dtype))
                alone.step(mean_grads(t, comm.size, dtype))
            for a, b in zip(sharded.params, alone.params):
                assert a.dtype == dtype and np.array_equal(bits(a), bits(b)), (dtype, options)
            saved, expected = sharded.state_dict(), alone.state_dict()
            assert set(saved) == set(expected)
            for key, value in expected.items():
                if isinstance(value, np.ndarray):
                    assert saved[key].dtype == value.dtype and np.array_equal(bits(saved[key]), bits(value)), key
    if comm.rank == 0:
        print(f"16-bit parameters: {len(OPTIONS)} modes, 2 dtypes on {comm.size} ranks", flush=True)


if __name__ == "__main__":
    run(main)
