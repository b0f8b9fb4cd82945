"""The optimizer rules as benchmarked: each a fastopt function and its hyperparameters.

``RULES`` is made from the rule registry (:mod:`fastopt.rules`): every rule
with the hyperparameters of a plain call, and each of its variants.
``Rule`` and ``RULES`` stay together here: everything else in fastopt.bench
reads a rule only through the attributes of ``Rule``.
"""

from dataclasses import dataclass, field

import numpy as np

from fastopt import rules as registry


@dataclass
class Rule:
    """One optimizer configuration: a fastopt function and its hyperparameters."""

    name: str
    function: str                   # in fastopt and in fastopt.reference
    states: tuple = ()              # state buffers passed by position
    keyword_states: tuple = ()      # state buffers passed by keyword
    hyper: dict = field(default_factory=dict)
    uses_step: bool = False
    torch_optimizer: str = ""       # class in torch.optim, or "package.Class" of a torch package
    optim_optimizer: str = ""       # class in fastopt.optim
    kept: tuple = ()                # hyperparameters the optimizers keep themselves (NAdam's mu_product)
    state_buffers: tuple = ()       # the registry's state buffers it uses (fastopt.rules.Buffer): 8-bit or not
    second_pass: bool = False       # LAMB: a second pass reads param and state again and writes param

    @property
    def state_names(self):
        return self.states + self.keyword_states

    @property
    def n_state(self):
        return len(self.state_names)

    def bytes_per_param(self, dtype):
        """Read param, grad and every state buffer; write param and every state buffer
        (with a second pass: read param and every state buffer again)."""
        second = 1 + self.n_state if self.second_pass else 0
        return np.dtype(dtype).itemsize * (3 + 2 * self.n_state + second)

    def torch_kwargs(self):
        """The hyperparameters in torch.optim's names (less those an optimizer keeps itself)."""
        kwargs = {name: value for name, value in self.hyper.items() if name not in self.kept}
        if "beta1" in kwargs:
            kwargs["betas"] = (kwargs.pop("beta1"), kwargs.pop("beta2"))
        if "beta" in kwargs:
            # the lecture's EMA momentum v <- b v + (1-b) g is SGD with dampening = momentum
            kwargs["momentum"] = kwargs["dampening"] = kwargs.pop("beta")
        return kwargs

    def optim_kwargs(self):
        """The hyperparameters in fastopt.optim's names: torch.optim's, but for
        fastopt.optim.Momentum, which takes the lecture's EMA momentum as beta."""
        if self.optim_optimizer == "Momentum":
            return {name: value for name, value in self.hyper.items() if name not in self.kept}
        return self.torch_kwargs()


# The torch implementation of a rule torch.optim does not have: the package it is anchored to.
TORCH_PACKAGES = {"schedule_free_adamw": "schedulefree.AdamWScheduleFree"}


def _configuration(rule, name, **overrides):
    hyper = rule.call_hyper(**overrides)
    used = rule.state_used(hyper)
    return Rule(
        name, rule.function_name,
        states=tuple(b.name for b in used if not b.optional),
        keyword_states=tuple(b.name for b in used if b.optional),
        hyper=hyper, uses_step=rule.takes_step,
        # torch has no EMA momentum: its SGD with dampening = momentum is the same after step 1
        torch_optimizer=rule.torch or ("SGD" if rule.name == "momentum" else TORCH_PACKAGES.get(rule.name, "")),
        optim_optimizer=rule.optim_class_name or "",
        kept=tuple(h.name for h in rule.hyper if h.kept_by_optimizer),
        state_buffers=tuple(used), second_pass=bool(rule.second_pass))


RULES = {}
for _rule in registry.RULES.values():
    RULES[_rule.name] = _configuration(_rule, _rule.name)
    for _variant, _overrides in _rule.variants.items():
        RULES[_variant] = _configuration(_rule, _variant, **_overrides)
del _rule
