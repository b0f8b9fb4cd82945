"""The benchmark machinery: workloads, byte counts, that every implementation
computes the rule it is compared on, timing, goals, busy processes, and the CLI end to end
on tiny workloads.  No timing is asserted."""

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import time

import ml_dtypes
import numpy as np
import pytest

import fastopt
from fastopt import _core, optim, reference
from fastopt.bench import busy, cli, goals, modes, peers, report, rules, timing, workloads
from fastopt.bench import factored as bench_factored
from fastopt.__main__ import main as cli_main
from child_python import child_env
import optional_packages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_NUMBA = importlib.util.find_spec("numba") is not None


DEFAULT_THREADS = fastopt.get_num_threads()


@pytest.fixture(autouse=True)
def restore_openmp_default():
    """torch.set_num_threads changes the OpenMP default that fastopt (and every
    other test) sees in this process: put it back."""
    yield
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(DEFAULT_THREADS)


# --------------------------------------------------------------------------
# workloads


def test_gpt2_small_has_148_tensors_and_124_4m_params():
    shapes = workloads.workload_shapes("gpt2-small")
    assert len(shapes) == 148
    assert workloads.count_params(shapes) == 124_439_808
    assert shapes[:2] == [(50257, 768), (1024, 768)]
    assert shapes[-2:] == [(768,), (768,)]


def test_mnist_mlp_shapes():
    assert workloads.workload_shapes("mnist-mlp") == [(784, 256), (256,), (256, 128), (128,), (128, 10), (10,)]
    assert workloads.count_params(workloads.workload_shapes("mnist-mlp")) == 235_146


@pytest.mark.parametrize("name, shapes", [
    ("1e5", [(100_000,)]),
    ("1e7", [(10_000_000,)]),
    ("4096", [(4096,)]),
    ("16x3", [(16,)] * 3),
    ("1e3x2", [(1000,)] * 2),
])
def test_numeric_workloads(name, shapes):
    assert workloads.workload_shapes(name) == shapes


@pytest.mark.parametrize("name", ["gpt3", "0", "1.5", "x3", "1e5x", ""])
def test_unknown_workload_is_refused(name):
    with pytest.raises(ValueError, match="unknown workload"):
        workloads.workload_shapes(name)


# --------------------------------------------------------------------------
# bytes moved per parameter, and that they are the buffers the step touches

# Worked out by hand, for the rules the counts were first written for; every rule's
# counted buffers are checked against what its step writes below.
BYTES_FLOAT32 = {
    "sgd": 12, "momentum": 20, "sgd_momentum": 20, "nesterov": 20, "rmsprop": 20,
    "rmsprop_centered": 36, "adagrad": 20, "adam": 28, "amsgrad": 36, "adamw": 28, "radam": 28,
    "adamax": 28, "nadam": 28, "schedule_free_adamw": 28,
}


@pytest.mark.parametrize("name", sorted(BYTES_FLOAT32))
def test_bytes_per_param(name):
    rule = rules.RULES[name]
    assert rule.bytes_per_param("float32") == BYTES_FLOAT32[name]
    assert rule.bytes_per_param(np.float64) == 2 * BYTES_FLOAT32[name]


def _changed(before, after):
    return [not np.array_equal(b, a) for b, a in zip(before, after)]


@pytest.mark.parametrize("name", sorted(rules.RULES))
def test_counted_state_buffers_are_the_ones_the_step_writes(name):
    """The byte count assumes the step reads and writes param and each state
    buffer: one step of the fastopt call must change every one of them, and
    the ceiling with the same number of state buffers must change as many."""
    rule = rules.RULES[name]
    params, grads = workloads.make_buffers([(64,)], "float32")
    states = peers.new_states(rule, params)
    positional, keywords = peers.fastopt_arguments(rule, states, 1, peers.BENCH_STEP)
    buffers = [params[0]] + [states[n][0] for n in rule.state_names]
    before = [b.copy() for b in buffers]
    getattr(fastopt, rule.function)(params, grads, *positional, **keywords)
    assert all(_changed(before, buffers)), f"{name}: a counted buffer was not written"

    ceiling_states = [np.zeros(64, np.float32) for _ in range(rule.n_state)]
    ceiling_buffers = [params[0]] + ceiling_states
    before = [b.copy() for b in ceiling_buffers]
    _core.ceiling_step(params[0], grads[0], *ceiling_states)
    assert all(_changed(before, ceiling_buffers))


def test_torch_kwargs_follow_torch_names():
    adam = rules.RULES["adam"].torch_kwargs()
    assert adam["betas"] == (0.9, 0.999) and adam["lr"] == 1e-3 and "beta1" not in adam
    momentum = rules.RULES["momentum"].torch_kwargs()
    assert momentum["momentum"] == momentum["dampening"] == 0.9 and "beta" not in momentum
    assert rules.RULES["nesterov"].torch_kwargs()["nesterov"] is True


def test_configurations_come_from_the_registry():
    """Every registry rule is benchmarked, with each variant; byte counts follow its used buffers."""
    from fastopt import rules as registry
    expected = {name for rule in registry.RULES.values() for name in (rule.name, *rule.variants)}
    assert set(rules.RULES) == expected
    for name, rule in registry.RULES.items():
        configuration = rules.RULES[name]
        assert configuration.function == rule.function_name
        assert configuration.bytes_per_param("float32") == rule.bytes_per_element(4, configuration.hyper)


# --------------------------------------------------------------------------
# precision modes (--dtype): buffers, bytes, and that each implementation steps them

NEW_MODES = ["bfloat16", "float16", "master-bfloat16", "master-float16", "float32-8bit"]
BF16 = np.dtype(ml_dtypes.bfloat16)

# Adam on 8192 elements (32 blocks of 256), worked out by hand: (bytes moved, state bytes) per param
ADAM_MODE_BYTES = {
    "float32": (28, 8),
    "bfloat16": (14, 4),                 # 2 + 2 + 2 + 2 * (2 + 2)
    "float16": (14, 4),
    "master-bfloat16": (28, 12),         # 4 + 4 + 2 + 8 + 8 + 2; m, v and the float32 master
    "master-float16": (28, 12),
    "float32-8bit": (16.0625, 2.03125),  # 12 + 2 * 2 * (1 + 4 / 256)
}


@pytest.mark.parametrize("mode", sorted(ADAM_MODE_BYTES))
def test_mode_bytes_per_param(mode):
    rule = rules.RULES["adam"]
    params, grads, copies = modes.make_mode_buffers([(8192,)], mode)
    states = peers.new_states(rule, params, mode)
    moved, kept = ADAM_MODE_BYTES[mode]
    assert modes.traffic_bytes(params, grads, states, copies) == moved * 8192
    assert modes.state_bytes(params, states, copies) == kept * 8192


def test_mode_buffers_have_the_dtypes_of_the_mode():
    params, grads, copies = modes.make_mode_buffers([(5000,), (10,)], "master-bfloat16")
    assert [(p.dtype, g.dtype, c.dtype) for p, g, c in zip(params, grads, copies)] == [(np.float32, BF16, BF16)] * 2
    np.testing.assert_array_equal(params[0], copies[0].astype(np.float32))   # a master starts at its copy
    params, grads, copies = modes.make_mode_buffers([(10,)], "float16")
    assert params[0].dtype == grads[0].dtype == np.float16 and copies is None
    states = peers.new_states(rules.RULES["adam"], *modes.make_mode_buffers([(5000,), (10,)], "bfloat16")[:1],
                              "bfloat16")
    assert all(b.dtype == BF16 for buffers in states.values() for b in buffers)


def test_8bit_mode_quantizes_what_fastopt_optim_quantizes():
    params, _, _ = modes.make_mode_buffers([(optim.QUANTIZE_MIN_SIZE,), (optim.QUANTIZE_MIN_SIZE - 1,)],
                                           "float32-8bit")
    states = peers.new_states(rules.RULES["adam"], params, "float32-8bit")
    big_m, small_m = states["exp_avg"]
    big_v, small_v = states["exp_avg_sq"]
    assert isinstance(big_m, fastopt.QuantizedState) and big_m.signed and big_m.block_size == modes.BLOCK_SIZE
    assert isinstance(big_v, fastopt.QuantizedState) and not big_v.signed
    assert small_m.dtype == small_v.dtype == np.float32
    # Schedule-Free's z is never 8-bit
    z = peers.new_states(rules.RULES["schedule_free_adamw"], params, "float32-8bit")["z"]
    assert all(isinstance(b, np.ndarray) and b.dtype == np.float32 for b in z)


@pytest.mark.parametrize("implementation", ["fastopt", "fastopt-per-tensor", "fastopt-optim"])
@pytest.mark.parametrize("mode", NEW_MODES)
@pytest.mark.parametrize("name", sorted(rules.RULES))
def test_mode_implementation_equals_the_reference_step(name, mode, implementation):
    """One step from zeroed state at step 1 is fastopt.reference's, bit for bit, in every mode;
    in a master mode the 16-bit copies are, and fastopt-optim steps those with its own master."""
    rule = rules.RULES[name]
    shapes = [(64, 80), (33,)]        # 8-bit state for the first only, as fastopt.optim keeps it
    params, grads, copies = modes.make_mode_buffers(shapes, mode, seed=1)
    expected = [p.copy() for p in params]
    expected_copies = None if copies is None else [c.copy() for c in copies]
    states = peers.new_states(rule, expected, mode)
    positional, keywords = peers.fastopt_arguments(rule, states, None, 1, expected_copies)
    getattr(reference, rule.function)(expected, grads, *positional, **keywords)
    step = peers.make_step(implementation, rule, mode, params, grads, 1, step=1, copies=copies)
    step()
    if copies is None:
        for got, want in zip(params, expected):
            np.testing.assert_array_equal(got, want)
    else:
        for got, want in zip(copies, expected_copies):
            np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))
        if implementation != "fastopt-optim":
            for got, want in zip(params, expected):
                np.testing.assert_array_equal(got, want)


def _torch_modes():
    for name in ("torch-forloop", "torch-foreach", "torch-fused"):
        yield pytest.param(name, marks=[] if HAS_TORCH else [pytest.mark.skip(reason=optional_packages.reason("torch"))])


@pytest.mark.parametrize("implementation", list(_torch_modes()))
@pytest.mark.parametrize("mode", NEW_MODES)
def test_torch_steps_each_mode_as_far_as_it_can(mode, implementation):
    """torch's Adam in the 16-bit dtype; its float32 step and a copy pass in a master mode;
    float32 state with 8-bit state.  Its state bytes say which."""
    rule = rules.RULES["adam"]
    params, grads, copies = modes.make_mode_buffers([(64, 80)], mode, seed=1)
    expected = [p.astype(np.float32) for p in params]
    positional, keywords = peers.fastopt_arguments(rule, peers.new_states(rule, expected), None, 1)
    getattr(reference, rule.function)(expected, [g.astype(np.float32) for g in grads], *positional, **keywords)
    shared = params[0].copy()
    step = peers.make_step(implementation, rule, mode, params, grads, 1, step=1, copies=copies)  # its first step
    n = params[0].size
    stepped = step.params[0].astype(np.float32)
    if modes.get_mode(mode).sixteen_bit:
        # its own params, so the shared ones stay finite: torch's forloop and foreach compute in
        # float16, where eps and small second moments underflow to 0 and make some params infinite
        assert step.params[0] is not params[0]
        np.testing.assert_array_equal(params[0].view(np.uint16), shared.view(np.uint16))
        finite = np.isfinite(stepped)
        assert finite.mean() > 0.99
        # within a 16-bit rounding of the float32 step
        np.testing.assert_allclose(stepped[finite], expected[0][finite], rtol=0, atol=1e-2)
    else:
        assert step.params[0] is params[0]
        np.testing.assert_allclose(stepped, expected[0], rtol=2e-6, atol=1e-6)
    if copies is not None:
        np.testing.assert_array_equal(copies[0].view(np.uint16), params[0].astype(copies[0].dtype).view(np.uint16))
    assert step.state_bytes == {"bfloat16": 4, "float16": 4, "master-bfloat16": 12, "master-float16": 12,
                                "float32-8bit": 8}[mode] * n


@pytest.mark.parametrize("mode", NEW_MODES)
def test_ceiling_of_a_mode_leaves_the_shared_buffers_alone(mode):
    """Off float32 and float64 the ceiling adds the grads' bits into what it writes: its own params and copies."""
    rule = rules.RULES["adam"]
    params, grads, copies = modes.make_mode_buffers([(5000,)], mode)
    before = [b.copy() for b in params + (copies or [])]
    step = peers.make_step("ceiling", rule, mode, params, grads, 1, copies=copies)
    step()
    for got, want in zip(params + (copies or []), before):
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))


def test_numba_and_the_8bit_peers_say_where_they_do_not_run():
    params, grads, copies = modes.make_mode_buffers([(16,)], "bfloat16")
    with pytest.raises(peers.Unavailable, match="no 16-bit buffers, no 8-bit state"):
        peers.make_step("numba", "adam", "bfloat16", params, grads, 1)
    params, grads, _ = modes.make_mode_buffers([(16,)], "float32")
    with pytest.raises(peers.Unavailable, match="compared in float32-8bit only"):
        peers.make_step("torchao-8bit", "adam", "float32", params, grads, 1)
    assert not peers.runs_in("bnb-8bit", "master-bfloat16") and peers.runs_in("bnb-8bit", "float32-8bit")
    assert peers.runs_in("deepspeed-cpu-adam", "bfloat16")


# --------------------------------------------------------------------------
# every implementation computes the rule it is compared on

def _implementations():
    for name in ("fastopt", "fastopt-per-tensor", "fastopt-optim", "fastopt-torch", "numba", "torch-forloop",
                 "torch-foreach", "torch-fused"):
        marks = []
        if (name.startswith("torch") or name == "fastopt-torch") and not HAS_TORCH:
            marks = [pytest.mark.skip(reason=optional_packages.reason("torch"))]
        if name == "numba" and not HAS_NUMBA:
            marks = [pytest.mark.skip(reason=optional_packages.reason("numba"))]
        yield pytest.param(name, marks=marks)


@pytest.mark.parametrize("implementation", list(_implementations()))  # a list: pytest deprecates generators
@pytest.mark.parametrize("name", sorted(rules.RULES))
def test_implementation_computes_the_reference_step(name, implementation):
    """One step from zeroed state at step 1 equals fastopt.reference's."""
    rule = rules.RULES[name]
    if implementation.startswith("torch") and name == "momentum":
        pytest.skip("torch's SGD(dampening=momentum) sets the buffer to g at its first step")
    shapes = [(5, 7), (3,), (33,)]
    params, grads = workloads.make_buffers(shapes, "float32", seed=1)
    expected = [p.copy() for p in params]
    states = peers.new_states(rule, expected)
    positional, keywords = peers.fastopt_arguments(rule, states, None, 1)
    getattr(reference, rule.function)(expected, grads, *positional, **keywords)
    try:
        step = peers.make_step(implementation, rule, "float32", params, grads, 1, step=1)
    except peers.Unavailable as exc:
        pytest.skip(str(exc))
    if not implementation.startswith("torch"):   # torch stepped once while being set up
        step()
    for got, want in zip(params, expected):
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(rules.RULES))
def test_fastopt_optim_takes_the_steps_of_the_list_call(name):
    """fastopt-optim computes the rule of the fastopt row it is compared with:
    its first step is the list call's step number, and the next one follows."""
    rule = rules.RULES[name]
    params, grads = workloads.make_buffers([(5, 7), (3,)], "float64", seed=2)
    expected = [p.copy() for p in params]
    states = peers.new_states(rule, expected)
    step = peers.make_step("fastopt-optim", rule, "float64", params, grads, 1)
    for t in (peers.BENCH_STEP, peers.BENCH_STEP + 1):
        positional, keywords = peers.fastopt_arguments(rule, states, 1, t)
        if rule.kept:  # what the optimizer keeps (NAdam's mu_product) at the step it takes next
            spec, _, values, _ = step.optimizer.plan_step(grads).calls[0]
            kept = {n: v for n, v in zip(spec.hyper_names, values) if n in rule.kept}
            assert kept and (t > peers.BENCH_STEP or kept == peers.kept_values(rule, t))
            keywords.update(kept)
        getattr(fastopt, rule.function)(expected, grads, *positional, **keywords)
        step()
        for got, want in zip(params, expected):
            np.testing.assert_array_equal(got, want)


def test_implementations_share_params_but_not_state():
    params, grads = workloads.make_buffers([(10,)], "float64")
    first = peers.make_step("fastopt", "adam", "float64", params, grads, 1, step=1)
    second = peers.make_step("fastopt", "adam", "float64", params, grads, 1, step=1)
    start = params[0].copy()
    first()
    after_one = params[0].copy()
    second()
    # fresh state, same step: the second update moves param by the same amount again
    np.testing.assert_allclose(params[0] - after_one, after_one - start, rtol=1e-6)


def test_interleaving_plan_keeps_the_key_implementations_together():
    params = [np.empty(1000, np.float32)]          # 4000 bytes
    rule = rules.RULES["adam"]                     # base: params, grads, 2 states = 16000
    everything = list(peers.IMPLEMENTATIONS)
    assert timing.plan_interleaving(everything, rule, params, max_bytes=10**6) == (
        list(timing.INTERLEAVE_PRIORITY), [])
    # room for the ceiling's 8000 and one torch's 12000 only
    together, alone = timing.plan_interleaving(everything, rule, params, max_bytes=16000 + 20000)
    assert together == ["fastopt", "ceiling", "torch-fused", "numba", "fastopt-per-tensor", "numpy"]
    # fastopt-torch and fastopt-optim hold their own 2 states (8000 each): no room left for them
    others = ["torchao-8bit", "bnb-8bit", "deepspeed-cpu-adam", "deepspeed-cpu-lion"]
    assert alone == ["fastopt-torch", "fastopt-optim", "torch-foreach", "torch-forloop", *others]
    assert timing.plan_interleaving(everything, rule, params, max_bytes=16000 + 28000) == (
        ["fastopt", "ceiling", "torch-fused", "fastopt-torch", "numba", "fastopt-per-tensor", "numpy"],
        ["fastopt-optim", "torch-foreach", "torch-forloop", *others])


def test_unknown_implementation_is_refused():
    params, grads = workloads.make_buffers([(4,)], "float32")
    with pytest.raises(ValueError, match="unknown implementation"):
        peers.make_step("jax", "sgd", "float32", params, grads, 1)


# --------------------------------------------------------------------------
# timing


def test_measure_returns_samples_and_prepares_each_one():
    calls = {"step": 0, "prepare": 0}

    def step():
        calls["step"] += 1

    def prepare():
        calls["prepare"] += 1

    step.prepare = prepare
    samples = timing.measure({"noop": step}, repeat=3, min_sample_s=1e-4, idle_gap_s=0)
    assert list(samples) == ["noop"]
    assert len(samples["noop"]) == 3 and all(s > 0 for s in samples["noop"])
    assert calls["prepare"] == 1 + 3      # warm-up, then before each sample
    assert calls["step"] > 3 + 2          # calibration and samples run many calls


def test_spread_is_the_interquartile_range_over_the_median():
    assert report.spread_pct([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(100 * 2 / 3)
    assert report.spread_pct([2.0]) == 0.0


def test_ratios_of_interleaved_rows_pair_the_rounds():
    # load doubled every time in rounds 2 and 3: each round, a takes twice b's time
    a = {"interleaved": True, "threads": 1, "samples_s": [2.0, 4.0, 4.0], "median_s": 4.0}
    b = {"interleaved": True, "threads": 1, "samples_s": [1.0, 2.0, 2.0], "median_s": 2.0}
    assert report.ratio(a, b) == 2.0
    b_noisy = dict(b, samples_s=[1.0, 1.0, 4.0], median_s=1.0)
    assert report.ratio(a, b_noisy) == 2.0                          # median of 2, 4, 1
    assert report.ratio(a, dict(b_noisy, interleaved=False)) == 4.0  # medians 4 / 1
    assert report.ratio(a, dict(b_noisy, threads=2)) == 4.0


def test_calibrate_reaches_the_sample_length():
    number = timing.calibrate(lambda: None, min_sample_s=1e-3)
    assert number > 100


# --------------------------------------------------------------------------
# goals

DOCS = os.path.join(ROOT, "docs", "benchmarks.md")


def _row(implementation, workload, threads, optimizer="adam", dtype="float32", **figures):
    return dict({"implementation": implementation, "optimizer": optimizer, "dtype": dtype, "workload": workload,
                 "threads": threads, "pct_of_ceiling": None, "speedup_over": {}, "fastopt_speedup": None,
                 "interleaved": True}, **figures)


def _fastopt_row(workload, threads, pct=None, **speedup_over):
    return _row("fastopt", workload, threads, pct_of_ceiling=pct, speedup_over=speedup_over)


def _verdicts(rows, overhead=None, default_threads=2, busy=0):
    """{(goal, where): verdict}"""
    return {(v["goal"], v["where"]): v for v in goals.evaluate_goals(rows, overhead, default_threads, busy)}


def test_goals_say_what_is_met_and_what_is_missed_by_how_much():
    rows = [
        _fastopt_row("1e7", 1, 96.0, numba=0.9),
        _fastopt_row("1e5", 2, 50.0, **{"torch-fused": 4.0}),
        dict(_fastopt_row("1e7", 1, 80.0), optimizer="sgd"),
        dict(_fastopt_row("1e7", 1, 80.0), dtype="float64"),
        dict(_fastopt_row("1e7", 1, 80.0), implementation="ceiling"),   # not fastopt: judges nothing
    ]
    verdicts = _verdicts(rows)
    assert verdicts[("adam-1e7-ceiling", "adam float32 1e7 @1t")]["met"]
    numba = verdicts[("adam-1e7-numba", "adam float32 1e7 @1t")]
    assert not numba["met"] and numba["missed_by_pct"] == pytest.approx(10.0)
    assert verdicts[("adam-1e5-torch-fused", "adam float32 1e5 @2t")]["met"]
    for where in ("sgd float32 1e7 @1t", "adam float64 1e7 @1t"):
        other = verdicts[("rules-1e7-ceiling", where)]
        assert other["bound"] == 90.0 and not other["met"] and other["missed_by_pct"] == pytest.approx(100 / 9)
    assert len(verdicts) == 5
    text = goals.format_goals(list(verdicts.values()))
    assert text.startswith("Goals (medians, ratios side by side in this run):")
    assert "MISSED adam-1e7-numba" in text and "missed by 10.0%" in text and "2 of 5 met" in text
    assert "met    adam-1e7-ceiling" in text and "96%" in text


def test_a_two_pass_rule_is_judged_by_its_own_bound():
    rows = [dict(_fastopt_row("1e7", 1, 85.0), optimizer="lamb"), dict(_fastopt_row("1e7", 2, 85.0), optimizer="sgd")]
    verdicts = _verdicts(rows)
    assert set(verdicts) == {("two-pass-rules-1e7-ceiling", "lamb float32 1e7 @1t"),
                             ("rules-1e7-ceiling", "sgd float32 1e7 @2t")}
    assert verdicts[("two-pass-rules-1e7-ceiling", "lamb float32 1e7 @1t")]["met"]
    assert not verdicts[("rules-1e7-ceiling", "sgd float32 1e7 @2t")]["met"]


def test_no_goal_applies_to_an_empty_run():
    assert goals.evaluate_goals([]) == []
    assert goals.format_goals([]) == "Goals: none applies to what was measured."


def test_numba_goal_at_1e5_is_judged_at_one_and_at_the_default_threads():
    rows = [_fastopt_row("1e5", t, numba=1.2) for t in (1, 2, 4)]
    judged = [where for goal, where in _verdicts(rows, default_threads=4) if goal == "adam-1e5-numba"]
    assert judged == ["adam float32 1e5 @1t", "adam float32 1e5 @4t"]


def test_gpt2_ceiling_goal_only_from_16_threads():
    rows = [_fastopt_row("gpt2-small", 8, 90.0), _fastopt_row("gpt2-small", 16, 90.0)]
    ceiling = [where for goal, where in _verdicts(rows) if goal == "adam-gpt2-small-ceiling"]
    assert ceiling == ["adam float32 gpt2-small @16t"]


def test_foreach_goals_judge_the_rules_torch_has_no_fused_step_for():
    rows = [dict(_fastopt_row("mnist-mlp", 1, **{"torch-foreach": 3.5}), optimizer="nadam"),
            dict(_fastopt_row("mnist-mlp", 2, **{"torch-foreach": 2.5}), optimizer="schedule_free_adamw"),
            dict(_fastopt_row("gpt2-small", 2, **{"torch-foreach": 1.4}), optimizer="radam"),
            dict(_fastopt_row("mnist-mlp", 1, **{"torch-foreach": 1.0}), optimizer="adam"),    # torch has fused
            dict(_fastopt_row("mnist-mlp", 1, **{"torch-foreach": 1.0}), optimizer="adamax",
                 dtype="float64")]                                                         # float32 only
    verdicts = {key: v for key, v in _verdicts(rows).items() if key[0].startswith("foreach-rules")}
    assert {key: v["met"] for key, v in verdicts.items()} == {
        ("foreach-rules-mnist-mlp", "nadam float32 mnist-mlp @1t"): True,
        ("foreach-rules-mnist-mlp", "schedule_free_adamw float32 mnist-mlp @2t"): False,
        ("foreach-rules-gpt2-small", "radam float32 gpt2-small @2t"): False}


def test_deepspeed_lion_goal_judges_lion_at_one_and_at_the_default_threads():
    rows = [dict(_fastopt_row("1e7", t, **{"deepspeed-cpu-lion": x}), optimizer="lion")
            for t, x in ((1, 1.4), (2, 1.2), (4, 2.0))]
    rows.append(_fastopt_row("1e7", 1, **{"deepspeed-cpu-lion": 9.0}))   # not Lion: judges nothing
    verdicts = {key: v["met"] for key, v in _verdicts(rows, default_threads=2).items()
                if key[0] == "lion-1e7-deepspeed"}
    assert verdicts == {("lion-1e7-deepspeed", "lion float32 1e7 @1t"): True,
                        ("lion-1e7-deepspeed", "lion float32 1e7 @2t"): False}


def test_deepspeed_lion_steps_lion_only(monkeypatch):
    monkeypatch.setattr(peers, "_optional", lambda name: None)   # as if DeepSpeed were installed
    params, grads = workloads.make_buffers([(8,)], "float32")
    with pytest.raises(peers.Unavailable, match="DeepSpeedCPULion steps Lion only"):
        peers.make_step("deepspeed-cpu-lion", rules.RULES["adam"], "float32", params, grads, 1)
    with pytest.raises(peers.Unavailable, match="float32"):
        peers.make_step("deepspeed-cpu-lion", rules.RULES["lion"], "float64", params, grads, 1)


def test_optim_goals_compare_the_training_api_with_the_list_call():
    rows = [_row("fastopt-optim", "mnist-mlp", 1, fastopt_speedup=1.25),
            _row("fastopt-optim", "16x148", 2, fastopt_speedup=1.25),
            _row("fastopt-optim", "1e5", 1, fastopt_speedup=9.0),               # no goal at 1e5
            _row("fastopt-optim", "mnist-mlp", 1, optimizer="sgd", fastopt_speedup=9.0)]  # Adam's only
    verdicts = _verdicts(rows)
    assert set(verdicts) == {("optim-adam-mnist-mlp", "adam float32 mnist-mlp @1t"),
                             ("optim-adam-16x148", "adam float32 16x148 @2t")}
    assert verdicts[("optim-adam-mnist-mlp", "adam float32 mnist-mlp @1t")]["met"]
    missed = verdicts[("optim-adam-16x148", "adam float32 16x148 @2t")]
    assert not missed["met"] and missed["missed_by_pct"] == pytest.approx(100 * (1.25 / 1.2 - 1))


def test_fastopt_torch_goals_compare_it_with_the_list_call_and_with_torch_fused():
    def paired(implementation, workload, threads, samples, **extra):
        return _row(implementation, workload, threads, samples_s=samples, median_s=sorted(samples)[1],
                    interleaved=True, **extra)
    rows = [paired("fastopt-torch", "mnist-mlp", 1, [1.0, 1.0, 1.0], fastopt_speedup=1.2),
            paired("torch-fused", "mnist-mlp", 1, [2.5, 2.5, 1.5]),          # per round: 2.5, 2.5, 1.5
            paired("fastopt-torch", "gpt2-small", 1, [1.0, 1.0, 1.0]),
            paired("torch-fused", "gpt2-small", 1, [1.0, 1.02, 1.1]),
            paired("fastopt-torch", "gpt2-small", 3, [1.0, 1.0, 1.0]),     # neither 1 nor the default: no goal
            paired("torch-fused", "gpt2-small", 3, [1.0, 1.0, 1.0])]
    verdicts = _verdicts(rows, default_threads=2)
    assert set(verdicts) == {("fastopt-torch-adam-mnist-mlp", "adam float32 mnist-mlp @1t"),
                             ("fastopt-torch-mnist-mlp-fused", "adam float32 mnist-mlp @1t"),
                             ("fastopt-torch-gpt2-small-fused", "adam float32 gpt2-small @1t")}
    assert verdicts[("fastopt-torch-adam-mnist-mlp", "adam float32 mnist-mlp @1t")]["met"]
    fused = verdicts[("fastopt-torch-mnist-mlp-fused", "adam float32 mnist-mlp @1t")]
    assert fused["measured"] == pytest.approx(2.5) and fused["met"]
    gpt2 = verdicts[("fastopt-torch-gpt2-small-fused", "adam float32 gpt2-small @1t")]
    assert gpt2["measured"] == pytest.approx(1.02) and not gpt2["met"]


def test_precision_mode_goals_judge_their_own_rows():
    def fastopt_row(mode, threads, pct, fused, workload="1e7"):
        return _row("fastopt", workload, threads, dtype=mode, pct_of_ceiling=pct, speedup_over={"torch-fused": fused})
    rows = [fastopt_row("bfloat16", 1, 92.0, 1.5),
            fastopt_row("float16", 2, 80.0, 1.2),
            fastopt_row("bfloat16", 3, 10.0, 0.1),          # neither 1 thread nor the default: judged by none
            fastopt_row("bfloat16", 1, 10.0, 0.1, "1e5"),   # nor at 1e5
            fastopt_row("master-bfloat16", 2, 95.0, 1.4),
            fastopt_row("master-float16", 2, 50.0, 0.5),    # measured beside it, not judged
            fastopt_row("float32-8bit", 1, 86.0, 1.4),
            fastopt_row("float32-8bit", 2, 84.0, 1.6)]
    verdicts = {key: v["met"] for key, v in _verdicts(rows, default_threads=2).items()}
    assert verdicts == {
        ("adam-16bit-1e7-ceiling", "adam bfloat16 1e7 @1t"): True,
        ("adam-16bit-1e7-ceiling", "adam float16 1e7 @2t"): False,
        ("adam-16bit-1e7-torch-fused-1t", "adam bfloat16 1e7 @1t"): False,
        ("adam-16bit-1e7-torch-fused", "adam float16 1e7 @2t"): True,
        ("adam-master-1e7-ceiling", "adam master-bfloat16 1e7 @2t"): True,
        ("adam-master-1e7-torch-fused", "adam master-bfloat16 1e7 @2t"): True,
        ("adam-8bit-1e7-ceiling", "adam float32-8bit 1e7 @1t"): True,
        ("adam-8bit-1e7-ceiling", "adam float32-8bit 1e7 @2t"): False,
        ("adam-8bit-1e7-torch-fused-1t", "adam float32-8bit 1e7 @1t"): True,
        ("adam-8bit-1e7-torch-fused", "adam float32-8bit 1e7 @2t"): True,
    }   # and no rules-1e7-ceiling: that is float32's and float64's


def _timed_row(workload, threads, median_s, optimizer="adam"):
    return _row("fastopt", workload, threads, optimizer=optimizer, median_s=median_s, samples_s=[median_s],
                interleaved=True)


BUSY_ROWS = [_timed_row("mnist-mlp", 1, 1.0), _timed_row("mnist-mlp", 2, 1.5),
             _timed_row("1e7", 1, 2.0), _timed_row("1e7", 2, 1.0),
             _timed_row("1e7", 1, 2.0, optimizer="sgd"), _timed_row("1e7", 2, 2.2, optimizer="sgd"),
             _timed_row("1e5", 1, 1.0), _timed_row("1e5", 2, 9.0)]   # no goal at 1e5


def test_busy_goal_compares_the_default_threads_with_one_thread_under_one_busy_core():
    verdicts = {where: v for (goal, where), v in _verdicts(BUSY_ROWS, busy=1).items()
                if goal == "busy-default-threads"}
    assert sorted(verdicts) == ["adam float32 1e7 @2t over @1t, 1 core busy",
                                "adam float32 mnist-mlp @2t over @1t, 1 core busy",
                                "sgd float32 1e7 @2t over @1t, 1 core busy"]
    mnist = verdicts["adam float32 mnist-mlp @2t over @1t, 1 core busy"]
    assert mnist["measured"] == pytest.approx(1.5) and not mnist["met"]
    assert verdicts["adam float32 1e7 @2t over @1t, 1 core busy"]["measured"] == pytest.approx(0.5)
    assert verdicts["sgd float32 1e7 @2t over @1t, 1 core busy"]["met"]


@pytest.mark.parametrize("busy, default_threads", [(0, 2), (2, 2), (1, 1)])
def test_busy_goal_needs_one_busy_core_and_a_parallel_default(busy, default_threads):
    assert not [goal for goal, _ in _verdicts(BUSY_ROWS, busy=busy, default_threads=default_threads)
                if goal == "busy-default-threads"]


def test_overhead_goals():
    overhead = {"adam16_us": 0.8, "per_tensor_us": 0.5, "import_ms": 20.0, "first_call_ratio": 3.5,
                "first_call_threads": 2}
    verdicts = {goal: v for (goal, _), v in _verdicts([], overhead).items()}
    assert set(verdicts) == {"adam-16-step", "list-per-tensor", "import-time", "first-parallel-call"}
    assert verdicts["adam-16-step"]["met"] and verdicts["import-time"]["met"]
    assert not verdicts["list-per-tensor"]["met"]
    assert verdicts["list-per-tensor"]["missed_by_pct"] == pytest.approx(150.0)
    assert not verdicts["first-parallel-call"]["met"]
    assert "2 threads" in verdicts["first-parallel-call"]["where"]


def test_first_call_on_one_thread_is_not_a_parallel_call():
    overhead = {"adam16_us": 0.8, "per_tensor_us": 0.1, "import_ms": 20.0, "first_call_ratio": 9.0,
                "first_call_threads": 1}
    assert "first-parallel-call" not in {goal for goal, _ in _verdicts([], overhead)}


def test_goal_names_are_short_and_stable():
    for name, goal in goals.GOALS.items():
        assert name == goal.name and len(name) <= 32
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", name), name
        assert goal.op in (">=", "<=") and goal.bound > 0 and goal.means and goal.judged


@pytest.mark.skipif(not os.path.exists(DOCS), reason="docs/benchmarks.md is not in this tree")
def test_every_goal_is_documented_with_its_bound_and_a_command():
    with open(DOCS, encoding="utf-8") as f:
        sections = f.read().split("\n### ")
    documented = {}
    for section in sections[1:]:
        heading, _, body = section.partition("\n")
        match = re.fullmatch(r"`([a-z0-9-]+)`: (≥|≤) ([0-9.]+) ?(×|%|µs|ms)", heading.strip())
        if match:
            documented[match.group(1)] = (match, body)
    assert set(documented) == set(goals.GOALS)
    symbols = {">=": "≥", "<=": "≤"}
    units = {"x": "×", "%": "%", "us": "µs", "ms": "ms"}
    for name, goal in goals.GOALS.items():
        match, body = documented[name]
        assert match.group(2) == symbols[goal.op], name
        assert float(match.group(3)) == goal.bound, name
        assert match.group(4) == units[goal.unit], name
        assert "python -m fastopt bench" in body, f"{name}: no command that measures it"


# --------------------------------------------------------------------------
# busy processes: load on purpose

ON_WINDOWS = sys.platform == "win32"


def _running(pid):
    """Whether process ``pid`` runs: a zombie (exited, not yet reaped) does not."""
    if os.path.exists("/proc/self/stat"):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except FileNotFoundError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _spinning(pid):
    """On Linux, whether its main thread is running or runnable (never asleep while it spins)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "R"


def _assert_gone(processes):
    for process in processes:
        assert process.poll() is not None, f"busy process {process.pid} still runs"
        if not ON_WINDOWS:
            assert not _running(process.pid)


def test_busy_processes_spin_inside_the_block_and_are_gone_after():
    with busy.BusyProcesses(2) as load:
        processes = list(load.processes)
        assert len(set(load.pids)) == 2
        for process in processes:
            assert process.poll() is None
            if os.path.exists("/proc/self/stat"):
                assert _spinning(process.pid)
    _assert_gone(processes)
    assert load.pids == []


def test_no_busy_processes_for_zero():
    with busy.BusyProcesses(0) as load:
        assert load.pids == []


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_busy_processes_are_killed_when_the_block_fails(error):
    with pytest.raises(error):
        with busy.BusyProcesses(1) as load:
            processes = list(load.processes)
            raise error()
    _assert_gone(processes)


@pytest.mark.skipif(ON_WINDOWS, reason="os.kill(pid, 0) terminates a process on Windows")
def test_busy_processes_stop_when_their_parent_dies_without_cleanup():
    code = ("import os\nfrom fastopt.bench.busy import BusyProcesses\n"
            "load = BusyProcesses(2).start()\nprint(*load.pids, flush=True)\nos._exit(0)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=child_env(), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 30
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_running(pid) for pid in pids), f"orphaned busy processes {pids} still run"


class _RecordedBusyProcesses(busy.BusyProcesses):
    """BusyProcesses that keeps every process it started, for the test to look at."""

    started = []

    def start(self):
        super().start()
        type(self).started.extend(self.processes)
        return self


@pytest.fixture
def recorded_busy(monkeypatch):
    _RecordedBusyProcesses.started = []
    monkeypatch.setattr(cli, "BusyProcesses", _RecordedBusyProcesses)
    return _RecordedBusyProcesses.started


def test_cli_busy_runs_the_processes_records_them_and_stops_them(tmp_path, capsys, recorded_busy):
    out = tmp_path / "bench.json"
    assert cli_main(["bench", "--busy", "2", "--json", str(out), "--no-overhead", "--quiet", *TINY]) == 0
    assert len(recorded_busy) == 2
    _assert_gone(recorded_busy)
    assert "2 busy processes (--busy) spun throughout the measurement" in capsys.readouterr().out
    assert json.loads(out.read_text())["busy"] == 2


def test_cli_busy_processes_are_stopped_when_the_run_is_interrupted(monkeypatch, recorded_busy):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "run_group", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cli_main(["bench", "--busy", "1", "--no-overhead", "--quiet", *TINY])
    assert len(recorded_busy) == 1
    _assert_gone(recorded_busy)


# --------------------------------------------------------------------------
# command line

TINY = ["--workload", "1e3,16x3", "--threads", "1", "--repeat", "2",
        "--impl", "fastopt,fastopt-per-tensor,fastopt-optim,numpy,ceiling"]


def test_cli_runs_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "fastopt", "bench", "--optimizer", "sgd,adam", "--dtype", "float32,float64",
         "--json", str(out), "--no-overhead", *TINY],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "adam float32 16x3: 3 tensors, 48 params, 28 B/param; 1 thread" in proc.stdout
    assert "sgd float64 1e3: 1 tensor, 1000 params, 24 B/param; 1 thread" in proc.stdout
    assert "adam float32 1e3" in proc.stderr          # progress
    written = json.loads(out.read_text())
    assert {"machine", "results", "skipped", "overhead", "goals", "repeat", "busy"} <= set(written)
    rows = written["results"]
    # 2 rules x 2 dtypes x 2 workloads; per-tensor only where there are several tensors
    assert len(rows) == 2 * 2 * (4 + 5)
    for row in rows:
        assert {"optimizer", "dtype", "workload", "threads", "implementation", "n_params", "n_tensors",
                "bytes_per_param", "median_s", "samples_s", "spread_pct", "ms_per_step", "ns_per_param",
                "gb_per_s", "pct_of_ceiling", "fastopt_speedup", "interleaved"} <= set(row)
        assert len(row["samples_s"]) == 2
        rule = rules.RULES[row["optimizer"]]
        assert row["bytes_per_param"] == rule.bytes_per_param(row["dtype"])
        assert row["gb_per_s"] == pytest.approx(
            row["bytes_per_param"] * row["n_params"] / row["median_s"] / 1e9)
        if row["implementation"] == "ceiling":
            assert row["pct_of_ceiling"] == pytest.approx(100.0)
        if row["implementation"] == "fastopt":
            assert row["fastopt_speedup"] == pytest.approx(1.0)
            assert set(row["speedup_over"]) == {"numpy"}


def test_cli_times_adafactor_in_a_table_of_its_own(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cli_main(["bench", "--optimizer", "adafactor", "--workload", "16x3,1e3", "--dtype",
                     "float32,bfloat16,master-bfloat16", "--threads", "1", "--repeat", "2",
                     "--impl", "fastopt,ceiling,fastopt-optim", "--no-overhead", "--quiet", "--json", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "Adafactor; " in stdout and "optim/bare" in stdout
    assert "skipped all (adafactor; master-bfloat16): Adafactor's table times its in-dtype modes" in stdout
    points = json.loads(out.read_text())["adafactor"]
    assert [(p["workload"], p["dtype"], p["threads"]) for p in points] == [
        ("16x3", "float32", 1), ("16x3", "bfloat16", 1), ("1e3", "float32", 1), ("1e3", "bfloat16", 1)]
    for p in points:
        assert set(p["median_s"]) == {"fastopt", "ceiling", "fastopt-optim"}
        assert p["bytes_per_step"] == bench_factored.bytes_per_step(workloads.workload_shapes(p["workload"]),
                                                                    p["dtype"])
        assert p["pct_of_ceiling"] > 0 and len(p["samples_s"]["fastopt"]) == 2
    # a matrix's passes move 6 words per element, a vector's 8
    assert bench_factored.bytes_per_step([(3, 4), (5,)], "float64") == 12 * 6 * 8 + 5 * 8 * 8
    assert bench_factored.bytes_per_step([(3, 4), (5,)], "bfloat16") == 12 * 6 * 2 + 5 * 8 * 2


def test_cli_measures_overhead(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cli_main(["bench", "--optimizer", "sgd", "--workload", "16", "--threads", "1", "--repeat", "2",
                     "--impl", "fastopt,ceiling", "--json", str(out), "--quiet"]) == 0
    stdout = capsys.readouterr().out
    assert "Per-call overhead" in stdout and "Goals (medians, ratios side by side in this run)" in stdout
    overhead = json.loads(out.read_text())["overhead"]
    for key in ("adam16_us", "per_tensor_us", "import_ms", "import_numpy_ms", "first_call_us",
                "later_call_us", "first_call_ratio", "first_call_1thread_us", "first_call_ratio_1thread"):
        assert math.isfinite(overhead[key]), key
    assert overhead["adam16_us"] > 0 and overhead["import_ms"] > 0 and overhead["first_call_ratio"] > 0
    names = [v["goal"] for v in json.loads(out.read_text())["goals"]]
    assert "adam-16-step" in names and "import-time" in names


@pytest.mark.skipif(not HAS_TORCH, reason=optional_packages.reason("torch"))
def test_cli_reports_unavailable_peers(capsys):
    assert cli_main(["bench", "--optimizer", "rmsprop", "--workload", "64", "--threads", "1", "--repeat", "1",
                     "--impl", "fastopt,torch-fused", "--no-overhead", "--quiet"]) == 0
    assert "skipped torch-fused (rmsprop)" in capsys.readouterr().out


@pytest.mark.parametrize("argument", [
    ["--optimizer", "adadelta"], ["--dtype", "int8"], ["--workload", "bert"], ["--threads", "0"],
    ["--threads", "two"], ["--impl", "jax"], ["--repeat", "0"], ["--busy", "-1"],
])
def test_cli_refuses_bad_arguments(argument):
    with pytest.raises(SystemExit) as excinfo:
        cli_main(["bench", "--no-overhead", "--quiet", *TINY, *argument])
    assert excinfo.value.code not in (0, None)


MODE_IMPLEMENTATIONS = ("fastopt,fastopt-optim,fastopt-torch,numpy,ceiling,numba,torch-fused,torchao-8bit,bnb-8bit,"
                        "deepspeed-cpu-adam")


def test_cli_measures_the_precision_modes_side_by_side(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cli_main(["bench", "--optimizer", "adam", "--workload", "8192", "--dtype", ",".join(NEW_MODES),
                     "--threads", "1", "--repeat", "1", "--impl", MODE_IMPLEMENTATIONS, "--json", str(out),
                     "--no-overhead", "--quiet"]) == 0
    stdout = capsys.readouterr().out
    written = json.loads(out.read_text())
    rows, skipped = written["results"], written["skipped"]
    assert "adam bfloat16 8192: 1 tensor, 8192 params, 14 B/param, state 4 B/param; 1 thread" in stdout
    assert "adam float16 8192: 1 tensor, 8192 params, 14 B/param, state 4 B/param; 1 thread" in stdout
    assert ("adam master-bfloat16 8192: 1 tensor, 8192 params, 28 B/param, state 12 B/param (master included); "
            "1 thread") in stdout
    assert "adam float32-8bit 8192: 1 tensor, 8192 params, 16.06 B/param, state 2.03 B/param; 1 thread" in stdout
    for mode in NEW_MODES:
        group = {r["implementation"]: r for r in rows if r["dtype"] == mode}
        reasons = {s["implementation"]: s["reason"] for s in skipped if s["dtype"] == mode}
        assert {"fastopt", "fastopt-optim", "numpy", "ceiling"} <= set(group), mode
        moved, kept = ADAM_MODE_BYTES[mode]
        for row in group.values():
            assert row["bytes_per_param"] == moved and row["state_bytes_per_param"] == kept
        assert group["ceiling"]["pct_of_ceiling"] == pytest.approx(100.0)
        assert group["fastopt"]["pct_of_ceiling"] > 0 and "numpy" in group["fastopt"]["speedup_over"]
        assert "numba" not in group and "no 16-bit buffers, no 8-bit state" in reasons["numba"]
        for name in ("fastopt-torch", "deepspeed-cpu-adam", "torch-fused"):   # measured, or skipped with a reason
            assert (name in group) != (name in reasons), (mode, name)
        for name in ("torchao-8bit", "bnb-8bit"):                             # 8-bit state only
            assert (name in group or name in reasons) == (mode == "float32-8bit"), (mode, name)
        if "torch-fused" in group:
            torch_state = group["torch-fused"]["own_state_bytes_per_param"]
            assert torch_state == (8 if mode == "float32-8bit" else kept)
    assert re.search(r"skipped numba \(adam; bfloat16, float16, master-bfloat16, master-float16, "
                     r"float32-8bit\): .*no 16-bit buffers", stdout)
    if HAS_TORCH:   # torch's float32 state beside the 8-bit state: a column of its own
        table = stdout[stdout.index("adam float32-8bit 8192"):]
        assert "state B/p" in table.split("\n\n")[0]
        # before it, only DeepSpeed (no master: float32 state) keeps other state than its mode's
        if importlib.util.find_spec("deepspeed") is None:
            assert "state B/p" not in stdout[:stdout.index("adam float32-8bit 8192")]


@pytest.mark.parametrize("value", ["int8", "8bit", "bf16", "float32,master-int8"])
def test_cli_refuses_an_unknown_precision_mode_and_lists_them(value):
    with pytest.raises(SystemExit) as excinfo:
        cli_main(["bench", "--no-overhead", "--quiet", *TINY, "--dtype", value])
    message = str(excinfo.value.code)
    assert message.startswith("unknown dtype") and repr(value.split(",")[-1]) in message
    assert all(mode in message for mode in modes.MODES)


def test_scaling_script_runs_standalone(tmp_path):
    out = tmp_path / "scaling.json"
    proc = subprocess.run(
        [sys.executable, os.path.join("bench", "scaling.py"), "--workload", "1e3x4", "--threads", "1,2",
         "--repeat", "2", "--json", str(out)],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    written = json.loads(out.read_text())
    assert [p["threads"] for p in written["points"]] == [1, 2]
    assert written["bytes_per_step"] == 28 * 4000
    for point in written["points"]:
        medians = point["median_s"]
        assert point["fastopt_gb_per_s"] == pytest.approx(written["bytes_per_step"] / medians["fastopt"] / 1e9)
        assert point["ceiling_gb_per_s"] == pytest.approx(written["bytes_per_step"] / medians["ceiling"] / 1e9)
        assert point["fastopt_pct_of_ceiling"] == pytest.approx(
            100 * report.paired_ratio(point["samples_s"]["ceiling"], point["samples_s"]["fastopt"]))
        assert (point["torch_fused_pct_of_ceiling"] is not None) == HAS_TORCH
    assert "fastopt %ceil" in proc.stdout
