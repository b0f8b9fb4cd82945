"""Collectives over buffers longer than MAX_COUNT run in pieces, with the results of the one-call path.

Usage: mpiexec -n N python tests/mpi/check_counts.py

MAX_COUNT (a C int's maximum in real use) is lowered so that the piecewise paths
run on the test model's small buffers.  Every buffer collective is watched: under
a lowered limit none gets a buffer, count or displacement past it.

The gradients are multiples of 2**-10 small enough that every sum over ranks is
exact in float32, so any order of summation gives the same bits.  MPI does not
promise one order: Reduce per piece (what replaces Reduce_scatter_block and
Allreduce over a long buffer) may associate a sum over 3 or more ranks
differently from one call over the whole buffer.  With exact sums the piecewise
paths are compared bit for bit, on any number of ranks, with the one-call path
and with one process stepping the mean gradient.
"""

import collections
import contextlib

import numpy as np
from _harness import copies, flat, flat_groups, initial_values, make_optimizer, rank_grads, run
from check_parity import CASES

from fastopt import distributed
from fastopt.distributed import REDUCE_SCATTER_METHODS, ShardedOptimizer, allreduce_grads

STEPS, MIDDLE = 4, 2
# 2: the smallest the 2-number checks leave (pieces of 1 where a length is odd); 7: several uneven
# pieces per owner, cut inside parameters; 33: on 2 ranks the float32 chunk is exactly the limit,
# and the 21 float64 elements fit in one call
LIMITS = (distributed.MAX_COUNT, 33, 7, 2)
CASE_NAMES = ("adam", "adam_amsgrad", "sgd_nesterov", "adamw_cosine", "adam_tiny")


@contextlib.contextmanager
def max_count(limit):
    saved = distributed.MAX_COUNT
    distributed.MAX_COUNT = limit
    try:
        yield
    finally:
        distributed.MAX_COUNT = saved


def longest(spec):
    """The longest buffer, count or end of a displaced block in a buffer argument; 0 for any other."""
    if isinstance(spec, np.ndarray):
        return spec.size
    if not (isinstance(spec, (list, tuple)) and spec and isinstance(spec[0], np.ndarray)):
        return 0
    if len(spec) == 4:  # [buffer, counts, displacements, type]
        counts, displacements = spec[1], spec[2]
        return max([spec[0].size, *counts, *(d + c for c, d in zip(counts, displacements))])
    return spec[0].size


class WatchedComm:
    """A communicator that records each buffer collective called on it and the longest count passed."""

    def __init__(self, comm):
        self.comm, self.calls, self.longest = comm, collections.Counter(), 0

    def __getattr__(self, name):
        attribute = getattr(self.comm, name)
        if not (name[:1].isupper() and callable(attribute)):  # rank, size, the pickling allgather
            return attribute

        def watched(*args, **kwargs):
            self.calls[name] += 1
            self.longest = max([self.longest, *map(longest, args), *map(longest, kwargs.values())])
            return attribute(*args, **kwargs)
        return watched


def exact_grads(params, step, rank, world_size):
    """rank_grads rounded to multiples of 2**-10: |g| < 2**12, so sums of 4 of them are exact in float32."""
    grads = [np.round(g * 1024) / 1024 for g in rank_grads(params, step, rank, world_size)]
    assert all(np.abs(g).max(initial=0) < 2**12 for g in grads)
    return grads


def mean_grads(params, step, world_size):
    per_rank = [exact_grads(params, step, r, world_size) for r in range(world_size)]
    return [sum(gs[i] for gs in per_rank) / world_size for i in range(len(params))]


def reference(comm, case):
    """One process stepping the mean gradient: (its state_dict and params after MIDDLE steps,
    the optimizer after STEPS)."""
    cls, group_options, options, shapes = CASES[case]
    plain = make_optimizer(cls, copies(initial_values(group_shapes=shapes)), group_options, **options)
    for t in range(1, STEPS + 1):
        if t == MIDDLE + 1:
            middle = plain.state_dict(), [p.copy() for p in plain.params]
        plain.step(mean_grads(plain.params, t, comm.size))
    return middle, plain


def sharded(comm, case, method, values=None):
    cls, group_options, options, shapes = CASES[case]
    groups = flat_groups(initial_values(group_shapes=shapes) if values is None else values)
    return ShardedOptimizer(make_optimizer(cls, groups, group_options, **options), comm, reduce_scatter=method)


def train(opt, steps, comm):
    for t in steps:
        assert opt.step(exact_grads(opt.params, t, comm.rank, comm.size))


def assert_state_equal(actual, expected, label):
    assert sorted(actual) == sorted(expected), (label, sorted(set(actual) ^ set(expected)))
    for key, value in expected.items():
        if isinstance(value, np.ndarray):
            assert actual[key].dtype == value.dtype, (label, key)
            np.testing.assert_array_equal(actual[key], value, err_msg=f"{label}: {key}")
        else:
            assert actual[key] == value, (label, key, actual[key], value)


def check_watched(comm, watched, limit, method, case, label):
    """Under a lowered limit no buffer, count or displacement passed is longer; under the real one,
    the whole-buffer collectives run (and the watch sees their lengths)."""
    if limit != distributed.MAX_COUNT:
        assert watched.longest <= limit, (label, watched.longest)
        return
    smallest_group = min(sum(int(np.prod(shape)) for shape in group) for _, group in CASES[case][3])
    assert watched.longest >= smallest_group, (label, watched.longest)
    assert watched.calls["Bcast"] == 0, (label, watched.calls)
    if method == "block" and comm.size > 1:
        assert watched.calls["Reduce_scatter_block"] > 0, (label, watched.calls)


def check_case(comm, case, method, limit, expected):
    (middle_state, middle_params), plain = expected
    label = f"{case}, reduce_scatter={method}, MAX_COUNT={limit}, {comm.size} ranks"
    watched = WatchedComm(comm)
    with max_count(limit):
        opt = sharded(watched, case, method)
        train(opt, range(1, STEPS + 1), comm)
        for index, (p, e) in enumerate(zip(opt.params, plain.params)):
            np.testing.assert_array_equal(p, e, err_msg=f"{label}: param {index}")
        reference_state = plain.state_dict()
        assert_state_equal(opt.state_dict(), reference_state, f"{label}: state_dict()")
        for root in dict.fromkeys([0, comm.size - 1]):
            at_root = opt.state_dict(root=root)
            assert (at_root is None) == (comm.rank != root), (label, root)
            if at_root is not None:
                assert_state_equal(at_root, reference_state, f"{label}: state_dict(root={root})")

        # resume one process's checkpoint of MIDDLE steps: each rank keeps its own slices of it
        resumed = sharded(watched, case, method, initial_values(seed=5, group_shapes=CASES[case][3]))
        for p, saved in zip(resumed.params, middle_params):
            p[...] = saved
        resumed.load_state_dict(middle_state)
        assert_state_equal(resumed.state_dict(), middle_state, f"{label}: state_dict() after load")
        train(resumed, range(MIDDLE + 1, STEPS + 1), comm)
        for index, (p, e) in enumerate(zip(resumed.params, plain.params)):
            np.testing.assert_array_equal(p, e, err_msg=f"{label}: resumed param {index}")
    check_watched(comm, watched, limit, method, case, label)


def check_allreduce_grads(comm, limit):
    values = flat(initial_values())  # float32 and float64, 86 elements
    watched = WatchedComm(comm)
    with max_count(limit):
        grads = allreduce_grads([g.copy() for g in exact_grads(values, 1, comm.rank, comm.size)], watched)
        summed = allreduce_grads([np.arange(50.0) * (comm.rank + 1)], watched, average=False)[0]
    for index, (g, e) in enumerate(zip(grads, mean_grads(values, 1, comm.size))):
        np.testing.assert_array_equal(g, e, err_msg=f"allreduce_grads, MAX_COUNT={limit}: grads[{index}]")
    np.testing.assert_array_equal(summed, np.arange(50.0) * comm.size * (comm.size + 1) / 2)
    assert (watched.longest <= limit) if limit != distributed.MAX_COUNT else (watched.longest == 65), \
        (limit, watched.longest)


def main(comm, args):
    for case in CASE_NAMES:
        expected = reference(comm, case)
        for method in REDUCE_SCATTER_METHODS:
            for limit in LIMITS:
                check_case(comm, case, method, limit, expected)
    for limit in LIMITS:
        check_allreduce_grads(comm, limit)
    if comm.rank == 0:
        print(f"counts: {len(CASE_NAMES)} cases under {len(LIMITS)} limits on {comm.size} ranks", flush=True)


if __name__ == "__main__":
    run(main)
