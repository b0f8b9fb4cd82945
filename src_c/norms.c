/* The gradient-norm pass (see norms.h for why it is deterministic).
 *
 * Compiled with the flags of the step kernels: IEEE semantics, no FMA
 * contraction, so every addition happens as written. */
#include <math.h>
#include <stdlib.h>

#include "norms.h"

/* NaN-propagating max, so a NaN anywhere makes the inf-norm NaN (as torch's). */
static inline double nan_max(double a, double b) { return (a >= b || a != a) ? a : b; }

/* The contribution of one element to its lane, for each kind of norm. */
#define FO_ACCUMULATE(kind, acc, v)                                     \
    do {                                                                \
        double a_ = fabs((double)(v));                                  \
        switch (kind) {                                                 \
        case FO_NORM_L1: acc += a_; break;                              \
        case FO_NORM_L2: acc += a_ * a_; break;                         \
        case FO_NORM_LINF: acc = nan_max(acc, a_); break;               \
        default: acc += pow(a_, p); break;                              \
        }                                                               \
    } while (0)

static double combine(double a, double b, int kind)
{
    return kind == FO_NORM_LINF ? nan_max(a, b) : a + b;
}

/* Lanes combined pairwise: ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)). */
static double combine_lanes(double *lanes, int kind)
{
    for (int width = FO_NORM_LANES / 2; width >= 1; width /= 2)
        for (int l = 0; l < width; l++) lanes[l] = combine(lanes[2 * l], lanes[2 * l + 1], kind);
    return lanes[0];
}

/* One block per element type: the switch on kind sits outside the loop so
 * each loop is a plain lane-wise accumulation the compiler vectorizes. */
#define FO_BLOCK_FUNCTION(NAME, T)                                              \
    static double NAME(const T *x, ptrdiff_t n, int kind, double p)             \
    {                                                                           \
        double lanes[FO_NORM_LANES] = {0};                                      \
        ptrdiff_t full = n - n % FO_NORM_LANES;                                 \
        switch (kind) {                                                         \
        case FO_NORM_L1:                                                        \
            for (ptrdiff_t i = 0; i < full; i += FO_NORM_LANES)                 \
                _Pragma("omp simd") /* across lanes: no reassociation */        \
                for (int l = 0; l < FO_NORM_LANES; l++)                         \
                    FO_ACCUMULATE(FO_NORM_L1, lanes[l], x[i + l]);              \
            break;                                                              \
        case FO_NORM_L2:                                                        \
            for (ptrdiff_t i = 0; i < full; i += FO_NORM_LANES)                 \
                _Pragma("omp simd") /* across lanes: no reassociation */        \
                for (int l = 0; l < FO_NORM_LANES; l++)                         \
                    FO_ACCUMULATE(FO_NORM_L2, lanes[l], x[i + l]);              \
            break;                                                              \
        case FO_NORM_LINF:                                                      \
            for (ptrdiff_t i = 0; i < full; i += FO_NORM_LANES)                 \
                _Pragma("omp simd") /* across lanes: no reassociation */        \
                for (int l = 0; l < FO_NORM_LANES; l++)                         \
                    FO_ACCUMULATE(FO_NORM_LINF, lanes[l], x[i + l]);            \
            break;                                                              \
        default:                                                                \
            for (ptrdiff_t i = 0; i < full; i += FO_NORM_LANES)                 \
                _Pragma("omp simd") /* across lanes: no reassociation */        \
                for (int l = 0; l < FO_NORM_LANES; l++)                         \
                    FO_ACCUMULATE(FO_NORM_LP, lanes[l], x[i + l]);              \
            break;                                                              \
        }                                                                       \
        for (ptrdiff_t i = full; i < n; i++) FO_ACCUMULATE(kind, lanes[i - full], x[i]); \
        return combine_lanes(lanes, kind);                                      \
    }

FO_BLOCK_FUNCTION(block_f32, float)
FO_BLOCK_FUNCTION(block_f64, double)

/* Partials combined by halves, recursively: a fixed order, and accurate. */
static double combine_partials(const double *partials, ptrdiff_t n, int kind)
{
    if (n == 0) return 0.0;
    if (n == 1) return partials[0];
    ptrdiff_t half = n / 2;
    return combine(combine_partials(partials, half, kind),
                   combine_partials(partials + half, n - half, kind), kind);
}

int fo_total_norm(const fo_norm_tensor *tensors, ptrdiff_t ntensors, int kind, double p,
                  int nthreads, double *norm)
{
    /* first_block[t]: index of tensor t's first block among all blocks */
    ptrdiff_t *first_block = malloc((size_t)(ntensors + 1) * sizeof(ptrdiff_t));
    if (first_block == NULL) return -1;
    first_block[0] = 0;
    for (ptrdiff_t t = 0; t < ntensors; t++)
        first_block[t + 1] = first_block[t] + (tensors[t].size + FO_NORM_BLOCK - 1) / FO_NORM_BLOCK;
    ptrdiff_t nblocks = first_block[ntensors];
    double *partials = malloc((size_t)(nblocks > 0 ? nblocks : 1) * sizeof(double));
    if (partials == NULL) {
        free(first_block);
        return -1;
    }

#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
    for (ptrdiff_t b = 0; b < nblocks; b++) {
        ptrdiff_t lo = 0, hi = ntensors;  /* the tensor holding block b: first_block[lo] <= b */
        while (hi - lo > 1) {
            ptrdiff_t mid = (lo + hi) / 2;
            if (first_block[mid] <= b) lo = mid; else hi = mid;
        }
        const fo_norm_tensor *t = &tensors[lo];
        ptrdiff_t start = (b - first_block[lo]) * FO_NORM_BLOCK;
        ptrdiff_t n = t->size - start < FO_NORM_BLOCK ? t->size - start : FO_NORM_BLOCK;
        partials[b] = t->is_double ? block_f64((const double *)t->data + start, n, kind, p)
                                   : block_f32((const float *)t->data + start, n, kind, p);
    }

    double total = combine_partials(partials, nblocks, kind);
    free(partials);
    free(first_block);
    switch (kind) {
    case FO_NORM_L2: *norm = sqrt(total); break;
    case FO_NORM_LP: *norm = pow(total, 1.0 / p); break;
    default: *norm = total; break;
    }
    return 0;
}
