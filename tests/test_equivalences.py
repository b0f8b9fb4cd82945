"""Where two formulations meet, they must agree bit for bit (optax's test_rms_match_adam, in this style).

Each case is arithmetic the docs promise: the lecture's EMA momentum is
torch's SGD momentum with dampening = momentum once past the first step;
AdamW without weight decay is Adam; amsgrad changes nothing while the
second moment only grows; Adam with beta1 = 0 and beta2 = 0 is sign-like
RMS normalisation, g / (|g| + eps) per element.
"""

import math

import numpy as np
import pytest

import fastopt
from fastopt import optim, reference
from fastopt import rules as registry

DTYPES = [np.float32, np.float64]
SHAPE = (70_003,)  # past the parallel threshold, so blocks and threads take part


def draws(dtype, count, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(SHAPE).astype(dtype) for _ in range(count)]


@pytest.mark.parametrize("module", [fastopt, reference], ids=["fused", "reference"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_ema_momentum_is_sgd_momentum_with_dampening_equal_to_momentum(module, dtype):
    param, velocity, *grads = draws(dtype, 6)
    p1, v1, p2, v2 = param.copy(), velocity.copy(), param.copy(), velocity.copy()
    for t, g in enumerate(grads, start=2):  # past step 1, where torch's buffer starts at g
        module.momentum_step(p1, g, v1, lr=0.05, beta=0.8, weight_decay=0.01)
        module.sgd_momentum_step(p2, g, v2, step=t, lr=0.05, momentum=0.8, dampening=0.8, weight_decay=0.01)
    assert np.array_equal(p1, p2) and np.array_equal(v1, v2)


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_adamw_without_weight_decay_is_adam(dtype, amsgrad):
    param, *grads = draws(dtype, 5, seed=1)
    runs = []
    for step_function in (fastopt.adam_step, fastopt.adamw_step):
        p = param.copy()
        m, v, vmax = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p) if amsgrad else None
        for t, g in enumerate(grads, start=1):
            step_function(p, g, m, v, max_exp_avg_sq=vmax, step=t, lr=1e-2, weight_decay=0.0, amsgrad=amsgrad)
        runs.append((p, m, v))
    for a, b in zip(*runs):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_amsgrad_changes_nothing_while_the_second_moment_grows(dtype):
    """Gradients of growing magnitude: v never falls, so max(vmax, v) = v every step."""
    param, direction = draws(dtype, 2, seed=2)
    p1, p2 = param.copy(), param.copy()
    m1, v1, m2, v2, vmax = (np.zeros_like(param) for _ in range(5))
    for t in range(1, 6):
        g = direction * dtype(2.0 ** t)
        fastopt.adam_step(p1, g, m1, v1, step=t, lr=1e-2)
        fastopt.adam_step(p2, g, m2, v2, max_exp_avg_sq=vmax, step=t, lr=1e-2, amsgrad=True)
    assert np.array_equal(p1, p2) and np.array_equal(vmax, v2)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_adam_without_averaging_steps_by_g_over_its_magnitude(dtype):
    """beta1 = beta2 = 0: m = g, v = g·g, no bias correction, so θ ← θ − lr·g/(|g| + eps) (|g| exactly sqrt(g·g))."""
    param, grad = draws(dtype, 2, seed=3)
    grad = np.round(grad * 64) / 64  # g·g exact, so sqrt(g·g) = |g|
    p, m, v = param.copy(), np.zeros_like(param), np.zeros_like(param)
    fastopt.adam_step(p, grad, m, v, step=1, lr=0.1, beta1=0.0, beta2=0.0, eps=1e-3)
    expected = param - dtype(0.1) * (grad / (np.abs(grad) + dtype(1e-3)))
    assert np.array_equal(p, expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_optim_momentum_is_optim_sgd_with_dampening_past_the_first_step(dtype):
    param, first, *grads = draws(dtype, 5, seed=4)
    ema = optim.Momentum([param.copy()], lr=0.05, beta=0.9)
    heavy = optim.SGD([param.copy()], lr=0.05, momentum=0.9, dampening=0.9)
    ema.step([first])
    heavy.step([first])
    # after step 1 the two buffers differ (torch's SGD starts at g): align them, then they agree
    heavy.state[0]["momentum_buffer"][0][...] = ema.state[0]["velocity"][0]
    heavy.params[0][...] = ema.params[0]
    for g in grads:
        ema.step([g])
        heavy.step([g])
    assert np.array_equal(ema.params[0], heavy.params[0])


@pytest.mark.parametrize("kind", sorted({rule.optim_class_name for rule in registry.RULES.values()}))
def test_reference_backend_gives_the_same_bits(kind):
    """optim's backend='reference' runs the NumPy twins on the same checked plan: same results
    (Schedule-Free's train() and eval() passes too)."""
    param, *grads = draws(np.float32, 4, seed=5)
    kwargs = dict(lr=1e-2, momentum=0.9) if kind in ("SGD", "RMSprop") else dict(lr=1e-2)
    fused = getattr(optim, kind)([param.copy()], **kwargs, max_grad_norm=100.0)
    twin = getattr(optim, kind)([param.copy()], **kwargs, max_grad_norm=100.0, backend="reference")
    modes = hasattr(fused, "train")
    for i, g in enumerate(grads):
        if modes:
            fused.train()
            twin.train()
        fused.step([g])
        twin.step([g])
        if modes and i % 2:
            fused.eval()
            twin.eval()
    assert np.array_equal(fused.params[0], twin.params[0])
    for name in fused.state_buffer_names(fused.param_groups[0]):
        assert np.array_equal(fused.state[0][name][0], twin.state[0][name][0])


@pytest.mark.parametrize("module", [fastopt, reference], ids=["fused", "reference"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_radam_before_rectification_with_beta1_zero_is_sgd(module, dtype):
    """ρ_t ≤ 5 (steps 1–5 at β2 = 0.999): θ ← θ − lr·m/(1−β1^t); with β1 = 0, m = g: SGD, bit for bit."""
    param, *grads = draws(dtype, 6, seed=6)
    p1, p2, m, v = param.copy(), param.copy(), np.zeros_like(param), np.zeros_like(param)
    for t, g in enumerate(grads[:5], start=1):
        module.radam_step(p1, g, m, v, step=t, lr=0.05, beta1=0.0, weight_decay=0.01)
        module.sgd_step(p2, g, lr=0.05, weight_decay=0.01)
    assert np.array_equal(p1, p2) and not np.array_equal(p1, param)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_rectified_radam_without_eps_is_adam_at_lr_times_r_t(dtype):
    """Past its warm-up, with eps = 0, RAdam's step is Adam's (same moments, same bias corrections)
    with the learning rate scaled by the rectification r_t: to rounding."""
    param, m0, v0, g = draws(dtype, 4, seed=7)
    v0 = np.abs(v0)
    beta2, t, lr = 0.999, 50, 0.01
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * t * beta2**t / (1 - beta2**t)
    r_t = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
    assert rho_t > 5 and 0.1 < r_t < 1
    radam = [param.copy(), m0.copy(), v0.copy()]
    adam = [param.copy(), m0.copy(), v0.copy()]
    # Adam's first moment is β1·m + (1−β1)·g, RAdam's torch's lerp: the same to rounding
    fastopt.radam_step(*radam[:1], g, *radam[1:], step=t, lr=lr, beta2=beta2, eps=0.0)
    fastopt.adam_step(*adam[:1], g, *adam[1:], step=t, lr=lr * r_t, beta2=beta2, eps=0.0)
    rtol = 4 * np.finfo(dtype).eps
    for a, b in zip(radam, adam):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)
    assert not np.allclose(radam[0], param, rtol=100 * rtol)  # the step moved param


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_adamax_is_adam_while_each_gradient_keeps_its_magnitude(dtype):
    """|g| the same every step (signs free): Adam's bias-corrected √v̂ is |g|, Adamax's u is |g| + eps
    from the first step on, and both divide the same bias-corrected momentum by |g| + eps."""
    param, magnitude = draws(dtype, 2, seed=8)
    magnitude = np.abs(magnitude) + dtype(0.5)
    signs = np.sign(np.random.default_rng(9).standard_normal((12,) + SHAPE)).astype(dtype)
    adamax, adam = optim.Adamax([param.copy()], lr=1e-2), optim.Adam([param.copy()], lr=1e-2)
    for s in signs:
        adamax.step([s * magnitude])
        adam.step([s * magnitude])
    rtol = 64 * np.finfo(dtype).eps
    np.testing.assert_allclose(adamax.params[0], adam.params[0], rtol=rtol, atol=rtol)
    np.testing.assert_allclose(adamax.state[0]["exp_inf"][0], magnitude + dtype(1e-8), rtol=0, atol=0)
    assert not np.allclose(adamax.params[0], param, rtol=100 * rtol)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_adamax_keeps_the_largest_recent_gradient(dtype):
    """u ← max(β2·u, |g| + eps): a spike sets u, which then decays by β2 a step while gradients are smaller."""
    param = np.zeros(4, dtype)
    m, u = np.zeros(4, dtype), np.zeros(4, dtype)
    fastopt.adamax_step(param, np.full(4, -8.0, dtype), m, u, step=1, beta2=0.5, eps=0.0)
    assert np.array_equal(u, np.full(4, 8.0, dtype))
    for t in range(2, 5):
        fastopt.adamax_step(param, np.full(4, 0.25, dtype), m, u, step=t, beta2=0.5, eps=0.0)
    assert np.array_equal(u, np.full(4, 1.0, dtype))   # 8·0.5³, still above |g| = 0.25


@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_nadam_without_momentum_is_adam_without_momentum(dtype, decoupled):
    """β1 = 0: every μ_t is 0, so is their product; NAdam's step is lr·g/(√(v/(1−β2^t)) + eps), Adam's
    (or AdamW's) lr·g/(√v/√(1−β2^t) + eps): the same to rounding."""
    param, *grads = draws(dtype, 8, seed=10)
    nadam = optim.NAdam([param.copy()], lr=1e-2, betas=(0.0, 0.99), weight_decay=0.05,
                        decoupled_weight_decay=decoupled)
    adam = (optim.AdamW if decoupled else optim.Adam)([param.copy()], lr=1e-2, betas=(0.0, 0.99), weight_decay=0.05)
    for g in grads:
        nadam.step([g])
        adam.step([g])
    assert nadam.state[0]["mu_product"] == 0.0
    rtol = 64 * np.finfo(dtype).eps
    np.testing.assert_allclose(nadam.params[0], adam.params[0], rtol=rtol, atol=rtol)
    assert not np.allclose(nadam.params[0], param, rtol=100 * rtol)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_schedule_free_with_equal_weights_evaluates_the_mean_of_the_z_sequence(dtype):
    """r = 0 and weight_lr_power = 0: every step weighs 1, c_t = 1/t, so after eval() the params
    hold x_t = (z_1 + … + z_t)/t, z_k the base sequence after step k; to rounding."""
    param, *grads = draws(dtype, 12, seed=11)
    opt = optim.ScheduleFreeAdamW([param.copy()], lr=0.05, r=0.0, weight_lr_power=0.0)
    opt.train()
    zs = []
    for g in grads:
        opt.step([g])
        zs.append(opt.state[0]["z"][0].astype(np.float64))
    assert opt.state[0]["weight_sum"] == len(grads)
    opt.eval()
    mean = np.mean(zs, axis=0)
    rtol = 4096 * np.finfo(dtype).eps
    np.testing.assert_allclose(opt.params[0], mean, rtol=rtol, atol=rtol)
    assert not np.allclose(mean, zs[-1], rtol=100 * rtol)   # the average is not the last iterate


@pytest.mark.parametrize("module", [fastopt, reference], ids=["fused", "reference"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_schedule_free_without_momentum_keeps_y_on_z_and_is_adamw_without_momentum(module, dtype):
    """β1 = 0: y = (1−β1)·z + β1·x is z, bit for bit, whatever the averaging weight; both then take
    AdamW's steps with β1 = 0 (decay at y is AdamW's decoupled decay), to rounding."""
    param, *grads = draws(dtype, 8, seed=12)
    y, z, v = param.copy(), np.zeros_like(param), np.zeros_like(param)
    w, m, v2 = param.copy(), np.zeros_like(param), np.zeros_like(param)
    for t, g in enumerate(grads, start=1):
        module.schedule_free_adamw_step(y, g, z, v, step=t, average_weight=1 / t, lr=1e-2, beta1=0.0,
                                        beta2=0.99, weight_decay=0.05)
        assert np.array_equal(y, z)
        module.adamw_step(w, g, m, v2, step=t, lr=1e-2, beta1=0.0, beta2=0.99, weight_decay=0.05)
    rtol = 64 * np.finfo(dtype).eps
    np.testing.assert_allclose(y, w, rtol=rtol, atol=rtol)
    assert np.array_equal(v, v2)
