"""The precision modes: the dtype of every buffer a step reads and writes (``--dtype``).

=================== ========== ========== ============================ ================
``--dtype``         params     grads      state                        written each step
=================== ========== ========== ============================ ================
``float32``         float32    float32    float32
``float64``         float64    float64    float64
``bfloat16``        bfloat16   bfloat16   bfloat16 (float32 math)
``float16``         float16    float16    float16 (float32 math)
``master-bfloat16`` float32    bfloat16   float32                      bfloat16 copy
``master-float16``  float32    float16    float32                      float16 copy
``float32-8bit``    float32    float32    8-bit, block 256
=================== ========== ========== ============================ ================

In the master modes the params are the float32 master weights, and each step
also writes the model's 16-bit weights, rounded (``param_copy=``).  In
``float32-8bit`` every state buffer the rule lets be 8-bit
(``fastopt.QuantizedState``: signed for first moments and momentum, unsigned
for second moments and sums) is 8-bit for tensors of at least
``fastopt.optim.QUANTIZE_MIN_SIZE`` elements and float32 for smaller ones, as
``fastopt.optim``'s ``state_dtype="8bit"`` keeps it, so the list call and the
training API step the same buffers.

A mode is one value of ``--dtype``, not a second option: every mode of a run
is a group of its own, and all of them can be listed side by side
(``--dtype bfloat16,master-bfloat16,float32-8bit``).
"""

from dataclasses import dataclass

import numpy as np

from fastopt import optim, quantized
from fastopt.bench.workloads import DTYPES, SIXTEEN_BIT, make_buffers, numpy_dtype

BLOCK_SIZE = 256            # of the 8-bit state: fastopt's default


@dataclass(frozen=True)
class Mode:
    name: str               # the value of --dtype
    param: str              # the params' dtype (in a master mode, of the float32 master)
    grad: str
    state: str              # of the state buffers: a dtype, or "8bit"
    copy: str | None = None  # the 16-bit model weights written each step (param_copy=), if any
    summary: str = ""

    @property
    def plain(self):
        """Every buffer in one dtype of full precision: the modes fastopt was first measured in."""
        return self.name in DTYPES

    @property
    def sixteen_bit(self):
        """Every buffer 16-bit (in-dtype)."""
        return self.param in SIXTEEN_BIT

    @property
    def master(self):
        return self.copy is not None

    @property
    def eight_bit(self):
        return self.state == "8bit"

    def dtype_of(self, name):
        """The NumPy dtype of ``name``, one of the dtypes of a mode (not "8bit")."""
        return numpy_dtype(name)

    def optim_options(self):
        """The options of fastopt.optim (and fastopt.torch) that step this mode's buffers."""
        if self.master:
            return {"master_weights": True}
        if self.eight_bit:
            return {"state_dtype": "8bit", "block_size": BLOCK_SIZE}
        return {}


MODES = {mode.name: mode for mode in [
    Mode("float32", "float32", "float32", "float32"),
    Mode("float64", "float64", "float64", "float64"),
    Mode("bfloat16", "bfloat16", "bfloat16", "bfloat16",
         summary="params, grads and state bfloat16, float32 arithmetic"),
    Mode("float16", "float16", "float16", "float16",
         summary="params, grads and state float16, float32 arithmetic"),
    Mode("master-bfloat16", "float32", "bfloat16", "float32", copy="bfloat16",
         summary="float32 master weights and state, bfloat16 grads, a bfloat16 copy written each step"),
    Mode("master-float16", "float32", "float16", "float32", copy="float16",
         summary="float32 master weights and state, float16 grads, a float16 copy written each step"),
    Mode("float32-8bit", "float32", "float32", "8bit",
         summary=f"float32 params and grads, 8-bit state (block {BLOCK_SIZE}) for tensors of "
                 f"{optim.QUANTIZE_MIN_SIZE} elements or more"),
]}


def get_mode(mode):
    """A Mode from itself or its name (a plain dtype such as np.float32 too)."""
    if isinstance(mode, Mode):
        return mode
    name = mode if isinstance(mode, str) else np.dtype(mode).name
    try:
        return MODES[name]
    except KeyError:
        raise ValueError(f"unknown precision mode {name!r}; one of {', '.join(MODES)}") from None


def make_mode_buffers(shapes, mode, seed=0):
    """(params, grads, copies) of ``mode``: standard normal values, rounded to
    each buffer's dtype; ``copies`` (the 16-bit weights of a master mode) is
    None in the other modes.  A master starts equal to its copy, as a master
    made from the model's 16-bit weights does (fastopt.optim's)."""
    mode = get_mode(mode)
    if mode.plain:
        params, grads = make_buffers(shapes, mode.param, seed)
        return params, grads, None
    params, grads = make_buffers(shapes, "float32", seed)
    grads = [g.astype(mode.dtype_of(mode.grad)) for g in grads]
    if mode.master:
        copies = [p.astype(mode.dtype_of(mode.copy)) for p in params]
        return [c.astype(np.float32) for c in copies], grads, copies
    return [p.astype(mode.dtype_of(mode.param)) for p in params], grads, None


def new_state_buffer(rule, name, param, mode):
    """A zeroed state buffer ``name`` of ``param`` in ``mode``: 8-bit where the mode
    and fastopt.optim's rule make it so, else an array of the mode's state dtype."""
    mode = get_mode(mode)
    if mode.eight_bit:
        buffer = next(b for b in rule.state_buffers if b.name == name)
        signed = buffer.eight_bit_signed_for(param.size, param.flags.c_contiguous)
        if signed is not None:
            return quantized.quantized_zeros(param.shape, signed=signed, block_size=BLOCK_SIZE)
        return np.zeros(param.shape, np.float32)
    return np.zeros(param.shape, mode.dtype_of(mode.state))


def new_mode_states(rule, params, mode):
    """Zeroed state buffers of ``rule`` in ``mode``, one list per state name."""
    return {name: [new_state_buffer(rule, name, p, mode) for p in params] for name in rule.state_names}


def _nbytes(buffers):
    return sum(b.nbytes for b in buffers or ())


def traffic_bytes(params, grads, states, copies=None, second_pass=False):
    """Bytes one step moves: param and every state buffer read and written, grad read, the copy written;
    with a second pass (LAMB), param and every state buffer read once more."""
    reads = 1 + (1 if second_pass else 0)
    return ((1 + reads) * _nbytes(params) + _nbytes(grads) + (1 + reads) * sum(_nbytes(s) for s in states.values())
            + _nbytes(copies))


def state_bytes(params, states, copies=None):
    """Bytes of the optimizer's own memory: its state buffers, and in a master
    mode the float32 master weights (the 16-bit copies are the model's)."""
    return sum(_nbytes(s) for s in states.values()) + (_nbytes(params) if copies is not None else 0)
