/* The body of factored.h's kernels, included once per type and SIMD level by
 * factored.c, which defines T (float or double), SQRT (its square root),
 * NAME(x) (x with the type's and the level's suffix), FO_FACTORED_16 (1 where
 * T is float: buffers may then be bfloat16 or float16, converted by convert.h's
 * NAMEL functions), and the table NAME(kernels).
 *
 * Every pass goes over its rows or segments in runs of at most FO_FACTORED_RUN
 * elements (a multiple of FO_NORM_LANES, so element i of a segment still goes
 * into lane i % FO_NORM_LANES): a 16-bit buffer's run is converted into
 * scratch, a buffer that holds T is used where it lies. */

/* Elements lo .. lo + n of a buffer as T: the buffer's own where it holds T, else its 16-bit values
 * converted exactly into scratch. */
static FO_ALWAYS_INLINE T *NAME(in)(int dtype, const void *buf, ptrdiff_t lo, ptrdiff_t n, T *scratch)
{
#if FO_FACTORED_16
    if (dtype != FO_F32) {
        NAMEL(load)(dtype, (const char *)buf + lo * 2, scratch, n);
        return scratch;
    }
#endif
    (void)dtype, (void)n, (void)scratch;
    return (T *)buf + lo;
}

/* A run computed in scratch (NAME(in)'s) rounded into its 16-bit buffer; nothing where the buffer holds T. */
static FO_ALWAYS_INLINE void NAME(out)(int dtype, void *buf, ptrdiff_t lo, ptrdiff_t n, const T *run)
{
#if FO_FACTORED_16
    if (dtype != FO_F32) NAMEL(store)(dtype, run, (char *)buf + lo * 2, n);
#endif
    (void)dtype, (void)buf, (void)lo, (void)n, (void)run;
}

/* Element i of a buffer, as T. */
static FO_ALWAYS_INLINE T NAME(get)(int dtype, const void *buf, ptrdiff_t i)
{
#if FO_FACTORED_16
    if (dtype == FO_BF16) return NAMEL(bf16_to_f32)(((const uint16_t *)buf)[i]);
    if (dtype == FO_F16) return NAMEL(f16_to_f32)(((const uint16_t *)buf)[i]);
#endif
    (void)dtype;
    return ((const T *)buf)[i];
}

/* x into element i of a buffer, rounded to its dtype: returns the value stored, as T. */
static FO_ALWAYS_INLINE T NAME(put)(int dtype, void *buf, ptrdiff_t i, T x)
{
#if FO_FACTORED_16
    if (dtype == FO_BF16) {
        uint16_t h = NAMEL(f32_to_bf16)(x);
        ((uint16_t *)buf)[i] = h;
        return NAMEL(bf16_to_f32)(h);
    }
    if (dtype == FO_F16) {
        uint16_t h = NAMEL(f32_to_f16)(x);
        ((uint16_t *)buf)[i] = h;
        return NAMEL(f16_to_f32)(h);
    }
#endif
    (void)dtype;
    ((T *)buf)[i] = x;
    return x;
}

/* The new param's run (elements lo .. lo + n of the tensor) into a 16-bit param, rounded to nearest
 * even or stochastically, and into param_copy; nothing else where the param holds T. */
static FO_ALWAYS_INLINE void NAME(param_out)(const fo_factored *f, void *param, void *param_copy, ptrdiff_t lo,
                                             ptrdiff_t n, const T *run)
{
#if FO_FACTORED_16
    int dtype = f->dtypes[FO_FACTORED_PARAM];
    if (dtype != FO_F32 && f->stochastic)
        NAMEL(store_stochastic)(dtype, run, (char *)param + lo * 2, n, f->key, (uint64_t)lo);
    else if (dtype != FO_F32)
        NAMEL(store)(dtype, run, (char *)param + lo * 2, n);
    if (param_copy != NULL)  /* from float32, before the param's own rounding */
        NAMEL(store)(f->dtypes[FO_FACTORED_COPY], run, (char *)param_copy + lo * 2, n);
#endif
    (void)f, (void)param, (void)param_copy, (void)lo, (void)n, (void)run;
}

/* g as the step sees it: scaled, and negated under maximize. */
static inline T NAME(grad_of)(const fo_factored *f, T g)
{
    T scaled = g * (T)f->grad_scale;
    return f->maximize ? -scaled : scaled;
}

/* torch.lerp(start, end, w) for a scalar weight, in torch's order. */
static inline T NAME(lerp)(T start, T end, T w)
{
    return (w < (T)0.5 && w > (T)-0.5) ? start + w * (end - start) : end - (end - start) * ((T)1 - w);
}

/* 1/√max(v, eps1²): NaN stays NaN, as torch's clamp. */
static inline T NAME(inv_root)(T v, T floor_sq)
{
    T clamped = v < floor_sq ? floor_sq : v;
    return (T)1 / SQRT(clamped);
}

/* Σ x² of a segment: the squares in double, into lanes in order, lanes combined by halves. */
#define FO_LANE_SUM(lanes) fo_combine_lanes(lanes, FO_NORM_L2)

/* The length of the run from r in a segment or row that ends at end. */
#define FO_RUN_LENGTH(r, end) ((end) - (r) < FO_FACTORED_RUN ? (end) - (r) : FO_FACTORED_RUN)

/* One row's sums (row: its index over all matrices): param² and g² per segment, and g² added into its
 * block's column sums (col, in row order). */
static inline void NAME(row_sums)(const fo_factored *f, const void *param, const void *grad, ptrdiff_t row,
                                  double *restrict psq, double *restrict gsq, double *restrict col)
{
    FO_ALIGNED(64) T p_run[FO_FACTORED_16 ? FO_FACTORED_RUN : 1];
    FO_ALIGNED(64) T g_run[FO_FACTORED_16 ? FO_FACTORED_RUN : 1];
    const int dp = f->dtypes[FO_FACTORED_PARAM], dg = f->dtypes[FO_FACTORED_GRAD];
    const char *p_ahead = (const char *)param + (row * f->cols + FO_FACTORED_AHEAD) * fo_factored_itemsize(dp);
    const char *g_ahead = (const char *)grad + (row * f->cols + FO_FACTORED_AHEAD) * fo_factored_itemsize(dg);
    for (ptrdiff_t s = 0; s < f->segments; s++) {
        ptrdiff_t lo = s * FO_NORM_BLOCK, end = f->cols - lo < FO_NORM_BLOCK ? f->cols : lo + FO_NORM_BLOCK;
        double pl[FO_NORM_LANES] = {0}, gl[FO_NORM_LANES] = {0};
        for (ptrdiff_t r = lo; r < end; r += FO_FACTORED_RUN) {
            ptrdiff_t m = FO_RUN_LENGTH(r, end), full = m - m % FO_NORM_LANES;
            const T *restrict p = NAME(in)(dp, param, row * f->cols + r, m, p_run);
            const T *restrict g = NAME(in)(dg, grad, row * f->cols + r, m, g_run);
            double *restrict c = col + r;
            for (ptrdiff_t i = 0; i < full; i += FO_NORM_LANES) {
                FO_FACTORED_PREFETCH(p_ahead + (r + i) * fo_factored_itemsize(dp));
                FO_FACTORED_PREFETCH(g_ahead + (r + i) * fo_factored_itemsize(dg));
#pragma omp simd
                for (int l = 0; l < FO_NORM_LANES; l++) {
                    double pv = (double)p[i + l], gv = (double)NAME(grad_of)(f, g[i + l]);
                    pl[l] += pv * pv;
                    gl[l] += gv * gv;
                    c[i + l] += gv * gv;
                }
            }
            for (ptrdiff_t i = full; i < m; i++) {
                double pv = (double)p[i], gv = (double)NAME(grad_of)(f, g[i]);
                pl[i - full] += pv * pv;
                gl[i - full] += gv * gv;
                c[i] += gv * gv;
            }
        }
        psq[s] = FO_LANE_SUM(pl);
        gsq[s] = FO_LANE_SUM(gl);
    }
}

/* Block `item` (= matrix · blocks + block) of block_rows rows: each row's sums and g² total, and
 * the block's column sums of g² (col_parts + item · C). */
static void NAME(sums)(const fo_factored *f, const void *param, const void *grad, ptrdiff_t item,
                       double *param_sq, double *grad_sq, double *row_sum, double *col_parts)
{
    ptrdiff_t b = item / f->blocks, first = b * f->rows + (item % f->blocks) * f->block_rows;
    ptrdiff_t end = b * f->rows + f->rows, last = first + f->block_rows < end ? first + f->block_rows : end;
    double *restrict col = col_parts + item * f->cols;
    for (ptrdiff_t c = 0; c < f->cols; c++) col[c] = 0.0;
    for (ptrdiff_t row = first; row < last; row++) {
        NAME(row_sums)(f, param, grad, row, param_sq + row * f->segments, grad_sq + row * f->segments, col);
        row_sum[row] = fo_factored_total(grad_sq + row * f->segments, f->segments);
    }
}

/* The factors of matrix b (a column's sum: its blocks' by halves): row_var and col_var moved towards this
 * step's means of g² and stored, and from the values stored the scales of u = g·min(row_scale·col_scale,
 * 1/eps1): row_scale = 1/√(row_var / max(mean(row_var), eps1)), col_scale = 1/√col_var, so that each
 * element of u costs two products. */
static void NAME(factors)(const fo_factored *f, void *row_vars, void *col_vars, const double *row_sums,
                          double *col_parts, void *row_scales, void *col_scales, ptrdiff_t b)
{
    const int dr = f->dtypes[FO_FACTORED_ROW_VAR], dc = f->dtypes[FO_FACTORED_COL_VAR];
    ptrdiff_t row0 = b * f->rows, col0 = b * f->cols;
    T *row_scale = (T *)row_scales + row0, *col_scale = (T *)col_scales + col0;
    const double *row_sum = row_sums + row0;
    double *parts = col_parts + b * f->blocks * f->cols;
    T w = (T)f->weight;
    double total = 0.0;
    fo_factored_rows_total(parts, 0, f->blocks, f->cols);   /* the column sums, into the first block's */
    for (ptrdiff_t r = 0; r < f->rows; r++) {
        T mean_sq = (T)(row_sum[r] / (double)f->cols);
        total += (double)NAME(put)(dr, row_vars, row0 + r, NAME(lerp)(NAME(get)(dr, row_vars, row0 + r), mean_sq, w));
    }
    T mean = (T)(total / (double)f->rows), floor = (T)f->eps1;
    mean = mean < floor ? floor : mean;
    for (ptrdiff_t r = 0; r < f->rows; r++) row_scale[r] = (T)1 / SQRT(NAME(get)(dr, row_vars, row0 + r) / mean);
    for (ptrdiff_t c = 0; c < f->cols; c++) {
        T mean_sq = (T)(parts[c] / (double)f->rows);
        T stored = NAME(put)(dc, col_vars, col0 + c, NAME(lerp)(NAME(get)(dc, col_vars, col0 + c), mean_sq, w));
        col_scale[c] = (T)1 / SQRT(stored);
    }
}

/* min(a, cap), NaN staying NaN */
static inline T NAME(capped)(T a, T cap) { return a > cap ? cap : a; }

/* u² of a run of m elements of a row into the lanes of its segment's sum (ul), prefetching the grad's own
 * memory FO_FACTORED_AHEAD elements past g_at; the pointers are parameters, so that restrict holds. */
static FO_ALWAYS_INLINE void NAME(run_update_sums)(const fo_factored *f, const T *restrict g,
                                                   const T *restrict c, ptrdiff_t m, T rs, T cap,
                                                   double *restrict ul, const char *g_at, ptrdiff_t g_size)
{
    ptrdiff_t full = m - m % FO_NORM_LANES;
    for (ptrdiff_t i = 0; i < full; i += FO_NORM_LANES) {
        FO_FACTORED_PREFETCH(g_at + (i + FO_FACTORED_AHEAD) * g_size);
#pragma omp simd
        for (int l = 0; l < FO_NORM_LANES; l++) {
            double u = (double)(NAME(capped)(rs * c[i + l], cap) * NAME(grad_of)(f, g[i + l]));
            ul[l] += u * u;
        }
    }
    for (ptrdiff_t i = full; i < m; i++) {
        double u = (double)(NAME(capped)(rs * c[i], cap) * NAME(grad_of)(f, g[i]));
        ul[i - full] += u * u;
    }
}

static void NAME(update_sums)(const fo_factored *f, const void *grad, const void *row_scales,
                              const void *col_scales, ptrdiff_t row, double *update_sq)
{
    FO_ALIGNED(64) T g_run[FO_FACTORED_16 ? FO_FACTORED_RUN : 1];
    const int dg = f->dtypes[FO_FACTORED_GRAD];
    const ptrdiff_t gs = fo_factored_itemsize(dg), base = row * f->cols;
    const T *cs = (const T *)col_scales + (row / f->rows) * f->cols;
    T rs = ((const T *)row_scales)[row], cap = (T)1 / SQRT((T)f->eps1 * (T)f->eps1);
    double *usq = update_sq + row * f->segments;
    for (ptrdiff_t s = 0; s < f->segments; s++) {
        ptrdiff_t lo = s * FO_NORM_BLOCK, end = f->cols - lo < FO_NORM_BLOCK ? f->cols : lo + FO_NORM_BLOCK;
        double ul[FO_NORM_LANES] = {0};
        for (ptrdiff_t r = lo; r < end; r += FO_FACTORED_RUN) {
            ptrdiff_t m = FO_RUN_LENGTH(r, end);
            NAME(run_update_sums)(f, NAME(in)(dg, grad, base + r, m, g_run), cs + r, m, rs, cap, ul,
                                  (const char *)grad + (base + r) * gs, gs);
        }
        usq[s] = FO_LANE_SUM(ul);
    }
}

/* A vector's segment: its variance updated and stored, and param² and u² summed (u from the variance as
 * stored). */
static void NAME(vector_sums)(const fo_factored *f, const void *param, const void *grad, void *variance,
                              ptrdiff_t segment, double *param_sq, double *update_sq)
{
    FO_ALIGNED(64) T p_run[FO_FACTORED_16 ? FO_FACTORED_RUN : 1];
    FO_ALIGNED(64) T g_run[FO_FACTORED_16 ? FO_FACTORED_RUN : 1];
    FO_ALIGNED(64) T v_run[FO_FACTORED_16 ? FO_FACTORED_RUN : 1];
    const int dp = f->dtypes[FO_FACTORED_PARAM], dg = f->dtypes[FO_FACTORED_GRAD];
    const int dv = f->dtypes[FO_FACTORED_VARIANCE];
    ptrdiff_t lo = segment * FO_NORM_BLOCK, end = f->cols - lo < FO_NORM_BLOCK ? f->cols : lo + FO_NORM_BLOCK;
    T w = (T)f->weight, floor_sq = (T)f->eps1 * (T)f->eps1;
    double pl[FO_NORM_LANES] = {0}, ul[FO_NORM_LANES] = {0};
    for (ptrdiff_t r = lo; r < end; r += FO_FACTORED_RUN) {
        ptrdiff_t m = FO_RUN_LENGTH(r, end), full = m - m % FO_NORM_LANES;
        const T *restrict p = NAME(in)(dp, param, r, m, p_run);
        const T *restrict g = NAME(in)(dg, grad, r, m, g_run);
        T *restrict v = NAME(in)(dv, variance, r, m, v_run);
        if (FO_FACTORED_16 && dv != FO_F32) {
            /* a 16-bit variance: updated, rounded into its buffer, and read back as stored */
#pragma omp simd
            for (ptrdiff_t i = 0; i < m; i++) {
                T gv = NAME(grad_of)(f, g[i]);
                v[i] = NAME(lerp)(v[i], gv * gv, w);
            }
            NAME(out)(dv, variance, r, m, v);
            v = NAME(in)(dv, variance, r, m, v_run);
            for (ptrdiff_t i = 0; i < full; i += FO_NORM_LANES) {
#pragma omp simd
                for (int l = 0; l < FO_NORM_LANES; l++) {
                    double pv = (double)p[i + l];
                    double u = (double)(NAME(inv_root)(v[i + l], floor_sq) * NAME(grad_of)(f, g[i + l]));
                    pl[l] += pv * pv;
                    ul[l] += u * u;
                }
            }
        } else {
            for (ptrdiff_t i = 0; i < full; i += FO_NORM_LANES) {
#pragma omp simd
                for (int l = 0; l < FO_NORM_LANES; l++) {
                    T gv = NAME(grad_of)(f, g[i + l]);
                    T nv = NAME(lerp)(v[i + l], gv * gv, w);
                    double pv = (double)p[i + l], u = (double)(NAME(inv_root)(nv, floor_sq) * gv);
                    v[i + l] = nv;
                    pl[l] += pv * pv;
                    ul[l] += u * u;
                }
            }
            for (ptrdiff_t i = full; i < m; i++)
                v[i] = NAME(lerp)(v[i], NAME(grad_of)(f, g[i]) * NAME(grad_of)(f, g[i]), w);
        }
        for (ptrdiff_t i = full; i < m; i++) {  /* the tail, from the variance as stored */
            double pv = (double)p[i], u = (double)(NAME(inv_root)(v[i], floor_sq) * NAME(grad_of)(f, g[i]));
            pl[i - full] += pv * pv;
            ul[i - full] += u * u;
        }
    }
    param_sq[segment] = FO_LANE_SUM(pl);
    update_sq[segment] = FO_LANE_SUM(ul);
}

/* θ ← θ·decay + step·u over n elements of a matrix's row (u = g·min(rs·cs, cap)), prefetching the
 * buffers' own memory FO_FACTORED_AHEAD elements past p_at and g_at (where the run lies in them). */
static FO_ALWAYS_INLINE void NAME(apply_row)(const fo_factored *f, T *restrict p, const T *restrict g,
                                             const T *restrict cs, ptrdiff_t n, T rs, T cap, char *p_at,
                                             const char *g_at, ptrdiff_t p_size, ptrdiff_t g_size)
{
    T decay = (T)f->decay, step = (T)f->step;
    for (ptrdiff_t lo = 0; lo < n; lo += FO_NORM_LANES) {
        ptrdiff_t hi = lo + FO_NORM_LANES < n ? lo + FO_NORM_LANES : n;
        FO_FACTORED_PREFETCH_W(p_at + (lo + FO_FACTORED_AHEAD) * p_size);
        FO_FACTORED_PREFETCH(g_at + (lo + FO_FACTORED_AHEAD) * g_size);
#pragma omp simd
        for (ptrdiff_t c = lo; c < hi; c++)
            p[c] = p[c] * decay + step * (NAME(capped)(rs * cs[c], cap) * NAME(grad_of)(f, g[c]));
    }
}

/* θ ← θ·(1 − lr·weight_decay) + step·u: a row of a matrix, or a segment of a vector (variance given). */
static void NAME(apply)(const fo_factored *f, void *param, const void *grad, const void *row_scales,
                        const void *col_scales, const void *variance, void *param_copy, ptrdiff_t item)
{
    FO_ALIGNED(64) T p_run[FO_FACTORED_16 ? FO_FACTORED_RUN : 1];
    FO_ALIGNED(64) T g_run[FO_FACTORED_16 ? FO_FACTORED_RUN : 1];
    FO_ALIGNED(64) T v_run[FO_FACTORED_16 ? FO_FACTORED_RUN : 1];
    const int dp = f->dtypes[FO_FACTORED_PARAM], dg = f->dtypes[FO_FACTORED_GRAD];
    T decay = (T)f->decay, step = (T)f->step, floor_sq = (T)f->eps1 * (T)f->eps1;
    if (variance != NULL) {
        const int dv = f->dtypes[FO_FACTORED_VARIANCE];
        ptrdiff_t lo = item * FO_NORM_BLOCK, end = f->cols - lo < FO_NORM_BLOCK ? f->cols : lo + FO_NORM_BLOCK;
        for (ptrdiff_t r = lo; r < end; r += FO_FACTORED_RUN) {
            ptrdiff_t m = FO_RUN_LENGTH(r, end);
            T *restrict p = NAME(in)(dp, param, r, m, p_run);
            const T *restrict g = NAME(in)(dg, grad, r, m, g_run);
            const T *restrict v = NAME(in)(dv, variance, r, m, v_run);
#pragma omp simd
            for (ptrdiff_t i = 0; i < m; i++)
                p[i] = p[i] * decay + step * (NAME(inv_root)(v[i], floor_sq) * NAME(grad_of)(f, g[i]));
            NAME(param_out)(f, param, param_copy, r, m, p);
        }
        return;
    }
    ptrdiff_t b = item / f->rows, base = item * f->cols;
    const T *restrict cs = (const T *)col_scales + b * f->cols;
    T rs = ((const T *)row_scales)[item], cap = (T)1 / SQRT(floor_sq);
    for (ptrdiff_t r = 0; r < f->cols; r += FO_FACTORED_RUN) {
        ptrdiff_t m = FO_RUN_LENGTH(r, f->cols);
        T *p = NAME(in)(dp, param, base + r, m, p_run);
        NAME(apply_row)(f, p, NAME(in)(dg, grad, base + r, m, g_run), cs + r, m, rs, cap,
                        (char *)param + (base + r) * fo_factored_itemsize(dp),
                        (const char *)grad + (base + r) * fo_factored_itemsize(dg), fo_factored_itemsize(dp),
                        fo_factored_itemsize(dg));
        NAME(param_out)(f, param, param_copy, base + r, m, p);
    }
}

static const fo_factored_kernels NAME(kernels) = {
    NAME(sums), NAME(factors), NAME(update_sums), NAME(vector_sums), NAME(apply)};

#undef FO_LANE_SUM
#undef FO_RUN_LENGTH
