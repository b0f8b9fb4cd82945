/* Included once per SIMD level by factored.c (through at_each_level.h): the
 * 16-bit conversions (convert.h), and the body of Adafactor's kernels
 * (factored_body.h) for float, which also takes bfloat16 and float16 buffers,
 * and for double. */
#define NAMEL(x) FO_NAME3(x, lv, FO_LEVEL)
#include "convert.h"

#define T float
#define SQRT sqrtf
#define FO_FACTORED_16 1
#define NAME(x) FO_NAME3(x, f32, FO_LEVEL)
#include "factored_body.h"
#undef NAME
#undef FO_FACTORED_16
#undef T
#undef SQRT
#define T double
#define SQRT sqrt
#define FO_FACTORED_16 0
#define NAME(x) FO_NAME3(x, f64, FO_LEVEL)
#include "factored_body.h"
#undef NAME
#undef FO_FACTORED_16
#undef T
#undef SQRT
#undef NAMEL
