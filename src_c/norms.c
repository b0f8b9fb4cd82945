/* The gradient-norm pass's last step (see norms.h for why it is
 * deterministic): the blocks' partial sums combined in a fixed order.  The
 * block sums themselves are compiled per SIMD level in kernels.c, beside the
 * step kernels, and follow the same level. */
#include <math.h>

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

double fo_norm_finish(const double *partials, ptrdiff_t nblocks, int kind, double p)
{
    double total = fo_combine_partials(partials, nblocks, kind);
    switch (kind) {
    case FO_NORM_L2: return sqrt(total);
    case FO_NORM_LP: return pow(total, 1.0 / p);
    default: return total;
    }
}
