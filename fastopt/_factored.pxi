# Adafactor's passes over factored second moments (included by _core.pyx; the
# kernels and their order of summation: src_c/factored.h).  fastopt.factored
# checks every argument and derives the step's scalars first; this runs it.

cdef extern from "factored.h" nogil:
    ctypedef struct fo_factored:
        Py_ssize_t rows, cols, segments, block_rows, blocks
        double grad_scale
        int maximize
        double weight, eps1, decay, step
        int dtypes[6]
        int stochastic
        uint32_t key
    ctypedef struct fo_factored_kernels:
        void (*sums)(const fo_factored *f, const void *param, const void *grad, Py_ssize_t item,
                     double *param_sq, double *grad_sq, double *row_sum, double *col_parts) noexcept nogil
        void (*factors)(const fo_factored *f, void *row_var, void *col_var, const double *row_sum,
                        double *col_parts, void *row_scale, void *col_scale, Py_ssize_t b) noexcept nogil
        void (*update_sums)(const fo_factored *f, const void *grad, const void *row_scale,
                            const void *col_scale, Py_ssize_t row, double *update_sq) noexcept nogil
        void (*vector_sums)(const fo_factored *f, const void *param, const void *grad, void *variance,
                            Py_ssize_t segment, double *param_sq, double *update_sq) noexcept nogil
        void (*apply)(const fo_factored *f, void *param, const void *grad, const void *row_scale,
                      const void *col_scale, const void *variance, void *param_copy, Py_ssize_t item) noexcept nogil
    enum: FO_FACTORED_BLOCK_ROWS, FO_FACTORED_BLOCKS, FO_FACTORED_BUFFERS
    const fo_factored_kernels *fo_get_factored(int is_double)
    double fo_factored_total(const double *partials, Py_ssize_t n)


cdef struct _Factored:
    fo_factored f
    const fo_factored_kernels *kernels
    bint is_double, is_matrix
    char *param
    char *grad
    char *row_var
    char *col_var
    char *variance
    char *param_copy
    Py_ssize_t matrices, size
    Py_ssize_t seg_first      # its first slot in the per-segment sums
    Py_ssize_t row_first      # its first row in the row sums (matrices)
    Py_ssize_t col_first      # its first column of all matrices' (B·C of them)
    Py_ssize_t part_first     # its first slot in the blocks' column sums (B·blocks·C of them)
    char *row_scale           # the scales of u (factors): B·R and B·C values, in 8-byte slots
    char *col_scale
    double alpha              # max(eps2, RMS(param)) · rho


cdef struct _Item:
    Py_ssize_t tensor, index


cdef enum:
    _SUMS, _FACTORS, _UPDATE_SUMS, _APPLY


cdef void _factored_item(int stage, _Factored *x, Py_ssize_t index, double *param_sq, double *grad_sq,
                         double *update_sq, double *row_sum, double *col_parts) noexcept nogil:
    """One item of a stage: a block of rows (matrix sums), a row (update sums, apply), a vector
    segment (sums, apply) or a matrix (factors)."""
    cdef const fo_factored *f = &x.f
    cdef const fo_factored_kernels *k = x.kernels
    cdef double *psq = param_sq + x.seg_first
    cdef double *usq = update_sq + x.seg_first
    if stage == _SUMS and x.is_matrix:
        k.sums(f, x.param, x.grad, index, psq, grad_sq + x.seg_first, row_sum + x.row_first,
               col_parts + x.part_first)
    elif stage == _SUMS:
        k.vector_sums(f, x.param, x.grad, x.variance, index, psq, usq)
    elif stage == _FACTORS:
        k.factors(f, x.row_var, x.col_var, row_sum + x.row_first, col_parts + x.part_first, x.row_scale,
                  x.col_scale, index)
    elif stage == _UPDATE_SUMS:
        k.update_sums(f, x.grad, x.row_scale, x.col_scale, index, usq)
    else:
        k.apply(f, x.param, x.grad, x.row_scale, x.col_scale, x.variance, x.param_copy, index)


cdef Py_ssize_t _stage_items(int stage, _Factored *x) noexcept:
    """How many items tensor x has in a stage."""
    cdef Py_ssize_t rows = x.matrices * x.f.rows
    if x.size == 0:
        return 0
    if not x.is_matrix:
        return x.f.segments if stage == _SUMS or stage == _APPLY else 0
    if stage == _SUMS:
        return x.matrices * x.f.blocks
    if stage == _FACTORS:
        return x.matrices
    return rows


cdef enum:
    _ALL_WORKED = 0     # every thread of the stage's region took an item, or the stage tells nothing
    _ONE_SAT_OUT = 1    # a thread took none of a stage with chunks for all: it was kept waiting


cdef int _run_stage(int stage, _Factored *xs, Py_ssize_t n, _Item *items, int nthreads, char *worked,
                    double *param_sq, double *grad_sq, double *update_sq, double *row_sum, double *col_parts,
                    ) except -1:
    cdef Py_ssize_t t, i, count = 0, k
    for t in range(n):
        k = _stage_items(stage, &xs[t])
        for i in range(k):
            items[count].tensor = t
            items[count].index = i
            count += 1
    if count == 0:
        return _ALL_WORKED
    cdef int threads = <int>min(<Py_ssize_t>nthreads, count)
    if threads <= 1:
        with nogil:
            for i in range(count):
                _factored_item(stage, &xs[items[i].tensor], items[i].index, param_sq, grad_sq, update_sq,
                               row_sum, col_parts)
        return _ALL_WORKED
    # items as they come, in chunks of up to 16 (small items: rows of 256) that still leave each
    # thread about 4 chunks
    cdef Py_ssize_t chunk = max(1, min(16, count // (4 * threads)))
    memset(worked, 0, threads)
    _will_run_parallel(threads)
    with nogil:
        for i in prange(count, num_threads=threads, schedule="dynamic", chunksize=chunk):
            worked[fo_omp_thread_num()] = 1
            _factored_item(stage, &xs[items[i].tensor], items[i].index, param_sq, grad_sq, update_sq,
                           row_sum, col_parts)
    if count >= 4 * threads and memchr(worked, 0, threads) != NULL:
        return _ONE_SAT_OUT
    return _ALL_WORKED


cdef inline char *_data(object a):
    return NULL if a is None else <char *>cnp.PyArray_DATA(<cnp.ndarray>a)


def factored_run(list tensors, double weight, double rho, double eps2, double d, double decay,
                 double grad_scale, bint maximize, num_threads=None, seed=None, step=0):
    """Run an Adafactor step over checked tensors: (param, grad, row_var, col_var, variance, param_copy,
    eps1) each, row_var and col_var None for a vector (ndim < 2), variance None for a matrix, param_copy
    None or a 16-bit array that receives the new param.  Every buffer float64, or float32, bfloat16 and float16
    in any mix.  seed not None: 16-bit params are rounded stochastically, keyed by seed and step.

    The step's scalars come from fastopt.factored: weight = t^beta2_decay, rho = min(lr, 1/√t),
    decay = 1 − lr·weight_decay.  Per tensor, alpha = max(eps2, RMS(param))·rho from the param as it
    was, and the step −alpha / max(1, RMS(u)/d), in double, as fastopt.reference.adafactor_step."""
    cdef int nthreads = _resolve_threads(num_threads)
    cdef Py_ssize_t n = len(tensors), t, nseg = 0, nrows = 0, ncols = 0, nparts = 0, most = 0, k, shape_c
    cdef Py_ssize_t total = 0
    cdef _Factored *xs = <_Factored *>malloc((n if n > 0 else 1) * sizeof(_Factored))
    if xs == NULL:
        raise MemoryError()
    cdef double *sums = NULL
    cdef char *scales = NULL
    cdef _Item *items = NULL
    cdef _Factored *x
    cdef Py_ssize_t counts[4]
    cdef cnp.ndarray param
    cdef int j
    cdef uint32_t key = 0 if seed is None else fo_stochastic_key(<uint64_t>seed, <uint64_t>step)
    counts[0] = counts[1] = counts[2] = counts[3] = 0
    try:
        for t in range(n):
            param, grad, row_var, col_var, variance, param_copy, eps1 = tensors[t]
            x = &xs[t]
            x.is_double = cnp.PyArray_TYPE(param) == cnp.NPY_DOUBLE
            x.kernels = fo_get_factored(x.is_double)
            x.is_matrix = cnp.PyArray_NDIM(param) >= 2
            x.size = cnp.PyArray_SIZE(param)
            x.param, x.grad = _data(param), _data(grad)
            x.row_var, x.col_var, x.variance = _data(row_var), _data(col_var), _data(variance)
            x.param_copy = _data(param_copy)
            for j, b in enumerate((param, grad, row_var, col_var, variance, param_copy)):
                x.f.dtypes[j] = FO_F32 if b is None else _dtype_code(cnp.PyArray_TYPE(<cnp.ndarray>b))
            x.f.stochastic = seed is not None
            x.f.key = key
            x.f.grad_scale = grad_scale
            x.f.maximize = maximize
            x.f.weight = weight
            x.f.eps1 = eps1
            x.f.decay = decay
            if x.is_matrix:
                shape_c = cnp.PyArray_DIM(param, cnp.PyArray_NDIM(param) - 1)
                x.f.rows, x.f.cols = cnp.PyArray_DIM(param, cnp.PyArray_NDIM(param) - 2), shape_c
                x.matrices = x.size // (x.f.rows * shape_c) if x.size else 0
            else:
                x.f.rows, x.f.cols, x.matrices = 1, x.size, 1
            x.f.segments = max((x.f.cols + FO_NORM_BLOCK - 1) // FO_NORM_BLOCK, 1)
            x.f.block_rows = max(<Py_ssize_t>FO_FACTORED_BLOCK_ROWS,
                                 (x.f.rows + FO_FACTORED_BLOCKS - 1) // FO_FACTORED_BLOCKS)
            x.f.blocks = (x.f.rows + x.f.block_rows - 1) // x.f.block_rows
            x.seg_first, x.row_first, x.col_first, x.part_first = nseg, nrows, ncols, nparts
            nseg += x.matrices * x.f.rows * x.f.segments
            if x.is_matrix:
                nrows += x.matrices * x.f.rows
                ncols += x.matrices * x.f.cols
                nparts += x.matrices * x.f.blocks * x.f.cols
            for k in range(4):
                counts[k] += _stage_items(k, x)
            total += x.size
        for k in range(4):
            most = max(most, counts[k])
        # param², grad² and u² per segment; row sums; the blocks' column sums
        # as a step's plan, and the same for the four passes of the step
        nthreads = <int>_region_threads(nthreads, total)
        sums = <double *>malloc((3 * nseg + nrows + nparts + 1) * sizeof(double) + nthreads)
        scales = <char *>malloc((nrows + ncols + 1) * 8)
        items = <_Item *>malloc((most + 1) * sizeof(_Item))
        if sums == NULL or scales == NULL or items == NULL:
            raise MemoryError()
        for t in range(n):
            xs[t].row_scale = scales + 8 * xs[t].row_first
            xs[t].col_scale = scales + 8 * (nrows + xs[t].col_first)
        _run_factored(xs, n, items, nthreads, <char *>(sums + 3 * nseg + nrows + nparts + 1), sums, nseg,
                      nrows, rho, eps2, d)
    finally:
        free(xs)
        free(sums)
        free(scales)
        free(items)


cdef int _run_factored(_Factored *xs, Py_ssize_t n, _Item *items, int nthreads, char *worked, double *sums,
                       Py_ssize_t nseg, Py_ssize_t nrows, double rho, double eps2, double d) except -1:
    cdef double *param_sq = sums
    cdef double *grad_sq = sums + nseg
    cdef double *update_sq = sums + 2 * nseg
    cdef double *row_sum = sums + 3 * nseg
    cdef double *col_parts = row_sum + nrows
    cdef Py_ssize_t t, segs
    cdef _Factored *x
    cdef double root_n, rms, clip
    cdef int sat_out = _ALL_WORKED
    sat_out |= _run_stage(_SUMS, xs, n, items, nthreads, worked, param_sq, grad_sq, update_sq, row_sum, col_parts)
    sat_out |= _run_stage(_FACTORS, xs, n, items, nthreads, worked, param_sq, grad_sq, update_sq, row_sum,
                          col_parts)
    sat_out |= _run_stage(_UPDATE_SUMS, xs, n, items, nthreads, worked, param_sq, grad_sq, update_sq, row_sum,
                          col_parts)
    for t in range(n):
        x = &xs[t]
        if x.size == 0:
            continue
        segs = x.matrices * x.f.rows * x.f.segments
        root_n = sqrt(<double>x.size)
        rms = sqrt(fo_factored_total(param_sq + x.seg_first, segs)) / root_n
        x.alpha = (rms if rms > eps2 else eps2) * rho
        rms = sqrt(fo_factored_total(update_sq + x.seg_first, segs)) / (root_n * d)
        clip = rms if rms > 1.0 else 1.0
        x.f.step = -x.alpha / clip
    sat_out |= _run_stage(_APPLY, xs, n, items, nthreads, worked, param_sq, grad_sq, update_sq, row_sum, col_parts)
    if nthreads > 1:
        _region_done(sat_out == _ALL_WORKED)
    return 0
