"""Adafactor with 16-bit buffers: every mix of float32, bfloat16 and float16 against the NumPy twin
(bit for bit, at every thread count and SIMD level), param_copy, stochastic rounding, master
weights and 16-bit state in fastopt.optim.Adafactor, and the bad inputs of these modes."""

import itertools

import ml_dtypes
import numpy as np
import pytest

import fastopt
from fastopt import _core, optim, reference
from fastopt.factored import factor_shapes
from test_adafactor import _copies

BF16, F16, F32 = np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16), np.dtype(np.float32)
DTYPES = [F32, BF16, F16]
# a vector of two segments and a tail, a matrix, rows of two segments (9000 > 8192) and longer than a
# run, a batch of matrices, blocks of 18 rows
SHAPES = [(20003,), (37, 300), (2, 9000), (2, 3, 33), (1100, 3)]


def _tensor(shape, dtypes, seed, copy=None):
    """(param, grad, row_var, col_var, variance, param_copy) with dtypes (param, grad, state)."""
    rng = np.random.default_rng(seed)
    p, g, s = dtypes
    param = rng.standard_normal(shape).astype(p)
    grad = (rng.standard_normal(shape) * 0.1).astype(g)
    if len(shape) >= 2:
        rows, cols = factor_shapes(shape)
        state = ((rng.random(rows) * 0.01).astype(s), (rng.random(cols) * 0.01).astype(s), None)
    else:
        state = (None, None, (rng.random(shape) * 0.01).astype(s))
    return (param, grad) + state + (None if copy is None else np.zeros(shape, copy),)


def _equal(a, b):
    """Equal buffers, dtypes and bits (16-bit arrays compare as their codes)."""
    for x, y in zip(a, b):
        assert (x is None) == (y is None)
        if x is not None:
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(x.view(np.uint8), y.view(np.uint8))


def _call(step_function, tensors, **options):
    """step_function on a tensor or a list of them: the buffers, and param_copy as a keyword."""
    if isinstance(tensors, tuple):
        *buffers, copy = tensors
    else:
        *buffers, copy = [list(column) for column in zip(*tensors)]
    step_function(*buffers, param_copy=copy, **options)


MIXES = [mix for mix in itertools.product(DTYPES, DTYPES, DTYPES) if mix != (F32, F32, F32)]


@pytest.mark.parametrize("mix", MIXES, ids=lambda m: "-".join(d.name for d in m))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_every_mix_equals_the_reference_bit_for_bit(mix, shape):
    for step, options in ((1, {}), (3, dict(weight_decay=0.1, lr=0.05, maximize=True, grad_scale=0.5)),
                          (7, dict(eps1=1e-3, d=2.0))):
        fused = _tensor(shape, mix, step, copy=BF16 if mix[0] == F32 else None)
        twin = _copies(fused)
        _call(fastopt.adafactor_step, fused, step=step, **options)
        _call(reference.adafactor_step, twin, step=step, **options)
        _equal(fused, twin)


@pytest.mark.parametrize("copy", [BF16, F16], ids=str)
def test_master_weights_write_their_16_bit_copy_in_the_same_pass(copy):
    master = _tensor((40, 50), (F32, copy, F32), 1, copy=copy)
    fastopt.adafactor_step(*master[:5], param_copy=master[5], step=2)
    np.testing.assert_array_equal(master[5], master[0].astype(copy))
    # the same step without the copy moves the master identically
    alone = _tensor((40, 50), (F32, copy, F32), 1)
    fastopt.adafactor_step(*alone[:5], step=2)
    np.testing.assert_array_equal(alone[0], master[0])


def test_16_bit_state_is_used_as_stored():
    # a factor that does not round-trip: the row scales come from its rounded value, as the next step's would
    fused = _tensor((64, 48), (F32, F32, BF16), 4)
    twin = _copies(fused)
    fastopt.adafactor_step(*fused[:5], step=5)
    row_var, col_var = twin[2].astype(np.float32), twin[3].astype(np.float32)
    unrounded = twin[0].copy()
    fastopt.adafactor_step(unrounded, twin[1], row_var, col_var, None, step=5)
    assert not np.array_equal(row_var.astype(BF16).astype(np.float32), row_var) or \
        not np.array_equal(col_var.astype(BF16).astype(np.float32), col_var)
    np.testing.assert_array_equal(fused[2], row_var.astype(BF16))
    assert not np.array_equal(fused[0], unrounded)


@pytest.mark.parametrize("dtype", [BF16, F16], ids=str)
def test_stochastic_rounding_is_the_reference_and_depends_only_on_seed_and_step(dtype):
    start = [_tensor(shape, (dtype, dtype, F32), 8 + i) for i, shape in enumerate(SHAPES)]
    twins = [_copies(t) for t in start]
    for t in twins:
        _call(reference.adafactor_step, t, step=4, stochastic_rounding=True, seed=99)
    for threads in (1, 2, 3):
        fused = [_copies(t) for t in start]
        _call(fastopt.adafactor_step, fused, step=4, stochastic_rounding=True, seed=99, num_threads=threads)
        for a, b in zip(fused, twins):
            _equal(a, b)
    nearest = [_copies(t) for t in start]
    _call(fastopt.adafactor_step, nearest, step=4)
    other_seed = [_copies(t) for t in start]
    _call(fastopt.adafactor_step, other_seed, step=4, stochastic_rounding=True, seed=100)
    assert not np.array_equal(nearest[0][0], twins[0][0])
    assert not np.array_equal(other_seed[0][0], twins[0][0])
    # stochastic rounding picks one of the two neighbours of the float32 value
    exact = _copies(start[0])
    exact = (exact[0].astype(np.float32),) + exact[1:]
    fastopt.adafactor_step(*exact[:5], step=4)
    low = np.minimum(twins[0][0].astype(np.float32), nearest[0][0].astype(np.float32))
    assert np.all(np.abs(twins[0][0].astype(np.float32) - exact[0]) <= np.abs(np.spacing(low.astype(dtype)))
                  .astype(np.float32) * 2)


@pytest.mark.parametrize("mix", [(BF16, BF16, BF16), (F16, F32, F16), (F32, BF16, F32)],
                         ids=lambda m: "-".join(d.name for d in m))
def test_threads_list_calls_and_simd_levels_give_the_same_bits(mix):
    start = [_tensor(shape, mix, 20 + i, copy=F16 if mix[0] == F32 else None) for i, shape in enumerate(SHAPES)]
    twins = [_copies(t) for t in start]
    for t in twins:
        _call(reference.adafactor_step, t, step=6, weight_decay=0.02)
    levels = [level for level, ok in _core.simd_levels().items() if ok]
    for level, threads in itertools.product(levels, (1, 2, 5)):
        fused = [_copies(t) for t in start]
        _core.set_simd_level(level)
        try:
            _call(fastopt.adafactor_step, fused, step=6, weight_decay=0.02, num_threads=threads)
        finally:
            _core.set_simd_level(None)
        for a, b in zip(fused, twins):
            _equal(a, b)
    for t, twin in zip(start, twins):
        one = _copies(t)
        _call(fastopt.adafactor_step, one, step=6, weight_decay=0.02)
        _equal(one, twin)


def test_eps1_defaults_to_the_gradients_machine_epsilon():
    fused = _tensor((30, 20), (F32, BF16, F32), 2)
    given = _copies(fused)
    fastopt.adafactor_step(*fused[:5], step=1)
    fastopt.adafactor_step(*given[:5], step=1, eps1=float(ml_dtypes.finfo(BF16).eps))
    _equal(fused, given)


# --- the training API ----------------------------------------------------------------------------

def _grads(shapes, dtype, steps, seed=0):
    rng = np.random.default_rng(seed)
    return [[(rng.standard_normal(s) * 0.1).astype(dtype) for s in shapes] for _ in range(steps)]


SHAPES_OPT = [(12, 9), (9,), (2, 3, 5)]


@pytest.mark.parametrize("dtype", [BF16, F16], ids=str)
@pytest.mark.parametrize("options", [dict(), dict(master_weights=True), dict(state_dtype="float32"),
                                     dict(stochastic_rounding=True, seed=5)],
                         ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "defaults")
def test_optimizer_takes_16_bit_params_and_resumes_bit_for_bit(dtype, options):
    rng = np.random.default_rng(1)
    start = [rng.standard_normal(s).astype(dtype) for s in SHAPES_OPT]
    grads = _grads(SHAPES_OPT, dtype, 6)
    opt = optim.Adafactor([p.copy() for p in start], lr=0.05, **options)
    twin = optim.Adafactor([p.copy() for p in start], lr=0.05, backend="reference", **options)
    state_dtype = {None: dtype, "float32": F32}[options.get("state_dtype")]
    if options.get("master_weights"):
        state_dtype = F32
    assert opt.state[0]["row_var"][0].dtype == state_dtype and opt.state[0]["variance"][1].dtype == state_dtype
    for g in grads[:3]:
        opt.step(g)
        twin.step(g)
    for a, b in zip(opt.params, twin.params):
        np.testing.assert_array_equal(a.view(np.uint16), b.view(np.uint16))
    if options.get("master_weights"):
        for p, m in zip(opt.params, opt.state[0]["master"]):
            assert m.dtype == F32
            np.testing.assert_array_equal(p, m.astype(dtype))
    saved = opt.state_dict()
    resumed = optim.Adafactor([p.copy() for p in opt.params], lr=0.05, **options)
    resumed.load_state_dict(saved)
    for g in grads[3:]:
        opt.step(g)
        resumed.step(g)
    for a, b in zip(opt.params, resumed.params):
        np.testing.assert_array_equal(a.view(np.uint16), b.view(np.uint16))


def test_master_weights_keep_what_16_bit_rounding_loses():
    # steps far below bfloat16's spacing at 1.0 move the master, and in time the param; without a master
    # each step rounds back to where it was
    start = [np.ones((8, 8), BF16)]
    grads = [[np.full((8, 8), 1.0, BF16)] for _ in range(40)]
    kept = optim.Adafactor([p.copy() for p in start], lr=1e-4, master_weights=True)
    plain = optim.Adafactor([p.copy() for p in start], lr=1e-4)
    for g in grads:
        kept.step(g)
        plain.step(g)
    assert np.all(plain.params[0] == 1)
    assert np.all(kept.state[0]["master"][0] < 1 - 1e-3)
    assert np.all(kept.params[0] < 1)


# --- bad inputs: a clear error, and nothing written ---------------------------------------------

def _bad_calls():
    p, g, r, c, _, _ = _tensor((4, 6), (F32, F32, F32), 3)
    wide = p.astype(np.float64)
    yield "float64 param, float32 grad", (wide, g, r.astype(np.float64), c.astype(np.float64), None), {}, \
        TypeError, "mixed dtypes: grad is float32 but param is float64"
    yield "float64 factor", (p, g, r.astype(np.float64), c, None), {}, TypeError, "mixed dtypes: row_var"
    yield "uint16 as bfloat16", (p.astype(BF16).view(np.uint16), g, r, c, None), {}, TypeError, \
        r"bfloat16 \(ml_dtypes\)"
    yield "float32 param_copy", (p, g, r, c, None), dict(param_copy=np.zeros((4, 6), F32)), TypeError, \
        "param_copy receives the new param in a 16-bit dtype"
    yield "param_copy shape", (p, g, r, c, None), dict(param_copy=np.zeros((6, 4), BF16)), ValueError, \
        "param_copy must have shape"
    yield "param_copy overlaps", (p, g, r, c, None), dict(param_copy=p.reshape(-1).view(BF16)[:24].reshape(4, 6)), ValueError, \
        "overlap"
    yield "param_copy for a float64 param", (wide, wide.copy(), r.astype(np.float64), c.astype(np.float64),
                                             None), dict(param_copy=np.zeros((4, 6), BF16)), TypeError, \
        "mixed dtypes: param_copy"
    yield "stochastic float32 param", (p, g, r, c, None), dict(stochastic_rounding=True), ValueError, \
        "stochastic_rounding=True rounds a 16-bit param; param is float32"
    yield "stochastic not a bool", (p.astype(BF16), g, r, c, None), dict(stochastic_rounding=1), TypeError, \
        "stochastic_rounding"
    yield "negative seed", (p.astype(BF16), g, r, c, None), dict(stochastic_rounding=True, seed=-1), \
        ValueError, "seed"
    yield "negative seed, rounding to nearest", (p.astype(BF16), g, r, c, None), dict(seed=-1), ValueError, "seed"
    yield "param_copy list length", ([p], [g], [r], [c], [None]), dict(param_copy=[]), ValueError, \
        "0 param_copy arrays for 1 params"


@pytest.mark.parametrize("label, buffers, options, error, text", list(_bad_calls()),
                         ids=[case[0] for case in _bad_calls()])
def test_bad_input_raises_and_writes_nothing(label, buffers, options, error, text):
    arrays = [b for x in list(buffers) + [options.get("param_copy")] for b in (x if isinstance(x, list) else [x])
              if b is not None]
    before = [b.copy() for b in arrays]
    with pytest.raises(error, match=text):
        fastopt.adafactor_step(*buffers, **dict(dict(step=1), **options))
    for old, new in zip(before, arrays):
        np.testing.assert_array_equal(old.view(np.uint8), new.view(np.uint8))


def test_optimizer_bad_input():
    p = np.zeros((3, 4), BF16)
    with pytest.raises(ValueError, match="no 8-bit state"):
        optim.Adafactor([p], state_dtype="8bit")
    with pytest.raises(ValueError, match="stochastic_rounding rounds 16-bit params"):
        optim.Adafactor([np.zeros((3, 4), np.float32)], stochastic_rounding=True)
    with pytest.raises(ValueError, match="choose one"):
        optim.Adafactor([p], master_weights=True, stochastic_rounding=True)
    with pytest.raises(TypeError, match="float64 params take float64 state"):
        optim.Adafactor([np.zeros((3, 4))], state_dtype="bfloat16")
    opt = optim.Adafactor([p], master_weights=True)
    with pytest.raises(TypeError, match="mixed dtypes"):
        opt.step([np.zeros((3, 4))])
    assert opt.state[0]["step"] == 0 and not opt.state[0]["master"][0].any()
