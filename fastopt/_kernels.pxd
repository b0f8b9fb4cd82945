# Declarations of src_c/fastopt_kernels.h for the Cython boundary.
cdef extern from "fastopt_kernels.h" nogil:
    ctypedef Py_ssize_t fo_index

    ctypedef struct fo_hyper:
        double lr
        double grad_scale
        double weight_decay
        double beta1
        double beta2
        double one_minus_beta1
        double one_minus_beta2
        double eps
        double bias2_rsqrt
        double decay_factor
        int maximize
        int variant
        int first_step

    ctypedef void (*fo_kernel)(const fo_hyper *h, fo_index n, char *const *bufs) noexcept nogil

    enum fo_rule:
        FO_SGD
        FO_MOMENTUM
        FO_SGD_MOMENTUM
        FO_RMSPROP
        FO_ADAGRAD
        FO_ADAM
        FO_ADAMW
        FO_CEILING

    enum:
        FO_RMSPROP_CENTERED
        FO_RMSPROP_MOMENTUM
        FO_AMSGRAD
        FO_NESTEROV

    enum:
        FO_N_SIMD

    ctypedef struct fo_interval:
        fo_index start
        fo_index end
        fo_index label

    int fo_find_overlap(fo_interval *iv, fo_interval *scratch, fo_index n, fo_index *first,
                        fo_index *second)

    fo_kernel fo_get_kernel(int rule, int is_double)
    int fo_simd_init(const char *forced)
    int fo_simd_supported(int level)
    int fo_simd_level()
    const char *fo_simd_name(int level)
    const char *fo_compiler()
    const char *fo_compile_args()
    int fo_openmp_enabled()
