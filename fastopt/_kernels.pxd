# Declarations of src_c/fastopt_kernels.h and src_c/norms.h for the Cython boundary.
from libc.stdint cimport uint32_t, uint64_t
cdef extern from "fastopt_kernels.h" nogil:
    ctypedef Py_ssize_t fo_index

    # Only what the boundary sets by name; the hyperparameters it sets
    # through fo_hyper_field's offsets.
    ctypedef struct fo_hyper:
        double grad_scale
        long long step
        double lr
        double max_trust_ratio
        double step_size

    ctypedef void (*fo_kernel)(const fo_hyper *h, fo_index n, char *const *bufs) noexcept nogil

    ctypedef struct fo_field:
        const char *name
        size_t offset
        int is_switch

    enum:
        FO_N_RULES
        FO_RULE_ceiling
        FO_RULE_lamb
        FO_RULE_lamb_apply
        FO_PARAM
        FO_GRAD
        FO_STATE
        FO_MAX_STATE
        FO_MAX_BUFFERS
        FO_PARAM_COPY
        FO_CALL_BUFFERS
        FO_SUMS
        FO_KERNEL_SLOTS
        FO_N_SUMS
        FO_N_SIMD
        FO_F32
        FO_F64
        FO_BF16
        FO_F16
        FO_Q8S
        FO_Q8U
        FO_Q8_MAX_BLOCK
        FO_MODE_F32
        FO_MODE_F64
        FO_MODE_BF16
        FO_MODE_F16
        FO_MODE_MASTER_BF16
        FO_MODE_MASTER_F16

    ctypedef struct fo_staged_call:
        fo_kernel kernel
        const fo_hyper *h
        unsigned char dtypes[FO_CALL_BUFFERS]
        int stochastic
        uint32_t key
        float *scales[FO_MAX_BUFFERS]
        fo_index block_size[FO_MAX_BUFFERS]
        unsigned read_only

    void fo_run_staged(const fo_staged_call *call, fo_index n, char *const *bufs, fo_index first_index)
    uint32_t fo_stochastic_key(uint64_t seed, uint64_t step)
    void fo_q8_quantize(int dtype, const float *x, unsigned char *codes, float *scales, fo_index block_size,
                        fo_index n)
    void fo_q8_dequantize(int dtype, const unsigned char *codes, const float *scales, fo_index block_size,
                          float *out, fo_index n)

    const char *fo_rule_name(int rule)
    const char *fo_prepare_call(int rule, fo_hyper *h)
    fo_kernel fo_get_kernel(int rule, int mode)
    fo_field fo_hyper_field(int i)

    ctypedef struct fo_interval:
        fo_index start
        fo_index end
        fo_index label

    int fo_find_overlap(fo_interval *iv, fo_interval *scratch, fo_index n, fo_index *first,
                        fo_index *second)

    int fo_simd_init(const char *forced)
    int fo_simd_supported(int level)
    int fo_simd_level()
    const char *fo_simd_name(int level)
    const char *fo_compiler()
    const char *fo_compile_args()
    int fo_openmp_enabled()


cdef extern from "norms.h" nogil:
    enum:
        FO_NORM_BLOCK
        FO_NORM_LANES
        FO_NORM_L1
        FO_NORM_L2
        FO_NORM_LINF
        FO_NORM_LP
        FO_NORM_FINITE

    ctypedef double (*fo_norm_block_fn)(const void *data, Py_ssize_t n, int kind, double p) noexcept nogil

    fo_norm_block_fn fo_get_norm_block(int dtype)
    double fo_combine_lanes(double *lanes, int kind)
    double fo_norm_finish(const double *partials, Py_ssize_t nblocks, int kind, double p)
