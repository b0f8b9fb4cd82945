/* 16-bit floats to and from float32, and stochastic rounding: included once per
 * SIMD level by instantiate.h (NAMEL(x) names x at the level).
 *
 * Why it is written this way:
 * - Every element's conversion is integer and float32 arithmetic written out,
 *   branch-free, inside `omp simd` loops: it vectorizes at every level (SSE2 has
 *   no float16 instructions) and gives the same bits at every level and thread
 *   count.  Where a level has float16 instructions, whole runs use them instead
 *   (f16_load_run, f16_store_run), with the same bits.
 *   Choices are ternaries over uint32: they become blends, and a result narrowed
 *   to 16 or 8 bits is narrowed once, after the choice (bitwise mask selects let
 *   the compiler narrow every candidate and the mask as well).
 * - Loads are exact.  Stores round to nearest even, as NumPy (float16) and
 *   ml_dtypes (bfloat16) do, NaN included: bfloat16 NaN becomes the quiet NaN of
 *   its sign (ml_dtypes), float16 NaN keeps the top of its payload (NumPy).
 * - Stochastic rounding rounds up with probability equal to the distance from
 *   the value below, using random bits that depend only on a key (the call's
 *   seed and step) and the element's index in its tensor: fastopt.reference
 *   computes the same bits (_random_bits), so the results are reproducible for
 *   any thread count, SIMD level, and list or per-tensor call.
 */

static FO_ALWAYS_INLINE uint32_t NAMEL(bits)(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static FO_ALWAYS_INLINE float NAMEL(from_bits)(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* ---- bfloat16: the top half of a float32 ------------------------------------ */

static FO_ALWAYS_INLINE float NAMEL(bf16_to_f32)(uint16_t h) { return NAMEL(from_bits)((uint32_t)h << 16); }

static FO_ALWAYS_INLINE uint16_t NAMEL(f32_to_bf16)(float x)
{
    uint32_t u = NAMEL(bits)(x);
    uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    uint32_t nan = ((u >> 16) & 0x8000u) | 0x7FC0u;
    return (uint16_t)((u & 0x7FFFFFFFu) > 0x7F800000u ? nan : rounded);
}

/* ---- float16 (IEEE binary16) ------------------------------------------------ */

static FO_ALWAYS_INLINE float NAMEL(f16_to_f32)(uint16_t h)
{
    uint32_t sign = ((uint32_t)h & 0x8000u) << 16, em = (uint32_t)h & 0x7FFFu;
    uint32_t special = 0x7F800000u | ((em & 0x3FFu) << 13);          /* Inf, NaN     */
    uint32_t normal = (em << 13) + 0x38000000u;                       /* rebias 15->127 */
    uint32_t subnormal = NAMEL(bits)((float)(int32_t)em * 5.9604644775390625e-8f);  /* em * 2^-24, exact */
    uint32_t magnitude = em >= 0x7C00u ? special : em >= 0x0400u ? normal : subnormal;
    return NAMEL(from_bits)(sign | magnitude);
}

static FO_ALWAYS_INLINE uint16_t NAMEL(f32_to_f16)(float x)
{
    uint32_t u = NAMEL(bits)(x);
    uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7FFFFFFFu;
    /* NaN as NumPy: the top ten bits of the payload, never an Inf pattern */
    uint32_t nan = 0x7C00u + ((a & 0x7FFFFFu) >> 13);
    nan = nan | (uint32_t)(nan == 0x7C00u);  /* never the Inf pattern */
    /* |x| >= 65520 rounds to Inf */
    uint32_t overflow = 0x7C00u;
    /* normal: drop 13 bits, rounding to nearest even, and rebias 127 -> 15 */
    uint32_t normal = (a - 0x38000000u + 0xFFFu + ((a >> 13) & 1u)) >> 13;
    /* subnormal or zero: adding 0.5 aligns the float16 grid (2^-24) with float32's
     * last bit, and the float32 addition itself rounds to nearest even */
    uint32_t subnormal = NAMEL(bits)(NAMEL(from_bits)(a) + 0.5f) - 0x3F000000u;
    uint32_t magnitude = a > 0x7F800000u ? nan
                       : a >= 0x477FF000u ? overflow
                       : a >= 0x38800000u ? normal
                       : subnormal;
    return (uint16_t)(sign | magnitude);
}

/* ---- random bits and stochastic rounding -------------------------------------- */

/* 32 random bits for element `index` of a tensor: a mix of the index into the
 * key (lowbias32, by C. Wellons).  fastopt.reference._random_bits is its twin. */
static FO_ALWAYS_INLINE uint32_t NAMEL(random_bits)(uint32_t key, uint64_t index)
{
    uint32_t x = (uint32_t)index ^ ((uint32_t)(index >> 32) * 0x85EBCA6Bu);
    x = x * 0x9E3779B1u + key;
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    return x;
}

/* bfloat16: add 16 random bits below the kept ones, then drop them */
static FO_ALWAYS_INLINE uint16_t NAMEL(f32_to_bf16_stochastic)(float x, uint32_t r)
{
    uint32_t u = NAMEL(bits)(x);
    uint32_t nan = ((u >> 16) & 0x8000u) | 0x7FC0u;
    uint32_t a = u & 0x7FFFFFFFu;
    uint32_t rounded = a == 0x7F800000u ? u >> 16 : (u + (r >> 16)) >> 16;
    return (uint16_t)(a > 0x7F800000u ? nan : rounded);
}

/* float16: on the float16 grid of |x| (ulp 2^(e-10), 2^-24 for subnormals), add
 * random bits below it and drop them; below 2^-24, round up with probability
 * |x| / 2^-24 (to 24 random bits); past 65504 the value above is Inf. */
static FO_ALWAYS_INLINE uint16_t NAMEL(f32_to_f16_stochastic)(float x, uint32_t r)
{
    uint32_t u = NAMEL(bits)(x);
    uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7FFFFFFFu;
    uint32_t e = a >> 23;
    uint32_t shift = e >= 113u ? 13u : 126u - (e < 103u ? 103u : e);  /* bits below the grid */
    uint32_t mask = (1u << shift) - 1u;
    float on_grid = NAMEL(from_bits)((a + (r & mask)) & ~mask);
    uint32_t gridded = NAMEL(f32_to_f16)(on_grid);   /* exact, or Inf past 65504 */
    float p = NAMEL(from_bits)(a) * 16777216.0f;     /* |x| / 2^-24 */
    uint32_t tiny = (float)(r >> 8) * 5.9604644775390625e-8f < p ? 1u : 0u;
    uint32_t magnitude = a >= 0x7F800000u ? (uint32_t)NAMEL(f32_to_f16)(x) & 0x7FFFu
                       : a >= 0x47800000u ? 0x7C00u                      /* >= 65536: Inf */
                       : e >= 103u ? gridded
                       : tiny;
    return (uint16_t)(sign | magnitude);
}

/* ---- whole runs ----------------------------------------------------------------- */

/* float16 runs.  Where the level has hardware conversions (FO_F16C: F16C at AVX2,
 * AVX-512F), they do the work: they equal f16_to_f32 and f32_to_f16 for every
 * input except a signaling NaN, which the hardware quiets, so a vector holding
 * any NaN takes the integer conversions instead and the bits stay those of every
 * other level. */
static void NAMEL(f16_load_run)(const uint16_t *FO_RESTRICT s, float *FO_RESTRICT d, fo_index n)
{
    fo_index i = 0;
#if FO_F16C == 2
    for (; i + 16 <= n; i += 16) {
        __m256i h = _mm256_loadu_si256((const __m256i *)(s + i));
        if (_mm256_cmpgt_epi16_mask(_mm256_and_si256(h, _mm256_set1_epi16(0x7FFF)), _mm256_set1_epi16(0x7C00)))
            for (fo_index j = i; j < i + 16; j++) d[j] = NAMEL(f16_to_f32)(s[j]);
        else
            _mm512_storeu_ps(d + i, _mm512_cvtph_ps(h));
    }
#elif FO_F16C == 1
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(s + i));
        if (_mm_movemask_epi8(_mm_cmpgt_epi16(_mm_and_si128(h, _mm_set1_epi16(0x7FFF)), _mm_set1_epi16(0x7C00))))
            for (fo_index j = i; j < i + 8; j++) d[j] = NAMEL(f16_to_f32)(s[j]);
        else
            _mm256_storeu_ps(d + i, _mm256_cvtph_ps(h));
    }
#else
    FO_OMP_SIMD
    for (fo_index j = 0; j < n; j++) d[j] = NAMEL(f16_to_f32)(s[j]);
    i = n;
#endif
    for (; i < n; i++) d[i] = NAMEL(f16_to_f32)(s[i]);  /* the tail of the vectors */
}

static void NAMEL(f16_store_run)(const float *FO_RESTRICT s, uint16_t *FO_RESTRICT d, fo_index n)
{
    fo_index i = 0;
#if FO_F16C == 2
    for (; i + 16 <= n; i += 16) {
        __m512 f = _mm512_loadu_ps(s + i);
        __m512i a = _mm512_and_si512(_mm512_castps_si512(f), _mm512_set1_epi32(0x7FFFFFFF));
        if (_mm512_cmpgt_epi32_mask(a, _mm512_set1_epi32(0x7F800000)))
            for (fo_index j = i; j < i + 16; j++) d[j] = NAMEL(f32_to_f16)(s[j]);
        else
            _mm256_storeu_si256((__m256i *)(d + i), _mm512_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
#elif FO_F16C == 1
    for (; i + 8 <= n; i += 8) {
        __m256 f = _mm256_loadu_ps(s + i);
        __m256i a = _mm256_and_si256(_mm256_castps_si256(f), _mm256_set1_epi32(0x7FFFFFFF));
        if (_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x7F800000)))))
            for (fo_index j = i; j < i + 8; j++) d[j] = NAMEL(f32_to_f16)(s[j]);
        else
            _mm_storeu_si128((__m128i *)(d + i), _mm256_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT));
    }
#else
    FO_OMP_SIMD
    for (fo_index j = 0; j < n; j++) d[j] = NAMEL(f32_to_f16)(s[j]);
    i = n;
#endif
    for (; i < n; i++) d[i] = NAMEL(f32_to_f16)(s[i]);  /* the tail of the vectors */
}

static void NAMEL(load)(int dtype, const void *src, float *FO_RESTRICT dst, fo_index n)
{
    const uint16_t *FO_RESTRICT s = (const uint16_t *)src;
    if (dtype == FO_BF16) {
        FO_OMP_SIMD
        for (fo_index i = 0; i < n; i++) dst[i] = NAMEL(bf16_to_f32)(s[i]);
    } else {
        NAMEL(f16_load_run)(s, dst, n);
    }
}

static void NAMEL(store)(int dtype, const float *FO_RESTRICT src, void *dst, fo_index n)
{
    uint16_t *FO_RESTRICT d = (uint16_t *)dst;
    if (dtype == FO_BF16) {
        FO_OMP_SIMD
        for (fo_index i = 0; i < n; i++) d[i] = NAMEL(f32_to_bf16)(src[i]);
    } else {
        NAMEL(f16_store_run)(src, d, n);
    }
}

static void NAMEL(store_stochastic)(int dtype, const float *FO_RESTRICT src, void *dst, fo_index n,
                                    uint32_t key, uint64_t first_index)
{
    uint16_t *FO_RESTRICT d = (uint16_t *)dst;
    if (dtype == FO_BF16) {
        FO_OMP_SIMD
        for (fo_index i = 0; i < n; i++)
            d[i] = NAMEL(f32_to_bf16_stochastic)(src[i], NAMEL(random_bits)(key, first_index + (uint64_t)i));
    } else {
        FO_OMP_SIMD
        for (fo_index i = 0; i < n; i++)
            d[i] = NAMEL(f32_to_f16_stochastic)(src[i], NAMEL(random_bits)(key, first_index + (uint64_t)i));
    }
}
