"""The benchmark machinery: workloads, byte counts, that every implementation
computes the rule it is compared on, timing, targets, and the CLI end to end
on tiny workloads.  No timing is asserted."""

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import fastopt
from fastopt import _core, bench, reference
from fastopt.__main__ import main as cli_main
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
    shapes = bench.workload_shapes("gpt2-small")
    assert len(shapes) == 148
    assert bench.count_params(shapes) == 124_439_808
    assert shapes[:2] == [(50257, 768), (1024, 768)]
    assert shapes[-2:] == [(768,), (768,)]


def test_mnist_mlp_shapes():
    assert bench.workload_shapes("mnist-mlp") == [(784, 256), (256,), (256, 128), (128,), (128, 10), (10,)]
    assert bench.count_params(bench.workload_shapes("mnist-mlp")) == 235_146


@pytest.mark.parametrize("name, shapes", [
    ("1e5", [(100_000,)]),
    ("1e7", [(10_000_000,)]),
    ("4096", [(4096,)]),
    ("16x3", [(16,)] * 3),
    ("1e3x2", [(1000,)] * 2),
])
def test_numeric_workloads(name, shapes):
    assert bench.workload_shapes(name) == shapes


@pytest.mark.parametrize("name", ["gpt3", "0", "1.5", "x3", "1e5x", ""])
def test_unknown_workload_is_refused(name):
    with pytest.raises(ValueError, match="unknown workload"):
        bench.workload_shapes(name)


# --------------------------------------------------------------------------
# bytes moved per parameter, and that they are the buffers the step touches

BYTES_FLOAT32 = {
    "sgd": 12, "momentum": 20, "sgd_momentum": 20, "nesterov": 20, "rmsprop": 20,
    "rmsprop_centered": 36, "adagrad": 20, "adam": 28, "amsgrad": 36, "adamw": 28,
}


def test_every_rule_has_a_byte_count():
    assert set(BYTES_FLOAT32) == set(bench.RULES)


@pytest.mark.parametrize("name", sorted(BYTES_FLOAT32))
def test_bytes_per_param(name):
    rule = bench.RULES[name]
    assert rule.bytes_per_param("float32") == BYTES_FLOAT32[name]
    assert rule.bytes_per_param(np.float64) == 2 * BYTES_FLOAT32[name]


def _changed(before, after):
    return [not np.array_equal(b, a) for b, a in zip(before, after)]


@pytest.mark.parametrize("name", sorted(bench.RULES))
def test_counted_state_buffers_are_the_ones_the_step_writes(name):
    """The byte count assumes the step reads and writes param and each state
    buffer: one step of the fastopt call must change every one of them, and
    the ceiling with the same number of state buffers must change as many."""
    rule = bench.RULES[name]
    params, grads = bench.make_buffers([(64,)], "float32")
    states = bench.new_states(rule, params)
    positional, keywords = bench._fastopt_arguments(rule, states, 1, bench.BENCH_STEP)
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
    assert bench.RULES["adam"].torch_kwargs() == dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    assert bench.RULES["momentum"].torch_kwargs() == dict(lr=1e-3, momentum=0.9, dampening=0.9)
    assert bench.RULES["nesterov"].torch_kwargs()["nesterov"] is True


# --------------------------------------------------------------------------
# every implementation computes the rule it is compared on

def _implementations():
    for name in ("fastopt", "fastopt-per-tensor", "numba", "torch-forloop", "torch-foreach", "torch-fused"):
        marks = []
        if name.startswith("torch") and not HAS_TORCH:
            marks = [pytest.mark.skip(reason=optional_packages.reason("torch"))]
        if name == "numba" and not HAS_NUMBA:
            marks = [pytest.mark.skip(reason=optional_packages.reason("numba"))]
        yield pytest.param(name, marks=marks)


@pytest.mark.parametrize("implementation", list(_implementations()))  # a list: pytest deprecates generators
@pytest.mark.parametrize("name", sorted(bench.RULES))
def test_implementation_computes_the_reference_step(name, implementation):
    """One step from zeroed state at step 1 equals fastopt.reference's."""
    rule = bench.RULES[name]
    if implementation.startswith("torch") and name == "momentum":
        pytest.skip("torch's SGD(dampening=momentum) sets the buffer to g at its first step")
    shapes = [(5, 7), (3,), (33,)]
    params, grads = bench.make_buffers(shapes, "float32", seed=1)
    expected = [p.copy() for p in params]
    states = bench.new_states(rule, expected)
    positional, keywords = bench._fastopt_arguments(rule, states, None, 1)
    getattr(reference, rule.function)(expected, grads, *positional, **keywords)
    try:
        step = bench.make_step(implementation, rule, "float32", params, grads, 1, step=1)
    except bench.Unavailable as exc:
        pytest.skip(str(exc))
    if not implementation.startswith("torch"):   # torch stepped once while being set up
        step()
    for got, want in zip(params, expected):
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)


def test_implementations_share_params_but_not_state():
    params, grads = bench.make_buffers([(10,)], "float64")
    first = bench.make_step("fastopt", "adam", "float64", params, grads, 1, step=1)
    second = bench.make_step("fastopt", "adam", "float64", params, grads, 1, step=1)
    start = params[0].copy()
    first()
    after_one = params[0].copy()
    second()
    # fresh state, same step: the second update moves param by the same amount again
    np.testing.assert_allclose(params[0] - after_one, after_one - start, rtol=1e-6)


def test_interleaving_plan_keeps_the_key_implementations_together():
    params = [np.empty(1000, np.float32)]          # 4000 bytes
    rule = bench.RULES["adam"]                     # base: params, grads, 2 states = 16000
    everything = list(bench.IMPLEMENTATIONS)
    assert bench.plan_interleaving(everything, rule, params, max_bytes=10**6) == (
        list(bench.INTERLEAVE_PRIORITY), [])
    # room for the ceiling's 8000 and one torch's 12000 only
    together, alone = bench.plan_interleaving(everything, rule, params, max_bytes=16000 + 20000)
    assert together == ["fastopt", "ceiling", "torch-fused", "numba", "fastopt-per-tensor", "numpy"]
    assert alone == ["torch-foreach", "torch-forloop"]


def test_unknown_implementation_is_refused():
    params, grads = bench.make_buffers([(4,)], "float32")
    with pytest.raises(ValueError, match="unknown implementation"):
        bench.make_step("jax", "sgd", "float32", params, grads, 1)


# --------------------------------------------------------------------------
# timing


def test_measure_returns_samples_and_prepares_each_one():
    calls = {"step": 0, "prepare": 0}

    def step():
        calls["step"] += 1

    def prepare():
        calls["prepare"] += 1

    step.prepare = prepare
    samples = bench.measure({"noop": step}, repeat=3, min_sample_s=1e-4, idle_gap_s=0)
    assert list(samples) == ["noop"]
    assert len(samples["noop"]) == 3 and all(s > 0 for s in samples["noop"])
    assert calls["prepare"] == 1 + 3      # warm-up, then before each sample
    assert calls["step"] > 3 + 2          # calibration and samples run many calls


def test_spread_is_the_interquartile_range_over_the_median():
    assert bench.spread_pct([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(100 * 2 / 3)
    assert bench.spread_pct([2.0]) == 0.0


def test_ratios_of_interleaved_rows_pair_the_rounds():
    # load doubled every time in rounds 2 and 3: each round, a takes twice b's time
    a = {"interleaved": True, "threads": 1, "samples_s": [2.0, 4.0, 4.0], "median_s": 4.0}
    b = {"interleaved": True, "threads": 1, "samples_s": [1.0, 2.0, 2.0], "median_s": 2.0}
    assert bench.ratio(a, b) == 2.0
    b_noisy = dict(b, samples_s=[1.0, 1.0, 4.0], median_s=1.0)
    assert bench.ratio(a, b_noisy) == 2.0                          # median of 2, 4, 1
    assert bench.ratio(a, dict(b_noisy, interleaved=False)) == 4.0  # medians 4 / 1
    assert bench.ratio(a, dict(b_noisy, threads=2)) == 4.0


def test_calibrate_reaches_the_sample_length():
    number = bench.calibrate(lambda: None, min_sample_s=1e-3)
    assert number > 100


# --------------------------------------------------------------------------
# targets


def _fastopt_row(workload, threads, pct, **speedup_over):
    return {"implementation": "fastopt", "optimizer": "adam", "dtype": "float32", "workload": workload,
            "threads": threads, "pct_of_ceiling": pct, "speedup_over": speedup_over}


def test_targets_say_what_is_met_and_what_is_missed_by_how_much():
    rows = [
        _fastopt_row("1e7", 1, 96.0, numba=0.9),
        _fastopt_row("1e5", 2, 50.0, **{"torch-fused": 4.0}),
        dict(_fastopt_row("1e7", 1, 80.0), optimizer="sgd"),
        dict(_fastopt_row("1e7", 1, 80.0), implementation="ceiling"),   # not fastopt: no target
    ]
    targets = {t["target"]: t for t in bench.evaluate_targets(rows)}
    assert targets["adam float32 1e7 @1t: % of traffic ceiling"]["ok"]
    numba = targets["adam float32 1e7 @1t: speedup over numba"]
    assert not numba["ok"] and numba["missed_by_pct"] == pytest.approx(10.0)
    assert targets["adam float32 1e5 @2t: speedup over torch-fused"]["ok"]
    sgd = targets["sgd float32 1e7 @1t: % of traffic ceiling"]
    assert sgd["bound"] == 90.0 and not sgd["ok"]
    assert len(targets) == 4
    text = bench.format_targets(list(targets.values()))
    assert "MISSED" in text and "missed by 10.0%" in text and "2 of 4 met" in text


def test_gpt2_ceiling_target_only_from_16_threads():
    rows = [_fastopt_row("gpt2-small", 8, 90.0), _fastopt_row("gpt2-small", 16, 90.0)]
    ceiling = [t for t in bench.evaluate_targets(rows) if "ceiling" in t["target"]]
    assert [t["target"] for t in ceiling] == ["adam float32 gpt2-small @16t: % of traffic ceiling"]


def test_overhead_targets():
    overhead = {"adam16_us": 0.8, "per_tensor_us": 0.5, "import_ms": 20.0, "first_call_ratio": 1.1,
                "first_call_threads": 2}
    targets = {t["target"]: t for t in bench.evaluate_targets([], overhead)}
    assert targets["16-element Adam step"]["ok"]
    per_tensor = targets["extra time per tensor in a list call"]
    assert not per_tensor["ok"] and per_tensor["missed_by_pct"] == pytest.approx(150.0)


# --------------------------------------------------------------------------
# command line

TINY = ["--workload", "1e3,16x3", "--threads", "1", "--repeat", "2",
        "--impl", "fastopt,fastopt-per-tensor,numpy,ceiling"]


def test_cli_runs_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "fastopt", "bench", "--optimizer", "sgd,adam", "--dtype", "all",
         "--json", str(out), "--no-overhead", *TINY],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "adam float32 16x3: 3 tensors, 48 params, 28 B/param; 1 thread" in proc.stdout
    assert "sgd float64 1e3: 1 tensor, 1000 params, 24 B/param; 1 thread" in proc.stdout
    assert "adam float32 1e3" in proc.stderr          # progress
    report = json.loads(out.read_text())
    assert {"machine", "results", "skipped", "overhead", "targets", "repeat"} <= set(report)
    rows = report["results"]
    # 2 rules x 2 dtypes x 2 workloads; per-tensor only where there are several tensors
    assert len(rows) == 2 * 2 * (3 + 4)
    for row in rows:
        assert {"optimizer", "dtype", "workload", "threads", "implementation", "n_params", "n_tensors",
                "bytes_per_param", "median_s", "samples_s", "spread_pct", "ms_per_step", "ns_per_param",
                "gb_per_s", "pct_of_ceiling", "fastopt_speedup", "interleaved"} <= set(row)
        assert len(row["samples_s"]) == 2
        rule = bench.RULES[row["optimizer"]]
        assert row["bytes_per_param"] == rule.bytes_per_param(row["dtype"])
        assert row["gb_per_s"] == pytest.approx(
            row["bytes_per_param"] * row["n_params"] / row["median_s"] / 1e9)
        if row["implementation"] == "ceiling":
            assert row["pct_of_ceiling"] == pytest.approx(100.0)
        if row["implementation"] == "fastopt":
            assert row["fastopt_speedup"] == pytest.approx(1.0)
            assert set(row["speedup_over"]) == {"numpy"}


def test_cli_measures_overhead(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cli_main(["bench", "--optimizer", "sgd", "--workload", "16", "--threads", "1", "--repeat", "2",
                     "--impl", "fastopt,ceiling", "--json", str(out), "--quiet"]) == 0
    stdout = capsys.readouterr().out
    assert "Per-call overhead" in stdout and "Targets of the issue" in stdout
    overhead = json.loads(out.read_text())["overhead"]
    for key in ("adam16_us", "per_tensor_us", "import_ms", "import_numpy_ms", "first_call_us",
                "later_call_us", "first_call_ratio", "first_call_1thread_us", "first_call_ratio_1thread"):
        assert math.isfinite(overhead[key]), key
    assert overhead["adam16_us"] > 0 and overhead["import_ms"] > 0 and overhead["first_call_ratio"] > 0
    names = [t["target"] for t in json.loads(out.read_text())["targets"]]
    assert "16-element Adam step" in names and "import fastopt (numpy already imported)" in names


@pytest.mark.skipif(not HAS_TORCH, reason=optional_packages.reason("torch"))
def test_cli_reports_unavailable_peers(capsys):
    assert cli_main(["bench", "--optimizer", "rmsprop", "--workload", "64", "--threads", "1", "--repeat", "1",
                     "--impl", "fastopt,torch-fused", "--no-overhead", "--quiet"]) == 0
    assert "skipped torch-fused (rmsprop)" in capsys.readouterr().out


@pytest.mark.parametrize("argument", [
    ["--optimizer", "lion"], ["--dtype", "float16"], ["--workload", "bert"], ["--threads", "0"],
    ["--threads", "two"], ["--impl", "jax"], ["--repeat", "0"],
])
def test_cli_refuses_bad_arguments(argument):
    with pytest.raises(SystemExit) as excinfo:
        cli_main(["bench", "--no-overhead", "--quiet", *TINY, *argument])
    assert excinfo.value.code not in (0, None)


def test_scaling_script_runs_standalone(tmp_path):
    out = tmp_path / "scaling.json"
    proc = subprocess.run(
        [sys.executable, os.path.join("bench", "scaling.py"), "--workload", "1e3x4", "--threads", "1,2",
         "--repeat", "2", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert [p["threads"] for p in report["points"]] == [1, 2]
    assert report["bytes_per_step"] == 28 * 4000
    for point in report["points"]:
        medians = point["median_s"]
        assert point["fastopt_gb_per_s"] == pytest.approx(report["bytes_per_step"] / medians["fastopt"] / 1e9)
        assert point["ceiling_gb_per_s"] == pytest.approx(report["bytes_per_step"] / medians["ceiling"] / 1e9)
        assert point["fastopt_pct_of_ceiling"] == pytest.approx(
            100 * bench.paired_ratio(point["samples_s"]["ceiling"], point["samples_s"]["fastopt"]))
        assert (point["torch_fused_pct_of_ceiling"] is not None) == HAS_TORCH
    assert "fastopt %ceil" in proc.stdout
