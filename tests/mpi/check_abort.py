"""A rank that raises aborts the job: the others, waiting in a collective, do not hang.

Usage: mpiexec -n N python tests/mpi/check_abort.py   (N >= 2)
"""

from _harness import flat_groups, initial_values, make_optimizer, rank_grads, run

from fastopt import optim
from fastopt.distributed import ShardedOptimizer


def main(comm, args):
    sharded = ShardedOptimizer(make_optimizer(optim.Adam, flat_groups(initial_values()), []), comm)
    grads = rank_grads(sharded.params, 1, comm.rank, comm.size)
    if comm.rank == comm.size - 1:
        raise RuntimeError("deliberate failure on the last rank")
    sharded.step(grads)  # the others wait here for the last rank, which never comes
    raise AssertionError("not reached: the job is aborted before the step completes")


if __name__ == "__main__":
    run(main)
