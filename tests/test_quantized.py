"""8-bit block-quantized state (fastopt.QuantizedState): the format, the kernels against their twin, the checks."""

import numpy as np
import pytest

import fastopt
from fastopt import _core, quantized, reference
from fastopt import rules as registry
from step_cases import CASES, RULES, call, case_id, make_buffers, stable_seed

BLOCK_SIZES = (64, 128, 256, 512, 1024, 2048, 4096)


def expected_value(code, signed):
    """A code's value as the format's documentation writes it, in Python floats."""
    if signed:
        sign = -1.0 if code & 0x80 else 1.0
        e, m = (code >> 4) & 7, code & 15
        return sign * (2.0 ** (e - 7) * (1 + m / 16) if e > 0 else m * 2.0 ** -10)
    e, m = code >> 3, code & 7
    return 2.0 ** (e - 31) * (1 + m / 8) if e > 0 else m * 2.0 ** -33


def kernel_decode(codes, signed):
    """The kernels' decoding of codes, with scale 1."""
    codes = np.asarray(codes, np.uint8)
    state = quantized.QuantizedState(codes.copy(), np.ones(-(-codes.size // 256), np.float32), 256, signed)
    return _core.dequantize(state)


def kernel_encode(y, signed):
    """The kernels' encoding of quotients y in [-1, 1]: blocks of 64 whose absmax is made exactly 1."""
    y = np.asarray(y, np.float32).reshape(-1)
    blocks = np.zeros((-(-y.size // 63), 64), np.float32)
    blocks[:, 0] = 1.0
    flat = blocks[:, 1:].reshape(-1)
    flat[:y.size] = y
    blocks[:, 1:] = flat.reshape(-1, 63)
    state = fastopt.quantize(blocks, signed=signed, block_size=64)
    assert np.all(state.scales == 1.0)
    return state.codes[:, 1:].reshape(-1)[:y.size]


def bits(x):
    return np.asarray(x, np.float32).view(np.uint32)


# --------------------------------------------------------------------------
# the format

@pytest.mark.parametrize("signed", [True, False])
def test_all_256_codes_decode_as_documented(signed):
    codes = np.arange(256, dtype=np.uint8)
    want = np.array([expected_value(int(c), signed) for c in codes], np.float64)
    assert np.array_equal(quantized.decode(codes, signed).astype(np.float64), want)
    assert np.array_equal(kernel_decode(codes, signed).astype(np.float64), want)
    assert np.array_equal(bits(quantized.decode(codes, signed)), bits(kernel_decode(codes, signed)))


def test_one_is_code_112_signed_and_248_unsigned():
    assert quantized.decode([112], True)[0] == 1.0 and quantized.decode([240], True)[0] == -1.0
    assert quantized.decode([248], False)[0] == 1.0
    assert kernel_encode([1.0, -1.0], True).tolist() == [112, 240]
    assert kernel_encode([1.0], False).tolist() == [248]
    # the smallest steps: 2^-10 signed, 2^-33 unsigned
    assert quantized.decode([1], True)[0] == 2.0 ** -10 and quantized.decode([1], False)[0] == 2.0 ** -33


def nearest_even(y, signed):
    """Round-to-nearest-even code of each y (float64 arithmetic is exact here), clamped to |y| <= 1."""
    codes = np.arange(256, dtype=np.uint8)
    values = np.array([expected_value(int(c), signed) for c in codes])
    usable = (np.abs(values) <= 1.0) & ~((values == 0) & (codes != 0))   # one zero (+0), in range
    if signed:
        usable &= values >= 0   # magnitudes; the sign is its own bit
    mags, mag_codes = values[usable], codes[usable]
    order = np.argsort(mags)
    mags, mag_codes = mags[order], mag_codes[order]
    a = np.minimum(np.abs(np.asarray(y, np.float64)), 1.0)
    hi = np.clip(np.searchsorted(mags, a), 1, len(mags) - 1)
    lo = hi - 1
    dlo, dhi = a - mags[lo], mags[hi] - a
    pick = np.where(dlo < dhi, lo, np.where(dhi < dlo, hi, np.where(mag_codes[lo] % 2 == 0, lo, hi)))
    out = mag_codes[pick].astype(np.uint8)
    if signed:
        out = out | np.where(np.signbit(np.asarray(y, np.float32)), np.uint8(0x80), np.uint8(0))
    return out


@pytest.mark.parametrize("signed", [True, False])
def test_encode_rounds_to_nearest_even_with_subnormals(signed):
    values = quantized.decode(np.arange(256, dtype=np.uint8), signed).astype(np.float64)
    mags = np.unique(np.abs(values[np.abs(values) <= 1]))
    mids = ((mags[1:] + mags[:-1]) / 2).astype(np.float32)          # exact: the ties
    assert np.array_equal(mids.astype(np.float64), (mags[1:] + mags[:-1]) / 2)
    rng = np.random.default_rng(stable_seed("encode", signed))
    y = np.concatenate([
        mags.astype(np.float32), mids, np.nextafter(mids, np.float32(0)), np.nextafter(mids, np.float32(2)),
        rng.uniform(0, 1, 20000).astype(np.float32),
        np.exp(rng.uniform(np.log(1e-38), 0, 20000)).astype(np.float32),   # subnormal codes and below
        np.array([0.0, 1e-45, 1.0], np.float32)])
    if signed:
        y = np.concatenate([y, -y])
    want = nearest_even(y, signed)
    assert np.array_equal(quantized.encode(y, signed), want)
    assert np.array_equal(kernel_encode(y, signed), want)


@pytest.mark.parametrize("signed", [True, False])
def test_encode_is_monotone_and_decode_inverts_it(signed):
    y = np.sort(np.random.default_rng(stable_seed("monotone", signed)).uniform(-1 if signed else 0, 1, 50000)
                ).astype(np.float32)
    decoded = quantized.decode(quantized.encode(y, signed), signed)
    assert np.all(np.diff(decoded) >= 0)
    codes = np.arange(256, dtype=np.uint8)
    values = quantized.decode(codes, signed)
    in_range = (np.abs(values) <= 1)
    assert np.array_equal(quantized.encode(values[in_range], signed), codes[in_range])


def test_above_one_and_nan_clamp_to_one():
    assert quantized.encode(np.array([1.5, np.inf, np.nan], np.float32), False).tolist() == [248] * 3
    # a NaN is its block's absmax: every quotient is NaN, clamped to 1
    state = fastopt.quantize(np.array([0.5, np.nan], np.float32), signed=False, block_size=64)
    assert state.codes.tolist() == [248, 248] and np.isnan(state.scales[0])


def awkward_values(n, signed, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * np.exp(rng.uniform(-40, 20, n))).astype(np.float32)
    x[: min(n, 300)] = 0.0                      # whole zero blocks
    x[min(n, 300):min(n, 310)] = 1e-42          # subnormal float32
    if n > 5000:
        x[5000] = -0.0
    return x if signed else np.abs(x)


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("block_size", BLOCK_SIZES)
@pytest.mark.parametrize("n", [1, 63, 4097, 10007])
def test_quantize_and_dequantize_equal_the_reference(signed, block_size, n):
    x = awkward_values(n, signed, stable_seed("quantize", signed, block_size, n))
    for level, supported in _core.simd_levels().items():
        if not supported:
            continue
        fastopt_level = _core.get_simd_level()
        _core.set_simd_level(level)
        try:
            got = fastopt.quantize(x, signed=signed, block_size=block_size)
            back = _core.dequantize(got)
        finally:
            _core.set_simd_level(fastopt_level)
        want = reference.quantize(x, signed=signed, block_size=block_size)
        assert got.scales.shape == (-(-n // block_size),) and got.codes.shape == x.shape
        assert np.array_equal(got.codes, want.codes)
        assert np.array_equal(bits(got.scales), bits(want.scales))
        assert np.array_equal(bits(back), bits(want.dequantize()))
        assert np.array_equal(bits(back), bits(reference.dequantize(got)))
    nonzero = np.abs(x) > 0
    err = np.abs(want.dequantize() - x)
    scale = np.repeat(want.scales, block_size)[:n]
    # relative to the block's absmax: half a step of the coarsest codes (2^-5 signed, 2^-4 unsigned)
    assert np.all(err[nonzero] <= scale[nonzero] * (2.0 ** -5 if signed else 2.0 ** -4))
    assert np.all(want.dequantize()[~nonzero] == 0)


def test_an_all_zero_block_has_scale_zero_and_codes_zero():
    state = fastopt.quantize(np.zeros(1000, np.float32), signed=True, block_size=256)
    assert not state.codes.any() and not state.scales.any()
    assert np.all(state.dequantize() == 0)


def test_a_nan_makes_its_block_nan_and_only_it():
    x = np.ones(512, np.float32)
    x[3] = np.nan
    out = fastopt.quantize(x, signed=True, block_size=256).dequantize()
    assert np.all(np.isnan(out[:256])) and np.all(out[256:] == 1.0)


def test_quantized_zeros_and_repr():
    state = fastopt.quantized_zeros((3, 100), signed=False, block_size=128)
    assert state.codes.shape == (3, 100) and state.codes.dtype == np.uint8
    assert state.scales.shape == (3,) and state.scales.dtype == np.float32
    assert state.shape == (3, 100) and state.nbytes == 300 + 12 and not state.signed
    assert "format_version=1" in repr(state)
    assert quantized.FORMAT_VERSION == 1


@pytest.mark.parametrize("block_size, error", [(100, ValueError), (8192, ValueError), (32, ValueError),
                                               (256.0, TypeError), (True, TypeError)])
def test_bad_block_sizes_of_quantize(block_size, error):
    with pytest.raises(error, match="block_size"):
        fastopt.quantize(np.zeros(10, np.float32), block_size=block_size)
    with pytest.raises(error, match="block_size"):
        fastopt.quantized_zeros(10, block_size=block_size)


# --------------------------------------------------------------------------
# every rule with 8-bit state

def state_flags(rule_name):
    rule = registry.RULES[rule_name[:-len("_step")]]
    return {b.name: (b.quantizable, not b.nonnegative) for b in rule.state}


def quantize_state(name, buffers, block_size):
    """buffers with every quantizable state buffer as 8-bit state of the right signedness."""
    out = dict(buffers)
    flags = state_flags(name)
    for key, value in buffers.items():
        if key in flags and flags[key][0]:
            signed = flags[key][1]
            if isinstance(value, list):
                out[key] = [reference.quantize(v, signed=signed, block_size=block_size) for v in value]
            else:
                out[key] = reference.quantize(value, signed=signed, block_size=block_size)
    return out


def copy_all(buffers):
    def one(v):
        return v.copy()
    return {k: [one(a) for a in v] if isinstance(v, list) else one(v) for k, v in buffers.items()}


def flat_bits(value):
    """Everything a buffer holds, as bits: arrays, or a QuantizedState's codes and scales."""
    values = value if isinstance(value, list) else [value]
    parts = []
    for v in values:
        if isinstance(v, quantized.QuantizedState):
            parts += [v.codes.reshape(-1).astype(np.uint32), v.scales.view(np.uint32)]
        else:
            parts.append(np.ascontiguousarray(v, np.float32).reshape(-1).view(np.uint32))
    return np.concatenate(parts) if parts else np.zeros(0, np.uint32)


def assert_same(a, b, what):
    for key in a:
        x, y = flat_bits(a[key]), flat_bits(b[key])
        same = (x == y) | (((x & 0x7FFFFFFF) > 0x7F800000) & ((y & 0x7FFFFFFF) > 0x7F800000)
                           & (x > 255) & (y > 255))   # any NaN is a NaN
        assert same.all(), f"{what}: {key} differs at {np.flatnonzero(~same)[:5]}"


SHAPES = {"one tensor": [(300, 257)], "list": [(5,), (70001,), (64, 65), (1,)]}


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("block_size", [64, 256, 4096])
def test_every_rule_with_8_bit_state_matches_the_reference(case, block_size):
    name, i = case
    hypers = RULES[name]["hypers"][i]
    rng = np.random.default_rng(stable_seed("rule", name, i, block_size))
    shapes = SHAPES["list"]
    tensors = [make_buffers(name, hypers, s, np.float32, rng) for s in shapes]
    listed = {k: [t[k] for t in tensors] for k in tensors[0]}
    start = quantize_state(name, listed, block_size)
    runs = {}
    for label, threads, per_tensor in [("1 thread", 1, False), ("2 threads", 2, False),
                                       ("per tensor", 2, True), ("reference", None, False)]:
        b = copy_all(start)
        for t in range(1, 4):
            grads = [rng_grad.copy() for rng_grad in
                     [np.random.default_rng(stable_seed("grad", name, i, t, j)).standard_normal(s).astype(np.float32)
                      for j, s in enumerate(shapes)]]
            b["grad"] = grads
            if label == "reference":
                call(reference, name, b, hypers, step=t)
            elif per_tensor:
                for j in range(len(shapes)):
                    call(fastopt, name, {k: v[j] for k, v in b.items()}, hypers, step=t, num_threads=threads)
            else:
                call(fastopt, name, b, hypers, step=t, num_threads=threads)
        runs[label] = b
    for label in ("1 thread", "2 threads", "per tensor"):
        assert_same(runs[label], runs["reference"], f"{name} {hypers} {label}")


@pytest.mark.parametrize("name", ["adam_step", "adamw_step", "sgd_momentum_step", "momentum_step",
                                  "rmsprop_step", "lion_step"])
def test_a_large_tensor_on_several_threads_and_simd_levels_gives_the_reference_bits(name):
    hypers = RULES[name]["hypers"][0]
    rng = np.random.default_rng(stable_seed("large", name))
    start = quantize_state(name, make_buffers(name, hypers, (1 << 20) + 333, np.float32, rng), 256)
    grad = rng.standard_normal((1 << 20) + 333).astype(np.float32)
    want = copy_all(start)
    want["grad"] = grad
    call(reference, name, want, hypers, step=2)
    level = _core.get_simd_level()
    try:
        for simd, supported in _core.simd_levels().items():
            if not supported:
                continue
            _core.set_simd_level(simd)
            for threads in (1, 2, 3, 4):
                got = copy_all(start)
                got["grad"] = grad
                call(fastopt, name, got, hypers, step=2, num_threads=threads)
                assert_same(got, want, f"{name} {simd} {threads} threads")
    finally:
        _core.set_simd_level(level)


def test_16_bit_params_with_8_bit_state_match_the_reference():
    import ml_dtypes

    rng = np.random.default_rng(stable_seed("bf16 q8"))
    p = rng.standard_normal(5000).astype(ml_dtypes.bfloat16)
    g = rng.standard_normal(5000).astype(ml_dtypes.bfloat16)
    m = fastopt.quantized_zeros(5000, signed=True)
    v = fastopt.quantized_zeros(5000, signed=False)
    p2, m2, v2 = p.copy(), m.copy(), v.copy()
    fastopt.adam_step(p, g, m, v, step=1, lr=1e-2)
    reference.adam_step(p2, g, m2, v2, step=1, lr=1e-2)
    assert np.array_equal(p.view(np.uint16), p2.view(np.uint16))
    assert np.array_equal(m.codes, m2.codes) and np.array_equal(v.scales, v2.scales)


def test_8_bit_adam_follows_float32_adam():
    """A sanity check of the format's use: 200 steps of 8-bit Adam on a quadratic stay near float32 Adam's."""
    rng = np.random.default_rng(stable_seed("follow"))
    target = rng.standard_normal(20000).astype(np.float32)
    p32 = np.zeros(20000, np.float32)
    p8 = p32.copy()
    m32, v32 = np.zeros_like(p32), np.zeros_like(p32)
    m8, v8 = fastopt.quantized_zeros(20000, signed=True), fastopt.quantized_zeros(20000, signed=False)
    for t in range(1, 201):
        fastopt.adam_step(p32, p32 - target, m32, v32, step=t, lr=1e-2)
        fastopt.adam_step(p8, p8 - target, m8, v8, step=t, lr=1e-2)
    assert np.all(np.isfinite(p8))
    loss0, loss32, loss8 = (float(np.mean((x - target) ** 2)) for x in (np.zeros(1), p32, p8))
    assert loss8 < 0.5 * loss0 and abs(loss8 - loss32) < 0.05 * loss0


# --------------------------------------------------------------------------
# bad input: a clear error, nothing written

def adam_buffers(n=1000, block_size=256):
    rng = np.random.default_rng(7)
    p = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    m = fastopt.quantize(rng.standard_normal(n), signed=True, block_size=block_size)
    v = fastopt.quantize(np.abs(rng.standard_normal(n)), signed=False, block_size=block_size)
    return p, g, m, v


def _with(state, **fields):
    out = state.copy()
    for k, value in fields.items():
        setattr(out, k, value)
    return out


def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


BAD = {
    "block size 100": (lambda p, g, m, v: (p, g, _with(m, block_size=100), v), ValueError,
                       r"exp_avg\.block_size must be a power of two in \[64, 4096\]; got 100"),
    "block size 8192": (lambda p, g, m, v: (p, g, _with(m, block_size=8192), v), ValueError, "got 8192"),
    "block size 32": (lambda p, g, m, v: (p, g, _with(m, block_size=32), v), ValueError, "got 32"),
    "block size float": (lambda p, g, m, v: (p, g, _with(m, block_size=256.0), v), TypeError,
                         r"exp_avg\.block_size must be an int"),
    "wrong shape": (lambda p, g, m, v: (p, g, _with(m, codes=m.codes.reshape(10, 100)), v), ValueError,
                    r"exp_avg has shape \(10, 100\), but param has shape \(1000,\)"),
    "signed codes in an unsigned slot": (lambda p, g, m, v: (p, g, m, _with(v, signed=True)), ValueError,
                                         "exp_avg_sq holds nonnegative state and takes unsigned codes"),
    "unsigned codes in a signed slot": (lambda p, g, m, v: (p, g, _with(m, signed=False), v), ValueError,
                                        "exp_avg changes sign and takes signed codes"),
    "non-contiguous codes": (lambda p, g, m, v: (p, g, _with(m, codes=np.zeros(2000, np.uint8)[::2]), v),
                             ValueError, r"exp_avg\.codes must be C-contiguous"),
    "non-contiguous scales": (lambda p, g, m, v: (p, g, _with(m, scales=np.zeros(8, np.float32)[::2]), v),
                              ValueError, r"exp_avg\.scales must be contiguous"),
    "read-only codes": (lambda p, g, m, v: (p, g, _with(m, codes=_read_only(m.codes)), v), ValueError,
                        r"exp_avg\.codes is updated in place and must be writeable"),
    "read-only scales": (lambda p, g, m, v: (p, g, m, _with(v, scales=_read_only(v.scales))), ValueError,
                         r"exp_avg_sq\.scales is updated in place and must be writeable"),
    "wrong scales length": (lambda p, g, m, v: (p, g, _with(m, scales=np.zeros(5, np.float32)), v), ValueError,
                            r"exp_avg\.scales must have shape \(4,\), one per block of 256 elements; got shape \(5,\)"),
    "float64 scales": (lambda p, g, m, v: (p, g, _with(m, scales=np.zeros(4)), v), TypeError,
                       r"exp_avg\.scales must be a numpy.ndarray of native float32"),
    "int8 codes": (lambda p, g, m, v: (p, g, _with(m, codes=m.codes.view(np.int8)), v), TypeError,
                   r"exp_avg\.codes must be a numpy.ndarray of uint8"),
    "float64 param": (lambda p, g, m, v: (p.astype(np.float64), g.astype(np.float64), m, v), TypeError,
                      "exp_avg is 8-bit quantized state, but param is float64"),
    "quantized grad": (lambda p, g, m, v: (p, fastopt.quantize(g), m, v), TypeError,
                       "grad must be a numpy.ndarray"),
    "quantized param": (lambda p, g, m, v: (fastopt.quantize(p), g, m, v), TypeError,
                        "param must be a numpy.ndarray"),
    "codes overlap the param": (lambda p, g, m, v: (p, g, _with(m, codes=p.view(np.uint8)[:1000]), v),
                                ValueError, r"param and exp_avg\.codes overlap in memory"),
    "two states share scales": (lambda p, g, m, v: (p, g, m, _with(v, scales=m.scales)), ValueError,
                                r"exp_avg\.scales and exp_avg_sq\.scales overlap in memory"),
    "Fortran-ordered param": (lambda p, g, m, v: (np.asfortranarray(p.reshape(10, 100)),
                                                  np.asfortranarray(g.reshape(10, 100)),
                                                  _with(m, codes=m.codes.reshape(10, 100)),
                                                  _with(v, codes=v.codes.reshape(10, 100))), ValueError,
                              "param must be C-contiguous"),
}


@pytest.mark.parametrize("what", sorted(BAD))
def test_bad_8_bit_state_is_a_clear_error_and_nothing_is_written(what):
    make, error, match = BAD[what]
    p, g, m, v = make(*adam_buffers())
    before = [flat_bits(x).copy() if not isinstance(x, np.ndarray) or x.dtype != np.float64 else x.copy()
              for x in (p, g, m, v)]
    with pytest.raises(error, match=match):
        fastopt.adam_step(p, g, m, v, step=1, lr=1e-3)
    after = [flat_bits(x) if not isinstance(x, np.ndarray) or x.dtype != np.float64 else x for x in (p, g, m, v)]
    for b, a in zip(before, after):
        assert np.array_equal(b, a)


def test_a_bad_tensor_in_a_list_writes_none_of_them():
    p, g, m, v = adam_buffers()
    p2, g2, m2, v2 = adam_buffers()
    bad_v2 = _with(v2, signed=True)
    before = [flat_bits(x).copy() for x in (p, m, v, p2, m2)]
    with pytest.raises(ValueError, match=r"exp_avg_sq\[1\] holds nonnegative state"):
        fastopt.adam_step([p, p2], [g, g2], [m, m2], [v, bad_v2], step=1)
    for b, x in zip(before, (p, m, v, p2, m2)):
        assert np.array_equal(b, flat_bits(x))


def test_schedule_free_z_cannot_be_quantized():
    p, g, m, v = adam_buffers()
    with pytest.raises(TypeError, match="z must be a numpy.ndarray.*not for z"):
        fastopt.schedule_free_adamw_step(p, g, m, v, step=1, average_weight=0.1)


# --------------------------------------------------------------------------
# fastopt.optim with state_dtype="8bit"

def model(rng, sizes=((64, 100), (5000,), (10,), (3, 4096))):
    return [rng.standard_normal(s).astype(np.float32) for s in sizes]


OPTIMIZERS = [("Adam", {}), ("AdamW", {"amsgrad": True}), ("SGD", {"momentum": 0.9}), ("Momentum", {}),
              ("RMSprop", {"momentum": 0.9, "centered": True}), ("Lion", {}), ("Adagrad", {}),
              ("Adamax", {}), ("NAdam", {}), ("RAdam", {})]


@pytest.mark.parametrize("name, options", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_8_bit_optimizers_quantize_large_tensors_and_match_the_reference_backend(name, options):
    rng = np.random.default_rng(stable_seed("optim", name))
    params = model(rng)
    twin = [p.copy() for p in params]
    cls = getattr(fastopt.optim, name)
    opt = cls(params, **options, state_dtype="8bit", block_size=128)
    ref = cls(twin, **options, state_dtype="8bit", block_size=128, backend="reference")
    for _ in range(4):
        grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
        opt.step(grads)
        ref.step(grads)
    for p, q in zip(params, twin):
        assert np.array_equal(p, q)
    for name_, buffers in opt.state[0].items():
        if not isinstance(buffers, list):   # the step count, a group's scalars
            continue
        for p, buffer in zip(params, buffers):
            assert isinstance(buffer, quantized.QuantizedState) == (p.size >= 4096)
            if isinstance(buffer, quantized.QuantizedState):
                assert buffer.block_size == 128


def test_8_bit_state_takes_about_2_bytes_per_param_for_adam():
    params = [np.zeros(1 << 20, np.float32)]
    opt = fastopt.optim.Adam(params, state_dtype="8bit")
    state_bytes = sum(b.nbytes for name, bs in opt.state[0].items() if name != "step" for b in bs)
    assert state_bytes / params[0].size == 2 + 2 * 4 / 256   # 2.03125 <= 2.05


@pytest.mark.parametrize("name, options", OPTIMIZERS[:6], ids=[o[0] for o in OPTIMIZERS[:6]])
def test_8_bit_optimizers_resume_bit_identically(name, options, tmp_path):
    rng = np.random.default_rng(stable_seed("resume", name))
    params = model(rng)
    grads = [[rng.standard_normal(p.shape).astype(np.float32) for p in params] for _ in range(6)]
    cls = getattr(fastopt.optim, name)
    straight = [p.copy() for p in params]
    opt = cls(straight, **options, state_dtype="8bit")
    for g in grads:
        opt.step(g)
    resumed = [p.copy() for p in params]
    first = cls(resumed, **options, state_dtype="8bit")
    for g in grads[:3]:
        first.step(g)
    np.savez(tmp_path / "ckpt.npz", **first.state_dict())
    copy = [p.copy() for p in resumed]
    second = cls(copy, **options, state_dtype="8bit")
    second.load_state_dict(np.load(tmp_path / "ckpt.npz"))
    for g in grads[3:]:
        second.step(g)
    for p, q in zip(straight, copy):
        assert np.array_equal(p, q)
    saved = first.state_dict()
    assert saved["quantized_format"] == quantized.FORMAT_VERSION
    assert any(k.endswith(".codes") for k in saved) and any(k.endswith(".block_size") for k in saved)


def test_a_checkpoint_of_another_format_version_is_a_clear_error():
    params = model(np.random.default_rng(3))
    opt = fastopt.optim.Adam(params, state_dtype="8bit")
    opt.step([np.ones_like(p) for p in params])
    saved = opt.state_dict()
    saved["quantized_format"] = 2
    before = [b.codes.copy() for b in opt.state[0]["exp_avg"] if isinstance(b, quantized.QuantizedState)]
    with pytest.raises(ValueError, match="8-bit state of format version 2; this version of fastopt reads "
                                         "format version 1"):
        opt.load_state_dict(saved)
    after = [b.codes for b in opt.state[0]["exp_avg"] if isinstance(b, quantized.QuantizedState)]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("change, match", [
    (lambda d: d.pop("quantized_format"), "no 'quantized_format'"),
    (lambda d: d.__setitem__("state.0.exp_avg.0.block_size", 512), "has block_size 512; the optimizer's is 256"),
    (lambda d: d.__setitem__("state.0.exp_avg.0.signed", False), "has signed=False; its buffer takes signed=True"),
    (lambda d: d.__setitem__("state.0.exp_avg.0.scales", np.zeros(3, np.float32)), r"must be float32\[25\]"),
])
def test_bad_8_bit_checkpoints_are_clear_errors(change, match):
    params = model(np.random.default_rng(4))
    opt = fastopt.optim.Adam(params, state_dtype="8bit")
    saved = opt.state_dict()
    change(saved)
    with pytest.raises(ValueError, match=match):
        fastopt.optim.Adam([p.copy() for p in params], state_dtype="8bit").load_state_dict(saved)


def test_a_float_checkpoint_does_not_load_into_8_bit_state():
    params = model(np.random.default_rng(5))
    saved = fastopt.optim.Adam(params).state_dict()
    with pytest.raises(ValueError, match="state_dict has no 'state.0.exp_avg.0.codes'|float buffer"):
        fastopt.optim.Adam([p.copy() for p in params], state_dtype="8bit").load_state_dict(saved)


def test_bad_block_size_of_an_optimizer():
    with pytest.raises(ValueError, match=r"block_size must be a power of two in \[64, 4096\]; got 100"):
        fastopt.optim.Adam([np.zeros(10, np.float32)], state_dtype="8bit", block_size=100)
    with pytest.raises(TypeError, match="float64 params take float64 state"):
        fastopt.optim.Adam([np.zeros(10)], state_dtype="8bit")


def test_schedule_free_keeps_z_in_float32():
    params = [np.zeros(8192, np.float32)]
    opt = fastopt.optim.ScheduleFreeAdamW(params, state_dtype="8bit")
    opt.train()
    opt.step([np.ones(8192, np.float32)])
    assert isinstance(opt.state[0]["z"][0], np.ndarray)
    assert isinstance(opt.state[0]["exp_avg_sq"][0], quantized.QuantizedState)


@pytest.mark.parametrize("signed", [True, False])
def test_quantize_keeps_the_shape_of_a_0_d_array(signed):
    """np.ascontiguousarray makes a 0-d array 1-d: the state must keep x's shape, as the twin does."""
    x = np.float32(-3.5 if signed else 3.5)
    state, twin = fastopt.quantize(x, signed=signed), reference.quantize(x, signed=signed)
    assert state.shape == twin.shape == ()
    assert np.array_equal(state.codes, twin.codes) and np.array_equal(state.scales, twin.scales)
    p, g = np.array(1.0, np.float32), np.array(0.5, np.float32)
    if signed:  # a state of a 0-d param is taken by its step
        fastopt.momentum_step(p, g, state, lr=0.1)


@pytest.mark.parametrize("x", [None, "abc", np.array([object()]), np.array([1 + 2j]), [1.0, None]],
                         ids=["None", "str", "object", "complex", "list with None"])
def test_quantize_of_what_is_not_real_numbers_is_a_type_error_naming_x(x):
    with pytest.raises(TypeError, match="x must be real numbers"):
        fastopt.quantize(x)


@pytest.mark.parametrize("shape, error", [(-1, ValueError), ((3, -2), ValueError), (2.5, TypeError),
                                          ((2.5,), TypeError), ("a", TypeError), (None, TypeError),
                                          (np.array([2, 3]), TypeError)])
def test_bad_shapes_of_quantized_zeros_are_errors_naming_shape(shape, error):
    with pytest.raises(error, match="shape"):
        fastopt.quantized_zeros(shape)


@pytest.mark.parametrize("signed", [None, "no", 1, 0.0])
def test_quantized_zeros_takes_a_bool_signed_as_quantize_does(signed):
    with pytest.raises(TypeError, match="signed must be a bool"):
        fastopt.quantized_zeros(10, signed=signed)
    with pytest.raises(TypeError, match="signed must be a bool"):
        fastopt.quantize(np.zeros(10), signed=signed)


def test_quantized_zeros_takes_numpy_integers_and_tuples_of_them():
    assert fastopt.quantized_zeros(np.int64(5)).shape == (5,)
    assert fastopt.quantized_zeros((np.int32(2), 3), signed=np.bool_(False)).shape == (2, 3)
    assert fastopt.quantized_zeros(np.zeros((4, 5)).shape).shape == (4, 5)
