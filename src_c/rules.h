/* The update rules, written once and included once per (dtype, SIMD level).
 *
 * The includer defines:
 *   T       the element type (float or double)
 *   NAME(x) the symbol for rule x at this dtype and level, e.g. adam_f32_avx2
 *   SQRT    sqrtf or sqrt, so float math stays in float
 *
 * Why it is written this way:
 * - Each element's update is plain scalar C inside a `#pragma omp simd` loop
 *   over restrict pointers, so the compiler vectorizes it at every level.
 * - Arithmetic is in T with the same operations, in the same order, as
 *   fastopt.reference; the build turns FMA contraction off and keeps IEEE
 *   semantics (no -ffast-math), and sqrt and division are correctly rounded
 *   in every vector width, so a result never depends on the SIMD level, the
 *   thread count or where a chunk starts.
 * - Loop-invariant flags (maximize, weight decay) become selects; variants
 *   that touch an extra buffer get a loop of their own, since a buffer that
 *   is not there must not be loaded.
 * - Loops run in blocks, prefetching the buffers a few blocks ahead
 *   (FO_BLOCKS): sqrt and division latency would otherwise fill the
 *   out-of-order window and leave too few loads in flight to reach memory
 *   bandwidth on large buffers.
 */

/* for (lo, hi) over blocks of [0, n), prefetching ahead before each block. */
#define FO_BLOCKS(lo, hi)                                                     \
    for (fo_index lo = 0, hi = 0;                                             \
         lo < n && (hi = fo_block_end(lo, n, sizeof(T)),                      \
                    fo_prefetch_ahead(bufs, hi, n, sizeof(T)), 1);            \
         lo = hi)

/* The gradient as the rules see it: scaled (gradient clipping folded into
 * the step), negated for maximize, plus L2 decay. */
static inline T NAME(effective_grad)(T g, T p, int has_scale, T scale, int maximize,
                                     int has_decay, T decay)
{
    T s = has_scale ? g * scale : g;
    T d = maximize ? -s : s;
    return has_decay ? d + decay * p : d;
}

/* NaN-propagating max, as numpy.maximum and torch.maximum. */
static inline T NAME(nan_max)(T a, T b)
{
    return (a >= b || a != a) ? a : b;
}

#define FO_GRAD_SETUP                                                   \
    const int has_scale = h->grad_scale != 1.0;                         \
    const T scale = (T)h->grad_scale;                                   \
    const int maximize = h->maximize;                                   \
    const int has_decay = h->weight_decay != 0.0;                       \
    const T decay = (T)h->weight_decay;

#define FO_GRAD(i) \
    NAME(effective_grad)(grad[i], param[i], has_scale, scale, maximize, has_decay, decay)

/* theta <- theta - lr * g */
static void NAME(sgd)(const fo_hyper *h, fo_index n, char *const *bufs)
{
    T *FO_RESTRICT param = (T *)bufs[0];
    const T *FO_RESTRICT grad = (const T *)bufs[1];
    const T lr = (T)h->lr;
    FO_GRAD_SETUP
    FO_BLOCKS(lo, hi)
#pragma omp simd
    for (fo_index i = lo; i < hi; i++) {
        T g = FO_GRAD(i);
        param[i] = param[i] - lr * g;
    }
}

/* The lecture's momentum, an EMA of gradients:
 * v <- beta v + (1 - beta) g;  theta <- theta - lr v */
static void NAME(momentum)(const fo_hyper *h, fo_index n, char *const *bufs)
{
    T *FO_RESTRICT param = (T *)bufs[0];
    const T *FO_RESTRICT grad = (const T *)bufs[1];
    T *FO_RESTRICT velocity = (T *)bufs[2];
    const T lr = (T)h->lr, beta = (T)h->beta1, one_minus_beta = (T)h->one_minus_beta1;
    FO_GRAD_SETUP
    FO_BLOCKS(lo, hi)
#pragma omp simd
    for (fo_index i = lo; i < hi; i++) {
        T g = FO_GRAD(i);
        T v = beta * velocity[i] + one_minus_beta * g;
        velocity[i] = v;
        param[i] = param[i] - lr * v;
    }
}

/* torch.optim.SGD with momentum mu and dampening tau:
 * buf <- g at the first step, else mu buf + (1 - tau) g;
 * theta <- theta - lr (g + mu buf if nesterov else buf) */
static void NAME(sgd_momentum)(const fo_hyper *h, fo_index n, char *const *bufs)
{
    T *FO_RESTRICT param = (T *)bufs[0];
    const T *FO_RESTRICT grad = (const T *)bufs[1];
    T *FO_RESTRICT momentum_buffer = (T *)bufs[2];
    const T lr = (T)h->lr, mu = (T)h->beta1, one_minus_tau = (T)h->one_minus_beta1;
    const int first = h->first_step, nesterov = h->variant == FO_NESTEROV;
    FO_GRAD_SETUP
    FO_BLOCKS(lo, hi)
#pragma omp simd
    for (fo_index i = lo; i < hi; i++) {
        T g = FO_GRAD(i);
        T b = first ? g : mu * momentum_buffer[i] + one_minus_tau * g;
        momentum_buffer[i] = b;
        T d = nesterov ? g + mu * b : b;
        param[i] = param[i] - lr * d;
    }
}

/* torch.optim.RMSprop:
 * s <- alpha s + (1 - alpha) g^2
 * centered: a <- alpha a + (1 - alpha) g;  avg = sqrt(s - a^2) + eps, else sqrt(s) + eps
 * momentum: b <- mu b + g / avg; theta <- theta - lr b, else theta <- theta - lr (g / avg) */
static inline T NAME(rmsprop_square_avg)(T s, T g, T alpha, T one_minus_alpha)
{
    return alpha * s + one_minus_alpha * (g * g);
}

static void NAME(rmsprop)(const fo_hyper *h, fo_index n, char *const *bufs)
{
    T *FO_RESTRICT param = (T *)bufs[0];
    const T *FO_RESTRICT grad = (const T *)bufs[1];
    T *FO_RESTRICT square_avg = (T *)bufs[2];
    T *FO_RESTRICT grad_avg = (T *)bufs[3];
    T *FO_RESTRICT momentum_buffer = (T *)bufs[4];
    const T lr = (T)h->lr, alpha = (T)h->beta1, one_minus_alpha = (T)h->one_minus_beta1;
    const T eps = (T)h->eps, mu = (T)h->beta2;
    FO_GRAD_SETUP
    switch (h->variant) {
    case 0:
        FO_BLOCKS(lo, hi)
#pragma omp simd
        for (fo_index i = lo; i < hi; i++) {
            T g = FO_GRAD(i);
            T s = NAME(rmsprop_square_avg)(square_avg[i], g, alpha, one_minus_alpha);
            square_avg[i] = s;
            param[i] = param[i] - lr * (g / (SQRT(s) + eps));
        }
        break;
    case FO_RMSPROP_CENTERED:
        FO_BLOCKS(lo, hi)
#pragma omp simd
        for (fo_index i = lo; i < hi; i++) {
            T g = FO_GRAD(i);
            T s = NAME(rmsprop_square_avg)(square_avg[i], g, alpha, one_minus_alpha);
            T a = alpha * grad_avg[i] + one_minus_alpha * g;
            square_avg[i] = s;
            grad_avg[i] = a;
            param[i] = param[i] - lr * (g / (SQRT(s - a * a) + eps));
        }
        break;
    case FO_RMSPROP_MOMENTUM:
        FO_BLOCKS(lo, hi)
#pragma omp simd
        for (fo_index i = lo; i < hi; i++) {
            T g = FO_GRAD(i);
            T s = NAME(rmsprop_square_avg)(square_avg[i], g, alpha, one_minus_alpha);
            T b = mu * momentum_buffer[i] + g / (SQRT(s) + eps);
            square_avg[i] = s;
            momentum_buffer[i] = b;
            param[i] = param[i] - lr * b;
        }
        break;
    case FO_RMSPROP_CENTERED | FO_RMSPROP_MOMENTUM:
        FO_BLOCKS(lo, hi)
#pragma omp simd
        for (fo_index i = lo; i < hi; i++) {
            T g = FO_GRAD(i);
            T s = NAME(rmsprop_square_avg)(square_avg[i], g, alpha, one_minus_alpha);
            T a = alpha * grad_avg[i] + one_minus_alpha * g;
            T b = mu * momentum_buffer[i] + g / (SQRT(s - a * a) + eps);
            square_avg[i] = s;
            grad_avg[i] = a;
            momentum_buffer[i] = b;
            param[i] = param[i] - lr * b;
        }
        break;
    }
}

/* torch.optim.Adagrad, h->lr already decayed to lr / (1 + (t - 1) lr_decay):
 * s <- s + g^2;  theta <- theta - lr (g / (SQRT(s) + eps)) */
static void NAME(adagrad)(const fo_hyper *h, fo_index n, char *const *bufs)
{
    T *FO_RESTRICT param = (T *)bufs[0];
    const T *FO_RESTRICT grad = (const T *)bufs[1];
    T *FO_RESTRICT state_sum = (T *)bufs[2];
    const T lr = (T)h->lr, eps = (T)h->eps;
    FO_GRAD_SETUP
    FO_BLOCKS(lo, hi)
#pragma omp simd
    for (fo_index i = lo; i < hi; i++) {
        T g = FO_GRAD(i);
        T s = state_sum[i] + g * g;
        state_sum[i] = s;
        param[i] = param[i] - lr * (g / (SQRT(s) + eps));
    }
}

/* Adam (Kingma & Ba 2014, Algorithm 1) as torch.optim.Adam, with
 * h->lr = lr / (1 - beta1^t) and h->bias2_rsqrt = 1 / sqrt(1 - beta2^t):
 * m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;  amsgrad: vmax <- max(vmax, v)
 * theta <- theta - step_size (m / (sqrt(v or vmax) * bias2_rsqrt + eps)) */
static inline T NAME(adam_first)(T m, T g, T b1, T omb1) { return b1 * m + omb1 * g; }
static inline T NAME(adam_second)(T v, T g, T b2, T omb2) { return b2 * v + omb2 * (g * g); }

#define FO_ADAM_SETUP                                                          \
    T *FO_RESTRICT param = (T *)bufs[0];                                       \
    const T *FO_RESTRICT grad = (const T *)bufs[1];                            \
    T *FO_RESTRICT exp_avg = (T *)bufs[2];                                     \
    T *FO_RESTRICT exp_avg_sq = (T *)bufs[3];                                  \
    T *FO_RESTRICT max_exp_avg_sq = (T *)bufs[4];                              \
    const T step_size = (T)h->lr, eps = (T)h->eps, rsqrt2 = (T)h->bias2_rsqrt; \
    const T b1 = (T)h->beta1, omb1 = (T)h->one_minus_beta1;                    \
    const T b2 = (T)h->beta2, omb2 = (T)h->one_minus_beta2;

/* The Adam loops, shared by adam (L2 decay in the gradient) and adamw
 * (decoupled: theta scaled by `shrink` before the update; 1 leaves it). */
#define FO_ADAM_LOOPS(GRAD_EXPR, SHRINK)                                         \
    if (h->variant == FO_AMSGRAD) {                                              \
        FO_BLOCKS(lo, hi)                                                        \
        FO_OMP_SIMD                                                              \
        for (fo_index i = lo; i < hi; i++) {                                     \
            T g = GRAD_EXPR;                                                     \
            T m = NAME(adam_first)(exp_avg[i], g, b1, omb1);                     \
            T v = NAME(adam_second)(exp_avg_sq[i], g, b2, omb2);                 \
            T vmax = NAME(nan_max)(max_exp_avg_sq[i], v);                        \
            exp_avg[i] = m;                                                      \
            exp_avg_sq[i] = v;                                                   \
            max_exp_avg_sq[i] = vmax;                                            \
            param[i] = SHRINK(param[i]) - step_size * (m / (SQRT(vmax) * rsqrt2 + eps)); \
        }                                                                        \
    } else {                                                                     \
        FO_BLOCKS(lo, hi)                                                        \
        FO_OMP_SIMD                                                              \
        for (fo_index i = lo; i < hi; i++) {                                     \
            T g = GRAD_EXPR;                                                     \
            T m = NAME(adam_first)(exp_avg[i], g, b1, omb1);                     \
            T v = NAME(adam_second)(exp_avg_sq[i], g, b2, omb2);                 \
            exp_avg[i] = m;                                                      \
            exp_avg_sq[i] = v;                                                   \
            param[i] = SHRINK(param[i]) - step_size * (m / (SQRT(v) * rsqrt2 + eps)); \
        }                                                                        \
    }

#define FO_NO_SHRINK(p) (p)
#define FO_SHRINK(p) ((p) * shrink)

static void NAME(adam)(const fo_hyper *h, fo_index n, char *const *bufs)
{
    FO_ADAM_SETUP
    FO_GRAD_SETUP
    FO_ADAM_LOOPS(FO_GRAD(i), FO_NO_SHRINK)
}

/* AdamW (torch.optim.AdamW): theta <- theta (1 - lr wd) first, then Adam without L2. */
static void NAME(adamw)(const fo_hyper *h, fo_index n, char *const *bufs)
{
    FO_ADAM_SETUP
    const T shrink = (T)h->decay_factor;
    FO_GRAD_SETUP
    (void)has_decay; (void)decay;  /* decoupled: no L2 term in the gradient */
    FO_ADAM_LOOPS(NAME(effective_grad)(grad[i], param[i], has_scale, scale, maximize, 0, decay),
                  FO_SHRINK)
}

/* The traffic ceiling: reads param, grad and `variant` state buffers and
 * writes param and the state, with one add each, so it moves the bytes of a
 * rule with that many state buffers and does next to no arithmetic. */
static void NAME(ceiling)(const fo_hyper *h, fo_index n, char *const *bufs)
{
    T *FO_RESTRICT param = (T *)bufs[0];
    const T *FO_RESTRICT grad = (const T *)bufs[1];
    T *FO_RESTRICT s1 = (T *)bufs[2];
    T *FO_RESTRICT s2 = (T *)bufs[3];
    T *FO_RESTRICT s3 = (T *)bufs[4];
    switch (h->variant) {
    case 0:
        FO_BLOCKS(lo, hi)
#pragma omp simd
        for (fo_index i = lo; i < hi; i++) param[i] = param[i] + grad[i];
        break;
    case 1:
        FO_BLOCKS(lo, hi)
#pragma omp simd
        for (fo_index i = lo; i < hi; i++) { param[i] = param[i] + grad[i]; s1[i] = s1[i] + grad[i]; }
        break;
    case 2:
        FO_BLOCKS(lo, hi)
#pragma omp simd
        for (fo_index i = lo; i < hi; i++) {
            param[i] = param[i] + grad[i]; s1[i] = s1[i] + grad[i]; s2[i] = s2[i] + grad[i];
        }
        break;
    default:
        FO_BLOCKS(lo, hi)
#pragma omp simd
        for (fo_index i = lo; i < hi; i++) {
            param[i] = param[i] + grad[i]; s1[i] = s1[i] + grad[i];
            s2[i] = s2[i] + grad[i]; s3[i] = s3[i] + grad[i];
        }
        break;
    }
}

#undef FO_GRAD_SETUP
#undef FO_GRAD
#undef FO_ADAM_SETUP
#undef FO_ADAM_LOOPS
#undef FO_NO_SHRINK
#undef FO_SHRINK
