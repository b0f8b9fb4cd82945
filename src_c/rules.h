/* The update rules, written once and included once per (dtype, SIMD level).
 *
 * The includer defines:
 *   T       the arithmetic type (float or double)
 *   PT, GT, ST  how param, grad and the state are stored (T, or uint16_t for
 *           bfloat16 or float16), and LP, LG, LS / SP, SS to load them as T
 *           and store a T back (identity, or an exact widening / a rounding
 *           to nearest even); COPY(i, v) writes v to param_copy where the mode
 *           has one (float32 master weights with a 16-bit copy)
 *   NAME(x) the symbol for rule x in this storage mode and level, e.g. adam_bf16_avx2
 *   SQRT    sqrtf or sqrt, so float math stays in float
 *   FO_DEFINE_PREPARE  1 in exactly one inclusion: the per-call prepare
 *           functions, which work in double, exist once
 *
 * Each rule is a prepare function (per-call scalars, in double, and the
 * checks only the rule knows) and a kernel over one tensor's buffers
 * (enum fo_buffer; its state buffers in the order its comment gives).
 *
 * Why it is written this way:
 * - Each element's update is plain scalar C inside a `#pragma omp simd` loop
 *   over restrict pointers, so the compiler vectorizes it at every level.
 * - Arithmetic is in T with the same operations, in the same order, as
 *   fastopt.reference; the build turns FMA contraction off and keeps IEEE
 *   semantics (no -ffast-math), and sqrt and division are correctly rounded
 *   in every vector width, so a result never depends on the SIMD level, the
 *   thread count or where a block starts.
 * - A rule's loop is one always-inlined function of its loop-invariant
 *   switches.  The kernel calls it with literal constants: the common case
 *   (gradient used as it is: no scale, no maximize, no L2 decay) gets a loop
 *   without that work, and each optional buffer present or absent gets its
 *   own loop, since a buffer that is not there must not be loaded.
 * - Loops run in blocks, prefetching the buffers a few blocks ahead
 *   (FO_BLOCKS): sqrt and division latency would otherwise fill the
 *   out-of-order window and leave too few loads in flight to reach memory
 *   bandwidth on large buffers.
 */

/* for (lo, hi) over blocks of [0, n), prefetching ahead before each block. */
#define FO_BLOCKS(lo, hi)                                                     \
    for (fo_index lo = 0, hi = 0;                                             \
         lo < n && (hi = fo_block_end(lo, n, sizeof(T)),                      \
                    fo_prefetch_ahead(bufs, NAME(itemsizes), hi, n,           \
                                      FO_BLOCK_BYTES / sizeof(T)), 1);        \
         lo = hi)

/* Each buffer's bytes per element in this mode (the prefetch needs them). */
static const unsigned char NAME(itemsizes)[FO_CALL_BUFFERS] = {
    sizeof(PT), sizeof(GT), sizeof(ST), sizeof(ST), sizeof(ST), sizeof(uint16_t)};

/* The new param: stored in its buffer, and in param_copy where the mode has one. */
#define FO_SET_PARAM(i, v)              \
    do {                                \
        const T new_param_ = (v);       \
        param[i] = SP(new_param_);      \
        COPY(i, new_param_);            \
    } while (0)

/* The gradient as the rules see it: scaled (gradient clipping folded into
 * the step), negated for maximize, plus L2 decay.  The switches are
 * constants wherever the kernel calls a loop with literals. */
static FO_ALWAYS_INLINE T NAME(effective_grad)(T g, T p, const int scaled, T scale,
                                              const int maximize, const int l2, T decay)
{
    T s = scaled ? g * scale : g;
    T d = maximize ? -s : s;
    return l2 ? d + decay * p : d;
}

/* NaN-propagating max, as numpy.maximum and torch.maximum. */
static FO_ALWAYS_INLINE T NAME(nan_max)(T a, T b)
{
    return (a >= b || a != a) ? a : b;
}

/* The arguments every loop starts with, and the gradient it computes. */
#define FO_LOOP_ARGS const fo_hyper *h, fo_index n, char *const *bufs, \
    const int scaled, const int maximize, const int l2
#define FO_GRAD_SETUP                                                   \
    const GT *FO_RESTRICT grad = (const GT *)bufs[FO_GRAD];              \
    uint16_t *FO_RESTRICT param_copy = (uint16_t *)bufs[FO_PARAM_COPY];  \
    (void)param_copy;                                                    \
    const T scale = (T)h->grad_scale, decay = (T)h->weight_decay;
#define FO_GRAD(i) NAME(effective_grad)(LG(grad[i]), LP(param[i]), scaled, scale, maximize, l2, decay)

/* Call `loop` with the gradient switches as literals for the common case
 * (l2_used: whether the rule adds weight_decay to g), then any more arguments. */
#define FO_PLAIN(h, l2_used) \
    ((h)->grad_scale == 1.0 && !(h)->maximize && !((l2_used) && (h)->weight_decay != 0.0))
#define FO_CALL(loop, l2_used, ...)                                                        \
    do {                                                                                   \
        if (FO_PLAIN(h, l2_used)) loop(h, n, bufs, 0, 0, 0, __VA_ARGS__);                  \
        else loop(h, n, bufs, h->grad_scale != 1.0, h->maximize != 0,                      \
                  (l2_used) && h->weight_decay != 0.0, __VA_ARGS__);                       \
    } while (0)

/* ---- SGD --------------------------------------------------------------------
 * theta <- theta - lr g;  no state */
#if FO_DEFINE_PREPARE
static const char *fo_prepare_sgd(fo_hyper *h)
{
    h->step_size = h->lr;
    return NULL;
}
#endif

static FO_ALWAYS_INLINE void NAME(sgd_loop)(FO_LOOP_ARGS, const int unused)
{
    (void)unused;
    PT *FO_RESTRICT param = (PT *)bufs[FO_PARAM];
    const T lr = (T)h->step_size;
    FO_GRAD_SETUP
    FO_BLOCKS(lo, hi)
    FO_OMP_SIMD
    for (fo_index i = lo; i < hi; i++) {
        T g = FO_GRAD(i);
        FO_SET_PARAM(i, LP(param[i]) - lr * g);
    }
}

static void NAME(sgd)(const fo_hyper *h, fo_index n, char *const *bufs)
{
    FO_CALL(NAME(sgd_loop), 1, 0);
}

/* ---- the lecture's momentum, an EMA of gradients ----------------------------
 * v <- beta v + (1 - beta) g;  theta <- theta - lr v;  state: velocity */
#if FO_DEFINE_PREPARE
static const char *fo_prepare_momentum(fo_hyper *h)
{
    h->step_size = h->lr;
    return NULL;
}
#endif

/* The same arithmetic as SGD's momentum with mu = tau = beta past its first
 * step: beta v + (1 - beta) g.  So it is that loop. */
static void NAME(momentum)(const fo_hyper *h, fo_index n, char *const *bufs);

/* ---- torch.optim.SGD with momentum mu and dampening tau ---------------------
 * buf <- g at the first step, else mu buf + (1 - tau) g;
 * theta <- theta - lr (g + mu buf if nesterov else buf);  state: momentum_buffer */
#if FO_DEFINE_PREPARE
static const char *fo_prepare_sgd_momentum(fo_hyper *h)
{
    if (h->nesterov && (h->momentum <= 0.0 || h->dampening != 0.0))
        return "nesterov=True requires momentum > 0 and dampening = 0";
    h->step_size = h->lr;
    return NULL;
}
#endif

static FO_ALWAYS_INLINE void NAME(sgd_momentum_loop)(FO_LOOP_ARGS, const int first, const int nesterov,
                                                     const double momentum, const double dampening)
{
    PT *FO_RESTRICT param = (PT *)bufs[FO_PARAM];
    ST *FO_RESTRICT momentum_buffer = (ST *)bufs[FO_STATE];
    const T lr = (T)h->step_size, mu = (T)momentum, one_minus_tau = (T)(1.0 - dampening);
    FO_GRAD_SETUP
    FO_BLOCKS(lo, hi)
    FO_OMP_SIMD
    for (fo_index i = lo; i < hi; i++) {
        T g = FO_GRAD(i);
        T b = first ? g : mu * LS(momentum_buffer[i]) + one_minus_tau * g;
        momentum_buffer[i] = SS(b);
        T d = nesterov ? g + mu * b : b;
        FO_SET_PARAM(i, LP(param[i]) - lr * d);
    }
}

static void NAME(sgd_momentum)(const fo_hyper *h, fo_index n, char *const *bufs)
{
    const int first = h->step == 1;
    if (h->nesterov) FO_CALL(NAME(sgd_momentum_loop), 1, first, 1, h->momentum, h->dampening);
    else FO_CALL(NAME(sgd_momentum_loop), 1, first, 0, h->momentum, h->dampening);
}

static void NAME(momentum)(const fo_hyper *h, fo_index n, char *const *bufs)
{
    FO_CALL(NAME(sgd_momentum_loop), 1, 0, 0, h->beta, h->beta);
}

/* ---- torch.optim.RMSprop ------------------------------------------------------
 * s <- alpha s + (1 - alpha) g g
 * centered: a <- alpha a + (1 - alpha) g;  avg = sqrt(s - a^2) + eps, else sqrt(s) + eps
 * momentum: b <- mu b + g / avg; theta <- theta - lr b, else theta <- theta - lr (g / avg)
 * state: square_avg, grad_avg (centered only), momentum_buffer (momentum > 0 only) */
#if FO_DEFINE_PREPARE
static const char *fo_prepare_rmsprop(fo_hyper *h)
{
    h->step_size = h->lr;
    return NULL;
}
#endif

static FO_ALWAYS_INLINE void NAME(rmsprop_loop)(FO_LOOP_ARGS, const int centered, const int heavy_ball)
{
    PT *FO_RESTRICT param = (PT *)bufs[FO_PARAM];
    ST *FO_RESTRICT square_avg = (ST *)bufs[FO_STATE];
    ST *FO_RESTRICT grad_avg = (ST *)bufs[FO_STATE + 1];
    ST *FO_RESTRICT momentum_buffer = (ST *)bufs[FO_STATE + 2];
    const T lr = (T)h->step_size, alpha = (T)h->alpha, one_minus_alpha = (T)(1.0 - h->alpha);
    const T eps = (T)h->eps, mu = (T)h->momentum;
    FO_GRAD_SETUP
    FO_BLOCKS(lo, hi)
    FO_OMP_SIMD
    for (fo_index i = lo; i < hi; i++) {
        T g = FO_GRAD(i);
        T s = alpha * LS(square_avg[i]) + one_minus_alpha * g * g;
        square_avg[i] = SS(s);
        T avg;
        if (centered) {
            T a = alpha * LS(grad_avg[i]) + one_minus_alpha * g;
            grad_avg[i] = SS(a);
            avg = SQRT(s - a * a) + eps;
        } else {
            avg = SQRT(s) + eps;
        }
        if (heavy_ball) {
            T b = mu * LS(momentum_buffer[i]) + g / avg;
            momentum_buffer[i] = SS(b);
            FO_SET_PARAM(i, LP(param[i]) - lr * b);
        } else {
            FO_SET_PARAM(i, LP(param[i]) - lr * (g / avg));
        }
    }
}

static void NAME(rmsprop)(const fo_hyper *h, fo_index n, char *const *bufs)
{
    const int centered = bufs[FO_STATE + 1] != NULL, heavy_ball = bufs[FO_STATE + 2] != NULL;
    if (centered && heavy_ball) FO_CALL(NAME(rmsprop_loop), 1, 1, 1);
    else if (centered) FO_CALL(NAME(rmsprop_loop), 1, 1, 0);
    else if (heavy_ball) FO_CALL(NAME(rmsprop_loop), 1, 0, 1);
    else FO_CALL(NAME(rmsprop_loop), 1, 0, 0);
}

/* ---- torch.optim.Adagrad ------------------------------------------------------
 * lr_t = lr / (1 + (t - 1) lr_decay);  s <- s + g g;  theta <- theta - lr_t (g / (sqrt(s) + eps))
 * state: state_sum */
#if FO_DEFINE_PREPARE
static const char *fo_prepare_adagrad(fo_hyper *h)
{
    h->step_size = h->lr / (1.0 + (double)(h->step - 1) * h->lr_decay);
    return NULL;
}
#endif

static FO_ALWAYS_INLINE void NAME(adagrad_loop)(FO_LOOP_ARGS, const int unused)
{
    (void)unused;
    PT *FO_RESTRICT param = (PT *)bufs[FO_PARAM];
    ST *FO_RESTRICT state_sum = (ST *)bufs[FO_STATE];
    const T lr = (T)h->step_size, eps = (T)h->eps;
    FO_GRAD_SETUP
    FO_BLOCKS(lo, hi)
    FO_OMP_SIMD
    for (fo_index i = lo; i < hi; i++) {
        T g = FO_GRAD(i);
        T s = LS(state_sum[i]) + g * g;
        state_sum[i] = SS(s);
        FO_SET_PARAM(i, LP(param[i]) - lr * (g / (SQRT(s) + eps)));
    }
}

static void NAME(adagrad)(const fo_hyper *h, fo_index n, char *const *bufs)
{
    FO_CALL(NAME(adagrad_loop), 1, 0);
}

/* ---- Adam and AdamW -----------------------------------------------------------
 * Adam (Kingma & Ba 2014, Algorithm 1) as torch.optim.Adam, at step t:
 * m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g g;  amsgrad: vmax <- max(vmax, v)
 * theta <- theta - lr / (1 - b1^t) (m / (sqrt(v or vmax) / sqrt(1 - b2^t) + eps))
 * AdamW (torch.optim.AdamW): theta <- theta (1 - lr wd) first, and no L2 term in g.
 * state: exp_avg, exp_avg_sq, max_exp_avg_sq (amsgrad only) */
#if FO_DEFINE_PREPARE
static void fo_adam_bias_corrections(fo_hyper *h)
{
    h->step_size = h->lr / (1.0 - pow(h->beta1, (double)h->step));
    h->bias2_rsqrt = 1.0 / sqrt(1.0 - pow(h->beta2, (double)h->step));
}

static const char *fo_prepare_adam(fo_hyper *h)
{
    fo_adam_bias_corrections(h);
    h->param_scale = 1.0;
    return NULL;
}

static const char *fo_prepare_adamw(fo_hyper *h)
{
    fo_adam_bias_corrections(h);
    h->param_scale = 1.0 - h->lr * h->weight_decay;
    return NULL;
}
#endif

static FO_ALWAYS_INLINE void NAME(adam_loop)(FO_LOOP_ARGS, const int amsgrad, const int shrink)
{
    PT *FO_RESTRICT param = (PT *)bufs[FO_PARAM];
    ST *FO_RESTRICT exp_avg = (ST *)bufs[FO_STATE];
    ST *FO_RESTRICT exp_avg_sq = (ST *)bufs[FO_STATE + 1];
    ST *FO_RESTRICT max_exp_avg_sq = (ST *)bufs[FO_STATE + 2];
    const T step_size = (T)h->step_size, eps = (T)h->eps, rsqrt2 = (T)h->bias2_rsqrt;
    const T b1 = (T)h->beta1, omb1 = (T)(1.0 - h->beta1);
    const T b2 = (T)h->beta2, omb2 = (T)(1.0 - h->beta2);
    const T param_scale = (T)h->param_scale;
    FO_GRAD_SETUP
    FO_BLOCKS(lo, hi)
    FO_OMP_SIMD
    for (fo_index i = lo; i < hi; i++) {
        T g = FO_GRAD(i);
        T m = b1 * LS(exp_avg[i]) + omb1 * g;
        T v = b2 * LS(exp_avg_sq[i]) + omb2 * g * g;
        exp_avg[i] = SS(m);
        exp_avg_sq[i] = SS(v);
        if (amsgrad) {
            v = NAME(nan_max)(LS(max_exp_avg_sq[i]), v);
            max_exp_avg_sq[i] = SS(v);
        }
        T p = shrink ? LP(param[i]) * param_scale : LP(param[i]);
        FO_SET_PARAM(i, p - step_size * (m / (SQRT(v) * rsqrt2 + eps)));
    }
}

static void NAME(adam)(const fo_hyper *h, fo_index n, char *const *bufs)
{
    if (bufs[FO_STATE + 2] != NULL) FO_CALL(NAME(adam_loop), 1, 1, 0);
    else FO_CALL(NAME(adam_loop), 1, 0, 0);
}

static void NAME(adamw)(const fo_hyper *h, fo_index n, char *const *bufs)
{
    /* no decay leaves theta as it is: skip the multiply by 1 */
    const int shrink = h->weight_decay != 0.0 && h->lr != 0.0;
    if (bufs[FO_STATE + 2] != NULL) {
        if (shrink) FO_CALL(NAME(adam_loop), 0, 1, 1);
        else FO_CALL(NAME(adam_loop), 0, 1, 0);
    } else {
        if (shrink) FO_CALL(NAME(adam_loop), 0, 0, 1);
        else FO_CALL(NAME(adam_loop), 0, 0, 0);
    }
}

/* ---- Lion (Chen et al. 2023), as optax.lion ----------------------------------
 * u = sign(b1 m + (1 - b1) g);  theta <- theta - lr (u + wd theta);  m <- b2 m + (1 - b2) g
 * state: exp_avg */
#if FO_DEFINE_PREPARE
static const char *fo_prepare_lion(fo_hyper *h)
{
    h->step_size = h->lr;
    return NULL;
}
#endif

/* numpy.sign: -1, 0 or 1, and NaN for NaN (a zero of either sign gives +0) */
static FO_ALWAYS_INLINE T NAME(sign)(T x)
{
    return x > 0 ? (T)1 : x < 0 ? (T)-1 : x == 0 ? (T)0 : x;
}

static FO_ALWAYS_INLINE void NAME(lion_loop)(FO_LOOP_ARGS, const int decoupled)
{
    PT *FO_RESTRICT param = (PT *)bufs[FO_PARAM];
    ST *FO_RESTRICT exp_avg = (ST *)bufs[FO_STATE];
    const T lr = (T)h->step_size, wd = (T)h->weight_decay;
    const T b1 = (T)h->beta1, omb1 = (T)(1.0 - h->beta1), b2 = (T)h->beta2, omb2 = (T)(1.0 - h->beta2);
    FO_GRAD_SETUP
    FO_BLOCKS(lo, hi)
    FO_OMP_SIMD
    for (fo_index i = lo; i < hi; i++) {
        T g = FO_GRAD(i);
        T m = LS(exp_avg[i]);
        T u = NAME(sign)(b1 * m + omb1 * g);
        T p = LP(param[i]);
        FO_SET_PARAM(i, p - lr * (decoupled ? u + wd * p : u));
        exp_avg[i] = SS(b2 * m + omb2 * g);
    }
}

static void NAME(lion)(const fo_hyper *h, fo_index n, char *const *bufs)
{
    if (h->weight_decay != 0.0) FO_CALL(NAME(lion_loop), 0, 1);
    else FO_CALL(NAME(lion_loop), 0, 0);
}

/* torch.lerp(a, b, w) with a scalar weight, in torch's order: a + w (b - a) while
 * |w| < 0.5, else b - (b - a) (1 - w), with 1 - w rounded to T (one_minus_w).
 * torch computes m <- lerp(m, g, 1 - beta1) so for NAdam, RAdam and Adamax. */
static FO_ALWAYS_INLINE T NAME(lerp)(T a, T b, T w, T one_minus_w, const int small)
{
    return small ? a + w * (b - a) : b - (b - a) * one_minus_w;
}

/* Which form torch.lerp takes for weight w (rounded to T, as torch rounds it). */
static inline int NAME(lerp_small)(double w)
{
    const T wt = (T)w;
    return wt < (T)0.5 && wt > (T)-0.5;
}

/* ---- NAdam (Dozat 2016), as torch.optim.NAdam ------------------------------------
 * mu_t = b1 (1 - 0.5 * 0.96^(t psi)),  mu_{t+1} likewise;  mu_product = prod_{i <= t} mu_i (the caller's)
 * m <- lerp(m, g, 1 - b1);  v <- b2 v + (1 - b2) g g;  d = sqrt(v) / sqrt(1 - b2^t) + eps
 * theta <- theta + ((-lr (1 - mu_t) / (1 - mu_product)) g
 *                   + (-lr mu_{t+1} / (1 - mu_product mu_{t+1})) m) / d
 * (torch divides v by 1 - b2^t and divides g and m by d apart: three divisions an
 * element, too slow to stay at memory speed; this is Adam's one division, to rounding)
 * decoupled_weight_decay: theta <- theta (1 - lr wd) first, and no L2 term in g.
 * state: exp_avg, exp_avg_sq */
#if FO_DEFINE_PREPARE
static const char *fo_prepare_nadam(fo_hyper *h)
{
    const double t = (double)h->step;
    const double t_next = (double)((unsigned long long)h->step + 1u);  /* t + 1, even at the last step count */
    const double mu = h->beta1 * (1.0 - 0.5 * pow(0.96, t * h->momentum_decay));
    const double mu_next = h->beta1 * (1.0 - 0.5 * pow(0.96, t_next * h->momentum_decay));
    h->bias2_rsqrt = 1.0 / sqrt(1.0 - pow(h->beta2, t));
    h->grad_coef = -h->lr * (1.0 - mu) / (1.0 - h->mu_product);
    h->exp_avg_coef = -h->lr * mu_next / (1.0 - h->mu_product * mu_next);
    h->param_scale = h->decoupled_weight_decay ? 1.0 - h->lr * h->weight_decay : 1.0;
    return NULL;
}
#endif

static FO_ALWAYS_INLINE void NAME(nadam_loop)(FO_LOOP_ARGS, const int shrink, const int small)
{
    PT *FO_RESTRICT param = (PT *)bufs[FO_PARAM];
    ST *FO_RESTRICT exp_avg = (ST *)bufs[FO_STATE];
    ST *FO_RESTRICT exp_avg_sq = (ST *)bufs[FO_STATE + 1];
    const T grad_coef = (T)h->grad_coef, exp_avg_coef = (T)h->exp_avg_coef;
    const T rsqrt2 = (T)h->bias2_rsqrt, eps = (T)h->eps, param_scale = (T)h->param_scale;
    const T w1 = (T)(1.0 - h->beta1), one_minus_w1 = (T)1 - w1;
    const T b2 = (T)h->beta2, omb2 = (T)(1.0 - h->beta2);
    FO_GRAD_SETUP
    FO_BLOCKS(lo, hi)
    FO_OMP_SIMD
    for (fo_index i = lo; i < hi; i++) {
        T g = FO_GRAD(i);
        T p = shrink ? LP(param[i]) * param_scale : LP(param[i]);
        T m = NAME(lerp)(LS(exp_avg[i]), g, w1, one_minus_w1, small);
        T v = b2 * LS(exp_avg_sq[i]) + omb2 * g * g;
        exp_avg[i] = SS(m);
        exp_avg_sq[i] = SS(v);
        T denom = SQRT(v) * rsqrt2 + eps;
        FO_SET_PARAM(i, p + (grad_coef * g + exp_avg_coef * m) / denom);
    }
}

static void NAME(nadam)(const fo_hyper *h, fo_index n, char *const *bufs)
{
    const int small = NAME(lerp_small)(1.0 - h->beta1);
    if (h->decoupled_weight_decay) {
        if (h->weight_decay != 0.0 && h->lr != 0.0) FO_CALL(NAME(nadam_loop), 0, 1, small);
        else FO_CALL(NAME(nadam_loop), 0, 0, small);
    } else {
        FO_CALL(NAME(nadam_loop), 1, 0, small);
    }
}

/* ---- RAdam (Liu et al. 2020), as torch.optim.RAdam ------------------------------
 * m <- lerp(m, g, 1 - b1);  v <- b2 v + (1 - b2) g g;  m_hat = m / (1 - b1^t)
 * rho_inf = 2 / (1 - b2) - 1;  rho_t = rho_inf - 2 t b2^t / (1 - b2^t)
 * rho_t > 5: theta <- theta - (lr sqrt(1 - b2^t) r_t / (1 - b1^t)) m / (sqrt(v) + eps),
 *            r_t = sqrt((rho_t - 4) (rho_t - 2) rho_inf / ((rho_inf - 4) (rho_inf - 2) rho_t))
 * else:      theta <- theta - (lr / (1 - b1^t)) m
 * (torch divides m by 1 - b1^t and takes 1 / (sqrt(v) + eps) apart: one division an
 * element here, to stay at memory speed; the same to rounding)
 * decoupled_weight_decay: theta <- theta (1 - lr wd) first, and no L2 term in g.
 * state: exp_avg, exp_avg_sq */
#if FO_DEFINE_PREPARE
static const char *fo_prepare_radam(fo_hyper *h)
{
    const double t = (double)h->step;
    const double beta2_t = pow(h->beta2, t);
    const double bias1 = 1.0 - pow(h->beta1, t);
    const double bias2 = 1.0 - beta2_t;
    const double rho_inf = 2.0 / (1.0 - h->beta2) - 1.0;
    const double rho_t = rho_inf - 2.0 * t * beta2_t / bias2;
    h->rectified = rho_t > 5.0;
    if (h->rectified) {  /* only then: the early steps would take a root of a negative number */
        const double rect = sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t));
        h->step_size = h->lr * sqrt(bias2) * rect / bias1;
    } else {
        h->step_size = h->lr / bias1;
    }
    h->param_scale = h->decoupled_weight_decay ? 1.0 - h->lr * h->weight_decay : 1.0;
    return NULL;
}
#endif

static FO_ALWAYS_INLINE void NAME(radam_loop)(FO_LOOP_ARGS, const int shrink, const int rectified,
                                             const int small)
{
    PT *FO_RESTRICT param = (PT *)bufs[FO_PARAM];
    ST *FO_RESTRICT exp_avg = (ST *)bufs[FO_STATE];
    ST *FO_RESTRICT exp_avg_sq = (ST *)bufs[FO_STATE + 1];
    const T step_size = (T)h->step_size, eps = (T)h->eps, param_scale = (T)h->param_scale;
    const T w1 = (T)(1.0 - h->beta1), one_minus_w1 = (T)1 - w1;
    const T b2 = (T)h->beta2, omb2 = (T)(1.0 - h->beta2);
    FO_GRAD_SETUP
    FO_BLOCKS(lo, hi)
    FO_OMP_SIMD
    for (fo_index i = lo; i < hi; i++) {
        T g = FO_GRAD(i);
        T p = shrink ? LP(param[i]) * param_scale : LP(param[i]);
        T m = NAME(lerp)(LS(exp_avg[i]), g, w1, one_minus_w1, small);
        T v = b2 * LS(exp_avg_sq[i]) + omb2 * g * g;
        exp_avg[i] = SS(m);
        exp_avg_sq[i] = SS(v);
        if (rectified) FO_SET_PARAM(i, p - step_size * m / (SQRT(v) + eps));
        else FO_SET_PARAM(i, p - step_size * m);
    }
}

static void NAME(radam)(const fo_hyper *h, fo_index n, char *const *bufs)
{
    const int decoupled = h->decoupled_weight_decay != 0;
    const int shrink = decoupled && h->weight_decay != 0.0 && h->lr != 0.0;
    const int small = NAME(lerp_small)(1.0 - h->beta1);
    if (decoupled) {
        if (shrink && h->rectified) FO_CALL(NAME(radam_loop), 0, 1, 1, small);
        else if (shrink) FO_CALL(NAME(radam_loop), 0, 1, 0, small);
        else if (h->rectified) FO_CALL(NAME(radam_loop), 0, 0, 1, small);
        else FO_CALL(NAME(radam_loop), 0, 0, 0, small);
    } else {
        if (h->rectified) FO_CALL(NAME(radam_loop), 1, 0, 1, small);
        else FO_CALL(NAME(radam_loop), 1, 0, 0, small);
    }
}

/* ---- Adamax (Kingma & Ba 2014, section 7.1), as torch.optim.Adamax -------------
 * m <- lerp(m, g, 1 - b1);  u <- max(b2 u, |g| + eps)  (NaN-propagating)
 * theta <- theta + (-lr / (1 - b1^t)) m / u
 * state: exp_avg, exp_inf */
#if FO_DEFINE_PREPARE
static const char *fo_prepare_adamax(fo_hyper *h)
{
    h->step_size = h->lr / (1.0 - pow(h->beta1, (double)h->step));
    return NULL;
}
#endif

/* |x| as numpy.abs: +0 for either zero, NaN for NaN */
static FO_ALWAYS_INLINE T NAME(abs)(T x)
{
    return x <= 0 ? (T)0 - x : x;
}

static FO_ALWAYS_INLINE void NAME(adamax_loop)(FO_LOOP_ARGS, const int small)
{
    PT *FO_RESTRICT param = (PT *)bufs[FO_PARAM];
    ST *FO_RESTRICT exp_avg = (ST *)bufs[FO_STATE];
    ST *FO_RESTRICT exp_inf = (ST *)bufs[FO_STATE + 1];
    const T neg_step_size = (T)(-h->step_size), eps = (T)h->eps;
    const T w1 = (T)(1.0 - h->beta1), one_minus_w1 = (T)1 - w1, b2 = (T)h->beta2;
    FO_GRAD_SETUP
    FO_BLOCKS(lo, hi)
    FO_OMP_SIMD
    for (fo_index i = lo; i < hi; i++) {
        T g = FO_GRAD(i);
        T m = NAME(lerp)(LS(exp_avg[i]), g, w1, one_minus_w1, small);
        T u = NAME(nan_max)(b2 * LS(exp_inf[i]), NAME(abs)(g) + eps);
        exp_avg[i] = SS(m);
        exp_inf[i] = SS(u);
        FO_SET_PARAM(i, LP(param[i]) + neg_step_size * m / u);
    }
}

static void NAME(adamax)(const fo_hyper *h, fo_index n, char *const *bufs)
{
    FO_CALL(NAME(adamax_loop), 1, NAME(lerp_small)(1.0 - h->beta1));
}

/* ---- Schedule-Free AdamW (Defazio et al. 2024), as schedulefree.AdamWScheduleFree ----
 * The params hold y, where gradients are taken; z is the base sequence, and the
 * average x = the c-weighted average of the z's is never stored (y = (1 - b1) z + b1 x).
 * At step t, with c = average_weight (the caller's: weight / weight_sum):
 * z <- theta at step 1;  v <- b2 v + (1 - b2) g g
 * n = g / (sqrt(v) / sqrt(1 - b2^t) + eps) + wd y      (decay taken at y;
 *     schedulefree divides v by 1 - b2^t: Adam's form here, one division an element)
 * y <- lerp(y, z, c) + lr (b1 (1 - c) - 1) n;  z <- z - lr n
 * state: z, exp_avg_sq */
#if FO_DEFINE_PREPARE
static const char *fo_prepare_schedule_free_adamw(fo_hyper *h)
{
    if (!(h->average_weight <= 1.0)) return "average_weight must be in [0, 1]";
    h->bias2_rsqrt = 1.0 / sqrt(1.0 - pow(h->beta2, (double)h->step));
    h->lerp_weight = h->average_weight;
    h->y_grad_coef = h->lr * (h->beta1 * (1.0 - h->average_weight) - 1.0);
    h->step_size = h->lr;
    return NULL;
}
#endif

static FO_ALWAYS_INLINE void NAME(schedule_free_adamw_loop)(FO_LOOP_ARGS, const int decays, const int first,
                                                           const int small)
{
    PT *FO_RESTRICT param = (PT *)bufs[FO_PARAM];
    ST *FO_RESTRICT z = (ST *)bufs[FO_STATE];
    ST *FO_RESTRICT exp_avg_sq = (ST *)bufs[FO_STATE + 1];
    const T lr = (T)h->step_size, y_grad_coef = (T)h->y_grad_coef, wd = (T)h->weight_decay;
    const T rsqrt2 = (T)h->bias2_rsqrt, eps = (T)h->eps;
    const T c = (T)h->lerp_weight, one_minus_c = (T)1 - c;
    const T b2 = (T)h->beta2, omb2 = (T)(1.0 - h->beta2);
    FO_GRAD_SETUP
    FO_BLOCKS(lo, hi)
    FO_OMP_SIMD
    for (fo_index i = lo; i < hi; i++) {
        T g = FO_GRAD(i);
        T y = LP(param[i]);
        T zi = first ? y : LS(z[i]);
        T v = b2 * LS(exp_avg_sq[i]) + omb2 * g * g;
        exp_avg_sq[i] = SS(v);
        T normalized = g / (SQRT(v) * rsqrt2 + eps);
        if (decays) normalized = normalized + wd * y;
        FO_SET_PARAM(i, NAME(lerp)(y, zi, c, one_minus_c, small) + y_grad_coef * normalized);
        z[i] = SS(zi - lr * normalized);
    }
}

static void NAME(schedule_free_adamw)(const fo_hyper *h, fo_index n, char *const *bufs)
{
    const int first = h->step == 1, small = NAME(lerp_small)(h->lerp_weight);
    if (h->weight_decay != 0.0) FO_CALL(NAME(schedule_free_adamw_loop), 0, 1, first, small);
    else FO_CALL(NAME(schedule_free_adamw_loop), 0, 0, first, small);
}

/* ---- Schedule-Free's train() / eval() switch: passes, not steps ------------------
 * The params move between y and x, mixed with z, which takes the gradient's place
 * in bufs and is only read (fastopt.rules.PASSES):
 * eval:  x = lerp(y, z, 1 - 1/b1)      train:  y = lerp(x, z, 1 - b1) */
#if FO_DEFINE_PREPARE
static const char *fo_prepare_schedule_free_eval(fo_hyper *h)
{
    if (!(h->beta1 > 0.0)) return "beta1 must be > 0: x = y + (1 - 1/beta1) (z - y)";
    h->lerp_weight = 1.0 - 1.0 / h->beta1;
    return NULL;
}

static const char *fo_prepare_schedule_free_train(fo_hyper *h)
{
    h->lerp_weight = 1.0 - h->beta1;
    return NULL;
}
#endif

static FO_ALWAYS_INLINE void NAME(lerp_pass_loop)(const fo_hyper *h, fo_index n, char *const *bufs,
                                                  const int small)
{
    PT *FO_RESTRICT param = (PT *)bufs[FO_PARAM];
    const GT *FO_RESTRICT z = (const GT *)bufs[FO_GRAD];
    uint16_t *FO_RESTRICT param_copy = (uint16_t *)bufs[FO_PARAM_COPY];
    (void)param_copy;
    const T w = (T)h->lerp_weight, one_minus_w = (T)1 - w;
    FO_BLOCKS(lo, hi)
    FO_OMP_SIMD
    for (fo_index i = lo; i < hi; i++) {
        FO_SET_PARAM(i, NAME(lerp)(LP(param[i]), LG(z[i]), w, one_minus_w, small));
    }
}

static void NAME(schedule_free_eval)(const fo_hyper *h, fo_index n, char *const *bufs)
{
    NAME(lerp_pass_loop)(h, n, bufs, NAME(lerp_small)(h->lerp_weight));
}

static void NAME(schedule_free_train)(const fo_hyper *h, fo_index n, char *const *bufs)
{
    NAME(lerp_pass_loop)(h, n, bufs, NAME(lerp_small)(h->lerp_weight));
}

/* ---- LAMB -----------------------------------------------------------------------
 * LAMB (You et al. 2019) as optax.lamb, at step t, per tensor:
 * m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g g
 * u = (m / (1 - b1^t)) / (sqrt(v) / sqrt(1 - b2^t) + eps) + wd theta     Adam's direction, decayed
 * r = ||theta|| / ||u|| (1 where either is 0), at most max_trust_ratio     the trust ratio
 * theta <- theta - lr r u
 * r needs the whole tensor, so a step is two passes.  lamb updates m and v
 * and adds theta^2 and u^2 into the FO_SUMS lanes (float64, exact squares,
 * element i of the run into lane i % FO_NORM_LANES; the caller starts every
 * run on a multiple of FO_NORM_LANES within its tensor's norm block); it
 * writes no param.  The caller finishes the norms as the norm pass does and
 * runs lamb_apply with step_size = lr r, which takes u again from the stored
 * m and v and writes only the param.  state: exp_avg, exp_avg_sq */
#if FO_DEFINE_PREPARE
static const char *fo_prepare_lamb(fo_hyper *h)
{
    if (!(h->max_trust_ratio > 0.0))
        return "max_trust_ratio must be > 0 (inf: no cap)";
    h->bias1_rcp = 1.0 / (1.0 - pow(h->beta1, (double)h->step));
    h->bias2_rsqrt = 1.0 / sqrt(1.0 - pow(h->beta2, (double)h->step));
    h->step_size = h->lr;  /* lamb_apply's is lr r, set per tensor */
    return NULL;
}

static const char *fo_prepare_lamb_apply(fo_hyper *h)
{
    (void)h;
    return NULL;
}
#endif

/* u, from the moments and the param, the same in both passes */
static FO_ALWAYS_INLINE T NAME(lamb_direction)(T m, T v, T p, T c1, T rsqrt2, T eps, const int decays, T wd)
{
    T u = (m * c1) / (SQRT(v) * rsqrt2 + eps);
    return decays ? u + wd * p : u;
}

#define FO_LAMB_SCALARS                                                          \
    const T c1 = (T)h->bias1_rcp, rsqrt2 = (T)h->bias2_rsqrt, eps = (T)h->eps; \
    const T wd = (T)h->weight_decay;

static FO_ALWAYS_INLINE void NAME(lamb_loop)(FO_LOOP_ARGS, const int decays)
{
    const PT *FO_RESTRICT param = (const PT *)bufs[FO_PARAM];
    ST *FO_RESTRICT exp_avg = (ST *)bufs[FO_STATE];
    ST *FO_RESTRICT exp_avg_sq = (ST *)bufs[FO_STATE + 1];
    double *FO_RESTRICT sums = (double *)bufs[FO_SUMS];
    const T b1 = (T)h->beta1, omb1 = (T)(1.0 - h->beta1);
    const T b2 = (T)h->beta2, omb2 = (T)(1.0 - h->beta2);
    FO_LAMB_SCALARS
    FO_GRAD_SETUP
    FO_ALIGNED(64) double param_sq[FO_NORM_LANES], update_sq[FO_NORM_LANES];
    for (int l = 0; l < FO_NORM_LANES; l++) {
        param_sq[l] = sums[l];
        update_sq[l] = sums[FO_NORM_LANES + l];
    }
/* element i into lane l: whole rows of lanes vectorize without a mask, the tail after them */
#define FO_LAMB_ELEMENT(i, l)                                                     \
    {                                                                             \
        T g = FO_GRAD(i);                                                         \
        T m = b1 * LS(exp_avg[i]) + omb1 * g;                                     \
        T v = b2 * LS(exp_avg_sq[i]) + omb2 * g * g;                              \
        exp_avg[i] = SS(m);                                                       \
        exp_avg_sq[i] = SS(v);                                                    \
        T p = LP(param[i]);                                                       \
        T u = NAME(lamb_direction)(m, v, p, c1, rsqrt2, eps, decays, wd);         \
        param_sq[l] += (double)p * (double)p;                                     \
        update_sq[l] += (double)u * (double)u;                                    \
    }
    FO_BLOCKS(lo, hi) {
        const fo_index full = hi - (hi - lo) % FO_NORM_LANES;  /* only n's last block has a tail */
        for (fo_index i0 = lo; i0 < full; i0 += FO_NORM_LANES) {
            FO_OMP_SIMD
            for (int l = 0; l < FO_NORM_LANES; l++) FO_LAMB_ELEMENT(i0 + l, l)
        }
        for (fo_index i = full; i < hi; i++) FO_LAMB_ELEMENT(i, (int)(i - full))
    }
#undef FO_LAMB_ELEMENT
    for (int l = 0; l < FO_NORM_LANES; l++) {
        sums[l] = param_sq[l];
        sums[FO_NORM_LANES + l] = update_sq[l];
    }
}

static void NAME(lamb)(const fo_hyper *h, fo_index n, char *const *bufs)
{
    if (h->weight_decay != 0.0) FO_CALL(NAME(lamb_loop), 0, 1);
    else FO_CALL(NAME(lamb_loop), 0, 0);
}

static FO_ALWAYS_INLINE void NAME(lamb_apply_loop)(const fo_hyper *h, fo_index n, char *const *bufs,
                                                  const int decay)
{
    PT *FO_RESTRICT param = (PT *)bufs[FO_PARAM];
    const ST *FO_RESTRICT exp_avg = (const ST *)bufs[FO_STATE];
    const ST *FO_RESTRICT exp_avg_sq = (const ST *)bufs[FO_STATE + 1];
    uint16_t *FO_RESTRICT param_copy = (uint16_t *)bufs[FO_PARAM_COPY];
    (void)param_copy;
    const T step_size = (T)h->step_size;
    FO_LAMB_SCALARS
    FO_BLOCKS(lo, hi)
    FO_OMP_SIMD
    for (fo_index i = lo; i < hi; i++) {
        T p = LP(param[i]);
        T u = NAME(lamb_direction)(LS(exp_avg[i]), LS(exp_avg_sq[i]), p, c1, rsqrt2, eps, decay, wd);
        FO_SET_PARAM(i, p - step_size * u);
    }
}

static void NAME(lamb_apply)(const fo_hyper *h, fo_index n, char *const *bufs)
{
    if (h->weight_decay != 0.0) NAME(lamb_apply_loop)(h, n, bufs, 1);
    else NAME(lamb_apply_loop)(h, n, bufs, 0);
}
#undef FO_LAMB_SCALARS

/* ---- the traffic ceiling --------------------------------------------------------
 * For benchmarks: reads param, grad and up to FO_MAX_STATE state buffers and
 * writes param and the state, one add each, so it moves the bytes of a rule
 * with that many state buffers and does next to no arithmetic. */
#if FO_DEFINE_PREPARE
static const char *fo_prepare_ceiling(fo_hyper *h)
{
    (void)h;
    return NULL;
}
#endif

static FO_ALWAYS_INLINE void NAME(ceiling_loop)(const fo_hyper *h, fo_index n, char *const *bufs,
                                               const int n_state)
{
    (void)h;
    PT *FO_RESTRICT param = (PT *)bufs[FO_PARAM];
    const GT *FO_RESTRICT grad = (const GT *)bufs[FO_GRAD];
    ST *FO_RESTRICT s1 = (ST *)bufs[FO_STATE];
    ST *FO_RESTRICT s2 = (ST *)bufs[FO_STATE + 1];
    ST *FO_RESTRICT s3 = (ST *)bufs[FO_STATE + 2];
    uint16_t *FO_RESTRICT param_copy = (uint16_t *)bufs[FO_PARAM_COPY];
    (void)param_copy;
    FO_BLOCKS(lo, hi)
    FO_OMP_SIMD
    for (fo_index i = lo; i < hi; i++) {
        T g = LG(grad[i]);
        FO_SET_PARAM(i, LP(param[i]) + g);
        if (n_state >= 1) s1[i] = SS(LS(s1[i]) + g);
        if (n_state >= 2) s2[i] = SS(LS(s2[i]) + g);
        if (n_state >= 3) s3[i] = SS(LS(s3[i]) + g);
    }
}

static void NAME(ceiling)(const fo_hyper *h, fo_index n, char *const *bufs)
{
    int n_state = 0;
    while (n_state < FO_MAX_STATE && bufs[FO_STATE + n_state] != NULL) n_state++;
    switch (n_state) {
    case 0: NAME(ceiling_loop)(h, n, bufs, 0); break;
    case 1: NAME(ceiling_loop)(h, n, bufs, 1); break;
    case 2: NAME(ceiling_loop)(h, n, bufs, 2); break;
    default: NAME(ceiling_loop)(h, n, bufs, 3); break;
    }
}

#undef FO_SET_PARAM
#undef FO_LOOP_ARGS
#undef FO_GRAD_SETUP
#undef FO_GRAD
#undef FO_PLAIN
#undef FO_CALL
