"""Rules against the implementation each is anchored to.

optax for Lion and LAMB, torch.optim for the rules torch has (NAdam, RAdam, Adamax), the
schedulefree package for Schedule-Free AdamW: trajectories over many steps and option
combinations, float32 and float64, to rounding.  Each anchor is an optional test
dependency (the README's full test command installs it); without it these tests are skipped.
"""

import numpy as np
import pytest

import optional_packages
from fastopt import optim

STEPS = 25
SHAPES = [(40_003,), (7, 5), (1,)]  # one past the parallel threshold
TOLERANCE = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-11, atol=1e-13)}


def start(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def gradient_sequence(dtype, seed=1, steps=STEPS):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(steps)]


@pytest.fixture(scope="module")
def jax_and_optax():
    jax = optional_packages.importorskip("jax")
    optax = optional_packages.importorskip("optax")
    jax.config.update("jax_enable_x64", True)
    return jax, optax


def optax_run(jax, optax, transformation, params, grads_seq):
    import jax.numpy as jnp

    params = [jnp.asarray(p) for p in params]
    state = transformation.init(params)
    for grads in grads_seq:
        updates, state = transformation.update([jnp.asarray(g) for g in grads], state, params)
        params = optax.apply_updates(params, updates)
    return [np.asarray(p) for p in params]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: d.__name__)
@pytest.mark.parametrize("options", [
    dict(lr=1e-3),
    dict(lr=3e-3, betas=(0.95, 0.98), weight_decay=0.0),
    dict(lr=1e-2, betas=(0.5, 0.9), weight_decay=0.5),
], ids=["defaults", "no-decay", "strong-decay"])
def test_lion_follows_optax(jax_and_optax, options, dtype):
    jax, optax = jax_and_optax
    b1, b2 = options.get("betas", (0.9, 0.99))
    transformation = optax.lion(options["lr"], b1=b1, b2=b2, weight_decay=options.get("weight_decay", 1e-3))
    grads_seq = gradient_sequence(dtype)
    expected = optax_run(jax, optax, transformation, start(dtype), grads_seq)
    opt = optim.Lion(start(dtype), **options, num_threads=2)
    for grads in grads_seq:
        opt.step(grads)
    for ours, theirs in zip(opt.params, expected):
        assert theirs.dtype == dtype
        np.testing.assert_allclose(ours, theirs, **TOLERANCE[dtype])


@pytest.mark.parametrize("kind, function", [("Lion", "lion"), ("LAMB", "lamb")])
def test_defaults_are_optax_s(kind, function):
    optax = optional_packages.importorskip("optax")
    import inspect

    theirs = inspect.signature(getattr(optax, function)).parameters
    ours = getattr(optim, kind)([np.zeros(1)]).defaults
    assert ours["betas"] == (theirs["b1"].default, theirs["b2"].default)
    assert ours["weight_decay"] == theirs["weight_decay"].default
    if "eps" in theirs:
        assert ours["eps"] == theirs["eps"].default


def test_lion_with_equal_betas_is_sign_momentum():
    """β1 = β2 = β: the step direction is sign of the EMA the state holds after the update."""
    params, grads_seq = start(np.float64), gradient_sequence(np.float64)
    opt = optim.Lion([p.copy() for p in params], lr=0.01, betas=(0.9, 0.9), weight_decay=0.0)
    ema = optim.Momentum([p.copy() for p in params], lr=0.0, beta=0.9)
    expected = [p.copy() for p in params]
    for grads in grads_seq:
        opt.step(grads)
        ema.step(grads)
        for e, v in zip(expected, ema.state[0]["velocity"]):
            e -= 0.01 * np.sign(v)
    for ours, theirs in zip(opt.params, expected):
        np.testing.assert_array_equal(ours, theirs)


# --------------------------------------------------------------------------
# optax: LAMB

def _lamb_shapes_start(dtype, seed=0):
    """SHAPES, and a tensor of zeros: its norm is 0, so optax and fastopt take a trust ratio of 1."""
    return start(dtype, seed) + [np.zeros((3, 4), dtype)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: d.__name__)
@pytest.mark.parametrize("options", [
    dict(lr=1e-3),
    dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.01),
    dict(lr=3e-3, weight_decay=0.1, maximize=True),
], ids=["defaults", "decay", "maximize"])
def test_lamb_follows_optax(jax_and_optax, options, dtype):
    jax, optax = jax_and_optax
    b1, b2 = options.get("betas", (0.9, 0.999))
    transformation = optax.lamb(options["lr"], b1=b1, b2=b2, eps=options.get("eps", 1e-6),
                                weight_decay=options.get("weight_decay", 0.0))
    params = _lamb_shapes_start(dtype)
    rng = np.random.default_rng(1)
    grads_seq = [[rng.standard_normal(p.shape).astype(dtype) for p in params] for _ in range(STEPS)]
    sign = -1 if options.get("maximize") else 1   # optax minimizes: maximizing g is minimizing -g
    expected = optax_run(jax, optax, transformation, params, [[sign * g for g in gs] for gs in grads_seq])
    opt = optim.LAMB(_lamb_shapes_start(dtype), **options, num_threads=2)
    for grads in grads_seq:
        opt.step(grads)
    for ours, theirs in zip(opt.params, expected):
        assert theirs.dtype == dtype
        np.testing.assert_allclose(ours, theirs, **TOLERANCE[dtype])


def test_lamb_moves_each_tensor_by_lr_times_its_norm():
    """The trust ratio ‖θ‖/‖u‖ makes every tensor's step lr·‖θ‖ long, whatever its gradient's scale."""
    params = [np.full(1000, 2.0), np.full(10, -0.5)]
    opt = optim.LAMB([p.copy() for p in params], lr=0.01)
    opt.step([np.linspace(1, 2, 1000), np.linspace(-1e-3, 5e-3, 10)])
    for before, after in zip(params, opt.params):
        np.testing.assert_allclose(np.linalg.norm(after - before), 0.01 * np.linalg.norm(before), rtol=1e-12)


def test_lamb_caps_the_trust_ratio():
    """max_trust_ratio bounds ‖Δθ‖/(lr·‖u‖): with a large ‖θ‖ and a small update the cap decides."""
    param = np.full(100, 1000.0)
    grad = np.full(100, 1.0)
    capped = optim.LAMB([param.copy()], lr=0.01, max_trust_ratio=10.0)
    capped.step([grad])
    # step 1: u = m̂/(√v̂ + eps) = 1/(1 + 1e-6) per element, so ‖u‖ = 10/(1 + 1e-6)
    u_norm = 10.0 / (1.0 + 1e-6)
    np.testing.assert_allclose(np.linalg.norm(param - capped.params[0]), 0.01 * 10.0 * u_norm, rtol=1e-12)
    free = optim.LAMB([param.copy()], lr=0.01)
    free.step([grad])
    np.testing.assert_allclose(np.linalg.norm(param - free.params[0]), 0.01 * np.linalg.norm(param), rtol=1e-12)


# --------------------------------------------------------------------------
# torch.optim: RAdam, NAdam, Adamax

@pytest.fixture(scope="module")
def torch():
    return optional_packages.importorskip("torch")


def torch_run(torch, optimizer_class, options, params, grads_seq):
    """Params after torch.optim's optimizer took grads_seq, on tensors of the params' dtype.

    Under a float64 default dtype: torch keeps its per-step scalars (NAdam's
    mu_product) as tensors of the default dtype, and fastopt keeps them in double.
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        tensors = [torch.tensor(p, requires_grad=True) for p in params]
        optimizer = optimizer_class(tensors, **options)
        for grads in grads_seq:
            for tensor, g in zip(tensors, grads):
                tensor.grad = torch.tensor(g)
            optimizer.step()
    finally:
        torch.set_default_dtype(previous)
    return [t.detach().numpy() for t in tensors]


def assert_follows_torch(torch, kind, options, dtype, steps=STEPS):
    grads_seq = gradient_sequence(dtype, steps=steps)
    expected = torch_run(torch, getattr(torch.optim, kind), options, start(dtype), grads_seq)
    opt = getattr(optim, kind)(start(dtype), **options, num_threads=2)
    for grads in grads_seq:
        opt.step(grads)
    for ours, theirs in zip(opt.params, expected):
        assert theirs.dtype == dtype
        np.testing.assert_allclose(ours, theirs, **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: d.__name__)
@pytest.mark.parametrize("options", [
    dict(),
    dict(lr=1e-2, weight_decay=0.1),
    dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True),
    dict(lr=3e-3, betas=(0.5, 0.99), eps=1e-6, maximize=True),   # 1 − β1 = 0.5: lerp's other form
    dict(lr=1e-2, betas=(0.9, 0.5)),                              # ρ∞ < 5: never rectified
], ids=["defaults", "l2", "decoupled", "other-betas-maximize", "never-rectified"])
def test_radam_follows_torch(torch, options, dtype):
    """With β2 = 0.999 steps 1–5 are unrectified (ρ_t ≤ 5), the rest rectified: both branches."""
    assert_follows_torch(torch, "RAdam", options, dtype, steps=40)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: d.__name__)
@pytest.mark.parametrize("options", [
    dict(),
    dict(lr=1e-2, weight_decay=0.1),
    dict(lr=3e-3, betas=(0.5, 0.9), eps=1e-3, maximize=True),   # 1 − β1 = 0.5: lerp's other form
    dict(lr=1e-2, betas=(0.0, 0.0)),
], ids=["defaults", "l2", "other-betas-maximize", "no-averaging"])
def test_adamax_follows_torch(torch, options, dtype):
    assert_follows_torch(torch, "Adamax", options, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: d.__name__)
@pytest.mark.parametrize("options", [
    dict(),
    dict(lr=1e-2, weight_decay=0.1),
    dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True),
    dict(lr=3e-3, betas=(0.5, 0.99), momentum_decay=0.1, maximize=True),   # lerp's other form
    dict(lr=1e-2, momentum_decay=0.0, eps=1e-6),                             # μ_t = β1/2 throughout
], ids=["defaults", "l2", "decoupled", "other-betas-maximize", "no-momentum-decay"])
def test_nadam_follows_torch(torch, options, dtype):
    assert_follows_torch(torch, "NAdam", options, dtype, steps=40)


def test_nadam_keeps_torch_s_mu_product(torch):
    """optim.NAdam's per-group product of μ_t is torch's state["mu_product"] (float64 default dtype)."""
    params, grads_seq = start(np.float64), gradient_sequence(np.float64)
    opt = optim.NAdam([p.copy() for p in params], momentum_decay=0.02)
    for grads in grads_seq:
        opt.step(grads)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        tensor = torch.tensor(params[0], requires_grad=True)
        theirs = torch.optim.NAdam([tensor], momentum_decay=0.02)
        for grads in grads_seq:
            tensor.grad = torch.tensor(grads[0])
            theirs.step()
    finally:
        torch.set_default_dtype(previous)
    assert opt.state[0]["mu_product"] == theirs.state[tensor]["mu_product"].item()


# --------------------------------------------------------------------------
# the schedulefree package: Schedule-Free AdamW

@pytest.fixture(scope="module")
def schedulefree():
    optional_packages.importorskip("torch")
    return optional_packages.importorskip("schedulefree")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: d.__name__)
@pytest.mark.parametrize("options", [
    dict(),
    dict(lr=1e-2, weight_decay=0.1, warmup_steps=8),
    dict(lr=1e-2, betas=(0.5, 0.99), r=1.0, weight_lr_power=0.0),   # lerp's other form in both passes
    dict(lr=3e-3, betas=(0.95, 0.9), eps=1e-6, warmup_steps=3, r=0.5, weight_lr_power=1.0),
], ids=["defaults", "decay-warmup", "polynomial-weights", "other"])
def test_schedule_free_adamw_follows_schedulefree(schedulefree, options, dtype):
    """40 steps with eval() and train() after steps 10 and 25: params (y in training, x after eval()),
    z, v and the running sums, against schedulefree.AdamWScheduleFree (its default, foreach=True)."""
    import torch

    grads_seq = gradient_sequence(dtype, steps=40)
    ours = optim.ScheduleFreeAdamW(start(dtype), **options, num_threads=2)
    tensors = [torch.tensor(p, requires_grad=True) for p in start(dtype)]
    theirs = schedulefree.AdamWScheduleFree(tensors, **options)

    def compare():
        for mine, tensor in zip(ours.params, tensors):
            np.testing.assert_allclose(mine, tensor.detach().numpy(), **TOLERANCE[dtype])

    ours.train()
    theirs.train()
    for t, grads in enumerate(grads_seq, start=1):
        ours.step(grads)
        for tensor, g in zip(tensors, grads):
            tensor.grad = torch.tensor(g)
        theirs.step()
        if t in (10, 25):
            compare()
            ours.eval()
            theirs.eval()
            compare()   # x
            ours.train()
            theirs.train()
    compare()
    ours.eval()
    theirs.eval()
    compare()
    group = theirs.param_groups[0]
    assert ours.state[0]["weight_sum"] == pytest.approx(group["weight_sum"], rel=1e-14)
    assert ours.state[0]["lr_max"] == group["lr_max"] and ours.state[0]["step"] == group["k"]
    for i, tensor in enumerate(tensors):
        for name in ("z", "exp_avg_sq"):
            np.testing.assert_allclose(ours.state[0][name][i], theirs.state[tensor][name].numpy(),
                                       **TOLERANCE[dtype])


def test_schedule_free_adamw_defaults_are_schedulefree_s(schedulefree):
    import inspect

    theirs = inspect.signature(schedulefree.AdamWScheduleFree).parameters
    ours = optim.ScheduleFreeAdamW([np.zeros(1)]).defaults
    assert set(ours) == set(theirs) - {"params", "foreach"} | {"maximize"}
    for name, value in ours.items():
        if name != "maximize":
            assert value == theirs[name].default, name


def test_schedule_free_starts_in_eval_mode_as_schedulefree(schedulefree):
    import torch

    theirs = schedulefree.AdamWScheduleFree([torch.zeros(3, requires_grad=True)])
    ours = optim.ScheduleFreeAdamW([np.zeros(3)])
    assert theirs.param_groups[0]["train_mode"] is False and ours.state[0]["train_mode"] is False
    with pytest.raises(RuntimeError, match="eval mode"):
        ours.step([np.ones(3)])
    ours.train()
    ours.step([np.ones(3)])
