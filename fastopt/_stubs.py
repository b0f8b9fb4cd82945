"""The type stubs of the step functions, written from the rule registry.

``python -m fastopt._stubs`` rewrites ``fastopt/steps.pyi`` and
``fastopt/reference.pyi``; tests/test_typing.py fails when the shipped stubs
differ from what this writes, and stubtest holds them against the runtime
functions.
"""

import math
import os
import sys

from fastopt import rules

_TYPES = {"nonneg": "_Real", "unit": "_Real", "real": "_Real", "bool": "bool", "cap": "_Real"}

_STEPS_HEADER = '''\
"""Types of the step functions (fastopt/steps.py), one per rule of fastopt.rules.

Written by ``python -m fastopt._stubs`` from the registry: do not edit.
Every buffer argument is one array or a list/tuple of arrays (one per tensor
of a model): float32, bfloat16 (ml_dtypes) or float16, each its own, or float64
throughout; the run time checks the dtypes.  Hyperparameters are keyword-only.
"""

from collections.abc import Sequence
from typing import Any, SupportsIndex, TypeAlias

import numpy as np
from numpy.typing import NDArray

# One tensor, or a whole model: the runtime takes a list or a tuple.
_ArrayOrList: TypeAlias = NDArray[Any] | Sequence[NDArray[Any]]
# Any real number; bool is refused at run time.
_Real: TypeAlias = float | np.floating[Any] | np.integer[Any]

'''

_REFERENCE_HEADER = '''\
"""The reference twins take exactly the fused functions' arguments: one signature, in steps.pyi.

Written by ``python -m fastopt._stubs`` from the registry: do not edit.
"""

'''


def _literal(value):
    """A default as a stub writes it: its repr, or ... where that is no literal (inf)."""
    return "..." if isinstance(value, float) and not math.isfinite(value) else repr(value)


def _step_stub(rule):
    lines = [f"def {rule.function_name}("]
    lines += [f"    {name}: _ArrayOrList," for name in ("param", "grad")]
    lines += [f"    {b.name}: _ArrayOrList," for b in rule.required_state]
    lines.append("    *,")
    lines += [f"    {b.name}: _ArrayOrList | None = None," for b in rule.optional_state]
    lines.append("    param_copy: _ArrayOrList | None = None,")
    if rule.takes_step:
        lines.append("    step: SupportsIndex,")
    for h in rule.hyper:
        default = "" if h.default is rules.REQUIRED else f" = {_literal(h.default)}"
        lines.append(f"    {h.name}: {_TYPES[h.check]}{default},")
    lines.append("    stochastic_rounding: bool = False,")
    lines.append("    seed: SupportsIndex = 0,")
    lines.append("    grad_scale: _Real = 1.0,")
    lines.append("    num_threads: SupportsIndex | None = None,")
    lines.append(") -> None: ...")
    return "\n".join(lines) + "\n"


def _pass_stub(p):
    lines = [f"def {p.function_name}(", "    param: _ArrayOrList,", f"    {p.reads}: _ArrayOrList,", "    *,",
             "    param_copy: _ArrayOrList | None = None,"]
    lines += [f"    {h.name}: {_TYPES[h.check]} = {h.default!r}," for h in p.hyper]
    lines.append("    num_threads: SupportsIndex | None = None,")
    lines.append(") -> None: ...")
    return "\n".join(lines) + "\n"


def steps_stub():
    """The text of fastopt/steps.pyi."""
    body = "".join(_step_stub(rule) for rule in rules.RULES.values())
    body += "".join(_pass_stub(p) for p in rules.PASSES.values())
    ceiling = ("def ceiling_step(\n    param: _ArrayOrList,\n    grad: _ArrayOrList,\n"
               "    *state: _ArrayOrList,\n    param_copy: _ArrayOrList | None = None,\n"
               "    num_threads: SupportsIndex | None = None,\n"
               ") -> None: ...\n")
    return (_STEPS_HEADER + "__all__ = [\n"
            + "".join(f'    "{n}",\n' for n in rules.STEP_FUNCTIONS + rules.PASS_FUNCTIONS)
            + "]\n\n" + body + ceiling)


# The reference's formulas that are not step functions: per-step scalars a caller keeps.
_REFERENCE_HELPERS = '''
def nadam_momentum(step: int, beta1: float, momentum_decay: float) -> float: ...
def adafactor_scalars(step: int, lr: float, beta2_decay: float,
                      weight_decay: float) -> tuple[float, float, float]: ...
def quantize(x: ArrayLike, signed: bool = True, block_size: SupportsIndex = 256) -> QuantizedState: ...
def dequantize(state: QuantizedState) -> NDArray[np.float32]: ...
'''
# the twins of fastopt.adafactor_step (fastopt/factored.py: its state is not the param's shape) and of
# fastopt.quantize, beside the step functions
_REFERENCE_EXTRA_NAMES = ("adafactor_step", "quantize")


def reference_stub():
    """The text of fastopt/reference.pyi."""
    names = rules.STEP_FUNCTIONS + rules.PASS_FUNCTIONS
    imports = ("from typing import SupportsIndex\n\nimport numpy as np\nfrom numpy.typing import ArrayLike, NDArray\n\n"
               "from fastopt.quantized import QuantizedState\n")
    imports += "".join(f"from fastopt.steps import {n} as {n}\n" for n in names)
    imports += "from fastopt.factored import adafactor_step as adafactor_step\n"
    return (_REFERENCE_HEADER + imports + "\n__all__ = [\n"
            + "".join(f'    "{n}",\n' for n in names + _REFERENCE_EXTRA_NAMES) + "]\n" + _REFERENCE_HELPERS)


STUBS = {"steps.pyi": steps_stub, "reference.pyi": reference_stub}


def main(argv):
    package = os.path.dirname(os.path.abspath(__file__))
    for name, make in STUBS.items():
        with open(os.path.join(package, name), "w") as f:
            f.write(make())
        print(f"wrote fastopt/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
