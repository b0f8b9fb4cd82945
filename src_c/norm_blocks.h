/* The per-block sums of the norm pass, written once and included once per
 * (dtype, SIMD level) by kernels.c (instantiate.h).  The includer defines T
 * (float, double, or uint16_t for the 16-bit floats), NAME(x), LOAD(x), the
 * element as a float or double (exact), and ACC, the type LOAD gives.
 *
 * Every kind sums element i of a block into lane i % FO_NORM_LANES, in
 * float64, in element order; `omp simd` runs across lanes, never along one,
 * so no addition is reassociated and every SIMD level gives the same bits. */

static double NAME(block)(const void *data, ptrdiff_t n, int kind, double p)
{
    const T *x = (const T *)data;
    double lanes[FO_NORM_LANES] = {0};
    ptrdiff_t full = n - n % FO_NORM_LANES;
    switch (kind) {
    case FO_NORM_L1:
        for (ptrdiff_t i = 0; i < full; i += FO_NORM_LANES) {
#pragma omp simd
            for (int l = 0; l < FO_NORM_LANES; l++) lanes[l] += fabs((double)LOAD(x[i + l]));
        }
        break;
    case FO_NORM_L2:
        for (ptrdiff_t i = 0; i < full; i += FO_NORM_LANES) {
#pragma omp simd
            for (int l = 0; l < FO_NORM_LANES; l++) {
                double v = (double)LOAD(x[i + l]);
                lanes[l] += v * v;
            }
        }
        break;
    case FO_NORM_LINF:
        for (ptrdiff_t i = 0; i < full; i += FO_NORM_LANES) {
#pragma omp simd
            for (int l = 0; l < FO_NORM_LANES; l++) lanes[l] = fo_nan_max(lanes[l], fabs((double)LOAD(x[i + l])));
        }
        break;
    case FO_NORM_FINITE: {
        /* x * 0 is 0 for a finite x and NaN otherwise; a sum of zeros is
         * exact in any order, so here the compiler may reassociate freely. */
        ACC acc = 0;
#pragma omp simd reduction(+ : acc)
        for (ptrdiff_t i = 0; i < n; i++) acc += LOAD(x[i]) * (ACC)0;
        return (double)acc;
    }
    default:
        for (ptrdiff_t i = 0; i < full; i += FO_NORM_LANES)
            for (int l = 0; l < FO_NORM_LANES; l++) lanes[l] += pow(fabs((double)LOAD(x[i + l])), p);
        break;
    }
    for (ptrdiff_t i = full; i < n; i++) lanes[i - full] = fo_accumulate(lanes[i - full], (double)LOAD(x[i]), kind, p);
    return fo_combine_lanes(lanes, kind);
}
