"""Bad input: a clear error naming the argument, and every buffer bitwise unchanged."""

import numpy as np
import pytest

import fastopt
from step_cases import RULES, STEP_RULES, make_buffers, state_names


def adam_buffers(n=8, dtype=np.float64, count=None):
    rng = np.random.default_rng(0)
    make = lambda: rng.standard_normal(n).astype(dtype)  # noqa: E731
    if count is None:
        return make(), make(), make(), np.abs(make())
    return tuple([make() for _ in range(count)] for _ in range(4))


def snapshot(*buffers):
    flat = []
    for b in buffers:
        flat.extend(b if isinstance(b, (list, tuple)) else [b])
    return [(a, a.copy()) for a in flat if isinstance(a, np.ndarray)]


def assert_unchanged(snap):
    for array, before in snap:
        assert array.tobytes() == before.tobytes()


def expect(error, match, func, *buffers, **kwargs):
    snap = snapshot(*buffers)
    with pytest.raises(error, match=match):
        func(*buffers, **kwargs)
    assert_unchanged(snap)


@pytest.mark.parametrize("bad, error, match", [
    ([1.0, 2.0], TypeError, "param"),
    (None, TypeError, "param"),
    (np.arange(8), TypeError, "param must have dtype float32, float64, bfloat16"),
    (np.zeros(8, np.float16), TypeError, "param"),
    (np.zeros(8, ">f8"), TypeError, "native byte order"),
])
def test_param_that_is_not_a_float_array(bad, error, match):
    _, g, m, v = adam_buffers()
    expect(error, match, fastopt.adam_step, bad, g, m, v, step=1)


@pytest.mark.parametrize("position, name", [(1, "grad"), (2, "exp_avg"), (3, "exp_avg_sq")])
def test_every_buffer_is_checked_and_named(position, name):
    buffers = list(adam_buffers())
    for bad, error, match in [
        (None, TypeError, f"{name} must be a numpy.ndarray"),
        (np.zeros(8, np.int64), TypeError, f"{name} must have dtype"),
        (np.zeros(8, np.float32), TypeError, f"mixed dtypes: {name}"),
        (np.zeros(9), ValueError, f"{name} has shape \\(9,\\), but param has shape \\(8,\\)"),
        (np.zeros(16)[::2], ValueError, f"{name} must be C- or Fortran-contiguous"),
    ]:
        args = list(buffers)
        args[position] = bad
        expect(error, match, fastopt.adam_step, *args, step=1)


@pytest.mark.parametrize("name", ["param", "exp_avg", "exp_avg_sq"])
def test_read_only_buffers_that_are_written_are_refused(name):
    p, g, m, v = adam_buffers()
    dict(param=p, exp_avg=m, exp_avg_sq=v)[name].flags.writeable = False
    expect(ValueError, f"{name} is updated in place and must be writeable", fastopt.adam_step,
           p, g, m, v, step=1)


def test_memory_order_must_agree():
    p = np.zeros((4, 3), order="C")
    g = np.ones((4, 3), order="F")
    expect(ValueError, "grad must have the same memory order as param", fastopt.sgd_step, p, g, lr=1.0)


def test_unaligned_buffer_is_refused():
    raw = np.zeros(8 * 9 + 1, np.uint8)
    unaligned = raw[1:].view(np.float64)
    assert not unaligned.flags.aligned
    expect(ValueError, "param is not aligned", fastopt.sgd_step, unaligned, np.ones(9), lr=1.0)


@pytest.mark.parametrize("make_overlap", [
    lambda p, g, m, v: (p, g, m, m),                              # same array twice
    lambda p, g, m, v: (p, g, m, p),                              # state aliasing param
    lambda p, g, m, v: (p, p, m, v),                              # grad aliasing param
    lambda p, g, m, v: (lambda big: (big[:8], g, big[4:12], v))(np.zeros(12)),  # partial overlap
])
def test_overlapping_buffers_are_refused(make_overlap):
    args = make_overlap(*adam_buffers())
    expect(ValueError, "overlap in memory", fastopt.adam_step, *args, step=1)


def test_adjacent_views_of_one_buffer_are_fine():
    flat = np.zeros(16)
    fastopt.sgd_step([flat[:8], flat[8:]], [np.ones(8), np.ones(8)], lr=1.0)
    assert np.array_equal(flat, -np.ones(16))


def test_list_calls_need_lists_of_the_same_length():
    p, g, m, v = adam_buffers(count=3)
    expect(ValueError, "exp_avg has 2 tensors but param has 3", fastopt.adam_step, p, g, m[:2], v, step=1)
    expect(TypeError, "param is a list, so grad must be a list", fastopt.adam_step, p, g[0], m, v, step=1)
    expect(TypeError, "param is an array, so grad must be an array", fastopt.adam_step,
           p[0], g, m[0], v[0], step=1)
    for not_a_list in (5, np.float64(1.0), np.zeros(3)):
        expect(TypeError, "param is a list, so exp_avg must be a list", fastopt.adam_step,
               p, g, not_a_list, v, step=1)


@pytest.mark.parametrize("bad_index", [0, 2])
def test_a_bad_tensor_anywhere_in_a_list_writes_nothing(bad_index):
    p, g, m, v = adam_buffers(count=3)
    m[bad_index] = np.zeros(8, np.float32)
    expect(TypeError, f"exp_avg\\[{bad_index}\\]", fastopt.adam_step, p, g, m, v, step=1)
    p, g, m, v = adam_buffers(count=3)
    v[bad_index] = np.zeros(5)
    expect(ValueError, f"exp_avg_sq\\[{bad_index}\\] has shape", fastopt.adam_step, p, g, m, v, step=1)
    p, g, m, v = adam_buffers(count=3)
    p[bad_index] = m[0]
    expect(ValueError, "overlap in memory", fastopt.adam_step, p, g, m, v, step=1)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(lr=-1.0), ValueError, "lr must be finite and >= 0"),
    (dict(lr=float("nan")), ValueError, "lr"),
    (dict(lr=float("inf")), ValueError, "lr"),
    (dict(lr="0.1"), TypeError, "lr must be a real number"),
    (dict(beta1=1.0), ValueError, "beta1 must be in \\[0, 1\\)"),
    (dict(beta1=-0.1), ValueError, "beta1"),
    (dict(beta2=1.5), ValueError, "beta2"),
    (dict(beta2=float("nan")), ValueError, "beta2"),
    (dict(eps=-1e-8), ValueError, "eps"),
    (dict(weight_decay=float("nan")), ValueError, "weight_decay"),
    (dict(weight_decay=-0.1), ValueError, "weight_decay"),
    (dict(grad_scale=float("inf")), ValueError, "grad_scale"),
    (dict(step=0), ValueError, "step must be an integer in \\[1, "),
    (dict(step=1.5), TypeError, "step must be an integer"),
    (dict(step=True), TypeError, "step"),
    (dict(step=None), TypeError, "step"),
    (dict(num_threads=0), ValueError, "num_threads must be an integer in \\[1, 65536\\]"),
    (dict(num_threads=1.0), TypeError, "num_threads"),
    (dict(amsgrad=True), ValueError, "max_exp_avg_sq is required when amsgrad=True"),
])
def test_bad_adam_hyperparameters(kwargs, error, match):
    p, g, m, v = adam_buffers()
    kwargs = dict(dict(step=3), **kwargs)
    expect(error, match, fastopt.adam_step, p, g, m, v, **kwargs)
    expect(error, match, fastopt.adamw_step, p, g, m, v, **kwargs)


def test_unused_optional_buffer_is_refused():
    p, g, m, v = adam_buffers()
    expect(ValueError, "max_exp_avg_sq is given but unused", fastopt.adam_step, p, g, m, v,
           max_exp_avg_sq=np.zeros(8), step=1)


@pytest.mark.parametrize("call, match", [
    (lambda p, g, b: fastopt.sgd_momentum_step(p, g, b, step=1, lr=0.1, momentum=0.0, nesterov=True),
     "nesterov=True requires momentum > 0 and dampening = 0"),
    (lambda p, g, b: fastopt.sgd_momentum_step(p, g, b, step=1, lr=0.1, momentum=0.9, dampening=0.1,
                                               nesterov=True), "nesterov"),
    (lambda p, g, b: fastopt.sgd_momentum_step(p, g, b, step=1, lr=0.1, momentum=-0.9), "momentum"),
    (lambda p, g, b: fastopt.sgd_momentum_step(p, g, b, step=1, lr=0.1, momentum=0.9,
                                               dampening=float("inf")), "dampening"),
    (lambda p, g, b: fastopt.momentum_step(p, g, b, lr=0.1, beta=1.0), "beta must be in"),
    (lambda p, g, b: fastopt.rmsprop_step(p, g, b, centered=True), "grad_avg is required when centered"),
    (lambda p, g, b: fastopt.rmsprop_step(p, g, b, momentum=0.9), "momentum_buffer is required"),
    (lambda p, g, b: fastopt.rmsprop_step(p, g, b, alpha=1.0), "alpha"),
    (lambda p, g, b: fastopt.adagrad_step(p, g, b, step=1, lr_decay=-1.0), "lr_decay"),
    (lambda p, g, b: fastopt.adagrad_step(p, g, b, step=0), "step"),
    (lambda p, g, b: fastopt.sgd_step(p, g, lr=-0.1), "lr"),
    (lambda p, g, b: fastopt.nadam_step(p, g, b, b.copy(), step=1, mu_product=1.0), "mu_product must be in"),
    (lambda p, g, b: fastopt.nadam_step(p, g, b, b.copy(), step=1, mu_product=0.4, momentum_decay=-1.0),
     "momentum_decay"),
    (lambda p, g, b: fastopt.radam_step(p, g, b, b.copy(), step=1, beta2=1.0), "beta2"),
    (lambda p, g, b: fastopt.adamax_step(p, g, b, b.copy(), step=1, eps=-1.0), "eps"),
    (lambda p, g, b: fastopt.schedule_free_adamw_step(p, g, b, b.copy(), step=2, average_weight=1.5),
     "average_weight must be in \\[0, 1\\]"),
    (lambda p, g, b: fastopt.schedule_free_adamw_step(p, g, b, b.copy(), step=2, average_weight=-0.5),
     "average_weight must be finite and >= 0"),
    (lambda p, g, b: fastopt.schedule_free_adamw_step(p, g, b, b.copy(), step=1, average_weight=1.0,
                                                      beta2=1.0), "beta2"),
    (lambda p, g, b: fastopt.lamb_step(p, g, b, b.copy(), step=1, max_trust_ratio=0.0),
     "max_trust_ratio must be > 0 \\(inf: no cap\\)"),
    (lambda p, g, b: fastopt.lamb_step(p, g, b, b.copy(), step=1, max_trust_ratio=-1.0), "max_trust_ratio"),
    (lambda p, g, b: fastopt.lamb_step(p, g, b, b.copy(), step=1, max_trust_ratio=float("nan")),
     "max_trust_ratio"),
    (lambda p, g, b: fastopt.lamb_step(p, g, b, b.copy(), step=1, beta1=1.0), "beta1"),
    (lambda p, g, b: fastopt.lamb_step(p, g, b, b.copy(), step=0), "step"),
])
def test_bad_hyperparameters_of_the_other_rules(call, match):
    p, g, b = np.ones(4), np.ones(4), np.ones(4)
    snap = snapshot(p, g, b)
    with pytest.raises(ValueError, match=match):
        call(p, g, b)
    assert_unchanged(snap)


@pytest.mark.parametrize("name", sorted(RULES))
def test_every_rule_refuses_a_bad_last_tensor(name):
    """The whole list is validated before the first write, for every rule."""
    hypers = RULES[name]["hypers"][-1]
    rng = np.random.default_rng(1)
    tensors = [make_buffers(name, hypers, (100,), np.float32, rng) for _ in range(3)]
    tensors[-1]["param"] = tensors[-1]["param"][::2]
    lists = {k: [t[k] for t in tensors] for k in tensors[0]}
    positional, keyword = state_names(name, hypers)
    args = [lists["param"], lists["grad"]] + [lists[b] for b in positional]
    kwargs = dict(hypers, **{b: lists[b] for b in keyword})
    if name in STEP_RULES:
        kwargs["step"] = 2
    snap = snapshot(*lists.values())
    with pytest.raises(ValueError, match="param\\[2\\]"):
        getattr(fastopt, name)(*args, **kwargs)
    assert_unchanged(snap)


def test_set_num_threads_validates_and_restores():
    default = fastopt.get_num_threads()
    with pytest.raises(ValueError, match="num_threads"):
        fastopt.set_num_threads(0)
    fastopt.set_num_threads(3)
    try:
        assert fastopt.get_num_threads() == 3
    finally:
        fastopt.set_num_threads(None)
    assert fastopt.get_num_threads() == default


@pytest.mark.parametrize("seed", range(20))
def test_overlap_found_among_many_tensors(seed):
    """Views of one pool, shuffled: the check finds the one overlapping pair, or none."""
    rng = np.random.default_rng(seed)
    count = int(rng.integers(5, 60))
    pool = np.zeros(4 * count * 10)
    views = [pool[i * 10:(i + 1) * 10] for i in range(4 * count)]
    order = rng.permutation(len(views))
    p, g, m, v = ([views[j] for j in order[k::4]] for k in range(4))
    fastopt.adam_step(p, g, m, v, step=1)  # adjacent, never overlapping: fine
    victim = int(rng.integers(count))
    start = int(rng.integers(1, 10))
    shifted = pool[order[4 * victim + 2] * 10 + start:][:10]  # straddles its neighbour
    if shifted.size == 10:
        m[victim] = shifted
        expect(ValueError, "overlap in memory", fastopt.adam_step, p, g, m, v, step=1)
