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
``torchao-8bit``         torchao's ``AdamW8bit`` (8-bit state; when installed)
``bnb-8bit``             bitsandbytes' ``Adam8bit``/``AdamW8bit`` (8-bit state;
                         when installed)
``deepspeed-cpu-adam``   DeepSpeed's ``DeepSpeedCPUAdam`` (when installed); in a master mode it
                         steps the 16-bit weights with float32 state (it keeps no master)
``deepspeed-cpu-lion``   DeepSpeed's ``DeepSpeedCPULion``, of Lion (when installed)
======================== =======================================================

Each steps the buffers of the run's precision mode (:mod:`fastopt.bench.modes`)
where it can: torch's steps take params, grads and state of one dtype, so in a
master mode a torch step is its float32 step followed by a separate pass that
writes the 16-bit copy (its grads upcast to float32 once, before timing), and
with 8-bit state torch's state is float32.  The 8-bit peers run only in the
8-bit mode.
"""

import importlib
import importlib.util
import inspect
import math

import ml_dtypes
import numpy as np

import fastopt
from fastopt import _core, optim, reference
from fastopt.bench.modes import BLOCK_SIZE, get_mode, new_mode_states
from fastopt.bench.rules import RULES

IMPLEMENTATIONS = ("fastopt", "fastopt-per-tensor", "fastopt-optim", "fastopt-torch", "numpy", "ceiling",
                   "torch-forloop", "torch-foreach", "torch-fused", "numba", "torchao-8bit", "bnb-8bit",
                   "deepspeed-cpu-adam", "deepspeed-cpu-lion")
PEERS = ("numpy", "torch-forloop", "torch-foreach", "torch-fused", "numba", "torchao-8bit", "bnb-8bit",
         "deepspeed-cpu-adam", "deepspeed-cpu-lion")
# Peers with 8-bit state: compared in the 8-bit mode only.
EIGHT_BIT_PEERS = ("torchao-8bit", "bnb-8bit")

# The step number passed to rules that take one: past the first step, so
# torch.optim.SGD's "buffer = g at step 1" branch is not what is timed.
BENCH_STEP = 10


class Unavailable(Exception):
    """This implementation cannot run here (package missing, option unsupported)."""


def _optional(module_name):
    if importlib.util.find_spec(module_name) is None:
        raise Unavailable(f"{module_name} is not installed")
    return importlib.import_module(module_name)


def new_states(rule, params, mode=None):
    """Zeroed state buffers of the rule, one list per state name: like the params,
    or as precision ``mode`` keeps them."""
    if mode is not None:
        return new_mode_states(rule, params, mode)
    return {name: [np.zeros_like(p) for p in params] for name in rule.state_names}


def runs_in(implementation, mode):
    """Whether ``implementation`` is compared in precision ``mode`` at all (the 8-bit
    peers only with 8-bit state); where it is but cannot run, make_step says why."""
    return implementation not in EIGHT_BIT_PEERS or get_mode(mode).eight_bit


def kept_values(rule, step):
    """The rule's kept_by_optimizer hyperparameters (NAdam's mu_product) as its fastopt.optim
    class passes them when its first step is number ``step``, as fastopt-optim's is."""
    if not rule.kept:
        return {}
    optimizer = _new_optimizer(rule, [np.zeros(1)], 1, step)
    spec, _, values, _ = optimizer.plan_step([np.zeros(1)]).calls[0]
    return {name: value for name, value in zip(spec.hyper_names, values) if name in rule.kept}


def fastopt_arguments(rule, states, threads, step, copies=None):
    """(positional, keyword) arguments of a fastopt (or fastopt.reference) call
    of ``rule`` after params and grads; ``threads`` None passes no num_threads;
    ``copies``, the 16-bit weights of a master mode, are written as ``param_copy``."""
    positional = [states[name] for name in rule.states]
    keywords = dict(rule.hyper, **kept_values(rule, step), **{name: states[name] for name in rule.keyword_states})
    if copies is not None:
        keywords["param_copy"] = copies
    if threads is not None:
        keywords["num_threads"] = threads
    if rule.uses_step:
        keywords["step"] = step
    return positional, keywords


def _fastopt_list(module, rule, params, grads, threads, step, states, copies):
    function = getattr(module, rule.function)
    positional, keywords = fastopt_arguments(rule, states, threads, step, copies)
    return lambda: function(params, grads, *positional, **keywords)


def _fastopt_per_tensor(rule, params, grads, threads, step, states, copies):
    function = getattr(fastopt, rule.function)
    positional, keywords = fastopt_arguments(rule, states, threads, step, copies)
    calls = [((p, g, *(s[i] for s in positional)),
              {k: (v[i] if isinstance(v, list) else v) for k, v in keywords.items()})
             for i, (p, g) in enumerate(zip(params, grads))]

    def step_all():
        for args, kwargs in calls:
            function(*args, **kwargs)
    return step_all


def _new_optimizer(rule, params, threads, step, options=None):
    """The rule's fastopt.optim optimizer, ready to take step number ``step`` first;
    ``options``: those of a precision mode (Mode.optim_options)."""
    optimizer_class = getattr(optim, rule.optim_optimizer)
    try:
        optimizer = optimizer_class(params, **rule.optim_kwargs(), **(options or {}), num_threads=threads)
    except (TypeError, ValueError) as exc:
        raise Unavailable(f"fastopt.optim.{rule.optim_optimizer}: {exc}") from None
    if hasattr(optimizer, "train"):  # Schedule-Free steps in train mode only, as schedulefree's
        optimizer.train()
    # steps taken so far: its first step is number `step`, as the list call's
    for state in optimizer.state:
        state["step"] = step - 1
    return optimizer


def _fastopt_optim(rule, params, grads, threads, step, mode, copies):
    # in a master mode the optimizer steps the model's 16-bit weights and keeps its own float32 master
    optimizer = _new_optimizer(rule, copies if mode.master else params, threads, step, mode.optim_options())

    def step_all():
        optimizer.step(grads)
    step_all.optimizer = optimizer  # what it steps with (the tests read its next step's arguments)
    return step_all


def as_tensor(torch, array):
    """A torch tensor on the memory of ``array`` (bfloat16, which torch.from_numpy
    does not take, through a same-size integer view)."""
    if array.dtype == np.dtype(ml_dtypes.bfloat16):
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def _fastopt_torch(rule, params, grads, threads, mode, copies):
    torch = _optional("torch")
    import fastopt.torch

    optimizer_class = getattr(fastopt.torch, rule.optim_optimizer, None)
    if optimizer_class is None:
        raise Unavailable(f"fastopt.torch has no {rule.optim_optimizer}: fastopt.optim.{rule.optim_optimizer} "
                          f"keeps its per-group numbers")
    options = dict(rule.optim_kwargs(), **mode.optim_options(), num_threads=threads)
    accepted = inspect.signature(optimizer_class).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        for name in mode.optim_options():
            if name not in accepted:   # said once for every rule
                raise Unavailable(f"fastopt.torch takes no {name}= option, which {mode.name} needs")
    weights = copies if mode.master else params
    tensors = [as_tensor(torch, p).requires_grad_() for p in weights]
    for tensor, grad in zip(tensors, grads):
        tensor.grad = as_tensor(torch, grad)   # read only: the step does not write gradients
    try:
        optimizer = optimizer_class(tensors, **options)
        if not mode.plain:
            # a tiny optimizer of the same dtypes and options takes one step, so that a refusal
            # at the step, not only at construction, is a clean skip (the real state stays untouched)
            probe = as_tensor(torch, weights[0].reshape(-1)[:8].copy()).requires_grad_()
            probe.grad = as_tensor(torch, grads[0].reshape(-1)[:8].copy())
            optimizer_class([probe], **options).step()
    except (TypeError, ValueError, RuntimeError) as exc:
        where = "fastopt.torch" if not mode.plain else f"fastopt.torch.{rule.optim_optimizer}"
        raise Unavailable(f"{where}: {str(exc).splitlines()[0]}") from None
    # its state starts at its first call, at step 1, as torch's does; the warm-up takes it past step 1
    return lambda: optimizer.step()


def _ceiling(rule, params, grads, threads, mode, copies):
    states = new_states(rule, params, mode)
    if not mode.plain:
        # the staged ceiling adds the grads' bits into every buffer it writes, params
        # included: its own params and copies, so that the shared ones stay numbers
        params = [p.copy() for p in params]
        copies = None if copies is None else [c.copy() for c in copies]
    buffers = [states[name] for name in rule.state_names]
    if rule.second_pass:
        # a two-pass rule (LAMB) reads param and state again: a second ceiling pass that reads its
        # first state buffer in the grad's place moves as many bytes where param and state share a
        # dtype (one more write, one less read); 8-bit state is not a grad, so there it reads the grads
        first = buffers[0] if isinstance(buffers[0][0], np.ndarray) else grads

        def two_passes():
            _core.ceiling_step(params, grads, *buffers, num_threads=threads)
            _core.ceiling_step(params, first, param_copy=copies, num_threads=threads)
        return two_passes
    return lambda: _core.ceiling_step(params, grads, *buffers, param_copy=copies, num_threads=threads)


def _with_prepare(step, prepare):
    """Attach what must run before timing ``step``: torch and numba keep their
    thread count in process-wide state, and each (through the OpenMP runtime
    they share) can change the other's, so it is set again before each sample."""
    step.prepare = prepare
    return step


def _torch_state_bytes(torch, optimizer):
    """Bytes of the state a torch optimizer keeps per parameter (its step counts aside);
    a tensor subclass (torchao's 8-bit state) counts the tensors it is made of."""
    def nbytes(t):
        if type(t) is not torch.Tensor and hasattr(t, "__tensor_flatten__"):
            return sum(nbytes(getattr(t, name)) for name in t.__tensor_flatten__()[0])
        return t.numel() * t.element_size() if t.dim() > 0 else 0
    return sum(nbytes(v) for state in optimizer.state.values() for v in state.values()
               if isinstance(v, torch.Tensor))


def _torch_optimizer_step(where, make_optimizer, params, grads, threads, mode, copies):
    """The step of a torch optimizer (``make_optimizer(tensors)``) on views of the shared params.

    Its grads are its own copy (torch may update grads in place: foreach nesterov
    does), float32 in a master mode, where each step is followed by a pass that
    writes the 16-bit copy of every param.  With every buffer 16-bit it steps
    its own copy of the params: torch's forloop and foreach steps compute in the
    16-bit dtype, where float16 underflows eps = 1e-8 and v to 0 and makes
    params infinite, which the shared params must not become.  The setup takes
    one step (torch's state starts there); a failure there is Unavailable.  The
    function carries ``params``, the arrays it steps, and ``state_bytes``: what
    the optimizer keeps, its float32 params in a master mode.
    """
    torch = _optional("torch")
    if mode.sixteen_bit:
        params = [p.copy() for p in params]
    tensors = [as_tensor(torch, p).requires_grad_() for p in params]
    for tensor, grad in zip(tensors, grads):
        tensor.grad = as_tensor(torch, grad.astype(np.float32) if mode.master else grad.copy())
    copy_tensors = [as_tensor(torch, c) for c in copies] if mode.master else None
    optimizer = None

    def step():
        optimizer.step()
        if copy_tensors is not None:
            with torch.no_grad():
                for copy, tensor in zip(copy_tensors, tensors):
                    copy.copy_(tensor)

    try:
        optimizer = make_optimizer(tensors)
        if hasattr(optimizer, "train"):  # Schedule-Free steps in train mode only
            optimizer.train()
        torch.set_num_threads(threads)
        step()
    except (TypeError, RuntimeError, ValueError, NotImplementedError, AssertionError) as exc:
        raise Unavailable(f"{where}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    step.params = params
    step.state_bytes = _torch_state_bytes(torch, optimizer) + (sum(p.nbytes for p in params) if mode.master else 0)
    return _with_prepare(step, lambda: torch.set_num_threads(threads))


def _torch(kind, rule, params, grads, threads, mode, copies):
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
    mode_kwargs = {"forloop": dict(foreach=False), "foreach": dict(foreach=True),
                   "fused": dict(fused=True)}[kind]
    where = rule.torch_optimizer if package else f"torch.optim.{rule.torch_optimizer}"
    where += f"({', '.join(f'{k}=True' for k in mode_kwargs)})"
    return _torch_optimizer_step(where, lambda tensors: optimizer_class(tensors, **torch_kwargs, **mode_kwargs),
                                 params, grads, threads, mode, copies)


def _adam_kwargs(rule, peer):
    """lr, betas, eps and weight_decay of an Adam or AdamW rule, and whether the decay
    is decoupled (AdamW), for a peer that steps those two only."""
    kwargs = rule.torch_kwargs()
    decoupled = rule.function == "adamw_step"
    if rule.function not in ("adam_step", "adamw_step") or kwargs.get("amsgrad") or kwargs.get("maximize"):
        raise Unavailable(f"{peer} steps Adam and AdamW only")
    return {k: kwargs[k] for k in ("lr", "betas", "eps", "weight_decay")}, decoupled


def _torchao_8bit(rule, params, grads, threads, mode, copies):
    _optional("torchao")
    kwargs, decoupled = _adam_kwargs(rule, "torchao's AdamW8bit")
    if not decoupled and kwargs["weight_decay"]:
        raise Unavailable("torchao's AdamW8bit decouples weight decay: no Adam with weight_decay")
    try:
        from torchao.optim import AdamW8bit
    except ImportError:  # before torchao 0.11
        from torchao.prototype.low_bit_optim import AdamW8bit
    # AdamW with no decay is Adam
    return _torch_optimizer_step("torchao AdamW8bit", lambda t: AdamW8bit(t, **kwargs, block_size=BLOCK_SIZE),
                                 params, grads, threads, mode, copies)


def _bnb_8bit(rule, params, grads, threads, mode, copies):
    bnb = _optional("bitsandbytes")
    kwargs, decoupled = _adam_kwargs(rule, "bitsandbytes' Adam8bit")
    optimizer_class = bnb.optim.AdamW8bit if decoupled else bnb.optim.Adam8bit
    # 8-bit state from the size fastopt.optim quantizes at
    return _torch_optimizer_step(f"bitsandbytes {optimizer_class.__name__}",
                                 lambda t: optimizer_class(t, **kwargs, min_8bit_size=optim.QUANTIZE_MIN_SIZE),
                                 params, grads, threads, mode, copies)


def _deepspeed_cpu_adam(rule, params, grads, threads, mode, copies):
    _optional("deepspeed")
    kwargs, decoupled = _adam_kwargs(rule, "DeepSpeedCPUAdam")
    from deepspeed.ops.adam import DeepSpeedCPUAdam

    if mode.master:
        # DeepSpeed keeps no master weights: it steps the 16-bit weights themselves (its own copy of
        # them), with float32 state, as its CPU-offload users run it
        in_dtype = get_mode(np.dtype(mode.dtype_of(mode.copy)).name)
        return _torch_optimizer_step("DeepSpeedCPUAdam (16-bit params, float32 state)",
                                     lambda t: DeepSpeedCPUAdam(t, **kwargs, adamw_mode=decoupled),
                                     copies, grads, threads, in_dtype, None)
    # 16-bit params keep 16-bit state, as in the in-dtype modes
    extra = {"fp32_optimizer_states": False} if mode.sixteen_bit else {}
    return _torch_optimizer_step("DeepSpeedCPUAdam",
                                 lambda t: DeepSpeedCPUAdam(t, **kwargs, adamw_mode=decoupled, **extra),
                                 params, grads, threads, mode, copies)


def _deepspeed_cpu_lion(rule, params, grads, threads, mode, copies):
    _optional("deepspeed")
    kwargs = rule.torch_kwargs()
    if rule.function != "lion_step" or kwargs.get("maximize"):
        raise Unavailable("DeepSpeedCPULion steps Lion only")
    if mode.name != "float32":
        raise Unavailable("DeepSpeedCPULion is timed on float32 params and state")
    from deepspeed.ops.lion import DeepSpeedCPULion

    # Lion's decoupled decay, lr·wd·θ, as optax.lion and fastopt take it
    return _torch_optimizer_step("DeepSpeedCPULion",
                                 lambda t: DeepSpeedCPULion(t, **{k: kwargs[k] for k in ("lr", "betas",
                                                                                           "weight_decay")}),
                                 params, grads, threads, mode, copies)


# These take the rule's state as ndarrays, so they can share one set: they
# apply the same rule, so the state evolves as one optimizer's would.
SHARED_STATE = ("fastopt", "fastopt-per-tensor", "numpy", "numba")


def make_step(implementation, rule, dtype, params, grads, threads, step=BENCH_STEP, states=None, copies=None):
    """A function of no arguments doing one step of ``rule`` with ``implementation``.

    ``dtype`` is the precision mode (:mod:`fastopt.bench.modes`: a dtype, or
    a mode such as ``"master-bfloat16"``) of ``params``/``grads``, which are
    shared (and updated), as are ``copies``, the 16-bit weights of a master
    mode (made from the params if None).  ``states`` (from ``new_states``) is
    the rule's state for implementations in SHARED_STATE, zeroed new buffers
    if None; the others always have their own.  ``threads`` is a count (None:
    fastopt's default).  Raises Unavailable when it cannot run here.  The
    function may have a ``prepare`` attribute: call it before timing (see
    ``measure``); and a ``state_bytes`` one: the bytes of its own state, where
    they are not those of the mode's buffers.
    """
    if isinstance(rule, str):
        rule = RULES[rule]
    mode = get_mode(dtype)
    if not runs_in(implementation, mode):
        raise Unavailable(f"{implementation} keeps 8-bit state: it is compared in float32-8bit only")
    if threads is None:
        threads = fastopt.get_num_threads()
    if mode.master and copies is None:
        copies = [p.astype(mode.dtype_of(mode.copy)) for p in params]
    if implementation in SHARED_STATE and states is None:
        states = new_states(rule, params, mode)
    if implementation == "fastopt":
        return _fastopt_list(fastopt, rule, params, grads, threads, step, states, copies)
    if implementation == "fastopt-per-tensor":
        return _fastopt_per_tensor(rule, params, grads, threads, step, states, copies)
    if implementation == "fastopt-optim":
        return _fastopt_optim(rule, params, grads, threads, step, mode, copies)
    if implementation == "fastopt-torch":
        return _fastopt_torch(rule, params, grads, threads, mode, copies)
    if implementation == "numpy":
        return _fastopt_list(reference, rule, params, grads, None, step, states, copies)
    if implementation == "ceiling":
        return _ceiling(rule, params, grads, threads, mode, copies)
    if implementation.startswith("torch-"):
        return _torch(implementation[len("torch-"):], rule, params, grads, threads, mode, copies)
    if implementation == "numba":
        if not mode.plain:
            raise Unavailable("its loops are written for float32 and float64 arrays: no 16-bit buffers, "
                              "no 8-bit state")
        return _numba_step(rule, params, grads, threads, step, states)
    if implementation == "torchao-8bit":
        return _torchao_8bit(rule, params, grads, threads, mode, copies)
    if implementation == "bnb-8bit":
        return _bnb_8bit(rule, params, grads, threads, mode, copies)
    if implementation == "deepspeed-cpu-adam":
        return _deepspeed_cpu_adam(rule, params, grads, threads, mode, copies)
    if implementation == "deepspeed-cpu-lion":
        return _deepspeed_cpu_lion(rule, params, grads, threads, mode, copies)
    raise ValueError(f"unknown implementation {implementation!r}; one of {', '.join(IMPLEMENTATIONS)}")


def own_state_bytes(implementation, rule, params, mode=None):
    """Memory an implementation allocates beyond params, grads and the shared state (and
    copies), roughly: what the interleaving plan budgets for.  ``mode`` None: the params' dtype."""
    mode = get_mode(params[0].dtype if mode is None else mode)
    if implementation in SHARED_STATE:
        return 0
    n = sum(p.size for p in params)
    nbytes = sum(p.nbytes for p in params)
    per_state = 1 if mode.eight_bit else mode.dtype_of(mode.state).itemsize
    if implementation == "ceiling":
        # its state, and off the plain modes its own params and copies
        return n * (rule.n_state * per_state + (0 if mode.plain else (mode.dtype_of(mode.param).itemsize
                                                                       + (2 if mode.master else 0))))
    if implementation in ("fastopt-optim", "fastopt-torch"):
        # their state; in a master mode, their own float32 master too
        return n * rule.n_state * per_state + (nbytes if mode.master else 0)
    # torch's: state in the params' dtype, its own copy of the grads (float32 in a master
    # mode), and with every buffer 16-bit its own params
    return nbytes * (rule.n_state + 1 + (1 if mode.sixteen_bit else 0))


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
