/* The body of factored.h's kernels, included once per type by factored.c,
 * which defines T (float or double) and NAME(x) (x with the type's suffix). */

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

void NAME(fo_factored_sums)(const fo_factored *f, const T *param, const T *grad, ptrdiff_t row,
                            double *param_sq, double *grad_sq, double *row_sum)
{
    const T *restrict p = param + row * f->cols;
    const T *restrict g = grad + row * f->cols;
    double *restrict psq = param_sq + row * f->segments;
    double *restrict gsq = grad_sq + row * f->segments;
    for (ptrdiff_t s = 0; s < f->segments; s++) {
        ptrdiff_t lo = s * FO_NORM_BLOCK, n = f->cols - lo < FO_NORM_BLOCK ? f->cols - lo : FO_NORM_BLOCK;
        ptrdiff_t full = n - n % FO_NORM_LANES;
        double pl[FO_NORM_LANES] = {0}, gl[FO_NORM_LANES] = {0};
        for (ptrdiff_t i = lo; i < lo + full; i += FO_NORM_LANES) {
#pragma omp simd
            for (int l = 0; l < FO_NORM_LANES; l++) {
                double pv = (double)p[i + l], gv = (double)NAME(grad_of)(f, g[i + l]);
                pl[l] += pv * pv;
                gl[l] += gv * gv;
            }
        }
        for (ptrdiff_t i = lo + full; i < lo + n; i++) {
            double pv = (double)p[i], gv = (double)NAME(grad_of)(f, g[i]);
            pl[i - lo - full] += pv * pv;
            gl[i - lo - full] += gv * gv;
        }
        psq[s] = FO_LANE_SUM(pl);
        gsq[s] = FO_LANE_SUM(gl);
    }
    row_sum[row] = fo_factored_total(gsq, f->segments);
}

void NAME(fo_factored_columns)(const fo_factored *f, const T *grad, ptrdiff_t col_lo, ptrdiff_t col_hi,
                               double *col_sum)
{
    double *restrict acc = col_sum;
    for (ptrdiff_t c = col_lo; c < col_hi; c++) acc[c] = 0.0;
    for (ptrdiff_t r = 0; r < f->rows; r++) {
        const T *restrict g = grad + r * f->cols;
#pragma omp simd
        for (ptrdiff_t c = col_lo; c < col_hi; c++) {
            double gv = (double)NAME(grad_of)(f, g[c]);
            acc[c] += gv * gv;
        }
    }
}

void NAME(fo_factored_factors)(const fo_factored *f, T *row_var, T *col_var, const double *row_sum,
                               const double *col_sum, T *row_mean)
{
    T w = (T)f->weight;
    double total = 0.0;
    for (ptrdiff_t r = 0; r < f->rows; r++) {
        row_var[r] = NAME(lerp)(row_var[r], (T)(row_sum[r] / (double)f->cols), w);
        total += (double)row_var[r];
    }
    for (ptrdiff_t c = 0; c < f->cols; c++)
        col_var[c] = NAME(lerp)(col_var[c], (T)(col_sum[c] / (double)f->rows), w);
    T mean = (T)(total / (double)f->rows), floor = (T)f->eps1;
    *row_mean = mean < floor ? floor : mean;
}

void NAME(fo_factored_update_sums)(const fo_factored *f, const T *grad, const T *row_var, const T *col_var,
                                   const T *row_mean, ptrdiff_t row, double *update_sq)
{
    ptrdiff_t b = row / f->rows;
    const T *restrict g = grad + row * f->cols;
    const T *restrict cv = col_var + b * f->cols;
    T rv = row_var[row], mean = row_mean[b], floor_sq = (T)f->eps1 * (T)f->eps1;
    double *restrict usq = update_sq + row * f->segments;
    for (ptrdiff_t s = 0; s < f->segments; s++) {
        ptrdiff_t lo = s * FO_NORM_BLOCK, n = f->cols - lo < FO_NORM_BLOCK ? f->cols - lo : FO_NORM_BLOCK;
        ptrdiff_t full = n - n % FO_NORM_LANES;
        double ul[FO_NORM_LANES] = {0};
        for (ptrdiff_t i = lo; i < lo + full; i += FO_NORM_LANES) {
#pragma omp simd
            for (int l = 0; l < FO_NORM_LANES; l++) {
                T v = (rv * cv[i + l]) / mean;
                double u = (double)(NAME(inv_root)(v, floor_sq) * NAME(grad_of)(f, g[i + l]));
                ul[l] += u * u;
            }
        }
        for (ptrdiff_t i = lo + full; i < lo + n; i++) {
            T v = (rv * cv[i]) / mean;
            double u = (double)(NAME(inv_root)(v, floor_sq) * NAME(grad_of)(f, g[i]));
            ul[i - lo - full] += u * u;
        }
        usq[s] = FO_LANE_SUM(ul);
    }
}

void NAME(fo_factored_vector_sums)(const fo_factored *f, const T *param, const T *grad, T *variance,
                                   ptrdiff_t segment, double *param_sq, double *update_sq)
{
    ptrdiff_t lo = segment * FO_NORM_BLOCK, n = f->cols - lo < FO_NORM_BLOCK ? f->cols - lo : FO_NORM_BLOCK;
    ptrdiff_t full = n - n % FO_NORM_LANES;
    const T *restrict p = param + lo;
    const T *restrict g = grad + lo;
    T *restrict v = variance + lo;
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
void NAME(fo_factored_apply)(const fo_factored *f, T *param, const T *grad, const T *row_var,
                             const T *col_var, const T *row_mean, const T *variance, ptrdiff_t item)
{
    T decay = (T)f->decay, step = (T)f->step, floor_sq = (T)f->eps1 * (T)f->eps1;
    if (variance != NULL) {
        ptrdiff_t lo = item * FO_NORM_BLOCK, n = f->cols - lo < FO_NORM_BLOCK ? f->cols - lo : FO_NORM_BLOCK;
        T *restrict p = param + lo;
        const T *restrict g = grad + lo;
        const T *restrict v = variance + lo;
#pragma omp simd
        for (ptrdiff_t i = 0; i < n; i++)
            p[i] = p[i] * decay + step * (NAME(inv_root)(v[i], floor_sq) * NAME(grad_of)(f, g[i]));
        return;
    }
    ptrdiff_t b = item / f->rows;
    T *restrict p = param + item * f->cols;
    const T *restrict g = grad + item * f->cols;
    const T *restrict cv = col_var + b * f->cols;
    T rv = row_var[item], mean = row_mean[b];
#pragma omp simd
    for (ptrdiff_t c = 0; c < f->cols; c++)
        p[c] = p[c] * decay + step * (NAME(inv_root)((rv * cv[c]) / mean, floor_sq) * NAME(grad_of)(f, g[c]));
}

#undef FO_LANE_SUM
