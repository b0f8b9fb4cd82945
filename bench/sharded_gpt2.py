"""Step time and optimizer-state memory per rank of data-parallel Adam on gpt2-small's parameters.

    mpiexec -n N python bench/sharded_gpt2.py [--mode sharded|allreduce] [--threads T] [--steps S]
        [--reduce-scatter block|reduce] [--grads-in-place]

sharded:   ShardedOptimizer(Adam) (ZeRO stage 1): reduce-scatter, fused step on 1/N, all-gather.
allreduce: plain data parallelism: allreduce_grads, then the full fused Adam step on every rank.

Rank 0 prints one JSON line: per-step seconds (slowest rank each step; median
and all), per-phase medians, optimizer-state bytes and peak RSS per rank.
"""

import argparse
import json
import resource
import statistics
import time

import numpy as np
from mpi4py import MPI

from fastopt import optim
from fastopt.distributed import REDUCE_SCATTER_METHODS, ShardedOptimizer, allreduce_grads

# gpt2-small (124.4M parameters): token and position embeddings, 12 blocks, final layer norm.
BLOCK = [(768,), (768,), (768, 2304), (2304,), (768, 768), (768,), (768,), (768,), (768, 3072), (3072,),
         (3072, 768), (768,)]
GPT2_SMALL = [(50257, 768), (1024, 768)] + BLOCK * 12 + [(768,), (768,)]


def views_of_one_buffer(shapes, dtype, fill):
    """Arrays of `shapes`, back to back in one flat buffer (what ShardedOptimizer needs), filled by fill(flat)."""
    sizes = [int(np.prod(shape)) for shape in shapes]
    flat = np.empty(sum(sizes), dtype=dtype)
    fill(flat)
    offsets = np.cumsum([0] + sizes)
    return flat, [flat[a:b].reshape(shape) for a, b, shape in zip(offsets[:-1], offsets[1:], shapes)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["sharded", "allreduce"], default="sharded")
    parser.add_argument("--threads", type=int, default=1, help="fastopt threads per rank")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up step)")
    parser.add_argument("--reduce-scatter", choices=REDUCE_SCATTER_METHODS, default="block")
    parser.add_argument("--grads-in-place", action="store_true",
                        help="sharded: gradients written into sharded.grads (no copy in step)")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD

    rng = np.random.default_rng(comm.rank)
    _, params = views_of_one_buffer(GPT2_SMALL, np.float32, lambda a: a.fill(0.01))
    _, grads = views_of_one_buffer(GPT2_SMALL, np.float32,
                                   lambda a: a.__setitem__(slice(None), rng.standard_normal(a.size, np.float32)))
    adam = optim.Adam(params, lr=1e-4, num_threads=args.threads)
    if args.mode == "sharded":
        optimizer = ShardedOptimizer(adam, comm, reduce_scatter=args.reduce_scatter)
        state_bytes = optimizer.state_nbytes()
        if args.grads_in_place:
            for view, g in zip(optimizer.grads, grads):
                view[...] = g
            grads = optimizer.grads

        def step():
            optimizer.step(grads)
            return optimizer.last_step_seconds
    else:
        state_bytes = sum(b.nbytes for s in adam.state for name, bs in s.items() if name != "step" for b in bs)
        working = [g.copy() for g in grads]  # allreduce_grads averages in place

        def step():
            for w, g in zip(working, grads):
                w[...] = g
            start = time.perf_counter()
            allreduce_grads(working, comm)
            middle = time.perf_counter()
            adam.step(working)
            return {"allreduce": middle - start, "update": time.perf_counter() - middle}

    seconds, phases = [], []
    for index in range(args.steps + 1):
        comm.Barrier()
        start = time.perf_counter()
        phase = step()
        elapsed = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
        if index:  # the first step is a warm-up (page faults of the new buffers)
            seconds.append(elapsed)
            phases.append(phase)
    report = {
        "mode": args.mode if args.mode == "allreduce" else
        f"sharded, reduce_scatter={args.reduce_scatter}" + (", grads in place" if args.grads_in_place else ""),
        "ranks": comm.size,
        "threads_per_rank": args.threads,
        "params": sum(p.size for p in params),
        "step_s_median": statistics.median(seconds), "step_s": [round(s, 4) for s in seconds],
        "phase_s_median_rank0": {k: round(statistics.median(p[k] for p in phases), 4) for k in phases[0]},
        "state_bytes_per_rank": comm.gather(state_bytes),
        "peak_rss_mib_per_rank": comm.gather(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024),
    }
    if comm.rank == 0:
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
