/* Staging, included once per SIMD level by instantiate.h after convert.h and quantize8.h.
 *
 * A tensor whose buffers are not all float32 is updated in runs of FO_STAGE
 * elements: each 16-bit buffer's run is converted into float32 scratch, the
 * rule's float32 kernel (the same one float32 tensors use) updates the run,
 * and the results are rounded back into their buffers; float32 buffers are
 * read and written in place.  So the arithmetic is exactly the float32
 * kernel's, every buffer is still read once and written once per step, and
 * the scratch (FO_MAX_BUFFERS runs) stays in the first-level cache.
 *
 * A quantized state buffer (FO_Q8S, FO_Q8U: quantize8.h) is staged the same way:
 * its run of whole quantization blocks is decoded into scratch, the float32
 * kernel updates it, and each block is requantized with the absmax of its new
 * values.  Runs are then max(FO_STAGE, the largest block) long, and start on a
 * block boundary (the caller starts every thread's elements on one), so every
 * block is read and written whole, once, and the result does not depend on the
 * thread count.
 */

/* 256 elements: shorter runs let the conversions overlap the rule's divisions */
#define FO_STAGE 256

static FO_ALWAYS_INLINE int NAMEL(is_q8)(int dtype) { return dtype == FO_Q8S || dtype == FO_Q8U; }

/* bytes per element of each enum fo_dtype */
static const unsigned char NAMEL(dtype_size)[FO_N_DTYPES] = {4, 8, 2, 2, 1, 1};

/* The traffic ceiling of a staged tensor (call->kernel NULL): each buffer read and
 * written once, grad read once, with an integer add of the gradient's bits
 * instead of conversions and arithmetic: the memory traffic of the mode alone
 * (a quantized buffer: its codes, and its scales, one add per block). */
static void NAMEL(ceiling_run)(const fo_staged_call *call, fo_index lo, fo_index m, char *const *bufs)
{
    const int grad16 = call->dtypes[FO_GRAD] != FO_F32;
    const uint16_t *FO_RESTRICT g16 = (const uint16_t *)(bufs[FO_GRAD] + lo * 2);
    const uint32_t *FO_RESTRICT g32 = (const uint32_t *)(bufs[FO_GRAD] + lo * 4);
    for (int k = 0; k < FO_MAX_BUFFERS; k++) {
        if (k == FO_GRAD || bufs[k] == NULL) continue;
        if (NAMEL(is_q8)(call->dtypes[k])) {
            uint8_t *FO_RESTRICT b = (uint8_t *)(bufs[k] + lo);
            float *FO_RESTRICT s = call->scales[k] + lo / call->block_size[k];
            const fo_index nb = (m + call->block_size[k] - 1) / call->block_size[k];
            if (grad16) {
                FO_OMP_SIMD
                for (fo_index i = 0; i < m; i++) b[i] = (uint8_t)(b[i] + g16[i]);
            } else {
                FO_OMP_SIMD
                for (fo_index i = 0; i < m; i++) b[i] = (uint8_t)(b[i] + g32[i]);
            }
            for (fo_index j = 0; j < nb; j++) s[j] = s[j] + 1.0f;
        } else if (call->dtypes[k] != FO_F32) {
            uint16_t *FO_RESTRICT b = (uint16_t *)(bufs[k] + lo * 2);
            if (grad16) {
                FO_OMP_SIMD
                for (fo_index i = 0; i < m; i++) b[i] = (uint16_t)(b[i] + g16[i]);
            } else {
                FO_OMP_SIMD
                for (fo_index i = 0; i < m; i++) b[i] = (uint16_t)(b[i] + g32[i]);
            }
        } else {
            uint32_t *FO_RESTRICT b = (uint32_t *)(bufs[k] + lo * 4);
            if (grad16) {
                FO_OMP_SIMD
                for (fo_index i = 0; i < m; i++) b[i] = b[i] + g16[i];
            } else {
                FO_OMP_SIMD
                for (fo_index i = 0; i < m; i++) b[i] = b[i] + g32[i];
            }
        }
    }
    if (bufs[FO_PARAM_COPY] != NULL) {
        uint16_t *FO_RESTRICT c = (uint16_t *)(bufs[FO_PARAM_COPY] + lo * 2);
        if (call->dtypes[FO_PARAM] != FO_F32) {
            const uint16_t *FO_RESTRICT p = (const uint16_t *)(bufs[FO_PARAM] + lo * 2);
            FO_OMP_SIMD
            for (fo_index i = 0; i < m; i++) c[i] = p[i];
        } else {
            const uint32_t *FO_RESTRICT p = (const uint32_t *)(bufs[FO_PARAM] + lo * 4);
            FO_OMP_SIMD
            for (fo_index i = 0; i < m; i++) c[i] = (uint16_t)(p[i] >> 16);
        }
    }
}

/* Prefetch part `part` of FO_PREFETCH_PARTS of the run that ends FO_AHEAD_BYTES
 * past this run's end, in every buffer (each by its own itemsize).  One burst per run would
 * fill the line-fill buffers and stall the run until memory answered; spread over
 * the run's phases (conversion in, the rule, conversion out), the lines arrive
 * while the run computes. */
#define FO_PREFETCH_PARTS 3
static FO_ALWAYS_INLINE void NAMEL(prefetch_part)(const fo_staged_call *call, char *const *bufs, fo_index lo,
                                                  fo_index m, fo_index n, fo_index stage, int part)
{
    for (int k = 0; k < FO_CALL_BUFFERS; k++) {
        if (bufs[k] == NULL) continue;
        const fo_index itemsize = NAMEL(dtype_size)[call->dtypes[k]];
        const fo_index end = n * itemsize, first = (lo + m) * itemsize + FO_AHEAD_BYTES - stage * itemsize;
        const fo_index lines = (stage * itemsize + 63) / 64;
        for (fo_index line = lines * part / FO_PREFETCH_PARTS; line < lines * (part + 1) / FO_PREFETCH_PARTS;
             line++) {
            const fo_index byte = first + line * 64;
            if (byte < 0) continue;
            if (byte >= end) break;
            if (k == FO_GRAD) FO_PREFETCH(bufs[k] + byte, 0);
            else FO_PREFETCH(bufs[k] + byte, 1);
        }
    }
}

static void NAMEL(run_staged)(const fo_staged_call *call, fo_index n, char *const *bufs, fo_index first_index)
{
    FO_ALIGNED(64) float scratch[FO_MAX_BUFFERS][FO_Q8_MAX_BLOCK];
    char *run[FO_KERNEL_SLOTS];
    fo_index stage = FO_STAGE;
    for (int k = 0; k < FO_MAX_BUFFERS; k++)
        if (bufs[k] != NULL && NAMEL(is_q8)(call->dtypes[k]) && call->block_size[k] > stage)
            stage = call->block_size[k];
    run[FO_PARAM_COPY] = NULL;  /* the float32 kernel never writes it: staging does */
    run[FO_SUMS] = bufs[FO_SUMS];  /* runs start on multiples of FO_NORM_LANES: the lanes line up */
    for (fo_index lo = 0; lo < n; lo += stage) {
        fo_index m = n - lo < stage ? n - lo : stage;
        NAMEL(prefetch_part)(call, bufs, lo, m, n, stage, 0);
        if (call->kernel == NULL) {
            NAMEL(ceiling_run)(call, lo, m, bufs);
            NAMEL(prefetch_part)(call, bufs, lo, m, n, stage, 1);
            NAMEL(prefetch_part)(call, bufs, lo, m, n, stage, 2);
            continue;
        }
        for (int k = 0; k < FO_MAX_BUFFERS; k++) {
            if (bufs[k] == NULL) {
                run[k] = NULL;
            } else if (call->dtypes[k] == FO_F32) {
                run[k] = bufs[k] + lo * 4;
            } else if (NAMEL(is_q8)(call->dtypes[k])) {
                NAMEL(q8_load)(call->dtypes[k], (const uint8_t *)bufs[k] + lo,
                               call->scales[k] + lo / call->block_size[k], call->block_size[k], scratch[k], m);
                run[k] = (char *)scratch[k];
            } else {
                NAMEL(load)(call->dtypes[k], bufs[k] + lo * 2, scratch[k], m);
                run[k] = (char *)scratch[k];
            }
        }
        NAMEL(prefetch_part)(call, bufs, lo, m, n, stage, 1);
        call->kernel(call->h, m, run);
        NAMEL(prefetch_part)(call, bufs, lo, m, n, stage, 2);
        for (int k = 0; k < FO_MAX_BUFFERS; k++) {
            if (k == FO_GRAD || bufs[k] == NULL || call->dtypes[k] == FO_F32 || (call->read_only >> k & 1u))
                continue;
            if (NAMEL(is_q8)(call->dtypes[k]))
                NAMEL(q8_store)(call->dtypes[k], scratch[k], (uint8_t *)bufs[k] + lo,
                                call->scales[k] + lo / call->block_size[k], call->block_size[k], m);
            else if (k == FO_PARAM && call->stochastic)
                NAMEL(store_stochastic)(call->dtypes[k], scratch[k], bufs[k] + lo * 2, m, call->key,
                                        (uint64_t)(first_index + lo));
            else
                NAMEL(store)(call->dtypes[k], scratch[k], bufs[k] + lo * 2, m);
        }
        if (bufs[FO_PARAM_COPY] != NULL)  /* the new param, from float32 before its own rounding */
            NAMEL(store)(call->dtypes[FO_PARAM_COPY], (const float *)run[FO_PARAM],
                         bufs[FO_PARAM_COPY] + lo * 2, m);
    }
}

/* fo_q8_quantize and fo_q8_dequantize at this level */
static void NAMEL(q8_quantize)(int dtype, const float *x, uint8_t *codes, float *scales, fo_index block,
                               fo_index n)
{
    NAMEL(q8_store)(dtype, x, codes, scales, block, n);
}

static void NAMEL(q8_dequantize)(int dtype, const uint8_t *codes, const float *scales, fo_index block,
                                 float *out, fo_index n)
{
    NAMEL(q8_load)(dtype, codes, scales, block, out, n);
}
