"""The demo's training loop: mini-batches, one fused step per batch, a history of the training loss."""

import math
import time

import numpy as np

from fastopt.demo.data import minibatches
from fastopt.demo.optimizers import Optimizer
from fastopt.demo.report import progress


def train(model, params, method, split, *, batch_size, epochs, rng, evals_per_epoch=1,
          lr_schedule=None, show_progress=False, description="training"):
    """Train params in place; return the history of the full training loss.

    The loss is evaluated ``evals_per_epoch`` times an epoch on the whole
    training set; ``seconds`` counts training time only, not those
    evaluations.  A run whose loss stops being finite ends there, marked
    ``diverged``.
    """
    X, y = split.X_train, split.y_train
    optimizer = Optimizer(method, params, lr_schedule=lr_schedule)
    steps_per_epoch = math.ceil(len(y) / batch_size)
    eval_every = max(1, steps_per_epoch // evals_per_epoch)
    history = {"epoch": [0.0], "seconds": [0.0], "train_loss": [model.loss(params, X, y)],
               "epoch_seconds": [], "diverged": False}
    model.loss_and_grad(params, X[:batch_size], y[:batch_size])  # warm-up, untimed: first-call costs
    with np.errstate(over="ignore", invalid="ignore"):  # divergence is detected and reported below
        _epochs(model, params, optimizer, X, y, batch_size, epochs, rng, eval_every, history,
                progress(range(epochs), description, show_progress))
    if not history["diverged"]:
        history["test_accuracy"] = model.accuracy(params, split.X_test, split.y_test)
    return history


def _epochs(model, params, optimizer, X, y, batch_size, epochs, rng, eval_every, history, epoch_range):
    seconds = 0.0
    for epoch in epoch_range:
        epoch_seconds = 0.0
        start = time.perf_counter()
        batches = minibatches(len(y), batch_size, rng)
        for k, batch in enumerate(batches, 1):
            _, grads = model.loss_and_grad(params, X[batch], y[batch])
            optimizer.step(grads)
            if k % eval_every == 0 or k == len(batches):
                elapsed = time.perf_counter() - start
                seconds += elapsed
                epoch_seconds += elapsed
                loss = model.loss(params, X, y)
                history["epoch"].append(epoch + k / len(batches))
                history["seconds"].append(seconds)
                history["train_loss"].append(loss)
                if not math.isfinite(loss):
                    history["diverged"] = True
                    return
                start = time.perf_counter()
        history["epoch_seconds"].append(epoch_seconds)


def pick_learning_rate(grid, run):
    """Kingma & Ba's protocol: run(lr) for each lr of the grid, keep the lowest final training loss.

    Returns (best lr, its history, {lr: final loss}); diverged runs count as +inf.
    """
    finals, histories = {}, {}
    for lr in grid:
        histories[lr] = run(lr)
        last = histories[lr]["train_loss"][-1]
        finals[lr] = last if (math.isfinite(last) and not histories[lr]["diverged"]) else math.inf
    best = min(grid, key=lambda lr: finals[lr])
    return best, histories[best], finals
