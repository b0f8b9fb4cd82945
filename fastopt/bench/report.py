"""The report: one row per implementation, the ratios between rows, the tables, the machine.

A ratio of two implementations timed in the same rounds (% of the ceiling,
speedups) is the median of the per-round ratios, so load that comes and goes
between rounds cancels out.  Bandwidth is *effective* bandwidth: the bytes the
rule must move in the run's precision mode (read param, grad and each state
buffer, write param and each state buffer, write the 16-bit copy of a master
mode), divided by the time, whatever an implementation moves in fact.
"""

import os
import platform
import statistics
import sys

import numpy as np

import fastopt
from fastopt import _core
from fastopt.bench.modes import get_mode
from fastopt.bench.overhead import FIRST_CALL_ELEMENTS, OVERHEAD_TENSORS
from fastopt.bench.peers import IMPLEMENTATIONS, PEERS
from fastopt.bench.workloads import count_params


def make_row(rule, dtype, workload, shapes, threads, implementation, samples, bytes_per_param=None,
             state_bytes_per_param=None, own_state_bytes_per_param=None):
    """The figures of one implementation in one group, from its samples (seconds per call).

    ``dtype`` is the precision mode; ``bytes_per_param`` what its step moves and
    ``state_bytes_per_param`` what its optimizer keeps (None: a plain dtype's
    count); ``own_state_bytes_per_param`` what this implementation keeps where
    that is not the mode's (torch's float32 state against 8-bit state).
    """
    n = count_params(shapes)
    median = statistics.median(samples)
    if bytes_per_param is None or state_bytes_per_param is None:
        if not get_mode(dtype).plain:
            raise ValueError(f"the bytes of mode {dtype} are counted on its buffers (fastopt.bench.modes)")
        bytes_per_param = rule.bytes_per_param(dtype)
        state_bytes_per_param = rule.n_state * np.dtype(dtype).itemsize
    return {
        "optimizer": rule.name, "dtype": dtype, "workload": workload,
        "n_tensors": len(shapes), "n_params": n, "threads": threads,
        "implementation": implementation, "bytes_per_param": _exact(bytes_per_param),
        "state_bytes_per_param": _exact(state_bytes_per_param),
        "own_state_bytes_per_param": _exact(state_bytes_per_param if own_state_bytes_per_param is None
                                            else own_state_bytes_per_param),
        "median_s": median, "samples_s": samples, "spread_pct": spread_pct(samples),
        "ms_per_step": median * 1e3, "ns_per_param": median * 1e9 / n,
        "gb_per_s": bytes_per_param * n / median / 1e9,
    }


def _exact(x):
    """An integral count as an int (28, not 28.0)."""
    return int(x) if float(x).is_integer() else x


def spread_pct(samples):
    """Interquartile range as % of the median: how far to trust the median."""
    if len(samples) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return 100 * (q3 - q1) / statistics.median(samples)


def ratio(a, b):
    """Time of row a over time of row b.  Timed in the same interleaved rounds,
    it is the median of the per-round ratios, so load that comes and goes
    between rounds cancels; otherwise the ratio of the medians."""
    paired = (a is not b and a.get("interleaved") and b.get("interleaved")
              and a["threads"] == b["threads"] and len(a["samples_s"]) == len(b["samples_s"]))
    if paired:
        return paired_ratio(a["samples_s"], b["samples_s"])
    return a["median_s"] / b["median_s"]


def paired_ratio(a_samples, b_samples):
    """Median over rounds of a's sample over b's sample of the same round."""
    return statistics.median(x / y for x, y in zip(a_samples, b_samples, strict=True))


def add_ratios(rows, numpy_row):
    """% of the ceiling for every row, and how many times faster fastopt is than each."""
    by_impl = {r["implementation"]: r for r in rows}
    if numpy_row is not None:
        by_impl.setdefault("numpy", numpy_row)
    ceiling, ours = by_impl.get("ceiling"), by_impl.get("fastopt")
    for r in rows:
        r["pct_of_ceiling"] = 100 * ratio(ceiling, r) if ceiling else None
        r["fastopt_speedup"] = ratio(r, ours) if ours else None
    if ours:
        ours["speedup_over"] = {name: ratio(r, ours) for name, r in by_impl.items() if name in PEERS}


def machine_info():
    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "fastopt": fastopt.__version__,
        "simd_level": _core.get_simd_level(),
        "default_threads": fastopt.get_num_threads(),
    }
    if hasattr(os, "sched_getaffinity"):
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    if hasattr(os, "getloadavg"):
        info["load_average_1min"] = os.getloadavg()[0]
    for package in ("torch", "numba"):
        if package in sys.modules:
            info[package] = getattr(sys.modules[package], "__version__", "?")
    return info


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _size(n):
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e6:.2f}M" if n >= 1e4 else str(n)


def _fmt(x, digits):
    return "-" if x is None else f"{x:.{digits}f}"


def _bytes(x):
    return f"{x:.2f}" if isinstance(x, float) else str(x)


def format_group(rows, numpy_row=None):
    """The table of one rule/mode/workload/thread count.

    Off float32 and float64 the head also says what the optimizer keeps per
    param and what the mode is; a column of the state each keeps appears
    where an implementation keeps other state than the mode's."""
    first = rows[0]
    threads = first["threads"]
    mode = get_mode(first["dtype"])
    state = ""
    if not mode.plain:
        state = (f", state {_bytes(first['state_bytes_per_param'])} B/param"
                 + (" (master included)" if mode.master else ""))
    head = (f"{first['optimizer']} {first['dtype']} {first['workload']}: {first['n_tensors']} "
            f"tensor{'s' if first['n_tensors'] > 1 else ''}, {_size(first['n_params'])} params, "
            f"{_bytes(first['bytes_per_param'])} B/param{state}; {threads} thread{'s' if threads > 1 else ''}")
    if not mode.plain:
        head += f"\n  {mode.summary}"
    shown = list(rows)
    ours = next((r for r in rows if r["implementation"] == "fastopt"), None)
    if numpy_row is not None and all(r is not numpy_row for r in rows):
        shown.append(dict(numpy_row, pct_of_ceiling=None,
                          fastopt_speedup=ours["speedup_over"].get("numpy") if ours else None))
    order = {name: i for i, name in enumerate(IMPLEMENTATIONS)}
    shown.sort(key=lambda r: order.get(r["implementation"], len(order)))
    own_state = any(r.get("own_state_bytes_per_param", r.get("state_bytes_per_param"))
                    != r.get("state_bytes_per_param") for r in shown)
    lines = [head, f"  {'implementation':<20}{'ms/step':>10}{'IQR %':>7}{'ns/param':>10}{'GB/s':>8}"
                   f"{'% ceiling':>11}{'fastopt x':>11}" + (f"{'state B/p':>11}" if own_state else "")]
    for r in shown:
        name = (r["implementation"] + (" (serial)" if r["implementation"] == "numpy" else "")
                + ("" if r.get("interleaved", True) else " *"))
        lines.append(f"  {name:<20}{r['ms_per_step']:>10.4g}{r['spread_pct']:>7.0f}{r['ns_per_param']:>10.3f}"
                     f"{r['gb_per_s']:>8.1f}{_fmt(r['pct_of_ceiling'], 1):>11}"
                     f"{_fmt(r['fastopt_speedup'], 2):>11}"
                     + (f"{_fmt(r['own_state_bytes_per_param'], 2):>11}" if own_state else ""))
    if not all(r.get("interleaved", True) for r in shown):
        lines.append("  * timed on its own, not interleaved (memory): its ratios carry any drift of load")
    return "\n".join(lines)


def format_overhead(overhead):
    return "\n".join([
        "Per-call overhead (Adam float32, fastopt):",
        f"  16-element step, one array          {overhead['adam16_us']:8.3f} us/call",
        f"  16-element step, list of 1          {overhead['adam16_list1_us']:8.3f} us/call",
        f"  extra per tensor in a list call     {overhead['per_tensor_us']:8.3f} us/tensor"
        f"  (lists of {OVERHEAD_TENSORS} vs 1 tensor of 16)",
        f"  import fastopt, numpy imported      {overhead['import_ms']:8.1f} ms"
        f"  (import numpy itself: {overhead['import_numpy_ms']:.1f} ms)",
        f"  first call of a process, {overhead['first_call_threads']:>2} thr.  {overhead['first_call_us']:8.1f} us"
        f"  (median of next 100: {overhead['later_call_us']:.1f} us, ratio {overhead['first_call_ratio']:.2f};"
        f" {FIRST_CALL_ELEMENTS:.0e} elements)",
        f"  first call of a process,  1 thr.  {overhead['first_call_1thread_us']:8.1f} us"
        f"  (median of next 100: {overhead['later_call_1thread_us']:.1f} us,"
        f" ratio {overhead['first_call_ratio_1thread']:.2f})",
    ])
