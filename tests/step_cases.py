"""The step functions as data, for tests that run over all of them.

For each rule: the state buffers after (param, grad), which of them are keyword
arguments, and hyperparameter sets that cover every code path of its kernel
(variants, edge values, maximize, weight decay, grad_scale).
"""

import numpy as np

import fastopt
from fastopt import reference

RULES = {
    "sgd_step": {
        "state": [],
        "hypers": [
            dict(lr=0.1),
            dict(lr=0.0),
            dict(lr=0.05, weight_decay=0.1, maximize=True),
            dict(lr=0.05, grad_scale=0.25),
        ],
    },
    "momentum_step": {
        "state": ["velocity"],
        "hypers": [
            dict(lr=0.1),
            dict(lr=0.1, beta=0.0),
            dict(lr=0.01, beta=0.5, weight_decay=1e-3, maximize=True, grad_scale=0.5),
        ],
    },
    "sgd_momentum_step": {
        "state": ["momentum_buffer"],
        "hypers": [
            dict(lr=0.1, momentum=0.9),
            dict(lr=0.1, momentum=0.9, nesterov=True),
            dict(lr=0.05, momentum=0.5, dampening=0.3, weight_decay=0.01),
            dict(lr=0.05, momentum=0.0),
            dict(lr=0.05, momentum=0.99, nesterov=True, maximize=True, grad_scale=2.0),
        ],
    },
    "rmsprop_step": {
        "state": ["square_avg"],
        "optional": {"grad_avg": "centered", "momentum_buffer": "momentum"},
        "hypers": [
            dict(),
            dict(lr=0.01, alpha=0.9, eps=1e-6, weight_decay=0.1),
            dict(lr=0.01, centered=True),
            dict(lr=0.01, momentum=0.9),
            dict(lr=0.01, centered=True, momentum=0.5, maximize=True, grad_scale=0.1),
            dict(lr=0.01, alpha=0.0),
        ],
    },
    "adagrad_step": {
        "state": ["state_sum"],
        "hypers": [
            dict(),
            dict(lr=0.1, lr_decay=0.01),
            dict(lr=0.1, eps=0.0, weight_decay=0.05, maximize=True, grad_scale=3.0),
        ],
    },
    "adam_step": {
        "state": ["exp_avg", "exp_avg_sq"],
        "optional": {"max_exp_avg_sq": "amsgrad"},
        "hypers": [
            dict(),
            dict(lr=1e-2, beta1=0.0, beta2=0.0),
            dict(lr=1e-2, weight_decay=0.1, amsgrad=True),
            dict(lr=1e-3, beta1=0.5, beta2=0.9, eps=0.0, maximize=True),
            dict(lr=3e-3, amsgrad=True, grad_scale=0.3),
        ],
    },
    "adamw_step": {
        "state": ["exp_avg", "exp_avg_sq"],
        "optional": {"max_exp_avg_sq": "amsgrad"},
        "hypers": [
            dict(),
            dict(lr=1e-2, weight_decay=0.0),
            dict(lr=1e-2, weight_decay=0.5, amsgrad=True, maximize=True),
            dict(lr=1e-2, grad_scale=0.5),
        ],
    },
}

STEP_RULES = {"sgd_momentum_step", "adagrad_step", "adam_step", "adamw_step"}

CASES = [(name, i) for name, rule in RULES.items() for i in range(len(rule["hypers"]))]


def case_id(case):
    name, i = case
    return f"{name}-{i}"


def state_names(name, hypers):
    """Positional state names, and the keyword state buffers these hypers need."""
    rule = RULES[name]
    needed = [buf for buf, switch in rule.get("optional", {}).items() if hypers.get(switch)]
    return rule["state"], needed


def make_buffers(name, hypers, shape, dtype, rng, order="C"):
    """param, grad and every state buffer the call needs, as a dict name -> array.

    State starts positive where a rule takes its square root, so the first
    steps already exercise the whole formula.
    """
    positional, keyword = state_names(name, hypers)

    def draw(positive=False):
        x = rng.standard_normal(shape)
        if positive:
            x = np.abs(x) + 0.1
        return np.asarray(x, dtype=dtype, order=order)

    buffers = {"param": draw(), "grad": draw()}
    for buf in positional + keyword:
        buffers[buf] = draw(positive=buf in ("exp_avg_sq", "square_avg", "state_sum", "max_exp_avg_sq"))
    if "grad_avg" in buffers:  # keeps s - a^2 >= 0 in centered RMSprop
        buffers["grad_avg"] *= dtype(0.1)
    return buffers


def call(module, name, buffers, hypers, step=1, **extra):
    """Run one step of `name` from `module` (fastopt or fastopt.reference)."""
    positional, keyword = state_names(name, hypers)
    args = [buffers["param"], buffers["grad"]] + [buffers[b] for b in positional]
    kwargs = dict(hypers, **{b: buffers[b] for b in keyword}, **extra)
    if name in STEP_RULES:
        kwargs["step"] = step
    getattr(module, name)(*args, **kwargs)


def copy_buffers(buffers):
    return {k: (v.copy(order="K") if isinstance(v, np.ndarray) else [a.copy(order="K") for a in v])
            for k, v in buffers.items()}


def tolerance(dtype):
    eps = np.finfo(dtype).eps
    return dict(rtol=8 * eps, atol=8 * eps, equal_nan=True)


__all__ = ["RULES", "CASES", "STEP_RULES", "call", "case_id", "copy_buffers", "make_buffers",
           "reference", "fastopt", "state_names", "tolerance"]
