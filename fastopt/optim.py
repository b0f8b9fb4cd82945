"""Stateful optimizers over NumPy arrays, with torch.optim's classes, arguments and defaults.

Each optimizer holds its parameters in groups, the state of every parameter
(moment estimates, momentum buffers, step counts), and per-group
hyperparameters.  ``opt.step(grads)`` crosses into the compiled core once:
every group's gradients, hyperparameters and state are checked together
(:meth:`Optimizer.plan_step`), the norm pass runs if clipping or skipping asks
for it, then every group's fused kernel runs (:meth:`Optimizer.take_step`) —
one parallel pass over memory, whatever the number of arrays.

The classes are made from the rule registry (:mod:`fastopt.rules`): each rule
with an ``optim`` entry gets its class here, with torch's constructor
arguments.  :class:`SGD`, which picks one of two rules per group, is written
out; NAdam's and ScheduleFreeAdamW's classes also have a base of their own
(``_BASES``) for the numbers they keep per group (:attr:`Optimizer.group_scalars`)
and Schedule-Free's train()/eval().
"""

import math
import numbers
from types import MappingProxyType

import ml_dtypes
import numpy as np

from fastopt import _core, clip, factored, quantized, reference, rules
from fastopt.steps import PASS_SPECS, SPECS

# Bumped when the layout of state_dict() changes.
STATE_DICT_FORMAT = 1

# Where the arithmetic of a step runs: the fused kernels, or their NumPy twins
# (same checks, same results; for comparisons such as the demo's cost of a step).
BACKENDS = ("fastopt", "reference")

# The dtypes state buffers may take, and the 16-bit ones params may have.
_DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16),
           "float16": np.dtype(np.float16)}
# "8bit": block-quantized state (fastopt.QuantizedState) for tensors of at least QUANTIZE_MIN_SIZE elements
STATE_DTYPES = tuple(_DTYPES) + ("8bit",)
QUANTIZE_MIN_SIZE = rules.QUANTIZE_MIN_SIZE
SIXTEEN_BIT = (np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16))
PARAM_DTYPES = (np.dtype(np.float32), np.dtype(np.float64)) + SIXTEEN_BIT

# The largest step count a checkpoint may hold: the next step's t must fit the kernels' counter.
MAX_SAVED_STEP = 2**63 - 2


class Optimizer:
    """Base of the optimizers: each group's update rule comes from the registry.

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
    backend : {"fastopt", "reference"}
        "reference" runs each group's update with :mod:`fastopt.reference`,
        the pure-NumPy twin, after the same checks: the same results, slowly.
    state_dtype : {None, "float32", "bfloat16", "float16", "8bit"}
        The dtype of the state buffers (moments, momentum buffers).  None: the
        dtype of the weights each rule updates (the param's, or float32 master
        weights').  Arithmetic is in float32 either way (float64 for float64
        params, which take only float64 state).  "8bit": block-wise 8-bit
        state (:class:`fastopt.QuantizedState`, one uint8 code per element and
        one float32 scale per ``block_size`` elements) for every param of at
        least 4096 elements (``QUANTIZE_MIN_SIZE``) in C order; smaller ones,
        Fortran-ordered ones and Schedule-Free's z keep float32 state.
    block_size : int
        The quantization block of ``state_dtype="8bit"``: a power of two in [64, 4096].
    master_weights : bool
        For bfloat16 and float16 params: keep a float32 copy of each (state
        ``"master"``), step it, and write it rounded into the param, in the
        same pass (small updates accumulate in the master instead of rounding
        away).
    stochastic_rounding : bool
        For bfloat16 and float16 params without master weights: round each new
        value stochastically (unbiased), with random bits keyed by ``seed``,
        the group's step and the element's index, so runs are reproducible.
    seed : int
        The key of stochastic rounding, 0 <= seed < 2**63.

    Attributes
    ----------
    param_groups : list of dict
        ``{"params": [arrays], <hyperparameters>}`` per group.  A group's
        ``lr`` is a number or a schedule (a callable t -> lr, t = 1, 2, ...).
        ``type(opt)(opt.param_groups)`` builds an equivalent optimizer.
    state : list of dict
        Per group: ``"step"`` (steps taken), the scalars of
        :attr:`group_scalars`, and each state buffer name -> list of arrays
        aligned with the group's params.
    skipped_steps : int
        Steps skipped for non-finite gradients.
    last_grad_norm : float or None
        The total gradient norm of the last step, when clipping is on.
    owner : object or None
        What drives this optimizer instead of its own :meth:`step` (a
        :class:`fastopt.distributed.ShardedOptimizer` that holds its state);
        while set, ``step``, ``state_dict`` and ``load_state_dict`` raise.
    pieces : dict
        For a wrapper whose optimizer steps pieces of larger params (the
        sharded optimizer's owned slices): ``id(piece) -> (whole param, index
        of the piece's first element in it)``.  A piece's state is 8-bit where
        the whole param's is, and stochastic rounding draws the random bits of
        each element's index in the whole param, so the steps equal the whole
        param's.  Empty by default.
    """

    # The registry rule of every group (a subclass may choose per group: rule_of).
    rule = None

    # Numbers a group keeps beside its step count and advances with each step taken, from which
    # the step's kept_by_optimizer hyperparameters come (NAdam's product of momentum coefficients):
    # name -> value before the first step.  They are saved as groups.<g>.<name>; see advance().
    group_scalars = MappingProxyType({})

    def __init__(self, params, defaults, *, num_threads=None, max_grad_norm=None, norm_type=2.0,
                 skip_nonfinite=False, backend="fastopt", state_dtype=None, master_weights=False,
                 stochastic_rounding=False, seed=0, block_size=256):
        if state_dtype is not None and state_dtype not in STATE_DTYPES:
            raise ValueError(f"state_dtype must be None or one of {', '.join(map(repr, STATE_DTYPES))}; "
                             f"got {state_dtype!r}")
        self.state_dtype = state_dtype
        self.block_size = quantized.check_block_size(block_size)
        self.master_weights = bool(_core.check_value("bool", "master_weights", master_weights))
        self.stochastic_rounding = bool(_core.check_value("bool", "stochastic_rounding", stochastic_rounding))
        if self.master_weights and self.stochastic_rounding:
            raise ValueError("stochastic_rounding rounds a 16-bit param stepped directly; with "
                             "master_weights=True the float32 master is stepped: choose one")
        self.seed = _core.check_count("seed", seed, 0, 2**63 - 1)
        if num_threads is not None:
            _core.check_count("num_threads", num_threads, 1, 1 << 16)
        self.num_threads = num_threads
        if max_grad_norm is not None:
            max_grad_norm = _positive("max_grad_norm", max_grad_norm)
        self.max_grad_norm = max_grad_norm
        self.norm_type = _norm_type(norm_type)
        if not isinstance(skip_nonfinite, (bool, np.bool_)):
            raise TypeError(f"skip_nonfinite must be a bool; got {skip_nonfinite!r}")
        self.skip_nonfinite = bool(skip_nonfinite)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}; got {backend!r}")
        self.backend = backend
        self._what = f"{type(self).__name__}.step"  # how errors of a step name it
        self._layouts = {}
        self.defaults = dict(defaults)
        self.check_hyperparameters(dict(self.defaults))
        self.param_groups = []
        self.state = []
        self.skipped_steps = 0
        self.last_grad_norm = None
        self.owner = None
        self.pieces = {}

        if isinstance(params, np.ndarray) or not isinstance(params, (list, tuple)):
            raise TypeError("params must be a list of ndarrays or a list of dicts; got "
                            f"{type(params).__name__}")
        if len(params) == 0:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if all(isinstance(p, dict) for p in params) else [{"params": list(params)}]
        for group in groups:
            self.add_param_group(group)

    # --- what a group is -------------------------------------------------------

    def rule_of(self, group):
        """The registry rule (:class:`fastopt.rules.Rule`) that updates `group`."""
        return self.rule

    def step_arguments(self, group, lr):
        """The rule's hyperparameters for `group` at rate lr: a dict in the step function's names.

        A kept_by_optimizer hyperparameter is at its registry example here: only a step
        (:meth:`advance`) gives it its value."""
        rule = self.rule_of(group)
        return dict(zip((h.name for h in rule.hyper), self._layout(rule).values(group, lr)))

    def _layout(self, rule):
        """How a group becomes a call of `rule` (made once per optimizer and rule)."""
        if rule.name not in self._layouts:
            self._layouts[rule.name] = _Layout(rule, type(self)._pairs())
        return self._layouts[rule.name]

    def state_buffer_names(self, group):
        """The state buffers `group` uses with its current hyperparameters (and ``"master"``:
        float32 master weights)."""
        rule = self.rule_of(group)
        names = [b.name for b in rule.state_used(self.step_arguments(group, 0.0))]
        return names + ["master"] if self._has_master(group) else names

    def state_buffer_dtype(self, group, name):
        """The dtype of `group`'s state buffer `name` (float32 for ``"master"``)."""
        return np.dtype(np.float32) if name == "master" else self._state_dtype(group)

    def _has_master(self, group):
        return self.master_weights and group["params"][0].dtype in SIXTEEN_BIT

    def _state_dtype(self, group):
        """The dtype of group's state buffers (of those not quantized, with state_dtype="8bit")."""
        if self.state_dtype == "8bit":
            return np.dtype(np.float32)
        if self.state_dtype is not None:
            return _DTYPES[self.state_dtype]
        return np.dtype(np.float32) if self._has_master(group) else group["params"][0].dtype

    @classmethod
    def _pairs(cls):
        """Step-function hyperparameter -> (group key, index) for the pairs of the class (betas)."""
        return {}

    def advance(self, group, state, t, lr):
        """The step t of `group` for a class with :attr:`group_scalars`: ``(lr, kept, scalars)``.

        ``lr`` is the rate the step is taken at (the group's, at t), ``kept`` the
        step's kept_by_optimizer hyperparameters, ``scalars`` the group's
        :attr:`group_scalars` once the step is taken.  Reads ``state``, writes
        nothing: a skipped step keeps the old values.
        """
        raise NotImplementedError(f"{type(self).__name__} has group_scalars but no advance()")

    def quantizes(self, group, name, param):
        """Whether `group`'s state buffer `name` of `param` is 8-bit state: its signedness, or None."""
        param = self.pieces.get(id(param), (param, 0))[0]
        if self.state_dtype != "8bit":
            return None
        for b in self.rule_of(group).state:
            if b.name == name:
                return b.eight_bit_signed_for(param.size, param.flags.c_contiguous)
        return None  # "master" and names the rule does not have

    def _new_buffer(self, group, name, param):
        """A new state buffer `name` of `param`: at its initial value, float or 8-bit as the optimizer keeps it."""
        initial = self._initial_value(group, name)
        signed = self.quantizes(group, name, param)
        if signed is None:
            return _full_like(param, initial, self.state_buffer_dtype(group, name))
        if initial == 0:
            return quantized.quantized_zeros(param.shape, signed, self.block_size)
        return _core.quantize(np.full(param.shape, initial, np.float32), signed, self.block_size)

    def buffer_shape(self, name, param):
        """The shape of state buffer `name` of `param`, or None where the param has none: the
        param's own for every registry rule (Adafactor's factors are not)."""
        return param.shape

    def _initial_value(self, group, name):
        """A new state buffer's starting value (a hyperparameter of the group, or 0)."""
        for b in self.rule_of(group).state:
            if b.name == name and b.initial is not None:
                return group[b.initial]
        return 0

    # --- parameters and groups ---------------------------------------------

    @property
    def params(self):
        """Every parameter, in group order: what step(grads) aligns grads with."""
        return [p for group in self.param_groups for p in group["params"]]

    def add_param_group(self, param_group):
        """Add a group ``{"params": [arrays], <overrides>}``; missing hyperparameters take the defaults."""
        group = self._make_group(param_group)
        existing = self.params
        everything = existing + group["params"]
        if len({id(p) for p in everything}) != len(everything):
            raise ValueError("a parameter appears twice; each must be a separate array")
        overlap = _core.find_overlap(everything)
        if overlap is not None and overlap[1] >= len(existing):
            raise ValueError(f"params {overlap[0]} and {overlap[1]} overlap in memory; "
                             f"each must be a separate array")
        self.param_groups.append(group)
        self.state.append({"step": 0, **self.group_scalars})
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
        if params[0].dtype == np.float64 and self.state_dtype not in (None,):
            raise TypeError(f"float64 params take float64 state: state_dtype={self.state_dtype!r} goes "
                            f"with float32, bfloat16 and float16 params")
        if self.stochastic_rounding and params[0].dtype not in SIXTEEN_BIT:
            raise ValueError(f"stochastic_rounding rounds 16-bit params; this group's are {params[0].dtype}")
        group = {"params": params}
        for key, default in self.defaults.items():
            group[key] = param_group.get(key, default)
        self.check_hyperparameters(group)
        return group

    def check_hyperparameters(self, group, t=None):
        """Check every hyperparameter of `group` as a step would, plus the optimizer's own; write nothing.

        A schedule is evaluated at step t when t is given (else only its
        being callable is checked).  Raises TypeError or ValueError naming the
        hyperparameter.
        """
        lr = group["lr"]
        if not (callable(lr) or (isinstance(lr, numbers.Real) and not isinstance(lr, bool))):
            raise TypeError(f"lr must be a number or a schedule (callable t -> lr); got {lr!r}")
        for key, (check, default) in self._extra_checks().items():
            _core.check_value(check, key, group[key])
        rule = self.rule_of(group)
        if callable(lr):
            lr = 0.0 if t is None else lr(t)
        values = self.step_arguments(group, lr)
        used = {b.name for b in rule.state_used(values)}
        buffers = ([], []) + tuple([] if b.name in used else None for b in rule.state) + (None,)
        _core.plan([(SPECS[rule.name], buffers, tuple(values[h.name] for h in rule.hyper), 1)])

    @classmethod
    def _extra_checks(cls):
        """Hyperparameters only the optimizer has: name -> (check, default)."""
        return {}

    def _ensure_state(self, index):
        """Create the buffers group `index` uses and lacks (a hyperparameter may have turned one on)."""
        group, state = self.param_groups[index], self.state[index]
        for name in self.state_buffer_names(group):
            if name == "master" and name not in state:
                state[name] = [p.astype(np.float32, order="K") for p in group["params"]]
            elif name not in state:
                state[name] = [self._new_buffer(group, name, p) for p in group["params"]]

    # --- the step ------------------------------------------------------------

    def step(self, grads, *, grad_scale=1.0):
        """Update every parameter from ``grads``, aligned with :attr:`params`; return whether it did.

        Everything is checked before the first write: a wrong count, shape or
        dtype, a bad hyperparameter or schedule value, a replaced parameter
        or state buffer raises ValueError or TypeError and leaves parameters
        and state untouched.  Returns False when ``skip_nonfinite`` skipped
        the step, else True.

        grad_scale multiplies the gradients first, without writing them (for
        instance 1/loss_scale, or a clipping factor computed across shards);
        ``max_grad_norm`` clips the scaled gradients.
        """
        grad_scale = _core.check_value("nonneg", "grad_scale", grad_scale)
        plan = self.plan_step(grads)
        scale, norm = clip.step_scale(plan, grad_scale, max_norm=self.max_grad_norm,
                                      norm_type=self.norm_type, skip_nonfinite=self.skip_nonfinite)
        if norm is not None:
            self.last_grad_norm = norm
        return self.take_step(plan, scale)

    def plan_step(self, grads):
        """Check a step with ``grads`` (aligned with :attr:`params`): a plan to run, nothing written.

        Every group's gradients, hyperparameters (schedules evaluated at the
        step each group takes next) and state buffers are checked together.
        The plan's ``norm(norm_type)`` and ``all_finite()`` read the gradients;
        :meth:`take_step` runs it.
        """
        if self.owner is not None:
            _driven_by(self)
        if type(grads) is not list and (isinstance(grads, np.ndarray) or not isinstance(grads, (list, tuple))):
            raise TypeError(f"grads must be a list of ndarrays aligned with optimizer.params; "
                            f"got {type(grads).__name__}")
        count = 0
        for group in self.param_groups:
            count += len(group["params"])
        if len(grads) != count:
            raise ValueError(f"got {len(grads)} grads for {count} params")
        calls = []
        advanced = [] if self.group_scalars else None
        offset = 0
        for index, group in enumerate(self.param_groups):
            rule = self.rule_of(group)
            layout = self._layouts.get(rule.name) or self._layout(rule)
            state = self.state[index]
            t = state["step"] + 1
            lr = group["lr"]
            lr = lr(t) if callable(lr) else lr
            if advanced is None:
                values = layout.values(group, lr)
            else:
                if not self.group_scalars.keys() <= state.keys():
                    missing = ", ".join(sorted(self.group_scalars.keys() - state.keys()))
                    raise RuntimeError(f"{self._what}: the state of group {index} lacks {missing}: whatever "
                                       f"holds this optimizer's state must keep its group_scalars too")
                lr, kept, scalars = self.advance(group, state, t, lr)
                values = layout.values(group, lr, kept)
                advanced.append(scalars)
            params = group["params"]
            end = offset + len(params)
            try:
                buffers = layout.buffers(params, grads[offset:end], state, values)
                if "master" in state:  # step the float32 masters, write the params rounded
                    buffers = (state["master"],) + buffers[1:-1] + (params,)
            except KeyError:  # a hyperparameter turned a buffer on: make it, zeroed
                self._ensure_state(index)
                calls.append(None)
                continue
            if self.stochastic_rounding:
                seed = self.seed if rule.takes_step else _round_seed(self.seed, t)
                bases = [self.pieces.get(id(p), (p, 0))[1] for p in params] if self.pieces else None
                calls.append((layout.spec, buffers, values, t, seed, None, bases))
            elif "master" in state:
                calls.append((layout.spec, buffers, values, t, None, layout.master_slot_names))
            else:
                calls.append((layout.spec, buffers, values, t))
            offset = end
        if None in calls:  # state was made for a buffer a hyperparameter turned on: again, with it
            return self.plan_step(grads)
        return _StepPlan(_core.plan(calls, self.num_threads, self._what), calls, advanced)

    def take_step(self, plan, grad_scale):
        """Run a :meth:`plan_step` plan with gradients scaled by grad_scale; None skips the step.

        Returns True when it stepped.  A skipped step writes nothing, counts
        in ``skipped_steps`` and does not advance the step counts.
        """
        if grad_scale is None:
            self.skipped_steps += 1
            return False
        if self.backend == "fastopt":
            plan.core.run(grad_scale)
        else:  # checked already by the plan; the twins do the arithmetic
            for call in plan.calls:
                _reference_call(rules.RULES[call[0].name], *call[1:4], grad_scale,
                                call[4] if len(call) > 4 else None)
        for state in self.state:
            state["step"] += 1
        if plan.scalars is not None:
            for state, scalars in zip(self.state, plan.scalars):
                state.update(scalars)
        return True

    def check_grads(self, grads):
        """Check grads against :attr:`params` as a step would (count, type, dtype, shape, layout,
        overlaps); returns them as a list.  For a wrapper that steps other arrays (shards)."""
        if type(grads) is not list and (isinstance(grads, np.ndarray) or not isinstance(grads, (list, tuple))):
            raise TypeError(f"grads must be a list of ndarrays aligned with optimizer.params; "
                            f"got {type(grads).__name__}")
        count = 0
        for group in self.param_groups:
            count += len(group["params"])
        if len(grads) != count:
            raise ValueError(f"got {len(grads)} grads for {count} params")
        calls, offset = [], 0
        for group in self.param_groups:  # one call per group: groups may differ in dtype
            params = group["params"]
            calls.append((SPECS["sgd"], (params, grads[offset:offset + len(params)], None), (0.0, 0.0, False),
                          None))
            offset += len(params)
        _core.plan(calls, 1, f"{type(self).__name__}.step")  # checked, never run
        return grads

    def hand_over(self, owner):
        """Let `owner` drive this optimizer from now on: returns the state and keeps only the step counts.

        A wrapper that moves the state elsewhere (sharded across ranks) takes
        it so; from then on this optimizer's ``step``, ``state_dict`` and
        ``load_state_dict`` raise, naming the owner.
        """
        if self.owner is not None:
            _driven_by(self)
        state, self.state = self.state, [{"step": group_state["step"]} for group_state in self.state]
        self.owner = owner
        return state

    # --- checkpoints ---------------------------------------------------------

    def state_dict(self):
        """A snapshot: a flat dict of numbers, strings and ndarray copies.

        Picklable, and savable as is with ``np.savez(path, **opt.state_dict())``.
        Keys: ``kind``, ``format``, ``skipped_steps``, ``num_groups``, and per
        group g: ``groups.g.num_params``, ``groups.g.step``, ``groups.g.<hyperparameter>``
        (a schedule is not saved: the optimizer it is loaded into keeps its
        own), ``state.g.<buffer>.<i>`` for the i-th param of the group.  An
        8-bit buffer is saved as ``state.g.<buffer>.<i>.codes``, ``.scales``,
        ``.block_size`` and ``.signed``, with ``quantized_format`` (the format
        version, :data:`fastopt.quantized.FORMAT_VERSION`).
        """
        if self.owner is not None:
            _driven_by(self)
        return self.state_dict_of(self.state)

    def state_dict_of(self, state):
        """:meth:`state_dict` with ``state`` (laid out as :attr:`state`) in place of this optimizer's own.

        For a wrapper that holds the state elsewhere (sharded across ranks)
        and gathers it into full buffers to save.
        """
        out = {"kind": type(self).__name__, "format": STATE_DICT_FORMAT,
               "skipped_steps": self.skipped_steps, "num_groups": len(self.param_groups)}
        for g, (group, group_state) in enumerate(zip(self.param_groups, state)):
            out[f"groups.{g}.num_params"] = len(group["params"])
            out[f"groups.{g}.step"] = group_state["step"]
            for name in self.group_scalars:
                out[f"groups.{g}.{name}"] = group_state[name]
            for key in self.defaults:
                if not callable(group[key]):
                    out[f"groups.{g}.{key}"] = group[key]
            for name in self.state_buffer_names(group):
                for i, buffer in enumerate(group_state[name]):
                    key = f"state.{g}.{name}.{i}"
                    if buffer is None:  # a buffer this param does not have (Adafactor's factors)
                        continue
                    if isinstance(buffer, quantized.QuantizedState):
                        out["quantized_format"] = quantized.FORMAT_VERSION
                        out[key + ".codes"] = buffer.codes.copy()
                        out[key + ".scales"] = buffer.scales.copy()
                        out[key + ".block_size"] = buffer.block_size
                        out[key + ".signed"] = buffer.signed
                    else:
                        out[key] = buffer.copy(order="K")
        return out

    def load_state_dict(self, state_dict):
        """Restore a :meth:`state_dict` (a dict, or what ``np.load`` returns for its ``.npz``).

        Checks everything first (:meth:`parse_state_dict`): on any mismatch it
        raises ValueError and leaves the optimizer untouched.  Hyperparameters
        are restored as torch does; a group whose lr is a schedule keeps it
        when the saved one was a schedule too.
        """
        if self.owner is not None:
            _driven_by(self)
        groups, states, skipped = self.parse_state_dict(state_dict)
        # everything checked: commit, into the existing buffers where there are (views of them stay valid)
        for g, (group, new_group, new_state) in enumerate(zip(self.param_groups, groups, states)):
            group.update(new_group)
            for name, values in new_state.items():
                if name == "step" or name in self.group_scalars:
                    continue
                buffers = self.state[g].get(name) or [self._new_buffer(group, name, p) for p in group["params"]]
                for buffer, value in zip(buffers, values):
                    if buffer is None:
                        continue
                    if isinstance(buffer, quantized.QuantizedState):
                        np.copyto(buffer.codes, value.codes)
                        np.copyto(buffer.scales, value.scales)
                    else:
                        np.copyto(buffer, value)
                new_state[name] = buffers
            self.state[g] = new_state
        self.skipped_steps = skipped

    def parse_state_dict(self, state_dict):
        """Check a :meth:`state_dict` against this optimizer; write nothing.

        Returns ``(groups, states, skipped_steps)``: per group its
        hyperparameters (no params) and ``{"step": t, <buffer>: [saved arrays]}``.
        Raises ValueError on any mismatch: kind, format, group and parameter
        counts, hyperparameters, step counts, every buffer's presence, shape and dtype.
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
        if "quantized_format" in saved:
            version = _scalar(saved, "quantized_format")
            if version != quantized.FORMAT_VERSION:
                raise ValueError(f"state_dict holds 8-bit state of format version {version}; this version of "
                                 f"fastopt reads format version {quantized.FORMAT_VERSION}")
            used.add("quantized_format")
        new_groups, new_states = [], []
        for g, group in enumerate(self.param_groups):
            prefix = f"groups.{g}."
            count = _scalar(saved, prefix + "num_params")
            if count != len(group["params"]):
                raise ValueError(f"state_dict group {g} has {count} params; the optimizer's has "
                                 f"{len(group['params'])}")
            new_group = {key: group[key] for key in self.defaults}
            for key, default in self.defaults.items():
                if prefix + key in saved:
                    new_group[key] = _restore_value(saved[prefix + key], default)
                    used.add(prefix + key)
            try:
                self.check_hyperparameters(dict(new_group, params=group["params"]))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"state_dict group {g}: {exc}") from exc
            new_state = {"step": _count(saved, prefix + "step", MAX_SAVED_STEP)}
            used.update((prefix + "num_params", prefix + "step"))
            for name, initial in self.group_scalars.items():
                new_state[name] = _group_scalar(saved, prefix + name, initial)
                used.add(prefix + name)
            for name in self.state_buffer_names(dict(new_group, params=group["params"])):
                keys = [f"state.{g}.{name}.{i}" for i in range(len(group["params"]))]
                dtype = self.state_buffer_dtype(group, name)
                new_state[name] = []
                for key, p in zip(keys, group["params"]):
                    signed = self.quantizes(group, name, p)
                    shape = self.buffer_shape(name, p)
                    if shape is None:
                        new_state[name].append(None)
                    elif signed is None:
                        new_state[name].append(_saved_buffer(saved, key, p, dtype, shape))
                        used.add(key)
                    else:
                        new_state[name].append(_saved_quantized(saved, key, p, signed, self.block_size))
                        used.update(key + part for part in (".codes", ".scales", ".block_size", ".signed"))
            new_groups.append(new_group)
            new_states.append(new_state)
        unexpected = set(saved) - used
        if unexpected:
            raise ValueError(f"state_dict has entries this optimizer does not use: "
                             f"{', '.join(sorted(unexpected)[:5])}")
        return new_groups, new_states, skipped

    # --- display -------------------------------------------------------------

    def __repr__(self):
        options = [f"num_threads={self.num_threads!r}"]
        if self.max_grad_norm is not None:
            options.append(f"max_grad_norm={self.max_grad_norm!r}, norm_type={self.norm_type!r}")
        if self.skip_nonfinite:
            options.append(f"skip_nonfinite=True, skipped_steps={self.skipped_steps}")
        if self.backend != "fastopt":
            options.append(f"backend={self.backend!r}")
        lines = [f"{type(self).__name__}({', '.join(options)})"]
        for g, (group, state) in enumerate(zip(self.param_groups, self.state)):
            params = group["params"]
            size = sum(p.size for p in params)
            hyper = ", ".join(f"{key}={group[key]!r}" for key in self.defaults)
            lines.append(f"  group {g}: {len(params)} params, {size:,} {params[0].dtype} elements, "
                         f"step {state['step']}; {hyper}")
        return "\n".join(lines)


class _Layout:
    """Where a rule's call finds its arguments in a group and in its state, worked out once.

    ``values(group, lr)`` and ``buffers(params, grads, state, values)`` are
    compiled from source for the rule, since a step of a small model is
    dominated by this per-group work.
    """

    __slots__ = ("spec", "values", "buffers", "master_slot_names")

    def __init__(self, rule, pairs):
        self.spec = SPECS[rule.name]
        # how errors name the buffers when the param's slot holds its float32 master
        self.master_slot_names = (("master", "grads") + tuple(b.name for b in rule.state)
                                  + ("",) * (3 - len(rule.state)) + ("params",))
        items, checks = [], []
        for h in rule.hyper:
            if h.name == "lr":
                items.append("lr")
            elif h.kept_by_optimizer:
                items.append(f"kept[{h.name!r}]")
            elif h.name in pairs:
                key, index = pairs[h.name]
                if f"    {key} = " not in "".join(checks):
                    checks.append(f"    {key} = group[{key!r}]\n"
                                  f"    if type({key}) is not tuple or len({key}) != 2:\n"
                                  f"        {key} = _pair({key!r}, {key})\n")
                items.append(f"{key}[{index}]")
            else:
                items.append(f"group[{h.name!r}]")
        index = {h.name: i for i, h in enumerate(rule.hyper)}
        state = [f"state[{b.name!r}]" if b.enabled_by is None
                 else f"(state[{b.name!r}] if values[{index[b.enabled_by]}] else None)" for b in rule.state]
        source = (f"def values(group, lr, kept=_examples):\n{''.join(checks)}    return ({', '.join(items)},)\n"
                  f"def buffers(params, grads, state, values):\n"
                  f"    return (params, grads, {''.join(x + ', ' for x in state)}None)\n")
        # a kept_by_optimizer hyperparameter at its example, until a step gives its value
        examples = MappingProxyType({h.name: h.example for h in rule.hyper if h.kept_by_optimizer})
        namespace = {"_pair": _pair, "_examples": examples}
        exec(compile(source, f"<fastopt.optim: {rule.name} layout>", "exec"), namespace)
        self.values = namespace["values"]      # the hyperparameters at rate lr (and kept), in the rule's order
        self.buffers = namespace["buffers"]    # KeyError when state lacks a buffer the values turn on


class _StepPlan:
    """A checked step of an optimizer: the core plan, the calls it holds (for the reference backend),
    and each group's :attr:`Optimizer.group_scalars` once it is taken (None without them)."""

    __slots__ = ("core", "calls", "scalars")

    def __init__(self, core, calls, scalars=None):
        self.core = core
        self.calls = calls
        self.scalars = scalars

    def norm(self, norm_type=2.0):
        """The total norm of the step's gradients."""
        return self.core.norm(norm_type)

    def all_finite(self):
        """Whether every gradient element of the step is finite."""
        return self.core.all_finite()


def _reference_call(rule, buffers, values, t, grad_scale, seed):
    """One group's update by the rule's NumPy twin, with the arguments a plan checked."""
    positional = buffers[:2 + len(rule.required_state)]
    keywords = {b.name: buffer for b, buffer in zip(rule.state, buffers[2:]) if b.optional}
    keywords["param_copy"] = buffers[-1]
    if seed is not None:
        keywords.update(stochastic_rounding=True, seed=seed)
    keywords.update(zip((h.name for h in rule.hyper), values))
    if rule.takes_step:
        keywords["step"] = t
    getattr(reference, rule.function_name)(*positional, **keywords, grad_scale=grad_scale)


def _driven_by(opt):
    raise RuntimeError(f"this optimizer is driven by a {type(opt.owner).__name__}, which holds its state "
                       f"now: call that one's step, state_dict and load_state_dict instead")


# --------------------------------------------------------------------------
# the optimizers: one class per registry rule with an optim entry, and SGD

class _NAdamProduct(Optimizer):
    """The base of NAdam's class: the running product of its momentum coefficients, kept per group.

    torch keeps ``mu_product`` per parameter, in its default scalar dtype (float32 unless the
    default dtype is float64); a group's parameters take the same steps, so one number per group,
    in double, is the same product.
    """

    group_scalars = MappingProxyType({"mu_product": 1.0})
    notes = ("Each group keeps mu_product, the product of NAdam's momentum coefficients μ_1…μ_t "
             "(torch's state['mu_product']), in state and in state_dict.")

    def advance(self, group, state, t, lr):
        beta1 = _core.check_value("unit", "beta1", _pair("betas", group["betas"])[0])
        momentum_decay = _core.check_value("nonneg", "momentum_decay", group["momentum_decay"])
        mu_product = state["mu_product"] * reference.nadam_momentum(t, beta1, momentum_decay)
        return lr, {"mu_product": mu_product}, {"mu_product": mu_product}


class _ScheduleFree(Optimizer):
    """The base of ScheduleFreeAdamW's class, as schedulefree.AdamWScheduleFree (adamw_schedulefree.py).

    Each group keeps its mode (``train_mode``: its params hold y, else x), the
    largest rate so far (``lr_max``, -1 before the first step) and the sum of the
    averaging weights (``weight_sum``).  Step t (k = t − 1 in schedulefree)::

        lr_t   = lr·t/warmup_steps while t ≤ warmup_steps, then lr    (lr: the group's, a schedule too)
        lr_max = max(lr_max, lr_t)
        weight = t^r · lr_max^weight_lr_power;  weight_sum += weight
        c      = weight/weight_sum (0 while weight_sum is 0)          the step's average_weight

    then :func:`fastopt.schedule_free_adamw_step` at rate lr_t.
    """

    group_scalars = MappingProxyType({"train_mode": False, "lr_max": -1.0, "weight_sum": 0.0})
    notes = ("As schedulefree's, it starts in eval mode: call train() before the first step and "
             "whenever eval() came last, eval() before evaluating the params (they then hold the "
             "average x).  Each group keeps train_mode, lr_max and weight_sum in state and in "
             "state_dict, which saves the params' mode: save the params with it, in either mode.")

    def check_hyperparameters(self, group, t=None):
        super().check_hyperparameters(group, t)
        _core.check_count("warmup_steps", group["warmup_steps"], 0)
        if _pair("betas", group["betas"])[0] == 0:
            raise ValueError("betas[0] must be > 0: eval() recovers x = y + (1 - 1/beta1)·(z - y)")

    def plan_step(self, grads):
        if self.owner is None:
            for g, state in enumerate(self.state):
                if state.get("train_mode") is False:
                    raise RuntimeError(f"{self._what}: group {g} is in eval mode (its params hold x): "
                                       f"call train() before step(), and eval() before evaluating")
        return super().plan_step(grads)

    def advance(self, group, state, t, lr):
        lr = _core.check_value("nonneg", "lr", lr)
        warmup_steps = _core.check_count("warmup_steps", group["warmup_steps"], 0)
        r = _core.check_value("real", "r", group["r"])
        power = _core.check_value("nonneg", "weight_lr_power", group["weight_lr_power"])
        if t <= warmup_steps:
            lr = lr * (t / warmup_steps)
        lr_max = max(lr, state["lr_max"])
        try:
            weight = t**r * lr_max**power
        except OverflowError:
            raise ValueError(f"{self._what}: the averaging weight t**r · lr_max**weight_lr_power of step {t} "
                             f"overflows (r={r!r})") from None
        weight_sum = state["weight_sum"] + weight
        average_weight = weight / weight_sum if weight_sum != 0 else 0.0
        return lr, {"average_weight": average_weight}, {"lr_max": lr_max, "weight_sum": weight_sum}

    def train(self):
        """Put every group in train mode: the params of those in eval mode go from x to y (one fused pass)."""
        self._switch(True)

    def eval(self):
        """Put every group in eval mode: the params of those in train mode go from y to x (one fused pass)."""
        self._switch(False)

    def _switch(self, to_train):
        if self.owner is not None:
            _driven_by(self)
        name = "schedule_free_train" if to_train else "schedule_free_eval"
        calls = []
        for group, state in zip(self.param_groups, self.state):
            # before its first step a group's z is not yet its params' copy: y = x = the params
            if state["train_mode"] != to_train and state["step"] > 0:
                beta1 = _pair("betas", group["betas"])[0]
                if "master" in state:  # mix the float32 masters, write the params rounded
                    buffers = (state["master"], state["z"], group["params"])
                else:
                    buffers = (group["params"], state["z"], None)
                calls.append((PASS_SPECS[name], buffers, (beta1,), None))
        if calls:
            plan = _core.plan(calls, self.num_threads, f"{type(self).__name__}.{'train' if to_train else 'eval'}",
                              model_labels=False)
            if self.backend == "fastopt":
                plan.run()
            else:
                for _, (params, z, copies), (beta1,), _ in calls:
                    getattr(reference, name)(params, z, param_copy=copies, beta1=beta1)
        for state in self.state:
            state["train_mode"] = to_train


# The base of a rule's class where its group_scalars need one (else Optimizer).
_BASES = {"nadam": _NAdamProduct, "schedule_free_adamw": _ScheduleFree}


def _optimizer_class(rule):
    """The class of a registry rule: torch's constructor arguments, its defaults, its docs."""
    spec = rule.optim
    base = _BASES.get(rule.name, Optimizer)
    extra = {h.name: h for h in spec.extra}
    pairs = {hyper: (key, index) for key, names in spec.pairs.items() for index, hyper in enumerate(names)}

    def default(name):
        if name in spec.defaults:
            return spec.defaults[name]
        if name in spec.pairs:
            return tuple(rule.hyper_named(h).default for h in spec.pairs[name])
        return extra[name].default if name in extra else rule.hyper_named(name).default

    namespace = {"Optimizer": Optimizer}
    namespace.update({f"_default_{name}": default(name) for name in spec.arguments})
    arguments = ", ".join(f"{name}=_default_{name}" for name in spec.args)
    keyword_only = ", ".join(f"{name}=_default_{name}" for name in spec.keyword_only)
    source = (f"def __init__(self, params, {arguments}, *, {keyword_only}, **options):\n"
              f"    Optimizer.__init__(self, params, dict({', '.join(f'{n}={n}' for n in spec.arguments)}), "
              f"**options)\n")
    exec(compile(source, f"<fastopt.optim: {spec.name}>", "exec"), namespace)
    torch = f"torch.optim.{rule.torch}" if rule.torch else "no torch.optim class"
    doc = (f"{rule.summary[0].upper()}{rule.summary[1:]} ({torch}; fused step: "
           f":func:`fastopt.{rule.function_name}`).\n\n"
           f"    Arguments after params: {', '.join(spec.args)}; keyword-only: "
           f"{', '.join(spec.keyword_only)}; and the options of :class:`Optimizer`.\n")
    if base is not Optimizer:
        doc += f"\n    {base.notes}\n"
    checks = {name: (h.check, h.default) for name, h in extra.items()}
    cls = type(spec.name, (base,), {
        "__doc__": doc, "__module__": __name__, "__init__": namespace["__init__"], "rule": rule,
        "_pairs": classmethod(lambda c: pairs), "_extra_checks": classmethod(lambda c: checks),
    })
    cls.__init__.__qualname__ = f"{spec.name}.__init__"
    return cls


class SGD(Optimizer):
    """torch.optim.SGD: plain, with momentum, or Nesterov momentum.

    momentum = 0 steps with :func:`fastopt.sgd_step`; momentum > 0 with
    :func:`fastopt.sgd_momentum_step`, whose buffer starts as the first gradient.
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, *,
                 maximize=False, **options):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov, maximize=maximize),
                         **options)

    def rule_of(self, group):
        return rules.RULES["sgd_momentum" if group["momentum"] else "sgd"]

    def check_hyperparameters(self, group, t=None):
        momentum = _core.check_value("nonneg", "momentum", group["momentum"])
        nesterov = _core.check_value("bool", "nesterov", group["nesterov"])
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True requires momentum > 0 and dampening = 0")
        super().check_hyperparameters(group, t)
        _core.check_value("real", "dampening", group["dampening"])


class Adafactor(Optimizer):
    """torch.optim.Adafactor: factored second moments, memory m + n per m×n matrix.

    Steps with :func:`fastopt.adafactor_step`.  A param of ndim >= 2 keeps
    ``row_var`` (..., m, 1) and ``col_var`` (..., 1, n), one of lower ndim
    keeps ``variance``; the state lists hold None where a param has no such
    buffer, as torch's state lacks the key.  ``eps`` is (eps1, eps2), eps1
    None for the machine epsilon of the gradients' dtype (torch's).  Params
    are float32, float64, bfloat16 or float16; ``state_dtype`` (None: the
    param's, as torch), ``master_weights`` and ``stochastic_rounding`` as
    :class:`Optimizer` has them, but not ``"8bit"``: the factors are a row and
    a column, not blocks of a tensor.
    """

    _NAMES = ("row_var", "col_var", "variance")

    def __init__(self, params, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=0.0, *,
                 maximize=False, num_threads=None, max_grad_norm=None, norm_type=2.0, skip_nonfinite=False,
                 backend="fastopt", state_dtype=None, master_weights=False, stochastic_rounding=False, seed=0):
        if state_dtype == "8bit":
            raise ValueError("Adafactor keeps no 8-bit state: its factors are a row and a column of each "
                             "matrix, not blocks of a tensor; state_dtype must be None, 'float32', 'bfloat16' "
                             "or 'float16'")
        super().__init__(params, dict(lr=lr, beta2_decay=beta2_decay, eps=eps, d=d, weight_decay=weight_decay,
                                      maximize=maximize),
                         num_threads=num_threads, max_grad_norm=max_grad_norm, norm_type=norm_type,
                         skip_nonfinite=skip_nonfinite, backend=backend, state_dtype=state_dtype,
                         master_weights=master_weights, stochastic_rounding=stochastic_rounding, seed=seed)

    def rule_of(self, group):
        raise TypeError("Adafactor steps with fastopt.adafactor_step, not a rule of fastopt.rules")

    def check_hyperparameters(self, group, t=None):
        lr = group["lr"]
        if not (callable(lr) or (isinstance(lr, numbers.Real) and not isinstance(lr, bool))):
            raise TypeError(f"lr must be a number or a schedule (callable t -> lr); got {lr!r}")
        eps = _pair("eps", group["eps"])
        for index, p in enumerate(group.get("params", ())):
            if not p.flags.c_contiguous:   # its rows and columns are the last two axes in memory
                raise ValueError(f"params[{index}] must be C-contiguous: Adafactor reduces the rows and "
                                 f"columns of its last two axes; got strides {p.strides}")
        if callable(lr):
            lr = 0.0 if t is None else lr(t)
        factored.check_hyperparameters(self._what, 1 if t is None else t, lr, group["beta2_decay"], eps[0], eps[1],
                                       group["d"], group["weight_decay"], group["maximize"])

    def state_buffer_names(self, group):
        return list(self._NAMES) + (["master"] if self._has_master(group) else [])

    def buffer_shape(self, name, param):
        if name == "master":
            return param.shape
        if param.ndim >= 2:
            return None if name == "variance" else factored.factor_shapes(param.shape)[name == "col_var"]
        return param.shape if name == "variance" else None

    def quantizes(self, group, name, param):
        return None

    def _new_buffer(self, group, name, param):
        shape = self.buffer_shape(name, param)
        return None if shape is None else np.zeros(shape, self._state_dtype(group))

    def plan_step(self, grads):
        if self.owner is not None:
            _driven_by(self)
        grads = self.check_grads(grads)
        calls, offset = [], 0
        for group, state in zip(self.param_groups, self.state):
            params = group["params"]
            t = state["step"] + 1
            lr = group["lr"](t) if callable(group["lr"]) else group["lr"]
            eps1, eps2 = group["eps"]
            values = factored.check_hyperparameters(self._what, t, lr, group["beta2_decay"], eps1, eps2,
                                                    group["d"], group["weight_decay"], group["maximize"])
            group_grads = grads[offset:offset + len(params)]
            offset += len(params)
            seed = self.seed if self.stochastic_rounding else None
            # with master weights: step the float32 masters, write the params rounded
            stepped, copies = (state["master"], params) if "master" in state else (params, None)
            tensors = factored.check_tensors(self._what, stepped, group_grads,
                                             *(state[name] for name in self._NAMES), values[3], copies,
                                             seed is not None)
            calls.append((values, tensors, seed))
        return _FactoredPlan(calls, grads, self.num_threads)

    def take_step(self, plan, grad_scale):
        if grad_scale is None:
            self.skipped_steps += 1
            return False
        factored.run(plan.calls, grad_scale, self.num_threads, self.backend)
        for state in self.state:
            state["step"] += 1
        return True

    def state_dict_of(self, state):
        out = super().state_dict_of(state)
        for g in range(len(self.param_groups)):  # eps1=None saved as NaN: an .npz holds no None
            eps1, eps2 = out[f"groups.{g}.eps"]
            out[f"groups.{g}.eps"] = (math.nan if eps1 is None else eps1, eps2)
        return out

    def parse_state_dict(self, state_dict):
        try:
            saved = {key: state_dict[key] for key in state_dict}
        except Exception as exc:
            raise ValueError(f"state_dict must be a mapping; got {type(state_dict).__name__}") from exc
        for key, value in saved.items():
            if key.startswith("groups.") and key.endswith(".eps"):
                pair = np.asarray(value, dtype=object if isinstance(value, tuple) else None).tolist()
                if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], float) and math.isnan(pair[0]):
                    saved[key] = (None, pair[1])
        return super().parse_state_dict(saved)


class _FactoredPlan:
    """A checked Adafactor step: per group its hyperparameters and checked tensors; the gradients' norm
    and finiteness for clipping and skipping."""

    __slots__ = ("calls", "grads", "num_threads")

    def __init__(self, calls, grads, num_threads):
        self.calls, self.grads, self.num_threads = calls, grads, num_threads

    def norm(self, norm_type=2.0):
        return _core.total_norm(self.grads, norm_type, self.num_threads)

    def all_finite(self):
        return _core.all_finite(self.grads, self.num_threads)


_CLASSES = [_optimizer_class(rule) for rule in rules.RULES.values() if rule.optim is not None]
globals().update({cls.__name__: cls for cls in _CLASSES})

__all__ = ["Optimizer", "SGD", "Adafactor"] + [cls.__name__ for cls in _CLASSES]


# --------------------------------------------------------------------------
# helpers

def _pair(key, value):
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise TypeError(f"{key} must be a pair; got {value!r}")
    return value


def _positive(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {value!r}")
    try:
        value = float(value)
    except OverflowError:
        value = math.inf
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
    if p.dtype not in PARAM_DTYPES or not p.dtype.isnative:
        raise TypeError(f"{label} must have dtype float32, float64, bfloat16 (ml_dtypes) or float16 in "
                        f"native byte order; got {p.dtype}")
    if p.dtype != first.dtype:
        raise TypeError(f"{label} is {p.dtype} but params[0] of its group is {first.dtype}: "
                        f"put each dtype in a group of its own")
    if not (p.flags.c_contiguous or p.flags.f_contiguous):
        raise ValueError(f"{label} must be C- or Fortran-contiguous")
    if not p.flags.writeable:
        raise ValueError(f"{label} is updated in place and must be writeable")
    if not p.flags.aligned:
        raise ValueError(f"{label} is not aligned to its dtype")


def _round_seed(seed, t):
    """The key of step t's stochastic rounding for rules that count no steps: the seed moved on by t."""
    return (seed + t * 0x9E3779B97F4A7C15) % 2**63


def _full_like(p, value, dtype):
    """A state buffer of dtype in p's memory order (the kernels need the same layout).

    Zeros come from np.zeros, whose pages stay untouched until the first step
    writes them; a wrapper that moves the state elsewhere never pays for them.
    """
    order = "F" if p.flags.f_contiguous and not p.flags.c_contiguous else "C"
    if value == 0:
        return np.zeros(p.shape, dtype, order=order)
    return np.full(p.shape, value, dtype, order=order)


def _scalar(saved, key):
    if key not in saved:
        raise ValueError(f"state_dict has no {key!r}")
    value = np.asarray(saved[key])
    if value.ndim != 0:
        raise ValueError(f"state_dict {key!r} must be a scalar; got shape {value.shape}")
    return value.item()


def _count(saved, key, high=2**63 - 1):
    value = _scalar(saved, key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise ValueError(f"state_dict {key!r} must be an integer in [0, {high}]; got {value!r}")
    return value


def _group_scalar(saved, key, initial):
    """A saved group scalar, of its initial value's type (a bool, or a finite float)."""
    value = _scalar(saved, key)
    if isinstance(initial, bool):
        if not isinstance(value, bool):
            raise ValueError(f"state_dict {key!r} must be a bool; got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"state_dict {key!r} must be a finite number; got {value!r}")
    return float(value)


def _restore_value(value, default):
    """A hyperparameter as saved (a pickled Python value or an .npz array) in the type of its default."""
    value = np.asarray(value)
    if isinstance(default, tuple):
        return tuple(value.tolist()) if value.ndim == 1 else value.item()
    return value.item() if value.ndim == 0 else value.tolist()


def _saved_quantized(saved, key, param, signed, block_size):
    """The 8-bit buffer saved under key (.codes, .scales, .block_size, .signed), checked against param's."""
    if key in saved:
        raise ValueError(f"state_dict {key!r} is a float buffer; the optimizer keeps it as 8-bit state "
                         f"(state_dtype='8bit')")
    if "quantized_format" not in saved:
        raise ValueError("state_dict has 8-bit state but no 'quantized_format'")
    saved_block = _scalar(saved, key + ".block_size")
    if saved_block != block_size:
        raise ValueError(f"state_dict {key!r} has block_size {saved_block}; the optimizer's is {block_size}")
    saved_signed = _scalar(saved, key + ".signed")
    if saved_signed is not signed:
        raise ValueError(f"state_dict {key!r} has signed={saved_signed}; its buffer takes signed={signed}")
    codes = _saved_buffer(saved, key + ".codes", param, np.dtype(np.uint8))
    scales = saved.get(key + ".scales")
    n_blocks = quantized.num_blocks(param.size, block_size)
    if not isinstance(scales, np.ndarray) or scales.dtype != np.float32 or scales.shape != (n_blocks,):
        raise ValueError(f"state_dict {key + '.scales'!r} must be float32[{n_blocks}]; got "
                         f"{getattr(scales, 'dtype', type(scales).__name__)}{list(getattr(scales, 'shape', []))}")
    return quantized.QuantizedState(codes, scales, block_size, signed)


def _saved_buffer(saved, key, param, dtype, shape=None):
    """saved[key], after checking it can be copied into a state buffer of param of dtype (and shape:
    the param's by default)."""
    shape = param.shape if shape is None else shape
    if key not in saved:
        raise ValueError(f"state_dict has no {key!r}")
    value = saved[key]
    if not isinstance(value, np.ndarray):
        raise ValueError(f"state_dict {key!r} must be an ndarray; got {type(value).__name__}")
    if dtype == SIXTEEN_BIT[0] and value.dtype == np.dtype("V2"):
        value = value.view(dtype)  # np.savez keeps bfloat16's bytes, not its type
    if value.shape != shape or value.dtype != dtype:
        raise ValueError(f"state_dict {key!r} is {value.dtype}{list(value.shape)}; the optimizer's "
                         f"buffer is {dtype}{list(shape)}")
    return value
