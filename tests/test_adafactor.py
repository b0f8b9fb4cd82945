"""Adafactor: the fused step against its NumPy twin (bit for bit), against torch.optim.Adafactor,
the optimizer's state_dict, and the bad inputs of its step function and class."""

import io
import math

import ml_dtypes
import numpy as np
import pytest

import fastopt
from fastopt import _core, optim, reference
from fastopt.factored import factor_shapes
from optional_packages import importorskip

# vectors (one segment, several, empty, a scalar), matrices, a batch of matrices, a row longer than a
# segment, blocks of more than 16 rows (1100 rows: 64 blocks of 18)
SHAPES = [(7,), (), (20000,), (0,), (5, 13), (1, 1), (3, 4, 20), (2, 9000), (4, 0), (2, 3, 2, 17), (1100, 3)]


def _state(shape, dtype, rng=None):
    """(row_var, col_var, variance) for a param of shape: positive where given an rng, else zeros."""
    make = (lambda s: rng.random(s).astype(dtype)) if rng is not None else (lambda s: np.zeros(s, dtype))
    if len(shape) >= 2:
        rows, cols = factor_shapes(shape)
        return make(rows), make(cols), None
    return None, None, make(shape)


def _tensor(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype),
            *_state(shape, dtype, rng if seed % 2 else None))


def _copies(tensor):
    return tuple(None if b is None else b.copy() for b in tensor)


def _equal(a, b):
    for x, y in zip(a, b):
        assert (x is None) == (y is None)
        if x is not None:
            np.testing.assert_array_equal(x, y)


OPTIONS = [dict(), dict(weight_decay=0.1, lr=0.05), dict(maximize=True, grad_scale=0.5),
           dict(eps1=1e-3, eps2=0.0, d=2.0), dict(d=math.inf, beta2_decay=-0.5), dict(eps1=0.0)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "defaults")
def test_equals_the_reference_bit_for_bit(shape, dtype, options):
    for step in (1, 2, 7):
        fused = _tensor(shape, dtype, step)
        twin = _copies(fused)
        fastopt.adafactor_step(*fused, step=step, **options)
        reference.adafactor_step(*twin, step=step, **options)
        _equal(fused, twin)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threads_and_list_calls_give_the_same_bits(dtype):
    shapes = [(300, 301), (40000,), (6, 7, 130), (3,)]
    tensors = [_tensor(shape, dtype, 3 + i) for i, shape in enumerate(shapes)]
    results = []
    for threads in (1, 2, 3, 8):
        copies = [_copies(t) for t in tensors]
        fastopt.adafactor_step(*[list(column) for column in zip(*copies)], step=3, weight_decay=0.01,
                               num_threads=threads)
        results.append(copies)
    each = [_copies(t) for t in tensors]
    for t in each:
        fastopt.adafactor_step(*t, step=3, weight_decay=0.01)
    for copies in results[1:] + [each]:
        for a, b in zip(results[0], copies):
            _equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_simd_level_gives_the_reference_bits(dtype):
    # rows with a tail under FO_NORM_LANES, rows of two segments (9000 > 8192), blocks of 18 rows, a batch
    shapes = [(37, 300), (9, 9000), (1100, 3), (5, 13), (2, 3, 33), (3, 1), (1000,)]
    start = [_tensor(shape, dtype, 11 + i) for i, shape in enumerate(shapes)]
    twins = [_copies(t) for t in start]
    for t in twins:
        reference.adafactor_step(*t, step=4, weight_decay=0.02, grad_scale=0.5)
    levels = [level for level, ok in _core.simd_levels().items() if ok]
    assert "baseline" in levels
    for level in levels:
        copies = [_copies(t) for t in start]
        _core.set_simd_level(level)
        try:
            fastopt.adafactor_step(*[list(column) for column in zip(*copies)], step=4, weight_decay=0.02,
                                   grad_scale=0.5, num_threads=2)
        finally:
            _core.set_simd_level(None)
        for a, b in zip(copies, twins):
            _equal(a, b)


def test_the_state_is_sublinear_and_the_step_is_the_factored_one():
    # a rank-one second moment is recovered exactly by its factors: v = R·C / mean(R) = g²
    rng = np.random.default_rng(0)
    a, b = rng.random(50) + 0.5, rng.random(40) + 0.5
    grad = np.outer(a, b)
    param = np.ones((50, 40))
    row_var, col_var = np.zeros((50, 1)), np.zeros((1, 40))
    fastopt.adafactor_step(param, grad, row_var, col_var, None, step=1, d=math.inf, eps1=0.0)
    np.testing.assert_allclose(row_var[:, 0], a**2 * np.mean(b**2))
    np.testing.assert_allclose(col_var[0], np.mean(a**2) * b**2)
    # u = g / |g| = 1 everywhere; alpha = max(eps2, RMS(1)) · min(lr, 1) = lr
    np.testing.assert_allclose(param, 1 - 1e-2, rtol=1e-12)


def _torch_run(torch, shapes, dtype, steps, options):
    rng = np.random.default_rng(5)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(steps)]
    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    topt = torch.optim.Adafactor(tparams, **options)
    opt = optim.Adafactor([p.copy() for p in params], **options)
    for step_grads in grads:
        for tp, g in zip(tparams, step_grads):
            tp.grad = torch.tensor(g)
        topt.step()
        opt.step(step_grads)
    return opt, topt, tparams


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", [dict(), dict(lr=0.05, weight_decay=0.1), dict(maximize=True, d=1.5),
                                     dict(eps=(1e-4, 1e-2), beta2_decay=-0.6)],
                         ids=lambda o: ",".join(o) or "defaults")
def test_trajectory_matches_torch(dtype, options):
    torch = importorskip("torch")
    shapes = [(16, 24), (24,), (3, 5, 7), ()]
    opt, topt, tparams = _torch_run(torch, shapes, dtype, 30, options)
    tol = dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-13)
    for p, tp in zip(opt.params, tparams):
        np.testing.assert_allclose(p, tp.detach().numpy(), **tol)
    for i, tp in enumerate(tparams):
        state = topt.state[tp]
        for name in ("row_var", "col_var", "variance"):
            ours = opt.state[0][name][i]
            assert (ours is None) == (name not in state)
            if ours is not None:
                np.testing.assert_allclose(ours, state[name].numpy(), **tol)


def test_optimizer_defaults_are_torchs():
    torch = importorskip("torch")
    import inspect

    ours = inspect.signature(optim.Adafactor).parameters
    for name, parameter in inspect.signature(torch.optim.Adafactor).parameters.items():
        if name in ("params", "foreach"):
            continue
        assert ours[name].default == parameter.default, name


def test_state_dict_resumes_bit_for_bit():
    rng = np.random.default_rng(1)
    shapes = [(9, 11), (11,), (2, 3, 4)]
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(6)]
    straight = optim.Adafactor([p.copy() for p in params], weight_decay=0.01)
    for g in grads:
        straight.step(g)
    first = optim.Adafactor([p.copy() for p in params], weight_decay=0.01)
    for g in grads[:3]:
        first.step(g)
    buffer = io.BytesIO()
    np.savez(buffer, **first.state_dict())
    buffer.seek(0)
    resumed = optim.Adafactor([p.copy() for p in first.params], weight_decay=0.01)
    resumed.load_state_dict(np.load(buffer))
    assert resumed.param_groups[0]["eps"] == (None, 1e-3)
    assert resumed.state[0]["variance"][0] is None and resumed.state[0]["row_var"][1] is None
    for g in grads[3:]:
        resumed.step(g)
    for a, b in zip(straight.params, resumed.params):
        np.testing.assert_array_equal(a, b)


def test_reference_backend_and_clipping():
    rng = np.random.default_rng(2)
    params = [rng.standard_normal(s) for s in [(6, 5), (5,)]]
    grads = [rng.standard_normal(p.shape) * 10 for p in params]
    fused = optim.Adafactor([p.copy() for p in params], max_grad_norm=1.0)
    twin = optim.Adafactor([p.copy() for p in params], max_grad_norm=1.0, backend="reference")
    fused.step(grads)
    twin.step(grads)
    for a, b in zip(fused.params, twin.params):
        np.testing.assert_array_equal(a, b)
    assert fused.last_grad_norm == pytest.approx(math.sqrt(sum(np.sum(g * g) for g in grads)))
    skipping = optim.Adafactor([p.copy() for p in params], skip_nonfinite=True)
    assert skipping.step([np.full(p.shape, np.nan) for p in params]) is False
    for a, b in zip(skipping.params, params):
        np.testing.assert_array_equal(a, b)


# --- bad inputs: a clear error, and nothing written -------------------------------------------------

def _matrix():
    rng = np.random.default_rng(3)
    return rng.standard_normal((4, 6)), rng.standard_normal((4, 6)), np.zeros((4, 1)), np.zeros((1, 6)), None


def _bad_calls():
    p, g, r, c, _ = _matrix()
    yield "int32 param", (p.astype(np.int32), g, r, c, None), {}, TypeError, \
        r"param must have dtype float32, float64, bfloat16 \(ml_dtypes\) or float16"
    yield "bfloat16 param, float64 factors", (p.astype(ml_dtypes.bfloat16), g.astype(ml_dtypes.bfloat16), r, c,
                                              None), {}, TypeError, "mixed dtypes: row_var is float64"
    yield "grad dtype", (p, g.astype(np.float32), r, c, None), {}, TypeError, \
        "mixed dtypes: grad is float32 but param is float64"
    yield "grad shape", (p, g[:, :5].copy(), r, c, None), {}, ValueError, "grad must have shape"
    yield "row_var shape", (p, g, np.zeros((4,)), c, None), {}, ValueError, "row_var must have shape"
    yield "col_var shape", (p, g, r, np.zeros((6, 1)), None), {}, ValueError, "col_var must have shape"
    yield "missing row_var", (p, g, None, c, None), {}, ValueError, "row_var must be an array"
    yield "variance of a matrix", (p, g, r, c, np.zeros((4, 6))), {}, ValueError, "variance must be None"
    yield "factors of a vector", (p[0], g[0], r, None, np.zeros(6)), {}, ValueError, "row_var must be None"
    yield "Fortran order", (np.asfortranarray(p), np.asfortranarray(g), r, c, None), {}, ValueError, \
        "C-contiguous"
    readonly = p.copy()
    readonly.flags.writeable = False
    yield "read-only param", (readonly, g, r, c, None), {}, ValueError, "writeable"
    yield "overlap", (p, g, p.reshape(-1)[:4].reshape(4, 1), c, None), {}, ValueError, "overlap"
    yield "list lengths", ([p], [g, g], [r], [c], [None]), {}, ValueError, "2 grad arrays for 1 params"
    yield "not an array", ([p], [list(g)], [r], [c], [None]), {}, TypeError, r"grad\[0\] must be a numpy.ndarray"
    for key, value, error, text in [("beta2_decay", 0.1, ValueError, "beta2_decay"),
                                    ("d", 0.5, ValueError, "clipping threshold"),
                                    ("d", math.nan, ValueError, "d must be finite"),
                                    ("d", 10**400, ValueError, "d must be finite"),
                                    ("d", "2", TypeError, "d must be a real number"),
                                    ("lr", -1.0, ValueError, "lr"), ("eps1", -1e-3, ValueError, "eps1"),
                                    ("eps2", math.nan, ValueError, "eps2"), ("step", 0, ValueError, "step"),
                                    ("step", 1.5, TypeError, "step"), ("maximize", 1, TypeError, "maximize"),
                                    ("weight_decay", -0.1, ValueError, "weight_decay"),
                                    ("num_threads", 0, ValueError, "num_threads")]:
        yield f"{key}={value}", (p, g, r, c, None), {key: value}, error, text


@pytest.mark.parametrize("label, buffers, options, error, text", list(_bad_calls()),
                         ids=[case[0] for case in _bad_calls()])
def test_bad_input_raises_and_writes_nothing(label, buffers, options, error, text):
    before = [[np.array(b, copy=True) for b in (x if isinstance(x, list) else [x]) if b is not None]
              for x in buffers if x is not None]
    options = dict(dict(step=1), **options)
    with pytest.raises(error, match=text):
        fastopt.adafactor_step(*buffers, **options)
    after = [[b for b in (x if isinstance(x, list) else [x]) if b is not None] for x in buffers if x is not None]
    for old, new in zip(before, after):
        for a, b in zip(old, new):
            np.testing.assert_array_equal(a, np.asarray(b))


def test_optimizer_bad_input():
    p = np.zeros((3, 4), np.float32)
    with pytest.raises(TypeError, match="must have dtype float32, float64, bfloat16"):
        optim.Adafactor([p.astype(np.int32)])
    with pytest.raises(TypeError, match="eps must be a pair"):
        optim.Adafactor([p], eps=1e-3)
    with pytest.raises(ValueError, match="beta2_decay"):
        optim.Adafactor([p], beta2_decay=0.5)
    with pytest.raises(ValueError, match="clipping threshold"):
        optim.Adafactor([p], d=0.0)
    with pytest.raises(ValueError, match=r"params\[0\] must be C-contiguous"):
        optim.Adafactor([np.asfortranarray(p)])
    opt = optim.Adafactor([p])
    with pytest.raises(ValueError, match="1 params"):
        opt.step([p, p])
    with pytest.raises(TypeError):
        opt.step([p.astype(np.float64)])
    assert opt.state[0]["step"] == 0
    saved = opt.state_dict()
    saved["state.0.row_var.0"] = np.zeros((4, 1), np.float32)
    with pytest.raises(ValueError, match="row_var"):
        opt.load_state_dict(saved)


# --- fastopt.torch.Adafactor ---------------------------------------------------------------------

def _torch_models(torch, dtype, seed=7):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(12, 9), (9,), (2, 3, 5)]
    values = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
    return [[torch.nn.Parameter(v.clone()) for v in values] for _ in range(2)]


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_torch_drop_in_matches_torch(dtype_name):
    torch = importorskip("torch")
    import fastopt.torch as fotorch

    dtype = getattr(torch, dtype_name)
    ours, theirs = _torch_models(torch, dtype)
    opt = fotorch.Adafactor(ours, lr=0.02, weight_decay=0.05)
    reference_opt = torch.optim.Adafactor(theirs, lr=0.02, weight_decay=0.05)
    gen = torch.Generator().manual_seed(3)
    for step in range(12):
        for a, b in zip(ours, theirs):
            g = torch.randn(a.shape, generator=gen, dtype=dtype)
            a.grad, b.grad = g.clone(), g.clone()
        if step == 5:
            ours[1].grad = theirs[1].grad = None   # a param without a gradient: its step count lags
        opt.step()
        reference_opt.step()
    tol = dict(rtol=2e-5, atol=2e-6) if dtype_name == "float32" else dict(rtol=1e-11, atol=1e-13)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), **tol)
        assert set(opt.state[a]) == set(reference_opt.state[b])
        assert opt.state[a]["step"].item() == reference_opt.state[b]["step"].item()
    # torch's state_dict format: each loads the other's
    reference_opt.load_state_dict(opt.state_dict())
    opt.load_state_dict(reference_opt.state_dict())


@pytest.mark.parametrize("dtype_name", ["bfloat16", "float16"])
def test_torch_drop_in_steps_16_bit_tensors_as_fastopt_optim(dtype_name):
    torch = importorskip("torch")
    import fastopt.torch as fotorch

    dtype = getattr(torch, dtype_name)
    ours, theirs = _torch_models(torch, dtype)
    arrays = [fotorch.numpy_view(p).copy() for p in ours]
    opt = fotorch.Adafactor(ours, lr=0.02, weight_decay=0.05)
    reference_opt = torch.optim.Adafactor(theirs, lr=0.02, weight_decay=0.05)
    twin = optim.Adafactor(arrays, lr=0.02, weight_decay=0.05)
    gen = torch.Generator().manual_seed(3)
    steps = 8
    for _ in range(steps):
        grads = [torch.randn(a.shape, generator=gen).to(dtype) for a in ours]
        for a, b, g in zip(ours, theirs, grads):
            a.grad, b.grad = g.clone(), g.clone()
        opt.step()
        reference_opt.step()
        twin.step([fotorch.numpy_view(g) for g in grads])
    for a, b, c in zip(ours, theirs, twin.params):
        assert a.dtype == dtype and opt.state[a]["row_var" if a.dim() > 1 else "variance"].dtype == dtype
        np.testing.assert_array_equal(fotorch.numpy_view(a).view(np.uint16), c.view(np.uint16))
        # torch rounds to 16 bits after every operation (the param twice a step: decay, then update), fastopt
        # once per stored value: within a unit in the last place per step of torch's two roundings
        x, y = a.detach().double().numpy(), b.detach().double().numpy()
        eps = float(ml_dtypes.finfo(fotorch.numpy_view(a).dtype).eps)
        assert np.all(np.abs(x - y) <= steps * eps * np.maximum(np.abs(x), np.abs(y)) + 1e-3)


def test_torch_drop_in_bad_input():
    torch = importorskip("torch")
    import fastopt.torch as fotorch

    p = torch.nn.Parameter(torch.zeros(4, 3, dtype=torch.complex64))
    opt = fotorch.Adafactor([p])
    p.grad = torch.zeros_like(p)
    with pytest.raises(TypeError, match="float32, float64, bfloat16 or float16 tensor"):
        opt.step()
    assert len(opt.state[p]) == 0
    q = torch.nn.Parameter(torch.zeros(3, 4).t())   # not C-contiguous: rows are the last axis
    opt = fotorch.Adafactor([q], max_grad_norm=1.0)
    q.grad = torch.ones(4, 3)
    with pytest.raises(ValueError, match="C-contiguous"):
        opt.step()
    assert len(opt.state[q]) == 0 and not q.detach().any()
    with pytest.raises(ValueError, match="num_threads"):
        fotorch.Adafactor([q], num_threads=0)
    # a saved step count or state tensor that cannot be stepped: named, and nothing written
    r = torch.nn.Parameter(torch.ones(3, 4))
    opt = fotorch.Adafactor([r])
    r.grad = torch.ones(3, 4)
    opt.step()
    before = r.detach().clone()
    for bad in (torch.tensor(float("inf")), torch.tensor(2.5), torch.tensor(float("nan")), 3):
        opt.state[r]["step"] = bad
        with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[0\] has state step"):
            opt.step()
    opt.state[r]["step"] = torch.tensor(1.0)
    opt.state[r]["row_var"] = torch.zeros(3, 1, dtype=torch.int64)
    with pytest.raises(TypeError, match=r"\['params'\]\[0\] state 'row_var' has dtype torch.int64"):
        opt.step()
    assert torch.equal(r.detach(), before) and opt.state[r]["step"].item() == 1


def test_torch_drop_in_clips_and_skips_as_fastopt_optim():
    torch = importorskip("torch")
    import fastopt.torch as fotorch

    rng = np.random.default_rng(4)
    values = [rng.standard_normal(s).astype(np.float32) for s in [(8, 6), (6,)]]
    grads = [rng.standard_normal(v.shape).astype(np.float32) * 5 for v in values]
    tensors = [torch.nn.Parameter(torch.tensor(v)) for v in values]
    opt = fotorch.Adafactor(tensors, max_grad_norm=1.0, skip_nonfinite=True)
    ours = optim.Adafactor([v.copy() for v in values], max_grad_norm=1.0)
    for t, g in zip(tensors, grads):
        t.grad = torch.tensor(g)
    opt.step()
    ours.step(grads)
    for t, p in zip(tensors, ours.params):
        np.testing.assert_array_equal(t.detach().numpy(), p)
    assert opt.last_grad_norm == ours.last_grad_norm
    before = [t.detach().clone() for t in tensors]
    tensors[0].grad[0, 0] = float("nan")
    opt.step()
    assert opt.skipped_steps == 1 and opt.state[tensors[0]]["step"].item() == 1
    for t, b in zip(tensors, before):
        assert torch.equal(t.detach(), b)
