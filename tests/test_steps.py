"""Every fused step against its NumPy twin in fastopt.reference.

Over dtypes, shapes (0-d, empty, odd sizes, past the parallel threshold),
memory order, hyperparameters covering every kernel variant, several steps,
thread counts, SIMD levels, and single vs multi-tensor calls.

The kernels perform the reference's IEEE operations in the reference's order
(no FMA contraction, correctly rounded sqrt and division), so they must agree
bit for bit; a tolerance would let a reordered formula through.
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from step_cases import (CASES, RULES, call, case_id, copy_buffers, fastopt, make_buffers,
                        reference, stable_seed, tolerance)
from fastopt import _core
from fastopt import rules as registry
import optional_packages

DTYPES = [np.float32, np.float64]
SHAPES = [(), (0,), (1,), (7,), (1023,), (3, 5), (4, 0, 3), (2**20 + 3,)]
BIG = (2**20 + 3,)


def run_steps(module, name, buffers, hypers, steps=3, **extra):
    for t in range(1, steps + 1):
        call(module, name, buffers, hypers, step=t, **extra)


def assert_buffers_close(got, want, dtype):
    """Close (a readable diagnostic first), then identical."""
    for key in want:
        np.testing.assert_allclose(got[key], want[key], err_msg=key, **tolerance(dtype))
        assert np.array_equal(got[key], want[key], equal_nan=True), f"{key}: not bit-identical"


def assert_buffers_equal(got, want):
    for key in want:
        g, w = got[key], want[key]
        if isinstance(w, list):
            for a, b in zip(g, w):
                assert np.array_equal(a, b, equal_nan=True), key
        else:
            assert np.array_equal(g, w, equal_nan=True), key


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_reference(case, shape, dtype):
    name, i = case
    hypers = RULES[name]["hypers"][i]
    rng = np.random.default_rng(stable_seed(name, i, shape))
    fused = make_buffers(name, hypers, shape, dtype, rng)
    ref = copy_buffers(fused)
    run_steps(fastopt, name, fused, hypers)
    run_steps(reference, name, ref, hypers)
    assert_buffers_close(fused, ref, dtype)
    assert fused["param"].dtype == dtype and fused["param"].shape == shape


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("grad_writeable", [True, False], ids=["grad", "read-only-grad"])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_memory_order_and_read_only_grad(case, order, grad_writeable, dtype):
    """Fortran order as C order; a read-only gradient (only read) as a writeable one."""
    name, i = case
    hypers = RULES[name]["hypers"][i]
    fused = make_buffers(name, hypers, (33, 17), dtype, np.random.default_rng(1), order=order)
    fused["grad"].flags.writeable = grad_writeable
    ref = copy_buffers(fused)
    run_steps(fastopt, name, fused, hypers)
    run_steps(reference, name, ref, hypers)
    assert fused["param"].flags.f_contiguous == (order == "F")
    assert_buffers_close(fused, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_bit_identical_for_any_thread_count(case, dtype):
    name, i = case
    hypers = RULES[name]["hypers"][i]
    start = make_buffers(name, hypers, BIG, dtype, np.random.default_rng(2))
    results = []
    for threads in (1, 2, 3, 4):
        buffers = copy_buffers(start)
        run_steps(fastopt, name, buffers, hypers, num_threads=threads)
        results.append(buffers)
    for other in results[1:]:
        assert_buffers_equal(other, results[0])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_list_call_equals_reference_and_per_tensor_calls(case, dtype):
    """One multi-tensor call == the reference on the list == one call per tensor, bit for bit."""
    name, i = case
    hypers = RULES[name]["hypers"][i]
    rng = np.random.default_rng(3)
    shapes = [(50257 * 3,), (), (768,), (0,), (31, 7), (1,), (40000,)]
    tensors = [make_buffers(name, hypers, s, dtype, rng) for s in shapes]
    as_lists = {k: [t[k] for t in tensors] for k in tensors[0]}
    ref = copy_buffers(as_lists)
    per_tensor = [copy_buffers(t) for t in tensors]

    run_steps(fastopt, name, as_lists, hypers, num_threads=2)
    run_steps(reference, name, ref, hypers)
    for t in per_tensor:
        run_steps(fastopt, name, t, hypers, num_threads=1)

    for k in as_lists:
        for j, (got, want) in enumerate(zip(as_lists[k], ref[k])):
            np.testing.assert_allclose(got, want, err_msg=f"{k}[{j}]", **tolerance(dtype))
            assert np.array_equal(got, want, equal_nan=True), f"{k}[{j}]: not bit-identical"
            assert np.array_equal(got, per_tensor[j][k], equal_nan=True), f"{k}[{j}]"


def test_tuple_of_arrays_is_a_list_call():
    p = (np.ones(3), np.ones(2))
    g = (np.ones(3), np.ones(2))
    fastopt.sgd_step(p, g, lr=0.5)
    assert all(np.array_equal(x, np.full_like(x, 0.5)) for x in p)
    fastopt.sgd_step([], [], lr=0.5)  # an empty model is a no-op


@pytest.mark.parametrize("level", [lvl for lvl, ok in _core.simd_levels().items() if ok])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_every_simd_level_gives_the_same_bits(case, level):
    name, i = case
    hypers = RULES[name]["hypers"][i]
    for dtype in DTYPES:
        start = make_buffers(name, hypers, (4099,), dtype, np.random.default_rng(4))
        default = copy_buffers(start)
        run_steps(fastopt, name, default, hypers)
        forced = copy_buffers(start)
        _core.set_simd_level(level)
        try:
            assert _core.get_simd_level() == level
            run_steps(fastopt, name, forced, hypers)
        finally:
            _core.set_simd_level(None)
        assert_buffers_equal(forced, default)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_nonfinite_gradients_propagate_as_in_the_reference(case, dtype):
    name, i = case
    hypers = RULES[name]["hypers"][i]
    fused = make_buffers(name, hypers, (64,), dtype, np.random.default_rng(5))
    fused["grad"][[3, 10, 20]] = [np.nan, np.inf, -np.inf]
    ref = copy_buffers(fused)
    call(fastopt, name, fused, hypers)
    with np.errstate(invalid="ignore"):
        call(reference, name, ref, hypers)
    assert_buffers_close(fused, ref, dtype)
    if hypers.get("lr", 1) != 0:
        assert not np.isfinite(fused["param"][3])


def test_read_only_grad_is_accepted():
    p, g = np.ones(5), np.ones(5)
    g.flags.writeable = False
    fastopt.sgd_step(p, g, lr=1.0)
    assert np.array_equal(p, np.zeros(5))


def test_momentum_step_is_the_lecture_ema():
    """v <- beta v + (1 - beta) g: a constant gradient makes v approach g."""
    p, g, v = np.zeros(4), np.full(4, 2.0), np.zeros(4)
    for _ in range(200):
        fastopt.momentum_step(p, g, v, lr=0.0, beta=0.9)
    np.testing.assert_allclose(v, g, rtol=1e-8)


def test_adam_first_step_moves_each_coordinate_by_lr():
    """Bias correction: at t = 1 and eps = 0 the Adam step is lr * sign(g)."""
    p = np.zeros(6, np.float64)
    g = np.array([1e-6, -3.0, 2.5, -1e3, 7.0, -0.1])
    fastopt.adam_step(p, g, np.zeros(6), np.zeros(6), step=1, lr=0.01, eps=0.0)
    np.testing.assert_allclose(p, -0.01 * np.sign(g), rtol=1e-12)


def test_adamw_decays_weights_independently_of_the_gradient():
    p = np.full(3, 2.0)
    fastopt.adamw_step(p, np.zeros(3), np.zeros(3), np.zeros(3), step=1, lr=0.1,
                       weight_decay=0.5, eps=1e-8)
    np.testing.assert_allclose(p, 2.0 * (1 - 0.1 * 0.5))


def test_sgd_momentum_first_step_sets_the_buffer_to_the_gradient():
    p, g, buf = np.zeros(3), np.array([1.0, -2.0, 3.0]), np.full(3, 123.0)
    fastopt.sgd_momentum_step(p, g, buf, step=1, lr=0.1, momentum=0.9, dampening=0.5)
    assert np.array_equal(buf, g)
    fastopt.sgd_momentum_step(p, g, buf, step=2, lr=0.1, momentum=0.9, dampening=0.5)
    np.testing.assert_allclose(buf, 0.9 * g + 0.5 * g)


def test_matches_torch_optim_when_installed():
    """Ten steps of each rule against the torch.optim optimizer users know."""
    torch = optional_packages.importorskip("torch")
    rng = np.random.default_rng(6)
    setups = [
        ("sgd_step", dict(lr=0.1, weight_decay=0.01), torch.optim.SGD, dict(lr=0.1, weight_decay=0.01)),
        ("sgd_momentum_step", dict(lr=0.1, momentum=0.9, nesterov=True), torch.optim.SGD,
         dict(lr=0.1, momentum=0.9, nesterov=True)),
        ("sgd_momentum_step", dict(lr=0.1, momentum=0.8, dampening=0.2, maximize=True), torch.optim.SGD,
         dict(lr=0.1, momentum=0.8, dampening=0.2, maximize=True)),
        ("rmsprop_step", dict(lr=0.01, centered=True, momentum=0.5, weight_decay=0.1), torch.optim.RMSprop,
         dict(lr=0.01, centered=True, momentum=0.5, weight_decay=0.1)),
        ("adagrad_step", dict(lr=0.1, lr_decay=0.01, weight_decay=0.1), torch.optim.Adagrad,
         dict(lr=0.1, lr_decay=0.01, weight_decay=0.1)),
        ("adam_step", dict(lr=0.01, weight_decay=0.1, amsgrad=True), torch.optim.Adam,
         dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
        ("adamw_step", dict(lr=0.01, weight_decay=0.1), torch.optim.AdamW, dict(lr=0.01, weight_decay=0.1)),
    ]
    for name, hypers, torch_class, torch_hypers in setups:
        buffers = make_buffers(name, hypers, (257,), np.float64, rng)
        for key in buffers:
            if key not in ("param", "grad"):
                buffers[key][...] = 0.0
        weights = torch.tensor(buffers["param"].copy(), requires_grad=True)
        opt = torch_class([weights], **torch_hypers)
        for t in range(1, 11):
            grad = rng.standard_normal(257)
            buffers["grad"][...] = grad
            call(fastopt, name, buffers, hypers, step=t)
            weights.grad = torch.tensor(grad)
            opt.step()
        np.testing.assert_allclose(buffers["param"], weights.detach().numpy(), rtol=1e-10,
                                   atol=1e-12, err_msg=name)


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(sorted(RULES)),
    dtype=st.sampled_from(DTYPES),
    size=st.integers(0, 300),
    lr=st.floats(0, 1),
    beta=st.floats(0, 0.999),
    decay=st.floats(0, 1),
    eps=st.sampled_from([0.0, 1e-12, 1e-8, 1e-3]),
    maximize=st.booleans(),
    flag=st.booleans(),
    step=st.integers(1, 10**6),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_hyperparameters_match_reference(name, dtype, size, lr, beta, decay, eps, maximize,
                                                flag, step, seed):
    rule = registry.RULES[name[:-len("_step")]]
    drawn = {"lr": lr, "eps": eps}
    hypers = {}
    for h in rule.hyper:  # a number for each, by what its check allows
        if h.is_switch:
            hypers[h.name] = flag
        elif h.name in drawn:
            hypers[h.name] = drawn[h.name]
        elif h.check == "unit":
            hypers[h.name] = beta
        elif h.check == "nonneg":
            hypers[h.name] = decay
    hypers["maximize"] = maximize
    fused = make_buffers(name, hypers, (size,), dtype, np.random.default_rng(seed))
    ref = copy_buffers(fused)
    try:
        call(fastopt, name, fused, hypers, step=step)
    except ValueError:  # a combination the rule refuses (nesterov without momentum): nothing written
        assert_buffers_equal(fused, ref)
        return
    with np.errstate(invalid="ignore", divide="ignore"):
        call(reference, name, ref, hypers, step=step)
    assert_buffers_close(fused, ref, dtype)


# --------------------------------------------------------------------------
# the passes that are not steps (Schedule-Free's switch between y and x)

PASSES = sorted(registry.PASSES)


def pass_buffers(shape, dtype, seed, order="C"):
    rng = np.random.default_rng(seed)
    return {"param": np.asarray(rng.standard_normal(shape), dtype=dtype, order=order),
            "z": np.asarray(rng.standard_normal(shape), dtype=dtype, order=order)}


@pytest.mark.parametrize("beta1", [0.9, 0.5, 0.3], ids=lambda b: f"beta1={b}")  # both forms of lerp
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", PASSES)
def test_pass_matches_reference(name, shape, dtype, beta1):
    fused = pass_buffers(shape, dtype, stable_seed(name, shape))
    ref = copy_buffers(fused)
    getattr(fastopt, name)(fused["param"], fused["z"], beta1=beta1)
    getattr(reference, name)(ref["param"], ref["z"], beta1=beta1)
    assert_buffers_close(fused, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("name", PASSES)
def test_pass_is_bit_identical_for_any_thread_count_simd_level_and_list(name, dtype):
    start = pass_buffers(BIG, dtype, 11, order="F")
    results = []
    for threads in (1, 2, 3):
        buffers = copy_buffers(start)
        getattr(fastopt, name)(buffers["param"], buffers["z"], beta1=0.9, num_threads=threads)
        results.append(buffers)
    for level in [lvl for lvl, ok in _core.simd_levels().items() if ok]:
        buffers = copy_buffers(start)
        _core.set_simd_level(level)
        try:
            getattr(fastopt, name)(buffers["param"], buffers["z"], beta1=0.9)
        finally:
            _core.set_simd_level(None)
        results.append(buffers)
    pieces = [copy_buffers(start) for _ in range(2)]
    lists = {k: [pieces[0][k], pieces[1][k][:5]] for k in start}
    getattr(fastopt, name)(lists["param"], lists["z"], beta1=0.9, num_threads=2)
    for other in results[1:]:
        assert_buffers_equal(other, results[0])
    assert np.array_equal(lists["param"][0], results[0]["param"])
    assert not np.array_equal(results[0]["param"], start["param"])
    assert np.array_equal(results[0]["z"], start["z"])  # z is only read


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_eval_then_train_comes_back_to_y(dtype):
    """train is eval's inverse: y = (1−β1)·z + β1·x solved either way; to rounding."""
    buffers = pass_buffers((1000,), dtype, 12)
    y = buffers["param"].copy()
    fastopt.schedule_free_eval(buffers["param"], buffers["z"], beta1=0.9)
    x = buffers["param"].copy()
    np.testing.assert_allclose(dtype(0.1) * buffers["z"] + dtype(0.9) * x, y, rtol=1e-5, atol=1e-5)
    fastopt.schedule_free_train(buffers["param"], buffers["z"], beta1=0.9)
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(buffers["param"], y, rtol=16 * eps, atol=16 * eps)


@pytest.mark.parametrize("call, error, match", [
    (lambda p, z: fastopt.schedule_free_eval(p, z, beta1=0.0), ValueError, "beta1 must be > 0"),
    (lambda p, z: fastopt.schedule_free_train(p, z, beta1=1.0), ValueError, "beta1 must be in"),
    (lambda p, z: fastopt.schedule_free_eval(p, z[:3]), ValueError, "z has shape"),
    (lambda p, z: fastopt.schedule_free_eval(p, z.astype(np.float32)), TypeError, "mixed dtypes"),
    (lambda p, z: fastopt.schedule_free_train(p[::2], z[::2]), ValueError, "param must be C- or Fortran"),
    (lambda p, z: fastopt.schedule_free_train([p], z), TypeError, "z must be a list"),
    (lambda p, z: fastopt.schedule_free_train(p, p), ValueError, "overlap in memory"),
    (lambda p, z: fastopt.schedule_free_eval(p, z, num_threads=0), ValueError, "num_threads"),
])
def test_bad_pass_arguments_write_nothing(call, error, match):
    p, z = np.ones(8), np.full(8, 2.0)
    before = p.copy()
    with pytest.raises(error, match=match):
        call(p, z)
    assert np.array_equal(p, before)


def test_a_pass_reads_a_read_only_z():
    p, z = np.ones(4), np.full(4, 3.0)
    z.flags.writeable = False
    fastopt.schedule_free_train(p, z, beta1=0.5)
    assert np.array_equal(p, np.full(4, 2.0))
    frozen = np.ones(4)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="param is updated in place"):
        fastopt.schedule_free_train(frozen, np.ones(4))
