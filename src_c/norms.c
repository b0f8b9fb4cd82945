/* The gradient-norm pass (see norms.h for why it is deterministic).
 *
 * Compiled with the flags of the step kernels: IEEE semantics, no FMA
 * contraction, so every addition happens as written.  Like kernels.c, the
 * block sums are compiled for the baseline ISA, AVX2 and AVX-512 on x86-64
 * and the widest the CPU has is picked at run time; the lanes make every
 * level give the same bits. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "norms.h"

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(_M_X64))
#define FO_X86_DISPATCH 1
#else
#define FO_X86_DISPATCH 0
#endif

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

typedef double (*fo_block_fn)(const void *data, ptrdiff_t n, int kind, double p);

#define FO_CAT3(a, b, c) a##_##b##_##c
#define FO_NAME3(a, b, c) FO_CAT3(a, b, c)

#define T float
#define NAME(x) FO_NAME3(x, f32, baseline)
#include "norm_blocks.h"
#undef T
#undef NAME
#define T double
#define NAME(x) FO_NAME3(x, f64, baseline)
#include "norm_blocks.h"
#undef T
#undef NAME

#if FO_X86_DISPATCH
#pragma GCC push_options
#pragma GCC target("avx2")
#define T float
#define NAME(x) FO_NAME3(x, f32, avx2)
#include "norm_blocks.h"
#undef T
#undef NAME
#define T double
#define NAME(x) FO_NAME3(x, f64, avx2)
#include "norm_blocks.h"
#undef T
#undef NAME
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw")
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("prefer-vector-width=512")
#endif
#define T float
#define NAME(x) FO_NAME3(x, f32, avx512)
#include "norm_blocks.h"
#undef T
#undef NAME
#define T double
#define NAME(x) FO_NAME3(x, f64, avx512)
#include "norm_blocks.h"
#undef T
#undef NAME
#pragma GCC pop_options
#endif

/* [is_double], set by fo_norms_init */
static fo_block_fn fo_blocks[2] = {block_f32_baseline, block_f64_baseline};
static const char *fo_norms_level = "baseline";

static int fo_cpu_has(const char *level)
{
#if FO_X86_DISPATCH
    __builtin_cpu_init();
    if (strcmp(level, "avx512") == 0)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw");
    if (strcmp(level, "avx2") == 0) return __builtin_cpu_supports("avx2");
#endif
    return strcmp(level, "baseline") == 0;
}

int fo_norms_init(const char *forced)
{
    static const char *const levels[] = {"avx512", "avx2", "baseline"};  /* best first */
    for (int i = 0; i < 3; i++) {
        const char *level = levels[i];
        if ((forced != NULL && forced[0] != '\0' && strcmp(forced, level) != 0) || !fo_cpu_has(level))
            continue;
#if FO_X86_DISPATCH
        if (i == 0) { fo_blocks[0] = block_f32_avx512; fo_blocks[1] = block_f64_avx512; }
        if (i == 1) { fo_blocks[0] = block_f32_avx2; fo_blocks[1] = block_f64_avx2; }
#endif
        if (i == 2) { fo_blocks[0] = block_f32_baseline; fo_blocks[1] = block_f64_baseline; }
        fo_norms_level = level;
        return 0;
    }
    return -1;
}

const char *fo_norms_simd_level(void) { return fo_norms_level; }

/* Partials combined by halves, recursively: a fixed order, and accurate. */
static double fo_combine_partials(const double *partials, ptrdiff_t n, int kind)
{
    if (n == 0) return 0.0;
    if (n == 1) return partials[0];
    ptrdiff_t half = n / 2;
    return fo_combine(fo_combine_partials(partials, half, kind),
                      fo_combine_partials(partials + half, n - half, kind), kind);
}

int fo_total_norm(const fo_norm_tensor *tensors, ptrdiff_t ntensors, int kind, double p,
                  int nthreads, double *norm)
{
    /* first_block[t]: index of tensor t's first block among all blocks */
    ptrdiff_t *first_block = malloc((size_t)(ntensors + 1) * sizeof(ptrdiff_t));
    if (first_block == NULL) return -1;
    first_block[0] = 0;
    for (ptrdiff_t t = 0; t < ntensors; t++)
        first_block[t + 1] = first_block[t] + (tensors[t].size + FO_NORM_BLOCK - 1) / FO_NORM_BLOCK;
    ptrdiff_t nblocks = first_block[ntensors];
    double *partials = calloc((size_t)(nblocks > 0 ? nblocks : 1), sizeof(double));
    if (partials == NULL) {
        free(first_block);
        return -1;
    }

#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
    for (ptrdiff_t b = 0; b < nblocks; b++) {
        ptrdiff_t lo = 0, hi = ntensors;  /* the tensor holding block b: first_block[lo] <= b */
        while (hi - lo > 1) {
            ptrdiff_t mid = (lo + hi) / 2;
            if (first_block[mid] <= b) lo = mid; else hi = mid;
        }
        const fo_norm_tensor *t = &tensors[lo];
        ptrdiff_t start = (b - first_block[lo]) * FO_NORM_BLOCK;
        ptrdiff_t n = t->size - start < FO_NORM_BLOCK ? t->size - start : FO_NORM_BLOCK;
        size_t itemsize = t->is_double ? sizeof(double) : sizeof(float);
        partials[b] = fo_blocks[t->is_double]((const char *)t->data + start * itemsize, n, kind, p);
    }

    double total = fo_combine_partials(partials, nblocks, kind);
    free(partials);
    free(first_block);
    switch (kind) {
    case FO_NORM_L2: *norm = sqrt(total); break;
    case FO_NORM_LP: *norm = pow(total, 1.0 / p); break;
    default: *norm = total; break;
    }
    return 0;
}
