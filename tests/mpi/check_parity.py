"""Sharded steps equal one process stepping the mean gradient; repeated runs are bit-identical.

Usage: mpiexec -n N python tests/mpi/check_parity.py [OUT.npz]
Rank 0 writes the final parameters of every case to OUT.npz, so that two
launches can be compared bit for bit.
"""

import numpy as np
from _harness import (GROUP_SHAPES, copies, flat, flat_groups, global_grads, initial_values, make_optimizer,
                      rank_grads, run)

from fastopt import optim, schedules
from fastopt.distributed import REDUCE_SCATTER_METHODS, ShardedOptimizer, allreduce_grads

STEPS = 4

# name: (optimizer, per-group overrides, optimizer options, group shapes)
CASES = {
    "sgd": (optim.SGD, [{"lr": 0.1}, {"lr": 0.05}, {"lr": 0.2, "maximize": True}], {}, GROUP_SHAPES),
    "sgd_nesterov": (optim.SGD, [dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2)] * 3, {},
                     GROUP_SHAPES),
    "momentum": (optim.Momentum, [{"lr": 0.1}, {"beta": 0.5, "lr": 0.1}, {"lr": 0.1}], {}, GROUP_SHAPES),
    "rmsprop": (optim.RMSprop, [dict(centered=True, momentum=0.5), {}, dict(weight_decay=0.1)], {},
                GROUP_SHAPES),
    "adagrad": (optim.Adagrad, [dict(initial_accumulator_value=0.1, lr_decay=0.01), {}, {}], {}, GROUP_SHAPES),
    "adam": (optim.Adam, [{}, {"lr": 1e-2}, {"betas": (0.8, 0.99)}], {}, GROUP_SHAPES),
    "adam_amsgrad": (optim.Adam, [{"amsgrad": True}, {}, {"amsgrad": True, "weight_decay": 0.1}], {},
                     GROUP_SHAPES),
    "adamw_cosine": (optim.AdamW, [{"lr": schedules.cosine(1e-2, STEPS)}] * 3, {}, GROUP_SHAPES),
    "adam_clip_l2": (optim.Adam, [{"lr": 1e-2}] * 3, {"max_grad_norm": 1.0}, GROUP_SHAPES),
    "adam_clip_inf": (optim.Adam, [{"lr": 1e-2}] * 3, {"max_grad_norm": 0.5, "norm_type": float("inf")},
                      GROUP_SHAPES),
    "adam_skip_nonfinite": (optim.Adam, [{}] * 3, {"skip_nonfinite": True}, GROUP_SHAPES),
    # fewer elements than 4 ranks: some rank owns nothing
    "adam_tiny": (optim.Adam, [{"lr": 0.1}], {}, [("float64", [(3,)])]),
}
NAN_STEP = 2  # adam_skip_nonfinite: the last rank's gradient holds a NaN at this step


def clip_coefficient(grads, max_norm, norm_type):
    """torch.nn.utils.clip_grad_norm_'s coefficient, min(1, max_norm / (norm + 1e-6))."""
    if norm_type == float("inf"):
        norm = max(float(np.max(np.abs(g))) for g in grads)
    else:
        norm = sum(float(np.sum(np.abs(g.astype(np.float64)) ** norm_type)) for g in grads) ** (1 / norm_type)
    return min(1.0, max_norm / (norm + 1e-6))


def sharded_run(comm, case, method, grads_in_place=False):
    """The case on the ranks of comm; grads_in_place: written into sharded.grads (no copy in step)."""
    cls, group_options, options, shapes = CASES[case]
    groups = flat_groups(initial_values(group_shapes=shapes))
    sharded = ShardedOptimizer(make_optimizer(cls, groups, group_options, **options), comm, reduce_scatter=method)
    taken = []
    for t in range(1, STEPS + 1):
        grads = rank_grads(sharded.params, t, comm.rank, comm.size)
        if case == "adam_skip_nonfinite" and t == NAN_STEP and comm.rank == comm.size - 1:
            grads[0][0, 0] = np.nan
        if grads_in_place:
            for view, g in zip(sharded.grads, grads):
                view[...] = g
            grads = sharded.grads
        taken.append(sharded.step(grads))
    return sharded, taken


def reference_run(comm, case):
    """One process, the unsharded optimizer, the mean of every rank's gradient."""
    cls, group_options, options, shapes = CASES[case]
    groups = copies(initial_values(group_shapes=shapes))
    # clipping and skipping are done here, by hand, on the mean gradient
    plain = make_optimizer(cls, groups, group_options)
    for t in range(1, STEPS + 1):
        if case == "adam_skip_nonfinite" and t == NAN_STEP:
            plain.skipped_steps += 1
            continue
        grads = global_grads(plain.params, t, comm.size)
        if "max_grad_norm" in options:
            scale = clip_coefficient(grads, options["max_grad_norm"], options.get("norm_type", 2.0))
            grads = [g * g.dtype.type(scale) for g in grads]
        plain.step(grads)
    return plain


def assert_close(actual, expected, exact, label, loose=False):
    """Bit-equal, or close: float32 to 1e-5; float64 to 1e-12, or to 1e-7 when `loose` (a clipping
    coefficient whose norm was summed in float32 for the float32 gradients, as torch does)."""
    if exact:
        np.testing.assert_array_equal(actual, expected, err_msg=label)
    else:
        tolerance = 1e-5 if actual.dtype == np.float32 else 1e-7 if loose else 1e-12
        np.testing.assert_allclose(actual, expected, rtol=tolerance, atol=tolerance, err_msg=label)


def check_case(comm, case):
    cls, group_options, options, shapes = CASES[case]
    plain = reference_run(comm, case)
    # Two ranks sum in the one order there is; clipping norms are summed per rank first.
    clipped = "max_grad_norm" in options
    exact = comm.size <= 2 and not clipped
    expected_taken = [not (case == "adam_skip_nonfinite" and t == NAN_STEP) for t in range(1, STEPS + 1)]
    results = {}
    for method in REDUCE_SCATTER_METHODS:
        sharded, taken = sharded_run(comm, case, method)
        assert taken == expected_taken, (case, method, taken)
        again, _ = sharded_run(comm, case, method)
        in_place, _ = sharded_run(comm, case, method, grads_in_place=True)
        for index, (p, q, r, s) in enumerate(zip(sharded.params, again.params, in_place.params, plain.params)):
            label = f"{case}, reduce_scatter={method}: param {index} on {comm.size} ranks"
            np.testing.assert_array_equal(p, q, err_msg=f"{label}: two runs differ")
            np.testing.assert_array_equal(p, r, err_msg=f"{label}: grads in place differ")
            assert_close(p, s, exact, label, loose=clipped)
            results[f"{case}.{method}.{index}"] = p.copy()

    mine, ref = sharded.state_dict(), plain.state_dict()
    at_root = sharded.state_dict(root=0)
    assert (at_root is None) == (comm.rank != 0)
    assert sorted(mine) == sorted(ref), (case, sorted(set(mine) ^ set(ref)))
    for key, value in ref.items():
        if isinstance(value, np.ndarray):
            assert mine[key].shape == value.shape and mine[key].dtype == value.dtype, key
            assert_close(mine[key], value, exact, f"{case}: {key}", loose=clipped)
            if at_root is not None:
                np.testing.assert_array_equal(at_root[key], mine[key])
        else:
            assert mine[key] == value, (case, key, mine[key], value)

    total = sum(b.nbytes for state in plain.state for name, bs in state.items() if name != "step" for b in bs)
    per_rank = comm.allgather(sharded.state_nbytes())
    assert sum(per_rank) == total, (case, per_rank, total)
    uniform = len({tuple(sorted(s)) for s in plain.state}) == 1
    if uniform and comm.size > 1:  # balanced: chunks of ceil(n / ranks) per dtype, the last ones shorter
        slack = len(plain.state_buffer_names(plain.param_groups[0])) * 8 * 2 * (comm.size - 1)
        assert max(per_rank) - min(per_rank) <= slack, (case, per_rank)
    return results


def check_allreduce_grads(comm):
    values = flat(initial_values())
    grads = [g.copy() for g in rank_grads(values, 1, comm.rank, comm.size)]
    expected = global_grads(values, 1, comm.size)
    assert allreduce_grads(grads, comm) is not None
    for g, e in zip(grads, expected):
        assert_close(g, e, comm.size <= 2, "allreduce_grads average")
    summed = allreduce_grads([np.full(3, comm.rank + 1.0)], comm, average=False)[0]
    np.testing.assert_array_equal(summed, np.full(3, comm.size * (comm.size + 1) / 2))


def main(comm, args):
    results = {}
    for case in CASES:
        results.update(check_case(comm, case))
    check_allreduce_grads(comm)
    if args and comm.rank == 0:
        np.savez(args[0], **results)
    if comm.rank == 0:
        print(f"parity: {len(CASES)} cases on {comm.size} ranks", flush=True)


if __name__ == "__main__":
    run(main)
