"""Adafactor side by side: fastopt's list call, fastopt.optim, torch.optim.Adafactor, the traffic ceiling.

    python bench/adafactor.py [--workload 1e7,3162x3162,mnist-mlp,gpt2-small] [--dtype float32]
                              [--threads 1,2] [--repeat 9] [--json adafactor.json]

Adafactor's state is not the param's shape, so it is measured here rather
than by ``python -m fastopt bench``, with the same timing (samples
interleaved round by round, ratios as medians of per-round ratios).  Bytes
per element, float32 (4 bytes) as the unit s:

- a matrix (ndim >= 2): its sums (param², grad² by row and by column) read
  param and grad (2s), its update norm grad (s), its update param and grad
  and writes param (3s): 6s = 24 B, the factors' m + n values aside;
- a vector: its first pass reads param, grad and variance and writes
  variance (4s), its update reads the three and writes param (4s): 8s = 32 B.

The ceiling is ``fastopt._core.ceiling_step`` with two state buffers, 7s per
element in one pass; "% ceiling" compares bytes per second.  ``1e7`` is one
vector of 10^7 elements, ``3162x3162`` one matrix of about as many.
torch-foreach and torch-forloop are torch.optim.Adafactor(foreach=True/False)
on ``torch.from_numpy`` views (when torch is installed; it has no fused CPU
Adafactor).
"""

import argparse
import json
import math
import os
import statistics
import sys
import time

import numpy as np

try:
    import fastopt
except ImportError:  # run from a source checkout with an in-place build
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import fastopt
from fastopt import optim
from fastopt.bench import report, timing, workloads
from fastopt.factored import factor_shapes

STEP = 10   # past the first steps, as python -m fastopt bench times them


def shapes_of(name):
    """A workload of python -m fastopt bench, or RxC: one matrix."""
    rows, _, cols = name.partition("x")
    if cols and rows.isdigit() and cols.isdigit() and int(rows) > 1 and int(cols) > 1:
        return [(int(rows), int(cols))]
    return workloads.workload_shapes(name)


def bytes_per_step(shapes, dtype):
    s = np.dtype(dtype).itemsize
    return sum(math.prod(shape) * (6 if len(shape) >= 2 else 8) * s for shape in shapes)


def new_state(params):
    state = {"row_var": [], "col_var": [], "variance": []}
    for p in params:
        rows, cols = factor_shapes(p.shape) if p.ndim >= 2 else (None, None)
        state["row_var"].append(None if rows is None else np.zeros(rows, p.dtype))
        state["col_var"].append(None if cols is None else np.zeros(cols, p.dtype))
        state["variance"].append(np.zeros_like(p) if p.ndim < 2 else None)
    return state


def make_steps(params, grads, threads, torch):
    state = new_state(params)
    steps = {
        "fastopt": lambda: fastopt.adafactor_step(params, grads, state["row_var"], state["col_var"],
                                                  state["variance"], step=STEP, num_threads=threads),
    }
    opt = optim.Adafactor(params, num_threads=threads)
    opt.state[0]["step"] = STEP
    steps["fastopt-optim"] = lambda: opt.step(grads)
    extra = [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params]
    steps["ceiling"] = lambda: fastopt._core.ceiling_step(params, grads, *extra, num_threads=threads)
    if torch is not None:
        for name, foreach in (("torch-foreach", True), ("torch-forloop", False)):
            tensors = [torch.from_numpy(p.copy()) for p in params]
            for t, g in zip(tensors, grads):
                t.grad = torch.from_numpy(g)
            topt = torch.optim.Adafactor(tensors, foreach=foreach)

            def step(topt=topt):
                torch.set_num_threads(threads)
                topt.step()
            steps[name] = step
    return steps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="1e7,3162x3162,mnist-mlp,gpt2-small")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--threads", default=f"1,{os.cpu_count() or 1}")
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        torch = None
    thread_counts = sorted({int(t) for t in args.threads.split(",")})
    print(f"Adafactor {args.dtype}; {report.cpu_model()}, {os.cpu_count()} CPUs; medians of {args.repeat} "
          f"samples, ratios as medians of per-round ratios (interquartile spread in %)", flush=True)
    header = (f"{'workload':>11} {'thr':>3} | {'fastopt ms':>10} {'ceiling ms':>10} {'%ceil':>6} | "
              f"{'optim/bare':>10} | {'x foreach':>9} {'x forloop':>9}")
    print(header + "\n" + "-" * len(header), flush=True)
    points, started = [], time.perf_counter()
    for workload in args.workload.split(","):
        shapes = shapes_of(workload)
        params, grads = workloads.make_buffers(shapes, args.dtype)
        moved = bytes_per_step(shapes, args.dtype)
        ceiling_moved = sum(p.size for p in params) * 7 * np.dtype(args.dtype).itemsize
        for threads in thread_counts:
            samples = timing.measure(make_steps(params, grads, threads, torch), args.repeat)
            medians = {k: statistics.median(v) for k, v in samples.items()}
            pct = 100 * moved / ceiling_moved * report.paired_ratio(samples["ceiling"], samples["fastopt"])
            over = {k: report.paired_ratio(samples[k], samples["fastopt"]) for k in samples if k != "fastopt"}
            point = {"workload": workload, "threads": threads, "bytes_per_step": moved, "median_s": medians,
                     "samples_s": samples, "pct_of_ceiling": pct, "times_faster_than": over,
                     "spread_pct": {k: report.spread_pct(v) for k, v in samples.items()}}
            points.append(point)

            def cell(key):
                return f"{over[key]:>9.2f}" if key in over else f"{'-':>9}"
            print(f"{workload:>11} {threads:>3} | {medians['fastopt'] * 1e3:>10.4g} "
                  f"{medians['ceiling'] * 1e3:>10.4g} {pct:>6.1f} | {1 / over['fastopt-optim']:>10.2f} | "
                  f"{cell('torch-foreach')} {cell('torch-forloop')}   "
                  f"(spread {point['spread_pct']['fastopt']:.0f}%)", flush=True)
    print(f"{time.perf_counter() - started:.0f} s" + ("" if torch else "; torch not installed"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": report.machine_info(), "dtype": args.dtype, "repeat": args.repeat,
                       "points": points}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
