/* Adafactor's kernels (factored second moments), declared once for float and
 * double.  A tensor is B matrices of R rows of C elements (the last two axes;
 * a vector is one row), cut into segments of at most FO_NORM_BLOCK elements
 * of a row.  Every sum is in float64: a segment's elements go into
 * FO_NORM_LANES lanes in order, its lanes are combined by halves, and a row's
 * or a tensor's segments by halves again (fo_norm_finish); a column's sum
 * runs down each block of rows in order, its blocks by halves.  No addition is reassociated, so which thread
 * takes which segment or column stripe, and the SIMD width, change no bit.
 *
 * The passes of one step, each parallel over its items (fastopt/_factored.pxi):
 *   matrices: sums (param² and grad² per segment, grad² per row, and per block
 *             of rows per column), factors (row_var, col_var and the scales of
 *             u, per matrix: small), update_sums (u² per segment), apply;
 *   vectors:  vector_sums (variance updated; param² and u² per segment), apply.
 * g is the gradient times grad_scale, negated under maximize; u is
 * g / √max(v, eps1²) with v the variance estimate, as torch.optim.Adafactor,
 * which for a matrix is g·min(row_scale·col_scale, 1/eps1) (factors).
 *
 * Each buffer has its own dtype (fo_factored.dtypes, enum fo_dtype): all float64,
 * or any mix of float32, bfloat16 and float16 with float32 arithmetic.  A 16-bit
 * buffer's run is converted exactly into float32 scratch, and what is written
 * back is rounded to nearest even (the param stochastically when asked); a
 * factor or variance is read back as stored, so u is that of the state kept. */
#ifndef FASTOPT_FACTORED_H
#define FASTOPT_FACTORED_H

#include <stddef.h>
#include <stdint.h>

/* A matrix's rows are summed in blocks of block_rows = max(FO_FACTORED_BLOCK_ROWS,
 * ceil(R / FO_FACTORED_BLOCKS)) rows: each block's column sums run down its rows
 * in order, and a column's blocks are combined by halves. */
#define FO_FACTORED_BLOCK_ROWS 16
#define FO_FACTORED_BLOCKS 64

/* The buffers of a tensor, for fo_factored.dtypes. */
enum fo_factored_buffer {
    FO_FACTORED_PARAM, FO_FACTORED_GRAD, FO_FACTORED_ROW_VAR, FO_FACTORED_COL_VAR, FO_FACTORED_VARIANCE,
    FO_FACTORED_COPY,          /* param_copy: the new param, rounded to its 16-bit dtype */
    FO_FACTORED_BUFFERS
};

typedef struct {
    ptrdiff_t rows, cols;      /* R and C of each matrix; a vector: 1 and its size */
    ptrdiff_t segments;        /* segments per row: ceil(C / FO_NORM_BLOCK) */
    ptrdiff_t block_rows;      /* rows per block of the sums (matrices) */
    ptrdiff_t blocks;          /* blocks per matrix: ceil(R / block_rows) */
    double grad_scale;
    int maximize;
    double weight;             /* 1 - beta2_t = t^beta2_decay: the lerp weight of the factors */
    double eps1;               /* the floor of the row mean; eps1² floors v */
    double decay;              /* 1 - lr weight_decay */
    double step;               /* -alpha / max(1, RMS(u)/d) */
    int dtypes[FO_FACTORED_BUFFERS];  /* each buffer's enum fo_dtype */
    int stochastic;            /* a 16-bit param's new value rounded stochastically (convert.h) */
    uint32_t key;              /* its random bits' key, fo_stochastic_key(seed, step); the index: the element's */
} fo_factored;

/* The kernels of one dtype at the SIMD level in use.  Buffers are the whole
 * tensor's (row_mean: one per matrix); `row` counts rows over all matrices,
 * `b` is a matrix; a vector's items are its segments; row_scale and
 * col_scale, of the factors' sizes, are written by factors. */
typedef struct {
    void (*sums)(const fo_factored *f, const void *param, const void *grad, ptrdiff_t item, double *param_sq,
                 double *grad_sq, double *row_sum, double *col_parts);
    void (*factors)(const fo_factored *f, void *row_var, void *col_var, const double *row_sum,
                    double *col_parts, void *row_scale, void *col_scale, ptrdiff_t b);
    void (*update_sums)(const fo_factored *f, const void *grad, const void *row_scale, const void *col_scale,
                        ptrdiff_t row, double *update_sq);
    void (*vector_sums)(const fo_factored *f, const void *param, const void *grad, void *variance,
                        ptrdiff_t segment, double *param_sq, double *update_sq);
    void (*apply)(const fo_factored *f, void *param, const void *grad, const void *row_scale,
                  const void *col_scale, const void *variance, void *param_copy, ptrdiff_t item);
} fo_factored_kernels;

/* float64 or float32 arithmetic's kernels (the latter for every mix of float32 and 16-bit buffers), at
 * the level fo_simd_level() names (every level gives the same bits). */
const fo_factored_kernels *fo_get_factored(int is_double);

/* partials[0 .. n) combined by halves (norms.c's order). */
double fo_factored_total(const double *partials, ptrdiff_t n);

#endif
