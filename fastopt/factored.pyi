"""Types of fastopt/factored.py: Adafactor's step function and its checks."""

from collections.abc import Sequence
from typing import Any, SupportsIndex, TypeAlias

import numpy as np
from numpy.typing import NDArray

_ArrayOrList: TypeAlias = NDArray[Any] | Sequence[NDArray[Any]]
_MaybeArrayOrList: TypeAlias = NDArray[Any] | Sequence[NDArray[Any] | None] | None
_Real: TypeAlias = float | np.floating[Any] | np.integer[Any]

__all__ = ["adafactor_step"]

SIXTEEN_BIT: tuple[np.dtype[Any], ...]
DTYPES: tuple[np.dtype[Any], ...]

def factor_shapes(shape: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]: ...
def check_tensors(what: str, param: _ArrayOrList, grad: _ArrayOrList, row_var: _MaybeArrayOrList,
                  col_var: _MaybeArrayOrList, variance: _MaybeArrayOrList,
                  eps1: float | None, param_copy: _MaybeArrayOrList = None,
                  stochastic: bool = False) -> list[tuple[Any, ...]]: ...
def check_rounding(stochastic_rounding: Any, seed: Any) -> int | None: ...
def check_hyperparameters(what: str, step: Any, lr: Any, beta2_decay: Any, eps1: Any, eps2: Any, d: Any,
                          weight_decay: Any, maximize: Any) -> tuple[Any, ...]: ...
def run(calls: list[tuple[Any, ...]], grad_scale: float, num_threads: SupportsIndex | None = None,
        backend: str = "fastopt") -> None: ...
def adafactor_step(
    param: _ArrayOrList,
    grad: _ArrayOrList,
    row_var: _MaybeArrayOrList,
    col_var: _MaybeArrayOrList,
    variance: _MaybeArrayOrList,
    *,
    param_copy: _MaybeArrayOrList = None,
    step: SupportsIndex,
    lr: _Real = 0.01,
    beta2_decay: _Real = -0.8,
    eps1: _Real | None = None,
    eps2: _Real = 0.001,
    d: _Real = 1.0,
    weight_decay: _Real = 0.0,
    maximize: bool = False,
    stochastic_rounding: bool = False,
    seed: SupportsIndex = 0,
    grad_scale: _Real = 1.0,
    num_threads: SupportsIndex | None = None,
) -> None: ...
