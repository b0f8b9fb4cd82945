# The reference twins take exactly the fused functions' arguments: one signature, in _core.pyi.
from fastopt._core import adagrad_step as adagrad_step
from fastopt._core import adam_step as adam_step
from fastopt._core import adamw_step as adamw_step
from fastopt._core import momentum_step as momentum_step
from fastopt._core import rmsprop_step as rmsprop_step
from fastopt._core import sgd_momentum_step as sgd_momentum_step
from fastopt._core import sgd_step as sgd_step

__all__ = [
    "sgd_step",
    "momentum_step",
    "sgd_momentum_step",
    "rmsprop_step",
    "adagrad_step",
    "adam_step",
    "adamw_step",
]
