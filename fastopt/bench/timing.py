"""Timing: samples of back-to-back calls, interleaved round by round.

Every step function is warmed up (lazy state, JIT compile, first touch of
fresh pages), then timed in samples of ``number`` back-to-back calls, with
``number`` chosen so that one sample lasts at least ``MIN_SAMPLE_S``.  The
samples of all step functions of a group are interleaved round by round, so
that a burst of load from elsewhere hits all of them alike.
"""

import gc
import math
import sys
import time

from fastopt.bench.modes import get_mode
from fastopt.bench.peers import own_state_bytes

MIN_SAMPLE_S = 2e-3       # one sample lasts at least this long
IDLE_GAP_S = 5e-3         # idle before each sample: other OpenMP runtimes stop spinning
INTERLEAVE_MAX_BYTES = 5 << 30   # gpt2-small float32: fastopt, ceiling, torch fused together
# Who joins the interleaved set first when not all fit: the goals' key ratios first.
INTERLEAVE_PRIORITY = ("fastopt", "ceiling", "torch-fused", "fastopt-torch", "numba", "fastopt-optim",
                       "fastopt-per-tensor", "numpy", "torch-foreach", "torch-forloop", "torchao-8bit",
                       "bnb-8bit", "deepspeed-cpu-adam", "deepspeed-cpu-lion")


def _timed(fn, number):
    """Seconds per call of ``number`` back-to-back calls, garbage collector paused."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        return (time.perf_counter() - start) / number
    finally:
        if gc_was_enabled:
            gc.enable()


def calibrate(fn, min_sample_s=MIN_SAMPLE_S):
    """Calls per sample so that one sample lasts at least ``min_sample_s``."""
    number = 1
    while True:
        per_call = _timed(fn, number)
        if per_call * number >= min_sample_s:
            return number
        number = max(number * 2, math.ceil(1.2 * min_sample_s / max(per_call, 1e-9)))


def measure(steps, repeat, min_sample_s=MIN_SAMPLE_S, idle_gap_s=IDLE_GAP_S):
    """Per-call seconds of each step function: ``repeat`` samples each,
    interleaved round by round after a warm-up; returns {name: [samples]}."""
    numbers = {}
    for name, fn in steps.items():
        _prepare(fn)
        fn()
        fn()
        numbers[name] = calibrate(fn, min_sample_s)
    samples = {name: [] for name in steps}
    for _ in range(repeat):
        for name, fn in steps.items():
            _prepare(fn)
            time.sleep(idle_gap_s)
            samples[name].append(_timed(fn, numbers[name]))
    return samples


def _prepare(fn):
    prepare = getattr(fn, "prepare", None)
    if prepare is not None:
        prepare()


class Progress:
    """One line on stderr that says what runs now (rewritten in place on a terminal)."""

    def __init__(self, total, stream=None, enabled=True):
        self.total, self.done, self.enabled = total, 0, enabled
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()

    def show(self, text):
        if not self.enabled:
            return
        line = f"[{self.done}/{self.total} {time.perf_counter() - self.start:5.1f}s] {text}"
        self.stream.write(f"\r\033[K{line}" if self.tty else line + "\n")
        self.stream.flush()

    def advance(self, n=1):
        self.done += n

    def close(self):
        if self.enabled and self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


def plan_interleaving(implementations, rule, params, max_bytes=INTERLEAVE_MAX_BYTES, mode=None):
    """Split implementations into (together, alone): those timed interleaved,
    in INTERLEAVE_PRIORITY order while their memory fits in ``max_bytes``
    (params, grads, the shared state and copies counted once), and the rest,
    each timed on its own with only its state alive.  ``mode``: the precision
    mode (None: the params' dtype throughout)."""
    mode = get_mode(params[0].dtype if mode is None else mode)
    n = sum(p.size for p in params)
    per_state = 1 if mode.eight_bit else mode.dtype_of(mode.state).itemsize
    per_element = sum(mode.dtype_of(d).itemsize for d in (mode.param, mode.grad, mode.copy) if d)
    budget = max_bytes - n * (per_element + rule.n_state * per_state)
    together, alone = [], []
    for name in sorted(implementations, key=INTERLEAVE_PRIORITY.index):
        cost = own_state_bytes(name, rule, params, mode)
        if cost <= budget:
            together.append(name)
            budget -= cost
        else:
            alone.append(name)
    return together, alone
