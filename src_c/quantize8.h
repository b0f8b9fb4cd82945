/* 8-bit block-quantized state: included once per SIMD level by instantiate.h,
 * after convert.h (NAMEL(x) names x at the level). */

/* ---- 8-bit block-quantized state (format version 1) ---------------------------
 *
 * A quantized buffer is uint8 codes, one per element, and one float32 scale per
 * block of block_size elements (a power of two in [64, 4096]) of the flattened
 * tensor: the block's absmax, so the block's values divided by it lie in
 * [-1, 1].  The quotient is x * (1 / absmax), one float32 reciprocal per block
 * (x / absmax where absmax is subnormal, whose reciprocal overflows): a product
 * per element costs a fraction of a division.  A code is a small float of that
 * quotient, rounded to nearest even, with subnormals:
 *   signed   (state that changes sign): sign bit, then e3m4 with bias 7:
 *            |code| = e m (3 + 4 bits); e > 0: 2^(e-7) (1 + m/16), e = 0: m 2^-10;
 *            1.0 is 112, the largest used magnitude
 *   unsigned (nonnegative state): e5m3 with bias 31, no sign:
 *            e > 0: 2^(e-31) (1 + m/8), e = 0: m 2^-33; 1.0 is 248
 * The second moments take the unsigned map: its range (2^-33 relative to the
 * block's largest) keeps a small v from flushing to 0 where its m does not.
 * Decoding is code value times scale (one float32 product); an all-zero block
 * has scale 0 and codes 0.  |quotient| is clamped to 1 first; a NaN quotient
 * encodes as +1 (its sign bit is not reproducible), and the block's NaN scale
 * makes the whole block NaN when decoded.
 * Encode and decode are the integer and float32 operations below, generic in
 * (mantissa bits, bias) and identical at every SIMD level; fastopt/quantized.py
 * is their NumPy twin. */

#define FO_Q8S_MBITS 4
#define FO_Q8S_BIAS 7
#define FO_Q8U_MBITS 3
#define FO_Q8U_BIAS 31

static FO_ALWAYS_INLINE float NAMEL(q8_decode)(uint32_t code, const int is_signed, const int mbits, const int bias)
{
    uint32_t sign = is_signed ? (code & 0x80u) << 24 : 0u;
    uint32_t mag = is_signed ? code & 0x7Fu : code;
    uint32_t normal = (mag << (23 - mbits)) + ((uint32_t)(127 - bias) << 23);
    /* subnormal: mag 2^(1 - bias - mbits), exact */
    uint32_t subnormal = NAMEL(bits)((float)(int32_t)mag * NAMEL(from_bits)((uint32_t)(128 - bias - mbits) << 23));
    return NAMEL(from_bits)(sign | (mag >= (1u << mbits) ? normal : subnormal));
}

static FO_ALWAYS_INLINE uint32_t NAMEL(q8_encode)(float y, const int is_signed, const int mbits, const int bias)
{
    const uint32_t shift = 23 - mbits;
    uint32_t u = NAMEL(bits)(y), a = u & 0x7FFFFFFFu;
    /* a NaN's sign depends on how it arose (operand order, SIMD level): it encodes as +1 */
    uint32_t sign = is_signed ? (a > 0x7F800000u ? 0u : (u >> 24) & 0x80u) : 0u;
    a = a < 0x3F800000u ? a : 0x3F800000u;                          /* |y| <= 1; NaN -> 1 */
    /* normal: drop `shift` bits rounding to nearest even, rebias 127 -> bias */
    uint32_t normal = ((a + ((1u << (shift - 1)) - 1u) + ((a >> shift) & 1u)) >> shift)
                    - ((uint32_t)(127 - bias) << mbits);
    /* subnormal: adding 2^(24 - bias - mbits) puts the code's grid on float32's last
     * bit, and the float32 addition rounds to nearest even (up to the smallest normal) */
    const float magic = NAMEL(from_bits)((uint32_t)(151 - bias - mbits) << 23);
    uint32_t subnormal = NAMEL(bits)(NAMEL(from_bits)(a) + magic) - NAMEL(bits)(magic);
    uint32_t mag = a >= ((uint32_t)(128 - bias) << 23) ? normal : subnormal;
    return sign | mag;
}

/* codes of n elements (whole blocks, the last maybe partial) into float32 */
static FO_ALWAYS_INLINE void NAMEL(q8_load_as)(const uint8_t *FO_RESTRICT codes, const float *FO_RESTRICT scales,
                                              fo_index block, float *FO_RESTRICT dst, fo_index n,
                                              const int is_signed, const int mbits, const int bias)
{
    for (fo_index lo = 0, b = 0; lo < n; lo += block, b++) {
        const fo_index hi = n - lo < block ? n : lo + block;
        const float s = scales[b];
        FO_OMP_SIMD
        for (fo_index i = lo; i < hi; i++) dst[i] = NAMEL(q8_decode)(codes[i], is_signed, mbits, bias) * s;
    }
}

/* float32 of n elements into codes and one scale (the absmax) per block */
static FO_ALWAYS_INLINE void NAMEL(q8_store_as)(const float *FO_RESTRICT src, uint8_t *FO_RESTRICT codes,
                                               float *FO_RESTRICT scales, fo_index block, fo_index n,
                                               const int is_signed, const int mbits, const int bias)
{
    const uint32_t *FO_RESTRICT u = (const uint32_t *)src;
    for (fo_index lo = 0, b = 0; lo < n; lo += block, b++) {
        const fo_index hi = n - lo < block ? n : lo + block;
        uint32_t top = 0;  /* the largest |x| as bits: NaN above Inf above every number */
        FO_OMP_SIMD_MAX(top)
        for (fo_index i = lo; i < hi; i++) {
            uint32_t a = u[i] & 0x7FFFFFFFu;
            top = a > top ? a : top;
        }
        const float s = NAMEL(from_bits)(top);
        scales[b] = s;
        if (top == 0) {
            for (fo_index i = lo; i < hi; i++) codes[i] = 0;
            continue;
        }
        if (top >= 0x00800000u) {  /* a normal absmax (or Inf, NaN): one reciprocal, a product per element */
            const float inverse = 1.0f / s;
            FO_OMP_SIMD
            for (fo_index i = lo; i < hi; i++)
                codes[i] = (uint8_t)NAMEL(q8_encode)(src[i] * inverse, is_signed, mbits, bias);
        } else {  /* a subnormal absmax: 1 / s would overflow */
            FO_OMP_SIMD
            for (fo_index i = lo; i < hi; i++) codes[i] = (uint8_t)NAMEL(q8_encode)(src[i] / s, is_signed, mbits, bias);
        }
    }
}

static void NAMEL(q8_load)(int dtype, const uint8_t *codes, const float *scales, fo_index block, float *dst,
                           fo_index n)
{
    if (dtype == FO_Q8S) NAMEL(q8_load_as)(codes, scales, block, dst, n, 1, FO_Q8S_MBITS, FO_Q8S_BIAS);
    else NAMEL(q8_load_as)(codes, scales, block, dst, n, 0, FO_Q8U_MBITS, FO_Q8U_BIAS);
}

static void NAMEL(q8_store)(int dtype, const float *src, uint8_t *codes, float *scales, fo_index block, fo_index n)
{
    if (dtype == FO_Q8S) NAMEL(q8_store_as)(src, codes, scales, block, n, 1, FO_Q8S_MBITS, FO_Q8S_BIAS);
    else NAMEL(q8_store_as)(src, codes, scales, block, n, 0, FO_Q8U_MBITS, FO_Q8U_BIAS);
}
