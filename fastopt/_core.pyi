"""Types of the compiled module fastopt._core (fastopt/_core.pyx).

Every buffer argument is one array or a list/tuple of arrays (one per tensor
of a model), float32 or float64; all buffers of one call share one dtype,
which the type variable ``_F`` expresses.  Hyperparameters are keyword-only,
with torch.optim's names and defaults.  tests/test_typing.py holds these
signatures against the compiled functions.
"""

from collections.abc import Sequence
from typing import Any, TypeAlias, TypedDict, TypeVar, SupportsIndex

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)

# One tensor, or a whole model: the runtime takes a list or a tuple.
_ArrayOrList: TypeAlias = NDArray[_F] | Sequence[NDArray[_F]]
# Any real number; bool is refused at run time.
_Real: TypeAlias = float | np.floating[Any] | np.integer[Any]

class _BuildInfo(TypedDict):
    compiler: str
    compile_args: str
    openmp: bool

def sgd_step(
    param: _ArrayOrList[_F],
    grad: _ArrayOrList[_F],
    *,
    lr: _Real,
    weight_decay: _Real = 0.0,
    maximize: bool = False,
    grad_scale: _Real = 1.0,
    num_threads: SupportsIndex | None = None,
) -> None: ...
def momentum_step(
    param: _ArrayOrList[_F],
    grad: _ArrayOrList[_F],
    velocity: _ArrayOrList[_F],
    *,
    lr: _Real,
    beta: _Real = 0.9,
    weight_decay: _Real = 0.0,
    maximize: bool = False,
    grad_scale: _Real = 1.0,
    num_threads: SupportsIndex | None = None,
) -> None: ...
def sgd_momentum_step(
    param: _ArrayOrList[_F],
    grad: _ArrayOrList[_F],
    momentum_buffer: _ArrayOrList[_F],
    *,
    step: SupportsIndex,
    lr: _Real,
    momentum: _Real,
    dampening: _Real = 0.0,
    nesterov: bool = False,
    weight_decay: _Real = 0.0,
    maximize: bool = False,
    grad_scale: _Real = 1.0,
    num_threads: SupportsIndex | None = None,
) -> None: ...
def rmsprop_step(
    param: _ArrayOrList[_F],
    grad: _ArrayOrList[_F],
    square_avg: _ArrayOrList[_F],
    *,
    grad_avg: _ArrayOrList[_F] | None = None,
    momentum_buffer: _ArrayOrList[_F] | None = None,
    lr: _Real = 0.01,
    alpha: _Real = 0.99,
    eps: _Real = 1e-08,
    weight_decay: _Real = 0.0,
    momentum: _Real = 0.0,
    centered: bool = False,
    maximize: bool = False,
    grad_scale: _Real = 1.0,
    num_threads: SupportsIndex | None = None,
) -> None: ...
def adagrad_step(
    param: _ArrayOrList[_F],
    grad: _ArrayOrList[_F],
    state_sum: _ArrayOrList[_F],
    *,
    step: SupportsIndex,
    lr: _Real = 0.01,
    lr_decay: _Real = 0.0,
    eps: _Real = 1e-10,
    weight_decay: _Real = 0.0,
    maximize: bool = False,
    grad_scale: _Real = 1.0,
    num_threads: SupportsIndex | None = None,
) -> None: ...
def adam_step(
    param: _ArrayOrList[_F],
    grad: _ArrayOrList[_F],
    exp_avg: _ArrayOrList[_F],
    exp_avg_sq: _ArrayOrList[_F],
    *,
    max_exp_avg_sq: _ArrayOrList[_F] | None = None,
    step: SupportsIndex,
    lr: _Real = 0.001,
    beta1: _Real = 0.9,
    beta2: _Real = 0.999,
    eps: _Real = 1e-08,
    weight_decay: _Real = 0.0,
    amsgrad: bool = False,
    maximize: bool = False,
    grad_scale: _Real = 1.0,
    num_threads: SupportsIndex | None = None,
) -> None: ...
def adamw_step(
    param: _ArrayOrList[_F],
    grad: _ArrayOrList[_F],
    exp_avg: _ArrayOrList[_F],
    exp_avg_sq: _ArrayOrList[_F],
    *,
    max_exp_avg_sq: _ArrayOrList[_F] | None = None,
    step: SupportsIndex,
    lr: _Real = 0.001,
    beta1: _Real = 0.9,
    beta2: _Real = 0.999,
    eps: _Real = 1e-08,
    weight_decay: _Real = 0.01,
    amsgrad: bool = False,
    maximize: bool = False,
    grad_scale: _Real = 1.0,
    num_threads: SupportsIndex | None = None,
) -> None: ...
def ceiling_step(
    param: _ArrayOrList[_F],
    grad: _ArrayOrList[_F],
    *state: _ArrayOrList[_F],
    num_threads: SupportsIndex | None = None,
) -> None: ...

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

# The gradient-norm pass (fastopt/_norms.pxi), used by fastopt.clip and fastopt.optim.
def total_norm(
    grads: _ArrayOrList[Any], norm_type: _Real = 2.0, num_threads: SupportsIndex | None = None
) -> float: ...
def all_finite(grads: _ArrayOrList[Any], num_threads: SupportsIndex | None = None) -> bool: ...
def as_array_list(grads: _ArrayOrList[Any], what: str = "grads") -> list[NDArray[Any]]: ...
def norm_kind(norm_type: _Real) -> tuple[int, float]: ...
def check_grads(params: list[NDArray[Any]], grads: Sequence[NDArray[Any]]) -> list[NDArray[Any]]: ...
