"""bfloat16 and float16 buffers: every rule against its twin bit for bit, in every mix of dtypes,
float32 master weights with a 16-bit copy, stochastic rounding, the norm pass, bad input."""

import io
import pickle

import ml_dtypes
import numpy as np
import pytest

import fastopt
from fastopt import _core, optim, reference
from step_cases import CASES, RULES, call, case_id, make_buffers, stable_seed

BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
F32 = np.dtype(np.float32)

# (name, param, grad, state, param_copy): the modes users run
MODES = [
    ("bfloat16", BF16, BF16, BF16, None),
    ("float16", F16, F16, F16, None),
    ("master-bfloat16", F32, BF16, F32, BF16),
    ("master-float16", F32, F16, F32, F16),
    ("bfloat16-float32-state", BF16, BF16, F32, None),
    ("float32-float16-state", F32, F32, F16, None),
    ("mixed", F16, BF16, BF16, BF16),
]
MODE_IDS = [m[0] for m in MODES]


def bits(a):
    return a.view(np.uint16) if a.dtype.itemsize == 2 else a.view(np.uint32 if a.dtype.itemsize == 4 else np.uint64)


def same_bits(a, b):
    """Bit for bit, but a NaN's sign and payload, which IEEE arithmetic leaves to the machine."""
    nan_a, nan_b = np.isnan(a.astype(np.float64)), np.isnan(b.astype(np.float64))
    return a.dtype == b.dtype and np.array_equal(nan_a, nan_b) and np.array_equal(bits(a)[~nan_a], bits(b)[~nan_b])


def assert_same_bits(got, want):
    for key in want:
        g, w = got[key], want[key]
        for a, b in zip(g if isinstance(g, list) else [g], w if isinstance(w, list) else [w]):
            assert same_bits(a, b), f"{key}: not bit-identical"


def mixed_buffers(name, hypers, shape, mode, rng):
    """Buffers of the step as make_buffers draws them (float64), cast to the mode's dtypes."""
    _, param, grad, state, copy = mode
    drawn = make_buffers(name, hypers, shape, np.float64, rng)
    out = {}
    for key, value in drawn.items():
        dtype = param if key == "param" else grad if key == "grad" else state
        out[key] = value.astype(dtype)
    if copy is not None:
        out["param_copy"] = np.zeros(shape, copy)
    return out


def copy_all(buffers):
    return {k: (v.copy() if isinstance(v, np.ndarray) else [a.copy() for a in v]) for k, v in buffers.items()}


def step(module, name, buffers, hypers, t, **extra):
    extra = dict(extra)
    if "param_copy" in buffers:
        extra["param_copy"] = buffers["param_copy"]
    call(module, name, {k: v for k, v in buffers.items() if k != "param_copy"}, hypers, step=t, **extra)


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("shape", [(0,), (7,), (1023,), (3, 5)], ids=str)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_every_rule_in_every_mode_matches_the_reference(case, shape, mode):
    name, i = case
    hypers = RULES[name]["hypers"][i]
    fused = mixed_buffers(name, hypers, shape, mode, np.random.default_rng(stable_seed(name, i, shape)))
    twin = copy_all(fused)
    for t in (1, 2, 3):
        step(fastopt, name, fused, hypers, t)
        with np.errstate(all="ignore"):
            step(reference, name, twin, hypers, t)
    assert_same_bits(fused, twin)


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("name", ["adam_step", "sgd_momentum_step", "rmsprop_step", "lion_step"])
def test_threads_simd_levels_and_list_calls_give_the_same_bits(name, mode):
    hypers = RULES[name]["hypers"][-1]
    rng = np.random.default_rng(stable_seed(name, mode[0]))
    shapes = [(300_007,), (5,), (0,), (40_001,)]
    start = [mixed_buffers(name, hypers, s, mode, rng) for s in shapes]
    results = []
    for level in [lv for lv, ok in _core.simd_levels().items() if ok]:
        _core.set_simd_level(level)
        try:
            for threads in (1, 2, 3):
                lists = {k: [copy_all(b)[k] for b in start] for k in start[0]}
                step(fastopt, name, lists, hypers, 2, num_threads=threads)
                results.append(lists)
        finally:
            _core.set_simd_level(None)
    per_tensor = [copy_all(b) for b in start]
    for b in per_tensor:
        step(fastopt, name, b, hypers, 2, num_threads=1)
    twin = {k: [copy_all(b)[k] for b in start] for k in start[0]}
    with np.errstate(all="ignore"):
        step(reference, name, twin, hypers, 2)
    for other in results[1:] + [twin, {k: [b[k] for b in per_tensor] for k in per_tensor[0]}]:
        assert_same_bits(other, results[0])


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("name", fastopt.rules.PASS_FUNCTIONS)
def test_every_pass_in_every_mode_matches_the_reference(name, mode):
    label, param, _, state, copy = mode
    rng = np.random.default_rng(stable_seed(name, label))
    shapes = [(40_001,), (7,), (0,), (3, 5)]
    fused = {"param": [rng.standard_normal(s).astype(param) for s in shapes],
             "z": [rng.standard_normal(s).astype(state) for s in shapes],
             "param_copy": None if copy is None else [np.zeros(s, copy) for s in shapes]}
    twin = copy_all({k: v for k, v in fused.items() if v is not None})
    twin.setdefault("param_copy", None)
    for module, buffers in ((fastopt, fused), (reference, twin)):
        getattr(module, name)(buffers["param"], buffers["z"], param_copy=buffers["param_copy"], beta1=0.8)
    assert_same_bits({k: v for k, v in fused.items() if v is not None},
                     {k: v for k, v in twin.items() if v is not None})


# --------------------------------------------------------------------------
# the conversions themselves, against NumPy's and ml_dtypes'

def every_16_bit_pattern(dtype):
    return np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(dtype)


@pytest.mark.parametrize("dtype", [BF16, F16], ids=str)
def test_every_16_bit_value_widens_exactly(dtype):
    """A 16-bit gradient's every pattern, read by the kernel, equals ml_dtypes' / NumPy's float32."""
    grad = every_16_bit_pattern(dtype)
    param = np.zeros(grad.size, np.float32)
    fastopt.sgd_step(param, grad, lr=1.0, maximize=True)  # 0 - 1*(-g): the gradient, exactly
    twin = np.zeros(grad.size, np.float32)
    with np.errstate(invalid="ignore"):
        reference.sgd_step(twin, grad, lr=1.0, maximize=True)
    assert same_bits(param, twin)
    finite = np.isfinite(grad.astype(np.float32))
    assert np.array_equal(param[finite], grad.astype(np.float32)[finite])


@pytest.mark.parametrize("dtype", [BF16, F16], ids=str)
def test_float32_values_round_to_nearest_even_as_numpy_and_ml_dtypes_do(dtype):
    """Random float32 bit patterns (NaN, Inf, subnormals, ties included), written through
    param_copy, equal astype(dtype) bit for bit."""
    rng = np.random.default_rng(0)
    patterns = rng.integers(0, 2**32, 400_000, dtype=np.uint64).astype(np.uint32)
    ties = (rng.integers(0, 2**16, 20_000, dtype=np.uint32) << 16) | np.uint32(0x8000)  # bfloat16 ties
    f16_ties = ((rng.integers(0, 2**19, 20_000, dtype=np.uint32) << 13) | np.uint32(0x1000))
    values = np.concatenate([patterns, ties, f16_ties]).view(np.float32)
    master = values.copy()
    copy = np.empty(values.size, dtype)
    fastopt.sgd_step(master, np.zeros_like(master), lr=0.0, param_copy=copy)
    assert np.array_equal(np.isnan(master), np.isnan(values))  # (a signaling NaN comes out quiet)
    with np.errstate(invalid="ignore", over="ignore"):
        expected = master.astype(dtype)  # the stepped value, exactly the old one but for NaN quieting
    assert np.array_equal(bits(copy), bits(expected))


# --------------------------------------------------------------------------
# stochastic rounding

def sr_run(dtype, seed, threads, level=None, lists=False):
    rng = np.random.default_rng(11)
    shapes = [(150_001,), (77,), (60_000,)]
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    moments = [np.zeros(s, np.float32) for s in shapes]
    if level is not None:
        _core.set_simd_level(level)
    try:
        for t in (1, 2):
            if lists:
                fastopt.adam_step(params, grads, moments, [m.copy() for m in moments], step=t, lr=1e-3,
                                  stochastic_rounding=True, seed=seed, num_threads=threads)
            else:
                for p, g, m in zip(params, grads, moments):
                    fastopt.adam_step(p, g, m, np.zeros_like(m), step=t, lr=1e-3, stochastic_rounding=True,
                                      seed=seed, num_threads=threads)
    finally:
        _core.set_simd_level(None)
    return params


@pytest.mark.parametrize("dtype", [BF16, F16], ids=str)
def test_stochastic_rounding_is_reproducible_for_any_threads_simd_level_and_list_call(dtype):
    first = sr_run(dtype, 5, 1)
    runs = [sr_run(dtype, 5, threads) for threads in (2, 3)]
    runs += [sr_run(dtype, 5, 2, level) for level, ok in _core.simd_levels().items() if ok]
    for run in runs:
        assert all(same_bits(a, b) for a, b in zip(run, first))
    other_seed = sr_run(dtype, 6, 1)
    assert not all(np.array_equal(bits(a), bits(b)) for a, b in zip(other_seed, first))


@pytest.mark.parametrize("dtype", [BF16, F16], ids=str)
def test_stochastic_rounding_equals_the_reference(dtype):
    rng = np.random.default_rng(3)
    scale = np.exp(rng.uniform(-22, 11, 50_000))  # float16 subnormals to near its largest value
    with np.errstate(over="ignore"):
        p = (rng.standard_normal(50_000) * scale).astype(np.float32).astype(dtype)
    g, v = rng.standard_normal(50_000).astype(np.float32), np.zeros(50_000, np.float32)
    twin_p, twin_v = p.copy(), v.copy()
    for seed in (0, 1, 2**62):
        fastopt.momentum_step(p, g, v, lr=1e-4, stochastic_rounding=True, seed=seed)
        with np.errstate(all="ignore"):
            reference.momentum_step(twin_p, g, twin_v, lr=1e-4, stochastic_rounding=True, seed=seed)
    assert same_bits(p, twin_p)


@pytest.mark.parametrize("dtype", [BF16, F16], ids=str)
def test_stochastic_rounding_is_unbiased(dtype):
    """Rounding one value many times averages to it: a step that rounds away under round-to-nearest."""
    lo = np.float32(1.0)
    gap = np.float32(2.0**-7 if dtype == BF16 else 2.0**-10)
    x = np.full(400_000, lo + gap * np.float32(0.3), np.float32)
    key = reference._stochastic_key(9, 0)
    rounded = reference.round_stochastically(x, dtype, key).astype(np.float64)
    assert set(np.unique(rounded)) == {float(lo), float(lo + gap)}
    fraction_up = np.mean(rounded > lo)
    assert abs(fraction_up - 0.3) < 0.005  # 400,000 draws: a few standard deviations (0.0007)


# --------------------------------------------------------------------------
# the norm pass on 16-bit gradients

@pytest.mark.parametrize("dtype", [BF16, F16], ids=str)
@pytest.mark.parametrize("norm_type", [1.0, 2.0, np.inf, 3.0])
def test_norm_of_16_bit_gradients_is_the_norm_of_their_float32_values(dtype, norm_type):
    rng = np.random.default_rng(4)
    grads = [rng.standard_normal(s).astype(dtype) for s in [(70_001,), (13,), (0,)]]
    widened = [g.astype(np.float32) for g in grads]
    assert fastopt.clip.get_total_norm(grads, norm_type) == fastopt.clip.get_total_norm(widened, norm_type)
    assert _core.all_finite(grads)
    grads[1][3] = np.inf
    assert not _core.all_finite(grads)


# --------------------------------------------------------------------------
# bad input: a clear error, nothing written

def _adam(dtypes, copy=None, **options):
    arrays = [np.ones(8, d) for d in dtypes]
    snapshot = [a.copy() for a in arrays] + ([copy.copy()] if copy is not None else [])
    return arrays, snapshot, dict(options, step=1, param_copy=copy)


@pytest.mark.parametrize("dtypes, copy, options, error, match", [
    ((np.float64, BF16, np.float64, np.float64), None, {}, TypeError, "float64 goes only with float64"),
    ((np.float32, np.float64, F32, F32), None, {}, TypeError, "float64 goes only with float64"),
    ((F32, BF16, F32, F32), np.ones(8, np.float32), {}, TypeError, "param_copy .* bfloat16 or float16"),
    ((F32, BF16, F32, F32), np.ones(9, BF16), {}, ValueError, "param_copy has shape"),
    ((np.float64,) * 4, np.ones(8, BF16), {}, TypeError, "float64 goes only with float64"),
    ((F32, BF16, F32, F32), None, dict(stochastic_rounding=True), ValueError,
     "stochastic_rounding=True rounds a 16-bit param"),
    ((BF16,) * 4, None, dict(stochastic_rounding="yes"), TypeError, "stochastic_rounding must be a bool"),
    ((BF16,) * 4, None, dict(stochastic_rounding=True, seed=-1), ValueError, "seed must be an integer"),
    ((BF16,) * 4, None, dict(seed=2**64), ValueError, "seed must be an integer"),
    ((np.uint16, BF16, BF16, BF16), None, {}, TypeError, "param must have dtype float32, float64, bfloat16"),
])
def test_bad_mixed_precision_input(dtypes, copy, options, error, match):
    arrays, snapshot, kwargs = _adam(dtypes, copy, **options)
    with pytest.raises(error, match=match):
        fastopt.adam_step(*arrays, **kwargs)
    for a, b in zip(arrays + ([copy] if copy is not None else []), snapshot):
        assert a.tobytes() == b.tobytes()


def test_a_param_copy_overlapping_the_param_is_refused():
    raw = np.zeros(16, np.float32)
    param = raw[:8]
    copy = raw[8:].view(BF16)[:8]  # bytes 32..47 of raw: inside it, not the param
    fastopt.sgd_step(param, np.ones(8, BF16), lr=0.5, param_copy=copy)  # adjacent: fine
    with pytest.raises(ValueError, match="overlap in memory"):
        fastopt.sgd_step(param, np.ones(8, BF16), lr=0.5, param_copy=raw[:4].view(BF16))


# --------------------------------------------------------------------------
# the training API

def _model(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32).astype(dtype) for s in [(40_001,), (9, 3)]]


def _grads(dtype, steps=6, seed=1):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s).astype(np.float32).astype(dtype) for s in [(40_001,), (9, 3)]]
            for _ in range(steps)]


@pytest.mark.parametrize("kind", ["Adam", "SGD", "Lion", "RMSprop"])
@pytest.mark.parametrize("dtype", [BF16, F16], ids=str)
def test_master_weights_step_float32_and_write_the_param_rounded(kind, dtype):
    kwargs = dict(lr=1e-2, momentum=0.9) if kind == "SGD" else dict(lr=1e-2)
    opt = getattr(optim, kind)(_model(dtype), **kwargs, master_weights=True, state_dtype="float32")
    assert all(m.dtype == np.float32 for m in opt.state[0]["master"])
    masters = [p.astype(np.float32) for p in _model(dtype)]
    plain = getattr(optim, kind)(masters, **kwargs)  # the float32 run the masters follow
    for grads in _grads(dtype):
        opt.step(grads)
        plain.step([g.astype(np.float32) for g in grads])
    for master, param, twin in zip(opt.state[0]["master"], opt.params, plain.params):
        assert np.array_equal(master, twin)
        assert np.array_equal(bits(param), bits(twin.astype(dtype)))


@pytest.mark.parametrize("dtype", [BF16, F16], ids=str)
def test_schedule_free_master_weights_switch_the_masters_and_write_the_params_rounded(dtype):
    opt = optim.ScheduleFreeAdamW(_model(dtype), lr=1e-2, master_weights=True, state_dtype="float32")
    plain = optim.ScheduleFreeAdamW([p.astype(np.float32) for p in _model(dtype)], lr=1e-2)
    for o in (opt, plain):
        o.train()
    for k, grads in enumerate(_grads(dtype)):
        opt.step(grads)
        plain.step([g.astype(np.float32) for g in grads])
        if k % 2:  # evaluate at x, then back to y
            opt.eval()
            plain.eval()
            for param, twin in zip(opt.params, plain.params):
                assert np.array_equal(bits(param), bits(twin.astype(dtype)))
            opt.train()
            plain.train()
    for master, param, twin in zip(opt.state[0]["master"], opt.params, plain.params):
        assert np.array_equal(master, twin)
        assert np.array_equal(bits(param), bits(twin.astype(dtype)))


@pytest.mark.parametrize("options", [dict(), dict(state_dtype="float32"), dict(master_weights=True),
                                     dict(stochastic_rounding=True, seed=3)],
                         ids=["in-dtype", "float32-state", "master", "stochastic"])
def test_16_bit_optimizers_resume_bit_identically(options):
    def build(params):
        return optim.AdamW(params, lr=1e-2, **options)

    grads_seq = _grads(BF16)
    whole = build(_model(BF16))
    for grads in grads_seq:
        whole.step(grads)
    first = build(_model(BF16))
    for grads in grads_seq[:3]:
        first.step(grads)
    for save in (lambda d: pickle.loads(pickle.dumps(d)), _through_npz):
        resumed = build([p.copy() for p in first.params])
        resumed.load_state_dict(save(first.state_dict()))
        for grads in grads_seq[3:]:
            resumed.step(grads)
        for a, b in zip(resumed.params, whole.params):
            assert np.array_equal(bits(a), bits(b))


def _through_npz(state_dict):
    buffer = io.BytesIO()
    np.savez(buffer, **state_dict)
    buffer.seek(0)
    return dict(np.load(buffer))


def test_state_dtype_sets_the_state_buffers_dtype():
    opt = optim.Adam(_model(BF16), state_dtype="float16")
    assert {b.dtype for b in opt.state[0]["exp_avg"] + opt.state[0]["exp_avg_sq"]} == {F16}
    assert {b.dtype for b in optim.Adam(_model(BF16)).state[0]["exp_avg"]} == {BF16}
    assert {b.dtype for b in optim.Adam(_model(BF16), master_weights=True).state[0]["exp_avg"]} == {F32}


@pytest.mark.parametrize("build, error", [
    (lambda: optim.Adam(_model(np.float64), state_dtype="float32"), TypeError),
    (lambda: optim.Adam(_model(BF16), state_dtype="int8"), ValueError),
    (lambda: optim.Adam(_model(np.float32), stochastic_rounding=True), ValueError),
    (lambda: optim.Adam(_model(BF16), stochastic_rounding=True, master_weights=True), ValueError),
    (lambda: optim.Adam(_model(BF16), master_weights="yes"), TypeError),
    (lambda: optim.Adam(_model(BF16), stochastic_rounding=True, seed=-1), ValueError),
])
def test_bad_mixed_precision_options(build, error):
    with pytest.raises(error):
        build()


# --------------------------------------------------------------------------
# float16 conversions: hardware (F16C, AVX-512F) where the level has it, integer
# arithmetic at baseline; both must give every value's bits

def _every_level():
    return [lv for lv, ok in _core.simd_levels().items() if ok]


def test_every_float16_value_loads_and_stores_unchanged_at_every_simd_level():
    # p - 0·g = p: each of the 65536 float16 patterns is widened and rounded back
    everything = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(F16)
    grad = np.ones_like(everything)
    nan = np.isnan(everything)
    results = []
    for level in _every_level():
        _core.set_simd_level(level)
        try:
            param = everything.copy()
            fastopt.sgd_step(param, grad, lr=0.0)
        finally:
            _core.set_simd_level(None)
        assert np.array_equal(bits(param)[~nan], bits(everything)[~nan]), level
        assert np.isnan(param[nan]).all() and np.array_equal(np.signbit(param[nan]), np.signbit(everything[nan]))
        results.append(bits(param))
    # NaNs too: the arithmetic quiets a signaling NaN the same way at every level
    for other in results[1:]:
        assert np.array_equal(other, results[0])


def test_float32_rounds_to_float16_as_numpy_at_every_simd_level():
    # master weights: param_copy is the float32 param rounded to nearest even, subnormals,
    # overflow to Inf and NaN included, at every level as NumPy rounds it
    rng = np.random.default_rng(5)
    drawn = rng.integers(0, 2**32, 1 << 18, dtype=np.uint64).astype(np.uint32)
    edges = np.array([0x477FEFFF, 0x477FF000, 0x477FE000, 0x38800000, 0x387FFFFF, 0x33000000, 0x33000001,
                      0x7F800000, 0xFF800000, 0x7F800001, 0x7FC00000, 0xFF800001, 0x00000001, 0x80000000],
                     np.uint32)
    values = np.concatenate([drawn, edges]).view(F32)
    grad = np.zeros(values.shape, F16)
    with np.errstate(over="ignore"):
        want = values.astype(F16)
    for level in _every_level():
        _core.set_simd_level(level)
        try:
            param, copy = values.copy(), np.zeros(values.shape, F16)
            with np.errstate(all="ignore"):
                fastopt.sgd_step(param, grad, lr=0.0, param_copy=copy)
        finally:
            _core.set_simd_level(None)
        assert same_bits(copy, want), level


@pytest.mark.parametrize("mode", [m for m in MODES if F16 in m[1:4]], ids=lambda m: m[0])
def test_float16_specials_give_the_same_bits_at_every_simd_level(mode):
    # Inf, NaN (signaling ones too), subnormals and overflowing updates, spread so some
    # vectors hold a NaN and the rest do not
    _, param_dtype, grad_dtype, state_dtype, copy_dtype = mode
    rng = np.random.default_rng(3)
    n = 1000
    specials = np.array([0x7C00, 0xFC00, 0x7C01, 0xFE01, 0x7E00, 0x0001, 0x8001, 0x03FF, 0x7BFF, 0xFBFF],
                        np.uint16).view(F16)

    def drawn(dtype, scale):
        x = (rng.standard_normal(n) * scale).astype(np.float32)
        if dtype == F16:
            with np.errstate(over="ignore"):
                x = x.astype(F16)
            x[rng.choice(n, 40, replace=False)] = rng.choice(specials, 40)
        return x.astype(dtype) if dtype != F16 else x

    start = {"param": drawn(param_dtype, 1.0), "grad": drawn(grad_dtype, 3e4),
             "exp_avg": drawn(state_dtype, 1.0), "exp_avg_sq": np.abs(drawn(state_dtype, 1.0)),
             "max_exp_avg_sq": np.abs(drawn(state_dtype, 1.0))}
    if copy_dtype is not None:
        start["param_copy"] = np.zeros(n, copy_dtype)
    results = []
    for level in _every_level() + ["reference"]:
        b = copy_all(start)
        module = reference if level == "reference" else fastopt
        if level != "reference":
            _core.set_simd_level(level)
        try:
            with np.errstate(all="ignore"):
                for t in (1, 2):
                    module.adam_step(b["param"], b["grad"], b["exp_avg"], b["exp_avg_sq"],
                                     max_exp_avg_sq=b["max_exp_avg_sq"], param_copy=b.get("param_copy"),
                                     amsgrad=True, step=t, lr=1e-2)
        finally:
            _core.set_simd_level(None)
        results.append(b)
    for other in results[1:]:
        assert_same_bits(other, results[0])
