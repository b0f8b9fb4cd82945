"""Checkpoints are independent of the number of ranks: save on N ranks, resume on M.

Usage:
  mpiexec -n N python tests/mpi/check_checkpoint.py save DIR
      3 steps, checkpoint (optimizer state_dict + parameters) to DIR/checkpoint_N.npz,
      3 more steps, final parameters to DIR/final_N.npz
  mpiexec -n M python tests/mpi/check_checkpoint.py resume DIR N
      resume DIR/checkpoint_N.npz on M ranks, take the same 3 steps, compare with
      DIR/final_N.npz: bit for bit when M == N, to float tolerance otherwise
"""

import os

import numpy as np
from _harness import copies, flat, flat_groups, global_grads, initial_values, make_optimizer, rank_grads, run

from fastopt import optim, schedules
from fastopt.distributed import ShardedOptimizer

GROUP_OPTIONS = [{"amsgrad": True}, {"lr": schedules.exponential(1e-2, 0.9)}, {"weight_decay": 0.1}]
FIRST, SECOND = range(1, 4), range(4, 7)


def sharded_optimizer(comm, seed=0):
    return ShardedOptimizer(make_optimizer(optim.Adam, flat_groups(initial_values(seed)), GROUP_OPTIONS), comm)


def train(sharded, steps, comm):
    for t in steps:
        assert sharded.step(rank_grads(sharded.params, t, comm.rank, comm.size))


def save(comm, directory):
    sharded = sharded_optimizer(comm)
    train(sharded, FIRST, comm)
    state = sharded.state_dict(root=0)
    if comm.rank == 0:
        params = {f"param.{i}": p for i, p in enumerate(sharded.params)}
        np.savez(os.path.join(directory, f"checkpoint_{comm.size}.npz"), **state, **params)
    train(sharded, SECOND, comm)
    if comm.rank == 0:
        np.savez(os.path.join(directory, f"final_{comm.size}.npz"), *sharded.params)


def split(checkpoint):
    """(optimizer state_dict, parameters) from a checkpoint file's contents."""
    state = {key: checkpoint[key] for key in checkpoint if not key.startswith("param.")}
    params = [checkpoint[f"param.{i}"] for i in range(sum(key.startswith("param.") for key in checkpoint))]
    return state, params


def resume(comm, directory, saved_size):
    with np.load(os.path.join(directory, f"checkpoint_{saved_size}.npz")) as checkpoint:
        state, saved_params = split(dict(checkpoint))
    with np.load(os.path.join(directory, f"final_{saved_size}.npz")) as final:
        expected = [final[f"arr_{i}"] for i in range(len(final.files))]
    same_ranks = comm.size == saved_size

    # 1. a fresh sharded optimizer (other initial values, overwritten) loads the checkpoint
    sharded = sharded_optimizer(comm, seed=5)
    for p, saved in zip(sharded.params, saved_params):
        p[...] = saved
    sharded.load_state_dict(state)
    assert sharded.state_dict().keys() == state.keys()
    train(sharded, SECOND, comm)
    for index, (p, e) in enumerate(zip(sharded.params, expected)):
        label = f"param {index}: saved on {saved_size} ranks, resumed on {comm.size}"
        if same_ranks:
            np.testing.assert_array_equal(p, e, err_msg=label)
        else:
            np.testing.assert_allclose(p, e, rtol=1e-5, atol=1e-6, err_msg=label)

    # 2. the unsharded optimizer loads it too, and a sharded one can take over its state
    groups = copies(initial_values())
    for p, saved in zip(flat(groups), saved_params):
        p[...] = saved
    plain = make_optimizer(optim.Adam, groups, GROUP_OPTIONS)
    plain.load_state_dict(state)
    wrapped = make_optimizer(optim.Adam, flat_groups(groups), GROUP_OPTIONS)
    wrapped.load_state_dict(state)
    taken_over = ShardedOptimizer(wrapped, comm)
    for t in SECOND:
        plain.step(global_grads(plain.params, t, comm.size))
    train(taken_over, SECOND, comm)
    for p, q, e in zip(plain.params, taken_over.params, expected):
        np.testing.assert_allclose(p, e, rtol=1e-5, atol=1e-6)
        if comm.size <= 2:
            np.testing.assert_array_equal(q, p)
        else:
            np.testing.assert_allclose(q, p, rtol=1e-5, atol=1e-6)
    if comm.rank == 0:
        print(f"checkpoint of {saved_size} ranks resumed on {comm.size}", flush=True)


def main(comm, args):
    if args[0] == "save":
        save(comm, args[1])
    else:
        resume(comm, args[1], int(args[2]))


if __name__ == "__main__":
    run(main)
