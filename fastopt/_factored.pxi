# Adafactor's passes over factored second moments (included by _core.pyx; the
# kernels and their order of summation: src_c/factored.h).  fastopt.factored
# checks every argument and derives the step's scalars first; this runs it.

cdef extern from "factored.h" nogil:
    ctypedef struct fo_factored:
        Py_ssize_t rows, cols, segments
        double grad_scale
        int maximize
        double weight, eps1, decay, step
    enum: FO_FACTORED_STRIPE
    void fo_factored_sums_f32(const fo_factored *f, const float *param, const float *grad, Py_ssize_t row,
                              double *param_sq, double *grad_sq, double *row_sum)
    void fo_factored_sums_f64(const fo_factored *f, const double *param, const double *grad, Py_ssize_t row,
                              double *param_sq, double *grad_sq, double *row_sum)
    void fo_factored_columns_f32(const fo_factored *f, const float *grad, Py_ssize_t col_lo, Py_ssize_t col_hi,
                                 double *col_sum)
    void fo_factored_columns_f64(const fo_factored *f, const double *grad, Py_ssize_t col_lo,
                                 Py_ssize_t col_hi, double *col_sum)
    void fo_factored_factors_f32(const fo_factored *f, float *row_var, float *col_var, const double *row_sum,
                                 const double *col_sum, float *row_mean)
    void fo_factored_factors_f64(const fo_factored *f, double *row_var, double *col_var, const double *row_sum,
                                 const double *col_sum, double *row_mean)
    void fo_factored_update_sums_f32(const fo_factored *f, const float *grad, const float *row_var,
                                     const float *col_var, const float *row_mean, Py_ssize_t row,
                                     double *update_sq)
    void fo_factored_update_sums_f64(const fo_factored *f, const double *grad, const double *row_var,
                                     const double *col_var, const double *row_mean, Py_ssize_t row,
                                     double *update_sq)
    void fo_factored_vector_sums_f32(const fo_factored *f, const float *param, const float *grad,
                                     float *variance, Py_ssize_t segment, double *param_sq, double *update_sq)
    void fo_factored_vector_sums_f64(const fo_factored *f, const double *param, const double *grad,
                                     double *variance, Py_ssize_t segment, double *param_sq, double *update_sq)
    void fo_factored_apply_f32(const fo_factored *f, float *param, const float *grad, const float *row_var,
                               const float *col_var, const float *row_mean, const float *variance,
                               Py_ssize_t item)
    void fo_factored_apply_f64(const fo_factored *f, double *param, const double *grad, const double *row_var,
                               const double *col_var, const double *row_mean, const double *variance,
                               Py_ssize_t item)
    double fo_factored_total(const double *partials, Py_ssize_t n)


cdef struct _Factored:
    fo_factored f
    bint is_double, is_matrix
    char *param
    char *grad
    char *row_var
    char *col_var
    char *variance
    Py_ssize_t matrices, size
    Py_ssize_t seg_first      # its first slot in the per-segment sums
    Py_ssize_t row_first      # its first row in the row sums (matrices)
    Py_ssize_t col_first      # its first slot in the column sums (B·C of them)
    Py_ssize_t mean_first     # its first slot in the row means (B of them)
    double alpha              # max(eps2, RMS(param)) · rho


cdef struct _Item:
    Py_ssize_t tensor, index


cdef enum:
    _SUMS, _FACTORS, _UPDATE_SUMS, _APPLY


cdef void _factored_item(int stage, _Factored *x, Py_ssize_t index, double *param_sq, double *grad_sq,
                         double *update_sq, double *row_sum, double *col_sum, char *row_mean) noexcept nogil:
    """One item of a stage: a row or a vector segment (sums, update sums, apply), a column stripe
    (sums, index >= rows: see _factored_items) or a matrix (factors)."""
    cdef const fo_factored *f = &x.f
    cdef Py_ssize_t rows = x.matrices * f.rows, b, stripe, stripes, lo, hi
    cdef double *psq = param_sq + x.seg_first
    cdef double *usq = update_sq + x.seg_first
    cdef char *means = row_mean + x.mean_first * 8
    if stage == _SUMS and x.is_matrix and index >= rows:   # a column stripe of matrix b
        index -= rows
        stripes = (f.cols + FO_FACTORED_STRIPE - 1) // FO_FACTORED_STRIPE
        b = index // stripes
        stripe = index % stripes
        lo = stripe * FO_FACTORED_STRIPE
        hi = min(lo + FO_FACTORED_STRIPE, f.cols)
        if x.is_double:
            fo_factored_columns_f64(f, <double *>x.grad + b * f.rows * f.cols, lo, hi,
                                    col_sum + x.col_first + b * f.cols)
        else:
            fo_factored_columns_f32(f, <float *>x.grad + b * f.rows * f.cols, lo, hi,
                                    col_sum + x.col_first + b * f.cols)
    elif stage == _SUMS and x.is_matrix:
        if x.is_double:
            fo_factored_sums_f64(f, <double *>x.param, <double *>x.grad, index, psq,
                                 grad_sq + x.seg_first, row_sum + x.row_first)
        else:
            fo_factored_sums_f32(f, <float *>x.param, <float *>x.grad, index, psq,
                                 grad_sq + x.seg_first, row_sum + x.row_first)
    elif stage == _SUMS:
        if x.is_double:
            fo_factored_vector_sums_f64(f, <double *>x.param, <double *>x.grad, <double *>x.variance, index,
                                        psq, usq)
        else:
            fo_factored_vector_sums_f32(f, <float *>x.param, <float *>x.grad, <float *>x.variance, index,
                                        psq, usq)
    elif stage == _FACTORS:
        if x.is_double:
            fo_factored_factors_f64(f, <double *>x.row_var + index * f.rows, <double *>x.col_var + index * f.cols,
                                    row_sum + x.row_first + index * f.rows,
                                    col_sum + x.col_first + index * f.cols,
                                    <double *>means + index)
        else:
            fo_factored_factors_f32(f, <float *>x.row_var + index * f.rows, <float *>x.col_var + index * f.cols,
                                    row_sum + x.row_first + index * f.rows,
                                    col_sum + x.col_first + index * f.cols,
                                    <float *>means + index)
    elif stage == _UPDATE_SUMS:
        if x.is_double:
            fo_factored_update_sums_f64(f, <double *>x.grad, <double *>x.row_var, <double *>x.col_var,
                                        <double *>means, index, usq)
        else:
            fo_factored_update_sums_f32(f, <float *>x.grad, <float *>x.row_var, <float *>x.col_var,
                                        <float *>means, index, usq)
    else:
        if x.is_double:
            fo_factored_apply_f64(f, <double *>x.param, <double *>x.grad, <double *>x.row_var,
                                  <double *>x.col_var, <double *>means, <double *>x.variance, index)
        else:
            fo_factored_apply_f32(f, <float *>x.param, <float *>x.grad, <float *>x.row_var,
                                  <float *>x.col_var, <float *>means, <float *>x.variance, index)


cdef Py_ssize_t _stage_items(int stage, _Factored *x) noexcept:
    """How many items tensor x has in a stage."""
    cdef Py_ssize_t rows = x.matrices * x.f.rows
    if x.size == 0:
        return 0
    if not x.is_matrix:
        return x.f.segments if stage == _SUMS or stage == _APPLY else 0
    if stage == _SUMS:
        return rows + x.matrices * ((x.f.cols + FO_FACTORED_STRIPE - 1) // FO_FACTORED_STRIPE)
    if stage == _FACTORS:
        return x.matrices
    return rows


cdef int _run_stage(int stage, _Factored *xs, Py_ssize_t n, _Item *items, int nthreads, double *param_sq,
                    double *grad_sq, double *update_sq, double *row_sum, double *col_sum,
                    char *row_mean) except -1:
    cdef Py_ssize_t t, i, count = 0, k
    for t in range(n):
        k = _stage_items(stage, &xs[t])
        for i in range(k):
            items[count].tensor = t
            items[count].index = i
            count += 1
    if count == 0:
        return 0
    cdef int threads = <int>min(<Py_ssize_t>nthreads, count)
    _will_run_parallel(threads)
    with nogil:
        for i in prange(count, num_threads=threads, schedule="dynamic", chunksize=4):
            _factored_item(stage, &xs[items[i].tensor], items[i].index, param_sq, grad_sq, update_sq,
                           row_sum, col_sum, row_mean)
    return 0


cdef inline char *_data(object a):
    return NULL if a is None else <char *>cnp.PyArray_DATA(<cnp.ndarray>a)


def factored_run(list tensors, double weight, double rho, double eps2, double d, double decay,
                 double grad_scale, bint maximize, num_threads=None):
    """Run an Adafactor step over checked tensors: (param, grad, row_var, col_var, variance, eps1) each,
    row_var and col_var None for a vector (ndim < 2), variance None for a matrix.

    The step's scalars come from fastopt.factored: weight = t^beta2_decay, rho = min(lr, 1/√t),
    decay = 1 − lr·weight_decay.  Per tensor, alpha = max(eps2, RMS(param))·rho from the param as it
    was, and the step −alpha / max(1, RMS(u)/d), in double, as fastopt.reference.adafactor_step."""
    cdef int nthreads = _resolve_threads(num_threads)
    cdef Py_ssize_t n = len(tensors), t, nseg = 0, nrows = 0, ncols = 0, nmeans = 0, most = 0, k, shape_c
    cdef _Factored *xs = <_Factored *>malloc((n if n > 0 else 1) * sizeof(_Factored))
    if xs == NULL:
        raise MemoryError()
    cdef double *sums = NULL
    cdef char *row_mean = NULL
    cdef _Item *items = NULL
    cdef _Factored *x
    cdef Py_ssize_t counts[4]
    cdef cnp.ndarray param
    counts[0] = counts[1] = counts[2] = counts[3] = 0
    try:
        for t in range(n):
            param, grad, row_var, col_var, variance, eps1 = tensors[t]
            x = &xs[t]
            x.is_double = cnp.PyArray_TYPE(param) == cnp.NPY_DOUBLE
            x.is_matrix = cnp.PyArray_NDIM(param) >= 2
            x.size = cnp.PyArray_SIZE(param)
            x.param, x.grad = _data(param), _data(grad)
            x.row_var, x.col_var, x.variance = _data(row_var), _data(col_var), _data(variance)
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
            x.seg_first, x.row_first, x.col_first, x.mean_first = nseg, nrows, ncols, nmeans
            nseg += x.matrices * x.f.rows * x.f.segments
            if x.is_matrix:
                nrows += x.matrices * x.f.rows
                ncols += x.matrices * x.f.cols
                nmeans += x.matrices
            for k in range(4):
                counts[k] += _stage_items(k, x)
        for k in range(4):
            most = max(most, counts[k])
        # param², grad² and u² per segment; row sums; column sums
        sums = <double *>malloc((3 * nseg + nrows + ncols + 1) * sizeof(double))
        row_mean = <char *>malloc((nmeans + 1) * 8)
        items = <_Item *>malloc((most + 1) * sizeof(_Item))
        if sums == NULL or row_mean == NULL or items == NULL:
            raise MemoryError()
        _run_factored(xs, n, items, nthreads, sums, nseg, nrows, row_mean, rho, eps2, d)
    finally:
        free(xs)
        free(sums)
        free(row_mean)
        free(items)


cdef int _run_factored(_Factored *xs, Py_ssize_t n, _Item *items, int nthreads, double *sums, Py_ssize_t nseg,
                       Py_ssize_t nrows, char *row_mean, double rho, double eps2, double d) except -1:
    cdef double *param_sq = sums
    cdef double *grad_sq = sums + nseg
    cdef double *update_sq = sums + 2 * nseg
    cdef double *row_sum = sums + 3 * nseg
    cdef double *col_sum = row_sum + nrows
    cdef Py_ssize_t t, segs
    cdef _Factored *x
    cdef double root_n, rms, clip
    _run_stage(_SUMS, xs, n, items, nthreads, param_sq, grad_sq, update_sq, row_sum, col_sum, row_mean)
    _run_stage(_FACTORS, xs, n, items, nthreads, param_sq, grad_sq, update_sq, row_sum, col_sum, row_mean)
    _run_stage(_UPDATE_SUMS, xs, n, items, nthreads, param_sq, grad_sq, update_sq, row_sum, col_sum, row_mean)
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
    _run_stage(_APPLY, xs, n, items, nthreads, param_sq, grad_sq, update_sq, row_sum, col_sum, row_mean)
    return 0
