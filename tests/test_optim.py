"""fastopt.optim: trajectories against fastopt.reference and torch.optim, checkpoints, bad input."""

import copy
import io
import math
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

import fastopt
from fastopt import optim, reference, schedules
from fastopt import rules as registry
from fastopt.clip import clip_coefficient, get_total_norm
import optional_packages

# Several shapes, one big enough that a step runs on two threads.
SHAPES = [(70_001,), (13, 7), (1,)]
STEPS = 8

def optim_kwargs(rule, hyper):
    """A step function's hyperparameters as the rule's optim class takes them (betas paired, extras at their examples)."""
    spec = rule.optim
    if spec is None:  # SGD, written out: torch's names, the step functions' own
        return dict(hyper)
    out = {}
    for name in spec.arguments:
        if name in spec.pairs:
            out[name] = tuple(hyper[h] for h in spec.pairs[name])
        elif name in hyper:
            out[name] = hyper[name]
        else:
            out[name] = next(h.example for h in spec.extra if h.name == name)
    return out


def _configs():
    """(id, class name, constructor arguments, overrides of the second group), from the registry.

    Per rule: its plain call with larger steps than the defaults (the second
    group decays weights, or takes other betas); each variant (the second
    group maximizes); the general gradient path (maximize, weight decay, the
    example of every other hyperparameter) with every optional buffer on in
    the first group and off in the second.
    """
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
        configs.append((rule.name, kind, optim_kwargs(rule, base), second))
        for name, variant in rule.variants.items():
            configs.append((name, kind, optim_kwargs(rule, dict(base, **variant)), {"maximize": True}))
        switches = {}
        for b in rule.optional_state:
            enabler = rule.hyper_named(b.enabled_by)
            switches[enabler.name] = True if enabler.is_switch else enabler.example
        general = dict(base, maximize=True, **switches)
        general.update({h.name: h.example for h in rule.hyper  # dampening, lr_decay, ...
                        if h.example is not None and h.default is not registry.REQUIRED and not h.is_switch
                        and h.name not in switches and h.name != "weight_decay"})
        if "weight_decay" in names:
            general["weight_decay"] = 0.01
        off = {name: rule.hyper_named(name).default for name in switches}
        configs.append((f"{rule.name}-general", kind, optim_kwargs(rule, general), off))
    return configs


CONFIGS = _configs()
CONFIG_IDS = [c[0] for c in CONFIGS]
TOLERANCE = {np.float32: dict(rtol=2e-5, atol=1e-6), np.float64: dict(rtol=1e-10, atol=1e-13)}


def make_params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]


def make_grads(dtype, steps=STEPS, seed=1, scale=1.0):
    rng = np.random.default_rng(seed)
    return [[(rng.standard_normal(shape) * scale).astype(dtype) for shape in SHAPES] for _ in range(steps)]


def two_groups(params, overrides, lr_schedule=None):
    """Group 0: the first param (lr maybe a schedule); group 1: the rest, with overrides."""
    first = {"params": params[:1]}
    if lr_schedule is not None:
        first["lr"] = lr_schedule
    return [first, {"params": params[1:], **overrides}]


# --------------------------------------------------------------------------
# the specification: a loop over fastopt.reference functions

def group_rule(kind, group):
    """The registry rule of a group of optimizer class `kind`."""
    if kind == "SGD":
        return registry.RULES["sgd_momentum" if group.get("momentum", 0.0) else "sgd"]
    return next(rule for rule in registry.RULES.values() if rule.optim_class_name == kind)


def step_hyper(kind, group):
    """The group's hyperparameters in the step function's names (betas unpaired), defaults filled in."""
    rule = group_rule(kind, group)
    pairs = {h: (key, i) for key, names in (rule.optim.pairs if rule.optim else {}).items()
             for i, h in enumerate(names)}
    defaults = getattr(optim, kind)([np.zeros(1)]).defaults
    values = {}
    for h in rule.hyper:
        if h.name in pairs:
            key, index = pairs[h.name]
            values[h.name] = group.get(key, defaults[key])[index]
        else:
            values[h.name] = group.get(h.name, defaults.get(h.name, h.default))
    return rule, values


def kept_values(rule, group, values, scalars, t):
    """The spec of what an optimizer keeps per group (its group_scalars), written from the anchor's
    code: the step's kept_by_optimizer hyperparameters (and rate), in place in values; scalars advanced."""
    if rule.name == "nadam":  # torch: mu_product *= beta1 * (1 - 0.5 * 0.96 ** (step * momentum_decay))
        scalars["mu_product"] *= values["beta1"] * (1.0 - 0.5 * 0.96 ** (t * values["momentum_decay"]))
        values["mu_product"] = scalars["mu_product"]
    elif rule.name == "schedule_free_adamw":  # schedulefree.AdamWScheduleFree.step, with k = t - 1
        k = t - 1
        sched = (k + 1) / group["warmup_steps"] if k < group["warmup_steps"] else 1.0
        lr = values["lr"] * sched
        lr_max = scalars["lr_max"] = max(lr, scalars["lr_max"])
        weight = ((k + 1) ** group["r"]) * (lr_max ** group["weight_lr_power"])
        weight_sum = scalars["weight_sum"] = scalars["weight_sum"] + weight
        values["lr"], values["average_weight"] = lr, weight / weight_sum if weight_sum else 0.0
    else:
        assert not any(h.kept_by_optimizer for h in rule.hyper), f"no spec of {rule.name}'s kept values"


def reference_step(kind, h, params, grads, state, t, lr, scale, scalars):
    rule, values = step_hyper(kind, h)
    values["lr"] = lr
    kept_values(rule, h, values, scalars, t)
    positional = [state[b.name] for b in rule.required_state]
    keywords = {b.name: state[b.name] for b in rule.state_used(values) if b.optional}
    if rule.takes_step:
        keywords["step"] = t
    getattr(reference, rule.function_name)(params, grads, *positional, **keywords, **values, grad_scale=scale)


def reference_state(kind, h, params):
    rule, values = step_hyper(kind, h)
    defaults = getattr(optim, kind)([np.zeros(1)]).defaults
    return {b.name: [np.full_like(p, h.get(b.initial, defaults.get(b.initial)) if b.initial else 0.0)
                     for p in params]
            for b in rule.state_used(values)}


def reference_run(kind, groups, grads_seq, max_grad_norm=None, norm_type=2.0):
    """Run groups ([{"params", hyperparameters}], params updated in place); returns per-group states."""
    states = [reference_state(kind, g, g["params"]) for g in groups]
    scalars = [dict(getattr(optim, kind).group_scalars) for _ in groups]
    for group_scalars in scalars:
        if "train_mode" in group_scalars:  # Schedule-Free: the runs step in train mode
            group_scalars["train_mode"] = True
    for t, grads in enumerate(grads_seq, start=1):
        scale = 1.0
        if max_grad_norm is not None:
            scale = clip_coefficient(get_total_norm(grads, norm_type), max_grad_norm)
        offset = 0
        for group, state, group_scalars in zip(groups, states, scalars):
            count = len(group["params"])
            lr = group["lr"](t) if callable(group["lr"]) else group["lr"]
            reference_step(kind, group, group["params"], grads[offset:offset + count], state, t, lr, scale,
                           group_scalars)
            offset += count
    for state, group_scalars in zip(states, scalars):
        state.update(group_scalars)
    return states


def ready_to_train(opt):
    """The optimizer, in train mode where it has modes (Schedule-Free starts in eval mode, as schedulefree's)."""
    if hasattr(opt, "train"):
        opt.train()
    return opt


def fastopt_run(kind, kwargs, groups, grads_seq, **options):
    opt = ready_to_train(getattr(optim, kind)(groups, **kwargs, **options))
    for grads in grads_seq:
        assert opt.step(grads) is True
    return opt


def assert_states_equal(opt, states):
    for group_state, expected in zip(opt.state, states):
        assert set(group_state) - {"step"} == set(expected)
        for name in expected:
            if name in opt.group_scalars:
                assert group_state[name] == expected[name], name
                continue
            for a, b in zip(group_state[name], expected[name]):
                assert np.array_equal(a, b), name


# --------------------------------------------------------------------------
# trajectories

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_trajectory_equals_reference_bit_for_bit(config, dtype):
    _, kind, kwargs, overrides = config
    schedule = schedules.linear_warmup(schedules.step_decay(kwargs.get("lr", 1e-3), 3, gamma=0.5), 2)
    params = make_params(dtype)
    grads_seq = make_grads(dtype)
    opt = fastopt_run(kind, kwargs, two_groups(params, overrides, schedule), grads_seq, num_threads=2)

    expected = make_params(dtype)
    groups = [dict(g, params=expected[:1] if i == 0 else expected[1:]) for i, g in enumerate(opt.param_groups)]
    states = reference_run(kind, groups, grads_seq)
    for a, b in zip(opt.params, expected):
        assert np.array_equal(a, b)
    assert_states_equal(opt, states)
    assert [s["step"] for s in opt.state] == [STEPS, STEPS]


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_clipped_trajectory_equals_reference_bit_for_bit(config, norm_type):
    _, kind, kwargs, overrides = config
    params = make_params(np.float32)
    grads_seq = make_grads(np.float32, scale=2.0)
    originals = copy.deepcopy(grads_seq)
    opt = fastopt_run(kind, kwargs, two_groups(params, overrides), grads_seq, max_grad_norm=50.0,
                      norm_type=norm_type)
    assert all(np.array_equal(a, b) for gs, os in zip(grads_seq, originals) for a, b in zip(gs, os))

    expected = make_params(np.float32)
    groups = [dict(g, params=expected[:1] if i == 0 else expected[1:]) for i, g in enumerate(opt.param_groups)]
    states = reference_run(kind, groups, grads_seq, max_grad_norm=50.0, norm_type=norm_type)
    for a, b in zip(opt.params, expected):
        assert np.array_equal(a, b)
    assert_states_equal(opt, states)
    assert opt.last_grad_norm == get_total_norm(grads_seq[-1], norm_type)


@pytest.mark.parametrize("kind", ["SGD", "Adam"])
def test_max_grad_norm_equals_clip_grad_norm_then_step(kind):
    """Folding the coefficient into the step is the same arithmetic as scaling the gradients first."""
    grads_seq = make_grads(np.float64, scale=3.0)
    folded = optim.__dict__[kind](make_params(np.float64), lr=0.01, max_grad_norm=20.0)
    explicit = optim.__dict__[kind](make_params(np.float64), lr=0.01)
    for grads in grads_seq:
        folded.step(grads)
        clipped = [g.copy() for g in grads]
        fastopt.clip_grad_norm(clipped, 20.0)
        explicit.step(clipped)
    for a, b in zip(folded.params, explicit.params):
        assert np.array_equal(a, b)


def torch_optimizer(torch, kind, kwargs, groups):
    torch_groups = [dict(g, params=[torch.tensor(p) for p in g["params"]]) for g in groups]
    return getattr(torch.optim, kind)(torch_groups, **kwargs)


TORCH_CONFIGS = [c for c in CONFIGS if group_rule(c[1], c[2]).torch == c[1]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("config", TORCH_CONFIGS, ids=[c[0] for c in TORCH_CONFIGS])
def test_trajectory_matches_torch_with_scheduler_and_clipping(config, dtype):
    torch = optional_packages.importorskip("torch")
    _, kind, kwargs, overrides = config
    steps, step_size, gamma, max_norm = 12, 4, 0.5, 150.0
    grads_seq = make_grads(dtype, steps=steps, scale=1.5)
    for grads in grads_seq[::2]:  # norms of about 80 and 400: half the steps are clipped
        for g in grads:
            g *= dtype(0.2)

    groups = two_groups(make_params(dtype), overrides)
    base_lrs = [g.get("lr", kwargs["lr"]) for g in groups]
    for group, lr in zip(groups, base_lrs):
        group["lr"] = schedules.step_decay(lr, step_size, gamma)
    opt = getattr(optim, kind)(groups, **kwargs, max_grad_norm=max_norm)

    # torch keeps per-step scalars (NAdam's mu_product) in its default dtype; fastopt in double
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        reference_opt = torch_optimizer(torch, kind, kwargs, two_groups(make_params(dtype), overrides))
        scheduler = torch.optim.lr_scheduler.StepLR(reference_opt, step_size, gamma)
        torch_params = [p for g in reference_opt.param_groups for p in g["params"]]
        clipped = 0
        for grads in grads_seq:
            opt.step(grads)
            for p, g in zip(torch_params, grads):
                p.grad = torch.tensor(g)
            norm = torch.nn.utils.clip_grad_norm_(torch_params, max_norm).item()
            clipped += norm > max_norm
            reference_opt.step()
            scheduler.step()
    finally:
        torch.set_default_dtype(previous)
    assert 0 < clipped < steps  # both branches of clipping were exercised
    for a, b in zip(opt.params, torch_params):
        np.testing.assert_allclose(a, b.numpy(), **TOLERANCE[dtype])


# --------------------------------------------------------------------------
# equivalences

@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_rebuilt_from_param_groups_is_equivalent(config):
    """type(opt)(groups) with the groups' hyperparameters, as a sharded wrapper rebuilds it."""
    _, kind, kwargs, overrides = config
    grads_seq = make_grads(np.float64)
    schedule = schedules.exponential(0.01, 0.9)
    first = ready_to_train(getattr(optim, kind)(two_groups(make_params(np.float64), overrides, schedule), **kwargs))
    copies = make_params(np.float64)
    rebuilt = ready_to_train(type(first)([dict(g, params=copies[:1] if i == 0 else copies[1:])
                                          for i, g in enumerate(first.param_groups)], num_threads=1))
    for a, b in zip(first.param_groups, rebuilt.param_groups):
        assert {k: v for k, v in a.items() if k != "params"} == {k: v for k, v in b.items() if k != "params"}
    for grads in grads_seq:
        first.step(grads)
        rebuilt.step(grads)
    for a, b in zip(first.params, rebuilt.params):
        assert np.array_equal(a, b)


def test_results_do_not_depend_on_threads():
    # enough elements that 3 threads really run (32,768 elements per thread at least)
    shapes = [(200_003,), (13, 7), (1,)]
    rng = np.random.default_rng(7)
    grads_seq = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(4)]
    runs = []
    for threads in (1, 2, 3):
        params = [np.random.default_rng(0).standard_normal(s).astype(np.float32) for s in shapes]
        opt = optim.Adam(params, lr=1e-2, amsgrad=True, max_grad_norm=10.0, num_threads=threads)
        for grads in grads_seq:
            opt.step(grads)
        runs.append(opt.params)
    for run in runs[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(runs[0], run))


def test_params_flat_in_group_order_and_fortran_layout():
    a, b, c = np.ones(3), np.asfortranarray(np.ones((2, 3))), np.ones(1)
    opt = optim.SGD([{"params": [a, b]}, {"params": c, "lr": 0.5}], lr=0.1)
    assert opt.params[0] is a and opt.params[1] is b and opt.params[2] is c
    opt.step((np.ones(3), np.asfortranarray(np.ones((2, 3))), np.ones(1)))
    assert a[0] == 0.9 and b[0, 0] == 0.9 and c[0] == 0.5


def test_add_param_group_starts_its_own_step_count():
    first, second = np.zeros(4), np.zeros(4)
    opt = optim.Adam([first], lr=0.1)
    opt.step([np.ones(4)])
    opt.add_param_group({"params": [second], "lr": schedules.inverse_sqrt(0.1)})
    assert opt.params == [first, second] and [s["step"] for s in opt.state] == [1, 0]
    opt.step([np.ones(4), np.ones(4)])
    assert [s["step"] for s in opt.state] == [2, 1]
    # second took Adam's first step (bias-corrected: exactly lr) with lr = 0.1 / sqrt(1)
    np.testing.assert_allclose(second, -0.1, rtol=1e-7)
    with pytest.raises(ValueError, match="twice"):
        opt.add_param_group({"params": [first]})
    with pytest.raises(ValueError, match="overlap"):
        big = np.zeros(10)
        opt.add_param_group({"params": [big[:5], big[3:]]})
    assert len(opt.param_groups) == 2


def test_hyperparameter_change_takes_effect_and_creates_state():
    p = np.zeros(3)
    opt = optim.SGD([p], lr=1.0)
    opt.step([np.ones(3)])
    assert "momentum_buffer" not in opt.state[0]
    opt.param_groups[0]["momentum"] = 0.5
    opt.param_groups[0]["lr"] = 0.5
    opt.step([np.ones(3)])  # step 2: the new buffer is zeros, so b = 0.5*0 + g
    assert np.array_equal(opt.state[0]["momentum_buffer"][0], np.ones(3))
    assert np.array_equal(p, np.full(3, -1.5))


def test_repr_is_readable():
    opt = optim.AdamW([{"params": [np.zeros(3, np.float32)]},
                       {"params": [np.zeros(5, np.float32)], "lr": schedules.cosine(0.1, 10)}],
                      max_grad_norm=1.0, skip_nonfinite=True)
    text = repr(opt)
    assert text.startswith("AdamW(")
    assert "max_grad_norm=1.0" in text and "skip_nonfinite=True" in text
    assert "group 1: 1 params, 5 float32 elements, step 0; lr=cosine(lr=0.1, total_steps=10, min_lr=0.0)" in text
    assert "weight_decay=0.01" in text and "betas=(0.9, 0.999)" in text


def test_torch_defaults():
    """Every constructor default is torch.optim's."""
    torch = optional_packages.importorskip("torch")
    weight = torch.zeros(1)
    kinds = {rule.optim_class_name for rule in registry.RULES.values() if rule.torch}
    assert {"SGD", "Adam", "RAdam"} <= kinds
    for kind in sorted(kinds):
        ours = getattr(optim, kind)([np.zeros(1)]).defaults
        theirs = getattr(torch.optim, kind)([weight]).defaults
        for key, value in ours.items():
            assert theirs[key] == value, (kind, key)


# --------------------------------------------------------------------------
# non-finite gradients

@pytest.mark.parametrize("max_grad_norm", [None, 1.0])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_skip_nonfinite_writes_nothing_and_counts(bad, max_grad_norm):
    grads_seq = make_grads(np.float32, steps=4)
    poisoned = copy.deepcopy(grads_seq[1])
    poisoned[0][12_345] = bad

    skipping = optim.Adam(make_params(np.float32), lr=1e-2, amsgrad=True, max_grad_norm=max_grad_norm,
                          skip_nonfinite=True)
    clean = optim.Adam(make_params(np.float32), lr=1e-2, amsgrad=True, max_grad_norm=max_grad_norm)
    results = []
    for t, grads in enumerate(grads_seq):
        if t == 2:
            before = skipping.state_dict()
            results.append(skipping.step(poisoned))
            after = skipping.state_dict()
            assert all(np.array_equal(before[k], after[k]) for k in before if k != "skipped_steps")
        results.append(skipping.step(grads))
        clean.step(grads)
    assert results == [True, True, False, True, True]
    assert skipping.skipped_steps == 1 and skipping.state[0]["step"] == 4
    for a, b in zip(skipping.params, clean.params):
        assert np.array_equal(a, b)


def test_without_skip_nonfinite_nan_flows_into_the_step():
    p = np.zeros(3)
    opt = optim.SGD([p], lr=0.1, max_grad_norm=1.0)
    assert opt.step([np.array([1.0, np.nan, 1.0])]) is True
    assert math.isnan(opt.last_grad_norm) and np.isnan(p[1]) and opt.skipped_steps == 0


def test_finite_gradient_overflowing_the_norm_is_not_skipped():
    """float64 gradients of 1e200: the 2-norm overflows, yet they are finite, so the step is taken."""
    p = np.zeros(2)
    opt = optim.SGD([p], lr=1.0, max_grad_norm=1.0, skip_nonfinite=True)
    assert opt.step([np.array([1e200, -1e200])]) is True
    assert opt.last_grad_norm == math.inf and opt.skipped_steps == 0
    assert np.array_equal(p, np.zeros(2))  # as torch: coefficient max_norm / inf = 0


# --------------------------------------------------------------------------
# checkpoints

RESUME_CONFIGS = [c for c in CONFIGS if c[0].endswith("-general") and c[0] != "sgd-general"]


def save_pickle(state_dict):
    return pickle.loads(pickle.dumps(state_dict))


def save_npz(state_dict):
    buffer = io.BytesIO()
    np.savez(buffer, **state_dict)
    buffer.seek(0)
    return np.load(buffer)  # loaded as it is, without allow_pickle


@pytest.mark.parametrize("save", [save_pickle, save_npz], ids=["pickle", "npz"])
@pytest.mark.parametrize("config", RESUME_CONFIGS, ids=[c[0] for c in RESUME_CONFIGS])
def test_resume_is_bit_identical(config, save):
    _, kind, kwargs, overrides = config
    k = 5
    grads_seq = make_grads(np.float32, steps=2 * k, scale=3.0)
    grads_seq[2][1][0, 0] = np.nan  # a skipped step before the checkpoint
    options = dict(max_grad_norm=60.0, skip_nonfinite=True)

    def build(params):
        schedule = schedules.cosine(kwargs["lr"], 2 * k)
        return ready_to_train(getattr(optim, kind)(two_groups(params, overrides, schedule), **kwargs, **options))

    uninterrupted = build(make_params(np.float32))
    for grads in grads_seq:
        uninterrupted.step(grads)

    first = build(make_params(np.float32))
    for grads in grads_seq[:k]:
        first.step(grads)
    checkpoint = save({"params": [p.copy() for p in first.params], "optimizer": first.state_dict()}) \
        if save is save_pickle else None
    if checkpoint is None:
        checkpoint = {"params": [p.copy() for p in first.params], "optimizer": save(first.state_dict())}
    del first

    resumed = build([p.copy() for p in checkpoint["params"]])
    resumed.load_state_dict(checkpoint["optimizer"])
    assert resumed.skipped_steps == 1
    for grads in grads_seq[k:]:
        resumed.step(grads)
    for a, b in zip(resumed.params, uninterrupted.params):
        assert np.array_equal(a, b)
    final, expected = resumed.state_dict(), uninterrupted.state_dict()
    assert set(final) == set(expected)
    for key in expected:
        assert np.array_equal(final[key], expected[key]), key


def test_state_dict_is_a_snapshot_of_plain_values():
    opt = optim.Adam([np.zeros(3)], lr=schedules.cosine(0.1, 10), betas=(0.8, 0.9))
    opt.step([np.ones(3)])
    state = opt.state_dict()
    assert "groups.0.lr" not in state  # a schedule stays with the code
    assert state["kind"] == "Adam" and state["groups.0.step"] == 1 and state["groups.0.betas"] == (0.8, 0.9)
    assert all(isinstance(v, (str, int, float, bool, tuple, np.ndarray)) for v in state.values())
    saved = state["state.0.exp_avg.0"].copy()
    opt.step([np.ones(3)])
    assert np.array_equal(state["state.0.exp_avg.0"], saved)  # a copy, not the live buffer


def test_load_restores_hyperparameters_like_torch():
    source = optim.SGD([np.zeros(2)], lr=0.5, momentum=0.9)
    target = optim.SGD([np.zeros(2)], lr=0.1, momentum=0.9)
    target.load_state_dict(save_npz(source.state_dict()))
    assert target.param_groups[0]["lr"] == 0.5 and isinstance(target.param_groups[0]["lr"], float)
    assert target.param_groups[0]["nesterov"] is False


def _mismatches():
    """(name, edit of a valid Adam(amsgrad) state_dict of two groups) that load_state_dict must refuse."""
    def drop(key):
        return lambda d: d.pop(key)

    def set_(key, value):
        return lambda d: d.__setitem__(key, value)

    return [
        ("kind", set_("kind", "SGD")),
        ("format", set_("format", 99)),
        ("num_groups", set_("num_groups", 3)),
        ("num_params", set_("groups.1.num_params", 1)),
        ("missing buffer", drop("state.1.max_exp_avg_sq.1")),
        ("shape", set_("state.0.exp_avg.0", np.zeros(4, np.float32))),
        ("dtype", set_("state.0.exp_avg.0", np.zeros(70_001, np.float64))),
        ("not an array", set_("state.0.exp_avg.0", [0.0] * 70_001)),
        ("extra entry", set_("state.0.momentum_buffer.0", np.zeros(70_001, np.float32))),
        ("buffers of another setting", set_("groups.1.amsgrad", False)),
        ("negative step", set_("groups.0.step", -1)),
        ("float step", set_("groups.0.step", 1.5)),
        ("bad hyperparameter", set_("groups.0.eps", -1.0)),
        ("bad betas", set_("groups.1.betas", (0.9, 1.5))),
        ("wrong type", set_("groups.1.amsgrad", "yes")),
        ("missing step", drop("groups.0.step")),
    ]


@pytest.mark.parametrize("name, edit", _mismatches(), ids=[m[0] for m in _mismatches()])
def test_load_state_dict_mismatch_leaves_optimizer_untouched(name, edit):
    grads_seq = make_grads(np.float32, steps=3)
    source = optim.Adam(two_groups(make_params(np.float32, seed=5), {}), lr=1e-2, amsgrad=True)
    for grads in grads_seq[:2]:
        source.step(grads)
    bad = source.state_dict()
    edit(bad)

    target = optim.Adam(two_groups(make_params(np.float32), {}), lr=1e-2, amsgrad=True)
    target.step(grads_seq[0])
    before = target.state_dict()
    groups_before = copy.deepcopy([{k: v for k, v in g.items() if k != "params"} for g in target.param_groups])
    with pytest.raises(ValueError):
        target.load_state_dict(bad)
    after = target.state_dict()
    assert set(before) == set(after) and all(np.array_equal(before[k], after[k]) for k in before)
    assert groups_before == [{k: v for k, v in g.items() if k != "params"} for g in target.param_groups]


def test_load_state_dict_refuses_non_mappings():
    opt = optim.SGD([np.zeros(2)])
    for bad in (None, [1, 2], "state"):
        with pytest.raises(ValueError):
            opt.load_state_dict(bad)


# --------------------------------------------------------------------------
# bad input

def _bad_steps():
    def grads(**changes):
        """Valid grads for two_groups(make_params(float32)) with the entries in changes replaced."""
        out = [np.ones(shape, np.float32) for shape in SHAPES]
        for index, value in changes.items():
            out[int(index[1:])] = value
        return out

    return [
        ("too few", grads()[:2], ValueError),
        ("too many", grads() + [np.ones(1, np.float32)], ValueError),
        ("shape", grads(g2=np.ones(2, np.float32)), ValueError),
        ("transposed", grads(g1=np.ones((7, 13), np.float32)), ValueError),
        ("dtype", grads(g2=np.ones(1, np.float64)), TypeError),
        ("byte order", grads(g2=np.ones(1, ">f4")), TypeError),
        ("not an array", grads(g2=[1.0]), TypeError),
        ("layout", grads(g1=np.asfortranarray(np.ones((13, 7), np.float32))), ValueError),
        ("strided", grads(g1=np.ones((13, 14), np.float32)[:, ::2]), ValueError),
        ("aliasing a param", None, ValueError),
        ("one array", np.ones(3, np.float32), TypeError),
        ("a dict", {"a": 1}, TypeError),
    ]


@pytest.mark.parametrize("name, grads, error", _bad_steps(), ids=[b[0] for b in _bad_steps()])
def test_bad_grads_raise_and_write_nothing(name, grads, error):
    params = make_params(np.float32)
    opt = optim.Adam(two_groups(params, {}), lr=1e-2, max_grad_norm=1.0, skip_nonfinite=True)
    opt.step([np.ones(shape, np.float32) for shape in SHAPES])
    if grads is None:  # the last group's grad is the first group's param
        grads = [np.ones(SHAPES[0], np.float32), np.ones(SHAPES[1], np.float32), params[0][:1]]
    before = opt.state_dict()
    params_before = [p.copy() for p in params]
    with pytest.raises(error):
        opt.step(grads)
    after = opt.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert all(np.array_equal(a, b) for a, b in zip(params, params_before))


@pytest.mark.parametrize("spoil", ["grad shared across groups", "param made read-only"])
def test_a_step_of_two_groups_fails_before_the_first_group_writes(spoil):
    """What the second group's kernel would refuse is refused before the first group's kernel runs."""
    params = make_params(np.float32)
    opt = optim.SGD(two_groups(params, {}), lr=0.1, momentum=0.9)
    grads = [np.ones(shape, np.float32) for shape in SHAPES]
    if spoil == "grad shared across groups":
        grads[-1] = grads[0][:1]
    else:
        params[-1].flags.writeable = False
    before = opt.state_dict()
    params_before = [p.copy() for p in params]
    with pytest.raises(ValueError, match="overlap in memory|read-only"):
        opt.step(grads)
    after = opt.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert all(np.array_equal(a, b) for a, b in zip(params, params_before))


def test_bad_schedule_value_raises_before_any_write():
    params = make_params(np.float64)
    opt = optim.SGD(two_groups(params, {"lr": lambda t: 0.1 if t < 2 else -1.0}), lr=0.1)
    opt.step(make_grads(np.float64, steps=1)[0])
    params_before = [p.copy() for p in params]
    with pytest.raises(ValueError, match="lr"):
        opt.step(make_grads(np.float64, steps=1)[0])
    assert all(np.array_equal(a, b) for a, b in zip(params, params_before))
    assert [s["step"] for s in opt.state] == [1, 1]


def _bad_constructions():
    ok = [np.zeros(3)]
    frozen = np.zeros(3)
    frozen.flags.writeable = False
    shared = np.zeros(10)
    return [
        ("empty", lambda: optim.SGD([]), ValueError),
        ("one array", lambda: optim.SGD(np.zeros(3)), TypeError),
        ("generator", lambda: optim.SGD(p for p in ok), TypeError),
        ("int dtype", lambda: optim.SGD([np.zeros(3, int)]), TypeError),
        ("uint16", lambda: optim.SGD([np.zeros(3, np.uint16)]), TypeError),
        ("not an array", lambda: optim.SGD([[0.0]]), TypeError),
        ("read-only", lambda: optim.SGD([frozen]), ValueError),
        ("strided", lambda: optim.SGD([np.zeros((4, 4))[:, 1]]), ValueError),
        ("mixed dtypes in a group", lambda: optim.SGD([np.zeros(3), np.zeros(3, np.float32)]), TypeError),
        ("duplicate", lambda: optim.SGD(ok + ok), ValueError),
        ("duplicate across groups", lambda: optim.SGD([{"params": ok}, {"params": ok}]), ValueError),
        ("overlap", lambda: optim.SGD([shared[:6], shared[5:]]), ValueError),
        ("unknown key", lambda: optim.SGD([{"params": ok, "betas": (0.9, 0.99)}]), ValueError),
        ("no params key", lambda: optim.SGD([{"lr": 0.1}]), ValueError),
        ("empty group", lambda: optim.SGD([{"params": []}]), ValueError),
        ("negative lr", lambda: optim.SGD(ok, lr=-0.1), ValueError),
        ("nan lr", lambda: optim.Adam(ok, lr=float("nan")), ValueError),
        ("string lr", lambda: optim.Adam(ok, lr="0.1"), TypeError),
        ("negative lr in a group", lambda: optim.Adam([{"params": ok, "lr": -1.0}]), ValueError),
        ("beta1 = 1", lambda: optim.Adam(ok, betas=(1.0, 0.999)), ValueError),
        ("three betas", lambda: optim.Adam(ok, betas=(0.9, 0.99, 0.9)), TypeError),
        ("negative eps", lambda: optim.RMSprop(ok, eps=-1e-8), ValueError),
        ("alpha > 1", lambda: optim.RMSprop(ok, alpha=1.5), ValueError),
        ("nesterov without momentum", lambda: optim.SGD(ok, nesterov=True), ValueError),
        ("nesterov with dampening", lambda: optim.SGD(ok, momentum=0.9, dampening=0.1, nesterov=True),
         ValueError),
        ("negative momentum", lambda: optim.SGD(ok, momentum=-0.9), ValueError),
        ("maximize not a bool", lambda: optim.SGD(ok, maximize=1), TypeError),
        ("amsgrad not a bool", lambda: optim.AdamW(ok, amsgrad="yes"), TypeError),
        ("negative initial_accumulator_value", lambda: optim.Adagrad(ok, initial_accumulator_value=-1), ValueError),
        ("negative lr_decay", lambda: optim.Adagrad(ok, lr_decay=-1), ValueError),
        ("beta = 1", lambda: optim.Momentum(ok, beta=1.0), ValueError),
        ("num_threads 0", lambda: optim.SGD(ok, num_threads=0), ValueError),
        ("num_threads float", lambda: optim.SGD(ok, num_threads=2.0), TypeError),
        ("max_grad_norm 0", lambda: optim.SGD(ok, max_grad_norm=0.0), ValueError),
        ("max_grad_norm nan", lambda: optim.SGD(ok, max_grad_norm=float("nan")), ValueError),
        ("norm_type 0", lambda: optim.SGD(ok, max_grad_norm=1.0, norm_type=0), ValueError),
        ("skip_nonfinite not a bool", lambda: optim.SGD(ok, skip_nonfinite="no"), TypeError),
        ("unknown option", lambda: optim.SGD(ok, foreach=True), TypeError),
        ("Schedule-Free beta1 = 0", lambda: optim.ScheduleFreeAdamW(ok, betas=(0.0, 0.999)), ValueError),
        ("Schedule-Free fractional warmup", lambda: optim.ScheduleFreeAdamW(ok, warmup_steps=2.5), TypeError),
        ("Schedule-Free negative warmup", lambda: optim.ScheduleFreeAdamW(ok, warmup_steps=-1), ValueError),
        ("Schedule-Free negative weight_lr_power", lambda: optim.ScheduleFreeAdamW(ok, weight_lr_power=-1.0),
         ValueError),
        ("Schedule-Free nan r", lambda: optim.ScheduleFreeAdamW(ok, r=float("nan")), ValueError),
        ("Schedule-Free takes no average_weight", lambda: optim.ScheduleFreeAdamW(ok, average_weight=0.5),
         TypeError),
        ("NAdam negative momentum_decay", lambda: optim.NAdam(ok, momentum_decay=-1e-3), ValueError),
        ("NAdam decoupled not a bool", lambda: optim.NAdam(ok, decoupled_weight_decay=1), TypeError),
        ("NAdam takes no mu_product", lambda: optim.NAdam(ok, mu_product=0.5), TypeError),
        ("RAdam beta2 = 1", lambda: optim.RAdam(ok, betas=(0.9, 1.0)), ValueError),
        ("RAdam decoupled not a bool", lambda: optim.RAdam(ok, decoupled_weight_decay="no"), TypeError),
        ("Adamax negative weight_decay", lambda: optim.Adamax(ok, weight_decay=-0.1), ValueError),
        ("Adamax nan eps", lambda: optim.Adamax(ok, eps=float("nan")), ValueError),
    ]


# --------------------------------------------------------------------------
# what an optimizer keeps per group besides its step count (NAdam's mu_product)

def test_nadam_keeps_the_product_of_its_momentum_coefficients():
    beta1, psi = 0.8, 0.01
    opt = optim.NAdam([np.zeros(3)], betas=(beta1, 0.99), momentum_decay=psi)
    assert opt.state[0]["mu_product"] == 1.0
    product = 1.0
    for t in range(1, 5):
        opt.step([np.full(3, float(t))])
        product *= beta1 * (1 - 0.5 * 0.96 ** (t * psi))
        assert opt.state[0]["mu_product"] == product
    assert opt.state_dict()["groups.0.mu_product"] == product


def test_a_skipped_step_leaves_the_kept_product_as_it_was():
    grads_seq = make_grads(np.float32, steps=4)
    poisoned = copy.deepcopy(grads_seq[1])
    poisoned[1][0, 0] = np.nan
    skipping = optim.NAdam(make_params(np.float32), lr=1e-2, skip_nonfinite=True)
    clean = optim.NAdam(make_params(np.float32), lr=1e-2)
    for t, grads in enumerate(grads_seq):
        if t == 1:
            product = skipping.state[0]["mu_product"]
            assert skipping.step(poisoned) is False
            assert skipping.state[0]["mu_product"] == product
        skipping.step(grads)
        clean.step(grads)
    assert skipping.state[0]["mu_product"] == clean.state[0]["mu_product"]
    assert all(np.array_equal(a, b) for a, b in zip(skipping.params, clean.params))


def test_a_group_added_later_keeps_its_own_product():
    opt = optim.NAdam([np.zeros(3)], lr=1e-2)
    for _ in range(3):
        opt.step([np.ones(3)])
    opt.add_param_group({"params": [np.zeros(2)]})
    assert opt.state[1] == {"step": 0, "mu_product": 1.0, "exp_avg": opt.state[1]["exp_avg"],
                            "exp_avg_sq": opt.state[1]["exp_avg_sq"]}
    opt.step([np.ones(3), np.ones(2)])
    fresh = optim.NAdam([np.zeros(2)], lr=1e-2)
    fresh.step([np.ones(2)])
    assert opt.state[1]["mu_product"] == fresh.state[0]["mu_product"] != opt.state[0]["mu_product"]
    assert np.array_equal(opt.params[1], fresh.params[0])


def test_a_state_without_the_kept_scalars_is_a_clear_error():
    """A wrapper that holds an optimizer's state (fastopt.distributed's carries step counts and
    buffers) must keep its group_scalars too; without them a step says so, and writes nothing."""
    params = [np.zeros(3)]
    opt = optim.NAdam(params)
    del opt.state[0]["mu_product"]
    with pytest.raises(RuntimeError, match="state of group 0 lacks mu_product"):
        opt.step([np.ones(3)])
    assert np.array_equal(params[0], np.zeros(3)) and opt.state[0]["step"] == 0


@pytest.mark.parametrize("value, error", [("0.5", "must be a finite number"), (True, "must be a finite number"),
                                          (float("nan"), "must be a finite number"), (np.zeros(2), "must be a scalar")])
def test_load_refuses_a_bad_kept_scalar(value, error):
    opt = optim.NAdam([np.zeros(3)])
    opt.step([np.ones(3)])
    saved = opt.state_dict()
    saved["groups.0.mu_product"] = value
    with pytest.raises(ValueError, match=error):
        opt.load_state_dict(saved)
    del saved["groups.0.mu_product"]
    with pytest.raises(ValueError, match="no 'groups.0.mu_product'"):
        opt.load_state_dict(saved)


# --------------------------------------------------------------------------
# Schedule-Free: the modes, and the numbers each group keeps

def test_schedule_free_steps_only_in_train_mode_and_writes_nothing_otherwise():
    opt = optim.ScheduleFreeAdamW(make_params(np.float32), lr=1e-2)
    grads = make_grads(np.float32, steps=1)[0]
    before = [p.copy() for p in opt.params]
    with pytest.raises(RuntimeError, match=r"group 0 is in eval mode .* call train\(\)"):
        opt.step(grads)
    assert all(np.array_equal(a, b) for a, b in zip(opt.params, before)) and opt.state[0]["step"] == 0
    opt.train()
    assert opt.step(grads) is True
    opt.eval()
    with pytest.raises(RuntimeError, match="eval mode"):
        opt.step(grads)
    opt.train()
    opt.add_param_group({"params": [np.zeros(3, np.float32)]})   # a new group starts in eval mode
    with pytest.raises(RuntimeError, match="group 1 is in eval mode"):
        opt.step(grads + [np.ones(3, np.float32)])
    opt.train()
    assert opt.step(grads + [np.ones(3, np.float32)]) is True


def test_schedule_free_modes_before_the_first_step_leave_the_params_alone():
    """Until a group's first step its z is not a copy of its params (schedulefree makes z at the
    first step), so train() and eval() only set the mode: params changed in place after construction
    (weights loaded into them) are what the first step starts from."""
    params = [np.zeros(5)]
    opt = optim.ScheduleFreeAdamW(params, lr=0.1)
    params[0][...] = np.arange(5.0)           # loaded after the optimizer was made
    opt.eval()
    opt.train()
    assert np.array_equal(params[0], np.arange(5.0)) and opt.state[0]["train_mode"] is True
    opt.step([np.ones(5)])
    twin = optim.ScheduleFreeAdamW([np.arange(5.0)], lr=0.1)
    twin.train()
    twin.step([np.ones(5)])
    assert np.array_equal(params[0], twin.params[0])
    assert np.array_equal(opt.state[0]["z"][0], np.arange(5.0) - 0.1 * np.ones(5) / (1 + 1e-8))


def test_schedule_free_keeps_the_running_sums_of_schedulefree():
    lr, warmup = 0.02, 3
    opt = optim.ScheduleFreeAdamW([np.zeros(2)], lr=lr, warmup_steps=warmup, r=0.5, weight_lr_power=2.0)
    opt.train()
    weight_sum, lr_max = 0.0, -1.0
    for t in range(1, 7):
        opt.step([np.ones(2)])
        lr_t = lr * (t / warmup if t <= warmup else 1.0)
        lr_max = max(lr_max, lr_t)
        weight_sum += t**0.5 * lr_max**2
        assert opt.state[0]["lr_max"] == lr_max
        assert opt.state[0]["weight_sum"] == pytest.approx(weight_sum, rel=1e-15)
    saved = opt.state_dict()
    assert saved["groups.0.train_mode"] is True and saved["groups.0.lr_max"] == lr
    assert saved["groups.0.weight_sum"] == opt.state[0]["weight_sum"]


def test_schedule_free_with_zero_lr_moves_nothing():
    """lr = 0: every weight is 0, so is their sum, and the average's weight is 0 as in schedulefree."""
    params = [np.arange(4.0)]
    opt = optim.ScheduleFreeAdamW(params, lr=0.0)
    opt.train()
    for _ in range(3):
        opt.step([np.ones(4)])
    assert opt.state[0]["weight_sum"] == 0.0 and np.array_equal(params[0], np.arange(4.0))


def test_schedule_free_weight_overflow_is_a_clear_error():
    opt = optim.ScheduleFreeAdamW([np.zeros(2)], r=200.0)
    opt.train()
    opt.step([np.ones(2)])
    opt.state[0]["step"] = 10**6
    with pytest.raises(ValueError, match="averaging weight .* overflows"):
        opt.step([np.ones(2)])


@pytest.mark.parametrize("save", [save_pickle, save_npz], ids=["pickle", "npz"])
def test_schedule_free_resume_from_eval_mode_is_bit_identical(save):
    """Saved in eval mode (the params hold x), loaded, train(): the same bits as a run that took
    eval() and train() at that point without stopping."""
    grads_seq = make_grads(np.float32, steps=8)

    def build(params):
        return optim.ScheduleFreeAdamW(two_groups(params, {"weight_decay": 0.1}), lr=1e-2, warmup_steps=2)

    uninterrupted = build(make_params(np.float32))
    uninterrupted.train()
    first = build(make_params(np.float32))
    first.train()
    for grads in grads_seq[:4]:
        uninterrupted.step(grads)
        first.step(grads)
    uninterrupted.eval()
    first.eval()
    checkpoint = {"params": [p.copy() for p in first.params], "optimizer": save(first.state_dict())}
    uninterrupted.train()
    for grads in grads_seq[4:]:
        uninterrupted.step(grads)

    resumed = build(checkpoint["params"])
    resumed.load_state_dict(checkpoint["optimizer"])
    assert [s["train_mode"] for s in resumed.state] == [False, False]
    resumed.train()
    for grads in grads_seq[4:]:
        resumed.step(grads)
    for a, b in zip(resumed.params, uninterrupted.params):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("key, value", [("groups.0.train_mode", 1), ("groups.1.weight_sum", "0"),
                                        ("groups.0.lr_max", None)])
def test_schedule_free_load_refuses_bad_running_numbers(key, value):
    opt = optim.ScheduleFreeAdamW(two_groups(make_params(np.float32), {}))
    opt.train()
    opt.step(make_grads(np.float32, steps=1)[0])
    saved = opt.state_dict()
    saved[key] = value
    before = opt.state_dict()
    with pytest.raises(ValueError, match=key.replace(".", "\\.")):
        opt.load_state_dict(saved)
    after = opt.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("build, error", [b[1:] for b in _bad_constructions()],
                         ids=[b[0] for b in _bad_constructions()])
def test_bad_construction(build, error):
    with pytest.raises(error):
        build()


# --------------------------------------------------------------------------
# the documentation runs

def test_readme_code_runs(tmp_path, monkeypatch):
    """Every python block of the README, in order, as one program."""
    doc = Path(__file__).resolve().parents[1] / "README.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    assert blocks
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for block in blocks:
        exec(compile(block, str(doc), "exec"), namespace)


def test_step_grad_scale_is_folded_like_a_scaled_gradient():
    """grad_scale = 0.5 (a power of two, so every product is exact either way) with clipping."""
    grads_seq = make_grads(np.float32, scale=4.0)
    folded = optim.Adam(make_params(np.float32), lr=1e-2, max_grad_norm=100.0)
    explicit = optim.Adam(make_params(np.float32), lr=1e-2)
    for grads in grads_seq:
        folded.step(grads, grad_scale=0.5)
        scaled = [g * np.float32(0.5) for g in grads]
        norm = fastopt.clip_grad_norm(scaled, 100.0)
        explicit.step(scaled)
        assert folded.last_grad_norm == norm
    for a, b in zip(folded.params, explicit.params):
        assert np.array_equal(a, b)
    params_before = [p.copy() for p in folded.params]
    for bad, error in ((-1.0, ValueError), (float("nan"), ValueError), ("1", TypeError)):
        with pytest.raises(error):
            folded.step(grads_seq[0], grad_scale=bad)
    assert all(np.array_equal(a, b) for a, b in zip(folded.params, params_before))


def test_load_state_dict_copies_into_the_existing_buffers():
    source = optim.Adam([np.zeros(3)], lr=0.1)
    source.step([np.ones(3)])
    target = optim.Adam([np.zeros(3)], lr=0.1)
    exp_avg = target.state[0]["exp_avg"][0]
    target.load_state_dict(source.state_dict())
    assert target.state[0]["exp_avg"][0] is exp_avg and np.array_equal(exp_avg, source.state[0]["exp_avg"][0])
    assert target.state[0]["step"] == 1
