"""fastopt: fused optimizer steps for NumPy training loops.

Each ``*_step`` function updates its buffers in place, in one pass over
memory, with the GIL released and OpenMP across elements.  Every buffer
argument takes one ndarray, or a list of ndarrays (one call for a whole
model).  :mod:`fastopt.reference` holds the same functions in plain NumPy,
with the formulas: they are the specification.
"""

import os as _os

# OpenMP's idle threads spin before they sleep, and libgomp's default spin
# holds a core that BLAS's threads need between steps; a shorter one (its
# choice measured in README.md, "Threads") lets them have it and still keeps
# back-to-back steps awake.  libgomp reads this when it loads, with
# fastopt._core just below; a setting of the user's own (or an OpenMP already
# loaded) wins.
DEFAULT_GOMP_SPINCOUNT = "50000"
if "OMP_WAIT_POLICY" not in _os.environ and "GOMP_SPINCOUNT" not in _os.environ:
    _os.environ["GOMP_SPINCOUNT"] = DEFAULT_GOMP_SPINCOUNT

from fastopt._core import get_num_threads, set_num_threads  # noqa: E402
from fastopt import steps as _steps  # noqa: E402
from fastopt.steps import *  # noqa: E402,F401,F403  (one function per rule of fastopt.rules)
from fastopt._config import show_config  # noqa: E402
from fastopt.factored import adafactor_step  # noqa: E402
from fastopt.clip import clip_grad_norm, clip_grad_value  # noqa: E402
from fastopt.quantized import QuantizedState, quantize, quantized_zeros  # noqa: E402

__version__ = "0.1.0"

__all__ = ["__version__", "QuantizedState", "adafactor_step", "clip_grad_norm", "clip_grad_value", "get_num_threads",
           "quantize", "quantized_zeros", "set_num_threads", "show_config"]
__all__ += _steps.__all__


def __getattr__(name):
    """fastopt.optim and fastopt.schedules, imported on first use: `import fastopt` stays light."""
    if name in ("optim", "schedules"):
        import importlib

        return importlib.import_module(f"fastopt.{name}")
    raise AttributeError(f"module 'fastopt' has no attribute {name!r}")
