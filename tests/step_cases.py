"""The step functions as data, for tests that run over all of them, made from the rule registry.

For each rule of :mod:`fastopt.rules`: the state buffers after (param, grad),
which are optional (and the hyperparameter that turns each on), whether it
takes ``step``, and hyperparameter sets that cover every code path of its
kernel: the plain call, each variant, each switch and optional buffer, each
example value, every hyperparameter at the low end of its range, and the
general gradient path (maximize, weight decay, grad_scale) with everything on.
A rule added to the registry is tested by every test that uses these.
"""

import zlib

import numpy as np

import fastopt
from fastopt import reference
from fastopt import rules as registry


def stable_seed(*parts):
    """A seed from values' text, the same in every process (hash() of a str is not)."""
    return zlib.crc32(repr(parts).encode())


def _hyper_sets(rule):
    required = {h.name: h.example for h in rule.hyper if h.default is registry.REQUIRED}
    sets = [dict(required)]
    sets += [dict(required, **variant) for variant in rule.variants.values()]
    switches = {}
    for h in rule.hyper:
        if h.is_switch and h.name != "maximize":
            switches[h.name] = True
    for b in rule.optional_state:
        enabler = rule.hyper_named(b.enabled_by)
        switches[enabler.name] = True if enabler.is_switch else enabler.example
    sets += [dict(required, **{name: value}) for name, value in switches.items()]
    sets += [dict(required, **{h.name: h.example}) for h in rule.hyper
             if h.example is not None and h.default is not registry.REQUIRED and not h.is_switch
             and h.name not in switches]
    general = dict(maximize=True, grad_scale=0.5)
    if any(h.name == "weight_decay" for h in rule.hyper):
        general["weight_decay"] = rule.hyper_named("weight_decay").example or 0.1
    sets.append(dict(required, **general))
    sets.append(dict(required, **switches, **general))
    sets += [dict(required, **{h.name: 0.0}) for h in rule.hyper
             if h.check in ("nonneg", "unit") and h.name != "weight_decay"]
    unique = []
    for hypers in sets:
        if hypers not in unique:
            unique.append(hypers)
    return unique


RULES = {
    rule.function_name: {
        "state": [b.name for b in rule.required_state],
        "optional": {b.name: b.enabled_by for b in rule.optional_state},
        "hypers": _hyper_sets(rule),
    }
    for rule in registry.RULES.values()
}

STEP_RULES = {rule.function_name for rule in registry.RULES.values() if rule.takes_step}

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

    State starts positive (a rule may take its square root), so the first
    steps already exercise the whole formula; grad_avg starts small, so that
    centered RMSprop's s - a² stays positive.
    """
    positional, keyword = state_names(name, hypers)

    def draw(positive=False):
        x = rng.standard_normal(shape)
        if positive:
            x = np.abs(x) + 0.1
        return np.asarray(x, dtype=dtype, order=order)

    buffers = {"param": draw(), "grad": draw()}
    for buf in positional + keyword:
        buffers[buf] = draw(positive=True)
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
           "reference", "fastopt", "stable_seed", "state_names", "tolerance"]
