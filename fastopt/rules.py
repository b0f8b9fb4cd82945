"""The rule registry: what each update rule is, declared once.

Everything above the arithmetic is derived from these entries: the step
functions with their signatures and checks (:mod:`fastopt.steps`), the
classes of :mod:`fastopt.optim`, the benchmark's configurations and byte
counts, the demo's methods, the test matrices, the type stubs and
``__all__``.  The arithmetic itself lives in two places: the C kernel
(``src_c/rules.h``, whose list ``FO_RULES`` names the same rules) and its
NumPy twin in :mod:`fastopt.reference`.

Adding a rule whose scalars fit ``fo_hyper`` (``src_c/fastopt_kernels.h``)
takes: its C prepare function and loop (and its name in ``FO_RULES``), its
reference twin, its entry here, an ``optim`` class only if it needs more than
its entry says (a base class in ``fastopt.optim._BASES`` where the optimizer
keeps numbers per group: NAdam, Schedule-Free), its row in the README's table
of step functions, and its CHANGELOG line.

This module imports nothing compiled, so build and documentation tools can
read it.
"""

from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["REQUIRED", "Hyper", "Buffer", "OptimClass", "Rule", "Pass", "RULES", "PASSES",
           "STEP_FUNCTIONS", "PASS_FUNCTIONS", "CALL_OPTIONS"]


class _Required:
    """The default of a hyperparameter the caller must give."""

    def __repr__(self):
        return "REQUIRED"


REQUIRED = _Required()

# With 8-bit state, a param of fewer elements keeps float32 state (its state is small: biases, norms'
# scales), as bitsandbytes does; fastopt.optim.QUANTIZE_MIN_SIZE is this.
QUANTIZE_MIN_SIZE = 4096

# How a hyperparameter is checked (by fastopt._core, before anything is written):
CHECKS = {
    "nonneg": "finite and >= 0",
    "unit": "in [0, 1)",
    "real": "finite",
    "bool": "a bool",
    "cap": "> 0 (inf: no cap)",
}


@dataclass(frozen=True)
class Hyper:
    """A keyword argument of a step function, under torch.optim's name where torch has it.

    ``example`` is a typical value where there is no default (or where the
    default turns a feature off): the benchmark and the tests use it.
    ``kept_by_optimizer``: a running value (NAdam's product of momentum
    coefficients) that the :mod:`fastopt.optim` class keeps per group and
    advances each step, so its constructor does not take it.
    """

    name: str
    default: object = REQUIRED
    check: str = "nonneg"
    example: object = None
    kept_by_optimizer: bool = False

    def __post_init__(self):
        if self.check not in CHECKS:
            raise ValueError(f"unknown check {self.check!r} of {self.name}")

    @property
    def is_switch(self):
        return self.check == "bool"



@dataclass(frozen=True)
class Buffer:
    """A state buffer: same shape, dtype and memory order as its param, read and written by every step.

    An optional buffer is used only when the hyperparameter ``enabled_by`` is
    true (a switch) or > 0 (a number); ``initial`` names the optimizer
    hyperparameter holding its starting value (otherwise it starts at zero).
    ``nonnegative``: the rule never makes it negative (a second moment, a sum
    of squares), so as 8-bit state (:class:`fastopt.QuantizedState`) it takes
    the unsigned map; ``quantizable``: it may be 8-bit state at all (not
    Schedule-Free's z, a copy of the params).
    """

    name: str
    enabled_by: str = None
    initial: str = None
    nonnegative: bool = False
    quantizable: bool = True

    @property
    def optional(self):
        return self.enabled_by is not None

    @property
    def eight_bit_signed(self):
        """The signedness of its 8-bit codes where it is 8-bit state (signed unless nonnegative), or None:
        it stays float32."""
        return (not self.nonnegative) if self.quantizable else None

    def eight_bit_signed_for(self, size, c_contiguous):
        """:attr:`eight_bit_signed` for a param of ``size`` elements: as bitsandbytes, a param below
        QUANTIZE_MIN_SIZE elements (or not in C order) keeps float32 state."""
        return self.eight_bit_signed if size >= QUANTIZE_MIN_SIZE and c_contiguous else None


@dataclass(frozen=True)
class OptimClass:
    """The :mod:`fastopt.optim` class of a rule: torch.optim's constructor, argument for argument.

    ``args`` come after ``params`` in torch's order, ``keyword_only`` after
    ``*``; an argument is a hyperparameter of the step function, a pair of
    them (``pairs``: ``betas`` -> (beta1, beta2)), or one of ``extra``, which
    only the optimizer has (a buffer's initial value).  ``defaults`` replaces
    the step function's default (or gives one it lacks).
    """

    name: str
    args: tuple
    keyword_only: tuple = ("maximize",)
    defaults: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    pairs: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    extra: tuple = ()

    @property
    def arguments(self):
        return self.args + self.keyword_only


@dataclass(frozen=True)
class Rule:
    """One update rule: the step function ``<name>_step`` and C kernel ``FO_RULE_<name>``.

    ``hyper`` lists the keyword arguments in signature order (the step
    function's signature is: param, grad, the required state buffers; then,
    keyword-only, the optional buffers, ``param_copy=None``, ``step`` if
    ``takes_step``, ``hyper`` and :data:`CALL_OPTIONS`).  ``optim`` makes its :mod:`fastopt.optim`
    class; ``optim_written_out`` names the class written out by hand that
    steps with this rule instead (SGD picks one of two rules per group).
    ``torch`` is the torch.optim class with the same update, if any.
    ``variants`` are named hyperparameter sets the benchmark measures beside
    the plain call (:meth:`call_hyper`).  ``second_pass``: the C kernel of a
    second pass over each tensor, run after the rule's own once every tensor's
    norms are known (LAMB's trust ratio); the first writes no param.
    """

    name: str
    summary: str
    state: tuple = ()
    hyper: tuple = ()
    takes_step: bool = False
    optim: OptimClass = None
    optim_written_out: str = None
    torch: str = None
    variants: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    second_pass: str = None

    @property
    def function_name(self):
        return f"{self.name}_step"

    @property
    def required_state(self):
        return tuple(b for b in self.state if not b.optional)

    @property
    def optional_state(self):
        return tuple(b for b in self.state if b.optional)

    @property
    def buffer_names(self):
        """Every buffer of a call, in the kernel's order: param, grad, then the state."""
        return ("param", "grad") + tuple(b.name for b in self.state)

    def hyper_named(self, name):
        for h in self.hyper:
            if h.name == name:
                return h
        raise KeyError(f"{self.name} has no hyperparameter {name!r}")

    def state_used(self, hyper):
        """The state buffers a call with these hyperparameters (a mapping; missing ones at their default) uses."""
        return tuple(b for b in self.state
                     if not b.optional or bool(hyper.get(b.enabled_by, self.hyper_named(b.enabled_by).default)))

    @property
    def optim_class_name(self):
        """The :mod:`fastopt.optim` class that steps with this rule, or None."""
        return self.optim.name if self.optim is not None else self.optim_written_out

    def call_hyper(self, **overrides):
        """Every hyperparameter of a plain call: its default, or its example where it has none; with overrides."""
        values = {h.name: h.example if h.default is REQUIRED else h.default for h in self.hyper}
        values.update(overrides)
        return values

    def bytes_per_element(self, itemsize, hyper=None):
        """Memory traffic of one element: param and each used state buffer read and written, grad read;
        with a second pass, param read in the first, and param read and written and the state read again."""
        n_state = len(self.state_used(hyper or {}))
        second = 1 + n_state if self.second_pass else 0
        return itemsize * (3 + 2 * n_state + second)


@dataclass(frozen=True)
class Pass:
    """An elementwise pass that is not a step: the params mixed in place with one buffer they read.

    Schedule-Free's switch of its params between y (where gradients are taken)
    and x (where the model is evaluated).  Its function is
    ``fastopt.<name>(param, <reads>, *, <hyper>, num_threads=None)``, its C kernel
    ``FO_RULE_<name>``, which finds the buffer it reads in the gradient's place.
    It has what :class:`fastopt._core.RuleSpec` reads of a :class:`Rule`.
    """

    name: str
    summary: str
    reads: str
    hyper: tuple = ()
    state = ()          # no state buffers: only param, and the buffer read in grad's place
    takes_step = False

    @property
    def function_name(self):
        return self.name

    @property
    def buffer_names(self):
        return ("param", self.reads)


# The keyword arguments every step function ends with.
CALL_OPTIONS = (
    ("stochastic_rounding", False),  # round a 16-bit param's new value stochastically ...
    ("seed", 0),                     # ... with random bits keyed by this, the step and the element
    ("grad_scale", 1.0),   # g is multiplied by this first: gradient clipping folded into the step
    ("num_threads", None),  # None: fastopt.get_num_threads()
)

# --------------------------------------------------------------------------
# the hyperparameters several rules share

def _lr(default=REQUIRED, example=None):
    return Hyper("lr", default, "nonneg", example)


_WEIGHT_DECAY = Hyper("weight_decay", 0.0, "nonneg", example=0.1)
_MAXIMIZE = Hyper("maximize", False, "bool")
_ADAM_HYPER = (_lr(1e-3), Hyper("beta1", 0.9, "unit"), Hyper("beta2", 0.999, "unit"), Hyper("eps", 1e-8),
               _WEIGHT_DECAY, Hyper("amsgrad", False, "bool"), _MAXIMIZE)
_ADAM_STATE = (Buffer("exp_avg"), Buffer("exp_avg_sq", nonnegative=True),
               Buffer("max_exp_avg_sq", enabled_by="amsgrad", nonnegative=True))
_BETAS = MappingProxyType({"betas": ("beta1", "beta2")})
_DECOUPLED = Hyper("decoupled_weight_decay", False, "bool")   # NAdam's and RAdam's AdamW-style decay


RULES = {rule.name: rule for rule in [
    Rule("sgd", "gradient descent: θ ← θ − lr·g",
         hyper=(_lr(example=1e-3), _WEIGHT_DECAY, _MAXIMIZE), optim_written_out="SGD", torch="SGD"),
    Rule("momentum", "the lecture's momentum, an exponential moving average of gradients",
         state=(Buffer("velocity"),),
         hyper=(_lr(example=1e-3), Hyper("beta", 0.9, "unit"), _WEIGHT_DECAY, _MAXIMIZE),
         optim=OptimClass("Momentum", ("lr", "beta", "weight_decay"), defaults=MappingProxyType({"lr": 1e-3}))),
    Rule("sgd_momentum", "torch.optim.SGD's heavy-ball momentum, with dampening and Nesterov",
         state=(Buffer("momentum_buffer"),), takes_step=True,
         hyper=(_lr(example=1e-3), Hyper("momentum", REQUIRED, "nonneg", example=0.9),
                Hyper("dampening", 0.0, "real", example=0.3), Hyper("nesterov", False, "bool"),
                _WEIGHT_DECAY, _MAXIMIZE),
         optim_written_out="SGD", torch="SGD",
         variants=MappingProxyType({"nesterov": MappingProxyType({"nesterov": True})})),
    Rule("rmsprop", "RMSprop: the second moment rescales each direction",
         state=(Buffer("square_avg", nonnegative=True), Buffer("grad_avg", enabled_by="centered"),
                Buffer("momentum_buffer", enabled_by="momentum")),
         hyper=(_lr(1e-2), Hyper("alpha", 0.99, "unit"), Hyper("eps", 1e-8), _WEIGHT_DECAY,
                Hyper("momentum", 0.0, "nonneg", example=0.9), Hyper("centered", False, "bool"), _MAXIMIZE),
         optim=OptimClass("RMSprop", ("lr", "alpha", "eps", "weight_decay", "momentum", "centered")),
         torch="RMSprop",
         variants=MappingProxyType({"rmsprop_centered": MappingProxyType({"centered": True, "momentum": 0.9})})),
    Rule("adagrad", "Adagrad: steps shrink with the sum of squared gradients",
         state=(Buffer("state_sum", initial="initial_accumulator_value", nonnegative=True),), takes_step=True,
         hyper=(_lr(1e-2), Hyper("lr_decay", 0.0, "nonneg", example=0.01), Hyper("eps", 1e-10),
                _WEIGHT_DECAY, _MAXIMIZE),
         optim=OptimClass("Adagrad", ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"),
                          extra=(Hyper("initial_accumulator_value", 0.0, "nonneg", example=0.1),)),
         torch="Adagrad"),
    Rule("adam", "Adam: bias-corrected first and second moments; L2 weight decay",
         state=_ADAM_STATE, takes_step=True, hyper=_ADAM_HYPER,
         optim=OptimClass("Adam", ("lr", "betas", "eps", "weight_decay", "amsgrad"), pairs=_BETAS),
         torch="Adam",
         variants=MappingProxyType({"amsgrad": MappingProxyType({"amsgrad": True})})),
    Rule("adamw", "AdamW: Adam with decoupled weight decay",
         state=_ADAM_STATE, takes_step=True,
         hyper=tuple(Hyper("weight_decay", 1e-2, "nonneg") if h.name == "weight_decay" else h
                     for h in _ADAM_HYPER),
         optim=OptimClass("AdamW", ("lr", "betas", "eps", "weight_decay", "amsgrad"), pairs=_BETAS),
         torch="AdamW"),
    Rule("lion", "Lion: the sign of a momentum blend, one state buffer (as optax.lion)",
         state=(Buffer("exp_avg"),),
         hyper=(_lr(1e-4), Hyper("beta1", 0.9, "unit"), Hyper("beta2", 0.99, "unit"),
                Hyper("weight_decay", 1e-3, "nonneg", example=0.1), _MAXIMIZE),
         optim=OptimClass("Lion", ("lr", "betas", "weight_decay"), pairs=_BETAS)),
    # The trust ratio needs both norms of the whole tensor before any element moves: a step is two
    # passes (src_c/rules.h), the second taking u again from the stored moments.
    Rule("lamb", "LAMB: Adam's direction, scaled per tensor by the trust ratio ‖θ‖/‖u‖ (as optax.lamb)",
         state=_ADAM_STATE[:2], takes_step=True,
         hyper=(_lr(1e-3), Hyper("beta1", 0.9, "unit"), Hyper("beta2", 0.999, "unit"), Hyper("eps", 1e-6),
                _WEIGHT_DECAY, Hyper("max_trust_ratio", float("inf"), "cap", example=10.0), _MAXIMIZE),
         optim=OptimClass("LAMB", ("lr", "betas", "eps", "weight_decay", "max_trust_ratio"), pairs=_BETAS),
         second_pass="lamb_apply"),
    Rule("radam", "RAdam: Adam whose adaptive step waits until the variance estimate is reliable",
         state=_ADAM_STATE[:2], takes_step=True,
         hyper=_ADAM_HYPER[:5] + (_DECOUPLED, _MAXIMIZE),
         optim=OptimClass("RAdam", ("lr", "betas", "eps", "weight_decay", "decoupled_weight_decay"),
                          pairs=_BETAS),
         torch="RAdam"),
    Rule("adamax", "Adamax: Adam with the infinity norm in place of the second moment",
         state=(Buffer("exp_avg"), Buffer("exp_inf", nonnegative=True)), takes_step=True,
         hyper=(_lr(2e-3),) + _ADAM_HYPER[1:5] + (_MAXIMIZE,),
         optim=OptimClass("Adamax", ("lr", "betas", "eps", "weight_decay"), pairs=_BETAS),
         torch="Adamax"),
    # mu_product, torch's state["mu_product"] after this step's update, is an input rather than
    # something the kernel derives from t: a product over every step taken, with whatever beta1 and
    # momentum_decay each had.  optim.NAdam keeps it per group and saves it in state_dict.
    Rule("nadam", "NAdam: Adam with Nesterov momentum, whose momentum coefficient warms up",
         state=_ADAM_STATE[:2], takes_step=True,
         hyper=(Hyper("mu_product", REQUIRED, "unit", example=0.45, kept_by_optimizer=True), _lr(2e-3))
         + _ADAM_HYPER[1:5] + (Hyper("momentum_decay", 4e-3, "nonneg"), _DECOUPLED, _MAXIMIZE),
         optim=OptimClass("NAdam", ("lr", "betas", "eps", "weight_decay", "momentum_decay",
                                    "decoupled_weight_decay"), pairs=_BETAS),
         torch="NAdam"),
    # average_weight, the new z's weight c in the average x, is what the optimizer's running sums
    # (weight_sum, lr_max) give; optim.ScheduleFreeAdamW keeps them and its warmup (lr is the
    # step's rate, warmup included).  Its train()/eval() are the passes below.
    Rule("schedule_free_adamw", "Schedule-Free AdamW: no schedule; gradients at y, an average x evaluated",
         state=(Buffer("z", quantizable=False), Buffer("exp_avg_sq", nonnegative=True)), takes_step=True,
         hyper=(Hyper("average_weight", REQUIRED, "nonneg", example=0.1, kept_by_optimizer=True), _lr(2.5e-3),
                Hyper("beta1", 0.9, "unit"), Hyper("beta2", 0.999, "unit"), Hyper("eps", 1e-8), _WEIGHT_DECAY,
                _MAXIMIZE),
         optim=OptimClass("ScheduleFreeAdamW", ("lr", "betas", "eps", "weight_decay", "warmup_steps", "r",
                                                "weight_lr_power"), pairs=_BETAS,
                          extra=(Hyper("warmup_steps", 0, "nonneg", example=5),   # an integer: the class checks
                                 Hyper("r", 0.0, "real", example=1.0),
                                 Hyper("weight_lr_power", 2.0, "nonneg", example=1.0)))),
]}

# Passes that are not steps: Schedule-Free's switch between y and x (ScheduleFreeAdamW.train()/eval()).
PASSES = {p.name: p for p in [
    Pass("schedule_free_eval", "Schedule-Free: the params from y to x = lerp(y, z, 1 − 1/β1), to evaluate",
         reads="z", hyper=(Hyper("beta1", 0.9, "unit"),)),
    Pass("schedule_free_train", "Schedule-Free: the params from x to y = lerp(x, z, 1 − β1), to train",
         reads="z", hyper=(Hyper("beta1", 0.9, "unit"),)),
]}

# Every step function's name, in registry order, and the passes': fastopt.__all__ and fastopt.reference.__all__.
STEP_FUNCTIONS = tuple(rule.function_name for rule in RULES.values())
PASS_FUNCTIONS = tuple(p.function_name for p in PASSES.values())
