/* Included by kernels.c once per SIMD level, with FO_LEVEL defined: every
 * update rule (rules.h) and norm block (norm_blocks.h) for float32 and
 * float64 at that level, and the level's tables. */

#define T float
#define SQRT sqrtf
#define NAME(x) FO_NAME3(x, f32, FO_LEVEL)
#include "rules.h"
#include "norm_blocks.h"
#undef T
#undef SQRT
#undef NAME
#undef FO_DEFINE_PREPARE
#define FO_DEFINE_PREPARE 0  /* the prepare functions exist once, from the first inclusion */

#define T double
#define SQRT sqrt
#define NAME(x) FO_NAME3(x, f64, FO_LEVEL)
#include "rules.h"
#include "norm_blocks.h"
#undef T
#undef SQRT
#undef NAME

#define FO_AT_LEVEL(x) FO_NAME3(x, FO_LEVEL, table)
#define FO_KERNEL_ENTRY(rule) \
    [FO_RULE_##rule] = {FO_NAME3(rule, f32, FO_LEVEL), FO_NAME3(rule, f64, FO_LEVEL)},

/* [rule][is_double] */
static const fo_kernel FO_AT_LEVEL(kernels)[FO_N_RULES][2] = {FO_RULES(FO_KERNEL_ENTRY)};

/* [is_double] */
static const fo_norm_block_fn FO_AT_LEVEL(norm_blocks)[2] = {
    FO_NAME3(block, f32, FO_LEVEL), FO_NAME3(block, f64, FO_LEVEL)};

#undef FO_AT_LEVEL
#undef FO_KERNEL_ENTRY
