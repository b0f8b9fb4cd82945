"""Shared by the worker scripts that tests/test_distributed.py runs under mpiexec.

A worker's body runs inside :func:`run`: an exception on any rank prints its
traceback and aborts the whole communicator, so the other ranks never wait in
a collective for a rank that is gone.
"""

import sys
import traceback

import numpy as np
from mpi4py import MPI

from fastopt import optim
from fastopt.distributed import flatten_params

# Micro-batches per global batch: each of 1, 2 or 4 ranks averages its share.
MICRO_BATCHES = 4


def run(main):
    comm = MPI.COMM_WORLD
    try:
        main(comm, sys.argv[1:])
    except BaseException:
        sys.stdout.flush()
        traceback.print_exc()
        sys.stderr.flush()
        comm.Abort(1)
    comm.Barrier()
    if comm.rank == 0:
        print("worker done", flush=True)


# The test model: groups of both dtypes, sizes that do not divide evenly by the
# number of ranks, so shard bounds fall inside parameters and across groups.
GROUP_SHAPES = [
    ("float32", [(7, 5), (13,), (1,)]),
    ("float64", [(4, 3), (9,)]),
    ("float32", [(6,), (2, 5)]),
]


def initial_values(seed=0, group_shapes=GROUP_SHAPES):
    """Per group, the initial parameter arrays (fresh, not flattened)."""
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(shape).astype(dtype) for shape in shapes] for dtype, shapes in group_shapes]


def flat_groups(values):
    """The groups' parameters as views of one flat buffer per dtype, in group order."""
    dtypes = list(dict.fromkeys(group[0].dtype for group in values))
    views_by_dtype = {}
    for dtype in dtypes:
        _, views = flatten_params([p for group in values for p in group if p.dtype == dtype])
        views_by_dtype[dtype] = iter(views)
    return [[next(views_by_dtype[group[0].dtype]) for _ in group] for group in values]


def copies(values):
    return [[p.copy() for p in group] for group in values]


def make_optimizer(cls, groups, group_options, **options):
    """cls over `groups` (lists of arrays), group g overriding group_options[g]."""
    specs = [dict(group_options[g] if g < len(group_options) else {}, params=params)
             for g, params in enumerate(groups)]
    return cls(specs, num_threads=1, **options)


def rank_grads(params, step, rank, world_size, seed=1):
    """The gradients rank `rank` of `world_size` computes at `step`: the mean of its micro-batches.

    Micro-batch k's gradient depends on the parameters (c_k * p + noise), so a
    wrong update shows up in every later step.
    """
    per_rank = MICRO_BATCHES // world_size
    grads = []
    for index, p in enumerate(params):
        total = np.zeros_like(p)
        for k in range(rank * per_rank, (rank + 1) * per_rank):
            rng = np.random.default_rng([seed, step, k, index])
            total += (0.5 + 0.25 * k) * p + rng.standard_normal(p.shape).astype(p.dtype)
        grads.append(total / per_rank)
    return grads


def global_grads(params, step, world_size, seed=1):
    """The mean over ranks of rank_grads: what one process training on the global batch uses."""
    per_rank = [rank_grads(params, step, r, world_size, seed) for r in range(world_size)]
    return [sum(gs[i] for gs in per_rank) / world_size for i in range(len(params))]


def flat(groups):
    return [p for group in groups for p in group]
