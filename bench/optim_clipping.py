"""Costs of the training API, measured side by side (medians of interleaved repeats).

    python bench/optim_clipping.py [--elements N] [--repeat R]

1. The norm pass against NumPy's fastest read of the same bytes (np.dot).
2. An Adam step with clipping folded in (max_grad_norm=) against an unclipped
   step, and against clip_grad_norm followed by an unclipped step.
3. The per-step overhead of an optimizer over many small arrays against one
   direct fused call, and against torch.optim.Adam when torch is installed.
"""

import argparse
import math
import statistics
import time

import numpy as np

import fastopt
from fastopt import _core, optim


def medians(cases, repeat):
    """Median seconds per case; the cases take turns so that load on the machine hits all alike."""
    times = {name: [] for name in cases}
    for _ in range(repeat):
        for name, run in cases.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def report(title, results, unit=1e3, suffix="ms"):
    base = next(iter(results.values()))
    print(title)
    for name, t in results.items():
        print(f"  {name:<44} {t * unit:9.3f} {suffix}   x{t / base:5.2f}")


def norm_pass(n, repeat):
    for dtype in (np.float32, np.float64):
        x = np.random.default_rng(0).standard_normal(n).astype(dtype)
        cases = {f"np.dot(x, x) {dtype.__name__}": lambda: np.dot(x, x)}
        for threads in (1, 2):
            for p in (2, math.inf):
                cases[f"total_norm p={p} threads={threads}"] = (
                    lambda p=p, threads=threads: _core.total_norm(x, p, threads))
        report(f"norm pass over {n:,} {dtype.__name__} ({x.nbytes / 1e6:.0f} MB)", medians(cases, repeat))


def clipping(n, repeat):
    sizes = [n // 2, n // 4, n // 4]
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal(s).astype(np.float32) for s in sizes]
    # clip_grad_norm rewrites these in place; with max_norm < 1 every call scales them again
    clipped_in_place = [g.copy() for g in grads]
    max_norm = 0.5

    def adam(**options):
        return optim.Adam([np.zeros(s, np.float32) for s in sizes], lr=1e-4, **options)

    plain, folded, skipping, explicit = adam(), adam(max_grad_norm=max_norm), adam(skip_nonfinite=True), adam()

    def clip_then_step():
        fastopt.clip_grad_norm(clipped_in_place, max_norm)
        explicit.step(clipped_in_place)

    results = medians({
        "Adam step": lambda: plain.step(grads),
        "Adam step, max_grad_norm (folded)": lambda: folded.step(grads),
        "clip_grad_norm, then Adam step": clip_then_step,
        "Adam step, skip_nonfinite=True": lambda: skipping.step(grads),
        "the norm pass alone": lambda: _core.total_norm(grads, 2.0),
    }, repeat)
    report(f"clipping, Adam over {n:,} float32 in 3 arrays, {fastopt.get_num_threads()} threads", results)


def overhead(repeat):
    sizes = [256] * 50 + [64] * 50
    rng = np.random.default_rng(2)
    grads = [rng.standard_normal(s).astype(np.float32) for s in sizes]
    params = [np.zeros(s, np.float32) for s in sizes]
    opt = optim.Adam(params, lr=1e-4)
    m, v = [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params]
    direct_params = [np.zeros_like(p) for p in params]
    two_groups = optim.Adam([{"params": [np.zeros_like(p) for p in params[:50]]},
                             {"params": [np.zeros_like(p) for p in params[50:]], "lr": 1e-3}], lr=1e-4)
    cases = {
        "fastopt.adam_step (one fused call)": lambda: fastopt.adam_step(direct_params, grads, m, v, step=1, lr=1e-4),
        "optim.Adam.step, one group": lambda: opt.step(grads),
        "optim.Adam.step, two groups": lambda: two_groups.step(grads),
    }
    try:
        import torch

        tensors = [torch.zeros(s) for s in sizes]
        for t, g in zip(tensors, grads):
            t.grad = torch.from_numpy(g)
        torch_opt = torch.optim.Adam(tensors, lr=1e-4)
        cases["torch.optim.Adam.step (default, CPU)"] = torch_opt.step
    except ImportError:
        pass
    report(f"per-step cost over {len(sizes)} small float32 arrays ({sum(sizes):,} elements)",
           medians(cases, repeat), unit=1e6, suffix="us")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=1 << 24)
    parser.add_argument("--repeat", type=int, default=21)
    args = parser.parse_args()
    norm_pass(args.elements, args.repeat)
    clipping(args.elements, args.repeat)
    overhead(args.repeat * 20)


if __name__ == "__main__":
    main()
