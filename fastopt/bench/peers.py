"""The implementations of one step that are timed side by side, and ``make_step``.

======================== =======================================================
``fastopt``              one list call for the whole model
``fastopt-per-tensor``   one fastopt call per tensor
``fastopt-optim``        ``fastopt.optim`` (e.g. ``optim.Adam(params, ...)``),
                         ``opt.step(grads)``: the training API over the list call
``fastopt-torch``        ``fastopt.torch`` (e.g. ``fastopt.torch.Adam(tensors, ...)``)
                         on ``torch.from_numpy`` views, ``opt.step()``: the
                         torch.optim drop-in over the list call (when torch is
                         installed)
``numpy``                :mod:`fastopt.reference`, the pure-NumPy twin (serial)
``ceiling``              ``fastopt._core.ceiling_step`` with the rule's number of
                         state buffers: the same memory traffic, next to no math
``torch-forloop``        ``torch.optim`` on ``torch.from_numpy`` views,
``torch-foreach``        ``foreach=True``,
``torch-fused``          ``fused=True`` (when torch is installed); for a rule
                         torch.optim lacks, the torch package it is anchored to
                         (schedulefree's AdamWScheduleFree), in train mode
``numba``                ``@njit(parallel=True, fastmath=False)`` prange loop of
                         the same formula, one call per tensor (when installed)
======================== =======================================================
"""

import importlib
import importlib.util
import inspect
import math

import numpy as np

import fastopt
from fastopt import _core, optim, reference
from fastopt.bench.rules import RULES

IMPLEMENTATIONS = ("fastopt", "fastopt-per-tensor", "fastopt-optim", "fastopt-torch", "numpy", "ceiling",
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


def kept_values(rule, step):
    """The rule's kept_by_optimizer hyperparameters (NAdam's mu_product) as its fastopt.optim
    class passes them when its first step is number ``step``, as fastopt-optim's is."""
    if not rule.kept:
        return {}
    optimizer = _new_optimizer(rule, [np.zeros(1)], 1, step)
    spec, _, values, _ = optimizer.plan_step([np.zeros(1)]).calls[0]
    return {name: value for name, value in zip(spec.hyper_names, values) if name in rule.kept}


def fastopt_arguments(rule, states, threads, step):
    """(positional, keyword) arguments of a fastopt (or fastopt.reference) call
    of ``rule`` after params and grads; ``threads`` None passes no num_threads."""
    positional = [states[name] for name in rule.states]
    keywords = dict(rule.hyper, **kept_values(rule, step), **{name: states[name] for name in rule.keyword_states})
    if threads is not None:
        keywords["num_threads"] = threads
    if rule.uses_step:
        keywords["step"] = step
    return positional, keywords


def _fastopt_list(module, rule, params, grads, threads, step, states):
    function = getattr(module, rule.function)
    positional, keywords = fastopt_arguments(rule, states, threads, step)
    return lambda: function(params, grads, *positional, **keywords)


def _fastopt_per_tensor(rule, params, grads, threads, step, states):
    function = getattr(fastopt, rule.function)
    positional, keywords = fastopt_arguments(rule, states, threads, step)
    calls = [((p, g, *(s[i] for s in positional)),
              {k: (v[i] if isinstance(v, list) else v) for k, v in keywords.items()})
             for i, (p, g) in enumerate(zip(params, grads))]

    def step_all():
        for args, kwargs in calls:
            function(*args, **kwargs)
    return step_all


def _new_optimizer(rule, params, threads, step):
    """The rule's fastopt.optim optimizer, ready to take step number ``step`` first."""
    optimizer_class = getattr(optim, rule.optim_optimizer)
    try:
        optimizer = optimizer_class(params, **rule.optim_kwargs(), num_threads=threads)
    except (TypeError, ValueError) as exc:
        raise Unavailable(f"fastopt.optim.{rule.optim_optimizer}: {exc}") from None
    if hasattr(optimizer, "train"):  # Schedule-Free steps in train mode only, as schedulefree's
        optimizer.train()
    # steps taken so far: its first step is number `step`, as the list call's
    for state in optimizer.state:
        state["step"] = step - 1
    return optimizer


def _fastopt_optim(rule, params, grads, threads, step):
    optimizer = _new_optimizer(rule, params, threads, step)

    def step_all():
        optimizer.step(grads)
    step_all.optimizer = optimizer  # what it steps with (the tests read its next step's arguments)
    return step_all


def _fastopt_torch(rule, params, grads, threads):
    torch = _optional("torch")
    import fastopt.torch

    optimizer_class = getattr(fastopt.torch, rule.optim_optimizer, None)
    if optimizer_class is None:
        raise Unavailable(f"fastopt.torch has no {rule.optim_optimizer}: fastopt.optim.{rule.optim_optimizer} "
                          f"keeps its per-group numbers")
    tensors = [torch.from_numpy(p).requires_grad_() for p in params]
    for tensor, grad in zip(tensors, grads):
        tensor.grad = torch.from_numpy(grad)   # read only: the step does not write gradients
    try:
        optimizer = optimizer_class(tensors, **rule.optim_kwargs(), num_threads=threads)
    except (TypeError, ValueError) as exc:
        raise Unavailable(f"fastopt.torch.{rule.optim_optimizer}: {exc}") from None
    # its state starts at its first call, at step 1, as torch's does; the warm-up takes it past step 1
    return lambda: optimizer.step()


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
    if not rule.torch_optimizer:
        raise Unavailable(f"torch.optim has no {rule.name}")
    package, _, class_name = rule.torch_optimizer.rpartition(".")
    optimizer_class = getattr(_optional(package) if package else torch.optim, class_name)
    torch_kwargs = rule.torch_kwargs()
    if package:  # only the arguments it takes; one it lacks must be at our default (maximize=False)
        accepted = inspect.signature(optimizer_class).parameters
        for name in [n for n in torch_kwargs if n not in accepted]:
            if torch_kwargs.pop(name) is not False:
                raise Unavailable(f"{rule.torch_optimizer} has no {name}")
    tensors = [torch.from_numpy(p).requires_grad_() for p in params]
    for tensor, grad in zip(tensors, grads):
        # torch may update grads in place (foreach nesterov does): its own copy
        tensor.grad = torch.from_numpy(grad.copy())
    mode_kwargs = {"forloop": dict(foreach=False), "foreach": dict(foreach=True),
                   "fused": dict(fused=True)}[mode]
    try:
        optimizer = optimizer_class(tensors, **torch_kwargs, **mode_kwargs)
        if hasattr(optimizer, "train"):  # Schedule-Free steps in train mode only
            optimizer.train()
        torch.set_num_threads(threads)
        optimizer.step()
    except (TypeError, RuntimeError, ValueError) as exc:
        where = rule.torch_optimizer if package else f"torch.optim.{rule.torch_optimizer}"
        raise Unavailable(f"{where}({', '.join(f'{k}=True' for k in mode_kwargs)})"
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
    if implementation == "fastopt-optim":
        return _fastopt_optim(rule, params, grads, threads, step)
    if implementation == "fastopt-torch":
        return _fastopt_torch(rule, params, grads, threads)
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
    # torch.optim copies the grads; fastopt-torch's tensors are views of the shared params and grads
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
