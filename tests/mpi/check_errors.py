"""Bad input on some ranks raises a clear error on every rank, and nobody hangs or desynchronizes.

Usage: mpiexec -n N python tests/mpi/check_errors.py   (N >= 2)
"""

import numpy as np
from _harness import GROUP_SHAPES, flat, flat_groups, initial_values, make_optimizer, rank_grads, run

from fastopt import optim
from fastopt.distributed import ShardedOptimizer, allreduce_grads

OPTIONS = [{}, {"lr": 1e-2}, {}]


def expect(error, fragments, action):
    """action() must raise `error` whose message holds every fragment: on this rank, as on all."""
    try:
        action()
    except error as exc:
        for fragment in fragments:
            assert fragment in str(exc), (fragment, str(exc))
        return exc
    raise AssertionError(f"no {error.__name__} raised; expected one mentioning {fragments}")


def adam(groups, options=OPTIONS):
    return make_optimizer(optim.Adam, groups, options)


def same_everywhere(comm, arrays):
    gathered = comm.allgather([a.copy() for a in arrays])
    for other in gathered[1:]:
        for a, b in zip(gathered[0], other):
            np.testing.assert_array_equal(a, b)


def owners(sharded, g):
    """The ranks that own some of group g's elements."""
    params = sharded.param_groups[g]["params"]
    dtype = params[0].dtype
    start = sum(p.size for group in sharded.param_groups[:g] for p in group["params"] if p.dtype == dtype)
    end = start + sum(p.size for p in params)
    bounds = sharded.bounds[dtype]
    return [rank for rank in range(len(bounds) - 1) if max(start, bounds[rank]) < min(end, bounds[rank + 1])]


def check_bad_hyperparameters(comm):
    """A bad lr on every rank for a group that only some ranks own, or a schedule that fails on one
    rank: every rank raises, nothing is written, and the next good step is that of an optimizer that
    never failed.

    The ranks that own none of the group have nothing of their own that fails: unless they check
    every group too, they go on to the Allgatherv and wait there for the ranks that raised.
    """
    last, g = comm.size - 1, 2
    sharded = ShardedOptimizer(adam(flat_groups(initial_values())), comm)
    never_failed = ShardedOptimizer(adam(flat_groups(initial_values())), comm)
    for opt in (sharded, never_failed):
        assert opt.step(rank_grads(opt.params, 1, comm.rank, comm.size))
    owning = owners(sharded, g)
    assert 0 not in owning and last in owning, owning
    params, state = [p.copy() for p in sharded.params], sharded.state_dict()
    grads = rank_grads(sharded.params, 2, comm.rank, comm.size)
    lr = sharded.param_groups[g]["lr"]

    def raises_everywhere(bad_lr, fragments):
        sharded.param_groups[g]["lr"] = bad_lr
        error = expect(ValueError, fragments, lambda: sharded.step(grads))
        sharded.param_groups[g]["lr"] = lr
        for index, (p, before) in enumerate(zip(sharded.params, params)):
            np.testing.assert_array_equal(p, before, err_msg=f"param {index} written by a failed step")
        after = sharded.state_dict()
        for key, value in state.items():
            np.testing.assert_array_equal(after[key], value, err_msg=f"{key} changed by a failed step")
        return str(error)

    everywhere = raises_everywhere(-1, [f"rank {rank}: lr must be finite and >= 0; got -1"
                                        for rank in range(comm.size)])
    assert everywhere.count("rank ") == comm.size, everywhere

    def negative_on_the_last_rank(t):
        return -0.5 if comm.rank == last else lr
    one = raises_everywhere(negative_on_the_last_rank, [f"rank {last}: lr must be finite and >= 0; got -0.5"])
    assert one.count("rank ") == 1, one

    def fails_on_rank_0(t):
        if comm.rank == 0:
            raise ValueError(f"no learning rate for step {t} on this rank")
        return lr
    one = raises_everywhere(fails_on_rank_0, ["rank 0: no learning rate for step 2 on this rank"])
    assert one.count("rank ") == 1, one

    assert sharded.step(grads)
    assert never_failed.step(rank_grads(never_failed.params, 2, comm.rank, comm.size))
    for index, (p, q) in enumerate(zip(sharded.params, never_failed.params)):
        np.testing.assert_array_equal(p, q, err_msg=f"param {index} after the failed steps")
    same_everywhere(comm, sharded.params)


def main(comm, args):
    last = comm.size - 1
    is_last = comm.rank == last

    # parameters that differ across ranks: shape, dtype, hyperparameter
    shapes = [list(group) for group in GROUP_SHAPES]
    if is_last:
        shapes[1] = ("float64", [(4, 3), (8,)])
    expect(ValueError, ["ranks disagree on the optimizer", "group 1 param[1]", f"rank {last}"],
           lambda: ShardedOptimizer(adam(flat_groups(initial_values(group_shapes=shapes))), comm))
    shapes = [list(group) for group in GROUP_SHAPES]
    if is_last:
        shapes[1] = ("float32", shapes[1][1])
    expect(ValueError, ["ranks disagree on the optimizer", "float32", "float64"],
           lambda: ShardedOptimizer(adam(flat_groups(initial_values(group_shapes=shapes))), comm))
    options = [{}, {"lr": 1e-2 if not is_last else 2e-2}, {}]
    expect(ValueError, ["group 1 lr", "0.01", "0.02"],
           lambda: ShardedOptimizer(adam(flat_groups(initial_values()), options), comm))
    # how the state is kept: 8-bit blocks of another size on one rank
    expect(ValueError, ["ranks disagree on the optimizer", "block_size", "128", "256"],
           lambda: ShardedOptimizer(make_optimizer(optim.Adam, flat_groups(initial_values(
               group_shapes=[("float32", [(70, 90), (13,)])])), OPTIONS, state_dtype="8bit",
               block_size=128 if is_last else 256), comm))
    expect(ValueError, ["reduce_scatter", "'block'", "'reduce'"],
           lambda: ShardedOptimizer(adam(flat_groups(initial_values())), comm,
                                    reduce_scatter="reduce" if is_last else "block"))
    expect(ValueError, ["rank 0:", "reduce_scatter must be one of"],
           lambda: ShardedOptimizer(adam(flat_groups(initial_values())), comm,
                                    reduce_scatter="ring" if comm.rank == 0 else "block"))
    # LAMB's trust ratio takes norms of whole tensors, which no rank owns
    expect(ValueError, ["ShardedOptimizer cannot shard LAMB", "whole tensor"],
           lambda: ShardedOptimizer(make_optimizer(optim.LAMB, flat_groups(initial_values()), OPTIONS), comm))
    expect(ValueError, ["ShardedOptimizer cannot shard Adafactor", "whole rows and columns"],
           lambda: ShardedOptimizer(make_optimizer(optim.Adafactor, flat_groups(initial_values()), []), comm))
    # parameters not laid out flat on rank 0 only
    groups = initial_values() if comm.rank == 0 else flat_groups(initial_values())
    expect(ValueError, ["rank 0:", "flatten_params"], lambda: ShardedOptimizer(adam(groups), comm))

    # a good optimizer; then bad grads on one rank: every rank raises, nothing is written
    sharded = ShardedOptimizer(adam(flat_groups(initial_values())), comm)
    before = [p.copy() for p in sharded.params]
    grads = rank_grads(sharded.params, 1, comm.rank, comm.size)
    bad = list(grads)
    if is_last:
        bad[3] = bad[3][:2]
    expect(ValueError, [f"rank {last}:", "grads[3] has shape (2, 3)"], lambda: sharded.step(bad))
    bad = grads[:-1] if comm.rank == 0 else grads
    expect(ValueError, ["rank 0:", "got 6 grads for 7 params"], lambda: sharded.step(bad))
    for p, b in zip(sharded.params, before):
        np.testing.assert_array_equal(p, b)
    assert sharded.step(grads)
    same_everywhere(comm, sharded.params)

    # the wrapped optimizer no longer steps on its own
    expect(RuntimeError, ["driven by a ShardedOptimizer"], lambda: sharded.optimizer.step(grads))

    # a checkpoint that is wrong on one rank: every rank raises, nothing changes
    state = sharded.state_dict()
    corrupt = dict(state)
    if comm.rank == 0:
        corrupt["state.1.exp_avg.0"] = corrupt["state.1.exp_avg.0"][:2]
    corrupt["groups.1.lr"] = 0.5
    # loads on the other ranks, which must then undo it: step counts and moments too
    corrupt["groups.0.step"] = state["groups.0.step"] + 100
    corrupt["state.0.exp_avg.0"] = corrupt["state.0.exp_avg.0"] + 1
    expect(ValueError, ["rank 0:", "state.1.exp_avg.0"], lambda: sharded.load_state_dict(corrupt))
    assert sharded.param_groups[1]["lr"] == 1e-2
    after = sharded.state_dict()
    for key, value in state.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)
    sgd_state = make_optimizer(optim.SGD, flat_groups(initial_values()), [{"lr": 0.1}] * 3).state_dict()
    expect(ValueError, ["state_dict is of a SGD, not a Adam"], lambda: sharded.load_state_dict(sgd_state))
    assert sharded.step(rank_grads(sharded.params, 2, comm.rank, comm.size))
    same_everywhere(comm, sharded.params)

    check_bad_hyperparameters(comm)

    # plain data parallelism: gradients that differ across ranks
    grads = [g.copy() for g in flat(initial_values())]
    if is_last:
        grads[0] = grads[0][:3]
    expect(ValueError, ["ranks disagree on the gradients", "grads[0]"], lambda: allreduce_grads(grads, comm))
    if comm.rank == 0:
        print(f"errors: every rank of {comm.size} raised", flush=True)


if __name__ == "__main__":
    run(main)
