/* Staging, included once per SIMD level by instantiate.h after convert.h.
 *
 * A tensor whose buffers are not all float32 is updated in runs of FO_STAGE
 * elements: each 16-bit buffer's run is converted into float32 scratch, the
 * rule's float32 kernel (the same one float32 tensors use) updates the run,
 * and the results are rounded back into their buffers; float32 buffers are
 * read and written in place.  So the arithmetic is exactly the float32
 * kernel's, every buffer is still read once and written once per step, and
 * the scratch (FO_MAX_BUFFERS runs) stays in the first-level cache.
 */

#define FO_STAGE 512

static void NAMEL(run_staged)(const fo_staged_call *call, fo_index n, char *const *bufs, fo_index first_index)
{
    FO_ALIGNED(64) float scratch[FO_MAX_BUFFERS][FO_STAGE];
    char *run[FO_MAX_BUFFERS];
    for (fo_index lo = 0; lo < n; lo += FO_STAGE) {
        fo_index m = n - lo < FO_STAGE ? n - lo : FO_STAGE;
        for (int k = 0; k < FO_CALL_BUFFERS; k++) {
            if (bufs[k] == NULL) continue;
            const size_t itemsize = call->dtypes[k] == FO_F32 ? 4 : 2;
            const fo_index end = n * (fo_index)itemsize, ahead = (lo + m) * (fo_index)itemsize + FO_AHEAD_BYTES;
            for (fo_index byte = ahead - FO_STAGE * 2; byte < ahead && byte < end; byte += 64) {
                if (k == FO_GRAD) FO_PREFETCH(bufs[k] + byte, 0);
                else FO_PREFETCH(bufs[k] + byte, 1);
            }
        }
        for (int k = 0; k < FO_MAX_BUFFERS; k++) {
            if (bufs[k] == NULL) {
                run[k] = NULL;
            } else if (call->dtypes[k] == FO_F32) {
                run[k] = bufs[k] + lo * 4;
            } else {
                NAMEL(load)(call->dtypes[k], bufs[k] + lo * 2, scratch[k], m);
                run[k] = (char *)scratch[k];
            }
        }
        call->kernel(call->h, m, run);
        for (int k = 0; k < FO_MAX_BUFFERS; k++) {
            if (k == FO_GRAD || bufs[k] == NULL || call->dtypes[k] == FO_F32) continue;
            if (k == FO_PARAM && call->stochastic)
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
