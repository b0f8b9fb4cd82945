/* Adafactor's kernels (see factored.h), for float and double.  Compiled at
 * the build's baseline level: they divide and take a square root per element
 * twice, and the work is memory-bound either way. */
#include <math.h>

#include "factored.h"
#include "norms.h"

double fo_factored_total(const double *partials, ptrdiff_t n)
{
    return fo_norm_finish(partials, n, FO_NORM_L1, 1.0);   /* L1 of sums of squares: their plain sum */
}

#define T float
#define NAME(x) x##_f32
#define SQRT sqrtf
#include "factored_body.h"
#undef T
#undef NAME
#undef SQRT

#define T double
#define NAME(x) x##_f64
#define SQRT sqrt
#include "factored_body.h"
#undef T
#undef NAME
#undef SQRT
