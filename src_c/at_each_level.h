/* Compiles the file named by FO_LEVEL_BODY once per SIMD level, with FO_LEVEL
 * set to its name (baseline, avx2, avx512) and FO_LEVEL_RANK to 0, 1, 2: the one
 * list of levels and of their `#pragma GCC target` strings, so that every file
 * it instantiates covers the levels fo_simd_supported checks.  The includer
 * defines FO_X86_DISPATCH (fastopt_kernels.h does). */

/* ---- baseline: the ISA the build targets (SSE2 on x86-64, NEON on arm64) -- */
#define FO_LEVEL baseline
#define FO_LEVEL_RANK 0
#include FO_LEVEL_BODY
#undef FO_LEVEL_RANK
#undef FO_LEVEL

#if FO_X86_DISPATCH
/* ---- AVX2, with F16C (fo_simd_supported requires both) ------------------ */
#pragma GCC push_options
#pragma GCC target("avx2,f16c")
#define FO_LEVEL avx2
#define FO_LEVEL_RANK 1
#include FO_LEVEL_BODY
#undef FO_LEVEL_RANK
#undef FO_LEVEL
#pragma GCC pop_options

/* ---- AVX-512 ----------------------------------------------------------- */
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw")
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC target("prefer-vector-width=512")
#endif
#define FO_LEVEL avx512
#define FO_LEVEL_RANK 2
#include FO_LEVEL_BODY
#undef FO_LEVEL_RANK
#undef FO_LEVEL
#pragma GCC pop_options
#endif
