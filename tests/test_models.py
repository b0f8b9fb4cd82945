"""The demo models' gradients against central finite differences (float64)."""

import numpy as np
import pytest

from fastopt.demo.models import MLP, SoftmaxRegression, nll_and_grad


def _central_differences(loss, params, rng, n_probes=12, h=1e-6):
    """(index, numerical derivative) for a few random entries of every parameter array."""
    probes = []
    for k, p in enumerate(params):
        for flat in rng.choice(p.size, size=min(n_probes, p.size), replace=False):
            idx = np.unravel_index(flat, p.shape)
            saved = p[idx]
            p[idx] = saved + h
            up = loss(params)
            p[idx] = saved - h
            down = loss(params)
            p[idx] = saved
            probes.append((k, idx, (up - down) / (2 * h)))
    return probes


def _problem(rng, n=17, d=9, k=4):
    return rng.standard_normal((n, d)), rng.integers(0, k, n)


@pytest.mark.parametrize("model_factory", [
    lambda d, k: SoftmaxRegression(d, k),
    lambda d, k: MLP(d, (7, 5), k),
    lambda d, k: MLP(d, (6,), k),
], ids=["softmax", "mlp-2-hidden", "mlp-1-hidden"])
def test_gradient_matches_central_differences(model_factory):
    rng = np.random.default_rng(3)
    X, y = _problem(rng)
    model = model_factory(X.shape[1], 4)
    params = model.init(rng, np.float64)
    # random biases and weights, so no parameter sits at a ReLU kink or at a symmetric zero
    params = [p + 0.3 * rng.standard_normal(p.shape) for p in params]
    loss, grads = model.loss_and_grad(params, X, y)
    assert loss == pytest.approx(model.loss(params, X, y), rel=1e-12)
    assert [g.shape for g in grads] == [p.shape for p in params]
    for k, idx, numeric in _central_differences(lambda ps: model.loss(ps, X, y), params, rng):
        assert grads[k][idx] == pytest.approx(numeric, rel=1e-5, abs=1e-8), (k, idx)


def test_nll_is_log_of_class_count_at_uniform_logits():
    y = np.array([0, 2, 1])
    loss, d_logits = nll_and_grad(np.zeros((3, 5)), y)
    assert loss == pytest.approx(np.log(5))
    # the gradient of the mean NLL sums to zero over classes, row by row
    np.testing.assert_allclose(d_logits.sum(axis=1), 0, atol=1e-15)


def test_float32_parameters_give_float32_gradients():
    rng = np.random.default_rng(0)
    X, y = _problem(rng)
    model = MLP(X.shape[1], (8, 8), 4)
    params = model.init(rng, np.float32)
    _, grads = model.loss_and_grad(params, X.astype(np.float32), y)
    assert all(g.dtype == np.float32 for g in grads)
