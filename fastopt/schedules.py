"""Learning-rate schedules: callables ``t -> lr`` for the step t = 1, 2, ... being taken.

Give one as a group's ``lr`` and the optimizer calls it with the group's step
count::

    opt = fastopt.optim.Adam(params, lr=schedules.linear_warmup(schedules.cosine(1e-3, 10_000), 500))

``schedule(t)`` is the learning rate torch's matching scheduler gives for step
t, that is after t-1 ``scheduler.step()`` calls: :func:`step_decay` is
StepLR, :func:`exponential` ExponentialLR, :func:`cosine` CosineAnnealingLR.
torch updates the rate recursively (lr <- lr*gamma at each step); these
compute the closed form, so the two agree to rounding (a relative 1e-12 or so
after thousands of steps), not bit for bit.

Schedules are small picklable objects with a readable repr, so a training
configuration that holds them can be saved and printed.
"""

import math
import numbers

__all__ = ["Schedule", "constant", "step_decay", "exponential", "cosine", "linear_warmup", "inverse_sqrt"]


def _real(name, value, *, positive=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be finite and {'> 0' if positive else '>= 0'}; got {value!r}")
    return value


def _count(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= 1; got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    return int(value)


class Schedule:
    """Base of the schedules: validates t, then calls ``_at(t)``; repr from ``_fields``."""

    _fields = ()

    def __call__(self, t):
        return self._at(_count("t", t))

    def _at(self, t):
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and all(
            getattr(self, name) == getattr(other, name) for name in self._fields)

    def __hash__(self):
        return hash((type(self).__name__,) + tuple(getattr(self, name) for name in self._fields))


class constant(Schedule):
    """lr at every step."""

    _fields = ("lr",)

    def __init__(self, lr):
        self.lr = _real("lr", lr)

    def _at(self, t):
        return self.lr


class step_decay(Schedule):
    """lr * gamma ** ((t-1) // step_size): torch's StepLR."""

    _fields = ("lr", "step_size", "gamma")

    def __init__(self, lr, step_size, gamma=0.1):
        self.lr = _real("lr", lr)
        self.step_size = _count("step_size", step_size)
        self.gamma = _real("gamma", gamma)

    def _at(self, t):
        return self.lr * self.gamma ** ((t - 1) // self.step_size)


class exponential(Schedule):
    """lr * gamma ** (t-1): torch's ExponentialLR."""

    _fields = ("lr", "gamma")

    def __init__(self, lr, gamma):
        self.lr = _real("lr", lr)
        self.gamma = _real("gamma", gamma)

    def _at(self, t):
        return self.lr * self.gamma ** (t - 1)


class cosine(Schedule):
    """min_lr + (lr - min_lr) * (1 + cos(pi * (t-1) / total_steps)) / 2: torch's
    CosineAnnealingLR with T_max = total_steps, eta_min = min_lr.

    It reaches min_lr at t = total_steps + 1 and, like torch's, rises again
    after that (the cosine is periodic); train for at most total_steps steps.
    """

    _fields = ("lr", "total_steps", "min_lr")

    def __init__(self, lr, total_steps, min_lr=0.0):
        self.lr = _real("lr", lr)
        self.total_steps = _count("total_steps", total_steps)
        self.min_lr = _real("min_lr", min_lr)

    def _at(self, t):
        return self.min_lr + (self.lr - self.min_lr) * (1 + math.cos(math.pi * (t - 1) / self.total_steps)) / 2


class linear_warmup(Schedule):
    """schedule(t) * min(1, t / warmup_steps): a linear ramp over the first steps.

    The wrapped schedule runs on the same clock t (as torch's ChainedScheduler
    of LinearLR(start_factor=1/warmup_steps, total_iters=warmup_steps-1) and
    the other scheduler), so ``linear_warmup(cosine(lr, T), W)`` is one
    cosine over T steps whose first W steps are ramped.  A number is taken as
    a constant schedule.  The first step already has lr/warmup_steps, not 0.
    """

    _fields = ("schedule", "warmup_steps")

    def __init__(self, schedule_or_lr, warmup_steps):
        self.schedule = schedule_or_lr if callable(schedule_or_lr) else constant(schedule_or_lr)
        self.warmup_steps = _count("warmup_steps", warmup_steps)

    def _at(self, t):
        lr = self.schedule(t)
        return lr * t / self.warmup_steps if t < self.warmup_steps else lr


class inverse_sqrt(Schedule):
    """lr / sqrt(t): the decay of the Adam paper's logistic-regression experiment."""

    _fields = ("lr",)

    def __init__(self, lr):
        self.lr = _real("lr", lr)

    def _at(self, t):
        return self.lr / math.sqrt(t)
