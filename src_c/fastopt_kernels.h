/* fastopt's C kernels: the public face of src_c/ for the Cython boundary.
 *
 * Every update rule is a pair of functions over one fo_hyper:
 * - prepare(h): once per call, in double, derives the per-call scalars
 *   (bias corrections, decayed step sizes) from the hyperparameters, and
 *   checks what only the rule knows (returns an error message, or NULL);
 * - kernel(h, n, bufs): updates elements [0, n) of one tensor whose buffers
 *   start at bufs[0 .. FO_MAX_BUFFERS) (see enum fo_buffer); a buffer the
 *   call does not use is NULL.
 * The caller (fastopt/_core.pyx) cuts every call into blocks, offsets the
 * pointers and runs the blocks in one OpenMP parallel region, so a kernel
 * never knows about threads.
 */
#ifndef FASTOPT_KERNELS_H
#define FASTOPT_KERNELS_H

#include <stddef.h>
#include <stdint.h>

typedef ptrdiff_t fo_index;

/* The rules, once: the enum, the names and the dispatch tables are all made
 * from this list, so they cannot disagree.  Besides the registry's rules it
 * holds its passes (fastopt.rules.PASSES: Schedule-Free's train/eval switch),
 * LAMB's second pass (lamb_apply, which the plan runs after lamb) and the
 * benchmarks' traffic ceiling. */
#define FO_RULES(X) \
    X(sgd)          \
    X(momentum)     \
    X(sgd_momentum) \
    X(rmsprop)      \
    X(adagrad)      \
    X(adam)         \
    X(adamw)        \
    X(lion)         \
    X(radam)        \
    X(adamax)       \
    X(lamb)         \
    X(nadam)        \
    X(schedule_free_adamw) \
    X(schedule_free_eval)  \
    X(schedule_free_train) \
    X(lamb_apply)   \
    X(ceiling)

#define FO_RULE_ENUM(name) FO_RULE_##name,
enum fo_rule { FO_RULES(FO_RULE_ENUM) FO_N_RULES };
#undef FO_RULE_ENUM

/* What each buffer of a call is.  The state buffers are a rule's own, in the
 * order its kernel documents (and fastopt/rules.py declares). */
enum fo_buffer {
    FO_PARAM = 0,   /* read and written            */
    FO_GRAD = 1,    /* only read                   */
    FO_STATE = 2,   /* first state buffer: read and written, as are the next */
    FO_MAX_STATE = 3,
    FO_MAX_BUFFERS = FO_STATE + FO_MAX_STATE,  /* what a kernel sees */
    FO_PARAM_COPY = FO_MAX_BUFFERS, /* written: the new param in a 16-bit dtype (staging only) */
    FO_CALL_BUFFERS,                /* what a call brings */
    /* not a buffer: where a pass that sums (LAMB's first) adds its squares,
     * double[FO_N_SUMS][FO_NORM_LANES], element i of the run into lane i % FO_NORM_LANES */
    FO_SUMS = FO_CALL_BUFFERS,
    FO_KERNEL_SLOTS                 /* what a kernel's bufs hold */
};
#define FO_N_SUMS 2

/* A buffer's element type.  float64 goes only with float64; the others mix
 * freely, and a tensor with any buffer not float32 is staged (fo_run_staged).
 * FO_Q8S and FO_Q8U are 8-bit block-quantized state (quantize8.h): uint8 codes,
 * signed or unsigned map, with a float32 scale per block. */
enum fo_dtype { FO_F32 = 0, FO_F64, FO_BF16, FO_F16, FO_Q8S, FO_Q8U, FO_N_DTYPES };

/* The largest quantization block: thread blocks and tensors with a quantized
 * buffer start on multiples of it, so each quantization block is updated
 * whole, by one thread, in one staging run. */
#define FO_Q8_MAX_BLOCK 4096

/* The storage modes a rule's loop is compiled for, conversions inside it. */
enum fo_mode {
    FO_MODE_F32 = 0,
    FO_MODE_F64,
    FO_MODE_BF16,          /* every buffer bfloat16 */
    FO_MODE_F16,           /* every buffer float16  */
    FO_MODE_MASTER_BF16,   /* float32 param and state, bfloat16 grad and param_copy */
    FO_MODE_MASTER_F16,    /* the same with float16 */
    FO_N_MODES
};

/* One call's scalars, all in double; a kernel casts what it uses to its
 * element type once, before its loop.
 *
 * The boundary sets the hyperparameters under the names the step functions
 * give them (a rule reads only its own; the rest stay 0), grad_scale and
 * step; the rule's prepare function derives the rest.  FO_HYPERPARAMETERS
 * lists the fields the boundary may set by name (fo_hyper_field). */
#define FO_HYPERPARAMETERS(REAL, SWITCH)                                        \
    REAL(lr)                                                                    \
    REAL(weight_decay)  /* L2 (added to g) or decoupled (AdamW): the rule says */ \
    REAL(momentum)      /* heavy-ball momentum mu: SGD's, RMSprop's            */ \
    REAL(dampening)     /* SGD's tau                                           */ \
    REAL(alpha)         /* RMSprop's smoothing constant                        */ \
    REAL(beta)          /* the lecture's EMA momentum                          */ \
    REAL(beta1)         /* Adam's first-moment decay                           */ \
    REAL(beta2)         /* Adam's second-moment decay                          */ \
    REAL(eps)                                                                   \
    REAL(lr_decay)      /* Adagrad                                             */ \
    REAL(momentum_decay) /* NAdam's psi: mu_t = beta1 (1 - 0.96^(t psi) / 2)    */ \
    REAL(mu_product)    /* NAdam: mu_1 mu_2 ... mu_t, which the caller keeps    */ \
    REAL(average_weight) /* Schedule-Free's c_t: the new z's weight in x        */ \
    REAL(max_trust_ratio) /* LAMB: the trust ratio's cap (inf: none)           */ \
    SWITCH(maximize)    /* every rule: ascend instead of descend               */ \
    SWITCH(nesterov)    /* SGD                                                 */ \
    SWITCH(decoupled_weight_decay) /* NAdam, RAdam: decay as AdamW, not as L2  */

#define FO_REAL_FIELD(name) double name;
#define FO_SWITCH_FIELD(name) int name;
typedef struct {
    FO_HYPERPARAMETERS(FO_REAL_FIELD, FO_SWITCH_FIELD)
    double grad_scale;     /* every rule: g is multiplied by this first (clipping) */
    long long step;        /* t = 1, 2, ... for the rules that count steps        */
    /* derived by the rule's prepare function, once per call */
    double step_size;      /* what the update direction is multiplied by          */
    double bias2_rsqrt;    /* Adam, NAdam, Schedule-Free: 1 / sqrt(1 - beta2^t)   */
    double param_scale;    /* theta is multiplied by this first (decoupled decay) */
    int rectified;         /* RAdam: rho_t > 5, the adaptive step is taken        */
    double grad_coef;      /* NAdam: -lr (1 - mu_t) / (1 - mu_product), g's share  */
    double exp_avg_coef;   /* NAdam: -lr mu_{t+1} / (1 - mu_product mu_{t+1}), m's */
    double y_grad_coef;    /* Schedule-Free: lr (beta1 (1 - c) - 1), y's step      */
    double lerp_weight;    /* Schedule-Free: y's weight towards z (c; its passes')  */
    double bias1_rcp;      /* LAMB: 1 / (1 - beta1^t)                              */
} fo_hyper;
#undef FO_REAL_FIELD
#undef FO_SWITCH_FIELD

/* The i-th field of FO_HYPERPARAMETERS: its name, where it is in fo_hyper,
 * and whether it is an int switch (else a double); NULL name past the last. */
typedef struct {
    const char *name;
    size_t offset;
    int is_switch;
} fo_field;
fo_field fo_hyper_field(int i);

typedef void (*fo_kernel)(const fo_hyper *h, fo_index n, char *const *bufs);
typedef const char *(*fo_prepare)(fo_hyper *h);

/* A staged update of one tensor: its buffers' dtypes, the rule's float32
 * kernel, and whether the param is rounded stochastically (with which key).
 * A quantized buffer (FO_Q8S, FO_Q8U) has its codes in bufs and the scales of
 * its blocks, from the first element's block on, in scales, block_size
 * elements each; the elements start on a block boundary. */
typedef struct {
    fo_kernel kernel;
    const fo_hyper *h;
    unsigned char dtypes[FO_CALL_BUFFERS];
    int stochastic;
    uint32_t key;
    float *scales[FO_MAX_BUFFERS];
    fo_index block_size[FO_MAX_BUFFERS];
    unsigned read_only;    /* bit k: buffer k is only read by this pass, not stored back */
} fo_staged_call;

/* Update elements [0, n) of one tensor (bufs[0 .. FO_KERNEL_SLOTS), NULL where
 * unused) in runs: 16-bit buffers converted to float32 scratch, the kernel run,
 * the results rounded back; float32 buffers are used in place.  first_index is
 * the index of element 0 in its tensor (the random bits depend on it). */
void fo_run_staged(const fo_staged_call *call, fo_index n, char *const *bufs, fo_index first_index);

/* Quantize n float32 values into codes and scales (dtype FO_Q8S or FO_Q8U,
 * block_size a power of two in [64, 4096]), and back: fastopt.quantize and the
 * tests of the format; the staged kernels use the same conversions. */
void fo_q8_quantize(int dtype, const float *x, uint8_t *codes, float *scales, fo_index block_size, fo_index n);
void fo_q8_dequantize(int dtype, const uint8_t *codes, const float *scales, fo_index block_size, float *out,
                      fo_index n);

/* The key of stochastic rounding's random bits for a call: its seed and step. */
uint32_t fo_stochastic_key(uint64_t seed, uint64_t step);

/* x86-64 under GCC or clang compiles every kernel at each level of enum fo_simd_level
 * (at_each_level.h); elsewhere only the baseline exists. */
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(_M_X64))
#define FO_X86_DISPATCH 1
#else
#define FO_X86_DISPATCH 0
#endif
/* a##_##b##_##c after expanding b and c: a kernel's name at a dtype and level */
#define FO_CAT3(a, b, c) a##_##b##_##c
#define FO_NAME3(a, b, c) FO_CAT3(a, b, c)

enum fo_simd_level { FO_SIMD_BASELINE = 0, FO_SIMD_AVX2, FO_SIMD_AVX512, FO_N_SIMD };

/* The name of a rule ("adam"), or NULL past the last one. */
const char *fo_rule_name(int rule);

/* Derives h's per-call scalars for `rule`; returns NULL, or why h is invalid. */
const char *fo_prepare_call(int rule, fo_hyper *h);

/* The kernel for a rule in a storage mode (enum fo_mode), at the SIMD level in use. */
fo_kernel fo_get_kernel(int rule, int mode);

/* Run-time SIMD dispatch.  fo_simd_init picks the best level the CPU has,
 * or the one named by `forced` ("baseline", "avx2", "avx512") when the CPU
 * supports it; it returns 0, or -1 if `forced` is unknown or unsupported. */
int fo_simd_init(const char *forced);
int fo_simd_supported(int level);
int fo_simd_level(void);
const char *fo_simd_name(int level);

/* Memory a buffer spans, [start, end), and who it is (a caller's label). */
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
