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

__all__ = [
    "sgd_step",
    "momentum_step",
    "sgd_momentum_step",
    "rmsprop_step",
    "adagrad_step",
    "adam_step",
    "adamw_step",
    "lion_step",
]

def sgd_step(
    param: _ArrayOrList,
    grad: _ArrayOrList,
    *,
    param_copy: _ArrayOrList | None = None,
    lr: _Real,
    weight_decay: _Real = 0.0,
    maximize: bool = False,
    stochastic_rounding: bool = False,
    seed: SupportsIndex = 0,
    grad_scale: _Real = 1.0,
    num_threads: SupportsIndex | None = None,
) -> None: ...
def momentum_step(
    param: _ArrayOrList,
    grad: _ArrayOrList,
    velocity: _ArrayOrList,
    *,
    param_copy: _ArrayOrList | None = None,
    lr: _Real,
    beta: _Real = 0.9,
    weight_decay: _Real = 0.0,
    maximize: bool = False,
    stochastic_rounding: bool = False,
    seed: SupportsIndex = 0,
    grad_scale: _Real = 1.0,
    num_threads: SupportsIndex | None = None,
) -> None: ...
def sgd_momentum_step(
    param: _ArrayOrList,
    grad: _ArrayOrList,
    momentum_buffer: _ArrayOrList,
    *,
    param_copy: _ArrayOrList | None = None,
    step: SupportsIndex,
    lr: _Real,
    momentum: _Real,
    dampening: _Real = 0.0,
    nesterov: bool = False,
    weight_decay: _Real = 0.0,
    maximize: bool = False,
    stochastic_rounding: bool = False,
    seed: SupportsIndex = 0,
    grad_scale: _Real = 1.0,
    num_threads: SupportsIndex | None = None,
) -> None: ...
def rmsprop_step(
    param: _ArrayOrList,
    grad: _ArrayOrList,
    square_avg: _ArrayOrList,
    *,
    grad_avg: _ArrayOrList | None = None,
    momentum_buffer: _ArrayOrList | None = None,
    param_copy: _ArrayOrList | None = None,
    lr: _Real = 0.01,
    alpha: _Real = 0.99,
    eps: _Real = 1e-08,
    weight_decay: _Real = 0.0,
    momentum: _Real = 0.0,
    centered: bool = False,
    maximize: bool = False,
    stochastic_rounding: bool = False,
    seed: SupportsIndex = 0,
    grad_scale: _Real = 1.0,
    num_threads: SupportsIndex | None = None,
) -> None: ...
def adagrad_step(
    param: _ArrayOrList,
    grad: _ArrayOrList,
    state_sum: _ArrayOrList,
    *,
    param_copy: _ArrayOrList | None = None,
    step: SupportsIndex,
    lr: _Real = 0.01,
    lr_decay: _Real = 0.0,
    eps: _Real = 1e-10,
    weight_decay: _Real = 0.0,
    maximize: bool = False,
    stochastic_rounding: bool = False,
    seed: SupportsIndex = 0,
    grad_scale: _Real = 1.0,
    num_threads: SupportsIndex | None = None,
) -> None: ...
def adam_step(
    param: _ArrayOrList,
    grad: _ArrayOrList,
    exp_avg: _ArrayOrList,
    exp_avg_sq: _ArrayOrList,
    *,
    max_exp_avg_sq: _ArrayOrList | None = None,
    param_copy: _ArrayOrList | None = None,
    step: SupportsIndex,
    lr: _Real = 0.001,
    beta1: _Real = 0.9,
    beta2: _Real = 0.999,
    eps: _Real = 1e-08,
    weight_decay: _Real = 0.0,
    amsgrad: bool = False,
    maximize: bool = False,
    stochastic_rounding: bool = False,
    seed: SupportsIndex = 0,
    grad_scale: _Real = 1.0,
    num_threads: SupportsIndex | None = None,
) -> None: ...
def adamw_step(
    param: _ArrayOrList,
    grad: _ArrayOrList,
    exp_avg: _ArrayOrList,
    exp_avg_sq: _ArrayOrList,
    *,
    max_exp_avg_sq: _ArrayOrList | None = None,
    param_copy: _ArrayOrList | None = None,
    step: SupportsIndex,
    lr: _Real = 0.001,
    beta1: _Real = 0.9,
    beta2: _Real = 0.999,
    eps: _Real = 1e-08,
    weight_decay: _Real = 0.01,
    amsgrad: bool = False,
    maximize: bool = False,
    stochastic_rounding: bool = False,
    seed: SupportsIndex = 0,
    grad_scale: _Real = 1.0,
    num_threads: SupportsIndex | None = None,
) -> None: ...
def lion_step(
    param: _ArrayOrList,
    grad: _ArrayOrList,
    exp_avg: _ArrayOrList,
    *,
    param_copy: _ArrayOrList | None = None,
    lr: _Real = 0.0001,
    beta1: _Real = 0.9,
    beta2: _Real = 0.99,
    weight_decay: _Real = 0.001,
    maximize: bool = False,
    stochastic_rounding: bool = False,
    seed: SupportsIndex = 0,
    grad_scale: _Real = 1.0,
    num_threads: SupportsIndex | None = None,
) -> None: ...
def ceiling_step(
    param: _ArrayOrList,
    grad: _ArrayOrList,
    *state: _ArrayOrList,
    param_copy: _ArrayOrList | None = None,
    num_threads: SupportsIndex | None = None,
) -> None: ...
