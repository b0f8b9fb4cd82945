"""The command line: ``python -m fastopt bench`` (and ``python -m fastopt.bench``)."""

import json
import sys
import time

import fastopt
from fastopt.bench import factored
from fastopt.bench.busy import BusyProcesses
from fastopt.bench.goals import evaluate_goals, format_goals
from fastopt.bench.groups import run_group
from fastopt.bench.overhead import measure_overhead
from fastopt.bench.peers import IMPLEMENTATIONS
from fastopt.bench.report import format_group, format_overhead, machine_info
from fastopt.bench.rules import RULES
from fastopt.bench.timing import Progress
from fastopt.bench.modes import MODES
from fastopt.bench.workloads import WORKLOADS, make_buffers, workload_shapes

DESCRIPTION = "throughput of every step against NumPy, the traffic ceiling and peers"
# the registry's rules, then Adafactor, whose factored state has a table of its own (fastopt.bench.factored)
OPTIMIZERS = (*RULES, "adafactor")


def _choices(text, allowed, what):
    if text == "all":
        return list(allowed)
    names = [x.strip() for x in text.split(",") if x.strip()]
    for name in names:
        if name not in allowed:
            raise SystemExit(f"unknown {what} {name!r}; choose from: {', '.join(allowed)}, all")
    return names


def _workloads(text):
    names = list(WORKLOADS) if text == "all" else [x.strip() for x in text.split(",") if x.strip()]
    for name in names:
        try:
            workload_shapes(name)
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
    return names


def _threads(text):
    if text == "all":
        return [fastopt.get_num_threads()]
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--threads takes counts such as 1,2,4; got {text!r}") from None
    if not counts or min(counts) < 1:
        raise SystemExit(f"--threads takes counts >= 1; got {text!r}")
    return list(dict.fromkeys(counts))


def configure(parser):
    n = fastopt.get_num_threads()
    parser.add_argument("--optimizer", default="adam",
                        help=f"comma list of {', '.join(OPTIMIZERS)}, or all (default: adam); adafactor "
                             f"has a table of its own, in-dtype modes only (float32, float64, bfloat16, "
                             f"float16)")
    parser.add_argument("--workload", default="1e5,mnist-mlp,1e7",
                        help=f"comma list of {', '.join(WORKLOADS)}, N (one buffer of N elements) "
                             f"or NxK (K buffers of N), or all (default: 1e5,mnist-mlp,1e7)")
    parser.add_argument("--dtype", default="float32",
                        help="precision modes, a comma list of: float32, float64; bfloat16, float16 (params, "
                             "grads and state 16-bit); master-bfloat16, master-float16 (float32 master weights "
                             "and state, 16-bit grads, a 16-bit copy written each step); float32-8bit (float32 "
                             "params, 8-bit state); or all (default: float32)")
    parser.add_argument("--threads", default=",".join(dict.fromkeys(["1", str(n)])),
                        help=f"comma list of thread counts (default: 1,{n})")
    parser.add_argument("--impl", default="all",
                        help=f"comma list of {', '.join(IMPLEMENTATIONS)}, or all (default: all)")
    parser.add_argument("--repeat", type=int, default=7, help="timed samples per implementation (default: 7)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    parser.add_argument("--no-overhead", action="store_true",
                        help="skip the per-call overhead, import time and first-call figures")
    parser.add_argument("--busy", type=int, default=0, metavar="N",
                        help="keep N cores busy with spinning child processes while measuring, "
                             "to measure under load (default: 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def main(args):
    info = machine_info()   # before torch or numba can change the OpenMP default
    chosen = _choices(args.optimizer, OPTIMIZERS, "optimizer")
    rules = [RULES[name] for name in chosen if name in RULES]
    workloads = _workloads(args.workload)
    dtypes = _choices(args.dtype, MODES, "dtype")
    threads_list = _threads(args.threads)
    implementations = _choices(args.impl, IMPLEMENTATIONS, "implementation")
    if args.repeat < 1:
        raise SystemExit("--repeat must be >= 1")
    if args.busy < 0:
        raise SystemExit("--busy must be >= 0")

    groups = [(r, d, w) for w in workloads for d in dtypes for r in rules]
    factored_groups, factored_skipped = [], []
    if "adafactor" in chosen:
        factored_groups = [(w, d) for w in workloads for d in dtypes if d in factored.DTYPES]
        factored_skipped = [{"implementation": "all", "optimizer": "adafactor", "dtype": d,
                             "reason": "Adafactor's table times its in-dtype modes (float32, float64, bfloat16, "
                                       "float16): no master-weight or 8-bit mode"}
                            for d in dtypes if d not in factored.DTYPES]
    progress = Progress((len(groups) + len(factored_groups)) * len(threads_list)
                        + (0 if args.no_overhead else 1), enabled=not args.quiet)
    started = time.perf_counter()
    all_rows, all_skipped, factored_points = [], [], []
    try:
        with BusyProcesses(args.busy):
            for rule, dtype, workload in groups:
                rows, skipped = run_group(rule, dtype, workload, threads_list, implementations,
                                          args.repeat, progress)
                all_rows += rows
                all_skipped += skipped
                progress.close()
                numpy_row = next((r for r in rows if r["implementation"] == "numpy"), None)
                for threads in threads_list:
                    group = [r for r in rows if r["threads"] == threads]
                    if group:
                        print(format_group(group, numpy_row), end="\n\n", flush=True)
            if factored_groups:
                factored_points = _run_factored(factored_groups, threads_list, implementations, args.repeat,
                                                progress)
            overhead = None if args.no_overhead else measure_overhead(args.repeat, max(threads_list), progress)
    finally:
        progress.close()

    all_skipped += factored_skipped
    reasons = {}
    for s in all_skipped:
        optimizers, modes = reasons.setdefault((s["implementation"], s["reason"]), ({}, {}))
        optimizers[s["optimizer"]] = modes[s["dtype"]] = None
    for (name, reason), (optimizers, modes) in reasons.items():
        # the modes too, once a run measures any but float32
        where = ", ".join(optimizers) + ("" if dtypes == ["float32"] else f"; {', '.join(modes)}")
        print(f"skipped {name} ({where}): {reason}")
    if reasons:
        print()
    if overhead:
        print(format_overhead(overhead), end="\n\n")
    verdicts = evaluate_goals(all_rows, overhead, default_threads=info["default_threads"], busy=args.busy)
    print(format_goals(verdicts))
    elapsed = time.perf_counter() - started
    end = machine_info()
    info.update({k: v for k, v in end.items() if k in ("torch", "numba")})
    if "load_average_1min" in end:
        info["load_average_1min_end"] = end["load_average_1min"]
    print(f"\n{info['cpu']}, {info['cpu_count']} CPUs, SIMD {info['simd_level']}; "
          f"medians of {args.repeat} samples; {elapsed:.0f} s")
    loads = [info[k] for k in ("load_average_1min", "load_average_1min_end") if k in info]
    if loads:
        # the start figure, since the end one counts this run itself
        loaded = loads[0] >= 0.5 * (info["cpu_count"] or 1)
        print(f"load average {' -> '.join(f'{x:.1f}' for x in loads)} (1 min, at start and end)"
              + ("; other processes were busy: multi-thread figures are unreliable" if loaded else ""))
    if args.busy:
        print(f"{args.busy} busy process{'es' if args.busy > 1 else ''} (--busy) spun throughout the measurement")
    if args.json:
        report = {"machine": info, "argv": sys.argv[1:], "repeat": args.repeat, "busy": args.busy,
                  "elapsed_s": elapsed, "results": all_rows, "adafactor": factored_points, "skipped": all_skipped,
                  "overhead": overhead, "goals": verdicts}
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


def _run_factored(groups, threads_list, implementations, repeat, progress):
    """Adafactor's table: each (workload, dtype) at each thread count; its points."""
    torch = factored.optional_torch()
    wanted = [i for i in factored.IMPLEMENTATIONS if i in implementations]
    points, lines = [], [factored.table_title(repeat), factored.HEADER, "-" * len(factored.HEADER)]
    for workload, dtype in groups:
        shapes = workload_shapes(workload)
        buffers = make_buffers(shapes, dtype)
        for threads in threads_list:
            progress.show(f"adafactor {dtype} {workload}, {threads} thread{'s' if threads > 1 else ''}")
            point = factored.measure_point(workload, shapes, dtype, threads, repeat, torch, wanted, buffers)
            progress.advance()
            points.append(point)
            lines.append(factored.format_point(point))
    progress.close()
    print("\n".join(lines) + ("" if torch else "\n(torch not installed: no torch.optim.Adafactor columns)"),
          end="\n\n", flush=True)
    return points
