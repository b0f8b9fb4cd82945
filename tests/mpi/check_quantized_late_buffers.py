"""8-bit state sharded: a state buffer a hyperparameter turns on after the first steps.

Usage: mpiexec -n N python tests/mpi/check_quantized_late_buffers.py

Adam's max_exp_avg_sq (amsgrad), RMSprop's momentum buffer and grad_avg
(momentum, centered) and SGD's momentum buffer are made at the step that first
uses them.  A tensor of at least fastopt.optim.QUANTIZE_MIN_SIZE elements keeps
8-bit state even where a rank owns fewer elements of it than that: the sharded
run must equal one process bit for bit, and its state_dict the one process's.
"""

import numpy as np
from _harness import run

from fastopt import optim
from fastopt.distributed import ShardedOptimizer, flatten_params

SHAPES = [(5000,), (13,), (4097,), (9001,)]
CASES = [("Adam", dict(lr=1e-2), dict(amsgrad=True), 256),
         ("RMSprop", dict(lr=1e-3), dict(momentum=0.5, centered=True), 128),
         ("SGD", dict(lr=1e-2), dict(momentum=0.9), 64)]


def start():
    rng = np.random.default_rng(0)
    return [rng.standard_normal(s).astype(np.float32) for s in SHAPES]


def rank_grads(step, rank):
    rng = np.random.default_rng([step, rank])
    return [(np.round(rng.standard_normal(s) * 64) / 256).astype(np.float32) for s in SHAPES]


def mean_grads(step, world):
    total = [np.zeros(s, np.float32) for s in SHAPES]
    for rank in range(world):
        for t, g in zip(total, rank_grads(step, rank)):
            t += g
    return [t / np.float32(world) for t in total]


def same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a.view(np.uint8), b.view(np.uint8))


def main(comm, args):
    for name, hyper, later, block in CASES:
        make = getattr(optim, name)
        _, views = flatten_params(start())
        sharded = ShardedOptimizer(make(views, num_threads=1, state_dtype="8bit", block_size=block, **hyper), comm)
        alone = make(start(), num_threads=1, state_dtype="8bit", block_size=block, **hyper)
        for t in range(1, 5):
            if t == 3:  # the new buffer is made now, on every rank and in the one process
                sharded.param_groups[0].update(later)
                alone.param_groups[0].update(later)
            sharded.step(rank_grads(t, comm.rank))
            alone.step(mean_grads(t, comm.size))
            for a, b in zip(sharded.params, alone.params):
                assert same(a, b), (name, t)
        saved, expected = sharded.state_dict(), alone.state_dict()
        assert set(saved) == set(expected), (name, set(saved) ^ set(expected))
        for key, value in expected.items():
            if isinstance(value, np.ndarray):
                assert same(saved[key], value), (name, key)
            else:
                assert saved[key] == value, (name, key)
    if comm.rank == 0:
        print(f"8-bit state turned on late: {len(CASES)} cases on {comm.size} ranks", flush=True)


if __name__ == "__main__":
    run(main)
