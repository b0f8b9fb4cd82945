"""Part 2, the lecture's Table 1: batch vs stochastic vs mini-batch gradient descent.

Softmax regression on MNIST with plain GD steps (``fastopt.sgd_step``), the
gradient taken over the whole training set (batch), one example (stochastic)
or 128 examples (mini-batch).  Per epoch, one example per step makes the most
progress, but each step pays Python's and NumPy's per-call overhead for one
example; a step on 128 examples costs only a few times more than a step on
one, so per second mini-batches usually win.  Batch GD makes one careful
step per epoch and needs many epochs.
"""

from dataclasses import dataclass

import numpy as np

from fastopt.demo.data import mnist_split
from fastopt.demo.models import SoftmaxRegression
from fastopt.demo.optimizers import method
from fastopt.demo.training import train

TITLE = "Batch vs stochastic vs mini-batch gradient descent (softmax regression on MNIST)"

FULL_BATCH = 0  # stands for "the whole training set"


@dataclass(frozen=True)
class Variant:
    label: str
    batch_size: int     # FULL_BATCH: the whole training set
    lr: float           # a rate of {1, 2, 5}x10^k that suits this batch size
    epochs: int
    evals_per_epoch: int


@dataclass(frozen=True)
class Settings:
    variants: tuple
    n_test: int = 1000


def _variants(batch_epochs, minibatch_epochs, stochastic_epochs):
    return (Variant("batch (N)", FULL_BATCH, 0.5, batch_epochs, 1),
            Variant("mini-batch (128)", 128, 0.5, minibatch_epochs, 4),
            Variant("stochastic (1)", 1, 0.02, stochastic_epochs, 10))


PRESETS = {"quick": Settings(_variants(50, 10, 3)), "full": Settings(_variants(300, 50, 15))}


def run(settings, seed, show_progress=True):
    split = mnist_split(seed, settings.n_test)
    model = SoftmaxRegression(split.n_features, split.n_classes)
    result = {"n_train": len(split.y_train), "variants": {}}
    for v in settings.variants:
        batch_size = v.batch_size or len(split.y_train)
        params = model.init(np.random.default_rng(seed))
        history = train(model, params, method("GD", lr=v.lr), split, batch_size=batch_size,
                        epochs=v.epochs, rng=np.random.default_rng([seed, batch_size]),
                        evals_per_epoch=v.evals_per_epoch, show_progress=show_progress,
                        description=v.label)
        result["variants"][v.label] = {
            "batch_size": batch_size, "lr": v.lr, "steps_per_epoch": -(-len(split.y_train) // batch_size),
            "seconds_per_epoch": float(np.median(history["epoch_seconds"])) if history["epoch_seconds"] else None,
            **history}
    return result


def table(result):
    headers = ["variant", "batch", "lr", "steps/epoch", "s/epoch (median)", "epochs", "final loss",
               "test acc."]
    rows = [[name, v["batch_size"], v["lr"], v["steps_per_epoch"], v["seconds_per_epoch"],
             round(v["epoch"][-1], 2), v["train_loss"][-1], v.get("test_accuracy")]
            for name, v in result["variants"].items()]
    return headers, rows


def plot(result, out_dir):
    from fastopt.demo import plots

    with plots.style():
        fig, (ax_epoch, ax_time, ax_bar) = plots.subplots(
            1, 3, figsize=(15, 4.3), gridspec_kw={"width_ratios": [1, 1, 0.62]})
        names = list(result["variants"])
        for name, c in zip(names, plots.BATCH_COLORS):
            v = result["variants"][name]
            epoch, seconds, loss = (np.asarray(v[k], float) for k in ("epoch", "seconds", "train_loss"))
            label = f"{name}, lr {v['lr']:g}"
            ax_epoch.plot(epoch[1:], loss[1:], color=c, lw=1.8, label=label)
            ax_time.plot(seconds[1:], loss[1:], color=c, lw=1.8, label=label)
        for ax, xlabel, title in ((ax_epoch, "epochs (passes over the training set)", "Loss per epoch"),
                                  (ax_time, "training time (s)", "Loss per second of training")):
            ax.set_xscale("log")
            plots.log_loss_axis(ax)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("training loss (NLL)")
            ax.set_title(title)
            ax.legend()
        per_epoch = [result["variants"][n]["seconds_per_epoch"] or 0.0 for n in names]
        bars = ax_bar.barh(names, per_epoch, color=plots.BATCH_COLORS[:len(names)])
        ax_bar.bar_label(bars, [f"{t * 1e3:.0f} ms" for t in per_epoch], padding=3, fontsize=9)
        ax_bar.invert_yaxis()
        ax_bar.set_xlabel("seconds per epoch (median)")
        ax_bar.set_title("Time per epoch")
        ax_bar.grid(axis="y", visible=False)
        ax_bar.set_xlim(0, max(per_epoch) * 1.3 or 1)
        fig.suptitle(f"Batch vs stochastic vs mini-batch GD: softmax regression on "
                     f"{result['n_train']} MNIST digits", fontweight="bold")
        fig.tight_layout()
        return [plots.save(fig, out_dir / "gd_variants.png")]
