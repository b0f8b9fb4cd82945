/* Included by kernels.c once per SIMD level, with FO_LEVEL defined: every
 * update rule (rules.h) and norm block (norm_blocks.h) for float32 and
 * float64, the 16-bit conversions (convert.h) and staging (staging.h), the
 * norm blocks of 16-bit gradients, and the level's tables. */

#define NAMEL(x) FO_NAME3(x, lv, FO_LEVEL)
#include "convert.h"

#define ACC float
#define LOAD(x) (x)
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

#undef ACC
#define ACC double
#define T double
#define SQRT sqrt
#define NAME(x) FO_NAME3(x, f64, FO_LEVEL)
#include "rules.h"
#include "norm_blocks.h"
#undef T
#undef SQRT
#undef NAME
#undef LOAD
#undef ACC

/* the norm pass over 16-bit gradients: each element widened exactly first */
#define ACC float
#define T uint16_t
#define NAME(x) FO_NAME3(x, bf16, FO_LEVEL)
#define LOAD(x) NAMEL(bf16_to_f32)(x)
#include "norm_blocks.h"
#undef NAME
#undef LOAD
#define NAME(x) FO_NAME3(x, f16, FO_LEVEL)
#define LOAD(x) NAMEL(f16_to_f32)(x)
#include "norm_blocks.h"
#undef NAME
#undef LOAD
#undef T
#undef ACC

#include "staging.h"

#define FO_AT_LEVEL(x) FO_NAME3(x, FO_LEVEL, table)
#define FO_KERNEL_ENTRY(rule) \
    [FO_RULE_##rule] = {FO_NAME3(rule, f32, FO_LEVEL), FO_NAME3(rule, f64, FO_LEVEL)},

/* [rule][is_double] */
static const fo_kernel FO_AT_LEVEL(kernels)[FO_N_RULES][2] = {FO_RULES(FO_KERNEL_ENTRY)};

/* [enum fo_dtype] */
static const fo_norm_block_fn FO_AT_LEVEL(norm_blocks)[FO_N_DTYPES] = {
    [FO_F32] = FO_NAME3(block, f32, FO_LEVEL), [FO_F64] = FO_NAME3(block, f64, FO_LEVEL),
    [FO_BF16] = FO_NAME3(block, bf16, FO_LEVEL), [FO_F16] = FO_NAME3(block, f16, FO_LEVEL)};

#undef FO_AT_LEVEL
#undef FO_KERNEL_ENTRY
#undef NAMEL
