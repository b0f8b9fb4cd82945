"""The demo's methods: fastopt.optim optimizers under the lecture's names.

A :class:`Method` names an optimizer class of :mod:`fastopt.optim` and the
arguments it is built with; :func:`make_optimizer` builds it over a list of
parameter arrays, so a whole model is one fused call per step.  The methods
are the registry's (:mod:`fastopt.rules`): every rule with an optimizer
class, plus plain gradient descent and Nesterov momentum from ``optim.SGD``,
and Adafactor, whose factored state is a class of its own (``optim.Adafactor``).
"""

from dataclasses import dataclass, field
from types import MappingProxyType

from fastopt import optim, rules


@dataclass(frozen=True)
class Method:
    label: str                        # the name in tables and legends
    optimizer: str                    # the class in fastopt.optim
    hyper: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))  # its arguments

    def with_hyper(self, **hyper):
        """This method with some arguments changed (lr, momentum, weight_decay, num_threads, ...)."""
        return Method(self.label, self.optimizer, MappingProxyType({**self.hyper, **hyper}))


def _methods():
    methods = {"GD": Method("GD", "SGD")}
    for rule in rules.RULES.values():
        if rule.optim is not None:
            methods[rule.optim.name] = Method(rule.optim.name, rule.optim.name)
    methods["Adafactor"] = Method("Adafactor", "Adafactor")
    methods["Nesterov"] = Method("SGD Nesterov", "SGD", MappingProxyType({"momentum": 0.9, "nesterov": True}))
    return methods


# The lecture's methods, with torch.optim's defaults where torch has them.
METHODS = _methods()


def method(name, **hyper):
    """METHODS[name] with the given arguments (lr, weight_decay, ...) set."""
    return METHODS[name].with_hyper(**hyper)


def make_optimizer(method, params, *, backend="fastopt"):
    """The method's optimizer over ``params`` (a list of arrays), stepping with the fused
    kernels or, with ``backend="reference"``, with their NumPy twins (same results)."""
    optimizer = getattr(optim, method.optimizer)(list(params), **method.hyper, backend=backend)
    if hasattr(optimizer, "train"):  # Schedule-Free: the demo's loops train, and read the params as y
        optimizer.train()
    return optimizer

