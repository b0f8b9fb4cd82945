/* Adafactor's kernels (see factored.h), for float and double at each SIMD
 * level kernels.c dispatches to, chosen by the same fo_simd_level(): each
 * element divides and takes a square root twice, which the widest vectors
 * keep below the memory time. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "compiler.h"
#include "factored.h"
#include "fastopt_kernels.h"
#include "norms.h"

/* Software prefetch this many elements ahead in the read-only passes (a core alone
 * keeps too few reads in flight to stream them at memory speed). */
#define FO_FACTORED_AHEAD 1024
#if defined(__GNUC__) || defined(__clang__)
#define FO_FACTORED_PREFETCH(address) __builtin_prefetch((address), 0)
#define FO_FACTORED_PREFETCH_W(address) __builtin_prefetch((address), 1)
#else
#define FO_FACTORED_PREFETCH(address) ((void)(address))
#define FO_FACTORED_PREFETCH_W(address) ((void)(address))
#endif

/* Runs of 1024 elements: a 16-bit buffer's float32 scratch (4 KiB each) stays in the first-level cache. */
#define FO_FACTORED_RUN 1024

static inline ptrdiff_t fo_factored_itemsize(int dtype)
{
    return dtype == FO_F64 ? 8 : dtype == FO_F32 ? 4 : 2;
}

double fo_factored_total(const double *partials, ptrdiff_t n)
{
    return fo_norm_finish(partials, n, FO_NORM_L1, 1.0);   /* L1 of sums of squares: their plain sum */
}

/* Rows first .. first + n of parts (each `width` sums) combined by halves into row `first`, in
 * place: the order fo_factored_total gives each column, a whole row at a time. */
static void fo_factored_rows_total(double *parts, ptrdiff_t first, ptrdiff_t n, ptrdiff_t width)
{
    if (n <= 1) return;
    ptrdiff_t half = n / 2;
    fo_factored_rows_total(parts, first, half, width);
    fo_factored_rows_total(parts, first + half, n - half, width);
    double *restrict left = parts + first * width;
    const double *restrict right = parts + (first + half) * width;
#pragma omp simd
    for (ptrdiff_t c = 0; c < width; c++) left[c] += right[c];
}

/* float16 conversions as kernels.c has them (convert.h) */
#define FO_F16C (FO_LEVEL_RANK * FO_HW_F16)
#define FO_LEVEL_BODY "factored_level.h"
#include "at_each_level.h"
#undef FO_LEVEL_BODY
#undef FO_F16C

const fo_factored_kernels *fo_get_factored(int is_double)
{
#if FO_X86_DISPATCH
    switch (fo_simd_level()) {
    case FO_SIMD_AVX512: return is_double ? &kernels_f64_avx512 : &kernels_f32_avx512;
    case FO_SIMD_AVX2: return is_double ? &kernels_f64_avx2 : &kernels_f32_avx2;
    default: break;
    }
#endif
    return is_double ? &kernels_f64_baseline : &kernels_f32_baseline;
}
