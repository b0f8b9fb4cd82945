"""Thread scaling of one Adam float32 step on gpt2-small, for a many-core machine.

    python bench/scaling.py [--threads 1,2,4,8,16] [--repeat 7] [--json scaling.json] [--workload gpt2-small]

For each thread count (default: 1, 2, 4, 8, ... up to os.cpu_count(), and
the count itself) it times, side by side, fastopt's list call, the traffic
ceiling (the same bytes, trivial math) and torch.optim.Adam(fused=True) when
torch is installed, and prints each as % of the ceiling.  Needs numpy and a
built fastopt (torch is optional).  About 3 GB of buffers, 4.5 GB with torch.

Placement matters on a many-core (NUMA) machine: the buffers are first
touched by one thread, so they sit on one node, and every implementation sees
the same placement.
"""

import argparse
import json
import os
import statistics
import sys
import time

try:
    import fastopt
except ImportError:  # run from a source checkout with an in-place build
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import fastopt
from fastopt.bench import peers, report, rules, timing, workloads

RULE, DTYPE = "adam", "float32"
IMPLEMENTATIONS = ("fastopt", "ceiling", "torch-fused")


def default_threads(cpus):
    counts, n = [], 1
    while n < cpus:
        counts.append(n)
        n *= 2
    return counts + [cpus]


def main(argv=None):
    cpus = os.cpu_count() or 1
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default=",".join(map(str, default_threads(cpus))),
                        help="comma list of thread counts (default: powers of two up to the CPU count)")
    parser.add_argument("--repeat", type=int, default=7, help="timed samples per point (default: 7)")
    parser.add_argument("--json", metavar="FILE", help="write the figures to FILE")
    parser.add_argument("--workload", default="gpt2-small",
                        help="a workload of python -m fastopt bench (default: gpt2-small)")
    args = parser.parse_args(argv)
    threads_list = [int(t) for t in args.threads.split(",")]

    rule = rules.RULES[RULE]
    shapes = workloads.workload_shapes(args.workload)
    n = workloads.count_params(shapes)
    bytes_per_step = rule.bytes_per_param(DTYPE) * n
    started = time.perf_counter()
    print(f"{RULE} {DTYPE} {args.workload}: {len(shapes)} tensors, {n / 1e6:.1f}M params, "
          f"{bytes_per_step / 1e9:.3g} GB moved per step; {report.cpu_model()}, {cpus} CPUs, "
          f"SIMD {fastopt._core.get_simd_level()}", flush=True)
    params, grads = workloads.make_buffers(shapes, DTYPE)

    points, skipped = [], {}
    header = (f"{'threads':>7} | {'fastopt ms':>10} {'ceiling ms':>10} {'torch ms':>9} | "
              f"{'fastopt %ceil':>13} {'torch %ceil':>11} | {'fastopt GB/s':>12} {'vs torch':>8}")
    print(header + "\n" + "-" * len(header), flush=True)
    for threads in threads_list:
        steps = {}
        for name in IMPLEMENTATIONS:
            try:
                steps[name] = peers.make_step(name, rule, DTYPE, params, grads, threads)
            except peers.Unavailable as exc:
                skipped[name] = str(exc)
        samples = timing.measure(steps, args.repeat)
        steps = None   # free torch's state before the next thread count
        medians = {k: statistics.median(v) for k, v in samples.items()}
        ours, ceiling, torch = (medians.get(k) for k in IMPLEMENTATIONS)
        # ratios: median of per-round ratios (see fastopt.bench.report.ratio)
        ratio = {k: report.paired_ratio(samples["ceiling"], v) for k, v in samples.items()}
        point = {"threads": threads, "median_s": medians, "samples_s": samples,
                 "fastopt_pct_of_ceiling": 100 * ratio["fastopt"],
                 "torch_fused_pct_of_ceiling": 100 * ratio["torch-fused"] if torch else None,
                 "fastopt_gb_per_s": bytes_per_step / ours / 1e9,
                 "ceiling_gb_per_s": bytes_per_step / ceiling / 1e9,
                 "speedup_over_torch_fused": (report.paired_ratio(samples["torch-fused"], samples["fastopt"])
                                              if torch else None)}
        points.append(point)

        def cell(x, width, fmt):
            return f"{'-':>{width}}" if x is None else f"{x:>{width}{fmt}}"
        print(f"{threads:>7} | {ours * 1e3:>10.4g} {ceiling * 1e3:>10.4g} {cell(torch and torch * 1e3, 9, '.4g')} | "
              f"{point['fastopt_pct_of_ceiling']:>13.1f} {cell(point['torch_fused_pct_of_ceiling'], 11, '.1f')} | "
              f"{point['fastopt_gb_per_s']:>12.1f} {cell(point['speedup_over_torch_fused'], 8, '.2f')}",
              flush=True)
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")
    elapsed = time.perf_counter() - started
    print(f"medians of {args.repeat} samples, interleaved; {elapsed:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": report.machine_info(), "optimizer": RULE, "dtype": DTYPE,
                       "workload": args.workload, "n_params": n, "bytes_per_step": bytes_per_step,
                       "repeat": args.repeat, "points": points, "skipped": skipped,
                       "elapsed_s": elapsed}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
