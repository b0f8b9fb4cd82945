/* Adafactor's kernels (factored second moments), declared once for float and
 * double.  A tensor is B matrices of R rows of C elements (the last two axes;
 * a vector is one row), cut into segments of at most FO_NORM_BLOCK elements
 * of a row.  Every sum is in float64: a segment's elements go into
 * FO_NORM_LANES lanes in order, its lanes are combined by halves, and a row's
 * or a tensor's segments by halves again (fo_norm_finish); a column's sum
 * runs down its rows in order.  No addition is reassociated, so which thread
 * takes which segment or column stripe, and the SIMD width, change no bit.
 *
 * The passes of one step, each parallel over its items (fastopt/_factored.pxi):
 *   matrices: sums (param², grad² per row), columns (grad² per column),
 *             factors (row_var, col_var, and the row mean per matrix: tiny),
 *             update_sums (u² per segment), apply (the param);
 *   vectors:  vector_sums (variance updated; param² and u² per segment), apply.
 * g is the gradient times grad_scale, negated under maximize; u is
 * g / √max(v, eps1²) with v the variance estimate, as torch.optim.Adafactor. */
#ifndef FASTOPT_FACTORED_H
#define FASTOPT_FACTORED_H

#include <stddef.h>

#define FO_FACTORED_STRIPE 256   /* columns per item of the column pass */

typedef struct {
    ptrdiff_t rows, cols;      /* R and C of each matrix; a vector: 1 and its size */
    ptrdiff_t segments;        /* segments per row: ceil(C / FO_NORM_BLOCK) */
    double grad_scale;
    int maximize;
    double weight;             /* 1 - beta2_t = t^beta2_decay: the lerp weight of the factors */
    double eps1;               /* the floor of the row mean; eps1² floors v */
    double decay;              /* 1 - lr weight_decay */
    double step;               /* -alpha / max(1, RMS(u)/d) */
} fo_factored;

#define FO_FACTORED_DECLARE(T, S)                                                                    \
    void fo_factored_sums_##S(const fo_factored *f, const T *param, const T *grad, ptrdiff_t row,    \
                              double *param_sq, double *grad_sq, double *row_sum);                   \
    void fo_factored_columns_##S(const fo_factored *f, const T *grad, ptrdiff_t col_lo,              \
                                 ptrdiff_t col_hi, double *col_sum);                                 \
    void fo_factored_factors_##S(const fo_factored *f, T *row_var, T *col_var,                       \
                                 const double *row_sum, const double *col_sum, T *row_mean);         \
    void fo_factored_update_sums_##S(const fo_factored *f, const T *grad, const T *row_var,          \
                                     const T *col_var, const T *row_mean, ptrdiff_t row, double *update_sq);\
    void fo_factored_vector_sums_##S(const fo_factored *f, const T *param, const T *grad,           \
                                     T *variance, ptrdiff_t segment, double *param_sq,               \
                                     double *update_sq);                                             \
    void fo_factored_apply_##S(const fo_factored *f, T *param, const T *grad, const T *row_var,      \
                               const T *col_var, const T *row_mean, const T *variance, ptrdiff_t item);

FO_FACTORED_DECLARE(float, f32)
FO_FACTORED_DECLARE(double, f64)

/* partials[0 .. n) combined by halves (norms.c's order). */
double fo_factored_total(const double *partials, ptrdiff_t n);

#endif
