/* The gradient-norm pass: one parallel read of many tensors, bit-identical for any thread count.
 *
 * Each tensor is cut into blocks of FO_NORM_BLOCK elements counted from its
 * own start, so block boundaries depend on element indices only.  A block is
 * summed in float64 into FO_NORM_LANES interleaved lanes (element i into lane
 * i % FO_NORM_LANES), which the compiler can keep in vector registers without
 * reassociating anything; the lanes, then the blocks' partial sums, are
 * combined in a fixed order.  Which thread sums a block changes nothing.
 */
#ifndef FASTOPT_NORMS_H
#define FASTOPT_NORMS_H

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

typedef struct {
    const void *data;  /* contiguous float32 or float64 elements  */
    ptrdiff_t size;
    int is_double;
} fo_norm_tensor;

/* Picks the block sums of the widest SIMD level this CPU has, or of the
 * level named by `forced` ("baseline", "avx2", "avx512"); returns -1, and
 * changes nothing, if that level is unknown or not on this CPU.  Every level
 * gives the same bits. */
int fo_norms_init(const char *forced);
const char *fo_norms_simd_level(void);

/* The norm of all elements of all tensors, as if concatenated, on up to
 * nthreads threads.  Returns 0, or -1 when out of memory. */
int fo_total_norm(const fo_norm_tensor *tensors, ptrdiff_t ntensors, int kind, double p,
                  int nthreads, double *norm);

#endif
