/* The gradient-norm pass (see norms.h for why it is deterministic): blocks
 * summed in parallel, partials combined in a fixed order.  The block sums
 * themselves are compiled per SIMD level in kernels.c, beside the step
 * kernels, and follow the same level. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "norms.h"

/* Partials combined by halves, recursively: a fixed order, and accurate. */
static double fo_combine_partials(const double *partials, ptrdiff_t n, int kind)
{
    if (n == 0) return 0.0;
    if (n == 1) return partials[0];
    ptrdiff_t half = n / 2;
    return fo_combine(fo_combine_partials(partials, half, kind),
                      fo_combine_partials(partials + half, n - half, kind), kind);
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
    double *partials = calloc((size_t)(nblocks > 0 ? nblocks : 1), sizeof(double));
    if (partials == NULL) {
        free(first_block);
        return -1;
    }

    const fo_norm_block_fn block[2] = {fo_get_norm_block(0), fo_get_norm_block(1)};
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
        size_t itemsize = t->is_double ? sizeof(double) : sizeof(float);
        partials[b] = block[t->is_double]((const char *)t->data + start * itemsize, n, kind, p);
    }

    double total = fo_combine_partials(partials, nblocks, kind);
    free(partials);
    free(first_block);
    switch (kind) {
    case FO_NORM_L2: *norm = sqrt(total); break;
    case FO_NORM_LP: *norm = pow(total, 1.0 / p); break;
    default: *norm = total; break;
    }
    return 0;
}
