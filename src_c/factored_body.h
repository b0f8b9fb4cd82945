/* The body of factored.h's kernels, included once per type and SIMD level by
 * factored.c, which defines T (float or double), SQRT (its square root) and
 * NAME(x) (x with the type's and the level's suffix), and the table NAME(kernels). */

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

/* One row's sums: param² and g² per segment, and g² added into its block's column sums (col,
 * in row order). */
static inline void NAME(row_sums)(const fo_factored *f, const T *restrict p, const T *restrict g,
                                  double *restrict psq, double *restrict gsq, double *restrict col)
{
    for (ptrdiff_t s = 0; s < f->segments; s++) {
        ptrdiff_t lo = s * FO_NORM_BLOCK, n = f->cols - lo < FO_NORM_BLOCK ? f->cols - lo : FO_NORM_BLOCK;
        ptrdiff_t full = n - n % FO_NORM_LANES;
        double pl[FO_NORM_LANES] = {0}, gl[FO_NORM_LANES] = {0};
        for (ptrdiff_t i = lo; i < lo + full; i += FO_NORM_LANES) {
            FO_FACTORED_PREFETCH(p + i + FO_FACTORED_AHEAD);
            FO_FACTORED_PREFETCH(g + i + FO_FACTORED_AHEAD);
#pragma omp simd
            for (int l = 0; l < FO_NORM_LANES; l++) {
                double pv = (double)p[i + l], gv = (double)NAME(grad_of)(f, g[i + l]);
                pl[l] += pv * pv;
                gl[l] += gv * gv;
                col[i + l] += gv * gv;
            }
        }
        for (ptrdiff_t i = lo + full; i < lo + n; i++) {
            double pv = (double)p[i], gv = (double)NAME(grad_of)(f, g[i]);
            pl[i - lo - full] += pv * pv;
            gl[i - lo - full] += gv * gv;
            col[i] += gv * gv;
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
        NAME(row_sums)(f, (const T *)param + row * f->cols, (const T *)grad + row * f->cols,
                       param_sq + row * f->segments, grad_sq + row * f->segments, col);
        row_sum[row] = fo_factored_total(grad_sq + row * f->segments, f->segments);
    }
}

/* The factors of matrix b (a column's sum: its blocks' by halves): row_var and col_var moved towards this step's means of g², and the
 * scales of u = g·min(row_scale·col_scale, 1/eps1): row_scale = 1/√(row_var / max(mean(row_var), eps1)),
 * col_scale = 1/√col_var, so that each element of u costs two products. */
static void NAME(factors)(const fo_factored *f, void *row_vars, void *col_vars, const double *row_sums,
                          double *col_parts, void *row_scales, void *col_scales, ptrdiff_t b)
{
    T *row_var = (T *)row_vars + b * f->rows, *col_var = (T *)col_vars + b * f->cols;
    T *row_scale = (T *)row_scales + b * f->rows, *col_scale = (T *)col_scales + b * f->cols;
    const double *row_sum = row_sums + b * f->rows;
    double *parts = col_parts + b * f->blocks * f->cols;
    T w = (T)f->weight;
    double total = 0.0;
    fo_factored_rows_total(parts, 0, f->blocks, f->cols);   /* the column sums, into the first block's */
    for (ptrdiff_t r = 0; r < f->rows; r++) {
        row_var[r] = NAME(lerp)(row_var[r], (T)(row_sum[r] / (double)f->cols), w);
        total += (double)row_var[r];
    }
    T mean = (T)(total / (double)f->rows), floor = (T)f->eps1;
    mean = mean < floor ? floor : mean;
    for (ptrdiff_t r = 0; r < f->rows; r++) row_scale[r] = (T)1 / SQRT(row_var[r] / mean);
    for (ptrdiff_t c = 0; c < f->cols; c++) {
        col_var[c] = NAME(lerp)(col_var[c], (T)(parts[c] / (double)f->rows), w);
        col_scale[c] = (T)1 / SQRT(col_var[c]);
    }
}

/* min(a, cap), NaN staying NaN */
static inline T NAME(capped)(T a, T cap) { return a > cap ? cap : a; }

static void NAME(update_sums)(const fo_factored *f, const void *grad, const void *row_scales,
                              const void *col_scales, ptrdiff_t row, double *update_sq)
{
    ptrdiff_t b = row / f->rows;
    const T *restrict g = (const T *)grad + row * f->cols;
    const T *restrict cs = (const T *)col_scales + b * f->cols;
    T rs = ((const T *)row_scales)[row], cap = (T)1 / SQRT((T)f->eps1 * (T)f->eps1);
    double *restrict usq = update_sq + row * f->segments;
    for (ptrdiff_t s = 0; s < f->segments; s++) {
        ptrdiff_t lo = s * FO_NORM_BLOCK, n = f->cols - lo < FO_NORM_BLOCK ? f->cols - lo : FO_NORM_BLOCK;
        ptrdiff_t full = n - n % FO_NORM_LANES;
        double ul[FO_NORM_LANES] = {0};
        for (ptrdiff_t i = lo; i < lo + full; i += FO_NORM_LANES) {
            FO_FACTORED_PREFETCH(g + i + FO_FACTORED_AHEAD);
#pragma omp simd
            for (int l = 0; l < FO_NORM_LANES; l++) {
                double u = (double)(NAME(capped)(rs * cs[i + l], cap) * NAME(grad_of)(f, g[i + l]));
                ul[l] += u * u;
            }
        }
        for (ptrdiff_t i = lo + full; i < lo + n; i++) {
            double u = (double)(NAME(capped)(rs * cs[i], cap) * NAME(grad_of)(f, g[i]));
            ul[i - lo - full] += u * u;
        }
        usq[s] = FO_LANE_SUM(ul);
    }
}

static void NAME(vector_sums)(const fo_factored *f, const void *param, const void *grad, void *variance,
                              ptrdiff_t segment, double *param_sq, double *update_sq)
{
    ptrdiff_t lo = segment * FO_NORM_BLOCK, n = f->cols - lo < FO_NORM_BLOCK ? f->cols - lo : FO_NORM_BLOCK;
    ptrdiff_t full = n - n % FO_NORM_LANES;
    const T *restrict p = (const T *)param + lo;
    const T *restrict g = (const T *)grad + lo;
    T *restrict v = (T *)variance + lo;
    T w = (T)f->weight, floor_sq = (T)f->eps1 * (T)f->eps1;
    double pl[FO_NORM_LANES] = {0}, ul[FO_NORM_LANES] = {0};
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
    for (ptrdiff_t i = full; i < n; i++) {
        T gv = NAME(grad_of)(f, g[i]);
        T nv = NAME(lerp)(v[i], gv * gv, w);
        double pv = (double)p[i], u = (double)(NAME(inv_root)(nv, floor_sq) * gv);
        v[i] = nv;
        pl[i - full] += pv * pv;
        ul[i - full] += u * u;
    }
    param_sq[segment] = FO_LANE_SUM(pl);
    update_sq[segment] = FO_LANE_SUM(ul);
}

/* θ ← θ·(1 − lr·weight_decay) + step·u: a row of a matrix, or a segment of a vector (variance given). */
static void NAME(apply)(const fo_factored *f, void *param, const void *grad, const void *row_scales,
                        const void *col_scales, const void *variance, ptrdiff_t item)
{
    T decay = (T)f->decay, step = (T)f->step, floor_sq = (T)f->eps1 * (T)f->eps1;
    if (variance != NULL) {
        ptrdiff_t lo = item * FO_NORM_BLOCK, n = f->cols - lo < FO_NORM_BLOCK ? f->cols - lo : FO_NORM_BLOCK;
        T *restrict p = (T *)param + lo;
        const T *restrict g = (const T *)grad + lo;
        const T *restrict v = (const T *)variance + lo;
#pragma omp simd
        for (ptrdiff_t i = 0; i < n; i++)
            p[i] = p[i] * decay + step * (NAME(inv_root)(v[i], floor_sq) * NAME(grad_of)(f, g[i]));
        return;
    }
    ptrdiff_t b = item / f->rows;
    T *restrict p = (T *)param + item * f->cols;
    const T *restrict g = (const T *)grad + item * f->cols;
    const T *restrict cs = (const T *)col_scales + b * f->cols;
    T rs = ((const T *)row_scales)[item], cap = (T)1 / SQRT(floor_sq);
    for (ptrdiff_t lo = 0; lo < f->cols; lo += FO_NORM_LANES) {
        ptrdiff_t hi = lo + FO_NORM_LANES < f->cols ? lo + FO_NORM_LANES : f->cols;
        FO_FACTORED_PREFETCH_W(p + lo + FO_FACTORED_AHEAD);
        FO_FACTORED_PREFETCH(g + lo + FO_FACTORED_AHEAD);
#pragma omp simd
        for (ptrdiff_t c = lo; c < hi; c++)
            p[c] = p[c] * decay + step * (NAME(capped)(rs * cs[c], cap) * NAME(grad_of)(f, g[c]));
    }
}

static const fo_factored_kernels NAME(kernels) = {
    NAME(sums), NAME(factors), NAME(update_sums), NAME(vector_sums), NAME(apply)};

#undef FO_LANE_SUM
