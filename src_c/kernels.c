/* Instantiates src_c/rules.h (the step kernels) and src_c/norm_blocks.h (the
 * norm pass's block sums) for float32 and float64 at each SIMD level, and
 * picks one level at run time for both.
 *
 * On x86-64 with GCC or clang the rules are compiled three times: for the
 * baseline ISA the build targets, for AVX2 and for AVX-512, each with
 * `#pragma GCC target`, so one binary runs on any x86-64 and uses the widest
 * vectors the CPU has.  Elsewhere (arm64 uses NEON as its baseline, MSVC)
 * only the baseline exists.  Every level performs the same IEEE operations
 * per element, so all levels give bit-identical results.
 */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include "compiler.h"
#include "fastopt_kernels.h"
#include "norms.h"

/* Blocks of FO_BLOCK_BYTES per buffer; prefetch runs FO_AHEAD_BYTES ahead,
 * enough to keep memory busy while sqrt and division are in flight (the
 * effect is measured in bench/README.md). */
#define FO_BLOCK_BYTES 1024
#define FO_AHEAD_BYTES 4096

#if defined(__GNUC__) || defined(__clang__)
#define FO_PREFETCH(address, for_write) __builtin_prefetch((address), (for_write))
#else
#define FO_PREFETCH(address, for_write) ((void)(address))
#endif

static inline fo_index fo_block_end(fo_index lo, fo_index n, size_t itemsize)
{
    fo_index block = FO_BLOCK_BYTES / (fo_index)itemsize;
    return n - lo > block ? lo + block : n;
}

/* Prefetch, for every buffer of the call, the block of `block` elements
 * FO_AHEAD_BYTES / FO_BLOCK_BYTES blocks past the one that ends at element hi
 * (each buffer by its own itemsize); grad is only read.  bufs has the kernel's
 * buffers and, in a mode with one, param_copy. */
static inline void fo_prefetch_ahead(char *const *bufs, const unsigned char *itemsizes, fo_index hi,
                                     fo_index n, fo_index block)
{
    fo_index last = hi + block * (FO_AHEAD_BYTES / FO_BLOCK_BYTES), first = last - block;
    if (last > n) last = n;
    for (int b = 0; b < FO_CALL_BUFFERS; b++) {
        if (bufs[b] == NULL) continue;
        for (fo_index byte = first * itemsizes[b]; byte < last * itemsizes[b]; byte += 64) {
            if (b == FO_GRAD) FO_PREFETCH(bufs[b] + byte, 0);
            else FO_PREFETCH(bufs[b] + byte, 1);
        }
    }
}

/* float16 conversions (convert.h): integer arithmetic at the baseline, F16C 8 at a time at
 * AVX2, AVX-512F 16 at a time at AVX-512, where the intrinsics can be had (FO_HW_F16). */
#define FO_F16C (FO_LEVEL_RANK * FO_HW_F16)
#define FO_DEFINE_PREPARE 1
#define FO_LEVEL_BODY "instantiate.h"
#include "at_each_level.h"
#undef FO_LEVEL_BODY
#undef FO_F16C
#undef FO_DEFINE_PREPARE

#define FO_PREPARE_ENTRY(rule) [FO_RULE_##rule] = fo_prepare_##rule,
static const fo_prepare fo_prepare_table[FO_N_RULES] = {FO_RULES(FO_PREPARE_ENTRY)};
#undef FO_PREPARE_ENTRY

#define FO_NAME_ENTRY(rule) [FO_RULE_##rule] = #rule,
static const char *const fo_rule_names[FO_N_RULES] = {FO_RULES(FO_NAME_ENTRY)};
#undef FO_NAME_ENTRY

const char *fo_rule_name(int rule)
{
    return (rule >= 0 && rule < FO_N_RULES) ? fo_rule_names[rule] : NULL;
}

const char *fo_prepare_call(int rule, fo_hyper *h) { return fo_prepare_table[rule](h); }

#define FO_REAL_ENTRY(name) {#name, offsetof(fo_hyper, name), 0},
#define FO_SWITCH_ENTRY(name) {#name, offsetof(fo_hyper, name), 1},
static const fo_field fo_fields[] = {FO_HYPERPARAMETERS(FO_REAL_ENTRY, FO_SWITCH_ENTRY){NULL, 0, 0}};
#undef FO_REAL_ENTRY
#undef FO_SWITCH_ENTRY

fo_field fo_hyper_field(int i)
{
    const int count = (int)(sizeof fo_fields / sizeof fo_fields[0]) - 1;
    return fo_fields[(i >= 0 && i < count) ? i : count];
}

static const char *const fo_level_names[FO_N_SIMD] = {"baseline", "avx2", "avx512"};
static int fo_level = FO_SIMD_BASELINE;
static const fo_kernel (*fo_table)[FO_N_MODES] = kernels_baseline_table;
static const fo_norm_block_fn *fo_norm_table = norm_blocks_baseline_table;
static void (*fo_staged_runner)(const fo_staged_call *, fo_index, char *const *, fo_index) =
    run_staged_lv_baseline;
static void (*fo_q8_quantizer)(int, const float *, uint8_t *, float *, fo_index, fo_index) = q8_quantize_lv_baseline;
static void (*fo_q8_dequantizer)(int, const uint8_t *, const float *, fo_index, float *, fo_index) =
    q8_dequantize_lv_baseline;

int fo_simd_supported(int level)
{
    if (level == FO_SIMD_BASELINE) return 1;
#if FO_X86_DISPATCH
    __builtin_cpu_init();
    if (level == FO_SIMD_AVX2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
    if (level == FO_SIMD_AVX512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw");
#endif
    return 0;
}

static void fo_use_level(int level)
{
    fo_level = level;
    fo_table = kernels_baseline_table;
    fo_norm_table = norm_blocks_baseline_table;
    fo_staged_runner = run_staged_lv_baseline;
    fo_q8_quantizer = q8_quantize_lv_baseline;
    fo_q8_dequantizer = q8_dequantize_lv_baseline;
#if FO_X86_DISPATCH
    if (level == FO_SIMD_AVX2) {
        fo_table = kernels_avx2_table;
        fo_norm_table = norm_blocks_avx2_table;
        fo_staged_runner = run_staged_lv_avx2;
        fo_q8_quantizer = q8_quantize_lv_avx2;
        fo_q8_dequantizer = q8_dequantize_lv_avx2;
    }
    if (level == FO_SIMD_AVX512) {
        fo_table = kernels_avx512_table;
        fo_norm_table = norm_blocks_avx512_table;
        fo_staged_runner = run_staged_lv_avx512;
        fo_q8_quantizer = q8_quantize_lv_avx512;
        fo_q8_dequantizer = q8_dequantize_lv_avx512;
    }
#endif
}

int fo_simd_init(const char *forced)
{
    if (forced != NULL && forced[0] != '\0') {
        for (int level = 0; level < FO_N_SIMD; level++) {
            if (strcmp(forced, fo_level_names[level]) == 0) {
                if (!fo_simd_supported(level)) return -1;
                fo_use_level(level);
                return 0;
            }
        }
        return -1;
    }
    int best = FO_SIMD_BASELINE;
    for (int level = 1; level < FO_N_SIMD; level++)
        if (fo_simd_supported(level)) best = level;
    fo_use_level(best);
    return 0;
}

int fo_simd_level(void) { return fo_level; }

const char *fo_simd_name(int level)
{
    return (level >= 0 && level < FO_N_SIMD) ? fo_level_names[level] : "unknown";
}

fo_kernel fo_get_kernel(int rule, int mode) { return fo_table[rule][mode]; }

fo_norm_block_fn fo_get_norm_block(int dtype) { return fo_norm_table[dtype]; }

void fo_run_staged(const fo_staged_call *call, fo_index n, char *const *bufs, fo_index first_index)
{
    fo_staged_runner(call, n, bufs, first_index);
}

void fo_q8_quantize(int dtype, const float *x, uint8_t *codes, float *scales, fo_index block_size, fo_index n)
{
    fo_q8_quantizer(dtype, x, codes, scales, block_size, n);
}

void fo_q8_dequantize(int dtype, const uint8_t *codes, const float *scales, fo_index block_size, float *out,
                      fo_index n)
{
    fo_q8_dequantizer(dtype, codes, scales, block_size, out, n);
}

/* The same mix as convert.h's random bits, on the seed's halves and the step. */
static uint32_t fo_mix32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    return x;
}

uint32_t fo_stochastic_key(uint64_t seed, uint64_t step)
{
    uint32_t key = fo_mix32((uint32_t)seed + 0x9E3779B9u);
    key = fo_mix32(key ^ (uint32_t)(seed >> 32));
    key = fo_mix32(key ^ (uint32_t)step);
    return fo_mix32(key ^ (uint32_t)(step >> 32));
}

#ifndef FO_COMPILE_ARGS
#define FO_COMPILE_ARGS "unknown"
#endif

const char *fo_compile_args(void) { return FO_COMPILE_ARGS; }

const char *fo_compiler(void)
{
#if defined(__clang__)
    return "clang " __clang_version__;
#elif defined(__GNUC__)
    return "gcc " __VERSION__;
#elif defined(_MSC_VER)
#define FO_STR2(x) #x
#define FO_STR(x) FO_STR2(x)
    return "msvc " FO_STR(_MSC_VER);
#else
    return "unknown";
#endif
}

int fo_openmp_enabled(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}
