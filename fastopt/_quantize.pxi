# 8-bit block-quantized state: the compiled conversions (included by _core.pyx).
# The format is documented in fastopt/quantized.py and src_c/quantize8.h.

from fastopt import quantized as _quantized


def quantize(x, is_signed, block_size):
    """fastopt.quantize (fastopt/quantized.py checks the arguments): the kernels' conversion."""
    cdef int b = _quantized.check_block_size(block_size)
    cdef cnp.ndarray values = _np.ascontiguousarray(x, dtype=_np.float32)
    state = _quantized.quantized_zeros((<object>values).shape, bool(is_signed), b)
    cdef cnp.ndarray codes = state.codes, scales = state.scales
    cdef Py_ssize_t n = cnp.PyArray_SIZE(values)
    cdef int dtype = FO_Q8S if is_signed else FO_Q8U
    with nogil:
        fo_q8_quantize(dtype, <const float *>cnp.PyArray_DATA(values),
                       <unsigned char *>cnp.PyArray_DATA(codes), <float *>cnp.PyArray_DATA(scales), b, n)
    return state


def dequantize(state):
    """The float32 values of a QuantizedState, by the kernels' conversion (its .dequantize() is the NumPy twin)."""
    if not isinstance(state, _QuantizedState):
        raise TypeError(f"state must be a QuantizedState; got {type(state).__name__}")
    cdef int b = _quantized.check_block_size(state.block_size, "state.block_size")
    cdef cnp.ndarray codes = _np.ascontiguousarray(state.codes, dtype=_np.uint8)
    cdef cnp.ndarray scales = _np.ascontiguousarray(state.scales, dtype=_np.float32)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(codes)
    if cnp.PyArray_SIZE(scales) != (n + b - 1) // b:
        raise ValueError(f"state.scales must have {(n + b - 1) // b} entries, one per block of {b}; "
                         f"got {cnp.PyArray_SIZE(scales)}")
    cdef cnp.ndarray out = _np.empty((<object>codes).shape, _np.float32)
    cdef int dtype = FO_Q8S if state.signed else FO_Q8U
    with nogil:
        fo_q8_dequantize(dtype, <const unsigned char *>cnp.PyArray_DATA(codes),
                         <const float *>cnp.PyArray_DATA(scales), b, <float *>cnp.PyArray_DATA(out), n)
    return out
