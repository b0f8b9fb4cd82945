"""Part 1, the lecture's Figures 3, 4 and 7: optimizer trajectories on two-dimensional loss surfaces.

GD crawls along the ravine's shallow axis and jitters across its steep one;
noisy gradients (SGD) wander; momentum smooths the path and speeds it;
Adagrad and RMSprop rescale each direction; Adam does both.  Near a saddle,
GD's gradient is tiny and it escapes slowly.  On Himmelblau's function the
methods may end in different minima.

Learning rates are chosen by hand from the grid {1, 2, 5}×10^k (shown in the
legend, the table and the JSON).  On the ravine and the saddle, GD, SGD and
momentum share one (Nesterov's is (1−μ) times it, the same step on a constant
slope, as torch's form sums gradients where the lecture's averages them): the
comparison is like for like.  On the other surfaces each method has a rate it
does well with; GD's is near the largest it survives, momentum's is larger,
since averaging damps the zigzag that limits GD.
"""

from dataclasses import dataclass

import numpy as np

from fastopt.demo.optimizers import Optimizer, method
from fastopt.demo.report import progress
from fastopt.demo.surfaces import SURFACES

TITLE = "Loss surfaces: GD, SGD, momentum, Nesterov, Adagrad, RMSprop and Adam in two dimensions"

# "SGD" is GD fed the gradient plus Gaussian noise: a stand-in for a mini-batch's error.
METHODS = ("GD", "SGD", "Momentum", "Nesterov", "Adagrad", "RMSprop", "Adam")


@dataclass(frozen=True)
class Setup:
    steps: int
    tolerance: float        # "reached" once f - f_min < tolerance
    noise: float            # standard deviation of SGD's gradient noise, per coordinate
    lr: dict


SETUPS = {
    "ravine": Setup(100, 1e-3, 0.3, {"GD": 0.45, "SGD": 0.45, "Momentum": 0.45, "Nesterov": 0.045,
                                     "Adagrad": 1.5, "RMSprop": 0.1, "Adam": 0.5}),
    "saddle": Setup(150, 1e-3, 0.1, {"GD": 0.05, "SGD": 0.05, "Momentum": 0.05, "Nesterov": 0.005,
                                     "Adagrad": 0.3, "RMSprop": 0.02, "Adam": 0.05}),
    "beale": Setup(600, 1e-3, 1.0, {"GD": 0.02, "SGD": 0.02, "Momentum": 0.05, "Nesterov": 0.005,
                                    "Adagrad": 0.5, "RMSprop": 0.01, "Adam": 0.05}),
    "rosenbrock": Setup(1000, 1e-3, 1.0, {"GD": 2e-3, "SGD": 2e-3, "Momentum": 0.02, "Nesterov": 1e-3,
                                          "Adagrad": 1.0, "RMSprop": 0.01, "Adam": 0.1}),
    "himmelblau": Setup(300, 1e-3, 2.0, {"GD": 0.01, "SGD": 0.01, "Momentum": 0.05, "Nesterov": 5e-3,
                                         "Adagrad": 0.5, "RMSprop": 0.05, "Adam": 0.1}),
}


@dataclass(frozen=True)
class Settings:
    surfaces: tuple = tuple(SETUPS)
    step_fraction: float = 1.0    # run this share of each surface's steps (the tests use less)


PRESETS = {"quick": Settings(), "full": Settings()}


def trajectory(surface, name, lr, steps, noise, rng):
    """The path of one method: (steps + 1, 2) points, NaN after it leaves any sane range."""
    theta = np.array(surface.start, dtype=np.float64)
    optimizer = Optimizer(method("GD" if name == "SGD" else name, lr=lr), [theta])
    path = np.full((steps + 1, 2), np.nan)
    path[0] = theta
    for t in range(1, steps + 1):
        gradient = np.array(surface.gradient(*theta))
        if name == "SGD":
            gradient += noise * rng.standard_normal(2)
        optimizer.step([gradient])
        if not np.all(np.abs(theta) < 1e6):  # diverged: stop here rather than overflow
            break
        path[t] = theta
    return path


def _summary(surface, path, tolerance):
    excess = surface.value(*path.T) - surface.min_value
    last = path[~np.isnan(path[:, 0])][-1]
    reached = np.flatnonzero(excess < tolerance)
    distance, nearest = surface.distance_to_minimum(last)
    return {
        "loss": excess + surface.min_value,
        "final_loss": float(surface.value(*last)),
        "distance": distance,
        "nearest_minimum": nearest,
        "steps_to_tolerance": int(reached[0]) if len(reached) else None,
        "diverged": bool(np.isnan(path[-1, 0])),
    }


def run(settings, seed, show_progress=True):
    result = {}
    for name in progress(settings.surfaces, "surfaces", show_progress):
        index = list(SETUPS).index(name)  # SGD's noise depends on the seed and surface, not on the others run
        surface, setup = SURFACES[name], SETUPS[name]
        steps = max(1, round(setup.steps * settings.step_fraction))
        runs = {}
        for m in METHODS:
            rng = np.random.default_rng([seed, index])
            path = trajectory(surface, m, setup.lr[m], steps, setup.noise, rng)
            runs[m] = {"lr": setup.lr[m], "path": path, **_summary(surface, path, setup.tolerance)}
        result[name] = {"title": surface.title, "formula": surface.formula, "start": surface.start,
                        "minima": surface.minima, "min_value": surface.min_value, "steps": steps,
                        "tolerance": setup.tolerance, "sgd_noise": setup.noise, "runs": runs}
    return result


def table(result):
    headers = ["surface", "method", "lr", "final loss", "dist. to min", "min #", "steps to tol"]
    rows = []
    for name, r in result.items():
        for m, run_ in r["runs"].items():
            rows.append([name, m, run_["lr"], run_["final_loss"], run_["distance"],
                         run_["nearest_minimum"] if len(r["minima"]) > 1 else None,
                         "diverged" if run_["diverged"] else run_["steps_to_tolerance"]])
    return headers, rows


def plot(result, out_dir):
    from fastopt.demo import plots

    with plots.style():
        return [plots.save(_figure(name, r), out_dir / f"surface_{name}.png") for name, r in result.items()]


def _contour_levels(surface, values):
    if surface.log_levels:
        excess = values - surface.min_value
        low = max(np.percentile(excess, 0.5), 1e-3)
        return surface.min_value + np.geomspace(low, np.percentile(excess, 98), 18)
    # levels crowd towards the bottom, where the saddle and the two wells are
    low, high = values.min(), np.percentile(values, 75)
    return low + (high - low) * np.linspace(0, 1, 20) ** 2


# Two groups of paths, so that neither panel is a tangle: GD is in both, as the yardstick.
PANELS = (("Gradient descent and momentum", ("GD", "SGD", "Momentum", "Nesterov")),
          ("Adaptive step sizes", ("GD", "Adagrad", "RMSprop", "Adam")))


def _draw_surface(ax, surface, r, methods, levels, grid):
    from matplotlib.colors import BoundaryNorm

    from fastopt.demo import plots

    X, Y, Z = grid
    norm = BoundaryNorm(levels, 256, extend="both")
    ax.contourf(X, Y, Z, levels=levels, cmap="Blues_r", norm=norm, extend="both", alpha=0.85)
    ax.contour(X, Y, Z, levels=levels, colors="white", linewidths=0.5, alpha=0.8)
    ax.grid(False)
    for k, m in enumerate(methods):
        path = r["runs"][m]["path"]
        # each later path a little thinner, so that paths on top of each other all show
        ax.plot(path[:, 0], path[:, 1], color=plots.color(m), lw=1.0 if m == "SGD" else 3.0 - 0.6 * k,
                alpha=0.95, zorder=3)
        last = path[~np.isnan(path[:, 0])][-1]
        ax.plot(*last, "o", color=plots.color(m), ms=5, mec="white", mew=0.8, zorder=4)
    minima = np.array(surface.minima)
    ax.plot(minima[:, 0], minima[:, 1], "*", color="gold", mec="black", ms=15, zorder=5)
    ax.plot(*surface.start, "s", color="white", mec="black", ms=7, zorder=5)
    ax.set_xlim(surface.xlim)
    ax.set_ylim(surface.ylim)
    ax.set_xlabel("x")
    ax.set_ylabel("y")


def _figure(name, r):
    from matplotlib.lines import Line2D

    from fastopt.demo import plots

    surface = SURFACES[name]
    fig, axes = plots.subplots(1, 3, figsize=(15, 4.5), gridspec_kw={"width_ratios": [1, 1, 0.9]})
    X, Y = np.meshgrid(np.linspace(*surface.xlim, 300), np.linspace(*surface.ylim, 300))
    Z = surface.value(X, Y)
    levels = _contour_levels(surface, Z)
    for ax, (title, methods) in zip(axes, PANELS):
        _draw_surface(ax, surface, r, methods, levels, (X, Y, Z))
        ax.set_title(title, fontsize=10)
    ax_loss = axes[2]
    for m, run_ in r["runs"].items():
        excess = np.maximum(run_["loss"] - surface.min_value, 1e-16)
        ax_loss.semilogy(excess, color=plots.color(m), lw=1.0 if m == "SGD" else 1.5)
    ax_loss.axhline(r["tolerance"], color="gray", ls=":", lw=1)
    ax_loss.text(len(excess) - 1, r["tolerance"], "tolerance ", va="bottom", ha="right", color="gray",
                 fontsize=8)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel(r"$f - f_{min}$")
    ax_loss.set_title("Loss above the minimum", fontsize=10)
    ax_loss.set_ylim(bottom=max(1e-12, ax_loss.get_ylim()[0]))
    handles = [Line2D([], [], color=plots.color(m), lw=2, label=f"{m} (lr {r['runs'][m]['lr']:g})")
               for m in r["runs"]]
    handles += [Line2D([], [], ls="", marker="s", color="white", mec="black", label="start"),
                Line2D([], [], ls="", marker="*", color="gold", mec="black", ms=12, label="minimum")]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), bbox_to_anchor=(0.5, -0.06),
               fontsize=9, handlelength=1.5, columnspacing=1.2)
    fig.suptitle(f"{surface.title}:  f = {surface.formula}", fontsize=12, fontweight="bold")
    fig.tight_layout()
    return fig
