/* Included by kernels.c once per SIMD level, with FO_LEVEL defined: every
 * update rule (rules.h) in every storage mode, the norm blocks (norm_blocks.h)
 * of every dtype, the 16-bit conversions (convert.h), 8-bit state (quantize8.h), staging (staging.h),
 * and the level's tables.
 *
 * A storage mode fixes how param, grad and the state are stored, so the
 * conversions sit inside the rule's own loop (one pass, nothing staged): all
 * float32, all float64, all bfloat16, all float16, and float32 master weights
 * and state with a 16-bit gradient and param_copy.  Any other mix is staged:
 * the float32 kernel on runs converted into scratch (staging.h). */

#define NAMEL(x) FO_NAME3(x, lv, FO_LEVEL)
#include "convert.h"
#include "quantize8.h"

#define FO_IDENTITY(x) (x)
#define FO_NO_COPY(i, v) ((void)0)

/* ---- float32 -------------------------------------------------------------- */
#define T float
#define SQRT sqrtf
#define PT float
#define GT float
#define ST float
#define LP FO_IDENTITY
#define LG FO_IDENTITY
#define LS FO_IDENTITY
#define SP FO_IDENTITY
#define SS FO_IDENTITY
#define COPY FO_NO_COPY
#define NAME(x) FO_NAME3(x, f32, FO_LEVEL)
#include "rules.h"
#define ACC float
#define LOAD(x) (x)
#include "norm_blocks.h"
#undef ACC
#undef LOAD
#undef NAME
#undef FO_DEFINE_PREPARE
#define FO_DEFINE_PREPARE 0  /* the prepare functions exist once, from the first inclusion */

/* ---- bfloat16 and float16 throughout, float32 arithmetic ------------------- */
#undef PT
#undef GT
#undef ST
#define PT uint16_t
#define GT uint16_t
#define ST uint16_t
#undef LP
#undef LG
#undef LS
#undef SP
#undef SS
#define LP NAMEL(bf16_to_f32)
#define LG NAMEL(bf16_to_f32)
#define LS NAMEL(bf16_to_f32)
#define SP NAMEL(f32_to_bf16)
#define SS NAMEL(f32_to_bf16)
#define NAME(x) FO_NAME3(x, bf16, FO_LEVEL)
#include "rules.h"
#undef NAME
#undef LP
#undef LG
#undef LS
#undef SP
#undef SS
#define LP NAMEL(f16_to_f32)
#define LG NAMEL(f16_to_f32)
#define LS NAMEL(f16_to_f32)
#define SP NAMEL(f32_to_f16)
#define SS NAMEL(f32_to_f16)
#if !FO_F16C  /* with hardware conversions float16 is staged instead (below) */
#define NAME(x) FO_NAME3(x, f16, FO_LEVEL)
#include "rules.h"
#undef NAME
#endif

/* ---- float32 master weights and state, 16-bit gradient and param_copy ------- */
#undef PT
#undef ST
#undef LP
#undef LG
#undef LS
#undef SP
#undef SS
#undef COPY
#define PT float
#define ST float
#define LP FO_IDENTITY
#define LS FO_IDENTITY
#define SP FO_IDENTITY
#define SS FO_IDENTITY
#define LG NAMEL(bf16_to_f32)
#define COPY(i, v) (param_copy[i] = NAMEL(f32_to_bf16)(v))
#define NAME(x) FO_NAME3(x, mbf16, FO_LEVEL)
#include "rules.h"
#undef NAME
#undef LG
#undef COPY
#if !FO_F16C
#define LG NAMEL(f16_to_f32)
#define COPY(i, v) (param_copy[i] = NAMEL(f32_to_f16)(v))
#define NAME(x) FO_NAME3(x, mf16, FO_LEVEL)
#include "rules.h"
#undef NAME
#undef LG
#undef COPY
#endif
#undef T
#undef SQRT
#undef PT
#undef GT
#undef ST

/* ---- float64 -------------------------------------------------------------- */
#define T double
#define SQRT sqrt
#define PT double
#define GT double
#define ST double
#define LG FO_IDENTITY
#define COPY FO_NO_COPY
#define NAME(x) FO_NAME3(x, f64, FO_LEVEL)
#include "rules.h"
#define ACC double
#define LOAD(x) (x)
#include "norm_blocks.h"
#undef ACC
#undef LOAD
#undef NAME
#undef T
#undef SQRT
#undef PT
#undef GT
#undef ST
#undef LP
#undef LG
#undef LS
#undef SP
#undef SS
#undef COPY

/* ---- the norm pass over 16-bit gradients: each element widened exactly first -- */
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

#if FO_F16C
/* The float16 modes where the level converts float16 in hardware: the rule's
 * float32 kernel on staged runs (staging.h), every float16 buffer converted by
 * f16_load_run and f16_store_run.  The arithmetic is the float32 kernel's, as in
 * the fused loops that the other levels compile, so the bits are the same; the
 * integer conversions inside a fused loop outweigh the rule's own arithmetic. */
static FO_ALWAYS_INLINE void NAMEL(f16_staged)(fo_kernel kernel, const fo_hyper *h, fo_index n, char *const *bufs,
                                               const int master)
{
    fo_staged_call call;
    memset(&call, 0, sizeof call);
    call.kernel = kernel;
    call.h = h;
    for (int k = 0; k < FO_CALL_BUFFERS; k++)  /* master: float32 param and state */
        call.dtypes[k] = (!master || k == FO_GRAD || k == FO_PARAM_COPY) ? FO_F16 : FO_F32;
    NAMEL(run_staged)(&call, n, bufs, 0);
}
#define FO_F16_STAGED(rule)                                                                    \
    static void FO_NAME3(rule, f16, FO_LEVEL)(const fo_hyper *h, fo_index n, char *const *bufs)  \
    {                                                                                          \
        NAMEL(f16_staged)(FO_NAME3(rule, f32, FO_LEVEL), h, n, bufs, 0);                       \
    }                                                                                          \
    static void FO_NAME3(rule, mf16, FO_LEVEL)(const fo_hyper *h, fo_index n, char *const *bufs) \
    {                                                                                          \
        NAMEL(f16_staged)(FO_NAME3(rule, f32, FO_LEVEL), h, n, bufs, 1);                       \
    }
FO_RULES(FO_F16_STAGED)
#undef FO_F16_STAGED
#endif

#define FO_AT_LEVEL(x) FO_NAME3(x, FO_LEVEL, table)
#define FO_KERNEL_ENTRY(rule)                                                                    \
    [FO_RULE_##rule] = {                                                                         \
        [FO_MODE_F32] = FO_NAME3(rule, f32, FO_LEVEL), [FO_MODE_F64] = FO_NAME3(rule, f64, FO_LEVEL), \
        [FO_MODE_BF16] = FO_NAME3(rule, bf16, FO_LEVEL), [FO_MODE_F16] = FO_NAME3(rule, f16, FO_LEVEL), \
        [FO_MODE_MASTER_BF16] = FO_NAME3(rule, mbf16, FO_LEVEL),                                 \
        [FO_MODE_MASTER_F16] = FO_NAME3(rule, mf16, FO_LEVEL)},

/* [rule][enum fo_mode] */
static const fo_kernel FO_AT_LEVEL(kernels)[FO_N_RULES][FO_N_MODES] = {FO_RULES(FO_KERNEL_ENTRY)};

/* [enum fo_dtype] */
static const fo_norm_block_fn FO_AT_LEVEL(norm_blocks)[FO_N_DTYPES] = {
    [FO_F32] = FO_NAME3(block, f32, FO_LEVEL), [FO_F64] = FO_NAME3(block, f64, FO_LEVEL),
    [FO_BF16] = FO_NAME3(block, bf16, FO_LEVEL), [FO_F16] = FO_NAME3(block, f16, FO_LEVEL)};

#undef FO_AT_LEVEL
#undef FO_KERNEL_ENTRY
#undef FO_IDENTITY
#undef FO_NO_COPY
#undef NAMEL
