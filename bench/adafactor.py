"""Adafactor side by side on matrices of any shape: ``python -m fastopt bench --optimizer adafactor``'s
table (fastopt.bench.factored, whose docstring counts the bytes), with RxC workloads as one R x C matrix.

    python bench/adafactor.py [--workload 1e7,3162x3162,mnist-mlp,gpt2-small] [--dtype float32]
                              [--threads 1,2] [--repeat 9] [--json adafactor.json]

``1e7`` is one vector of 10^7 elements, ``3162x3162`` one matrix of about as
many (in ``python -m fastopt bench``, NxK is K vectors of N).
"""

import argparse
import json
import os
import sys
import time

try:
    import fastopt
except ImportError:  # run from a source checkout with an in-place build
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import fastopt
from fastopt.bench import factored, report, workloads


def shapes_of(name):
    """A workload of python -m fastopt bench, or RxC: one matrix."""
    rows, _, cols = name.partition("x")
    if cols and rows.isdigit() and cols.isdigit() and int(rows) > 1 and int(cols) > 1:
        return [(int(rows), int(cols))]
    return workloads.workload_shapes(name)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="1e7,3162x3162,mnist-mlp,gpt2-small")
    parser.add_argument("--dtype", default="float32", choices=factored.DTYPES)
    parser.add_argument("--threads", default=f"1,{fastopt.get_num_threads()}")
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    torch = factored.optional_torch()
    thread_counts = sorted({int(t) for t in args.threads.split(",")})
    print(factored.table_title(args.repeat), flush=True)
    print(factored.HEADER + "\n" + "-" * len(factored.HEADER), flush=True)
    points, started = [], time.perf_counter()
    for workload in args.workload.split(","):
        shapes = shapes_of(workload)
        buffers = workloads.make_buffers(shapes, args.dtype)
        for threads in thread_counts:
            point = factored.measure_point(workload, shapes, args.dtype, threads, args.repeat, torch,
                                           params_and_grads=buffers)
            points.append(point)
            print(factored.format_point(point), flush=True)
    print(f"{time.perf_counter() - started:.0f} s" + ("" if torch else "; torch not installed"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": report.machine_info(), "dtype": args.dtype, "repeat": args.repeat,
                       "points": points}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
