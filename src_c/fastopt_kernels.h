/* fastopt's C kernels: the public face of src_c/ for the Cython boundary.
 *
 * Every update rule is one kernel with the same signature: it updates elements
 * [0, n) of one tensor whose buffers start at bufs[0..4] (param, grad, then the
 * rule's state in argument order).  The caller (fastopt/_core.pyx) cuts every
 * call into chunks, offsets the pointers and runs the chunks in one OpenMP
 * parallel region, so a kernel never knows about threads.
 */
#ifndef FASTOPT_KERNELS_H
#define FASTOPT_KERNELS_H

#include <stddef.h>

typedef ptrdiff_t fo_index;

/* Hyperparameters of one call, all in double; each kernel casts what it needs
 * to the buffers' dtype once, before its loop.  Per-step scalars (bias
 * corrections, decayed learning rates) are precomputed by the caller. */
typedef struct {
    double lr;             /* learning rate, or the per-step step size         */
    double grad_scale;     /* grad is multiplied by this first (clipping)      */
    double weight_decay;   /* L2 coefficient added to the gradient             */
    double beta1;          /* first-moment decay (momentum, beta, alpha)       */
    double beta2;          /* second-moment decay                              */
    double one_minus_beta1;
    double one_minus_beta2;
    double eps;
    double bias2_rsqrt;    /* 1 / sqrt(1 - beta2^t)                            */
    double decay_factor;   /* AdamW: 1 - lr * weight_decay                     */
    int maximize;
    int variant;           /* rule-specific switch: amsgrad, nesterov, ...     */
    int first_step;        /* torch.optim.SGD: the momentum buffer starts at g */
} fo_hyper;

typedef void (*fo_kernel)(const fo_hyper *h, fo_index n, char *const *bufs);

enum fo_rule {
    FO_SGD = 0,
    FO_MOMENTUM,           /* the lecture's EMA momentum                       */
    FO_SGD_MOMENTUM,       /* torch.optim.SGD with momentum / nesterov         */
    FO_RMSPROP,
    FO_ADAGRAD,
    FO_ADAM,
    FO_ADAMW,
    FO_CEILING,            /* benchmark: same traffic as a rule, trivial math  */
    FO_N_RULES
};

/* Variants selected by fo_hyper.variant. */
enum { FO_RMSPROP_CENTERED = 1, FO_RMSPROP_MOMENTUM = 2 };
enum { FO_AMSGRAD = 1 };
enum { FO_NESTEROV = 1 };

enum fo_simd_level { FO_SIMD_BASELINE = 0, FO_SIMD_AVX2, FO_SIMD_AVX512, FO_N_SIMD };

/* The kernel for a rule, dtype (0: float32, 1: float64) and the SIMD level in use. */
fo_kernel fo_get_kernel(int rule, int is_double);

/* Run-time SIMD dispatch.  fo_simd_init picks the best level the CPU has,
 * or the one named by `forced` ("baseline", "avx2", "avx512") when the CPU
 * supports it; it returns 0, or -1 if `forced` is unknown or unsupported. */
int fo_simd_init(const char *forced);
int fo_simd_supported(int level);
int fo_simd_level(void);
const char *fo_simd_name(int level);

/* Memory a buffer spans, [start, end), and who it is (tensor * 5 + buffer). */
typedef struct {
    fo_index start;
    fo_index end;
    fo_index label;
} fo_interval;

/* Sorts iv[0..n) by start (scratch: room for n more) and reports the labels of
 * two overlapping intervals: returns 1 and sets *first, *second, or returns 0. */
int fo_find_overlap(fo_interval *iv, fo_interval *scratch, fo_index n, fo_index *first,
                    fo_index *second);

/* Build facts for show_config(). */
const char *fo_compiler(void);
const char *fo_compile_args(void);
int fo_openmp_enabled(void);

#endif
