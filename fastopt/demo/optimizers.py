"""The demo's optimizers: one fused step call per update, with the state buffers beside it.

A :class:`Method` names a step function (the same name in :mod:`fastopt` and in
:mod:`fastopt.reference`), the state buffers it updates and its
hyperparameters; an :class:`Optimizer` holds those buffers and the step count
for a list of parameter arrays, and updates them all with one call.
"""

from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

import fastopt
from fastopt import schedules


@dataclass(frozen=True)
class Method:
    label: str                        # the name in tables and legends
    step_function: str                # name in fastopt and fastopt.reference
    state: tuple = ()                 # state buffers, passed positionally after grad
    hyper: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    counts_steps: bool = False        # the function takes step=t (bias correction, step 1)

    def with_hyper(self, **hyper):
        """This method with some hyperparameters changed (lr, momentum, ...)."""
        return Method(self.label, self.step_function, self.state,
                      MappingProxyType({**self.hyper, **hyper}), self.counts_steps)


def _method(label, step_function, state=(), counts_steps=False, **hyper):
    return Method(label, step_function, tuple(state), MappingProxyType(hyper), counts_steps)


# The lecture's methods, with torch.optim's defaults where torch has them.
METHODS = {
    "GD": _method("GD", "sgd_step"),
    "Momentum": _method("Momentum", "momentum_step", ["velocity"], beta=0.9),
    "Nesterov": _method("SGD Nesterov", "sgd_momentum_step", ["momentum_buffer"], counts_steps=True,
                        momentum=0.9, nesterov=True),
    "Adagrad": _method("Adagrad", "adagrad_step", ["state_sum"], counts_steps=True),
    "RMSprop": _method("RMSprop", "rmsprop_step", ["square_avg"], alpha=0.99, eps=1e-8),
    "Adam": _method("Adam", "adam_step", ["exp_avg", "exp_avg_sq"], counts_steps=True),
}


def method(name, **hyper):
    """METHODS[name] with the given hyperparameters (lr, weight_decay, ...) set."""
    return METHODS[name].with_hyper(**hyper)


class Optimizer:
    """State buffers and step count of one method over a list of parameter arrays.

    ``step(grads)`` updates every array in place with one call of the method's
    step function from ``backend`` (:mod:`fastopt`, or :mod:`fastopt.reference`
    to compare), so a whole model is one fused call.  ``lr_schedule(t)``, if
    given, multiplies the learning rate at step t = 1, 2, ...
    """

    def __init__(self, method, params, *, backend=fastopt, lr_schedule=None):
        self.method = method
        self.params = list(params)
        self.state = [[np.zeros_like(p) for p in self.params] for _ in method.state]
        self.t = 0
        self.lr_schedule = lr_schedule
        self._step = getattr(backend, method.step_function)

    def step(self, grads):
        self.t += 1
        hyper = dict(self.method.hyper)
        if self.lr_schedule is not None:
            hyper["lr"] = hyper["lr"] * self.lr_schedule(self.t)
        if self.method.counts_steps:
            hyper["step"] = self.t
        self._step(self.params, list(grads), *self.state, **hyper)


# The step size α/√t of Kingma & Ba's logistic regression experiment, as a
# factor of α: the training API's schedule with α = 1.
inverse_sqrt_schedule = schedules.inverse_sqrt(1.0)
