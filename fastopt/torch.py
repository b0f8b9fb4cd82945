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
``num_threads=``, ``max_grad_norm=`` (with ``norm_type=``),
``skip_nonfinite=``, and those of :class:`fastopt.optim.Optimizer` for
precision, with its names and meaning:

- ``master_weights=True``: each 16-bit param has float32 master weights in
  ``state[p]["master"]``, stepped, and written rounded into the param in the
  same pass; its state is float32 then.  A master that no longer rounds to
  its param when the step takes its views afresh (after ``load_state_dict``,
  or a new ``.data``) starts again from the param.
- ``state_dtype=``: "float32", "bfloat16" or "float16" for every float state
  buffer, or "8bit" (``block_size=``): block-quantized codes and scales,
  ``state[p]["exp_avg.codes"]`` (uint8) and ``state[p]["exp_avg.scales"]``
  (float32), for params of 4096 elements or more in C order.
- ``stochastic_rounding=True`` with ``seed=``: 16-bit params stepped without
  master weights are rounded stochastically (SGD then counts its steps in
  ``state[p]["step"]``, which keys the rounding).

``state_dict()`` is torch's format with fastopt's extras beside torch's keys:
master weights as they are; 8-bit buffers both dequantized to float32 under
torch's name (what a torch.optim optimizer loads) and as codes and scales (what
fastopt loads bit for bit, while they still match the float values), with
``"fastopt": {"quantized_format", "block_size"}``.  ``load_state_dict`` keeps
each tensor in the dtype this optimizer keeps it in, where torch's would cast
it to the param's.

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

import collections
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

from fastopt import _core, clip, factored, optim, quantized, reference, rules
from fastopt.steps import SPECS
from fastopt._core import view_like

__all__ = ["KERNEL_DTYPES", "numpy_view"]

# What fastopt's kernels step: float32 arithmetic for the 16-bit dtypes, each result rounded into its buffer.
KERNEL_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_SIXTEEN_BIT = (torch.bfloat16, torch.float16)

# The gradients a parameter of each dtype takes: its own dtype (as autograd makes them), and float32
# for a 16-bit one (torch's grad_dtype=torch.float32 accumulates them so).
_GRAD_DTYPES = {torch.float32: (torch.float32,), torch.float64: (torch.float64,),
                torch.bfloat16: (torch.bfloat16, torch.float32), torch.float16: (torch.float16, torch.float32)}

# The dtype of float state buffers under each state_dtype= (with "8bit": of those not quantized).
_STATE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
                 "8bit": torch.float32}

# Numbers a rule's optimizer keeps that torch keeps per param, as a 0-d tensor of its scalar dtype in
# state[p] (NAdam's product of momentum coefficients): name -> value before the first step.
_PER_PARAM_SCALARS = {"mu_product": 1.0}

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


_PARAM_FIX = "make the parameter contiguous before building the optimizer"
_GRAD_FIX = "make the gradient contiguous (p.grad = p.grad.contiguous())"


def _kernel_problem(t, fix=_PARAM_FIX):
    """Why the kernels cannot step tensor t in place, or None; fix: what the user can do about memory
    that is not contiguous."""
    try:
        _refuse_unviewable(t)
    except TypeError as exc:
        return str(exc)
    if t.dtype not in KERNEL_DTYPES:
        return f"has dtype {t.dtype}: fastopt.torch steps float32, float64, bfloat16 and float16 tensors"
    view = numpy_view(t)
    if not (view.flags.c_contiguous or view.flags.f_contiguous):
        return (f"is not contiguous (strides {tuple(t.stride())}): fastopt steps contiguous memory; "
                f"{fix}")
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

    __slots__ = ("rule", "spec", "state_keys", "initial_keys", "pair_keys", "read", "buffers", "signed", "master_slot_names",
                 "mu_index", "beta1_index", "decay_index")

    def __init__(self, rule, pairs):
        self.rule = rule
        self.spec = SPECS[rule.name]
        self.state_keys = tuple(_TORCH_STATE_KEY.get((rule.name, b.name), b.name) for b in rule.state)
        self.initial_keys = tuple(b.initial for b in rule.state)
        # torch's name of a buffer -> the signedness of its 8-bit codes (None: it stays float)
        self.buffers = dict(zip(self.state_keys, rule.state))
        self.signed = {key: b.eight_bit_signed for key, b in self.buffers.items()}
        # how errors name the buffers of a call whose param slot holds the float32 masters
        self.master_slot_names = (("master", "grads") + tuple(b.name for b in rule.state)
                                  + ("",) * (3 - len(rule.state)) + ("params",))
        self.pair_keys = tuple(dict.fromkeys(key for key, index in pairs.values()
                                             if any(h.name in pairs for h in rule.hyper)))
        lines, names = [], []
        positions = {h.name: k for k, h in enumerate(rule.hyper)}
        # NAdam: the product of momentum coefficients is each param's (state "mu_product"), given per call
        self.mu_index = positions.get("mu_product")
        self.beta1_index, self.decay_index = positions.get("beta1"), positions.get("momentum_decay")
        for k, h in enumerate(rule.hyper):
            if h.kept_by_optimizer:   # read as its example: each call has its own value
                lines.append(f"    v{k} = {h.example!r}\n")
                names.append(f"v{k}")
                continue
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
    if isinstance(value, torch.Tensor):   # (one that is not one readable number is refused as not a number)
        return value.item() if value.numel() == 1 and not value.is_meta else value
    return value


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

    __slots__ = ("param", "pointer", "view", "state", "stored", "views", "master", "first", "step", "expected",
                 "holds", "grad_dtypes", "rounds", "dtype", "shape", "grad_like_view")

    def __init__(self, param, pointer, view, state, stored, views, master, first, step, rounds):
        self.param = param          # the tensor
        self.pointer = pointer      # its data pointer when the view was taken
        self.view = view            # ndarray on its memory
        self.state = state          # its dict in optimizer.state; None while new (made by a step not yet done)
        self.stored = stored        # (key, tensor) of every state tensor it uses: buffers, 8-bit codes and scales, master
        self.views = views          # per used buffer, in the layout's order: an ndarray or a QuantizedState
        self.master = master        # ndarray on its float32 master weights, or None
        self.first = first          # SGD: no momentum buffer yet (the kernel's step 1)
        self.step = step            # its state's "step": a 0-d view of its group's step counts
        tensors = tuple(t for _, t in stored)
        self.expected = tensors if step is None else (step, *tensors)   # what its state holds, by holds()
        self.holds = _holds_for(tuple(k for k, _ in stored) if step is None else ("step", *(k for k, _ in stored)))
        self.grad_dtypes = _GRAD_DTYPES[param.dtype]   # the dtypes its gradient may have
        self.rounds = rounds        # a 16-bit param stepped with stochastic rounding
        self.dtype, self.shape = param.dtype, param.shape
        # a contiguous gradient of its dtype and shape is viewed with the param's layout (_fo_collect)
        self.grad_like_view = bool(view.flags.c_contiguous and view.size)


@functools.lru_cache(maxsize=None)
def _holds_for(keys):
    """holds(state, expected): whether a param's state still holds the tensors its views are of, under keys."""
    source = ("def holds(st, expected):\n    return "
              + " and ".join([f"st.get({k!r}) is expected[{j}]" for j, k in enumerate(keys)] or ["True"]) + "\n")
    namespace = {}
    exec(compile(source, "<fastopt.torch: state check>", "exec"), namespace)
    return namespace["holds"]


class _Group:
    """What one param group's step reads, kept from step to step while its tensors stay the same."""

    __slots__ = ("group", "params", "layout", "used", "all_used", "unused", "positions", "keys", "entries",
                 "stateless", "steps", "step_values", "mus", "mu_values", "taken", "param_views", "state_views")

    def __init__(self, group, layout, used, counts_steps, master_weights):
        self.group = group
        self.params = group["params"]
        self.layout = layout
        self.used = used
        self.all_used = all(used)
        self.unused = (None,) * len(used)
        self.positions = tuple(2 + k for k, u in enumerate(used) if u)
        self.keys = tuple(k for k, u in zip(layout.state_keys, used) if u)   # torch's names of the used state
        self.entries = [None] * len(self.params)
        # the entries of the last plain call, and the lists of their views it was given (read-only)
        self.taken = self.param_views = self.state_views = None
        # plain SGD: torch keeps no state at all (but master weights are state)
        self.stateless = not self.keys and not counts_steps and not master_weights
        # optimizer.state[p]["step"] of every param are 0-d views of one tensor: advanced in one operation
        self.steps = self.step_values = None
        dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32   # torch's scalars'
        if counts_steps:
            self.steps = torch.zeros(len(self.params), dtype=dtype)
            self.step_values = self.steps.numpy()
        # NAdam: optimizer.state[p]["mu_product"] of every param, 0-d views of one tensor, as the steps
        self.mus = self.mu_values = None
        if layout.mu_index is not None:
            self.mus = torch.ones(len(self.params), dtype=dtype)
            self.mu_values = self.mus.numpy()

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

    # Set per class: how a group picks its rule, whether torch keeps a "step" tensor per param, the name,
    # whether it is SGD (whose momentum buffer's presence says whether it is the first step).
    _fo_rule_of = None
    _fo_counts_steps = True
    _fo_what = "step"
    _fo_sgd = False

    def _fo_init_options(self, num_threads, max_grad_norm, norm_type, skip_nonfinite, state_dtype=None,
                         block_size=256, master_weights=False, stochastic_rounding=False, seed=0):
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
        if state_dtype is not None and state_dtype not in optim.STATE_DTYPES:
            raise ValueError(f"state_dtype must be None or one of {', '.join(map(repr, optim.STATE_DTYPES))}; "
                             f"got {state_dtype!r}")
        block_size = quantized.check_block_size(block_size)
        master_weights = bool(_core.check_value("bool", "master_weights", master_weights))
        stochastic_rounding = bool(_core.check_value("bool", "stochastic_rounding", stochastic_rounding))
        if master_weights and stochastic_rounding:
            raise ValueError("stochastic_rounding rounds a 16-bit param stepped directly; with "
                             "master_weights=True the float32 master is stepped: choose one")
        seed = _core.check_count("seed", seed, 0, 2**63 - 1)
        self.num_threads = num_threads
        self.max_grad_norm = max_grad_norm
        self.norm_type = float(norm_type)
        self.skip_nonfinite = bool(skip_nonfinite)
        self.state_dtype = state_dtype
        self.block_size = block_size
        self.master_weights = master_weights
        self.stochastic_rounding = stochastic_rounding
        self.seed = seed
        self.skipped_steps = 0
        self.last_grad_norm = None
        self._fo_groups = []
        if self._fo_sgd and stochastic_rounding:
            # the rounding's random bits change with the step: SGD counts its steps then (state "step")
            self._fo_counts_steps = True

    def _fo_after_init(self, defaults):
        for name, why in _REFUSED.items():
            if defaults.get(name):
                raise ValueError(f"{type(self).__name__}: {why}")
        # torch's fused classes say they unscale gradients themselves for GradScaler; this step does not:
        # GradScaler then unscales the gradients and skips non-finite steps itself.
        self._step_supports_amp_scaling = False
        # state torch's constructor made (Adagrad's sums at their initial value), made again as this
        # optimizer keeps it: in its dtype (not rounded to the param's first) or 8-bit
        for group in self.param_groups:
            layout = _LAYOUTS[type(self)._fo_rule_of(group).name]
            for p in group["params"]:
                st = self.state.get(p)
                for key in layout.state_keys if st else ():
                    if key in st:
                        del st[key]
                        signed = self._fo_signed(layout, key, p)
                        if signed is None:
                            st[key] = self._fo_new_buffer(layout, p, key, self._fo_state_dtype(p))
                        else:
                            q = self._fo_new_quantized(layout, p, key, signed)
                            st[key + ".codes"], st[key + ".scales"] = q.codes, q.scales

    # --- what each parameter's state is

    def _fo_has_master(self, p):
        return self.master_weights and p.dtype in _SIXTEEN_BIT

    def _fo_state_dtype(self, p):
        """The dtype of p's float state buffers (those not kept as 8-bit codes)."""
        if self.state_dtype is None or p.dtype is torch.float64:
            return torch.float32 if self._fo_has_master(p) else p.dtype
        return _STATE_DTYPES[self.state_dtype]

    def _fo_signed(self, layout, key, p):
        """The signedness of buffer key's 8-bit codes for p, or None where it is kept in floats."""
        if self.state_dtype != "8bit" or key not in layout.buffers:
            return None
        return layout.buffers[key].eight_bit_signed_for(p.numel(), p.is_contiguous())

    def _fo_param_problem(self, p):
        """Why this optimizer cannot step parameter p, or None."""
        problem = _kernel_problem(p)
        if problem is None and p.dtype is torch.float64 and self.state_dtype is not None:
            problem = (f"is float64, which takes float64 state: state_dtype={self.state_dtype!r} goes with "
                       f"float32, bfloat16 and float16 params")
        return problem

    # --- pickling and load_state_dict (torch's __setstate__ takes only its own three entries)

    def __getstate__(self):
        state = super().__getstate__()
        state["fastopt_options"] = {k: getattr(self, k) for k in
                                    ("num_threads", "max_grad_norm", "norm_type", "skip_nonfinite",
                                     "state_dtype", "block_size", "master_weights", "stochastic_rounding",
                                     "seed", "skipped_steps", "last_grad_norm")}
        state.pop("_fo_loading", None)
        return state

    def __setstate__(self, state):
        state = dict(state)
        options = state.pop("fastopt_options", None)
        if options is not None:
            self.__dict__.update(options)
        self._fo_check_loaded(state)
        loading = self.__dict__.get("_fo_loading")
        if loading is not None:   # load_state_dict: torch cast the state to the params' dtypes; take it as saved
            state["state"] = self._fo_adopt(state, loading)
        super().__setstate__(state)
        if self._fo_sgd and self.__dict__.get("stochastic_rounding"):
            self._fo_counts_steps = True
        self._fo_groups = []   # groups and state are new objects: every view is taken afresh

    def load_state_dict(self, state_dict):
        """torch's load_state_dict, with fastopt's state kept as saved (float32 master weights, 8-bit codes,
        state of another dtype than the param's), and every saved tensor checked first: a bad one raises
        ValueError naming the group and the parameter, and the optimizer is left as it was."""
        # (torch's load would raise KeyError or AttributeError for these)
        if not (isinstance(state_dict, dict) and isinstance(state_dict.get("state"), dict)
                and isinstance(state_dict.get("param_groups"), (list, tuple))):
            raise ValueError("state_dict must be a dict with 'state' (a dict) and 'param_groups' (a list), as "
                             "state_dict() makes it")
        self._fo_loading = state_dict
        try:
            super().load_state_dict(state_dict)
        finally:
            self._fo_loading = None

    def state_dict(self):
        """torch's state_dict.  With state_dtype="8bit", each 8-bit buffer is there twice: dequantized to
        float32 under torch's name (what a torch.optim optimizer loads) and as its codes and scales
        (``<name>.codes``, ``<name>.scales``, which fastopt loads bit for bit), with the format under
        ``"fastopt"``."""
        state_dict = super().state_dict()
        if self.state_dtype != "8bit":
            return state_dict
        index = 0
        for group in self.param_groups:
            layout = _LAYOUTS[type(self)._fo_rule_of(group).name]
            for _ in group["params"]:
                entry = state_dict["state"].get(index)
                if entry is not None and any(isinstance(k, str) and k.endswith(".codes") for k in entry):
                    state_dict["state"][index] = _with_dequantized(entry, layout, self.block_size)
                index += 1
        state_dict["fastopt"] = {"quantized_format": quantized.FORMAT_VERSION, "block_size": self.block_size}
        return state_dict

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
                if not isinstance(saved, dict):
                    raise ValueError(f"{where} must be a dict of tensors; got {type(saved).__name__}")
                # torch's __setstate__ reads these of every param with state: a KeyError there would come
                # after the groups and state were installed
                required = ["step"] if self._fo_counts_steps and not self._fo_sgd else []
                if _LAYOUTS[type(self)._fo_rule_of(group).name].mu_index is not None:
                    required.append("mu_product")
                for key in required:
                    if key not in saved:
                        raise ValueError(f"{where} has no {key!r}: a {type(self).__name__} keeps one for every "
                                         f"param with state")
                for key, value in saved.items():
                    if key == "step":
                        _whole_step(value, where)
                    elif key in _PER_PARAM_SCALARS:
                        _saved_scalar(value, key, where)
                    elif isinstance(value, torch.Tensor):
                        # (8-bit scales, one per block, are checked with their codes)
                        if value.shape != p.shape and not (isinstance(key, str) and key.endswith(".scales")):
                            raise ValueError(f"{where}: {key} has shape {tuple(value.shape)}, its param "
                                             f"{tuple(p.shape)}")
                    elif value is not None:
                        raise ValueError(f"{where}: {key} must be a tensor; got {type(value).__name__}")

    def _fo_adopt(self, state, saved_dict):
        """The state load_state_dict installs, per param as this optimizer keeps it, from the tensors as
        saved (torch's load cast them to the params' dtypes): float buffers in their dtype, 8-bit ones as
        codes and scales, master weights in float32.  Raises ValueError naming the param; writes nothing."""
        saved_ids = [pid for group in saved_dict["param_groups"] for pid in group["params"]]
        saved_state = saved_dict["state"]
        info = saved_dict.get("fastopt") if isinstance(saved_dict.get("fastopt"), dict) else {}
        codes_readable = (info.get("quantized_format") == quantized.FORMAT_VERSION
                          and info.get("block_size") == self.block_size)
        adopted = collections.defaultdict(dict, state["state"])   # as torch keeps it
        k = 0
        for g, group in enumerate(state["param_groups"]):
            layout = _LAYOUTS[type(self)._fo_rule_of(group).name]
            for i, p in enumerate(group["params"]):
                pid = saved_ids[k]
                k += 1
                if p not in adopted or pid not in saved_state:
                    continue
                where = f"state_dict state of param_groups[{g}]['params'][{i}]"
                adopted[p] = self._fo_adopt_one(p, layout, saved_state[pid], adopted[p], codes_readable, where)
        return adopted

    def _fo_adopt_one(self, p, layout, saved, cast, codes_readable, where):
        out = {}
        buffers = set(layout.state_keys)
        for key, value in cast.items():   # step and keys fastopt does not know: as torch loaded them
            base = key.rsplit(".", 1)[0] if isinstance(key, str) and key.endswith((".codes", ".scales")) else key
            if key in _PER_PARAM_SCALARS:
                out[key] = saved[key]   # as saved: torch's load rounds it to a 16-bit param's dtype
            elif key != "master" and base not in buffers:
                out[key] = value
        kept = self._fo_state_dtype(p)
        for key in layout.state_keys:
            value, codes, scales = saved.get(key), saved.get(key + ".codes"), saved.get(key + ".scales")
            if value is None and codes is None:
                continue
            signed = self._fo_signed(layout, key, p)
            q = None
            code_sign = layout.signed.get(key)
            if codes is not None and codes_readable and code_sign is not None:
                q = _saved_codes(codes, scales, p, self.block_size, code_sign, where, key)
                if value is not None and not _same_bits(_dequantized(q), value):
                    q = None   # the float buffer moved on since the codes were saved (a torch.optim optimizer stepped it)
            if signed is not None:
                if q is None:
                    if value is None:
                        raise ValueError(f"{where}: {key} has 8-bit codes of another format or block size, and "
                                         f"no float values to quantize")
                    q = _quantized(value, signed, self.block_size)
                out[key + ".codes"], out[key + ".scales"] = q.codes, q.scales
            else:
                if value is None:
                    if q is None:
                        raise ValueError(f"{where}: {key} has 8-bit codes of another format or block size, and "
                                         f"no float values")
                    value = torch.from_numpy(_dequantized(q))
                out[key] = value.to(dtype=kept, device=p.device)
        master = saved.get("master")
        if master is not None and self._fo_has_master(p):
            if not isinstance(master, torch.Tensor) or master.shape != p.shape:
                raise ValueError(f"{where}: master must be a tensor of its param's shape {tuple(p.shape)}")
            out["master"] = master.to(dtype=torch.float32, device=p.device)
        return out

    # --- groups

    def add_param_group(self, param_group):
        """torch's add_param_group, then every new parameter and hyperparameter checked (the group is
        not added if one fails)."""
        super().add_param_group(param_group)
        index = len(self.param_groups) - 1
        group = self.param_groups[index]
        try:
            for i, p in enumerate(group["params"]):
                problem = self._fo_param_problem(p)
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
        scale = _step_scale(self, plan)
        if scale is None:
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
        # master weights, stochastic rounding or per-param products: calls split by how each param is stepped
        sorted_calls = self.master_weights or self.stochastic_rounding
        for g, group in enumerate(self.param_groups):
            rule = rule_of(group)
            layout = _LAYOUTS[rule.name]
            values, used = layout.read(group)
            cache = caches[g]
            if (cache is None or cache.group is not group or cache.params is not group["params"]
                    or cache.layout is not layout or cache.used != used or len(cache.entries) != len(cache.params)):
                cache = caches[g] = _Group(group, layout, used, self._fo_counts_steps, self.master_weights)
            entries, stateless = cache.entries, cache.stateless
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
                        elif not e.holds(st, e.expected):
                            e = self._fo_entry(cache, g, i, p, pending)
                    elif e.state is None and not st:   # the same, st an empty dict
                        pending.append((e, g, i))
                    else:
                        e = self._fo_entry(cache, g, i, p, pending)
                if grad.dtype not in e.grad_dtypes:
                    raise TypeError(f"{self._fo_what}: param_groups[{g}]['params'][{i}] {_describe(p)}: "
                                    f"{_grad_dtype_problem(p, grad)}")
                try:
                    if (e.grad_like_view and grad.dtype is e.dtype and grad.is_contiguous() and not grad.is_neg()
                            and grad.shape == e.shape):
                        # the param's layout: these checks and the view cost 3/4 of Tensor.numpy()
                        grads.append(view_like(e.view, grad.data_ptr(), grad))
                    else:
                        grads.append(grad.numpy())
                except (RuntimeError, TypeError):
                    grads.append(_grad_view(grad, g, i, p))
                taken.append(e)
                active.append(i)
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
                    ts = None
                else:
                    ts = [_next_step(counts[i], g, i, self._fo_what) for i in active]
            mus = None
            if cache.mus is not None:
                mus = self._fo_mu_products(layout, values, cache, active, full, ts)
            stepped.append((cache, active, full, mus))
            if sorted_calls or mus is not None:
                self._fo_sorted_calls(calls, rule, layout, values, cache, taken, grads, active, full, ts, mus)
                continue
            if taken == cache.taken:   # the params of the last step: their views' lists again
                params, states = cache.param_views, cache.state_views
            else:
                params = [e.view for e in taken]
                states = [[e.views[k] for e in taken] for k in range(len(cache.keys))]
                cache.taken, cache.param_views, cache.state_views = taken, params, states
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

    def _fo_mu_products(self, layout, values, cache, active, full, ts):
        """NAdam: each stepped param's mu_product once this step is taken, as torch computes it
        (``mu_product *= mu_t`` in the dtype of its scalars), aligned with active."""
        beta1 = _core.check_value("unit", "beta1", values[layout.beta1_index])
        momentum_decay = _core.check_value("nonneg", "momentum_decay", values[layout.decay_index])
        steps = [full] * len(active) if ts is None else ts
        factors = {t: reference.nadam_momentum(t, beta1, momentum_decay) for t in set(steps)}
        scalar = cache.mu_values.dtype.type
        return [cache.mu_values[i] * scalar(factors[t]) for i, t in zip(active, steps)]

    def _fo_sorted_calls(self, calls, rule, layout, values, cache, taken, grads, active, full, ts, mus=None):
        """A group's calls with master weights, stochastic rounding or NAdam's per-param products: one per
        step count (and product) and kind of step (float32 masters written into the 16-bit params; 16-bit
        params rounded stochastically; the others)."""
        if ts is None:
            ts = [full] * len(taken)
        if self._fo_sgd and cache.steps is not None:   # SGD counting its steps for the rounding's key
            counts = ts
            ts = [1 if e.first else max(t, 2) for e, t in zip(taken, counts)]
        else:
            counts = ts
        buckets = {}
        for k, e in enumerate(taken):
            rounds = e.rounds
            # the kernel's t where the rule takes one; the count keys the rounding of rules that do not
            key = (ts[k] if rule.takes_step else None, counts[k] if rounds and not rule.takes_step else None,
                   e.master is not None, rounds, None if mus is None else float(mus[k]))
            buckets.setdefault(key, []).append(k)
        for (t, count, has_master, rounds, mu), ks in buckets.items():
            if mu is not None:
                values = values[:layout.mu_index] + (mu,) + values[layout.mu_index + 1:]
            chosen = [taken[k] for k in ks]
            params = [e.view for e in chosen]
            states = [[e.views[j] for e in chosen] for j in range(len(cache.keys))]
            column = [grads[k] for k in ks]
            if has_master:   # step the float32 masters, write the params rounded
                buffers = cache.buffers([e.master for e in chosen], column, states)[:-1] + (params,)
                calls.append((layout.spec, buffers, values, t, None, layout.master_slot_names))
            elif rounds:
                seed = self.seed if rule.takes_step else optim._round_seed(self.seed, count)
                calls.append((layout.spec, cache.buffers(params, column, states), values, t, seed))
            else:
                calls.append((layout.spec, cache.buffers(params, column, states), values, t))

    def _fo_entry(self, cache, g, i, p, pending):
        """The views of parameter i of group g, taken afresh (its memory, its state or both changed)."""
        where = f"param_groups[{g}]['params'][{i}] {_describe(p)}"
        problem = self._fo_param_problem(p)
        if problem:
            raise _bad_input(problem, where)
        view = numpy_view(p)
        rounds = self.stochastic_rounding and p.dtype in _SIXTEEN_BIT
        if cache.stateless:
            e = cache.entries[i] = _Entry(p, p.data_ptr(), view, None, (), (), None, False, None, rounds)
            return e
        st = self.state.get(p)
        if st is not None and not isinstance(st, dict):
            raise TypeError(f"state of {where} is a {type(st).__name__}; a param's state is a dict")
        new = not st
        layout = cache.layout
        kept = self._fo_state_dtype(p)
        stored, views = [], []
        for key in cache.keys:
            signed = self._fo_signed(layout, key, p)
            if signed is None:
                tensor = None if new else st.get(key)
                if tensor is None:   # new, or a hyperparameter turned this buffer on since: it starts now
                    tensor = self._fo_new_buffer(layout, p, key, kept)
                else:
                    _check_state_tensor(tensor, kept, f"state {key!r} of {where}", self)
                stored.append((key, tensor))
                views.append(numpy_view(tensor))
            else:
                codes = None if new else st.get(key + ".codes")
                scales = None if new else st.get(key + ".scales")
                if codes is None and scales is None:
                    if not new and isinstance(st.get(key), torch.Tensor):   # float values where codes are kept
                        q = _quantized(st[key], signed, self.block_size)
                    else:
                        q = self._fo_new_quantized(layout, p, key, signed)
                    codes, scales = q.codes, q.scales
                q = _saved_codes(codes, scales, p, self.block_size, signed, f"state of {where}", key, exact=True)
                stored += [(key + ".codes", codes), (key + ".scales", scales)]
                views.append(quantized.QuantizedState(codes.numpy(), scales.numpy(), self.block_size, signed))
        master = None
        if self._fo_has_master(p):
            tensor = None if new else st.get("master")
            if tensor is not None:
                _check_state_tensor(tensor, torch.float32, f"state 'master' of {where}", self)
                if tensor.shape != p.shape:
                    raise ValueError(f"state 'master' of {where} has shape {tuple(tensor.shape)}, its param "
                                     f"{tuple(p.shape)}")
            # a master that no longer rounds to its param is not its master any more (the param was written
            # since: a torch.optim optimizer stepped it, or weights were loaded): it starts again from the param
            if tensor is None or not _rounds_to(tensor, p):
                tensor = p.detach().to(torch.float32, memory_format=torch.preserve_format, copy=True)
            stored.append(("master", tensor))
            master = numpy_view(tensor)
        if cache.mus is not None:
            cache.mu_values[i] = 1.0 if new else _saved_scalar(st.get("mu_product", 1.0), "mu_product", where)
            stored.append(("mu_product", cache.mus[i]))
        # (an 8-bit momentum buffer is its codes: "momentum_buffer" itself is not kept then)
        first = True if new else (st.get("momentum_buffer") is None and st.get("momentum_buffer.codes") is None)
        step = None
        if cache.steps is not None:
            cache.step_values[i] = 0 if new else _whole_step(st.get("step", 0), where)
            step = cache.steps[i]
        e = cache.entries[i] = _Entry(p, p.data_ptr(), view, None if new else st, tuple(stored), tuple(views),
                                      master, first, step, rounds)
        # the tensors of its views go into its state when the step is taken (_fo_commit): a step refused
        # or skipped writes no state
        if new or not e.holds(st, e.expected):
            pending.append((e, g, i))
        return e

    def _fo_initial(self, layout, key):
        for state_key, initial_key in zip(layout.state_keys, layout.initial_keys):
            if state_key == key and initial_key is not None:
                return self.defaults[initial_key]   # as torch: the constructor's value, not the group's
        return 0

    def _fo_new_buffer(self, layout, p, key, dtype):
        initial = self._fo_initial(layout, key)
        with torch.no_grad():
            if initial == 0:
                return torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
            return torch.full_like(p, initial, dtype=dtype, memory_format=torch.preserve_format)

    def _fo_new_quantized(self, layout, p, key, signed):
        """A new 8-bit buffer (codes and scales as tensors) at the buffer's initial value."""
        initial = self._fo_initial(layout, key)
        if initial == 0:
            q = quantized.quantized_zeros(tuple(p.shape), signed, self.block_size)
        else:
            q = _core.quantize(np.full(tuple(p.shape), initial, np.float32), signed, self.block_size)
        return quantized.QuantizedState(torch.from_numpy(q.codes), torch.from_numpy(q.scales), q.block_size, signed)

    def _fo_commit(self, pending, stepped):
        """After the kernels ran: new state into optimizer.state, step counts advanced, versions bumped."""
        stepped_params = []
        for cache, active, full, mus in stepped:
            if mus is not None:
                cache.mu_values[active] = mus
            counts = cache.step_values
            if counts is not None:
                if full is not None:
                    counts.fill(full)   # as += 1 on each: float32 rounds the same past 2**24
                else:
                    counts[active] += 1
            if self._fo_sgd and not cache.stateless:
                for i in active:
                    cache.entries[i].first = False
            if len(active) == len(cache.params):
                stepped_params += cache.params
            else:
                stepped_params += [cache.params[i] for i in active]
        if pending:
            for e, g, i in pending:
                if e.state is not None:   # state it had, with the tensors its views are of
                    if e.step is not None:
                        e.state["step"] = e.step
                    e.state.update(e.stored)
                    for key, _ in e.stored:   # float values now kept as codes
                        if key.endswith(".codes"):
                            e.state.pop(key[:-len(".codes")], None)
                    continue
                st = {"step": e.step} if e.step is not None else {}
                st.update(e.stored)
                if st:   # (plain SGD's float32 params beside master weights have none)
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
                problem = _kernel_problem(grad, _GRAD_FIX)
                if problem:
                    raise _bad_input(problem, f"{where}: its gradient")
                problem = _grad_dtype_problem(p, grad)
                if problem:
                    raise TypeError(f"{where}: {problem}")
                st = self.state.get(p) or {}
                if not isinstance(st, dict):
                    return   # the step's own error names it
                buffers = [numpy_view(p), numpy_view(grad)]
                for key, u in zip(layout.state_keys, used):
                    tensor = (st.get(key) if st.get(key) is not None else torch.zeros_like(p)) if u else None
                    if tensor is not None and (not isinstance(tensor, torch.Tensor) or _kernel_problem(tensor)):
                        return   # a state tensor no view can be taken of: the step's own error names it
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
        # a gradient on the memory of another parameter or gradient: named as such, not by the call's buffers
        for g, group in enumerate(self.param_groups):
            for i, p in enumerate(group["params"]):
                if p.grad is not None:
                    labels.append(f"the gradient of param_groups[{g}]['params'][{i}]")
                    views.append(numpy_view(p.grad))
        overlap = _core.find_overlap(views) if views else None
        if overlap is not None:
            raise ValueError(f"{self._fo_what}: {labels[overlap[0]]} and {labels[overlap[1]]} overlap in "
                             f"memory; every parameter and gradient must be a separate tensor")



# --------------------------------------------------------------------------
# state tensors: checks, 8-bit codes and scales, master weights

def _step_scale(opt, plan):
    """What a step of opt scales its gradients by under its clipping and skipping (1.0 without
    either), or None: the step is skipped, and counted in opt.skipped_steps."""
    if opt.max_grad_norm is None and not opt.skip_nonfinite:
        return 1.0
    scale, norm = clip.step_scale(plan, 1.0, max_norm=opt.max_grad_norm, norm_type=opt.norm_type,
                                  skip_nonfinite=opt.skip_nonfinite)
    if norm is not None:
        opt.last_grad_norm = norm
    if scale is None:
        opt.skipped_steps += 1
    return scale


def _dtype_name(dtype):
    return str(dtype).replace("torch.", "")


def _check_state_tensor(tensor, dtype, label, opt):
    """A float state tensor the step can use as it is: TypeError or ValueError naming it otherwise."""
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{label} is a {type(tensor).__name__}, not a tensor")
    problem = _kernel_problem(tensor, "make the state tensor contiguous")
    if problem:
        raise _bad_input(problem, label)
    if tensor.dtype is not dtype:
        if label.startswith("state 'master'"):
            why = "float32 master weights (master_weights=True)"
        elif opt.state_dtype is not None:
            why = f"{_dtype_name(dtype)} (state_dtype={opt.state_dtype!r})"
        elif opt.master_weights and dtype is torch.float32:
            why = "float32 beside float32 master weights (master_weights=True)"
        else:
            why = f"{_dtype_name(dtype)}, the dtype of its param, as torch keeps it"
        raise TypeError(f"{label} has dtype {_dtype_name(tensor.dtype)}; this optimizer keeps it in {why}")


def _saved_codes(codes, scales, p, block_size, signed, where, key, exact=False):
    """8-bit codes and scales of p's buffer key, checked, as a QuantizedState of tensors.

    exact (the step's views): uint8 codes and float32 scales, contiguous, as the kernels read them.  Else
    (a loaded checkpoint, which torch's load casts to the param's dtype): codes of whole numbers in
    [0, 255] of any dtype and float scales, converted."""
    n_blocks = quantized.num_blocks(p.numel(), block_size)
    for name, tensor in ((key + ".codes", codes), (key + ".scales", scales)):
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{where}: {name} is {'missing' if tensor is None else type(tensor).__name__}; "
                             f"8-bit state is a pair of tensors, codes and scales")
        if tensor.device.type != "cpu" or tensor.layout is not torch.strided:
            raise TypeError(f"{where}: {name} must be a dense CPU tensor")
    if codes.shape != p.shape:
        raise ValueError(f"{where}: {key}.codes has shape {tuple(codes.shape)}, its param {tuple(p.shape)}")
    if scales.shape != (n_blocks,):
        raise ValueError(f"{where}: {key}.scales has shape {tuple(scales.shape)}: {p.numel()} elements in "
                         f"blocks of {block_size} take ({n_blocks},)")
    if exact:
        if codes.dtype is not torch.uint8 or scales.dtype is not torch.float32:
            raise TypeError(f"{where}: {key}.codes must be uint8 and {key}.scales float32; got "
                            f"{_dtype_name(codes.dtype)} and {_dtype_name(scales.dtype)}")
        if not (codes.is_contiguous() and scales.is_contiguous()):
            raise ValueError(f"{where}: {key}.codes and {key}.scales must be contiguous")
        return quantized.QuantizedState(codes, scales, block_size, signed)
    if codes.dtype is not torch.uint8:
        # (bool and complex tensors are no codes, and round() refuses them)
        if codes.dtype.is_complex or codes.dtype is torch.bool or not torch.all((codes == codes.round()) & (codes >= 0) & (codes <= 255)):
            raise ValueError(f"{where}: {key}.codes must hold whole numbers in [0, 255]")
    if not scales.dtype.is_floating_point:
        raise ValueError(f"{where}: {key}.scales must be floats; got {_dtype_name(scales.dtype)}")
    return quantized.QuantizedState(codes.to(torch.uint8).contiguous(), scales.to(torch.float32).contiguous(),
                                    block_size, signed)


def _dequantized(q):
    """The float32 values (an ndarray) of a QuantizedState of tensors."""
    return _core.dequantize(quantized.QuantizedState(q.codes.numpy(), q.scales.numpy(), q.block_size, q.signed))


def _quantized(value, signed, block_size):
    """A float tensor as 8-bit codes and scales (a QuantizedState of tensors), as a step encodes them."""
    x = np.ascontiguousarray(value.detach().to(torch.float32).numpy())
    q = _core.quantize(x, signed, block_size)
    return quantized.QuantizedState(torch.from_numpy(q.codes), torch.from_numpy(q.scales), block_size, signed)


def _same_bits(values, tensor):
    """Whether a float32 ndarray holds exactly the values of tensor (NaNs included)."""
    other = tensor.detach().to(torch.float32).numpy()
    return values.shape == other.shape and np.array_equal(values.view(np.uint32), np.ascontiguousarray(other).view(np.uint32))


def _with_dequantized(entry, layout, block_size):
    """A state_dict entry with each 8-bit buffer also as float32 under torch's name (before its codes)."""
    out = {}
    for key, value in entry.items():
        if isinstance(key, str) and key.endswith(".codes"):
            name = key[:-len(".codes")]
            q = quantized.QuantizedState(value, entry[name + ".scales"], block_size, layout.signed[name])
            out[name] = torch.from_numpy(_dequantized(q))
        out[key] = value
    return out


def _rounds_to(master, p):
    """Whether float32 master weights round to the 16-bit param (NaN where it is NaN)."""
    rounded = master.detach().to(p.dtype)
    param = p.detach()
    return bool(((rounded == param) | (rounded.isnan() & param.isnan())).all())


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
    raise _bad_input(_kernel_problem(grad, _GRAD_FIX) or "cannot be viewed", f"{where}: its gradient")


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


def _saved_scalar(value, key, where):
    """A saved per-param number (a 0-d tensor or a number, as torch keeps it), in [0, 1]."""
    number = value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_meta else value
    if isinstance(number, bool) or not isinstance(number, numbers.Real) or not 0 <= number <= 1:
        raise ValueError(f"{where}: {key} must be a number in [0, 1] (a 0-d tensor, as torch keeps it); "
                         f"got {value!r}")
    return float(number)


def _whole_step(value, where):
    """A saved step count (tensor or number) as an int; ValueError unless a whole number >= 0."""
    number = value
    if isinstance(value, torch.Tensor):   # one number that can be read (not a vector, nor a meta tensor)
        number = value.item() if value.numel() == 1 and not value.is_meta else None
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

_OPTION_DEFAULTS = {"num_threads": None, "max_grad_norm": None, "norm_type": 2.0, "skip_nonfinite": False,
                    "state_dtype": None, "block_size": 256, "master_weights": False, "stochastic_rounding": False,
                    "seed": 0}
_OPTIONS = tuple(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
                 for name, default in _OPTION_DEFAULTS.items())


def _take_options(kwargs):
    """fastopt's options out of a constructor's keyword arguments (the rest are torch's)."""
    return {name: kwargs.pop(name, default) for name, default in _OPTION_DEFAULTS.items()}

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
        # a rule whose optimizer keeps numbers of its own per group that torch does not keep per param
        # (Schedule-Free's averaging sums) is stepped by fastopt.optim's class only; NAdam's mu_product
        # is in torch's state of each param
        if name is not None and all(h.name in _PER_PARAM_SCALARS for h in rule.hyper if h.kept_by_optimizer):
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
        "_fo_sgd": torch_name == "SGD",
    }
    if torch_class is not None:
        bases = (_FastoptOptimizer, torch_class)
        torch_signature = inspect.signature(torch_class.__init__)

        def __init__(self, params, *args, **kwargs):
            self._fo_init_options(**_take_options(kwargs))
            torch_class.__init__(self, params, *args, **kwargs)
            self._fo_after_init(self.defaults)
        parameters = list(torch_signature.parameters.values())
        summary = (f"torch.optim.{torch_name}, stepped by fastopt: one fused call per step for all groups "
                   f"(:func:`fastopt.{class_rules[0].function_name}`).")
    else:
        # fastopt.optim's constructor arguments, which are torch's way of writing this rule's
        arguments = [p for p in inspect.signature(getattr(optim, name).__init__).parameters.values()
                     if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

        def __init__(self, params, *args, **kwargs):
            self._fo_init_options(**_take_options(kwargs))
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
        f"    skip_nonfinite (a step with NaN or Inf gradients writes nothing and counts in skipped_steps),\n"
        f"    master_weights (float32 masters of 16-bit params in state['master']), state_dtype ('float32',\n"
        f"    'bfloat16', 'float16', or '8bit' with block_size), stochastic_rounding with seed: as\n"
        f"    fastopt.optim's.\n")
    return type(name, bases if torch_class is not None else (_FastoptOptimizer,), namespace)


_CLASSES = [_make_class(name, class_rules, torch_name)
            for name, (class_rules, torch_name) in _class_rules().items()]
globals().update({cls.__name__: cls for cls in _CLASSES})
__all__ += [cls.__name__ for cls in _CLASSES]


# --------------------------------------------------------------------------
# Adafactor: its factors are not of the param's shape, so it steps through fastopt.factored

def _scalar_dtype():
    """The dtype of torch's step counts."""
    try:
        from torch.optim.optimizer import _get_scalar_dtype
    except ImportError:  # pragma: no cover - older torch
        return torch.float32
    return _get_scalar_dtype()


class Adafactor(torch.optim.Adafactor):
    """torch.optim.Adafactor, stepped by fastopt: one fused call (:func:`fastopt.adafactor_step`) per
    group and step count.

    Arguments: torch's.  State: torch's keys and tensors (``step``, and
    ``row_var`` and ``col_var`` for a param of ndim >= 2, else
    ``variance``), so ``state_dict``/``load_state_dict`` are torch's own.
    fastopt's options, keyword-only: num_threads (None:
    fastopt.get_num_threads()), max_grad_norm and norm_type (clip all
    gradients together, folded into the step: the gradients are not written),
    skip_nonfinite (a step with NaN or Inf gradients writes nothing and counts
    in skipped_steps).  Params: CPU float32, float64, bfloat16 or float16
    tensors, C-contiguous, with gradients of their dtype; the state is in the
    param's dtype, as torch keeps it, and a 16-bit step computes in float32
    with each stored value rounded once (torch rounds after every operation).
    """

    def __init__(self, params, *args, num_threads=None, max_grad_norm=None, norm_type=2.0, skip_nonfinite=False,
                 **kwargs):
        if num_threads is not None:
            _core.check_count("num_threads", num_threads, 1, 1 << 16)
        self.num_threads = num_threads
        self.max_grad_norm = None if max_grad_norm is None else optim._positive("max_grad_norm", max_grad_norm)
        self.norm_type = optim._norm_type(norm_type)
        self.skip_nonfinite = bool(_core.check_value("bool", "skip_nonfinite", skip_nonfinite))
        self.skipped_steps = 0
        self.last_grad_norm = None
        super().__init__(params, *args, **kwargs)

    def _fo_calls(self):
        """The checked calls of a step, every gradient, and (param, new state or None) per stepped param."""
        what = "Adafactor.step"
        calls, grads, stepped = [], [], []
        for g, group in enumerate(self.param_groups):
            by_step = {}
            for i, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                where = f"{what}: param_groups[{g}]['params'][{i}]"
                if p.device.type != "cpu" or p.dtype not in KERNEL_DTYPES or p.grad.is_sparse:
                    raise TypeError(f"{where} must be a CPU float32, float64, bfloat16 or float16 tensor with a "
                                    f"dense gradient; got {p.dtype} on {p.device}"
                                    f"{' (sparse gradient)' if p.grad.is_sparse else ''}")
                state = self.state[p]
                new = None
                if len(state) == 0:  # torch's initial state, committed once the step has run
                    new = {"step": torch.tensor(0.0, dtype=_scalar_dtype())}
                    if p.grad.dim() > 1:
                        rows, cols = factored.factor_shapes(p.shape)
                        new["row_var"], new["col_var"] = p.grad.new_zeros(rows), p.grad.new_zeros(cols)
                    else:
                        new["variance"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
                current = new or state
                count = current.get("step")
                if not isinstance(count, torch.Tensor) or count.numel() != 1:
                    raise ValueError(f"{where} has state step {count!r}: torch keeps it as a 0-d tensor")
                t = _next_step(count.item(), g, i, what)
                views = [numpy_view(p.detach()), numpy_view(p.grad)]
                for k in ("row_var", "col_var", "variance"):
                    try:
                        views.append(numpy_view(current[k]) if k in current else None)
                    except TypeError as exc:
                        raise TypeError(f"{where} state {k!r} {exc}") from None
                by_step.setdefault(t, []).append(views)
                grads.append(views[1])
                stepped.append((p, new))
            lr = group["lr"].item() if isinstance(group["lr"], torch.Tensor) else group["lr"]
            eps1, eps2 = group["eps"]
            for t, entries in by_step.items():
                values = factored.check_hyperparameters(what, t, lr, group["beta2_decay"], eps1, eps2, group["d"],
                                                        group["weight_decay"], group["maximize"])
                columns = [list(column) for column in zip(*entries)]
                calls.append((values, factored.check_tensors(f"{what}: param_groups[{g}]", *columns, values[3]),
                              None))
        return calls, grads, stepped

    @torch.no_grad()
    def _fo_step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        calls, grads, stepped = self._fo_calls()
        if not calls:
            return loss
        scale = _step_scale(self, optim._FactoredPlan(calls, grads, self.num_threads))
        if scale is None:
            return loss
        factored.run(calls, scale, self.num_threads)
        for p, new in stepped:
            if new is not None:
                self.state[p].update(new)
            self.state[p]["step"] += 1
        _increment_version([p for p, _ in stepped])
        return loss

    step = _hooked(_fo_step)


__all__.append("Adafactor")
