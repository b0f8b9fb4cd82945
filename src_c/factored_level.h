/* Included once per SIMD level by factored.c (through at_each_level.h): the body
 * of Adafactor's kernels (factored_body.h) for float and for double. */
#define T float
#define SQRT sqrtf
#define NAME(x) FO_NAME3(x, f32, FO_LEVEL)
#include "factored_body.h"
#undef NAME
#undef T
#undef SQRT
#define T double
#define SQRT sqrt
#define NAME(x) FO_NAME3(x, f64, FO_LEVEL)
#include "factored_body.h"
#undef NAME
#undef T
#undef SQRT
