"""The optimizer rules as benchmarked: each a fastopt function and its hyperparameters.

``Rule`` and ``RULES`` stay together here: everything else in fastopt.bench
reads a rule only through the attributes of ``Rule``.
"""

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Rule:
    """One optimizer configuration: a fastopt function and its hyperparameters."""

    name: str
    function: str                   # in fastopt and in fastopt.reference
    states: tuple = ()              # state buffers passed by position
    keyword_states: tuple = ()      # state buffers passed by keyword
    hyper: dict = field(default_factory=dict)
    uses_step: bool = False
    torch_optimizer: str = ""       # class in torch.optim
    optim_optimizer: str = ""       # class in fastopt.optim

    @property
    def state_names(self):
        return self.states + self.keyword_states

    @property
    def n_state(self):
        return len(self.state_names)

    def bytes_per_param(self, dtype):
        """Read param, grad and every state buffer; write param and every state buffer."""
        return np.dtype(dtype).itemsize * (3 + 2 * self.n_state)

    def torch_kwargs(self):
        """The hyperparameters in torch.optim's names."""
        kwargs = dict(self.hyper)
        if "beta1" in kwargs:
            kwargs["betas"] = (kwargs.pop("beta1"), kwargs.pop("beta2"))
        if "beta" in kwargs:
            # the lecture's EMA momentum v <- b v + (1-b) g is SGD with dampening = momentum
            kwargs["momentum"] = kwargs["dampening"] = kwargs.pop("beta")
        return kwargs

    def optim_kwargs(self):
        """The hyperparameters in fastopt.optim's names: torch.optim's, but for
        fastopt.optim.Momentum, which takes the lecture's EMA momentum as beta."""
        return dict(self.hyper) if self.optim_optimizer == "Momentum" else self.torch_kwargs()


_ADAM_HYPER = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)
_ADAM_STATES = ("exp_avg", "exp_avg_sq")

RULES = {rule.name: rule for rule in [
    Rule("sgd", "sgd_step", hyper=dict(lr=1e-3), torch_optimizer="SGD", optim_optimizer="SGD"),
    Rule("momentum", "momentum_step", ("velocity",), hyper=dict(lr=1e-3, beta=0.9),
         torch_optimizer="SGD", optim_optimizer="Momentum"),
    Rule("sgd_momentum", "sgd_momentum_step", ("momentum_buffer",),
         hyper=dict(lr=1e-3, momentum=0.9), uses_step=True, torch_optimizer="SGD", optim_optimizer="SGD"),
    Rule("nesterov", "sgd_momentum_step", ("momentum_buffer",),
         hyper=dict(lr=1e-3, momentum=0.9, nesterov=True), uses_step=True, torch_optimizer="SGD",
         optim_optimizer="SGD"),
    Rule("rmsprop", "rmsprop_step", ("square_avg",), hyper=dict(lr=1e-2, alpha=0.99, eps=1e-8),
         torch_optimizer="RMSprop", optim_optimizer="RMSprop"),
    Rule("rmsprop_centered", "rmsprop_step", ("square_avg",), ("grad_avg", "momentum_buffer"),
         hyper=dict(lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.9, centered=True),
         torch_optimizer="RMSprop", optim_optimizer="RMSprop"),
    Rule("adagrad", "adagrad_step", ("state_sum",), hyper=dict(lr=1e-2, eps=1e-10),
         uses_step=True, torch_optimizer="Adagrad", optim_optimizer="Adagrad"),
    Rule("adam", "adam_step", _ADAM_STATES, hyper=_ADAM_HYPER, uses_step=True,
         torch_optimizer="Adam", optim_optimizer="Adam"),
    Rule("amsgrad", "adam_step", _ADAM_STATES, ("max_exp_avg_sq",),
         hyper=dict(_ADAM_HYPER, amsgrad=True), uses_step=True, torch_optimizer="Adam",
         optim_optimizer="Adam"),
    Rule("adamw", "adamw_step", _ADAM_STATES, hyper=dict(_ADAM_HYPER, weight_decay=1e-2),
         uses_step=True, torch_optimizer="AdamW", optim_optimizer="AdamW"),
]}
