"""Where two formulations meet, they must agree bit for bit (optax's test_rms_match_adam, in this style).

Each case is arithmetic the docs promise: the lecture's EMA momentum is
torch's SGD momentum with dampening = momentum once past the first step;
AdamW without weight decay is Adam; amsgrad changes nothing while the
second moment only grows; Adam with beta1 = 0 and beta2 = 0 is sign-like
RMS normalisation, g / (|g| + eps) per element.
"""

import numpy as np
import pytest

import fastopt
from fastopt import optim, reference

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


@pytest.mark.parametrize("kind", ["SGD", "Momentum", "RMSprop", "Adagrad", "Adam", "AdamW"])
def test_reference_backend_gives_the_same_bits(kind):
    """optim's backend='reference' runs the NumPy twins on the same checked plan: same results."""
    param, *grads = draws(np.float32, 4, seed=5)
    kwargs = dict(lr=1e-2, momentum=0.9) if kind in ("SGD", "RMSprop") else dict(lr=1e-2)
    fused = getattr(optim, kind)([param.copy()], **kwargs, max_grad_norm=100.0)
    twin = getattr(optim, kind)([param.copy()], **kwargs, max_grad_norm=100.0, backend="reference")
    for g in grads:
        fused.step([g])
        twin.step([g])
    assert np.array_equal(fused.params[0], twin.params[0])
    for name in fused.state_buffer_names(fused.param_groups[0]):
        assert np.array_equal(fused.state[0][name][0], twin.state[0][name][0])
