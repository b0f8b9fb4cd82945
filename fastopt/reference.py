"""The pure-NumPy twin of every fused step: the specification fastopt's kernels are held to.

Each function has the signature of its fused counterpart in :mod:`fastopt`,
updates its buffers in place and returns None.  Every buffer argument is an
ndarray or a list of ndarrays.  Each rule below is written for one dtype, float32
or float64; where a tensor's buffers (or its ``param_copy``) include bfloat16
(ml_dtypes) or float16, the rule runs on float32 copies of them and each result
is rounded to nearest even into its buffer (the param stochastically with
``stochastic_rounding=True``: :func:`round_stochastically`), and ``param_copy``
receives the new param rounded to its dtype.  A state buffer given as 8-bit
block-quantized state (:class:`fastopt.QuantizedState`) is dequantized into
float32 first and requantized from the new values (:func:`quantize`, one
scale per block: the block's new absmax), exactly as the kernels do.  Arithmetic is in the buffers' dtype, with the
operations in the order the kernels use (``(1−β)·g·g`` is ``((1−β)·g)·g``, as
torch computes it: it stays finite where ``g·g`` would overflow); per-step scalars are computed once in
double (Python floats) and then cast to the dtype.  No input checking: that is
the fused functions' job.

In every rule ``g`` is the gradient as the rule sees it::

    g = grad * grad_scale               (only when grad_scale != 1: clipping folded in)
    g = -g if maximize else g
    g = g + weight_decay * param        (L2 decay; AdamW decays differently)
"""

import math

import numpy as np

from fastopt.rules import PASS_FUNCTIONS, STEP_FUNCTIONS

# dequantize is the twin of a method (QuantizedState.dequantize), so it stays out of __all__,
# which lists the twins of fastopt's functions
__all__ = list(STEP_FUNCTIONS) + list(PASS_FUNCTIONS) + ["adafactor_step", "quantize"]


def _tensors(*buffers):
    """Yield one tuple of arrays per tensor; None buffers yield None."""
    if isinstance(buffers[0], (list, tuple)):
        n = len(buffers[0])
        columns = [b if b is not None else [None] * n for b in buffers]
        yield from zip(*columns)
    else:
        yield buffers


def _effective_grad(param, grad, maximize, weight_decay, grad_scale):
    g = grad * param.dtype.type(grad_scale) if grad_scale != 1 else grad
    g = -g if maximize else g
    if weight_decay != 0:
        g = g + param.dtype.type(weight_decay) * param
    return g


def sgd_step(param, grad, *, lr, weight_decay=0.0, maximize=False, grad_scale=1.0, num_threads=None):
    """Gradient descent: θ ← θ − lr·g.

    Batch, stochastic and mini-batch gradient descent differ only in the
    gradient passed: of the whole data set, of one example, of a mini-batch.
    """
    for p, gr in _tensors(param, grad):
        T = p.dtype.type
        g = _effective_grad(p, gr, maximize, weight_decay, grad_scale)
        p[...] = p - T(lr) * g


def momentum_step(param, grad, velocity, *, lr, beta=0.9, weight_decay=0.0, maximize=False,
                  grad_scale=1.0, num_threads=None):
    """Momentum as the lecture writes it, an exponential moving average of gradients::

        v ← β·v + (1−β)·g
        θ ← θ − lr·v
    """
    for p, gr, v in _tensors(param, grad, velocity):
        T = p.dtype.type
        g = _effective_grad(p, gr, maximize, weight_decay, grad_scale)
        v[...] = T(beta) * v + T(1.0 - beta) * g
        p[...] = p - T(lr) * v


def sgd_momentum_step(param, grad, momentum_buffer, *, step, lr, momentum, dampening=0.0,
                      nesterov=False, weight_decay=0.0, maximize=False, grad_scale=1.0, num_threads=None):
    """torch.optim.SGD with momentum μ and dampening τ::

        b ← g                          at step 1
        b ← μ·b + (1−τ)·g              after
        θ ← θ − lr·(g + μ·b)           nesterov
        θ ← θ − lr·b                   otherwise
    """
    for p, gr, b in _tensors(param, grad, momentum_buffer):
        T = p.dtype.type
        g = _effective_grad(p, gr, maximize, weight_decay, grad_scale)
        if step == 1:
            b[...] = g
        else:
            b[...] = T(momentum) * b + T(1.0 - dampening) * g
        d = g + T(momentum) * b if nesterov else b
        p[...] = p - T(lr) * d


def rmsprop_step(param, grad, square_avg, *, grad_avg=None, momentum_buffer=None, lr=1e-2,
                 alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
                 maximize=False, grad_scale=1.0, num_threads=None):
    """RMSprop, torch.optim.RMSprop's form: the second moment rescales each direction::

        s ← α·s + ((1−α)·g)·g
        a ← α·a + (1−α)·g;  avg = √(s − a²) + eps      centered
        avg = √s + eps                                  otherwise
        b ← μ·b + g/avg;  θ ← θ − lr·b                  momentum μ > 0
        θ ← θ − lr·(g/avg)                              otherwise
    """
    for p, gr, s, a, b in _tensors(param, grad, square_avg, grad_avg, momentum_buffer):
        T = p.dtype.type
        g = _effective_grad(p, gr, maximize, weight_decay, grad_scale)
        s[...] = T(alpha) * s + T(1.0 - alpha) * g * g
        if centered:
            a[...] = T(alpha) * a + T(1.0 - alpha) * g
            with np.errstate(invalid="ignore"):  # s < a² by rounding: NaN, as in torch
                avg = np.sqrt(s - a * a) + T(eps)
        else:
            avg = np.sqrt(s) + T(eps)
        if momentum > 0:
            b[...] = T(momentum) * b + g / avg
            p[...] = p - T(lr) * b
        else:
            p[...] = p - T(lr) * (g / avg)


def adagrad_step(param, grad, state_sum, *, step, lr=1e-2, lr_decay=0.0, eps=1e-10,
                 weight_decay=0.0, maximize=False, grad_scale=1.0, num_threads=None):
    """Adagrad, torch.optim.Adagrad's form, at step t = 1, 2, …::

        lr_t = lr / (1 + (t−1)·lr_decay)
        s ← s + g²
        θ ← θ − lr_t·(g / (√s + eps))
    """
    clr = lr / (1.0 + (step - 1) * lr_decay)
    for p, gr, s in _tensors(param, grad, state_sum):
        T = p.dtype.type
        g = _effective_grad(p, gr, maximize, weight_decay, grad_scale)
        s[...] = s + g * g
        p[...] = p - T(clr) * (g / (np.sqrt(s) + T(eps)))


def _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps,
          l2_decay, decoupled_decay, amsgrad, maximize, grad_scale):
    step_size = lr / (1.0 - beta1**step)
    bias2_rsqrt = 1.0 / math.sqrt(1.0 - beta2**step)
    for p, gr, m, v, vmax in _tensors(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq):
        T = p.dtype.type
        g = _effective_grad(p, gr, maximize, l2_decay, grad_scale)
        m[...] = T(beta1) * m + T(1.0 - beta1) * g
        v[...] = T(beta2) * v + T(1.0 - beta2) * g * g
        if amsgrad:
            np.maximum(vmax, v, out=vmax)
        shrunk = p * T(1.0 - lr * decoupled_decay) if decoupled_decay != 0 else p
        denom = np.sqrt(vmax if amsgrad else v) * T(bias2_rsqrt) + T(eps)
        p[...] = shrunk - T(step_size) * (m / denom)


def adam_step(param, grad, exp_avg, exp_avg_sq, *, max_exp_avg_sq=None, step, lr=1e-3,
              beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False,
              maximize=False, grad_scale=1.0, num_threads=None):
    """Adam (Kingma & Ba 2014, Algorithm 1) with L2 decay, torch.optim.Adam's form, at step t::

        m ← β1·m + (1−β1)·g                      first moment (momentum)
        v ← β2·v + ((1−β2)·g)·g                  second moment
        v_max ← max(v_max, v)                    amsgrad only
        θ ← θ − lr/(1−β1^t) · m / (√v · 1/√(1−β2^t) + eps)     (v_max for amsgrad)

    The factors 1/(1−β^t) are the bias corrections of the zero-initialized moments.
    """
    _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps,
          weight_decay, 0.0, amsgrad, maximize, grad_scale)


def adamw_step(param, grad, exp_avg, exp_avg_sq, *, max_exp_avg_sq=None, step, lr=1e-3,
               beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2, amsgrad=False,
               maximize=False, grad_scale=1.0, num_threads=None):
    """AdamW (Loshchilov & Hutter), torch.optim.AdamW's form: decoupled weight decay::

        θ ← θ·(1 − lr·weight_decay)
        then the Adam update of :func:`adam_step` with no L2 term in g
    """
    _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps,
          0.0, weight_decay, amsgrad, maximize, grad_scale)


def lion_step(param, grad, exp_avg, *, lr=1e-4, beta1=0.9, beta2=0.99, weight_decay=1e-3, maximize=False,
              grad_scale=1.0, num_threads=None):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), optax.lion's form::

        u ← sign(β1·m + (1−β1)·g)             the update is a sign: every coordinate moves by lr
        θ ← θ − lr·(u + weight_decay·θ)        decoupled weight decay
        m ← β2·m + (1−β2)·g                    the momentum, updated after the step

    sign(0) = 0 and sign(NaN) = NaN, as numpy.sign.
    """
    for p, gr, m in _tensors(param, grad, exp_avg):
        T = p.dtype.type
        g = _effective_grad(p, gr, maximize, 0.0, grad_scale)
        u = np.sign(T(beta1) * m + T(1.0 - beta1) * g)
        p[...] = p - T(lr) * (u + T(weight_decay) * p if weight_decay != 0 else u)
        m[...] = T(beta2) * m + T(1.0 - beta2) * g


def _lerp(start, end, weight):
    """torch.lerp(start, end, weight) for a scalar weight, in torch's order::

        start + w·(end − start)           |w| < 0.5
        end − (end − start)·(1 − w)       otherwise

    with w and 1 − w rounded to the dtype.  torch updates first moments so:
    m ← lerp(m, g, 1−β1) for NAdam, RAdam and Adamax.
    """
    T = start.dtype.type
    w = T(weight)
    if abs(w) < 0.5:
        return start + w * (end - start)
    return end - (end - start) * (T(1.0) - w)


# The norm pass's blocks and lanes (src_c/norms.h): FO_NORM_BLOCK, FO_NORM_LANES.
_NORM_BLOCK = 8192
_NORM_LANES = 16


def _by_halves(values):
    """values summed as the kernels combine lanes and blocks: the two halves' sums, recursively."""
    if len(values) == 0:
        return 0.0
    if len(values) == 1:
        return values[0]
    half = len(values) // 2
    return _by_halves(values[:half]) + _by_halves(values[half:])


def _sum_of_squares(x):
    """Σ x² in float64 in the kernels' order: per block of 8192 elements in memory order, element i
    of a block into lane i % 16 in order, lanes and then blocks combined by halves."""
    flat = np.ravel(x, order="K").astype(np.float64)
    partials = []
    for start in range(0, flat.size, _NORM_BLOCK):
        chunk = flat[start:start + _NORM_BLOCK]
        chunk = chunk * chunk
        full = chunk.size - chunk.size % _NORM_LANES
        lanes = (np.cumsum(chunk[:full].reshape(-1, _NORM_LANES), axis=0)[-1] if full
                 else np.zeros(_NORM_LANES))
        lanes[:chunk.size - full] += chunk[full:]
        partials.append(_by_halves(list(lanes)))
    return _by_halves(partials)


def lamb_step(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-6,
              weight_decay=0.0, max_trust_ratio=math.inf, maximize=False, grad_scale=1.0, num_threads=None):
    """LAMB (You et al. 2019, "Large Batch Optimization for Deep Learning"), optax.lamb's form, per tensor::

        m ← β1·m + (1−β1)·g
        v ← β2·v + ((1−β2)·g)·g
        u = (m · 1/(1−β1^t)) / (√v · 1/√(1−β2^t) + eps) + weight_decay·θ     Adam's direction, decayed
        r = ‖θ‖ / ‖u‖   (1 where either norm is 0; at most max_trust_ratio)   the trust ratio
        θ ← θ − (lr·r)·u

    Each tensor moves by lr·‖θ‖ in the norm of its update, whatever the scale of
    its gradient: what lets large batches take large learning rates.  The norms
    are sums in float64 in the order of the gradient-norm pass (blocks of 8192
    elements, 16 lanes, combined by halves), r and lr·r in double.  A step is
    two passes: the first updates m and v and sums θ² and u²; the second takes
    u again from m and v as stored (rounded, or quantized, where they are 16-
    or 8-bit) and moves θ.
    """
    T = param.dtype.type
    c1 = T(1.0 / (1.0 - beta1**step))
    rsqrt2 = T(1.0 / math.sqrt(1.0 - beta2**step))

    def direction(m, v, p):
        u = (m * c1) / (np.sqrt(v) * rsqrt2 + T(eps))
        return u + T(weight_decay) * p if weight_decay != 0 else u

    g = _effective_grad(param, grad, maximize, 0.0, grad_scale)
    exp_avg[...] = T(beta1) * exp_avg + T(1.0 - beta1) * g
    exp_avg_sq[...] = T(beta2) * exp_avg_sq + T(1.0 - beta2) * g * g
    param_norm = math.sqrt(_sum_of_squares(param))
    update_norm = math.sqrt(_sum_of_squares(direction(exp_avg, exp_avg_sq, param)))
    ratio = 1.0 if param_norm == 0.0 or update_norm == 0.0 else param_norm / update_norm
    if ratio > max_trust_ratio:
        ratio = max_trust_ratio
    step_size = T(lr * ratio)

    def second_pass(param, exp_avg, exp_avg_sq, **_):
        param[...] = param - step_size * direction(exp_avg, exp_avg_sq, param)
    return second_pass


def _halves(partials):
    """An array of partial sums (last axis) combined by halves, as _by_halves, for many at once."""
    k = partials.shape[-1]
    if k == 0:
        return np.zeros(partials.shape[:-1])
    if k == 1:
        return partials[..., 0]
    return _halves(partials[..., :k // 2]) + _halves(partials[..., k // 2:])


def _segment_sums(squares):
    """Σ per segment of each row (last axis) of float64 squares: segments of 8192 elements, element i
    of a segment into lane i % 16 in order, lanes combined by halves.  Shape (..., segments)."""
    rows = squares.reshape(-1, squares.shape[-1])
    sums = []
    for start in range(0, max(rows.shape[1], 1), _NORM_BLOCK):
        chunk = rows[:, start:start + _NORM_BLOCK]
        full = chunk.shape[1] - chunk.shape[1] % _NORM_LANES
        lanes = (np.cumsum(chunk[:, :full].reshape(len(rows), -1, _NORM_LANES), axis=1)[:, -1] if full
                 else np.zeros((len(rows), _NORM_LANES)))
        lanes[:, :chunk.shape[1] - full] += chunk[:, full:]
        sums.append(_halves(lanes))
    return np.stack(sums, axis=-1).reshape(squares.shape[:-1] + (len(sums),))


# Adafactor's blocks of rows (src_c/factored.h): at least 16 rows, at most 64 blocks per matrix.
_BLOCK_ROWS, _BLOCKS = 16, 64


def _column_sums(squares):
    """Σ over the rows (axis 1) of (B, m, n) squares: per block of rows in order, blocks by halves."""
    m = squares.shape[1]
    block = max(_BLOCK_ROWS, -(-m // _BLOCKS))
    parts = np.stack([np.cumsum(squares[:, i:i + block], axis=1)[:, -1] for i in range(0, m, block)], axis=-1)
    return _halves(parts)


def _row_sum_of_squares(x):
    """Σ x² of a whole tensor in float64: per segment of its rows (last axis), all combined by halves."""
    squares = np.square(x.astype(np.float64)).reshape(-1, x.shape[-1] if x.ndim else 1)
    return _halves(np.ravel(_segment_sums(squares)))


def adafactor_scalars(step, lr, beta2_decay, weight_decay):
    """The scalars of Adafactor's step t, in double: (weight, rho, decay) = (t^beta2_decay (1 − β2_t, the
    factors' lerp weight), min(lr, 1/√t), 1 − lr·weight_decay)."""
    return step**beta2_decay, min(lr, 1 / step**0.5), 1 - lr * weight_decay


def adafactor_step(param, grad, row_var, col_var, variance, *, param_copy=None, step, lr=1e-2, beta2_decay=-0.8,
                   eps1=None, eps2=1e-3, d=1.0, weight_decay=0.0, maximize=False, stochastic_rounding=False, seed=0,
                   grad_scale=1.0, num_threads=None):
    """Adafactor (Shazeer & Stern 2018, "Adaptive Learning Rates with Sublinear Memory Cost"),
    torch.optim.Adafactor's form, at step t::

        w = t^beta2_decay;  ρ = min(lr, 1/√t);  α = max(eps2, RMS(θ))·ρ      (θ before the decay)
        matrix (ndim ≥ 2: the last two axes, each leading index its own matrix):
            R ← lerp(R, mean_c g², w);  C ← lerp(C, mean_r g², w)      (row_var: (..., m, 1); col_var: (..., 1, n))
            v = R·C / max(mean_r R, eps1)
            u = g·min(1/√(R / max(mean_r R, eps1)) · 1/√C, 1/eps1)   = g / √max(v, eps1²)
        vector (ndim < 2):
            v ← lerp(v, g·g, w)                                        (variance: θ's shape)
            u = g·(1/√max(v, eps1²))
        θ ← θ·(1 − lr·weight_decay) − (α / max(1, RMS(u)/d))·u          (eps1=None: grad's dtype's eps)

    The memory of the second moment is m + n per matrix instead of m·n.  The
    sums are in float64: per segment of at most 8192 elements of a row, in 16
    lanes combined by halves; a row's and a tensor's segments by halves; a
    column's down each block of max(16, ⌈m/64⌉) rows in order, its blocks by
    halves.  α, RMS(u) and the step size in
    double; the rest in the dtype.  A matrix's u is torch's to rounding, in a
    form that costs two products per element (the square roots are taken once
    per row and per column).  row_var and col_var are None for a vector,
    variance None for a matrix.

    Buffers are all float64, or float32, bfloat16 and float16 in any mix, with
    float32 arithmetic: each 16-bit buffer is read exactly, and what is written
    is rounded to nearest even (the param stochastically with
    ``stochastic_rounding=True``: :func:`round_stochastically`, keyed by seed and
    step); the factors and the variance are used as stored.  ``param_copy``
    receives the new float32 param rounded to its 16-bit dtype.
    """
    weight, rho, decay = adafactor_scalars(step, lr, beta2_decay, weight_decay)
    key = _stochastic_key(seed, step) if stochastic_rounding else None
    for p, gr, rv, cv, v, copy in _tensors(param, grad, row_var, col_var, variance, param_copy):
        with np.errstate(all="ignore"):   # eps1 = 0 or zero factors: inf and NaN, as torch gives them
            _adafactor_tensor(p, gr, rv, cv, v, copy, weight, rho, decay, eps1, eps2, d, maximize, grad_scale,
                              key)


def _kept(values, b):
    """values stored into buffer b (rounded to its dtype: _store), and read back as the arithmetic's dtype."""
    _store(values, b)
    return b.astype(values.dtype)


def _adafactor_tensor(p, gr, rv, cv, v, copy, weight, rho, decay, eps1, eps2, d, maximize, grad_scale, key):
    if p.size == 0:
        return
    T = np.float64 if p.dtype == np.float64 else np.float32
    e1 = T(_ml_dtypes.finfo(gr.dtype).eps if eps1 is None else eps1)
    w = T(weight)
    theta = p.astype(T)
    g = gr.astype(T)
    g = -(g * T(grad_scale)) if maximize else g * T(grad_scale)
    g2 = np.square(g.astype(np.float64))
    if p.ndim >= 2:
        rows = g2.reshape(-1, p.shape[-2], p.shape[-1])
        row_parts = _segment_sums(rows)                       # (B, m, segments)
        row_mean = (_halves(row_parts) / p.shape[-1]).astype(T)
        col_mean = (_column_sums(rows) / p.shape[-2]).astype(T)
        rv_flat, cv_flat = rv.reshape(row_mean.shape), cv.reshape(col_mean.shape)
        rv_kept = _kept(_lerp(rv_flat.astype(T), row_mean, w), rv_flat)
        cv_kept = _kept(_lerp(cv_flat.astype(T), col_mean, w), cv_flat)
        mean = (np.cumsum(rv_kept.astype(np.float64), axis=1)[:, -1] / p.shape[-2]).astype(T)
        mean = np.maximum(mean, e1)
        row_scale = T(1) / np.sqrt(rv_kept / mean[:, None])
        col_scale = T(1) / np.sqrt(cv_kept)
        scale = row_scale[:, :, None] * col_scale[:, None, :]
        cap = T(1) / np.sqrt(e1 * e1)
        u = np.where(scale > cap, cap, scale).reshape(p.shape) * g
    else:
        v_kept = _kept(_lerp(v.astype(T), g * g, w), v)
        u = (T(1) / np.sqrt(np.maximum(v_kept, e1 * e1))) * g
    root_n = math.sqrt(p.size)
    alpha = max(eps2, math.sqrt(_row_sum_of_squares(theta)) / root_n) * rho
    clip = max(1.0, math.sqrt(_row_sum_of_squares(u)) / (root_n * d))
    theta = theta * T(decay) + T(-alpha / clip) * u
    if key is not None and p.dtype in _SIXTEEN_BIT:
        p[...] = round_stochastically(theta, p.dtype, key)
    else:
        _store(theta, p)
    if copy is not None:
        _store(theta, copy)


def radam_step(param, grad, exp_avg, exp_avg_sq, *, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
               weight_decay=0.0, decoupled_weight_decay=False, maximize=False, grad_scale=1.0,
               num_threads=None):
    """RAdam (Liu et al. 2020, "On the Variance of the Adaptive Learning Rate and Beyond"),
    torch.optim.RAdam's form, at step t::

        m ← lerp(m, g, 1−β1);  v ← β2·v + ((1−β2)·g)·g
        ρ∞ = 2/(1−β2) − 1;  ρ_t = ρ∞ − 2t·β2^t/(1−β2^t)      the length of the approximated SMA
        ρ_t > 5:  r_t = √((ρ_t−4)(ρ_t−2)ρ∞ / ((ρ∞−4)(ρ∞−2)ρ_t))   the variance rectification
                  θ ← θ − (lr·√(1−β2^t)·r_t/(1−β1^t))·m / (√v + eps)
        ρ_t ≤ 5:  θ ← θ − (lr/(1−β1^t))·m                       (early steps: momentum SGD)

    decoupled_weight_decay=True: θ ← θ·(1 − lr·weight_decay) first and no L2 term in g
    (AdamW's decay).  torch divides m by 1−β1^t and takes 1/(√v + eps) apart; here the
    scalars are folded into one, so a step costs one division per element: the same to rounding.
    """
    beta2_t = beta2**step
    bias1 = 1.0 - beta1**step
    bias2 = 1.0 - beta2_t
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * step * beta2_t / bias2
    rectified = rho_t > 5.0
    if rectified:
        rect = math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
        step_size = lr * math.sqrt(bias2) * rect / bias1
    else:
        step_size = lr / bias1
    l2_decay = 0.0 if decoupled_weight_decay else weight_decay
    for p, gr, m, v in _tensors(param, grad, exp_avg, exp_avg_sq):
        T = p.dtype.type
        g = _effective_grad(p, gr, maximize, l2_decay, grad_scale)
        shrunk = p * T(1.0 - lr * weight_decay) if decoupled_weight_decay and weight_decay != 0 else p
        m[...] = _lerp(m, g, 1.0 - beta1)
        v[...] = T(beta2) * v + T(1.0 - beta2) * g * g
        if rectified:
            p[...] = shrunk - T(step_size) * m / (np.sqrt(v) + T(eps))
        else:
            p[...] = shrunk - T(step_size) * m


def adamax_step(param, grad, exp_avg, exp_inf, *, step, lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                weight_decay=0.0, maximize=False, grad_scale=1.0, num_threads=None):
    """Adamax (Kingma & Ba 2014, section 7.1: Adam with the infinity norm), torch.optim.Adamax's form::

        m ← lerp(m, g, 1−β1)
        u ← max(β2·u, |g| + eps)             an exponentially weighted infinity norm (NaN propagates)
        θ ← θ + ((−lr/(1−β1^t))·m)/u
    """
    step_size = lr / (1.0 - beta1**step)
    for p, gr, m, u in _tensors(param, grad, exp_avg, exp_inf):
        T = p.dtype.type
        g = _effective_grad(p, gr, maximize, weight_decay, grad_scale)
        m[...] = _lerp(m, g, 1.0 - beta1)
        np.maximum(T(beta2) * u, np.abs(g) + T(eps), out=u)
        p[...] = p + T(-step_size) * m / u


def nadam_momentum(step, beta1, momentum_decay):
    """NAdam's momentum coefficient of step t, μ_t = β1·(1 − ½·0.96^(t·ψ)) (ψ = momentum_decay).

    The μ_t warm up from β1/2 towards β1.  nadam_step takes their running product
    mu_product = μ_1·μ_2·…·μ_t; ``mu_product *= nadam_momentum(t, β1, ψ)`` before step t keeps it,
    as :class:`fastopt.optim.NAdam` does.
    """
    return beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))


def nadam_step(param, grad, exp_avg, exp_avg_sq, *, step, mu_product, lr=2e-3, beta1=0.9, beta2=0.999,
               eps=1e-8, weight_decay=0.0, momentum_decay=4e-3, decoupled_weight_decay=False,
               maximize=False, grad_scale=1.0, num_threads=None):
    """NAdam (Dozat 2016, "Incorporating Nesterov Momentum into Adam"), torch.optim.NAdam's form, at step t::

        μ_t = β1·(1 − ½·0.96^(t·ψ)),  μ_{t+1} likewise         ψ = momentum_decay
        mu_product = μ_1·μ_2·…·μ_t                              given: torch's state["mu_product"]
        m ← lerp(m, g, 1−β1);  v ← β2·v + ((1−β2)·g)·g
        d = √v·1/√(1−β2^t) + eps
        θ ← θ + ((−lr·(1−μ_t)/(1 − mu_product))·g + (−lr·μ_{t+1}/(1 − mu_product·μ_{t+1}))·m)/d

    The first term is the gradient's share of the Nesterov look-ahead, the second
    the momentum's, each bias-corrected by its product of μ.  decoupled_weight_decay=True:
    θ ← θ·(1 − lr·weight_decay) first and no L2 term in g (NAdamW).  torch divides v by
    1−β2^t and each term by d apart (three divisions per element); here d is Adam's and the
    terms share one division: the same to rounding, at memory speed.
    """
    mu = nadam_momentum(step, beta1, momentum_decay)
    mu_next = nadam_momentum(step + 1, beta1, momentum_decay)
    bias2_rsqrt = 1.0 / math.sqrt(1.0 - beta2**step)
    grad_coef = -lr * (1.0 - mu) / (1.0 - mu_product)
    exp_avg_coef = -lr * mu_next / (1.0 - mu_product * mu_next)
    l2_decay = 0.0 if decoupled_weight_decay else weight_decay
    for p, gr, m, v in _tensors(param, grad, exp_avg, exp_avg_sq):
        T = p.dtype.type
        g = _effective_grad(p, gr, maximize, l2_decay, grad_scale)
        shrunk = p * T(1.0 - lr * weight_decay) if decoupled_weight_decay and weight_decay != 0 else p
        m[...] = _lerp(m, g, 1.0 - beta1)
        v[...] = T(beta2) * v + T(1.0 - beta2) * g * g
        denom = np.sqrt(v) * T(bias2_rsqrt) + T(eps)
        p[...] = shrunk + (T(grad_coef) * g + T(exp_avg_coef) * m) / denom


def schedule_free_adamw_step(param, grad, z, exp_avg_sq, *, step, average_weight, lr=2.5e-3, beta1=0.9,
                             beta2=0.999, eps=1e-8, weight_decay=0.0, maximize=False, grad_scale=1.0,
                             num_threads=None):
    """Schedule-Free AdamW (Defazio et al. 2024, "The Road Less Scheduled"), the step of
    schedulefree.AdamWScheduleFree (adamw_schedulefree.py), at step t.

    The params hold y, where gradients are taken.  z is the base sequence (an
    Adam-normalized SGD), x the average of the z's, c-weighted, which is what is
    evaluated, and y = (1−β1)·z + β1·x is never far from it; x is not stored::

        z ← θ                                         at step 1 (schedulefree copies the params then)
        v ← β2·v + ((1−β2)·g)·g
        n = g/(√v·1/√(1−β2^t) + eps) + weight_decay·y  the normalized gradient; decay taken at y
        y ← lerp(y, z, c) + lr·(β1·(1−c) − 1)·n        x ← (1−c)·x + c·z_new and z_new folded into y
        z ← z − lr·n

    c = average_weight, the new z's weight in x: weight_t/Σ weight, with weight_t =
    t^r·lr_max^weight_lr_power (lr_max the largest lr so far), and 0 while that sum
    is 0.  lr is the step's rate, warmup included (lr·t/warmup_steps while
    t ≤ warmup_steps): :class:`fastopt.optim.ScheduleFreeAdamW` keeps these numbers.
    schedulefree divides v by 1−β2^t; here the denominator is Adam's, for one division per
    element: the same to rounding.
    """
    bias2_rsqrt = 1.0 / math.sqrt(1.0 - beta2**step)
    y_grad_coef = lr * (beta1 * (1.0 - average_weight) - 1.0)
    for p, gr, zz, v in _tensors(param, grad, z, exp_avg_sq):
        T = p.dtype.type
        g = _effective_grad(p, gr, maximize, 0.0, grad_scale)
        z_old = p.copy() if step == 1 else zz
        v[...] = T(beta2) * v + T(1.0 - beta2) * g * g
        normalized = g / (np.sqrt(v) * T(bias2_rsqrt) + T(eps))
        if weight_decay != 0:
            normalized = normalized + T(weight_decay) * p
        y = _lerp(p, z_old, average_weight) + T(y_grad_coef) * normalized
        zz[...] = z_old - T(lr) * normalized
        p[...] = y


def schedule_free_eval(param, z, *, beta1=0.9, num_threads=None):
    """Schedule-Free's switch to evaluation, schedulefree.AdamWScheduleFree.eval(): the params from y to x::

        x = lerp(y, z, 1 − 1/β1)             y = (1−β1)·z + β1·x, solved for x (β1 > 0)
    """
    for p, zz in _tensors(param, z):
        p[...] = _lerp(p, zz, 1.0 - 1.0 / beta1)


def schedule_free_train(param, z, *, beta1=0.9, num_threads=None):
    """Schedule-Free's switch to training, schedulefree.AdamWScheduleFree.train(): the params from x to y::

        y = lerp(x, z, 1 − β1)               y = (1−β1)·z + β1·x
    """
    for p, zz in _tensors(param, z):
        p[...] = _lerp(p, zz, 1.0 - beta1)



# --------------------------------------------------------------------------
# 16-bit buffers: every rule above, in float32, with each buffer's own dtype

import functools as _functools  # noqa: E402
import inspect as _inspect  # noqa: E402

import ml_dtypes as _ml_dtypes  # noqa: E402

from fastopt import quantized as _quantized  # noqa: E402
from fastopt.rules import PASSES as _PASSES  # noqa: E402
from fastopt.rules import RULES as _RULES  # noqa: E402

_SIXTEEN_BIT = (np.dtype(_ml_dtypes.bfloat16), np.dtype(np.float16))


def _mix32(x):
    """lowbias32 (C. Wellons) on uint32 arrays: the mix of src_c/convert.h and fo_stochastic_key."""
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def _stochastic_key(seed, step):
    """The key of a call's random bits: its seed and its step (0 for rules that count none)."""
    def word(value):
        return np.array([value & 0xFFFFFFFF], np.uint32)
    key = _mix32(word(seed) + np.uint32(0x9E3779B9))
    key = _mix32(key ^ word(seed >> 32))
    key = _mix32(key ^ word(step))
    return _mix32(key ^ word(step >> 32))[0]


def _random_bits(key, count):
    """32 random bits for each of elements 0 .. count-1 of a tensor (its index in memory order)."""
    index = np.arange(count, dtype=np.uint64)
    x = (index & np.uint64(0xFFFFFFFF)).astype(np.uint32) ^ (
        (index >> np.uint64(32)).astype(np.uint32) * np.uint32(0x85EBCA6B))
    return _mix32(x * np.uint32(0x9E3779B1) + key)


def round_stochastically(x, dtype, key):
    """float32 x (contiguous) rounded to bfloat16 or float16, up with probability equal to its
    distance from the value below, in units of the gap, with the random bits of `key`.

    bfloat16: 16 random bits added below the kept ones, then dropped.  float16: the
    same on the float16 grid of each value (ulp 2^(e−10), 2^−24 for subnormals);
    below 2^−24 it rounds up with probability |x|/2^−24, to 24 random bits.  NaN
    and Inf round as to nearest.
    """
    flat = np.ravel(x, order="K")
    u = flat.view(np.uint32)
    r = _random_bits(key, flat.size)
    a = u & np.uint32(0x7FFFFFFF)
    nearest = flat.astype(dtype).view(np.uint16)
    if np.dtype(dtype) == np.dtype(_ml_dtypes.bfloat16):
        up = ((u + (r >> np.uint32(16))) >> np.uint32(16)).astype(np.uint16)
        out = np.where(a >= np.uint32(0x7F800000), nearest, up)
    else:
        sign = ((u >> np.uint32(16)) & np.uint32(0x8000)).astype(np.uint16)
        e = a >> np.uint32(23)
        shift = np.where(e >= 113, np.uint32(13), np.uint32(126) - np.maximum(e, np.uint32(103)))
        mask = (np.uint32(1) << shift) - np.uint32(1)
        on_grid = ((a + (r & mask)) & ~mask).view(np.float32)
        gridded = on_grid.astype(np.float16).view(np.uint16)
        p = a.view(np.float32) * np.float32(16777216.0)
        tiny = ((r >> np.uint32(8)).astype(np.float32) * np.float32(5.9604644775390625e-8) < p).astype(np.uint16)
        magnitude = np.where(a >= np.uint32(0x7F800000), nearest & np.uint16(0x7FFF),
                             np.where(a >= np.uint32(0x47800000), np.uint16(0x7C00),
                                      np.where(e >= 103, gridded, tiny)))
        out = sign | magnitude
    return out.view(dtype).reshape(x.shape, order="A" if x.flags.f_contiguous and not x.flags.c_contiguous
                                   else "C")


def quantize(x, signed=True, block_size=256):
    """The NumPy twin of :func:`fastopt.quantize`: x as 8-bit block-quantized state.

    Per block of ``block_size`` elements of x flattened in C order: scale = the
    block's absmax (as float32; 0 for an all-zero block, whose codes are 0),
    codes = encode(x · (1/scale)) (x / scale where scale is subnormal), rounded to nearest even into the signed map
    (sign + e3m4, bias 7) or the unsigned one (e5m3, bias 31) of
    :mod:`fastopt.quantized`.
    """
    return _quantized.quantize_numpy(x, signed, _quantized.check_block_size(block_size))


def dequantize(state):
    """The NumPy twin of fastopt's dequantization: decode(code) · scale, in float32."""
    return _quantized.dequantize_numpy(state)


def _loaded(b):
    """A buffer's values in float32: a 16-bit one widened, 8-bit state dequantized."""
    return b.dequantize() if isinstance(b, _quantized.QuantizedState) else b.astype(np.float32)


def _store(values, b):
    """float32 values into buffer b: rounded to nearest even into its dtype, or quantized."""
    if isinstance(b, _quantized.QuantizedState):
        _quantized.quantize_into(values, b)
    else:
        b[...] = values.astype(b.dtype)


def _in_float32(rule, arithmetic):
    """The public twin of a rule: its arithmetic, on float32 copies of each tensor's buffers
    where any of them (or a param_copy) is 16-bit, each result rounded back into its buffer."""
    signature = _inspect.signature(arithmetic)
    parameters = list(signature.parameters.values())
    names = rule.buffer_names
    after = max(i for i, p in enumerate(parameters) if p.name in names) + 1
    parameters.insert(after, _inspect.Parameter("param_copy", _inspect.Parameter.KEYWORD_ONLY, default=None))
    rounds = any(p.name == "grad_scale" for p in parameters)  # steps; passes round to nearest
    if rounds:
        at = next(i for i, p in enumerate(parameters) if p.name == "grad_scale")
        parameters[at:at] = [_inspect.Parameter("stochastic_rounding", _inspect.Parameter.KEYWORD_ONLY,
                                                default=False),
                             _inspect.Parameter("seed", _inspect.Parameter.KEYWORD_ONLY, default=0)]
    read_only = names[1]  # grad, or the buffer a pass reads
    public = signature.replace(parameters=parameters)

    @_functools.wraps(arithmetic)
    def step(*args, **kwargs):
        arguments = public.bind(*args, **kwargs)
        arguments.apply_defaults()
        given = dict(arguments.arguments)
        copy = given.pop("param_copy")
        stochastic, seed = (given.pop("stochastic_rounding"), given.pop("seed")) if rounds else (False, 0)
        listed = isinstance(given["param"], (list, tuple))

        count = len(given["param"]) if listed else 1

        def tensors(value):
            return [None] * count if value is None else list(value) if listed else [value]

        columns = {name: tensors(given[name]) for name in names}
        copies = tensors(copy)
        key = _stochastic_key(seed, given.get("step", 0) if rule.takes_step else 0)
        for i, copy_i in enumerate(copies):
            one = {name: columns[name][i] for name in names}
            quantized = any(isinstance(b, _quantized.QuantizedState) for b in one.values())
            if copy_i is None and not quantized and not any(
                    b is not None and b.dtype in _SIXTEEN_BIT for b in one.values()):
                second_pass = arithmetic(**dict(given, **one))
                if second_pass is not None:
                    second_pass(**one)
                continue
            work = {name: None if b is None else _loaded(b) for name, b in one.items()}
            second_pass = arithmetic(**dict(given, **work))
            stored = {read_only}
            if second_pass is not None:
                # LAMB's: it takes the state as the first pass stored it
                for name, b in one.items():
                    if b is not None and name not in ("param", read_only):
                        _store(work[name], b)
                        work[name] = _loaded(b)
                        stored.add(name)
                second_pass(**work)
            for name, b in one.items():
                if b is None or name in stored:
                    continue
                if name == "param" and stochastic:
                    b[...] = round_stochastically(work[name], b.dtype, key)
                else:
                    _store(work[name], b)
            if copy_i is not None:
                copy_i[...] = work["param"].astype(copy_i.dtype)

    step.__signature__ = public
    return step


for _name in STEP_FUNCTIONS:
    globals()[_name] = _in_float32(_RULES[_name[:-len("_step")]], globals()[_name])
for _name in PASS_FUNCTIONS:
    globals()[_name] = _in_float32(_PASSES[_name], globals()[_name])
del _name
