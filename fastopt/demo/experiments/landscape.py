"""Part 4, the lecture's Figure 1 (Li et al. 2018): a two-dimensional slice of a trained MLP's loss.

The MLP is trained with Adam; then the training loss is evaluated at
θ* + a·δ + b·η for a grid of (a, b), where δ and η are random Gaussian
directions, filter-normalized: each neuron's incoming weights in δ are scaled
to the norm of that neuron's weights in θ*, so that the slice looks the same
whatever the scale of each layer.  Bias directions are zero (as in Li et al.).

The first pre-activation X·(W1 + a·D1 + b·E1) is linear in (a, b): X·W1, X·D1
and X·E1 are computed once, and each grid point costs only the later layers.
"""

from dataclasses import dataclass

import numpy as np

from fastopt.demo.data import mnist_split
from fastopt.demo.models import MLP, nll
from fastopt.demo.optimizers import method
from fastopt.demo.report import progress
from fastopt.demo.training import train

TITLE = "The loss landscape of a trained MLP (filter-normalized directions, Li et al. 2018)"


@dataclass(frozen=True)
class Settings:
    hidden: tuple = (128, 128)
    epochs: int = 5
    lr: float = 1e-3            # Adam's
    resolution: int = 25        # grid points per axis
    span: float = 1.0           # a and b in [-span, span]
    n_examples: int = 2000      # training examples the loss is averaged over at each point
    n_test: int = 1000


PRESETS = {"quick": Settings(),
           "full": Settings(hidden=(256, 256), epochs=20, resolution=51, n_examples=4000)}


def filter_normalized_direction(params, rng):
    """A random direction shaped like params: per neuron the norm of its weights, zero for biases."""
    direction = []
    for p in params:
        if p.ndim < 2:
            direction.append(np.zeros_like(p))
            continue
        d = rng.standard_normal(p.shape).astype(p.dtype)
        # a weight matrix is (inputs, neurons): a neuron's "filter" is a column
        d *= np.linalg.norm(p, axis=0) / np.maximum(np.linalg.norm(d, axis=0), np.finfo(p.dtype).tiny)
        direction.append(d)
    return direction


def loss_surface(model, params, delta, eta, X, y, coordinates, show_progress=False):
    """Training loss at params + a·delta + b·eta for every (a, b) of coordinates × coordinates."""
    z_center = model.first_layer(params, X)
    z_delta, z_eta = X @ delta[0], X @ eta[0]    # first layer: linear in (a, b); biases do not move
    losses = np.empty((len(coordinates), len(coordinates)))
    with np.errstate(over="ignore", invalid="ignore"):
        for i, b in enumerate(progress(coordinates, "loss landscape", show_progress)):
            for j, a in enumerate(coordinates):
                moved = [p + a * d + b * e for p, d, e in zip(params, delta, eta)]
                z = z_center + a * z_delta + b * z_eta
                losses[i, j] = nll(model.logits_from_first_layer(moved, z), y)
    return losses


def run(settings, seed, show_progress=True):
    split = mnist_split(seed, settings.n_test)
    model = MLP(split.n_features, settings.hidden, split.n_classes)
    params = model.init(np.random.default_rng(seed))
    history = train(model, params, method("Adam", lr=settings.lr), split, batch_size=128,
                    epochs=settings.epochs, rng=np.random.default_rng([seed, 1]),
                    show_progress=show_progress, description="training the MLP")
    rng = np.random.default_rng([seed, 4])
    delta = filter_normalized_direction(params, rng)
    eta = filter_normalized_direction(params, rng)
    X, y = split.X_train[:settings.n_examples], split.y_train[:settings.n_examples]
    coordinates = np.linspace(-settings.span, settings.span, settings.resolution).astype(X.dtype)
    losses = loss_surface(model, params, delta, eta, X, y, coordinates, show_progress)
    return {"hidden": settings.hidden, "epochs": settings.epochs, "lr": settings.lr,
            "n_examples": len(y), "train_loss_history": history["train_loss"],
            "test_accuracy": history.get("test_accuracy"),
            "coordinates": coordinates, "loss": losses,
            "center_loss": float(losses[len(coordinates) // 2, len(coordinates) // 2])}


def table(result):
    loss = np.asarray(result["loss"], float)
    headers = ["MLP", "epochs (Adam)", "loss at θ*", "lowest on slice", "highest on slice", "grid",
               "test acc."]
    hidden = "-".join(map(str, result["hidden"]))
    n = len(result["coordinates"])
    return headers, [[hidden, result["epochs"], result["center_loss"], float(np.nanmin(loss)),
                      float(np.nanmax(loss)), f"{n}x{n}", result["test_accuracy"]]]


def plot(result, out_dir):
    from matplotlib.colors import LogNorm

    from fastopt.demo import plots

    a = np.asarray(result["coordinates"], float)
    A, B = np.meshgrid(a, a)
    loss = np.asarray(result["loss"], float)
    # the far corners can be huge: clip for the picture (the JSON has the values)
    cap = min(np.nanmax(loss), 10 * max(np.nanmedian(loss), result["center_loss"]))
    shown = np.clip(np.nan_to_num(loss, nan=cap), None, cap)
    levels = np.geomspace(max(shown.min(), 1e-4), cap, 24)
    with plots.style():
        fig = plots.figure(figsize=(13, 5.2))
        ax = fig.add_subplot(1, 2, 1)
        filled = ax.contourf(A, B, shown, levels=levels, cmap="viridis", norm=LogNorm())
        ax.contour(A, B, shown, levels=levels, colors="white", linewidths=0.4, alpha=0.6)
        ax.plot(0, 0, "*", color="gold", mec="black", ms=14, label=f"trained θ* (loss {result['center_loss']:.3g})")
        ax.set_xlabel("a (along δ)")
        ax.set_ylabel("b (along η)")
        ax.set_aspect("equal")
        ax.grid(False)
        ax.legend(loc="upper right", frameon=True)
        ax.set_title("Contours of the training loss")
        fig.colorbar(filled, ax=ax, label="training NLL", format="%.2g")
        ax3 = fig.add_subplot(1, 2, 2, projection="3d")
        ax3.plot_surface(A, B, np.log10(shown), cmap="viridis", linewidth=0, antialiased=True,
                         rcount=len(a), ccount=len(a))
        ticks = [-result["coordinates"][-1], 0, result["coordinates"][-1]]
        ax3.set_xticks(ticks)
        ax3.set_yticks(ticks)
        ax3.set_xlabel("a")
        ax3.set_ylabel("b")
        ax3.set_zlabel("log10 training NLL")
        ax3.view_init(elev=35, azim=-60)
        ax3.set_title("The same slice as a surface")
        hidden = "–".join(map(str, result["hidden"]))
        fig.suptitle(f"Loss landscape of an MLP ({hidden}) trained with Adam: "
                     f"θ* + a·δ + b·η, δ and η filter-normalized", fontweight="bold")
        fig.tight_layout()
        return [plots.save(fig, out_dir / "landscape.png")]
