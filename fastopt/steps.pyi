"""Types of the step functions (fastopt/steps.py), one per rule of fastopt.rules.

Written by ``python -m fastopt._stubs`` from the registry: do not edit.
Every buffer argument is one array or a list/tuple of arrays (one per tensor
of a model), float32 or float64; all buffers of one call share one dtype,
which the type variable ``_F`` expresses.  Hyperparameters are keyword-only.
"""

from collections.abc import Sequence
from typing import Any, SupportsIndex, TypeAlias, TypeVar

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)

# One tensor, or a whole model: the runtime takes a list or a tuple.
_ArrayOrList: TypeAlias = NDArray[_F] | Sequence[NDArray[_F]]
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
    "radam_step",
    "adamax_step",
    "nadam_step",
    "schedule_free_adamw_step",
    "schedule_free_eval",
    "schedule_free_train",
]

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
def lion_step(
    param: _ArrayOrList[_F],
    grad: _ArrayOrList[_F],
    exp_avg: _ArrayOrList[_F],
    *,
    lr: _Real = 0.0001,
    beta1: _Real = 0.9,
    beta2: _Real = 0.99,
    weight_decay: _Real = 0.001,
    maximize: bool = False,
    grad_scale: _Real = 1.0,
    num_threads: SupportsIndex | None = None,
) -> None: ...
def radam_step(
    param: _ArrayOrList[_F],
    grad: _ArrayOrList[_F],
    exp_avg: _ArrayOrList[_F],
    exp_avg_sq: _ArrayOrList[_F],
    *,
    step: SupportsIndex,
    lr: _Real = 0.001,
    beta1: _Real = 0.9,
    beta2: _Real = 0.999,
    eps: _Real = 1e-08,
    weight_decay: _Real = 0.0,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
    grad_scale: _Real = 1.0,
    num_threads: SupportsIndex | None = None,
) -> None: ...
def adamax_step(
    param: _ArrayOrList[_F],
    grad: _ArrayOrList[_F],
    exp_avg: _ArrayOrList[_F],
    exp_inf: _ArrayOrList[_F],
    *,
    step: SupportsIndex,
    lr: _Real = 0.002,
    beta1: _Real = 0.9,
    beta2: _Real = 0.999,
    eps: _Real = 1e-08,
    weight_decay: _Real = 0.0,
    maximize: bool = False,
    grad_scale: _Real = 1.0,
    num_threads: SupportsIndex | None = None,
) -> None: ...
def nadam_step(
    param: _ArrayOrList[_F],
    grad: _ArrayOrList[_F],
    exp_avg: _ArrayOrList[_F],
    exp_avg_sq: _ArrayOrList[_F],
    *,
    step: SupportsIndex,
    mu_product: _Real,
    lr: _Real = 0.002,
    beta1: _Real = 0.9,
    beta2: _Real = 0.999,
    eps: _Real = 1e-08,
    weight_decay: _Real = 0.0,
    momentum_decay: _Real = 0.004,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
    grad_scale: _Real = 1.0,
    num_threads: SupportsIndex | None = None,
) -> None: ...
def schedule_free_adamw_step(
    param: _ArrayOrList[_F],
    grad: _ArrayOrList[_F],
    z: _ArrayOrList[_F],
    exp_avg_sq: _ArrayOrList[_F],
    *,
    step: SupportsIndex,
    average_weight: _Real,
    lr: _Real = 0.0025,
    beta1: _Real = 0.9,
    beta2: _Real = 0.999,
    eps: _Real = 1e-08,
    weight_decay: _Real = 0.0,
    maximize: bool = False,
    grad_scale: _Real = 1.0,
    num_threads: SupportsIndex | None = None,
) -> None: ...
def schedule_free_eval(
    param: _ArrayOrList[_F],
    z: _ArrayOrList[_F],
    *,
    beta1: _Real = 0.9,
    num_threads: SupportsIndex | None = None,
) -> None: ...
def schedule_free_train(
    param: _ArrayOrList[_F],
    z: _ArrayOrList[_F],
    *,
    beta1: _Real = 0.9,
    num_threads: SupportsIndex | None = None,
) -> None: ...
def ceiling_step(
    param: _ArrayOrList[_F],
    grad: _ArrayOrList[_F],
    *state: _ArrayOrList[_F],
    num_threads: SupportsIndex | None = None,
) -> None: ...
