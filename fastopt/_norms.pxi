# The gradient-norm pass (clipping, non-finite checks), included by _core.pyx:
# it shares the step kernels' SIMD level, thread count and parallel region owner.
#
# Each tensor is cut into blocks of FO_NORM_BLOCK elements from its own start;
# each block is summed in float64 (src_c/norm_blocks.h) into its own slot, and
# the slots are combined in block order (src_c/norms.c), so the norm is
# bit-identical for any thread count and any assignment of blocks to threads.


def as_array_list(grads, str what="grads"):
    """grads (an ndarray or a list/tuple of them) as a list, each checked for the norm pass."""
    arrays = [grads] if isinstance(grads, cnp.ndarray) else grads
    if not isinstance(arrays, (list, tuple)):
        raise TypeError(f"{what} must be an ndarray or a list of ndarrays; got {type(grads).__name__}")
    arrays = list(arrays)
    for index, a in enumerate(arrays):
        if not isinstance(a, cnp.ndarray):
            raise TypeError(f"{what}[{index}] must be an ndarray; got {type(a).__name__}")
        if _dtype_code(cnp.PyArray_TYPE(a)) < 0 or not cnp.PyArray_ISNOTSWAPPED(a):
            raise TypeError(f"{what}[{index}] must have dtype {_DTYPE_NAMES} in native byte order; "
                            f"got {a.dtype}")
        if not (a.flags.c_contiguous or a.flags.f_contiguous):
            raise ValueError(f"{what}[{index}] must be C- or Fortran-contiguous")
        if not a.flags.aligned:
            raise ValueError(f"{what}[{index}] is not aligned to its dtype")
    return arrays


def norm_kind(norm_type):
    """(kind, p) of a norm_type: 1, 2, inf, or any other p > 0."""
    if isinstance(norm_type, (bool, _np.bool_)) or not isinstance(
            norm_type, (int, float, cnp.integer, cnp.floating)):
        raise TypeError(f"norm_type must be a real number (1, 2, inf or any p > 0); got {norm_type!r}")
    try:
        p = float(norm_type)
    except OverflowError:
        p = float("inf")
    if not p > 0:
        raise ValueError(f"norm_type must be > 0 (1, 2, inf or any p > 0); got {norm_type!r}")
    if p == 1.0:
        return FO_NORM_L1, p
    if p == 2.0:
        return FO_NORM_L2, p
    if p == float("inf"):
        return FO_NORM_LINF, p
    return FO_NORM_LP, p


def total_norm(grads, norm_type=2.0, num_threads=None):
    """The norm of all elements of grads together (one ndarray or a list), as a float.

    One parallel read pass, float64 accumulation, bit-identical for any
    thread count.  For a list, equal to the norm of the per-array norms (what
    torch.nn.utils.clip_grad_norm_ computes) up to rounding.
    """
    kind, p = norm_kind(norm_type)
    return _list_pass(grads, kind, p, num_threads)


def all_finite(grads, num_threads=None):
    """Whether every element of grads is finite: one read pass."""
    return _list_pass(grads, FO_NORM_FINITE, 0.0, num_threads) == 0.0


cdef double _list_pass(grads, int kind, double p, num_threads) except? -1:
    """One norm pass over grads (an ndarray or a list)."""
    cdef list arrays = as_array_list(grads)
    cdef int nthreads = _resolve_threads(num_threads)
    cdef Py_ssize_t n = len(arrays), i
    cdef Py_ssize_t m = n if n > 0 else 1
    cdef char **data = <char **>malloc(m * (sizeof(char *) + sizeof(Py_ssize_t) + 1))
    if data == NULL:
        raise MemoryError()
    cdef Py_ssize_t *sizes = <Py_ssize_t *>(data + m)
    cdef unsigned char *dtypes = <unsigned char *>(sizes + m)
    cdef cnp.ndarray a
    try:
        for i in range(n):
            a = <cnp.ndarray>arrays[i]
            data[i] = <char *>cnp.PyArray_DATA(a)
            sizes[i] = cnp.PyArray_SIZE(a)
            dtypes[i] = _dtype_code(cnp.PyArray_TYPE(a))
        return _norm_pass(data, dtypes, 1, sizes, n, kind, p, nthreads)
    finally:
        free(data)


cdef double _norm_pass(char **data, unsigned char *dtypes, Py_ssize_t stride, Py_ssize_t *sizes, Py_ssize_t n,
                       int kind, double p, int nthreads) except? -1:
    """The norm of tensors data[i * stride] (sizes[i] elements of enum fo_dtype dtypes[i * stride])."""
    cdef Py_ssize_t i, b, nblocks, total = 0, nt
    cdef Py_ssize_t *first_block = <Py_ssize_t *>malloc((n + 1) * sizeof(Py_ssize_t))
    if first_block == NULL:
        raise MemoryError()
    first_block[0] = 0
    for i in range(n):
        first_block[i + 1] = first_block[i] + (sizes[i] + FO_NORM_BLOCK - 1) // FO_NORM_BLOCK
        total += sizes[i]
    nblocks = first_block[n]
    nt = _region_threads(nthreads, total)
    cdef double *partials = <double *>malloc((nblocks if nblocks > 0 else 1) * sizeof(double) + nt)
    if partials == NULL:
        free(first_block)
        raise MemoryError()
    cdef char *worked = <char *>(partials + (nblocks if nblocks > 0 else 1))
    memset(worked, 0, nt)
    cdef fo_norm_block_fn blocks[4]
    for i in range(4):
        blocks[i] = fo_get_norm_block(i)
    cdef double norm
    _will_run_parallel(nt)
    with nogil:
        if nt <= 1:
            for b in range(nblocks):
                partials[b] = _norm_block(b, data, dtypes, stride, sizes, n, first_block, blocks, kind, p)
        else:
            for b in prange(nblocks, schedule="dynamic", chunksize=4, num_threads=nt):
                worked[fo_omp_thread_num()] = 1
                partials[b] = _norm_block(b, data, dtypes, stride, sizes, n, first_block, blocks, kind, p)
        norm = fo_norm_finish(partials, nblocks, kind, p)
    if nt > 1:
        _region_done(memchr(worked, 0, nt) == NULL)
    free(partials)
    free(first_block)
    return norm


cdef inline double _norm_block(Py_ssize_t b, char **data, unsigned char *dtypes, Py_ssize_t stride,
                               Py_ssize_t *sizes, Py_ssize_t n, Py_ssize_t *first_block,
                               fo_norm_block_fn *blocks, int kind, double p) noexcept nogil:
    """The sum of block b of all blocks of all tensors."""
    cdef Py_ssize_t lo = 0, hi = n, mid, start, count
    while hi - lo > 1:  # the tensor holding block b: first_block[lo] <= b
        mid = (lo + hi) // 2
        if first_block[mid] <= b:
            lo = mid
        else:
            hi = mid
    start = (b - first_block[lo]) * FO_NORM_BLOCK
    count = min(sizes[lo] - start, <Py_ssize_t>FO_NORM_BLOCK)
    cdef int dtype = dtypes[lo * stride]
    return blocks[dtype](data[lo * stride] + start * _ITEMSIZE[dtype], count, kind, p)
