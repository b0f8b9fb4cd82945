"""Stateful optimizers over NumPy arrays, with torch.optim's classes, arguments and defaults.

Each optimizer holds its parameters in groups, the state of every parameter
(moment estimates, momentum buffers, step counts), and per-group
hyperparameters.  ``opt.step(grads)`` makes one fused multi-tensor call per
group (:mod:`fastopt`'s ``*_step`` functions): one parallel pass over memory
for the whole group, whatever its number of arrays.

The classes are tables: each declares its defaults, its state buffers and the
fused function it calls with which hyperparameters; :class:`Optimizer` does
the rest (validation, state, schedules, clipping, checkpoints).
"""

import math
import numbers

import numpy as np

from fastopt import _core
from fastopt.clip import clip_coefficient

__all__ = ["Optimizer", "SGD", "Momentum", "RMSprop", "Adagrad", "Adam", "AdamW"]

# Bumped when the layout of state_dict() changes.
STATE_DICT_FORMAT = 1


class Optimizer:
    """Base of the optimizers: one subclass per update rule, declared by its class attributes.

    Parameters
    ----------
    params : list of ndarray, or list of dict
        The arrays to optimize (float32 or float64, contiguous, writeable), or
        parameter groups: dicts ``{"params": [arrays], <hyperparameter overrides>}``.
        All arrays of one group share a dtype.
    defaults : dict
        The hyperparameters of every group that does not override them.
    num_threads : int or None
        Threads of every step; None follows :func:`fastopt.get_num_threads`.
    max_grad_norm : float or None
        Clip the gradients to this total norm (over all groups), as
        ``clip_grad_norm`` would, without writing them: the coefficient is
        folded into each step as ``grad_scale``.
    norm_type : float
        The norm of ``max_grad_norm``: 1, 2, inf or any p > 0.
    skip_nonfinite : bool
        When a step's gradients hold NaN or Inf, write nothing, count it in
        ``skipped_steps`` and return False from :meth:`step`; the step count
        does not advance (the way mixed-precision training skips overflows).

    Attributes
    ----------
    param_groups : list of dict
        ``{"params": [arrays], <hyperparameters>}`` per group.  A group's
        ``lr`` is a number or a schedule (a callable t -> lr, t = 1, 2, ...).
        ``type(opt)(opt.param_groups)`` builds an equivalent optimizer.
    state : list of dict
        Per group: ``"step"`` (steps taken) and each state buffer name -> list
        of arrays aligned with the group's params.
    skipped_steps : int
        Steps skipped for non-finite gradients.
    last_grad_norm : float or None
        The total gradient norm of the last step, when clipping is on.
    """

    # --- the table each subclass fills in (defaults come from its __init__) ---
    # (buffer name, the group key whose truth enables it, or None: always)
    state_buffers = ()
    # buffer name -> the group key holding its initial value (others start at 0)
    state_initial_values = {}
    # the fused function, and the group keys passed to it under the same name
    kernel = None
    kernel_args = ()
    # whether the fused function takes step=t
    kernel_takes_step = False
    # the hyperparameters that are switches: they must be bools
    flags = ("maximize",)

    def __init__(self, params, defaults, *, num_threads=None, max_grad_norm=None, norm_type=2.0,
                 skip_nonfinite=False):
        _core.sgd_step([], [], lr=0.0, num_threads=num_threads)  # validates num_threads
        self.num_threads = num_threads
        if max_grad_norm is not None:
            max_grad_norm = _positive("max_grad_norm", max_grad_norm)
        self.max_grad_norm = max_grad_norm
        self.norm_type = _norm_type(norm_type)
        if not isinstance(skip_nonfinite, (bool, np.bool_)):
            raise TypeError(f"skip_nonfinite must be a bool; got {skip_nonfinite!r}")
        self.skip_nonfinite = bool(skip_nonfinite)
        self.defaults = dict(defaults)
        self._check_hyperparameters(dict(self.defaults))
        self.param_groups = []
        self.state = []
        self.skipped_steps = 0
        self.last_grad_norm = None

        if isinstance(params, np.ndarray) or not isinstance(params, (list, tuple)):
            raise TypeError("params must be a list of ndarrays or a list of dicts; got "
                            f"{type(params).__name__}")
        if len(params) == 0:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if all(isinstance(p, dict) for p in params) else [{"params": list(params)}]
        for group in groups:
            self.add_param_group(group)

    # --- parameters and groups ---------------------------------------------

    @property
    def params(self):
        """Every parameter, in group order: what step(grads) aligns grads with."""
        return [p for group in self.param_groups for p in group["params"]]

    def add_param_group(self, param_group):
        """Add a group ``{"params": [arrays], <overrides>}``; missing hyperparameters take the defaults."""
        group = self._make_group(param_group)
        existing = self.params
        _check_disjoint(existing + group["params"], len(existing))
        self.param_groups.append(group)
        self.state.append({"step": 0})
        self._ensure_state(len(self.param_groups) - 1)

    def _make_group(self, param_group):
        """A validated group dict built from the user's: params checked, defaults filled in."""
        if not isinstance(param_group, dict):
            raise TypeError(f"a parameter group must be a dict; got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError("a parameter group must have a 'params' entry")
        unknown = set(param_group) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(f"{type(self).__name__} has no hyperparameter {', '.join(sorted(map(repr, unknown)))}; "
                             f"it has {', '.join(self.defaults)}")
        params = param_group["params"]
        params = [params] if isinstance(params, np.ndarray) else list(params)
        if not params:
            raise ValueError("a parameter group must have at least one parameter")
        for index, p in enumerate(params):
            _check_param(f"params[{index}]", p, params[0])
        group = {"params": params}
        for key, default in self.defaults.items():
            group[key] = param_group.get(key, default)
        self._check_hyperparameters(group)
        return group

    def _check_hyperparameters(self, group):
        """Switches must be bools, lr a number or a schedule; the fused function checks the rest."""
        for key in self.flags:
            if not isinstance(group[key], (bool, np.bool_)):
                raise TypeError(f"{key} must be a bool; got {group[key]!r}")
        if not (callable(group["lr"]) or isinstance(group["lr"], numbers.Real)):
            raise TypeError(f"lr must be a number or a schedule (callable t -> lr); got {group['lr']!r}")
        self._checked_call(group, 0.0 if callable(group["lr"]) else group["lr"], 1)

    def _checked_call(self, group, lr, t):
        """(fused function, its arguments but the buffers) for `group` at step t with rate lr.

        The function checks every hyperparameter itself: it is called once on
        no tensors, which writes nothing.
        """
        kernel, kwargs = self._kernel_call(group, t)
        kwargs["lr"] = lr
        kernel([], [], **{name: [] for name in self._buffer_names(group)}, **kwargs)
        return kernel, kwargs

    # --- the table's interpretation ------------------------------------------

    def _kernel_call(self, group, t):
        """(fused function, its hyperparameter arguments except lr) for `group` at step t."""
        kwargs = {key: group[key] for key in self.kernel_args}
        if self.kernel_takes_step:
            kwargs["step"] = t
        return self.kernel, kwargs

    def _buffer_names(self, group):
        """The state buffers `group`'s hyperparameters use."""
        return [name for name, key in self.state_buffers if key is None or group[key]]

    def _ensure_state(self, index):
        """Create the buffers group `index` uses and lacks (a hyperparameter may have turned one on)."""
        group, state = self.param_groups[index], self.state[index]
        for name in self._buffer_names(group):
            if name not in state:
                initial = group[self.state_initial_values[name]] if name in self.state_initial_values else 0
                state[name] = [_full_like(p, initial) for p in group["params"]]

    # --- the step ------------------------------------------------------------

    def step(self, grads, *, grad_scale=1.0):
        """Update every parameter from ``grads``, aligned with :attr:`params`; return whether it did.

        One fused multi-tensor call per group.  Everything is checked before
        the first write: a wrong count, shape or dtype raises ValueError or
        TypeError and leaves parameters and state untouched.  Returns False
        when ``skip_nonfinite`` skipped the step, else True.

        grad_scale multiplies the gradients first, without writing them (for
        instance 1/loss_scale, or a clipping factor computed across shards);
        ``max_grad_norm`` clips the scaled gradients.
        """
        grads = _core.check_grads(self.params, grads)
        grad_scale = _nonnegative("grad_scale", grad_scale)
        calls = []
        offset = 0
        for index, group in enumerate(self.param_groups):
            self._ensure_state(index)
            t = self.state[index]["step"] + 1
            kernel, kwargs = self._checked_call(group, group["lr"](t) if callable(group["lr"]) else group["lr"], t)
            count = len(group["params"])
            buffers = {name: self.state[index][name] for name in self._buffer_names(group)}
            calls.append((kernel, group["params"], grads[offset:offset + count], buffers, kwargs))
            offset += count

        scale = self._grad_scale(grads, grad_scale)
        if scale is None:
            self.skipped_steps += 1
            return False
        for kernel, params, group_grads, buffers, kwargs in calls:
            kernel(params, group_grads, **buffers, **kwargs, grad_scale=scale, num_threads=self.num_threads)
        for state in self.state:
            state["step"] += 1
        return True

    def _grad_scale(self, grads, grad_scale):
        """The factor folded into the gradients of this step, or None to skip it.

        One read pass of the gradients at most: the clipping norm when
        max_grad_norm is set (a finite norm proves them finite), else the
        finiteness check when skip_nonfinite is.
        """
        if self.max_grad_norm is None:
            if self.skip_nonfinite and not _core.all_finite(grads, self.num_threads):
                return None
            return grad_scale
        norm = _core.total_norm(grads, self.norm_type, self.num_threads)
        if not math.isfinite(norm) and self.skip_nonfinite and (
                math.isinf(self.norm_type) or not _core.all_finite(grads, self.num_threads)):
            self.last_grad_norm = norm
            return None  # a finite gradient can overflow a p-norm: checked apart, rarely
        if grad_scale != 1.0:
            norm *= grad_scale
        self.last_grad_norm = norm
        coefficient = clip_coefficient(norm, self.max_grad_norm)
        # A NaN norm (NaN gradients, not skipped) cannot scale: step unclipped, NaN flows on.
        return grad_scale if math.isnan(coefficient) else grad_scale * coefficient

    # --- checkpoints ---------------------------------------------------------

    def state_dict(self):
        """A snapshot: a flat dict of numbers, strings and ndarray copies.

        Picklable, and savable as is with ``np.savez(path, **opt.state_dict())``.
        Keys: ``kind``, ``format``, ``skipped_steps``, ``num_groups``, and per
        group g: ``groups.g.num_params``, ``groups.g.step``, ``groups.g.<hyperparameter>``
        (a schedule is not saved: the optimizer it is loaded into keeps its
        own), ``state.g.<buffer>.<i>`` for the i-th param of the group.
        """
        out = {"kind": type(self).__name__, "format": STATE_DICT_FORMAT,
               "skipped_steps": self.skipped_steps, "num_groups": len(self.param_groups)}
        for g, (group, state) in enumerate(zip(self.param_groups, self.state)):
            out[f"groups.{g}.num_params"] = len(group["params"])
            out[f"groups.{g}.step"] = state["step"]
            for key in self.defaults:
                if not callable(group[key]):
                    out[f"groups.{g}.{key}"] = group[key]
            for name in self._buffer_names(group):
                for i, buffer in enumerate(state[name]):
                    out[f"state.{g}.{name}.{i}"] = buffer.copy(order="K")
        return out

    def load_state_dict(self, state_dict):
        """Restore a :meth:`state_dict` (a dict, or what ``np.load`` returns for its ``.npz``).

        Checks everything first (kind, group and parameter counts, the
        hyperparameters, every buffer's presence, shape and dtype): on any
        mismatch it raises ValueError and leaves the optimizer untouched.
        Hyperparameters are restored as torch does; a group whose lr is a
        schedule keeps it when the saved one was a schedule too.
        """
        try:
            saved = {key: state_dict[key] for key in state_dict}
        except Exception as exc:
            raise ValueError(f"state_dict must be a mapping; got {type(state_dict).__name__}") from exc
        kind = _scalar(saved, "kind")
        if kind != type(self).__name__:
            raise ValueError(f"state_dict is of a {kind}, not a {type(self).__name__}")
        if _scalar(saved, "format") != STATE_DICT_FORMAT:
            raise ValueError(f"state_dict has format {_scalar(saved, 'format')}; this version reads "
                             f"{STATE_DICT_FORMAT}")
        if _scalar(saved, "num_groups") != len(self.param_groups):
            raise ValueError(f"state_dict has {_scalar(saved, 'num_groups')} groups; the optimizer has "
                             f"{len(self.param_groups)}")
        skipped = _count(saved, "skipped_steps")
        used = {"kind", "format", "num_groups", "skipped_steps"}
        new_groups, new_states = [], []
        for g, group in enumerate(self.param_groups):
            prefix = f"groups.{g}."
            count = _scalar(saved, prefix + "num_params")
            if count != len(group["params"]):
                raise ValueError(f"state_dict group {g} has {count} params; the optimizer's has "
                                 f"{len(group['params'])}")
            new_group = dict(group)
            for key, default in self.defaults.items():
                if prefix + key in saved:
                    new_group[key] = _restore_value(saved[prefix + key], default)
                    used.add(prefix + key)
            try:
                self._check_hyperparameters(new_group)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"state_dict group {g}: {exc}") from exc
            new_state = {"step": _count(saved, prefix + "step")}
            used.update((prefix + "num_params", prefix + "step"))
            for name in self._buffer_names(new_group):
                keys = [f"state.{g}.{name}.{i}" for i in range(len(group["params"]))]
                new_state[name] = [_saved_buffer(saved, key, p) for key, p in zip(keys, group["params"])]
                used.update(keys)
            new_groups.append(new_group)
            new_states.append(new_state)
        unexpected = set(saved) - used
        if unexpected:
            raise ValueError(f"state_dict has entries this optimizer does not use: "
                             f"{', '.join(sorted(unexpected)[:5])}")
        # everything checked: commit, into the existing buffers where there are (views of them stay valid)
        for g, (group, new_group, new_state) in enumerate(zip(self.param_groups, new_groups, new_states)):
            group.update(new_group)
            for name, values in new_state.items():
                if name == "step":
                    continue
                buffers = self.state[g].get(name) or [np.empty_like(p) for p in group["params"]]
                for buffer, value in zip(buffers, values):
                    np.copyto(buffer, value)
                new_state[name] = buffers
            self.state[g] = new_state
        self.skipped_steps = skipped

    # --- display -------------------------------------------------------------

    def __repr__(self):
        options = [f"num_threads={self.num_threads!r}"]
        if self.max_grad_norm is not None:
            options.append(f"max_grad_norm={self.max_grad_norm!r}, norm_type={self.norm_type!r}")
        if self.skip_nonfinite:
            options.append(f"skip_nonfinite=True, skipped_steps={self.skipped_steps}")
        lines = [f"{type(self).__name__}({', '.join(options)})"]
        for g, (group, state) in enumerate(zip(self.param_groups, self.state)):
            params = group["params"]
            size = sum(p.size for p in params)
            hyper = ", ".join(f"{key}={group[key]!r}" for key in self.defaults)
            lines.append(f"  group {g}: {len(params)} params, {size:,} {params[0].dtype} elements, "
                         f"step {state['step']}; {hyper}")
        return "\n".join(lines)


# --------------------------------------------------------------------------
# the optimizers

class SGD(Optimizer):
    """torch.optim.SGD: plain, with momentum, or Nesterov momentum.

    momentum = 0 calls :func:`fastopt.sgd_step`; momentum > 0
    :func:`fastopt.sgd_momentum_step`, whose buffer starts as the first gradient.
    """

    state_buffers = (("momentum_buffer", "momentum"),)
    flags = ("nesterov", "maximize")

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, *,
                 maximize=False, **options):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov, maximize=maximize),
                         **options)

    def _kernel_call(self, group, t):
        if group["momentum"]:
            return _core.sgd_momentum_step, {
                "step": t, "momentum": group["momentum"], "dampening": group["dampening"],
                "nesterov": group["nesterov"], "weight_decay": group["weight_decay"],
                "maximize": group["maximize"]}
        if group["nesterov"]:
            raise ValueError("nesterov=True requires momentum > 0 and dampening = 0")
        return _core.sgd_step, {"weight_decay": group["weight_decay"], "maximize": group["maximize"]}


class Momentum(Optimizer):
    """The lecture's momentum, an EMA of gradients (:func:`fastopt.momentum_step`)::

        v <- beta*v + (1-beta)*g;  theta <- theta - lr*v
    """

    state_buffers = (("velocity", None),)
    kernel = staticmethod(_core.momentum_step)
    kernel_args = ("beta", "weight_decay", "maximize")

    def __init__(self, params, lr=1e-3, beta=0.9, weight_decay=0.0, *, maximize=False, **options):
        super().__init__(params, dict(lr=lr, beta=beta, weight_decay=weight_decay, maximize=maximize),
                         **options)


class RMSprop(Optimizer):
    """torch.optim.RMSprop (:func:`fastopt.rmsprop_step`), centered and with momentum."""

    state_buffers = (("square_avg", None), ("grad_avg", "centered"), ("momentum_buffer", "momentum"))
    kernel = staticmethod(_core.rmsprop_step)
    kernel_args = ("alpha", "eps", "weight_decay", "momentum", "centered", "maximize")
    flags = ("centered", "maximize")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
                 *, maximize=False, **options):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize),
                         **options)


class Adagrad(Optimizer):
    """torch.optim.Adagrad (:func:`fastopt.adagrad_step`); the sums start at initial_accumulator_value."""

    state_buffers = (("state_sum", None),)
    state_initial_values = {"state_sum": "initial_accumulator_value"}
    kernel = staticmethod(_core.adagrad_step)
    kernel_args = ("lr_decay", "eps", "weight_decay", "maximize")
    kernel_takes_step = True

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                 eps=1e-10, *, maximize=False, **options):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps,
                                      maximize=maximize),
                         **options)

    def _check_hyperparameters(self, group):
        super()._check_hyperparameters(group)
        _nonnegative("initial_accumulator_value", group["initial_accumulator_value"])


class Adam(Optimizer):
    """torch.optim.Adam (:func:`fastopt.adam_step`): L2 weight decay, amsgrad."""

    state_buffers = (("exp_avg", None), ("exp_avg_sq", None), ("max_exp_avg_sq", "amsgrad"))
    kernel = staticmethod(_core.adam_step)
    kernel_args = ("eps", "weight_decay", "amsgrad", "maximize")
    kernel_takes_step = True
    flags = ("amsgrad", "maximize")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, *,
                 maximize=False, **options):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize),
                         **options)

    def _check_hyperparameters(self, group):
        betas = group["betas"]
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise TypeError(f"betas must be a pair (beta1, beta2); got {betas!r}")
        group["betas"] = tuple(betas)
        super()._check_hyperparameters(group)

    def _kernel_call(self, group, t):
        kernel, kwargs = super()._kernel_call(group, t)
        kwargs["beta1"], kwargs["beta2"] = group["betas"]
        return kernel, kwargs


class AdamW(Adam):
    """torch.optim.AdamW (:func:`fastopt.adamw_step`): decoupled weight decay."""

    kernel = staticmethod(_core.adamw_step)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, **options):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize, **options)


# --------------------------------------------------------------------------
# helpers

def _real(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {value!r}")
    return float(value)


def _nonnegative(name, value):
    value = _real(name, value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be finite and >= 0; got {value!r}")
    return value


def _positive(name, value):
    value = _real(name, value)
    if not value > 0:
        raise ValueError(f"{name} must be > 0; got {value!r}")
    return value


def _norm_type(value):
    _core.norm_kind(value)
    return float(value)


def _check_param(label, p, first):
    """A parameter the fused kernels can update in place, of the same dtype as its group's first."""
    if not isinstance(p, np.ndarray):
        raise TypeError(f"{label} must be an ndarray; got {type(p).__name__}")
    if p.dtype not in (np.float32, np.float64) or not p.dtype.isnative:
        raise TypeError(f"{label} must have dtype float32 or float64 in native byte order; got {p.dtype.str}")
    if p.dtype != first.dtype:
        raise TypeError(f"{label} is {p.dtype} but params[0] of its group is {first.dtype}: "
                        f"put each dtype in a group of its own")
    if not (p.flags.c_contiguous or p.flags.f_contiguous):
        raise ValueError(f"{label} must be C- or Fortran-contiguous")
    if not p.flags.writeable:
        raise ValueError(f"{label} is updated in place and must be writeable")
    if not p.flags.aligned:
        raise ValueError(f"{label} is not aligned to its dtype")


def _check_disjoint(params, first_new):
    """No array among params[first_new:] may be, or share memory with, another param."""
    if len({id(p) for p in params}) != len(params):
        raise ValueError("a parameter appears twice; each must be a separate array")
    extents = sorted((p.__array_interface__["data"][0], p.nbytes, index)
                     for index, p in enumerate(params) if p.nbytes)
    widest_end, widest = -1, -1
    for start, nbytes, index in extents:
        if start < widest_end and max(index, widest) >= first_new:
            raise ValueError(f"params {widest} and {index} overlap in memory; each must be a separate array")
        if start + nbytes > widest_end:
            widest_end, widest = start + nbytes, index


def _full_like(p, value):
    """A state buffer in p's memory order (the kernels need the same layout).

    Zeros come from np.zeros, whose pages stay untouched until the first step
    writes them; a wrapper that moves the state elsewhere never pays for them.
    """
    order = "F" if p.flags.f_contiguous and not p.flags.c_contiguous else "C"
    if value == 0:
        return np.zeros(p.shape, p.dtype, order=order)
    return np.full(p.shape, value, p.dtype, order=order)


def _scalar(saved, key):
    if key not in saved:
        raise ValueError(f"state_dict has no {key!r}")
    value = np.asarray(saved[key])
    if value.ndim != 0:
        raise ValueError(f"state_dict {key!r} must be a scalar; got shape {value.shape}")
    return value.item()


def _count(saved, key):
    value = _scalar(saved, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"state_dict {key!r} must be an integer >= 0; got {value!r}")
    return value


def _restore_value(value, default):
    """A hyperparameter as saved (a pickled Python value or an .npz array) in the type of its default."""
    value = np.asarray(value)
    if isinstance(default, tuple):
        return tuple(value.tolist()) if value.ndim == 1 else value.item()
    return value.item() if value.ndim == 0 else value.tolist()


def _saved_buffer(saved, key, param):
    """saved[key], after checking it can be copied into a buffer of param."""
    if key not in saved:
        raise ValueError(f"state_dict has no {key!r}")
    value = saved[key]
    if not isinstance(value, np.ndarray):
        raise ValueError(f"state_dict {key!r} must be an ndarray; got {type(value).__name__}")
    if value.shape != param.shape or value.dtype != param.dtype:
        raise ValueError(f"state_dict {key!r} is {value.dtype}{list(value.shape)}; its param is "
                         f"{param.dtype}{list(param.shape)}")
    return value
