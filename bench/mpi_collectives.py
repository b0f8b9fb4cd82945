"""Seconds of the collectives a sharded step could use, on gpt2-small's 124.4M float32 gradients.

    mpiexec -n N python bench/mpi_collectives.py [--elements 124439808] [--repeats 5]

Reduce-scatter three ways (Reduce_scatter with counts, Reduce_scatter_block
over padded equal chunks, one Reduce per owning rank), Allreduce (what plain
data parallelism does instead) and the in-place Allgatherv of the update.
Rank 0 prints the median over repeats of the slowest rank's time, repeats interleaved.
"""

import argparse
import statistics
import time

import numpy as np
from mpi4py import MPI


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=124_439_808)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    size, ranks, rank = args.elements, comm.size, comm.rank
    chunk = -(-size // ranks)
    bounds = [min(r * chunk, size) for r in range(ranks + 1)]
    counts = np.diff(bounds).tolist()
    grads = np.ones(chunk * ranks, np.float32)  # padded to equal chunks
    received = np.empty(chunk, np.float32)
    params = np.ones(size, np.float32)

    def reduce_per_rank():
        for root in range(ranks):
            comm.Reduce(grads[root * chunk:(root + 1) * chunk], received if root == rank else None,
                        op=MPI.SUM, root=root)

    variants = {
        "Reduce_scatter (counts)": lambda: comm.Reduce_scatter(grads[:size], received[:counts[rank]], counts,
                                                               op=MPI.SUM),
        "Reduce_scatter_block": lambda: comm.Reduce_scatter_block(grads, received, op=MPI.SUM),
        "Reduce to each owner": reduce_per_rank,
        "Allreduce (in place)": lambda: comm.Allreduce(MPI.IN_PLACE, grads, op=MPI.SUM),
        "Allgatherv (in place)": lambda: comm.Allgatherv(MPI.IN_PLACE, [params, counts, bounds[:-1], MPI.FLOAT]),
    }
    seconds = {name: [] for name in variants}
    for _ in range(args.repeats + 1):
        for name, run in variants.items():
            comm.Barrier()
            start = time.perf_counter()
            run()
            seconds[name].append(comm.allreduce(time.perf_counter() - start, op=MPI.MAX))
    if rank == 0:
        for name, times in seconds.items():
            print(f"{ranks} ranks  {name:24s} {statistics.median(times[1:]):.3f} s", flush=True)


if __name__ == "__main__":
    main()
