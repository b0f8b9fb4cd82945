"""torch.optim optimizers whose step is one fused fastopt call, on CPU tensors.

``fastopt.torch.AdamW`` is a :class:`torch.optim.AdamW` whose ``step`` is
replaced: it collects each group's parameters that have a gradient, takes
zero-copy NumPy views of their memory (parameters, gradients, state) and makes
one checked fastopt plan for all groups, run as one parallel region.
Everything else is torch's own: the constructor (arguments, defaults,
checks), ``param_groups`` (plain dicts that ``torch.optim.lr_scheduler``
drives; a hyperparameter changed there applies at the next step),
``state`` (torch's keys, tensors), ``state_dict``/``load_state_dict`` in
torch's format, ``zero_grad``, ``add_param_group`` and the step hooks.

The classes are made from the rule registry (:mod:`fastopt.rules`): one per
:mod:`fastopt.optim` class, subclassing the torch.optim class with the same
update (``rule.torch``), or :class:`torch.optim.Optimizer` for fastopt's own
``Momentum``.  fastopt's options are keyword arguments of every class:
``num_threads=``, ``max_grad_norm=`` (with ``norm_type=``) and
``skip_nonfinite=``.

Per step the Python work is O(groups) plus one pass over each group's
parameters that checks the cached views are still those of the same memory
and state (identity and data pointer) and takes a view of each gradient.

Tensors: CPU, strided, float32, float64, bfloat16 or float16
(``KERNEL_DTYPES``), C- or Fortran-contiguous (a transposed tensor is).  A
16-bit parameter is stepped in its dtype as torch's fused CPU Adam steps it:
float32 arithmetic, each new value rounded to nearest into the param and its
state, which is of the param's dtype; its gradient is of its dtype or float32
(torch's ``grad_dtype=torch.float32``).  A group may mix dtypes, but float64
goes with float64 only.
"""

import functools
import inspect
import math
import numbers

try:
    import torch
except ImportError as _missing:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "fastopt.torch needs torch: pip install \"fastopt[torch]\" (in a checkout: pip install -e \".[torch]\"; "
        "on Linux, for the CPU build, first pip install torch --index-url https://download.pytorch.org/whl/cpu)"
    ) from _missing

import numpy as np

from fastopt import _core, clip, optim, rules
from fastopt.steps import SPECS

__all__ = ["KERNEL_DTYPES", "numpy_view"]

# What fastopt's kernels step: float32 arithmetic for the 16-bit dtypes, each result rounded into its buffer.
KERNEL_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_SIXTEEN_BIT = (torch.bfloat16, torch.float16)

# The gradients a parameter of each dtype takes: its own dtype (as autograd makes them), and float32
# for a 16-bit one (torch's grad_dtype=torch.float32 accumulates them so).
_GRAD_DTYPES = {torch.float32: (torch.float32,), torch.float64: (torch.float64,),
                torch.bfloat16: (torch.bfloat16, torch.float32), torch.float16: (torch.float16, torch.float32)}

# torch's name of a registry state buffer, where the two differ.
_TORCH_STATE_KEY = {("adagrad", "state_sum"): "sum"}

# torch.optim's foreach= and fused= pick one of torch's own implementations:
# fastopt always runs its fused kernel, so they are taken and kept in the groups
# (a checkpoint loaded into torch keeps the choice), not acted on.

# torch.optim arguments that fastopt cannot honour: refused when true.
_REFUSED = {
    "capturable": "capturable=True is for CUDA graphs; fastopt.torch steps CPU tensors",
    "differentiable": "differentiable=True needs autograd through the step; fastopt's step is not differentiable",
}


# --------------------------------------------------------------------------
# views

def numpy_view(tensor):
    """A NumPy array on the memory of a CPU tensor: no copy, writes go to the tensor.

    float32, float64 and float16 map to NumPy's own dtypes; bfloat16, which
    NumPy lacks and ``Tensor.numpy()`` refuses, to ``ml_dtypes.bfloat16``
    through a same-size integer view.  Raises TypeError for another device,
    layout or dtype.
    """
    _refuse_unviewable(tensor)
    t = tensor.detach()
    if t.dtype is torch.bfloat16:
        import ml_dtypes  # an optional dependency (the torch extra): imported only for bfloat16

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def _refuse_unviewable(t):
    if t.device.type != "cpu":
        raise TypeError(f"is on {t.device}: fastopt.torch steps CPU tensors (move the model or its "
                        f"optimizer state to the CPU, or use a torch.optim optimizer there)")
    if t.layout is not torch.strided:
        raise TypeError(f"has layout {t.layout}: fastopt.torch steps dense (strided) tensors")
    if not (t.dtype.is_floating_point and t.dtype.itemsize in (2, 4, 8)):
        raise TypeError(f"has dtype {t.dtype}: fastopt.torch steps float32, float64, bfloat16 and float16 tensors")
    if t.is_conj() or t.is_neg():
        raise TypeError("is a lazily conjugated or negated view: resolve it first")


def _kernel_problem(t):
    """Why the kernels cannot step tensor t in place, or None."""
    try:
        _refuse_unviewable(t)
    except TypeError as exc:
        return str(exc)
    if t.dtype not in KERNEL_DTYPES:
        return f"has dtype {t.dtype}: fastopt.torch steps float32, float64, bfloat16 and float16 tensors"
    view = numpy_view(t)
    if not (view.flags.c_contiguous or view.flags.f_contiguous):
        return (f"is not contiguous (strides {tuple(t.stride())}): fastopt steps contiguous memory; "
                f"make the parameter contiguous before building the optimizer")
    return None


# --------------------------------------------------------------------------
# how a rule's call is read from a torch group and its state

_PLAIN_NUMBERS = frozenset((float, int, bool))


class _RuleLayout:
    """Where a rule's hyperparameters are in a torch group, and what its state is called in torch.

    ``read(group)`` -> (values, used): the call's hyperparameters in the
    rule's order (tensors as numbers), and per state buffer whether they use
    it.  It is compiled from source for the rule, since a step of a small
    model is dominated by per-group work.
    """

    __slots__ = ("rule", "spec", "state_keys", "initial_keys", "pair_keys", "read")

    def __init__(self, rule, pairs):
        self.rule = rule
        self.spec = SPECS[rule.name]
        self.state_keys = tuple(_TORCH_STATE_KEY.get((rule.name, b.name), b.name) for b in rule.state)
        self.initial_keys = tuple(b.initial for b in rule.state)
        self.pair_keys = tuple(dict.fromkeys(key for key, index in pairs.values()
                                             if any(h.name in pairs for h in rule.hyper)))
        lines, names = [], []
        for k, h in enumerate(rule.hyper):
            key, index = pairs.get(h.name, (h.name, None))
            item = f"group[{key!r}]" if index is None else f"group[{key!r}][{index}]"
            lines.append(f"    v{k} = {item}\n"
                         f"    if type(v{k}) not in _PLAIN: v{k} = _number(v{k})\n")
            names.append(f"v{k}")
        index = {h.name: k for k, h in enumerate(rule.hyper)}
        used = ["True" if b.enabled_by is None else f"bool(v{index[b.enabled_by]})" for b in rule.state]
        source = (f"def read(group):\n{''.join(lines)}"
                  f"    return ({', '.join(names)},), ({''.join(u + ', ' for u in used)})\n")
        namespace = {"_PLAIN": _PLAIN_NUMBERS, "_number": _number}
        exec(compile(source, f"<fastopt.torch: {rule.name} layout>", "exec"), namespace)
        self.read = namespace["read"]


def _number(value):
    """A hyperparameter that is not a plain number: torch's optimizers take 1-element tensors."""
    return value.item() if isinstance(value, torch.Tensor) else value


_PAIRS = {"betas": ("beta1", "beta2")}


def _pairs_of(rule):
    names = dict(_PAIRS)
    if rule.optim is not None:
        names.update(rule.optim.pairs)
    return {hyper: (key, i) for key, members in names.items() for i, hyper in enumerate(members)}


_LAYOUTS = {name: _RuleLayout(rule, _pairs_of(rule)) for name, rule in rules.RULES.items()}


# --------------------------------------------------------------------------
# the per-group cache of views

class _Entry:
    """One parameter's views: of its memory and of its state tensors (as in optimizer.state)."""

    __slots__ = ("param", "pointer", "view", "state", "tensors", "views", "first", "step", "expected",
                 "grad_dtypes")

    def __init__(self, param, pointer, view, state, tensors, views, first, step):
        self.param = param          # the tensor
        self.pointer = pointer      # its data pointer when the view was taken
        self.view = view            # ndarray on its memory
        self.state = state          # its dict in optimizer.state; None while new (made by a step not yet done)
        self.tensors = tensors      # the state tensors, in the layout's order of used buffers
        self.views = views          # ndarrays on them
        self.first = first          # SGD: no momentum buffer yet (the kernel's step 1)
        self.step = step            # its state's "step": a 0-d view of its group's step counts
        self.expected = tensors if step is None else (step, *tensors)   # what its state holds, by _Group.checked
        self.grad_dtypes = _GRAD_DTYPES[param.dtype]   # the dtypes its gradient may have


class _Group:
    """What one param group's step reads, kept from step to step while its tensors stay the same."""

    __slots__ = ("group", "params", "layout", "used", "all_used", "unused", "positions", "keys", "entries",
                 "stateless", "steps", "step_values", "holds")

    def __init__(self, group, layout, used, counts_steps):
        self.group = group
        self.params = group["params"]
        self.layout = layout
        self.used = used
        self.all_used = all(used)
        self.unused = (None,) * len(used)
        self.positions = tuple(2 + k for k, u in enumerate(used) if u)
        self.keys = tuple(k for k, u in zip(layout.state_keys, used) if u)   # torch's names of the used state
        self.entries = [None] * len(self.params)
        self.stateless = not self.keys and not counts_steps   # plain SGD: torch keeps no state at all
        # optimizer.state[p]["step"] of every param are 0-d views of one tensor: advanced in one operation
        self.steps = self.step_values = None
        if counts_steps:
            dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
            self.steps = torch.zeros(len(self.params), dtype=dtype)
            self.step_values = self.steps.numpy()
        # holds(state, entry.expected): whether a param's state still holds the tensors its views are of
        checked = (("step",) if counts_steps else ()) + self.keys
        source = ("def holds(st, expected):\n    return "
                  + " and ".join(f"st.get({k!r}) is expected[{j}]" for j, k in enumerate(checked) or ["True"]) + "\n")
        namespace = {}
        exec(compile(source, "<fastopt.torch: state check>", "exec"), namespace)
        self.holds = namespace["holds"]

    def buffers(self, params, grads, states):
        """A call's buffers in the rule's order: None for each state buffer it does not use."""
        if self.all_used:
            return (params, grads, *states, None)
        out = [params, grads, *self.unused, None]  # (no param_copy)
        for position, column in zip(self.positions, states):
            out[position] = column
        return tuple(out)


# --------------------------------------------------------------------------
# the base of every class

class _FastoptOptimizer(torch.optim.Optimizer):
    """The step, checks and options shared by every fastopt.torch optimizer (mixed in before torch's class)."""

    # Set per class: how a group picks its rule, whether torch keeps a "step" tensor per param, the name.
    _fo_rule_of = None
    _fo_counts_steps = True
    _fo_what = "step"

    def _fo_init_options(self, num_threads, max_grad_norm, norm_type, skip_nonfinite):
        if num_threads is not None:
            _core.check_count("num_threads", num_threads, 1, 1 << 16)
        if max_grad_norm is not None:
            if isinstance(max_grad_norm, bool) or not isinstance(max_grad_norm, numbers.Real):
                raise TypeError(f"max_grad_norm must be a real number; got {max_grad_norm!r}")
            if not max_grad_norm > 0:
                raise ValueError(f"max_grad_norm must be > 0; got {max_grad_norm!r}")
            max_grad_norm = float(max_grad_norm)
        _core.norm_kind(norm_type)
        if not isinstance(skip_nonfinite, (bool, np.bool_)):
            raise TypeError(f"skip_nonfinite must be a bool; got {skip_nonfinite!r}")
        self.num_threads = num_threads
        self.max_grad_norm = max_grad_norm
        self.norm_type = float(norm_type)
        self.skip_nonfinite = bool(skip_nonfinite)
        self.skipped_steps = 0
        self.last_grad_norm = None
        self._fo_groups = []

    def _fo_after_init(self, defaults):
        for name, why in _REFUSED.items():
            if defaults.get(name):
                raise ValueError(f"{type(self).__name__}: {why}")
        # torch's fused classes say they unscale gradients themselves for GradScaler; this step does not:
        # GradScaler then unscales the gradients and skips non-finite steps itself.
        self._step_supports_amp_scaling = False

    # --- pickling and load_state_dict (torch's __setstate__ takes only its own three entries)

    def __getstate__(self):
        state = super().__getstate__()
        state["fastopt_options"] = {k: getattr(self, k) for k in
                                    ("num_threads", "max_grad_norm", "norm_type", "skip_nonfinite",
                                     "skipped_steps", "last_grad_norm")}
        return state

    def __setstate__(self, state):
        state = dict(state)
        options = state.pop("fastopt_options", None)
        self._fo_check_loaded(state)
        super().__setstate__(state)
        if options is not None:
            self.__dict__.update(options)
        self._fo_groups = []   # groups and state are new objects: every view is taken afresh

    def _fo_check_loaded(self, state):
        """Check what load_state_dict (or unpickling) is about to install; raise ValueError, write nothing."""
        param_state = state.get("state", {})
        for g, group in enumerate(state.get("param_groups", [])):
            try:
                self._fo_check_group_hyperparameters(group)
            except KeyError as exc:
                raise ValueError(f"state_dict param_groups[{g}] has no {exc}: it is not of a "
                                 f"{type(self).__name__}") from None
            except (TypeError, ValueError) as exc:
                raise ValueError(f"state_dict param_groups[{g}]: {exc}") from None
            for i, p in enumerate(group["params"]):
                saved = param_state.get(p) if isinstance(p, torch.Tensor) else None
                if not saved:
                    continue
                where = f"state_dict state of param_groups[{g}]['params'][{i}]"
                for key, value in saved.items():
                    if key == "step":
                        _whole_step(value, where)
                    elif isinstance(value, torch.Tensor):
                        if value.shape != p.shape:
                            raise ValueError(f"{where}: {key} has shape {tuple(value.shape)}, its param "
                                             f"{tuple(p.shape)}")
                    elif value is not None:
                        raise ValueError(f"{where}: {key} must be a tensor; got {type(value).__name__}")

    # --- groups

    def add_param_group(self, param_group):
        """torch's add_param_group, then every new parameter and hyperparameter checked (the group is
        not added if one fails)."""
        super().add_param_group(param_group)
        index = len(self.param_groups) - 1
        group = self.param_groups[index]
        try:
            for i, p in enumerate(group["params"]):
                problem = _kernel_problem(p)
                if problem:
                    raise _bad_input(problem, f"param_groups[{index}]['params'][{i}] {_describe(p)}")
            try:
                self._fo_check_group_hyperparameters(group)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"param_groups[{index}]: {exc}") from None
        except BaseException:
            self.param_groups.pop()
            raise

    def _fo_check_group_hyperparameters(self, group):
        layout = _LAYOUTS[type(self)._fo_rule_of(group).name]
        for key in layout.pair_keys:
            pair = group[key]
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise TypeError(f"{key} must be a pair; got {pair!r}")
        values, used = layout.read(group)
        buffers = ([], []) + tuple([] if u else None for u in used) + (None,)
        _core.plan([(layout.spec, buffers, values, 1)])

    # --- the step

    def step(self, closure=None):
        """One step of every parameter with a gradient; returns the closure's loss, as torch does.

        The closure, if given, runs first with gradients enabled.  Then every
        group's hyperparameters, parameters, gradients and state are checked
        together, and a bad one raises TypeError or ValueError naming the
        group and the parameter's index, with nothing written.  With
        ``skip_nonfinite``, a step whose gradients hold NaN or Inf writes
        nothing and counts in ``skipped_steps``.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        try:
            calls, pending, stepped = self._fo_collect()
            plan = _core.plan(calls, self.num_threads, self._fo_what) if calls else None
        except (TypeError, ValueError, IndexError, KeyError) as exc:
            self._fo_explain(exc)
            raise
        if plan is None:
            return loss
        if self.max_grad_norm is None and not self.skip_nonfinite:
            plan.run(1.0)
        else:
            scale, norm = clip.step_scale(plan, 1.0, max_norm=self.max_grad_norm, norm_type=self.norm_type,
                                          skip_nonfinite=self.skip_nonfinite)
            if norm is not None:
                self.last_grad_norm = norm
            if scale is None:
                self.skipped_steps += 1
                return loss
            plan.run(scale)
        self._fo_commit(pending, stepped)
        return loss

    def _fo_collect(self):
        """The plan's calls; (entry, group, index) of parameters whose state the step makes; and per
        group stepped, its cache and the indices of its parameters with a gradient."""
        calls, pending, stepped = [], [], []
        state_of = self.state
        caches = self._fo_groups
        if len(caches) != len(self.param_groups):
            caches[:] = (caches + [None] * len(self.param_groups))[:len(self.param_groups)]
        rule_of = self._fo_rule_of
        for g, group in enumerate(self.param_groups):
            rule = rule_of(group)
            layout = _LAYOUTS[rule.name]
            values, used = layout.read(group)
            cache = caches[g]
            if (cache is None or cache.group is not group or cache.params is not group["params"]
                    or cache.layout is not layout or cache.used != used or len(cache.entries) != len(cache.params)):
                cache = caches[g] = _Group(group, layout, used, self._fo_counts_steps)
            entries, stateless, holds = cache.entries, cache.stateless, cache.holds
            grads, taken, active = [], [], []
            for i, p in enumerate(cache.params):
                grad = p.grad
                if grad is None:
                    continue
                e = entries[i]
                if e is None or e.param is not p or p.data_ptr() != e.pointer:
                    e = self._fo_entry(cache, g, i, p, pending)
                elif not stateless:
                    st = state_of.get(p)
                    if st is e.state:
                        if st is None:   # made by a step that did not happen (skipped, or refused)
                            pending.append((e, g, i))
                        elif not holds(st, e.expected):
                            e = self._fo_entry(cache, g, i, p, pending)
                    elif e.state is None and not st:   # the same, st an empty dict
                        pending.append((e, g, i))
                    else:
                        e = self._fo_entry(cache, g, i, p, pending)
                if grad.dtype not in e.grad_dtypes:
                    raise TypeError(f"{self._fo_what}: param_groups[{g}]['params'][{i}] {_describe(p)}: "
                                    f"{_grad_dtype_problem(p, grad)}")
                try:
                    grads.append(grad.numpy())
                except (RuntimeError, TypeError):
                    grads.append(_grad_view(grad, g, i, p))
                taken.append(e)
                active.append(i)
            params = [e.view for e in taken]
            states = [[e.views[k] for e in taken] for k in range(len(cache.keys))]
            if not active:
                continue
            # the count every param of the group has after this step, when they all step together
            full = None
            if cache.steps is None:   # SGD: t = 1 makes the momentum buffer the gradient
                ts = [1 if entries[i].first else 2 for i in active]
            else:
                counts = cache.step_values.tolist()
                if len(active) == len(counts) and counts.count(counts[0]) == len(counts):   # the usual case
                    full = _next_step(counts[0], g, 0, self._fo_what)
                else:
                    ts = [_next_step(counts[i], g, i, self._fo_what) for i in active]
            stepped.append((cache, active, full))
            if not rule.takes_step:
                calls.append((layout.spec, cache.buffers(params, grads, states), values, None))
                continue
            if full is not None:
                calls.append((layout.spec, cache.buffers(params, grads, states), values, full))
                continue
            if ts.count(ts[0]) == len(ts):
                calls.append((layout.spec, cache.buffers(params, grads, states), values, ts[0]))
                continue
            # parameters whose first gradient came later have taken fewer steps: one call per count
            by_step = {}
            for k, t in enumerate(ts):
                by_step.setdefault(t, []).append(k)
            for t, ks in by_step.items():
                calls.append((layout.spec, cache.buffers([params[k] for k in ks], [grads[k] for k in ks],
                                                         [[column[k] for k in ks] for column in states]),
                              values, t))
        return calls, pending, stepped

    def _fo_entry(self, cache, g, i, p, pending):
        """The views of parameter i of group g, taken afresh (its memory, its state or both changed)."""
        where = f"param_groups[{g}]['params'][{i}] {_describe(p)}"
        problem = _kernel_problem(p)
        if problem:
            raise _bad_input(problem, where)
        view = numpy_view(p)
        if cache.stateless:
            e = cache.entries[i] = _Entry(p, p.data_ptr(), view, None, (), (), False, None)
            return e
        st = self.state.get(p)
        new = not st
        if new:
            tensors = tuple(self._fo_new_buffer(cache.layout, p, key) for key in cache.keys)
            first = True
        else:
            tensors = []
            for key in cache.keys:
                tensor = st.get(key)
                if tensor is None:  # a hyperparameter turned this buffer on since: it starts now
                    tensor = st[key] = self._fo_new_buffer(cache.layout, p, key)
                elif not isinstance(tensor, torch.Tensor):
                    raise ValueError(f"{where} has state {key!r} of type {type(tensor).__name__}, not a tensor")
                tensors.append(tensor)
            tensors = tuple(tensors)
            first = st.get("momentum_buffer") is None
        step = None
        if cache.steps is not None:
            cache.step_values[i] = 0 if new else _whole_step(st.get("step", 0), where)
            step = cache.steps[i]
            if not new:
                st["step"] = step
        views = []
        for key, tensor in zip(cache.keys, tensors):
            problem = _kernel_problem(tensor)
            if problem:
                raise _bad_input(problem, f"state {key!r} of {where}")
            if tensor.dtype is not p.dtype:
                raise TypeError(f"state {key!r} of {where} has dtype {str(tensor.dtype).replace('torch.', '')}: "
                                f"the state of a parameter is of its dtype, as torch keeps it")
            views.append(numpy_view(tensor))
        e = cache.entries[i] = _Entry(p, p.data_ptr(), view, None if new else st, tensors, tuple(views), first,
                                      step)
        if new:
            pending.append((e, g, i))
        return e

    def _fo_new_buffer(self, layout, p, key):
        initial = 0
        for state_key, initial_key in zip(layout.state_keys, layout.initial_keys):
            if state_key == key and initial_key is not None:
                initial = self.defaults[initial_key]   # as torch: the constructor's value, not the group's
        with torch.no_grad():
            if initial == 0:
                return torch.zeros_like(p, memory_format=torch.preserve_format)
            return torch.full_like(p, initial, memory_format=torch.preserve_format)

    def _fo_commit(self, pending, stepped):
        """After the kernels ran: new state into optimizer.state, step counts advanced, versions bumped."""
        stepped_params = []
        for cache, active, full in stepped:
            counts = cache.step_values
            if counts is not None:
                if full is not None:
                    counts.fill(full)   # as += 1 on each: float32 rounds the same past 2**24
                else:
                    counts[active] += 1
            elif not cache.stateless:
                for i in active:
                    cache.entries[i].first = False
            if len(active) == len(cache.params):
                stepped_params += cache.params
            else:
                stepped_params += [cache.params[i] for i in active]
        if pending:
            for e, g, i in pending:
                keys = self._fo_groups[g].keys
                st = {"step": e.step} if e.step is not None else {}
                st.update(zip(keys, e.tensors))
                self.state[e.param] = st
                e.state = st
        _increment_version(stepped_params)

    def _fo_explain(self, exc):
        """After a failed check: raise the same kind of error naming the group and the parameter, where
        one can be found; else return, and the caller raises the original."""
        rule_of = type(self)._fo_rule_of
        for g, group in enumerate(self.param_groups):
            try:
                self._fo_check_group_hyperparameters(group)
            except KeyError as missing:
                raise ValueError(f"{self._fo_what}: param_groups[{g}] has no {missing}") from None
            except (TypeError, ValueError) as bad:
                raise type(bad)(f"{self._fo_what}: param_groups[{g}]: {bad}") from None
            layout = _LAYOUTS[rule_of(group).name]
            values, used = layout.read(group)
            for i, p in enumerate(group["params"]):
                grad = p.grad
                if grad is None:
                    continue
                where = f"{self._fo_what}: param_groups[{g}]['params'][{i}] {_describe(p)}"
                problem = _kernel_problem(p)
                if problem:
                    raise _bad_input(problem, where)
                if grad.layout is not torch.strided:
                    raise TypeError(f"{where}: its gradient is sparse ({grad.layout}): fastopt.torch steps "
                                    f"dense gradients")
                problem = _kernel_problem(grad)
                if problem:
                    raise _bad_input(problem, f"{where}: its gradient")
                problem = _grad_dtype_problem(p, grad)
                if problem:
                    raise TypeError(f"{where}: {problem}")
                st = self.state.get(p) or {}
                buffers = [numpy_view(p), numpy_view(grad)]
                for key, u in zip(layout.state_keys, used):
                    tensor = (st.get(key) if st.get(key) is not None else torch.zeros_like(p)) if u else None
                    buffers.append(None if tensor is None else numpy_view(tensor))
                buffers.append(None)  # no param_copy
                try:
                    _core.plan([(layout.spec, tuple(buffers), values, 1)], what=where, model_labels=False)
                except (TypeError, ValueError) as bad:
                    raise type(bad)(str(bad)) from None
        labels, views = [], []
        for g, group in enumerate(self.param_groups):
            for i, p in enumerate(group["params"]):
                if p.grad is not None:
                    labels.append(f"param_groups[{g}]['params'][{i}]")
                    views.append(numpy_view(p))
        overlap = _core.find_overlap(views) if views else None
        if overlap is not None:
            raise ValueError(f"{self._fo_what}: {labels[overlap[0]]} and {labels[overlap[1]]} overlap in "
                             f"memory; every parameter must be a separate tensor")


def _grad_dtype_problem(p, grad):
    """Why a parameter cannot take this gradient's dtype, or None."""
    allowed = _GRAD_DTYPES.get(p.dtype, (p.dtype,))
    if grad.dtype in allowed:
        return None
    names = " or ".join(str(d).replace("torch.", "") for d in allowed)
    return (f"its gradient has dtype {str(grad.dtype).replace('torch.', '')}: a "
            f"{str(p.dtype).replace('torch.', '')} parameter takes {names} gradients")


def _grad_view(grad, g, i, p):
    """A gradient's view, off the fast path (Tensor.numpy()): it requires grad (create_graph=True), it
    is of a dtype NumPy views only through numpy_view, or it is refused."""
    if _kernel_problem(grad) is None:
        return numpy_view(grad)
    where = f"param_groups[{g}]['params'][{i}] {_describe(p)}"
    if grad.is_sparse or grad.layout is not torch.strided:
        raise TypeError(f"{where}: its gradient is sparse ({grad.layout}): fastopt.torch steps dense gradients")
    raise _bad_input(_kernel_problem(grad) or "cannot be viewed", f"{where}: its gradient")


def _next_step(count, g, i, what):
    """The kernel's t after a saved count (a float, as torch keeps it)."""
    if not (0 <= count <= optim.MAX_SAVED_STEP and count == int(count)):
        raise ValueError(f"{what}: param_groups[{g}]['params'][{i}] has state step {count!r}: a step count "
                         f"is a whole number >= 0")
    return int(count) + 1


def _describe(t):
    return f"({'x'.join(map(str, t.shape)) or 'scalar'} {str(t.dtype).replace('torch.', '')})"


def _bad_input(problem, where, kind=None):
    if kind is None:
        kind = ValueError if problem.startswith("is not contiguous") else TypeError
    return kind(f"{where} {problem}")


def _whole_step(value, where):
    """A saved step count (tensor or number) as an int; ValueError unless a whole number >= 0."""
    number = value.item() if isinstance(value, torch.Tensor) else value
    if isinstance(number, bool) or not isinstance(number, numbers.Real) or not (
            math.isfinite(number) and number >= 0 and number == int(number)
            and number <= optim.MAX_SAVED_STEP):
        raise ValueError(f"{where}: step must be a whole number >= 0; got {value!r}")
    return int(number)


try:
    torch.autograd.graph.increment_version([torch.zeros(1)])

    def _increment_version(tensors):
        """Autograd's version counters, bumped as torch's in-place updates bump them."""
        if tensors:
            torch.autograd.graph.increment_version(tensors)
except (AttributeError, TypeError):  # older torch: one tensor per call
    def _increment_version(tensors):
        for t in tensors:
            torch.autograd.graph.increment_version(t)


# --------------------------------------------------------------------------
# the step hooks: torch's wrapper when a hook or the profiler needs it, else the step alone

try:
    from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks
except ImportError:  # pragma: no cover - torch without them: torch's wrapper every time
    _global_optimizer_pre_hooks = _global_optimizer_post_hooks = None


def _hooked(step):
    """The step as torch's base class wraps it (hooks, the profiler's record), without the cost of
    torch's wrapper (a profiler record of about 7 us) when there is nothing to call or record."""
    torch_wrapped = torch.optim.Optimizer.profile_hook_step(step)

    @functools.wraps(step)
    def wrapper(self, *args, **kwargs):
        if (_global_optimizer_pre_hooks is None or _global_optimizer_pre_hooks or _global_optimizer_post_hooks
                or self._optimizer_step_pre_hooks or self._optimizer_step_post_hooks
                or torch.autograd._profiler_enabled()):
            return torch_wrapped(self, *args, **kwargs)
        return step(self, *args, **kwargs)

    wrapper.hooked = True  # torch's _patch_step_function leaves it as it is
    return wrapper


_FastoptOptimizer.step = _hooked(_FastoptOptimizer.step)


# --------------------------------------------------------------------------
# the classes, from the registry

_OPTIONS = (
    inspect.Parameter("num_threads", inspect.Parameter.KEYWORD_ONLY, default=None),
    inspect.Parameter("max_grad_norm", inspect.Parameter.KEYWORD_ONLY, default=None),
    inspect.Parameter("norm_type", inspect.Parameter.KEYWORD_ONLY, default=2.0),
    inspect.Parameter("skip_nonfinite", inspect.Parameter.KEYWORD_ONLY, default=False),
)

# How a class whose groups step with one of two rules picks it (fastopt.optim.SGD picks the same way).
_RULE_CHOICE = {
    "SGD": lambda group: rules.RULES["sgd_momentum" if group["momentum"] else "sgd"],
    # torch's Adam(decoupled_weight_decay=True) is AdamW
    "Adam": lambda group: rules.RULES["adamw" if group.get("decoupled_weight_decay") else "adam"],
}


def _class_rules():
    """class name -> (the registry rules it steps with, torch's class name or None), in registry order."""
    out = {}
    for rule in rules.RULES.values():
        name = rule.optim_class_name
        # a rule whose optimizer keeps numbers of its own per group (NAdam's mu_product,
        # Schedule-Free's averaging sums) is stepped by fastopt.optim's class only
        if name is not None and not any(h.kept_by_optimizer for h in rule.hyper):
            out.setdefault(name, ([], rule.torch))[0].append(rule)
    return out


def _make_class(name, class_rules, torch_name):
    torch_class = getattr(torch.optim, torch_name) if torch_name else None
    if name in _RULE_CHOICE:
        choose = _RULE_CHOICE[name]
    else:
        only = class_rules[0]

        def choose(group):
            return only
    namespace = {
        "__module__": __name__,
        "_fo_rule_of": staticmethod(choose),
        "_fo_what": f"{name}.step",   # how errors of a step name it
        # torch's SGD keeps no step count: its momentum buffer's presence says whether it is the first step
        "_fo_counts_steps": torch_name != "SGD",
    }
    if torch_class is not None:
        bases = (_FastoptOptimizer, torch_class)
        torch_signature = inspect.signature(torch_class.__init__)

        def __init__(self, params, *args, num_threads=None, max_grad_norm=None, norm_type=2.0,
                     skip_nonfinite=False, **kwargs):
            self._fo_init_options(num_threads, max_grad_norm, norm_type, skip_nonfinite)
            torch_class.__init__(self, params, *args, **kwargs)
            self._fo_after_init(self.defaults)
        parameters = list(torch_signature.parameters.values())
        summary = (f"torch.optim.{torch_name}, stepped by fastopt: one fused call per step for all groups "
                   f"(:func:`fastopt.{class_rules[0].function_name}`).")
    else:
        # fastopt.optim's constructor arguments, which are torch's way of writing this rule's
        arguments = [p for p in inspect.signature(getattr(optim, name).__init__).parameters.values()
                     if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

        def __init__(self, params, *args, num_threads=None, max_grad_norm=None, norm_type=2.0,
                     skip_nonfinite=False, **kwargs):
            self._fo_init_options(num_threads, max_grad_norm, norm_type, skip_nonfinite)
            bound = inspect.Signature(arguments).bind(self, params, *args, **kwargs)
            bound.apply_defaults()
            defaults = {k: v for k, v in bound.arguments.items() if k not in ("self", "params")}
            self._fo_check_group_hyperparameters(defaults)
            torch.optim.Optimizer.__init__(self, params, defaults)
            self._fo_after_init(self.defaults)
        parameters = arguments
        summary = (f"fastopt.optim.{name} as a torch.optim optimizer ({class_rules[0].summary}; no torch.optim "
                   f"class has it): one fused call per step for all groups.")
    parameters = [p for p in parameters if p.kind != p.VAR_KEYWORD] + list(_OPTIONS)
    __init__.__signature__ = inspect.Signature(parameters)
    __init__.__qualname__ = f"{name}.__init__"
    namespace["__init__"] = __init__
    namespace["__doc__"] = (
        f"{summary}\n\n"
        f"    Arguments: {'torch' if torch_class is not None else 'fastopt.optim'}'s (see the signature). fastopt's\n"
        f"    options, keyword-only: num_threads (None: fastopt.get_num_threads()), max_grad_norm and norm_type\n"
        f"    (clip all gradients together, folded into the step: the gradients are not written),\n"
        f"    skip_nonfinite (a step with NaN or Inf gradients writes nothing and counts in skipped_steps).\n")
    return type(name, bases if torch_class is not None else (_FastoptOptimizer,), namespace)


_CLASSES = [_make_class(name, class_rules, torch_name)
            for name, (class_rules, torch_name) in _class_rules().items()]
globals().update({cls.__name__: cls for cls in _CLASSES})
__all__ += [cls.__name__ for cls in _CLASSES]
