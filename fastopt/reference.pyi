"""The reference twins take exactly the fused functions' arguments: one signature, in steps.pyi.

Written by ``python -m fastopt._stubs`` from the registry: do not edit.
"""

from typing import SupportsIndex

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fastopt.quantized import QuantizedState
from fastopt.steps import sgd_step as sgd_step
from fastopt.steps import momentum_step as momentum_step
from fastopt.steps import sgd_momentum_step as sgd_momentum_step
from fastopt.steps import rmsprop_step as rmsprop_step
from fastopt.steps import adagrad_step as adagrad_step
from fastopt.steps import adam_step as adam_step
from fastopt.steps import adamw_step as adamw_step
from fastopt.steps import lion_step as lion_step
from fastopt.steps import lamb_step as lamb_step
from fastopt.steps import radam_step as radam_step
from fastopt.steps import adamax_step as adamax_step
from fastopt.steps import nadam_step as nadam_step
from fastopt.steps import schedule_free_adamw_step as schedule_free_adamw_step
from fastopt.steps import schedule_free_eval as schedule_free_eval
from fastopt.steps import schedule_free_train as schedule_free_train
from fastopt.factored import adafactor_step as adafactor_step

__all__ = [
    "sgd_step",
    "momentum_step",
    "sgd_momentum_step",
    "rmsprop_step",
    "adagrad_step",
    "adam_step",
    "adamw_step",
    "lion_step",
    "lamb_step",
    "radam_step",
    "adamax_step",
    "nadam_step",
    "schedule_free_adamw_step",
    "schedule_free_eval",
    "schedule_free_train",
    "adafactor_step",
    "quantize",
]

def nadam_momentum(step: int, beta1: float, momentum_decay: float) -> float: ...
def adafactor_scalars(step: int, lr: float, beta2_decay: float,
                      weight_decay: float) -> tuple[float, float, float]: ...
def quantize(x: ArrayLike, signed: bool = True, block_size: SupportsIndex = 256) -> QuantizedState: ...
def dequantize(state: QuantizedState) -> NDArray[np.float32]: ...
