"""Throughput of every step, side by side: ``python -m fastopt bench`` and the suite in ``bench/``.

For one optimizer rule, dtype, workload (a list of tensor shapes) and thread
count, these implementations run on the same params and grads:

======================== =======================================================
``fastopt``              one list call for the whole model
``fastopt-per-tensor``   one fastopt call per tensor
``numpy``                :mod:`fastopt.reference`, the pure-NumPy twin (serial)
``ceiling``              ``fastopt._core.ceiling_step`` with the rule's number of
                         state buffers: the same memory traffic, next to no math
``torch-forloop``        ``torch.optim`` on ``torch.from_numpy`` views,
``torch-foreach``        ``foreach=True``,
``torch-fused``          ``fused=True`` (when torch is installed)
``numba``                ``@njit(parallel=True, fastmath=False)`` prange loop of
                         the same formula, one call per tensor (when installed)
======================== =======================================================

How it measures, so that ratios are fair on a shared, noisy machine:

- every implementation is warmed up (lazy state, JIT compile, first touch of
  fresh pages), then timed in samples of ``number`` back-to-back calls, with
  ``number`` chosen so one sample lasts at least ``MIN_SAMPLE_S``;
- the samples of all implementations of a group are interleaved round by
  round, so a burst of load from elsewhere hits all of them alike; the
  figure is the median.  Where not all fit in ``INTERLEAVE_MAX_BYTES``
  (gpt2-small), the key ones are interleaved, the rest timed one by one;
- a ratio of two implementations timed in the same rounds (% of the ceiling,
  speedups) is the median of the per-round ratios, so load that comes and
  goes between rounds cancels out;
- before each sample the process idles ``IDLE_GAP_S``, so OpenMP worker
  threads of one runtime (fastopt's, torch's, numba's) have stopped spinning
  before another runtime starts.

Bandwidth is *effective* bandwidth: the bytes the rule must move (read param,
grad and each state buffer, write param and each state buffer), divided by
the time, whatever an implementation moves in fact.
"""

import argparse
import gc
import importlib
import importlib.util
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np

import fastopt
from fastopt import _core, reference

# --------------------------------------------------------------------------
# workloads: lists of tensor shapes

_GPT2_BLOCK = [
    (768,), (768,),                 # ln_1
    (768, 2304), (2304,),           # attn.c_attn
    (768, 768), (768,),             # attn.c_proj
    (768,), (768,),                 # ln_2
    (768, 3072), (3072,),           # mlp.c_fc
    (3072, 768), (768,),            # mlp.c_proj
]

WORKLOADS = {
    "1e5": [(100_000,)],
    "1e7": [(10_000_000,)],
    "mnist-mlp": [(784, 256), (256,), (256, 128), (128,), (128, 10), (10,)],
    # wte, wpe, 12 blocks, ln_f: 148 tensors, 124,439,808 params
    "gpt2-small": [(50257, 768), (1024, 768)] + _GPT2_BLOCK * 12 + [(768,), (768,)],
}

_NUMERIC_WORKLOAD = re.compile(r"^(\d+(?:\.\d+)?(?:e\d+)?)(?:x(\d+))?$")


def workload_shapes(name):
    """The shapes of workload ``name``: one of WORKLOADS, or ``N`` (one buffer of
    N elements, e.g. ``1e5``) or ``NxK`` (K buffers of N elements, e.g. ``16x148``)."""
    if name in WORKLOADS:
        return list(WORKLOADS[name])
    match = _NUMERIC_WORKLOAD.match(name)
    size = float(match.group(1)) if match else -1.0
    if size < 1 or size != int(size):
        raise ValueError(f"unknown workload {name!r}: use one of {', '.join(WORKLOADS)}, "
                         f"a size such as 1e5, or NxK for K buffers of N elements")
    return [(int(size),)] * int(match.group(2) or 1)


def count_params(shapes):
    return sum(math.prod(s) for s in shapes)


def make_buffers(shapes, dtype, seed=0):
    """Params and grads, standard normal: values stay finite and normal (no
    denormals) over thousands of steps of every rule."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s, dtype=dtype) for s in shapes]
    grads = [rng.standard_normal(s, dtype=dtype) for s in shapes]
    return params, grads


# --------------------------------------------------------------------------
# optimizer rules as benchmarked


@dataclass
class Rule:
    """One optimizer configuration: a fastopt function and its hyperparameters."""

    name: str
    function: str                   # in fastopt and in fastopt.reference
    states: tuple = ()              # state buffers passed by position
    keyword_states: tuple = ()      # state buffers passed by keyword
    hyper: dict = field(default_factory=dict)
    uses_step: bool = False
    torch_optimizer: str = ""       # class in torch.optim

    @property
    def state_names(self):
        return self.states + self.keyword_states

    @property
    def n_state(self):
        return len(self.state_names)

    def bytes_per_param(self, dtype):
        """Read param, grad and every state buffer; write param and every state buffer."""
        return np.dtype(dtype).itemsize * (3 + 2 * self.n_state)

    def torch_kwargs(self):
        """The hyperparameters in torch.optim's names."""
        kwargs = dict(self.hyper)
        if "beta1" in kwargs:
            kwargs["betas"] = (kwargs.pop("beta1"), kwargs.pop("beta2"))
        if "beta" in kwargs:
            # the lecture's EMA momentum v <- b v + (1-b) g is SGD with dampening = momentum
            kwargs["momentum"] = kwargs["dampening"] = kwargs.pop("beta")
        return kwargs


_ADAM_HYPER = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)
_ADAM_STATES = ("exp_avg", "exp_avg_sq")

RULES = {rule.name: rule for rule in [
    Rule("sgd", "sgd_step", hyper=dict(lr=1e-3), torch_optimizer="SGD"),
    Rule("momentum", "momentum_step", ("velocity",), hyper=dict(lr=1e-3, beta=0.9),
         torch_optimizer="SGD"),
    Rule("sgd_momentum", "sgd_momentum_step", ("momentum_buffer",),
         hyper=dict(lr=1e-3, momentum=0.9), uses_step=True, torch_optimizer="SGD"),
    Rule("nesterov", "sgd_momentum_step", ("momentum_buffer",),
         hyper=dict(lr=1e-3, momentum=0.9, nesterov=True), uses_step=True, torch_optimizer="SGD"),
    Rule("rmsprop", "rmsprop_step", ("square_avg",), hyper=dict(lr=1e-2, alpha=0.99, eps=1e-8),
         torch_optimizer="RMSprop"),
    Rule("rmsprop_centered", "rmsprop_step", ("square_avg",), ("grad_avg", "momentum_buffer"),
         hyper=dict(lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.9, centered=True),
         torch_optimizer="RMSprop"),
    Rule("adagrad", "adagrad_step", ("state_sum",), hyper=dict(lr=1e-2, eps=1e-10),
         uses_step=True, torch_optimizer="Adagrad"),
    Rule("adam", "adam_step", _ADAM_STATES, hyper=_ADAM_HYPER, uses_step=True,
         torch_optimizer="Adam"),
    Rule("amsgrad", "adam_step", _ADAM_STATES, ("max_exp_avg_sq",),
         hyper=dict(_ADAM_HYPER, amsgrad=True), uses_step=True, torch_optimizer="Adam"),
    Rule("adamw", "adamw_step", _ADAM_STATES, hyper=dict(_ADAM_HYPER, weight_decay=1e-2),
         uses_step=True, torch_optimizer="AdamW"),
]}

DTYPES = ("float32", "float64")

IMPLEMENTATIONS = ("fastopt", "fastopt-per-tensor", "numpy", "ceiling",
                   "torch-forloop", "torch-foreach", "torch-fused", "numba")
PEERS = ("numpy", "torch-forloop", "torch-foreach", "torch-fused", "numba")

# The step number passed to rules that take one: past the first step, so
# torch.optim.SGD's "buffer = g at step 1" branch is not what is timed.
BENCH_STEP = 10


class Unavailable(Exception):
    """This implementation cannot run here (package missing, option unsupported)."""


def _optional(module_name):
    if importlib.util.find_spec(module_name) is None:
        raise Unavailable(f"{module_name} is not installed")
    return importlib.import_module(module_name)


def new_states(rule, params):
    """Zeroed state buffers of the rule, one list per state name."""
    return {name: [np.zeros_like(p) for p in params] for name in rule.state_names}


def _fastopt_arguments(rule, states, threads, step):
    positional = [states[name] for name in rule.states]
    keywords = dict(rule.hyper, **{name: states[name] for name in rule.keyword_states})
    if threads is not None:
        keywords["num_threads"] = threads
    if rule.uses_step:
        keywords["step"] = step
    return positional, keywords


def _fastopt_list(module, rule, params, grads, threads, step, states):
    function = getattr(module, rule.function)
    positional, keywords = _fastopt_arguments(rule, states, threads, step)
    return lambda: function(params, grads, *positional, **keywords)


def _fastopt_per_tensor(rule, params, grads, threads, step, states):
    function = getattr(fastopt, rule.function)
    positional, keywords = _fastopt_arguments(rule, states, threads, step)
    calls = [((p, g, *(s[i] for s in positional)),
              {k: (v[i] if isinstance(v, list) else v) for k, v in keywords.items()})
             for i, (p, g) in enumerate(zip(params, grads))]

    def step_all():
        for args, kwargs in calls:
            function(*args, **kwargs)
    return step_all


def _ceiling(rule, params, grads, threads):
    states = [[np.zeros_like(p) for p in params] for _ in range(rule.n_state)]
    return lambda: _core.ceiling_step(params, grads, *states, num_threads=threads)


def _with_prepare(step, prepare):
    """Attach what must run before timing ``step``: torch and numba keep their
    thread count in process-wide state, and each (through the OpenMP runtime
    they share) can change the other's, so it is set again before each sample."""
    step.prepare = prepare
    return step


def _torch(mode, rule, params, grads, threads):
    torch = _optional("torch")
    optimizer_class = getattr(torch.optim, rule.torch_optimizer)
    tensors = [torch.from_numpy(p).requires_grad_() for p in params]
    for tensor, grad in zip(tensors, grads):
        # torch may update grads in place (foreach nesterov does): its own copy
        tensor.grad = torch.from_numpy(grad.copy())
    mode_kwargs = {"forloop": dict(foreach=False), "foreach": dict(foreach=True),
                   "fused": dict(fused=True)}[mode]
    try:
        optimizer = optimizer_class(tensors, **rule.torch_kwargs(), **mode_kwargs)
        torch.set_num_threads(threads)
        optimizer.step()
    except (TypeError, RuntimeError, ValueError) as exc:
        raise Unavailable(f"torch.optim.{rule.torch_optimizer}({', '.join(f'{k}=True' for k in mode_kwargs)})"
                          f": {str(exc).splitlines()[0]}") from None

    def step():
        optimizer.step()
    return _with_prepare(step, lambda: torch.set_num_threads(threads))


# These take the rule's state as ndarrays, so they can share one set: they
# apply the same rule, so the state evolves as one optimizer's would.
SHARED_STATE = ("fastopt", "fastopt-per-tensor", "numpy", "numba")


def make_step(implementation, rule, dtype, params, grads, threads, step=BENCH_STEP, states=None):
    """A function of no arguments doing one step of ``rule`` with ``implementation``.

    ``params``/``grads`` are shared (and updated).  ``states`` (from
    ``new_states``) is the rule's state for implementations in SHARED_STATE,
    zeroed new buffers if None; the others always have their own.
    ``threads`` is a count (None: fastopt's default).  Raises Unavailable
    when it cannot run here.  The function may have a ``prepare`` attribute:
    call it before timing (see ``measure``).
    """
    if isinstance(rule, str):
        rule = RULES[rule]
    if threads is None:
        threads = fastopt.get_num_threads()
    if implementation in SHARED_STATE and states is None:
        states = new_states(rule, params)
    if implementation == "fastopt":
        return _fastopt_list(fastopt, rule, params, grads, threads, step, states)
    if implementation == "fastopt-per-tensor":
        return _fastopt_per_tensor(rule, params, grads, threads, step, states)
    if implementation == "numpy":
        return _fastopt_list(reference, rule, params, grads, None, step, states)
    if implementation == "ceiling":
        return _ceiling(rule, params, grads, threads)
    if implementation.startswith("torch-"):
        return _torch(implementation[len("torch-"):], rule, params, grads, threads)
    if implementation == "numba":
        return _numba_step(rule, params, grads, threads, step, states)
    raise ValueError(f"unknown implementation {implementation!r}; one of {', '.join(IMPLEMENTATIONS)}")


def own_state_bytes(implementation, rule, params):
    """Memory an implementation allocates beyond params, grads and the shared state."""
    if implementation in SHARED_STATE:
        return 0
    nbytes = sum(p.nbytes for p in params)
    return nbytes * (rule.n_state + (1 if implementation.startswith("torch-") else 0))


# --------------------------------------------------------------------------
# numba: the same formulas as prange loops, compiled on first use

_NUMBA_KERNELS = None


def _numba_kernels():
    global _NUMBA_KERNELS
    if _NUMBA_KERNELS is not None:
        return _NUMBA_KERNELS
    numba = _optional("numba")
    jit = numba.njit(parallel=True, fastmath=False, cache=False)
    prange = numba.prange

    @jit
    def sgd(p, g, lr):
        for i in prange(p.size):
            p[i] = p[i] - lr * g[i]

    @jit
    def sgd_momentum(p, g, b, lr, mu, one_minus_tau, first, nesterov):
        for i in prange(p.size):
            bi = g[i] if first else mu * b[i] + one_minus_tau * g[i]
            b[i] = bi
            d = g[i] + mu * bi if nesterov else bi
            p[i] = p[i] - lr * d

    @jit
    def rmsprop(p, g, s, a, b, lr, alpha, one_minus_alpha, eps, mu, centered, use_momentum):
        for i in prange(p.size):
            gi = g[i]
            si = alpha * s[i] + one_minus_alpha * (gi * gi)
            s[i] = si
            if centered:
                ai = alpha * a[i] + one_minus_alpha * gi
                a[i] = ai
                avg = np.sqrt(si - ai * ai) + eps
            else:
                avg = np.sqrt(si) + eps
            if use_momentum:
                bi = mu * b[i] + gi / avg
                b[i] = bi
                p[i] = p[i] - lr * bi
            else:
                p[i] = p[i] - lr * (gi / avg)

    @jit
    def adagrad(p, g, s, lr, eps):
        for i in prange(p.size):
            gi = g[i]
            si = s[i] + gi * gi
            s[i] = si
            p[i] = p[i] - lr * (gi / (np.sqrt(si) + eps))

    @jit
    def adam(p, g, m, v, vmax, step_size, b1, omb1, b2, omb2, rsqrt2, eps, shrink, amsgrad):
        for i in prange(p.size):
            gi = g[i]
            mi = b1 * m[i] + omb1 * gi
            vi = b2 * v[i] + omb2 * (gi * gi)
            m[i] = mi
            v[i] = vi
            if amsgrad:
                vi = max(vmax[i], vi)
                vmax[i] = vi
            p[i] = p[i] * shrink - step_size * (mi / (np.sqrt(vi) * rsqrt2 + eps))

    _NUMBA_KERNELS = dict(sgd=sgd, sgd_momentum=sgd_momentum, rmsprop=rmsprop, adagrad=adagrad,
                          adam=adam)
    return _NUMBA_KERNELS


def _numba_call(rule, step, p, g, s):
    """(kernel name, arguments) for one tensor; s maps state name to its array.
    Floats become the dtype's scalars, so float32 math stays float32."""
    h = rule.hyper
    T = p.dtype.type
    if rule.function == "sgd_step":
        name, args = "sgd", (h["lr"],)
    elif rule.function == "momentum_step":
        name, args = "sgd_momentum", (s["velocity"], h["lr"], h["beta"], 1.0 - h["beta"], False, False)
    elif rule.function == "sgd_momentum_step":
        name, args = "sgd_momentum", (s["momentum_buffer"], h["lr"], h["momentum"],
                                      1.0 - h.get("dampening", 0.0), step == 1,
                                      bool(h.get("nesterov", False)))
    elif rule.function == "rmsprop_step":
        square_avg = s["square_avg"]
        momentum = h.get("momentum", 0.0)
        name, args = "rmsprop", (square_avg, s.get("grad_avg", square_avg),
                                 s.get("momentum_buffer", square_avg), h["lr"], h["alpha"],
                                 1.0 - h["alpha"], h["eps"], momentum,
                                 bool(h.get("centered", False)), momentum > 0)
    elif rule.function == "adagrad_step":
        name, args = "adagrad", (s["state_sum"], h["lr"] / (1.0 + (step - 1) * h.get("lr_decay", 0.0)),
                                 h["eps"])
    elif rule.function in ("adam_step", "adamw_step") and (
            rule.function == "adamw_step" or h.get("weight_decay", 0.0) == 0.0):
        lr, b1, b2 = h["lr"], h["beta1"], h["beta2"]
        decay = h.get("weight_decay", 0.0) if rule.function == "adamw_step" else 0.0
        amsgrad = bool(h.get("amsgrad", False))
        name, args = "adam", (s["exp_avg"], s["exp_avg_sq"], s.get("max_exp_avg_sq", s["exp_avg_sq"]),
                              lr / (1.0 - b1**step), b1, 1.0 - b1, b2, 1.0 - b2,
                              1.0 / math.sqrt(1.0 - b2**step), h["eps"], 1.0 - lr * decay, amsgrad)
    else:
        raise Unavailable(f"no numba kernel for {rule.name} with {h}")
    return name, (p, g) + tuple(T(a) if isinstance(a, float) else a for a in args)


def _numba_step(rule, params, grads, threads, step, states):
    kernels = _numba_kernels()
    import numba

    if threads > numba.config.NUMBA_NUM_THREADS:
        raise Unavailable(f"numba runs at most NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS} threads")
    calls = []
    for i, (p, g) in enumerate(zip(params, grads)):
        flat = {name: states[name][i].reshape(-1) for name in rule.state_names}
        name, args = _numba_call(rule, step, p.reshape(-1), g.reshape(-1), flat)
        calls.append((kernels[name], args))

    def step_all():
        for kernel, args in calls:
            kernel(*args)
    return _with_prepare(step_all, lambda: numba.set_num_threads(threads))


# --------------------------------------------------------------------------
# timing

MIN_SAMPLE_S = 2e-3       # one sample lasts at least this long
IDLE_GAP_S = 5e-3         # idle before each sample: other OpenMP runtimes stop spinning
INTERLEAVE_MAX_BYTES = 5 << 30   # gpt2-small float32: fastopt, ceiling, torch fused together
# Who joins the interleaved set first when not all fit: the key ratios.
INTERLEAVE_PRIORITY = ("fastopt", "ceiling", "torch-fused", "numba", "fastopt-per-tensor", "numpy",
                       "torch-foreach", "torch-forloop")


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


# --------------------------------------------------------------------------
# one group: rule x dtype x workload, at each thread count


def _row(rule, dtype, workload, shapes, threads, implementation, samples):
    n = count_params(shapes)
    median = statistics.median(samples)
    bytes_per_param = rule.bytes_per_param(dtype)
    return {
        "optimizer": rule.name, "dtype": dtype, "workload": workload,
        "n_tensors": len(shapes), "n_params": n, "threads": threads,
        "implementation": implementation, "bytes_per_param": bytes_per_param,
        "median_s": median, "samples_s": samples, "spread_pct": spread_pct(samples),
        "ms_per_step": median * 1e3, "ns_per_param": median * 1e9 / n,
        "gb_per_s": bytes_per_param * n / median / 1e9,
    }


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


def _add_ratios(rows, numpy_row):
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


def plan_interleaving(implementations, rule, params, max_bytes=INTERLEAVE_MAX_BYTES):
    """Split implementations into (together, alone): those timed interleaved,
    in INTERLEAVE_PRIORITY order while their memory fits in ``max_bytes``
    (params, grads and the shared state counted once), and the rest, each
    timed on its own with only its state alive."""
    nbytes = sum(p.nbytes for p in params)
    budget = max_bytes - nbytes * (2 + rule.n_state)
    together, alone = [], []
    for name in sorted(implementations, key=INTERLEAVE_PRIORITY.index):
        cost = own_state_bytes(name, rule, params)
        if cost <= budget:
            together.append(name)
            budget -= cost
        else:
            alone.append(name)
    return together, alone


def run_group(rule, dtype, workload, threads_list, implementations, repeat, progress=None,
              seed=0):
    """Measure ``implementations`` of one rule/dtype/workload at each thread count.

    Returns (rows, skipped).  NumPy is serial, so it is measured once, with the
    first thread count, and its row serves every thread count's ratios.
    """
    shapes = workload_shapes(workload)
    params, grads = make_buffers(shapes, dtype, seed)
    first_params = [p.copy() for p in params] if len(threads_list) > 1 else None
    rows, skipped, numpy_row = [], [], None
    for threads in threads_list:
        if threads != threads_list[0]:
            # thousands of steps drift params far (no effect on speed): start afresh
            for p, p0 in zip(params, first_params):
                np.copyto(p, p0)
        label = f"{rule.name} {dtype} {workload}, {threads} thread{'s' if threads > 1 else ''}"
        wanted = [i for i in implementations
                  if not (i == "numpy" and numpy_row is not None)
                  and not (i == "fastopt-per-tensor" and len(shapes) == 1)]
        together, alone = plan_interleaving(wanted, rule, params)
        states = new_states(rule, params)

        def build(name):
            if progress:
                progress.show(f"{label}: {name}")
            try:
                return make_step(name, rule, dtype, params, grads, threads, states=states)
            except Unavailable as exc:
                skipped.append({"optimizer": rule.name, "dtype": dtype, "workload": workload,
                                "threads": threads, "implementation": name, "reason": str(exc)})
                return None

        steps = {name: fn for name in together if (fn := build(name)) is not None}
        if progress:
            progress.show(f"{label}: {', '.join(steps)} (interleaved)")
        samples = measure(steps, repeat)
        steps = None
        for name in alone:
            # one at a time, so only one implementation's own state is alive
            fn = build(name)
            if fn is not None:
                samples.update(measure({name: fn}, repeat))
            fn = None
        if progress:
            progress.advance()
        group = [dict(_row(rule, dtype, workload, shapes, threads, name, s), interleaved=name in together)
                 for name, s in samples.items()]
        if numpy_row is None:
            numpy_row = next((r for r in group if r["implementation"] == "numpy"), None)
        _add_ratios(group, numpy_row)
        rows.extend(group)
    return rows, skipped


# --------------------------------------------------------------------------
# per-call overhead, import time, first call


def _subprocess_env():
    """Run child interpreters on this very fastopt (an in-place build or an install)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastopt.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else root
    return root, env


_IMPORT_PROBE = """
import time
t0 = time.perf_counter()
import numpy
t1 = time.perf_counter()
import fastopt
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""

_FIRST_CALL_PROBE = """
import statistics, time
import numpy as np
import fastopt
n = {n}
rng = np.random.default_rng(0)
p, g = rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)
m, v = np.full(n, 0.0, np.float32), np.full(n, 0.0, np.float32)   # pages touched now
times = []
for step in range(1, 102):
    t0 = time.perf_counter()
    fastopt.adam_step(p, g, m, v, step=step, num_threads={threads})
    times.append(time.perf_counter() - t0)
print(times[0], statistics.median(times[1:]))
"""


def _probe(code, runs):
    root, env = _subprocess_env()
    results = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True,
                             text=True, check=True).stdout
        results.append([float(x) for x in out.split()])
    return [statistics.median(column) for column in zip(*results)]


OVERHEAD_TENSORS = 148      # as many as gpt2-small has
FIRST_CALL_ELEMENTS = 100_000
FIRST_CALL_TOLERANCE = 1.5  # "the first call is as fast as the hundredth", within this factor


def measure_overhead(repeat, threads, progress=None, probe_runs=5):
    """Per-call figures of the issue's targets, all Adam float32 with fastopt.

    - ``adam16_us``: one call on a 16-element array;
    - ``per_tensor_us``: the extra time per tensor of a list call, from lists of
      OVERHEAD_TENSORS and of 1 tensor of 16 elements, timed side by side;
    - ``import_ms``: ``import fastopt`` in a fresh interpreter with numpy already
      imported (``import_numpy_ms``: numpy's own import, for scale);
    - ``first_call_ratio``: the first call of a fresh process over the median
      of the next 100, on FIRST_CALL_ELEMENTS elements at ``threads`` threads
      (``first_call_ratio_1thread``: the same on one thread, where no thread
      pool has to start).
    """
    rule = RULES["adam"]
    single = make_buffers([(16,)], "float32")
    many = make_buffers([(16,)] * OVERHEAD_TENSORS, "float32")
    one = make_buffers([(16,)], "float32")
    if progress:
        progress.show("overhead: 16-element Adam calls")
    states = {name: np.zeros(16, np.float32) for name in rule.states}
    hyper = dict(rule.hyper, step=BENCH_STEP, num_threads=threads)
    p, g = single[0][0], single[1][0]
    steps = {
        "array": lambda: fastopt.adam_step(p, g, *states.values(), **hyper),
        "list-1": make_step("fastopt", rule, "float32", *one, threads),
        f"list-{OVERHEAD_TENSORS}": make_step("fastopt", rule, "float32", *many, threads),
    }
    medians = {k: statistics.median(v) for k, v in measure(steps, repeat).items()}
    per_tensor = (medians[f"list-{OVERHEAD_TENSORS}"] - medians["list-1"]) / (OVERHEAD_TENSORS - 1)
    if progress:
        progress.show("overhead: import fastopt, first call (fresh interpreters)")
    import_numpy, import_fastopt = _probe(_IMPORT_PROBE, probe_runs)
    first, later = _probe(_FIRST_CALL_PROBE.format(n=FIRST_CALL_ELEMENTS, threads=threads), probe_runs)
    first_1, later_1 = _probe(_FIRST_CALL_PROBE.format(n=FIRST_CALL_ELEMENTS, threads=1), probe_runs)
    if progress:
        progress.advance()
    return {
        "adam16_us": medians["array"] * 1e6,
        "adam16_list1_us": medians["list-1"] * 1e6,
        f"adam16_list{OVERHEAD_TENSORS}_us": medians[f"list-{OVERHEAD_TENSORS}"] * 1e6,
        "per_tensor_us": per_tensor * 1e6,
        "import_ms": import_fastopt * 1e3,
        "import_numpy_ms": import_numpy * 1e3,
        "first_call_us": first * 1e6,
        "later_call_us": later * 1e6,
        "first_call_ratio": first / later,
        "first_call_threads": threads,
        "first_call_1thread_us": first_1 * 1e6,
        "later_call_1thread_us": later_1 * 1e6,
        "first_call_ratio_1thread": first_1 / later_1,
    }


# --------------------------------------------------------------------------
# targets of the issue: ratios measured side by side in this run


def _target(description, measured, op, bound, unit=""):
    ok = measured >= bound if op == ">=" else measured <= bound
    # how far from the bound, as a share of it
    missed = (1 - measured / bound) if op == ">=" else (measured / bound - 1)
    return {"target": description, "measured": measured, "op": op, "bound": bound, "unit": unit,
            "ok": ok, "missed_by_pct": None if ok else 100 * missed}


def evaluate_targets(rows, overhead=None):
    """The targets of the issue that this run's data can judge."""
    targets = []
    for r in rows:
        if r["implementation"] != "fastopt":
            continue
        where = f"{r['optimizer']} {r['dtype']} {r['workload']} @{r['threads']}t"
        pct, over = r.get("pct_of_ceiling"), r.get("speedup_over", {})

        def vs(peer, bound):
            if peer in over:
                targets.append(_target(f"{where}: speedup over {peer}", over[peer], ">=", bound, "x"))

        if (r["optimizer"], r["dtype"]) == ("adam", "float32"):
            if r["workload"] == "1e7":
                if pct is not None:
                    targets.append(_target(f"{where}: % of traffic ceiling", pct, ">=", 95.0, "%"))
                vs("numba", 1.0)
            elif r["workload"] == "1e5":
                vs("torch-fused", 3.0)
                vs("numba", 1.0)
            elif r["workload"] == "mnist-mlp":
                vs("torch-fused", 2.5)
            elif r["workload"] == "gpt2-small":
                vs("torch-fused", 1.05)
                if r["threads"] >= 16 and pct is not None:
                    targets.append(_target(f"{where}: % of traffic ceiling", pct, ">=", 95.0, "%"))
        elif r["workload"] == "1e7" and pct is not None:
            targets.append(_target(f"{where}: % of traffic ceiling", pct, ">=", 90.0, "%"))
    if overhead:
        targets += [
            _target("16-element Adam step", overhead["adam16_us"], "<=", 1.0, "us"),
            _target("extra time per tensor in a list call", overhead["per_tensor_us"], "<=", 0.2, "us"),
            _target("import fastopt (numpy already imported)", overhead["import_ms"], "<=", 50.0, "ms"),
            _target(f"first call / median of next 100 ({FIRST_CALL_ELEMENTS:.0e} elements, "
                    f"{overhead['first_call_threads']} threads)",
                    overhead["first_call_ratio"], "<=", FIRST_CALL_TOLERANCE, "x"),
        ]
    return targets


# --------------------------------------------------------------------------
# report


def machine_info():
    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
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


def _cpu_model():
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


def format_group(rows, numpy_row=None):
    """The table of one rule/dtype/workload/thread count."""
    first = rows[0]
    threads = first["threads"]
    head = (f"{first['optimizer']} {first['dtype']} {first['workload']}: {first['n_tensors']} "
            f"tensor{'s' if first['n_tensors'] > 1 else ''}, {_size(first['n_params'])} params, "
            f"{first['bytes_per_param']} B/param; {threads} thread{'s' if threads > 1 else ''}")
    shown = list(rows)
    ours = next((r for r in rows if r["implementation"] == "fastopt"), None)
    if numpy_row is not None and all(r is not numpy_row for r in rows):
        shown.append(dict(numpy_row, pct_of_ceiling=None,
                          fastopt_speedup=ours["speedup_over"].get("numpy") if ours else None))
    order = {name: i for i, name in enumerate(IMPLEMENTATIONS)}
    shown.sort(key=lambda r: order.get(r["implementation"], len(order)))
    lines = [head, f"  {'implementation':<20}{'ms/step':>10}{'IQR %':>7}{'ns/param':>10}{'GB/s':>8}"
                   f"{'% ceiling':>11}{'fastopt x':>11}"]
    for r in shown:
        name = (r["implementation"] + (" (serial)" if r["implementation"] == "numpy" else "")
                + ("" if r.get("interleaved", True) else " *"))
        lines.append(f"  {name:<20}{r['ms_per_step']:>10.4g}{r['spread_pct']:>7.0f}{r['ns_per_param']:>10.3f}"
                     f"{r['gb_per_s']:>8.1f}{_fmt(r['pct_of_ceiling'], 1):>11}"
                     f"{_fmt(r['fastopt_speedup'], 2):>11}")
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


def format_targets(targets):
    if not targets:
        return "Targets: none of the issue's targets applies to what was measured."
    lines = ["Targets of the issue (medians, ratios side by side in this run):"]
    for t in targets:
        status = "ok    " if t["ok"] else "MISSED"
        detail = "" if t["ok"] else f"  missed by {t['missed_by_pct']:.1f}%"
        lines.append(f"  {status} {t['target']}: {t['measured']:.3g}{t['unit']} "
                     f"(needs {t['op']} {t['bound']:g}{t['unit']}){detail}")
    missed = sum(not t["ok"] for t in targets)
    lines.append(f"  {len(targets) - missed} of {len(targets)} met.")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# command line


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
                        help=f"comma list of {', '.join(RULES)}, or all (default: adam)")
    parser.add_argument("--workload", default="1e5,mnist-mlp,1e7",
                        help=f"comma list of {', '.join(WORKLOADS)}, N (one buffer of N elements) "
                             f"or NxK (K buffers of N), or all (default: 1e5,mnist-mlp,1e7)")
    parser.add_argument("--dtype", default="float32", help="float32, float64 or all (default: float32)")
    parser.add_argument("--threads", default=",".join(dict.fromkeys(["1", str(n)])),
                        help=f"comma list of thread counts (default: 1,{n})")
    parser.add_argument("--impl", default="all",
                        help=f"comma list of {', '.join(IMPLEMENTATIONS)}, or all (default: all)")
    parser.add_argument("--repeat", type=int, default=7, help="timed samples per implementation (default: 7)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    parser.add_argument("--no-overhead", action="store_true",
                        help="skip the per-call overhead, import time and first-call figures")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def main(args):
    info = machine_info()   # before torch or numba can change the OpenMP default
    rules = [RULES[name] for name in _choices(args.optimizer, RULES, "optimizer")]
    workloads = _workloads(args.workload)
    dtypes = _choices(args.dtype, DTYPES, "dtype")
    threads_list = _threads(args.threads)
    implementations = _choices(args.impl, IMPLEMENTATIONS, "implementation")
    if args.repeat < 1:
        raise SystemExit("--repeat must be >= 1")

    groups = [(r, d, w) for w in workloads for d in dtypes for r in rules]
    progress = Progress(len(groups) * len(threads_list) + (0 if args.no_overhead else 1),
                        enabled=not args.quiet)
    started = time.perf_counter()
    all_rows, all_skipped = [], []
    try:
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
        overhead = None if args.no_overhead else measure_overhead(args.repeat, max(threads_list), progress)
    finally:
        progress.close()

    reasons = {}
    for s in all_skipped:
        reasons.setdefault((s["implementation"], s["reason"]), []).append(s["optimizer"])
    for (name, reason), optimizers in reasons.items():
        print(f"skipped {name} ({', '.join(dict.fromkeys(optimizers))}): {reason}")
    if reasons:
        print()
    if overhead:
        print(format_overhead(overhead), end="\n\n")
    targets = evaluate_targets(all_rows, overhead)
    print(format_targets(targets))
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
        busy = loads[0] >= 0.5 * (info["cpu_count"] or 1)
        print(f"load average {' -> '.join(f'{x:.1f}' for x in loads)} (1 min, at start and end)"
              + ("; other processes were busy: multi-thread figures are unreliable" if busy else ""))
    if args.json:
        report = {"machine": info, "argv": sys.argv[1:], "repeat": args.repeat,
                  "elapsed_s": elapsed, "results": all_rows, "skipped": all_skipped,
                  "overhead": overhead, "targets": targets}
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m fastopt.bench")
    configure(parser)
    sys.exit(main(parser.parse_args()))
