/* What each compiler spells its own way (restrict, `omp simd`, forced inlining,
 * alignment) and whether the float16 intrinsics can be had: one place for the
 * files that instantiate kernels at each SIMD level (kernels.c, factored.c). */
#ifndef FASTOPT_COMPILER_H
#define FASTOPT_COMPILER_H

#include "fastopt_kernels.h"

#if defined(_MSC_VER) && !defined(__clang__)
#define FO_RESTRICT __restrict
#define FO_OMP_SIMD /* MSVC: `omp simd` needs /openmp:experimental; it vectorizes anyway */
#define FO_ALWAYS_INLINE __forceinline
#define FO_ALIGNED(n) __declspec(align(n))
#define FO_OMP_SIMD_MAX(v)
#else
#define FO_RESTRICT restrict
#define FO_OMP_SIMD _Pragma("omp simd")
#define FO_ALWAYS_INLINE inline __attribute__((always_inline))
#define FO_ALIGNED(n) __attribute__((aligned(n)))
#define FO_PRAGMA(x) _Pragma(#x)
#define FO_OMP_SIMD_MAX(v) FO_PRAGMA(omp simd reduction(max : v))
#endif

#if FO_X86_DISPATCH
#include <immintrin.h>
#endif

/* Intrinsics (the float16 conversions) need the level's target in force where they
 * are inlined: GCC's target pragma gives it; clang ignores the pragma, so there the
 * levels keep the integer conversions. */
#if FO_X86_DISPATCH && !defined(__clang__)
#define FO_HW_F16 1
#else
#define FO_HW_F16 0
#endif

#endif
