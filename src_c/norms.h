/* The gradient-norm pass: one read of many tensors, bit-identical for any thread count.
 *
 * Each tensor is cut into blocks of FO_NORM_BLOCK elements counted from its
 * own start, so block boundaries depend on element indices only.  A block is
 * summed in float64 into FO_NORM_LANES interleaved lanes (element i into lane
 * i % FO_NORM_LANES), which the compiler can keep in vector registers without
 * reassociating anything; the lanes, then the blocks' partial sums, are
 * combined in a fixed order.  Which thread sums a block changes nothing (the
 * boundary, fastopt/_core.pyx, runs the blocks in its parallel region).
 */
#ifndef FASTOPT_NORMS_H
#define FASTOPT_NORMS_H

#include <math.h>
#include <stddef.h>

#define FO_NORM_BLOCK 8192
#define FO_NORM_LANES 16

enum fo_norm_kind {
    FO_NORM_L1 = 0,   /* sum |x|                                  */
    FO_NORM_L2,       /* sqrt(sum x^2)                            */
    FO_NORM_LINF,     /* max |x|; NaN if any x is NaN             */
    FO_NORM_LP,       /* (sum |x|^p)^(1/p), any p > 0             */
    FO_NORM_FINITE    /* 0 if every x is finite, else NaN         */
};

/* The sum of one block (n <= FO_NORM_BLOCK elements) of a float32 or
 * float64 tensor, or of a bfloat16 or float16 one; one per (dtype, SIMD level), from
 * norm_blocks.h by kernels.c, which picks the level (fo_get_norm_block). */
typedef double (*fo_norm_block_fn)(const void *data, ptrdiff_t n, int kind, double p);
fo_norm_block_fn fo_get_norm_block(int dtype);   /* enum fo_dtype */

/* NaN-propagating max, so a NaN anywhere makes the inf-norm NaN (as torch's). */
static inline double fo_nan_max(double a, double b) { return (a >= b || a != a) ? a : b; }

static inline double fo_combine(double a, double b, int kind)
{
    return kind == FO_NORM_LINF ? fo_nan_max(a, b) : a + b;
}

/* One element into its lane (the tails of blocks). */
static inline double fo_accumulate(double acc, double x, int kind, double p)
{
    double a = fabs(x);
    switch (kind) {
    case FO_NORM_L1: return acc + a;
    case FO_NORM_L2: return acc + a * a;
    case FO_NORM_LINF: return fo_nan_max(acc, a);
    default: return acc + pow(a, p);
    }
}

/* Lanes combined pairwise: ((l0+l1)+(l2+l3))+..., by halves. */
static inline double fo_combine_lanes(double *lanes, int kind)
{
    for (int width = FO_NORM_LANES / 2; width >= 1; width /= 2)
        for (int l = 0; l < width; l++) lanes[l] = fo_combine(lanes[2 * l], lanes[2 * l + 1], kind);
    return lanes[0];
}

/* The norm from the blocks' sums partials[0 .. nblocks), in block order:
 * combined by halves (a fixed order), then the root the kind takes. */
double fo_norm_finish(const double *partials, ptrdiff_t nblocks, int kind, double p);

#endif
