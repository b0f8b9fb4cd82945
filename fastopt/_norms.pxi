"""The gradient-norm pass (src_c/norms.c): included into fastopt/_core.pyx,
so it shares the step kernels' SIMD level, thread count and checks.

The norm is accumulated in float64, in blocks fixed by element index, and
combined in a fixed order, so it is bit-identical for any thread count.
"""

cdef extern from "norms.h" nogil:
    enum:
        FO_NORM_L1
        FO_NORM_L2
        FO_NORM_LINF
        FO_NORM_LP
        FO_NORM_FINITE

    ctypedef struct fo_norm_tensor:
        const void *data
        Py_ssize_t size
        int is_double

    int fo_total_norm(const fo_norm_tensor *tensors, Py_ssize_t ntensors, int kind, double p,
                      int nthreads, double *norm)

def as_array_list(grads, str what="grads"):
    """grads (an ndarray or a list/tuple of them) as a list, each checked for the norm pass."""
    arrays = [grads] if isinstance(grads, cnp.ndarray) else grads
    if not isinstance(arrays, (list, tuple)):
        raise TypeError(f"{what} must be an ndarray or a list of ndarrays; got {type(grads).__name__}")
    for index, a in enumerate(arrays):
        if not isinstance(a, cnp.ndarray):
            raise TypeError(f"{what}[{index}] must be an ndarray; got {type(a).__name__}")
        if (cnp.PyArray_TYPE(a) not in (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64)
                or not cnp.PyArray_ISNOTSWAPPED(a)):
            raise TypeError(f"{what}[{index}] must have dtype float32 or float64 in native byte order; "
                            f"got {a.dtype.str}")
        if not (a.flags.c_contiguous or a.flags.f_contiguous):
            raise ValueError(f"{what}[{index}] must be C- or Fortran-contiguous")
        if not a.flags.aligned:
            raise ValueError(f"{what}[{index}] is not aligned to its dtype")
    return list(arrays)


def norm_kind(norm_type):
    """(kind, p) of a norm_type: 1, 2, inf, or any other p > 0."""
    if isinstance(norm_type, bool) or not isinstance(norm_type, (int, float, cnp.integer, cnp.floating)):
        raise TypeError(f"norm_type must be a real number (1, 2, inf or any p > 0); got {norm_type!r}")
    p = float(norm_type)
    if not p > 0:
        raise ValueError(f"norm_type must be > 0 (1, 2, inf or any p > 0); got {norm_type!r}")
    if p == 1.0:
        return FO_NORM_L1, p
    if p == 2.0:
        return FO_NORM_L2, p
    if math.isinf(p):
        return FO_NORM_LINF, p
    return FO_NORM_LP, p


def total_norm(grads, norm_type=2.0, num_threads=None):
    """The norm of all elements of grads together (one ndarray or a list), as a float.

    One parallel read pass, float64 accumulation, bit-identical for any
    thread count.  For a list, equal to the norm of the per-array norms (what
    torch.nn.utils.clip_grad_norm_ computes) up to rounding.
    """
    kind, p = norm_kind(norm_type)
    return _pass(grads, kind, p, num_threads)


def all_finite(grads, num_threads=None):
    """Whether every element of grads is finite: one read pass."""
    return _pass(grads, FO_NORM_FINITE, 0.0, num_threads) == 0.0


cdef double _pass(grads, int kind, double p, num_threads) except? -1:
    """One norm pass of kind over grads (an ndarray or a list)."""
    cdef list arrays = as_array_list(grads)
    cdef int nthreads = _resolve_threads(num_threads)
    cdef Py_ssize_t n = len(arrays), i, total = 0
    cdef fo_norm_tensor *tensors = <fo_norm_tensor *>malloc((n if n > 0 else 1) * sizeof(fo_norm_tensor))
    cdef cnp.ndarray a
    cdef double norm = 0.0
    cdef int rc
    if tensors == NULL:
        raise MemoryError()
    try:
        for i in range(n):
            a = <cnp.ndarray>arrays[i]
            tensors[i].data = cnp.PyArray_DATA(a)
            tensors[i].size = cnp.PyArray_SIZE(a)
            tensors[i].is_double = cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT64
            total += tensors[i].size
        nthreads = max(1, min(nthreads, total // MIN_ELEMENTS_PER_THREAD))
        _will_run_parallel(nthreads)
        with nogil:
            rc = fo_total_norm(tensors, n, kind, p, nthreads, &norm)
    finally:
        free(tensors)
    if rc != 0:
        raise MemoryError()
    return norm


cdef bint _same_shape(cnp.ndarray a, cnp.ndarray b):
    cdef int d
    if cnp.PyArray_NDIM(a) != cnp.PyArray_NDIM(b):
        return False
    for d in range(cnp.PyArray_NDIM(a)):
        if cnp.PyArray_DIM(a, d) != cnp.PyArray_DIM(b, d):
            return False
    return True


def check_grads(list params, grads):
    """Check grads against params (a list of checked arrays) before a step writes anything.

    Count, type, dtype, shape, memory order and alignment of each gradient,
    that every parameter is still writeable, and that no gradient shares
    memory with a parameter or with another gradient: what the step kernels
    check too, so that a step of several groups fails before its first group
    writes.  Raises TypeError or ValueError naming the first bad gradient;
    returns grads as a list.
    """
    if isinstance(grads, cnp.ndarray) or not isinstance(grads, (list, tuple)):
        raise TypeError(f"grads must be a list of ndarrays aligned with optimizer.params; "
                        f"got {type(grads).__name__}")
    cdef Py_ssize_t n = len(params), i, count = 0
    if len(grads) != n:
        raise ValueError(f"got {len(grads)} grads for {n} params")
    cdef cnp.ndarray p, g, a
    cdef fo_index first = 0, second = 0
    # intervals of params and grads (label 2 i + is_grad), and the sort's scratch
    cdef fo_interval *intervals = <fo_interval *>malloc((4 * n if n > 0 else 1) * sizeof(fo_interval))
    if intervals == NULL:
        raise MemoryError()
    try:
        for i in range(n):
            p = <cnp.ndarray>params[i]
            if not isinstance(grads[i], cnp.ndarray):
                raise TypeError(f"grads[{i}] must be an ndarray; got {type(grads[i]).__name__}")
            g = <cnp.ndarray>grads[i]
            if cnp.PyArray_TYPE(g) != cnp.PyArray_TYPE(p) or not cnp.PyArray_ISNOTSWAPPED(g):  # params are native
                raise TypeError(f"grads[{i}] has dtype {(<object>g).dtype.str}, but its param has "
                                f"{(<object>p).dtype.str}")
            if not _same_shape(g, p):
                raise ValueError(f"grads[{i}] has shape {(<object>g).shape}, but its param has "
                                 f"{(<object>p).shape}")
            if not ((cnp.PyArray_IS_C_CONTIGUOUS(g) and cnp.PyArray_IS_C_CONTIGUOUS(p))
                    or (cnp.PyArray_IS_F_CONTIGUOUS(g) and cnp.PyArray_IS_F_CONTIGUOUS(p))):
                raise ValueError(f"grads[{i}] must be contiguous in the memory order of its param")
            if not cnp.PyArray_ISALIGNED(g):
                raise ValueError(f"grads[{i}] is not aligned to its dtype")
            if not cnp.PyArray_ISWRITEABLE(p):
                raise ValueError(f"params[{i}] is read-only; the optimizer updates it in place")
            for a, is_grad in ((p, 0), (g, 1)):
                if cnp.PyArray_NBYTES(a) > 0:
                    intervals[count].start = <fo_index>cnp.PyArray_DATA(a)
                    intervals[count].end = intervals[count].start + cnp.PyArray_NBYTES(a)
                    intervals[count].label = 2 * i + is_grad
                    count += 1
        if fo_find_overlap(intervals, intervals + count, count, &first, &second):
            if first % 2 == second % 2:
                kind = "grads" if first % 2 else "params"
                raise ValueError(f"{kind}[{first // 2}] and {kind}[{second // 2}] share memory; "
                                 f"each must be a separate array")
            grad, param = (first, second) if first % 2 else (second, first)
            raise ValueError(f"grads[{grad // 2}] shares memory with params[{param // 2}]; "
                             f"a gradient must not alias a parameter")
    finally:
        free(intervals)
    return list(grads)
