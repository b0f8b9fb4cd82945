"""The step functions, one per rule of the registry (:mod:`fastopt.rules`), made from its entry.

Each is an ordinary Python function with the rule's signature::

    <rule>_step(param, grad, <required state>, *, <optional state>=None, param_copy=None,
                [step,] <hyperparameters>, stochastic_rounding=False, seed=0,
                grad_scale=1.0, num_threads=None)

that passes its arguments, in the rule's order, to ``fastopt._core.step``,
which checks everything before the first write and runs the kernel.  Each
gets the docstring of its NumPy twin in :mod:`fastopt.reference`, which holds
the formula.  Like ``dataclasses``, the functions are compiled from source
built here, so that ``inspect.signature``, ``help()`` and the type stubs see
the real parameters.
"""

from fastopt import _core, reference, rules

__all__ = list(rules.STEP_FUNCTIONS) + list(rules.PASS_FUNCTIONS)

# The compiled form of every rule and pass, for fastopt.optim's plans.
SPECS = {name: _core.RuleSpec(rule) for name, rule in rules.RULES.items()}
PASS_SPECS = {name: _core.RuleSpec(p) for name, p in rules.PASSES.items()}


def _tuple(names):
    return "(" + ", ".join(names) + ("," if names else "") + ")"


def signature_source(rule):
    """The parameter list of the rule's step function, as Python source (defaults by name)."""
    parameters = ["param", "grad"] + [b.name for b in rule.required_state]
    keyword_only = [f"{b.name}=None" for b in rule.optional_state] + ["param_copy=None"]
    if rule.takes_step:
        keyword_only.append("step")
    for h in rule.hyper:
        keyword_only.append(h.name if h.default is rules.REQUIRED else f"{h.name}=_default_{h.name}")
    keyword_only += [f"{name}=_default_{name}" for name, _ in rules.CALL_OPTIONS]
    return ", ".join(parameters + ["*"] + keyword_only)


def _make_step_function(rule):
    namespace = {"_step": _core.step, "_spec": SPECS[rule.name]}
    namespace.update({f"_default_{h.name}": h.default for h in rule.hyper if h.default is not rules.REQUIRED})
    namespace.update({f"_default_{name}": value for name, value in rules.CALL_OPTIONS})
    source = (f"def {rule.function_name}({signature_source(rule)}):\n"
              f"    _step(_spec, {_tuple(rule.buffer_names + ('param_copy',))}, "
              f"{_tuple([h.name for h in rule.hyper])}, {'step' if rule.takes_step else 'None'}, "
              f"stochastic_rounding, seed, grad_scale, num_threads)\n")
    exec(compile(source, f"<fastopt.steps: {rule.function_name}>", "exec"), namespace)
    function = namespace[rule.function_name]
    function.__module__ = "fastopt"
    twin = getattr(reference, rule.function_name)
    function.__doc__ = (twin.__doc__ or "") + (
        "\n    Fused, in place, OpenMP-parallel; buffers are ndarrays or lists of them."
        f"\n    Pure-NumPy twin: fastopt.reference.{rule.function_name}.\n")
    return function


def _make_pass_function(p):
    """A pass's function: param, the buffer it reads, then its hyperparameters and num_threads."""
    namespace = {"_step": _core.step, "_spec": PASS_SPECS[p.name]}
    namespace.update({f"_default_{h.name}": h.default for h in p.hyper})
    hyper = [h.name for h in p.hyper]
    source = (f"def {p.function_name}(param, {p.reads}, *, param_copy=None, "
              f"{''.join(f'{n}=_default_{n}, ' for n in hyper)}num_threads=None):\n"
              f"    _step(_spec, (param, {p.reads}, param_copy), {_tuple(hyper)}, None, False, 0, 1.0, "
              f"num_threads)\n")
    exec(compile(source, f"<fastopt.steps: {p.function_name}>", "exec"), namespace)
    function = namespace[p.function_name]
    function.__module__ = "fastopt"
    twin = getattr(reference, p.function_name)
    function.__doc__ = (twin.__doc__ or "") + (
        f"\n    Fused, in place (param; {p.reads} is only read), OpenMP-parallel; buffers are ndarrays or lists"
        f" of them.\n    param_copy: where param holds float32 master weights, their 16-bit copy, written"
        f" rounded to nearest.\n    Pure-NumPy twin: fastopt.reference.{p.function_name}.\n")
    return function


for _rule in rules.RULES.values():
    globals()[_rule.function_name] = _make_step_function(_rule)
for _pass in rules.PASSES.values():
    globals()[_pass.function_name] = _make_pass_function(_pass)
del _rule, _pass

ceiling_step = _core.ceiling_step
