"""Gradient clipping and the norm pass: thread-count bit-identity, torch parity, bad input."""

import math
from pathlib import Path

import numpy as np
import pytest

import fastopt
from fastopt import _core
from fastopt.clip import clip_coefficient, get_total_norm
import optional_packages

NORM_TYPES = [1, 2, math.inf, 3.0, 0.5]
DTYPES = [np.float32, np.float64]


def grads_of(sizes, dtype, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(n) * scale).astype(dtype) for n in sizes]


def reference_norm(grads, norm_type):
    flat = np.concatenate([g.ravel() for g in grads]).astype(np.float64) if grads else np.zeros(0)
    return float(np.linalg.norm(flat, norm_type)) if flat.size else 0.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_type", NORM_TYPES)
def test_norm_is_bit_identical_for_any_thread_count(dtype, norm_type):
    one = grads_of([2**20 + 3], dtype)[0]
    several = grads_of([1, 8191, 8192, 8193, 300_001, 0, 5], dtype, seed=1)
    for grads in (one, several):
        norms = [get_total_norm(grads, norm_type, num_threads=n) for n in (1, 2, 3, 4)]
        assert norms[0] == norms[1] == norms[2] == norms[3]
        assert math.isclose(norms[0], reference_norm(grads if isinstance(grads, list) else [grads], norm_type),
                            rel_tol=1e-12)


def test_norm_of_mixed_dtypes_layouts_and_empty():
    f = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    grads = [np.ones(5, np.float32), f, np.zeros((0, 3))]
    assert get_total_norm(grads, 1) == 5 + sum(range(12))
    assert get_total_norm([]) == 0.0
    assert get_total_norm(np.float32([3, 4])) == 5.0  # one array


@pytest.mark.parametrize("dtype", DTYPES)
def test_nonfinite_norms(dtype):
    g = np.ones(50_000, dtype)
    g[17] = np.inf
    assert get_total_norm(g, 2) == math.inf and get_total_norm(g, math.inf) == math.inf
    assert not _core.all_finite(g)
    g[40_000] = np.nan
    for p in NORM_TYPES:
        assert math.isnan(get_total_norm(g, p)), p
    with pytest.raises(RuntimeError, match="non-finite"):
        get_total_norm(g, error_if_nonfinite=True)
    assert _core.all_finite(np.ones(3, dtype)) and not _core.all_finite(np.array([np.nan], dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("max_norm", [0.5, 1e9])
def test_clip_grad_norm_scales_by_torchs_coefficient(dtype, max_norm):
    grads = grads_of([100, 1, 2000], dtype)
    before = [g.copy() for g in grads]
    norm = fastopt.clip_grad_norm(grads, max_norm)
    assert norm == get_total_norm(before)
    coefficient = max_norm / (norm + 1e-6)
    for g, b in zip(grads, before):
        expected = b * dtype(coefficient) if coefficient < 1 else b
        assert np.array_equal(g, expected)
    assert clip_coefficient(norm, max_norm) == min(coefficient, 1.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_type", NORM_TYPES)
def test_clip_grad_norm_matches_torch(dtype, norm_type):
    torch = optional_packages.importorskip("torch")
    grads = grads_of([257, 1, 31_000, 4], dtype, scale=3.0)
    tensors = [torch.tensor(g) for g in grads]
    for t in tensors:
        t.grad = t.clone()
    expected_norm = torch.nn.utils.clip_grad_norm_(tensors, 0.7, norm_type=norm_type).item()
    norm = fastopt.clip_grad_norm(grads, 0.7, norm_type=norm_type)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert math.isclose(norm, expected_norm, rel_tol=rtol)
    for g, t in zip(grads, tensors):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=rtol, atol=0)


def test_clip_grad_norm_with_nonfinite_grads_is_torchs():
    torch = optional_packages.importorskip("torch")
    for bad in (np.nan, np.inf):
        grads = [np.array([1.0, bad, -2.0]), np.array([3.0])]
        tensors = [torch.tensor(g) for g in grads]
        for t in tensors:
            t.grad = t.clone()
        torch.nn.utils.clip_grad_norm_(tensors, 1.0)
        fastopt.clip_grad_norm(grads, 1.0)
        for g, t in zip(grads, tensors):
            np.testing.assert_array_equal(g, t.grad.numpy())
        with pytest.raises(RuntimeError):
            fastopt.clip_grad_norm([np.array([bad])], 1.0, error_if_nonfinite=True)


def test_clip_grad_value_matches_torch():
    torch = optional_packages.importorskip("torch")
    for dtype in DTYPES:
        grads = grads_of([100, 7], dtype, scale=2.0)
        grads[1][0] = np.nan
        tensors = [torch.tensor(g) for g in grads]
        for t in tensors:
            t.grad = t.clone()
        torch.nn.utils.clip_grad_value_(tensors, 0.3)
        fastopt.clip_grad_value(grads, 0.3)
        for g, t in zip(grads, tensors):
            np.testing.assert_array_equal(g, t.grad.numpy())


def test_clip_grad_value_in_place():
    g = np.array([-3.0, 0.1, 2.0], np.float32)
    view = g
    fastopt.clip_grad_value(g, 1)
    assert view is g and g.tolist() == [-1.0, np.float32(0.1), 1.0]


@pytest.mark.parametrize("call, error", [
    (lambda g: get_total_norm(g, 0), ValueError),
    (lambda g: get_total_norm(g, -1), ValueError),
    (lambda g: get_total_norm(g, float("nan")), ValueError),
    (lambda g: get_total_norm(g, "2"), TypeError),
    (lambda g: get_total_norm(g, True), TypeError),
    (lambda g: get_total_norm(g, num_threads=0), ValueError),
    (lambda g: get_total_norm(g, num_threads=1.5), TypeError),
    (lambda g: get_total_norm([g, [1.0]]), TypeError),
    (lambda g: get_total_norm(np.arange(3)), TypeError),
    (lambda g: get_total_norm(np.ones(3, np.uint16)), TypeError),  # not bfloat16: a uint16 view
    (lambda g: get_total_norm(np.ones(3, ">f8")), TypeError),
    (lambda g: get_total_norm(np.ones((4, 4))[:, 1]), ValueError),
    (lambda g: get_total_norm({"a": g}), TypeError),
    (lambda g: fastopt.clip_grad_norm(g, -1.0), ValueError),
    (lambda g: fastopt.clip_grad_norm(g, float("nan")), ValueError),
    (lambda g: fastopt.clip_grad_norm(g, None), TypeError),
    (lambda g: fastopt.clip_grad_value(g, -1.0), ValueError),
    (lambda g: fastopt.clip_grad_value(g, "1"), TypeError),
])
def test_bad_input(call, error):
    g = np.ones(5)
    with pytest.raises(error):
        call(g)
    assert np.array_equal(g, np.ones(5))


def test_read_only_grads_are_refused_before_any_write():
    writable, frozen = np.full(3, 10.0), np.full(3, 10.0)
    frozen.flags.writeable = False
    for clip in (lambda gs: fastopt.clip_grad_norm(gs, 1.0), lambda gs: fastopt.clip_grad_value(gs, 1.0)):
        with pytest.raises(ValueError, match="writeable"):
            clip([writable, frozen])
        assert np.array_equal(writable, np.full(3, 10.0))
    assert get_total_norm(frozen) == math.sqrt(300)  # reading is fine


def emulated_sum(arrays, transform, block=8192, lanes=16):  # FO_NORM_BLOCK, FO_NORM_LANES
    """The norm pass's sum, spelled out in NumPy: per-tensor blocks fixed by index, element i of a
    block into lane i % lanes in order, lanes and then block partials combined by halves."""
    def halves(values):
        if len(values) == 1:
            return values[0]
        return halves(values[:len(values) // 2]) + halves(values[len(values) // 2:])

    partials = []
    for a in arrays:
        flat = transform(a.ravel().astype(np.float64))
        for start in range(0, flat.size, block):
            chunk = flat[start:start + block]
            full = chunk.size - chunk.size % lanes
            acc = np.cumsum(chunk[:full].reshape(-1, lanes), axis=0)[-1] if full else np.zeros(lanes)
            acc[:chunk.size - full] += chunk[full:]
            partials.append(halves(list(acc)))
    return halves(partials) if partials else 0.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_norm_follows_its_specified_summation_order_exactly(dtype):
    """Pins the order of every addition, so no build, SIMD level or thread count may change a bit."""
    grads = grads_of([3 * 8192 + 13, 5, 8192, 70_001], dtype, seed=3)
    assert get_total_norm(grads, 1) == emulated_sum(grads, np.abs)
    assert get_total_norm(grads, 2) == math.sqrt(emulated_sum(grads, np.square))


def test_norm_is_the_same_at_every_simd_level():
    import subprocess
    import sys

    script = ("import numpy as np; from fastopt import _core; "
              "x = [np.random.default_rng(0).standard_normal(n).astype(t) for n, t in "
              "((300_007, np.float32), (70_001, np.float64))]; "
              "print(_core.get_simd_level(), *[repr(_core.total_norm(x, p)) for p in (1, 2, float('inf'), 3.0)], "
              "_core.all_finite(x))")
    outputs = {}
    for level, available in fastopt._core.simd_levels().items():
        if available:
            env = dict(__import__("os").environ, FASTOPT_SIMD=level)
            out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                                 check=True, cwd=Path(fastopt.__file__).parents[1]).stdout.split()
            assert out[0] == level
            outputs[level] = out[1:]
    assert len(outputs) >= 1 and all(o == outputs["baseline"] for o in outputs.values())
