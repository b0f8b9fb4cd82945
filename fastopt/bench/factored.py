"""Adafactor side by side: fastopt's list call, fastopt.optim, torch.optim.Adafactor, the traffic ceiling.

Adafactor's state is not the param's shape (row and column factors for a
matrix), so it is timed here rather than with the registry's rules, with the
same timing (samples interleaved round by round, ratios as medians of
per-round ratios).  Bytes per element, with the dtype's size as the unit s:

- a matrix (ndim >= 2): its sums (param², grad² by row and by column) read
  param and grad (2s), its update norm grad (s), its update param and grad
  and writes param (3s): 6s, the factors' m + n values aside;
- a vector: its first pass reads param, grad and variance and writes
  variance (4s), its update reads the three and writes param (4s): 8s.

The ceiling is ``fastopt._core.ceiling_step`` with two state buffers, 7s per
element in one pass; "% ceiling" compares bytes per second.  torch-foreach and
torch-forloop are torch.optim.Adafactor(foreach=True/False) on
``torch.from_numpy`` views of copies of the params (torch has no fused CPU
Adafactor).  bfloat16 and float16 are in-dtype modes (params, grads and
factors 16-bit, float32 arithmetic), as torch steps such params.
"""

import math
import statistics

import numpy as np

import fastopt
from fastopt import optim
from fastopt.bench import peers, report, workloads
from fastopt.bench.timing import measure
from fastopt.factored import factor_shapes

STEP = 10   # past the first steps, as the registry's rules are timed
DTYPES = ("float32", "float64", "bfloat16", "float16")
# what the table can time; fastopt and the ceiling are always timed (the % column)
IMPLEMENTATIONS = ("fastopt", "fastopt-optim", "ceiling", "torch-foreach", "torch-forloop")


def bytes_per_step(shapes, dtype):
    s = workloads.numpy_dtype(dtype).itemsize
    return sum(math.prod(shape) * (6 if len(shape) >= 2 else 8) * s for shape in shapes)


def new_state(params):
    state = {"row_var": [], "col_var": [], "variance": []}
    for p in params:
        rows, cols = factor_shapes(p.shape) if p.ndim >= 2 else (None, None)
        state["row_var"].append(None if rows is None else np.zeros(rows, p.dtype))
        state["col_var"].append(None if cols is None else np.zeros(cols, p.dtype))
        state["variance"].append(np.zeros_like(p) if p.ndim < 2 else None)
    return state


def make_steps(params, grads, threads, torch, implementations=IMPLEMENTATIONS):
    state = new_state(params)
    steps = {
        "fastopt": lambda: fastopt.adafactor_step(params, grads, state["row_var"], state["col_var"],
                                                  state["variance"], step=STEP, num_threads=threads),
    }
    if "fastopt-optim" in implementations:
        opt = optim.Adafactor(params, num_threads=threads)
        opt.state[0]["step"] = STEP
        steps["fastopt-optim"] = lambda: opt.step(grads)
    extra = [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params]
    steps["ceiling"] = lambda: fastopt._core.ceiling_step(params, grads, *extra, num_threads=threads)
    if torch is not None:
        for name, foreach in (("torch-foreach", True), ("torch-forloop", False)):
            if name not in implementations:
                continue
            tensors = [peers.as_tensor(torch, p.copy()) for p in params]
            for t, g in zip(tensors, grads):
                t.grad = peers.as_tensor(torch, g)
            topt = torch.optim.Adafactor(tensors, foreach=foreach)

            def step(topt=topt):
                torch.set_num_threads(threads)
                topt.step()
            steps[name] = step
    return steps


def optional_torch():
    """torch, or None where it is not installed (its columns are left out)."""
    try:
        import torch
    except ImportError:
        return None
    return torch if hasattr(torch.optim, "Adafactor") else None


def measure_point(workload, shapes, dtype, threads, repeat, torch, implementations=IMPLEMENTATIONS,
                  params_and_grads=None):
    """One row of the table: every implementation at one thread count, as a dict of figures."""
    params, grads = params_and_grads or workloads.make_buffers(shapes, dtype)
    n_params = workloads.count_params(shapes)
    moved = bytes_per_step(shapes, dtype)
    ceiling_moved = n_params * 7 * workloads.numpy_dtype(dtype).itemsize
    samples = measure(make_steps(params, grads, threads, torch, implementations), repeat)
    pct = 100 * moved / ceiling_moved * report.paired_ratio(samples["ceiling"], samples["fastopt"])
    over = {k: report.paired_ratio(samples[k], samples["fastopt"]) for k in samples if k != "fastopt"}
    return {"workload": workload, "dtype": dtype, "threads": threads, "n_params": n_params,
            "bytes_per_step": moved, "median_s": {k: statistics.median(v) for k, v in samples.items()},
            "samples_s": samples, "pct_of_ceiling": pct, "times_faster_than": over,
            "spread_pct": {k: report.spread_pct(v) for k, v in samples.items()}}


HEADER = (f"{'workload':>11} {'dtype':>7} {'thr':>3} | {'fastopt ms':>10} {'ceiling ms':>10} {'%ceil':>6} | "
          f"{'optim/bare':>10} | {'x foreach':>9} {'x forloop':>9}")


def format_point(point):
    over, medians = point["times_faster_than"], point["median_s"]

    def cell(key, width=9):   # (over: a median of its time over fastopt's, round by round)
        return f"{over[key]:>{width}.2f}" if key in over else f"{'-':>{width}}"
    return (f"{point['workload']:>11} {point['dtype']:>7} {point['threads']:>3} | "
            f"{medians['fastopt'] * 1e3:>10.4g} {medians['ceiling'] * 1e3:>10.4g} {point['pct_of_ceiling']:>6.1f} | "
            f"{cell('fastopt-optim', width=10)} | {cell('torch-foreach')} {cell('torch-forloop')}   "
            f"(spread {point['spread_pct']['fastopt']:.0f}%)")


def table_title(repeat):
    return (f"Adafactor; {report.cpu_model()}; medians of {repeat} samples, ratios as medians of per-round "
            f"ratios; % of the ceiling's bytes per second, 6 words per matrix element and 8 per vector element")
