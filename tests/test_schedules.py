"""fastopt.schedules: closed forms, torch's schedulers, bad input."""

import math
import pickle

import pytest

from fastopt import schedules as S
import optional_packages


def torch_lrs(make_scheduler, lr, steps):
    """The lr torch uses at steps 1..steps: the group's lr after t-1 scheduler.step() calls."""
    torch = optional_packages.importorskip("torch")
    weight = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([weight], lr=lr)
    scheduler = make_scheduler(torch.optim.lr_scheduler, opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return lrs


def assert_matches_torch(schedule, make_scheduler, lr, steps):
    expected = torch_lrs(make_scheduler, lr, steps)
    got = [schedule(t) for t in range(1, steps + 1)]
    for t, (a, b) in enumerate(zip(got, expected), start=1):
        assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15), (t, a, b)


def test_closed_forms():
    assert [S.constant(0.5)(t) for t in (1, 7, 10**9)] == [0.5, 0.5, 0.5]
    assert [S.step_decay(1.0, 3, 0.5)(t) for t in range(1, 9)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25]
    assert [S.exponential(2.0, 0.5)(t) for t in (1, 2, 3)] == [2.0, 1.0, 0.5]
    cosine = S.cosine(1.0, 4, min_lr=0.2)
    assert cosine(1) == 1.0 and math.isclose(cosine(3), 0.6) and math.isclose(cosine(5), 0.2)
    assert math.isclose(cosine(9), 1.0)  # periodic past total_steps, like torch
    assert [S.inverse_sqrt(1.0)(t) for t in (1, 4, 16)] == [1.0, 0.5, 0.25]
    warm = S.linear_warmup(S.constant(1.0), 4)
    assert [warm(t) for t in range(1, 7)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert S.linear_warmup(0.1, 1)(1) == 0.1
    assert S.linear_warmup(S.exponential(1.0, 0.5), 2)(1) == 0.5  # same clock: 1.0 * 1/2
    assert S.linear_warmup(S.exponential(1.0, 0.5), 2)(3) == 0.25


def test_step_decay_is_torch_steplr():
    assert_matches_torch(S.step_decay(0.1, 7, gamma=0.3), lambda L, o: L.StepLR(o, 7, gamma=0.3), 0.1, 60)


def test_exponential_is_torch_exponentiallr():
    assert_matches_torch(S.exponential(0.05, 0.97), lambda L, o: L.ExponentialLR(o, 0.97), 0.05, 200)


@pytest.mark.parametrize("min_lr", [0.0, 1e-3])
def test_cosine_is_torch_cosineannealinglr_past_total_steps_too(min_lr):
    assert_matches_torch(S.cosine(0.1, 50, min_lr=min_lr),
                         lambda L, o: L.CosineAnnealingLR(o, T_max=50, eta_min=min_lr), 0.1, 130)


def test_linear_warmup_is_torch_linearlr_chained_with_cosine():
    warmup = 10
    assert_matches_torch(
        S.linear_warmup(S.cosine(0.1, 100), warmup),
        lambda L, o: L.ChainedScheduler([L.LinearLR(o, start_factor=1 / warmup, total_iters=warmup - 1),
                                         L.CosineAnnealingLR(o, T_max=100)]),
        0.1, 100)


def test_inverse_sqrt_is_torch_lambdalr():
    assert_matches_torch(S.inverse_sqrt(0.2), lambda L, o: L.LambdaLR(o, lambda e: 1 / math.sqrt(e + 1)),
                         0.2, 50)


def test_pickle_repr_equality():
    schedule = S.linear_warmup(S.cosine(0.1, 100, min_lr=1e-4), 5)
    clone = pickle.loads(pickle.dumps(schedule))
    assert clone == schedule and hash(clone) == hash(schedule)
    assert [clone(t) for t in range(1, 20)] == [schedule(t) for t in range(1, 20)]
    assert repr(schedule) == "linear_warmup(schedule=cosine(lr=0.1, total_steps=100, min_lr=0.0001), warmup_steps=5)"
    assert S.cosine(0.1, 100) != S.cosine(0.1, 101)


@pytest.mark.parametrize("make, error", [
    (lambda: S.constant(-0.1), ValueError),
    (lambda: S.constant(float("nan")), ValueError),
    (lambda: S.constant(float("inf")), ValueError),
    (lambda: S.constant("0.1"), TypeError),
    (lambda: S.constant(True), TypeError),
    (lambda: S.step_decay(0.1, 0), ValueError),
    (lambda: S.step_decay(0.1, 2.5), TypeError),
    (lambda: S.step_decay(0.1, 2, gamma=-1), ValueError),
    (lambda: S.exponential(0.1, float("nan")), ValueError),
    (lambda: S.cosine(0.1, 0), ValueError),
    (lambda: S.cosine(0.1, 10, min_lr=-1.0), ValueError),
    (lambda: S.linear_warmup(0.1, 0), ValueError),
    (lambda: S.linear_warmup(-0.1, 3), ValueError),
    (lambda: S.inverse_sqrt(None), TypeError),
])
def test_bad_arguments(make, error):
    with pytest.raises(error):
        make()


@pytest.mark.parametrize("t, error", [(0, ValueError), (-3, ValueError), (1.0, TypeError), (True, TypeError)])
def test_bad_step(t, error):
    with pytest.raises(error):
        S.exponential(0.1, 0.9)(t)
