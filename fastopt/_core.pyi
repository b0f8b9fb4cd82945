"""Types of the compiled module fastopt._core (fastopt/_core.pyx).

The step functions themselves are in fastopt/steps.pyi, written from the
rule registry.  tests/test_typing.py holds these signatures against the
compiled module.
"""

from collections.abc import Sequence
from typing import Any, TypeAlias, TypedDict, TypeVar, SupportsIndex

import numpy as np
from numpy.typing import NDArray
from typing_extensions import disjoint_base

_F = TypeVar("_F", np.float32, np.float64)

# One tensor, or a whole model: the runtime takes a list or a tuple.
_ArrayOrList: TypeAlias = NDArray[_F] | Sequence[NDArray[_F]]
# Any real number; bool is refused at run time.
_Real: TypeAlias = float | np.floating[Any] | np.integer[Any]

class _BuildInfo(TypedDict):
    compiler: str
    compile_args: str
    openmp: bool

@disjoint_base
class RuleSpec:
    """A registry rule compiled for the boundary."""

    name: str
    function_name: str
    buffer_names: tuple[str, ...]
    hyper_names: tuple[str, ...]
    takes_step: bool
    def __init__(self, rule: Any) -> None: ...

@disjoint_base
class Plan:
    """Validated calls of step kernels, ready to run once."""

    @property
    def num_tensors(self) -> int: ...
    @property
    def num_elements(self) -> int: ...
    def norm(self, norm_type: _Real = 2.0) -> float: ...
    def all_finite(self) -> bool: ...
    def run(self, grad_scale: _Real = 1.0) -> None: ...

# A call of a plan: (spec, buffers in the spec's order, hyperparameter values, step[, rounding seed[, slot names]])
_Call: TypeAlias = tuple[Any, ...]

RULE_IDS: dict[str, int]

def plan(
    calls: list[_Call], num_threads: SupportsIndex | None = None, what: str = "step", model_labels: bool = True
) -> Plan: ...
def step(
    spec: RuleSpec,
    buffers: tuple[Any, ...],
    values: tuple[Any, ...],
    step: SupportsIndex | None,
    stochastic_rounding: bool,
    seed: SupportsIndex,
    grad_scale: _Real,
    num_threads: SupportsIndex | None,
) -> None: ...
def ceiling_step(
    param: _ArrayOrList[_F],
    grad: _ArrayOrList[_F],
    *state: _ArrayOrList[_F],
    param_copy: _ArrayOrList[Any] | None = None,
    num_threads: SupportsIndex | None = None,
) -> None: ...
def find_overlap(arrays: list[NDArray[Any]]) -> tuple[int, int] | None: ...
def factored_run(
    tensors: list[tuple[Any, ...]],
    weight: float,
    rho: float,
    eps2: float,
    d: float,
    decay: float,
    grad_scale: float,
    maximize: bool,
    num_threads: SupportsIndex | None = None,
    seed: int | None = None,
    step: int = 0,
) -> None: ...
def check_value(check: str, name: str, x: Any) -> float | bool: ...
def check_count(name: str, x: Any, low: int = 1, high: int = ...) -> int: ...

# threads
def get_num_threads() -> int: ...
def set_num_threads(n: SupportsIndex | None) -> None: ...
def openmp_library() -> str: ...
def _openmp_probe(n: SupportsIndex) -> list[int]: ...

# SIMD dispatch and build facts
def simd_levels() -> dict[str, bool]: ...
def get_simd_level() -> str: ...
def set_simd_level(name: str | None = None) -> None: ...
def build_info() -> _BuildInfo: ...

# 8-bit block-quantized state (fastopt.quantized.QuantizedState)
def quantize(x: NDArray[Any], is_signed: bool, block_size: SupportsIndex) -> Any: ...
def dequantize(state: Any) -> NDArray[np.float32]: ...

# The gradient-norm pass (fastopt/_norms.pxi), used by fastopt.clip and fastopt.optim.
def total_norm(
    grads: _ArrayOrList[Any], norm_type: _Real = 2.0, num_threads: SupportsIndex | None = None
) -> float: ...
def all_finite(grads: _ArrayOrList[Any], num_threads: SupportsIndex | None = None) -> bool: ...
def as_array_list(grads: _ArrayOrList[Any], what: str = "grads") -> list[NDArray[Any]]: ...
def norm_kind(norm_type: _Real) -> tuple[int, float]: ...

# A view of memory another object owns, in a template's layout (fastopt/_views.pxi).
def view_like(template: NDArray[Any], address: SupportsIndex, owner: object) -> NDArray[Any]: ...

# The stretch of one-thread calls after a region in which a thread sat out (fastopt/_threads.pxi).
def _contention() -> tuple[int, int]: ...
def _record_region(every_thread_worked: bool) -> None: ...
