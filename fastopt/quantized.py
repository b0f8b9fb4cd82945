"""8-bit block-quantized optimizer state (Dettmers et al. 2022, "8-bit Optimizers via Block-wise Quantization").

A :class:`QuantizedState` stands in for a float32 state buffer (a moment, a
momentum buffer) of a step function or an optimizer: one uint8 code per
element, and one float32 scale per block of ``block_size`` elements of the
tensor flattened in C order, the block's absmax.  A step decodes a run of whole
blocks into float32, runs the rule's float32 arithmetic and encodes the new
values with each block's new absmax, in the same single pass over memory.

The codes (format version :data:`FORMAT_VERSION`) are small floats of the
values divided by their block's absmax, so in [-1, 1], rounded to nearest even
with subnormals.  The quotient is x·(1/absmax), one float32 reciprocal per block
(x/absmax where the absmax is subnormal, whose reciprocal would overflow):

- signed (state that changes sign: ``exp_avg``, momentum buffers): a sign bit,
  then 3 exponent and 4 mantissa bits with bias 7: magnitude field ``e m``
  means 2^(e−7)·(1 + m/16) for e > 0 and m·2^−10 for e = 0; 1.0 is 112;
- unsigned (nonnegative state: ``exp_avg_sq``, ``max_exp_avg_sq``,
  ``square_avg``, ``state_sum``, ``exp_inf``): 5 exponent and 3 mantissa bits
  with bias 31: 2^(e−31)·(1 + m/8) for e > 0 and m·2^−33 for e = 0; 1.0 is 248.
  The wide range keeps a small second moment from flushing to 0 where the
  first moment does not, which would blow up m/(√v + eps).

A value is decoded as code·scale (one float32 product).  A block whose absmax
is 0 has scale 0 and all codes 0.  The quotient's magnitude is clamped to 1
before encoding; a NaN quotient encodes as +1 (the sign of a NaN is not
reproducible).  A NaN in a block is its absmax, so every decoded value of the
block is NaN.  The unsigned map stores |x|.

This module imports only NumPy: its functions are the NumPy twin of the
kernels' conversions (``src_c/quantize8.h``), bit for bit; :func:`fastopt.quantize`
is the compiled one.
"""

import math

import numpy as np

__all__ = ["FORMAT_VERSION", "QuantizedState", "quantize", "quantized_zeros", "MIN_BLOCK_SIZE", "MAX_BLOCK_SIZE",
           "encode", "decode", "quantize_numpy", "dequantize_numpy"]

FORMAT_VERSION = 1
MIN_BLOCK_SIZE = 64
MAX_BLOCK_SIZE = 4096

# (mantissa bits, bias) of each map
_SIGNED = (4, 7)
_UNSIGNED = (3, 31)



class QuantizedState:
    """An 8-bit block-quantized state buffer: ``codes`` (uint8, the param's shape) and ``scales``.

    ``scales`` (float32) holds ceil(n / block_size) block absmaxes, n the
    param's size; ``signed`` picks the map (see the module's documentation).
    Pass it wherever a step function or an optimizer takes a float state
    buffer; it is updated in place.
    """

    __slots__ = ("codes", "scales", "block_size", "signed")

    def __init__(self, codes, scales, block_size, signed):
        self.codes = codes
        self.scales = scales
        self.block_size = block_size
        self.signed = signed

    @property
    def shape(self):
        return self.codes.shape

    @property
    def size(self):
        return self.codes.size

    @property
    def nbytes(self):
        return self.codes.nbytes + self.scales.nbytes

    @property
    def format_version(self):
        return FORMAT_VERSION

    def dequantize(self):
        """The float32 values it stands for, in its shape."""
        return dequantize_numpy(self)

    def copy(self):
        return QuantizedState(self.codes.copy(), self.scales.copy(), self.block_size, self.signed)

    def __repr__(self):
        return (f"QuantizedState(shape={self.shape}, block_size={self.block_size}, "
                f"signed={self.signed}, format_version={FORMAT_VERSION})")


def check_block_size(block_size, name="block_size"):
    """block_size, checked: an int power of two in [64, 4096]."""
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)):
        raise TypeError(f"{name} must be an int; got {type(block_size).__name__}")
    b = int(block_size)
    if not (MIN_BLOCK_SIZE <= b <= MAX_BLOCK_SIZE) or b & (b - 1):
        raise ValueError(f"{name} must be a power of two in [{MIN_BLOCK_SIZE}, {MAX_BLOCK_SIZE}]; got {b}")
    return b


def num_blocks(size, block_size):
    return -(-size // block_size)


def quantized_zeros(shape, signed=True, block_size=256):
    """A :class:`QuantizedState` of zeros (codes 0, scales 0)."""
    signed = _check_signed(signed)
    block_size = check_block_size(block_size)
    shape = _check_shape(shape)
    size = math.prod(shape)
    try:
        codes = np.zeros(shape, np.uint8)
    except ValueError as exc:  # numpy's "array is too big" names no argument
        raise ValueError(f"shape {shape} is too large: {exc}") from None
    return QuantizedState(codes, np.zeros(num_blocks(size, block_size), np.float32), block_size, signed)


def _check_signed(signed):
    """signed, checked: a bool (bool(None) or bool("no") would pick a map silently)."""
    if not isinstance(signed, (bool, np.bool_)):
        raise TypeError(f"signed must be a bool; got {type(signed).__name__}")
    return bool(signed)


def _check_shape(shape):
    """shape (an int or a sequence of them), checked, as a tuple of ints (numpy's own errors name no argument)."""
    dims = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
    for d in dims:
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)):
            raise TypeError(f"shape must be an int or a tuple of ints; got {shape!r}")
        if d < 0:
            raise ValueError(f"shape must not have negative dimensions; got {shape!r}")
    return tuple(int(d) for d in dims)


def quantize(x, signed=True, block_size=256):
    """x (float32, or what converts to it) as a :class:`QuantizedState`, by the kernels' conversion.

    One scale per block of ``block_size`` elements of x flattened in C order,
    the block's absmax, and one uint8 code per element: ``signed=True`` for
    state that changes sign (sign + e3m4), False for nonnegative state (e5m3).
    It is the requantization every step does.
    Pure-NumPy twin: fastopt.reference.quantize.
    """
    signed = _check_signed(signed)
    block_size = check_block_size(block_size)
    from fastopt import _core   # compiled; this module itself imports only NumPy

    # real numbers only: None would become NaN, a complex number would lose its imaginary part,
    # and numpy's own conversion errors name no argument
    given = np.asarray(x)
    if given.dtype.kind not in "biufV" or given.dtype.kind == "V" and given.dtype.names is not None:
        raise TypeError(f"x must be real numbers (float32, or what converts to it); got {given.dtype}")
    x = np.asarray(given, np.float32)
    state = _core.quantize(x, bool(signed), block_size)
    # the compiled conversion takes np.ascontiguousarray(x), which is at least 1-d: keep x's shape ()
    state.codes = state.codes.reshape(x.shape)
    return state


def decode(codes, signed):
    """The value of each code in [-1, 1] (float32), before the scale."""
    mbits, bias = _SIGNED if signed else _UNSIGNED
    c = np.asarray(codes, np.uint8).astype(np.uint32)
    sign = (c & np.uint32(0x80)) << np.uint32(24) if signed else np.zeros_like(c)
    mag = c & np.uint32(0x7F) if signed else c
    normal = (mag << np.uint32(23 - mbits)) + np.uint32((127 - bias) << 23)
    unit = np.array([(128 - bias - mbits) << 23], np.uint32).view(np.float32)[0]
    subnormal = (mag.astype(np.int32).astype(np.float32) * unit).view(np.uint32)
    return (sign | np.where(mag >= np.uint32(1 << mbits), normal, subnormal)).view(np.float32)


def encode(y, signed):
    """float32 quotients y (|y| <= 1) into codes, rounded to nearest even; |y| clamped to 1, NaN is +1."""
    mbits, bias = _SIGNED if signed else _UNSIGNED
    shift = np.uint32(23 - mbits)
    u = np.ascontiguousarray(y, np.float32).view(np.uint32)
    a = np.minimum(u & np.uint32(0x7FFFFFFF), np.uint32(0x3F800000))
    normal = (((a + np.uint32((1 << (shift - 1)) - 1) + ((a >> shift) & np.uint32(1))) >> shift)
              - np.uint32((127 - bias) << mbits))
    magic = np.array([(151 - bias - mbits) << 23], np.uint32).view(np.float32)[0]
    subnormal = (a.view(np.float32) + magic).view(np.uint32) - magic.view(np.uint32)
    mag = np.where(a >= np.uint32((128 - bias) << 23), normal, subnormal)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    sign = np.where(nan, np.uint32(0), (u >> np.uint32(24)) & np.uint32(0x80)) if signed else np.uint32(0)
    return (sign | mag).astype(np.uint8)


def _blocks(flat, block_size):
    """flat (1-D) as whole blocks: (n_blocks, block_size), zero-padded."""
    nb = num_blocks(flat.size, block_size)
    padded = np.zeros(nb * block_size, flat.dtype)
    padded[:flat.size] = flat
    return padded.reshape(nb, block_size)


def quantize_into(x, state):
    """Encode float32 x (state's shape) into state's codes and scales, as a step's requantization does."""
    flat = np.ascontiguousarray(x, np.float32).reshape(-1)
    blocks = _blocks(flat, state.block_size)
    top = (blocks.view(np.uint32) & np.uint32(0x7FFFFFFF)).max(axis=1) if flat.size else np.zeros(0, np.uint32)
    scales = top.view(np.float32)
    # x * (1 / absmax), one reciprocal per block; x / absmax where absmax is subnormal
    normal = top >= np.uint32(0x00800000)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inverse = np.float32(1) / np.where(normal, scales, np.float32(1))
        quotients = np.where(normal[:, None], blocks * inverse[:, None], blocks / scales[:, None])
    codes = np.where((top == 0)[:, None], np.uint8(0), encode(quotients, state.signed))
    state.scales[...] = scales
    state.codes[...] = codes.reshape(-1)[:flat.size].reshape(state.shape)


def quantize_numpy(x, signed=True, block_size=256):
    """The NumPy twin of :func:`fastopt.quantize`."""
    x = np.asarray(x, np.float32)
    state = quantized_zeros(x.shape, signed, block_size)
    quantize_into(x, state)
    return state


def dequantize_numpy(state):
    """The float32 values of a :class:`QuantizedState`, in its shape."""
    flat = state.codes.reshape(-1)
    blocks = _blocks(flat, state.block_size)
    values = decode(blocks, state.signed) * state.scales.astype(np.float32)[:, None]
    return values.reshape(-1)[:flat.size].reshape(state.shape)
