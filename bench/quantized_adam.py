"""Adam with 8-bit block-quantized state against float32 state, side by side.

    python bench/quantized_adam.py [--size 10000000] [--threads 1,2] [--repeat 15] [--block-size 256]

Times, interleaved round by round on the same float32 params and grads:
fastopt's Adam with float32 state, the same with 8-bit state
(``fastopt.quantized_zeros``), the traffic ceiling of the float32 step
(``fastopt._core.ceiling_step``: the same 28 bytes per element, next to no math) and
``torch.optim.Adam(fused=True)`` in float32 when torch is installed.  It prints
medians with the interquartile range, the bytes each moves per element, the
state bytes per param, and the effective bandwidth of each step as a share of
the ceiling's (the 8-bit step has no ceiling kernel of its own: its share says
how close its fewer bytes come to the memory's speed).
"""

import argparse
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


def bytes_per_element(block_size):
    """Adam, float32 params and grads: param read and written, grad read, two state buffers."""
    fp32 = 4 + 4 + 4 + 2 * (4 + 4)
    # one uint8 code per element read and written, and one float32 scale per block
    q8 = 4 + 4 + 4 + 2 * (1 + 1 + 2 * 4 / block_size)
    return fp32, q8


def make_steps(n, block_size, threads, with_torch):
    rng = np.random.default_rng(0)
    param = rng.standard_normal(n).astype(np.float32)
    grad = (rng.standard_normal(n) * 1e-2).astype(np.float32)
    p32, m32, v32 = param.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)
    p8 = param.copy()
    m8 = fastopt.quantized_zeros(n, signed=True, block_size=block_size)
    v8 = fastopt.quantized_zeros(n, signed=False, block_size=block_size)
    pc, mc, vc = param.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)
    counts = {"fp32": 0, "8bit": 0}

    def fp32():
        counts["fp32"] += 1
        fastopt.adam_step(p32, grad, m32, v32, step=counts["fp32"], lr=1e-3, num_threads=threads)

    def q8():
        counts["8bit"] += 1
        fastopt.adam_step(p8, grad, m8, v8, step=counts["8bit"], lr=1e-3, num_threads=threads)

    def ceiling():
        fastopt._core.ceiling_step(pc, grad, mc, vc, num_threads=threads)

    steps = {"fastopt fp32 state": fp32, "fastopt 8-bit state": q8, "ceiling (fp32 traffic)": ceiling}
    if with_torch:
        import torch
        torch.set_num_threads(threads)
        tp = torch.from_numpy(param.copy()).requires_grad_()
        tp.grad = torch.from_numpy(grad)
        opt = torch.optim.Adam([tp], lr=1e-3, fused=True)
        steps["torch fused fp32"] = opt.step
    state_bytes = {"fastopt fp32 state": 8.0, "fastopt 8-bit state": (m8.nbytes + v8.nbytes) / n,
                   "ceiling (fp32 traffic)": 8.0, "torch fused fp32": 8.0}
    return steps, state_bytes


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=10_000_000)
    ap.add_argument("--threads", default=f"1,{os.cpu_count()}")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--block-size", type=int, default=256)
    args = ap.parse_args(argv)
    try:
        import torch  # noqa: F401
        with_torch = True
    except ImportError:
        with_torch = False
    fp32_bytes, q8_bytes = bytes_per_element(args.block_size)
    moved = {"fastopt fp32 state": fp32_bytes, "fastopt 8-bit state": q8_bytes,
             "ceiling (fp32 traffic)": fp32_bytes, "torch fused fp32": fp32_bytes}
    print(f"Adam, {args.size:.3g} float32 params, block size {args.block_size}; "
          f"{os.cpu_count()} CPUs, SIMD {fastopt._core.get_simd_level()}; medians of {args.repeat} interleaved rounds")
    for threads in sorted({int(t) for t in args.threads.split(",")}):
        steps, state_bytes = make_steps(args.size, args.block_size, threads, with_torch)
        times = {name: [] for name in steps}
        for step in steps.values():  # warm up: first touch, OpenMP's threads
            step()
        for _ in range(args.repeat):
            for name, step in steps.items():
                t0 = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - t0)
        med = {name: statistics.median(ts) for name, ts in times.items()}
        ceiling_gbs = moved["ceiling (fp32 traffic)"] * args.size / med["ceiling (fp32 traffic)"]
        print(f"\n{threads} thread(s)")
        print(f"{'':24} {'ms':>8} {'IQR %':>6} {'B/elem':>7} {'state B/param':>13} {'% ceiling GB/s':>14} "
              f"{'over 8-bit':>11}")
        for name, ts in times.items():
            q = statistics.quantiles(ts, n=4)
            gbs = moved[name] * args.size / med[name]
            print(f"{name:24} {med[name] * 1e3:8.2f} {100 * (q[2] - q[0]) / med[name]:6.0f} {moved[name]:7.2f} "
                  f"{state_bytes[name]:13.3f} {100 * gbs / ceiling_gbs:14.1f} "
                  f"{med[name] / med['fastopt 8-bit state']:10.2f}x")


if __name__ == "__main__":
    main()
