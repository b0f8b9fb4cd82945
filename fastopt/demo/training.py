"""The demo's training loop: mini-batches, one fused step per batch, a history of the training loss."""

import math
import time

import numpy as np

from fastopt.demo.data import minibatches
from fastopt.demo.optimizers import make_optimizer
from fastopt.demo.report import progress


def train(model, params, method, split, *, batch_size, epochs, rng, evals_per_epoch=1,
          show_progress=False, description="training", after_step=None):
    """Train params in place; return the history of the full training loss.

    The loss is evaluated ``evals_per_epoch`` times an epoch on the whole
    training set; ``seconds`` counts training time only, not those
    evaluations.  A run whose loss stops being finite ends there, marked
    ``diverged``.  ``after_step(optimizer)``, when given, is called after
    every step (to measure something about it); its time is not counted.
    """
    X, y = split.X_train, split.y_train
    optimizer = make_optimizer(method, params)
    steps_per_epoch = math.ceil(len(y) / batch_size)
    eval_every = max(1, steps_per_epoch // evals_per_epoch)
    history = {"epoch": [0.0], "seconds": [0.0], "train_loss": [model.loss(params, X, y)],
               "epoch_seconds": [], "diverged": False}
    model.loss_and_grad(params, X[:batch_size], y[:batch_size])  # warm-up, untimed: first-call costs
    seconds = epoch_seconds = 0.0
    epoch_range = progress(range(epochs), description, show_progress)
    with np.errstate(over="ignore", invalid="ignore"):  # divergence is detected and reported below
        for done, elapsed, epoch_ended in _timed_steps(model, params, optimizer, X, y, batch_size,
                                                       epoch_range, rng, eval_every, after_step):
            seconds += elapsed
            epoch_seconds += elapsed
            loss = model.loss(params, X, y)
            history["epoch"].append(done)
            history["seconds"].append(seconds)
            history["train_loss"].append(loss)
            if not math.isfinite(loss):
                history["diverged"] = True
                break
            if epoch_ended:
                history["epoch_seconds"].append(epoch_seconds)
                epoch_seconds = 0.0
    if not history["diverged"]:
        history["test_accuracy"] = model.accuracy(params, split.X_test, split.y_test)
    return history


def _timed_steps(model, params, optimizer, X, y, batch_size, epoch_range, rng, eval_every, after_step=None):
    """Take the steps; every eval_every steps and at each epoch's end, pause and yield
    (epochs done, training seconds since the last pause, whether an epoch just ended).
    The caller's evaluation happens during the pause, so it is not timed; nor is after_step."""
    for epoch in epoch_range:
        start = time.perf_counter()
        batches = minibatches(len(y), batch_size, rng)
        for k, batch in enumerate(batches, 1):
            _, grads = model.loss_and_grad(params, X[batch], y[batch])
            optimizer.step(grads)
            if after_step is not None:
                paused = time.perf_counter()
                after_step(optimizer)
                start += time.perf_counter() - paused
            if k % eval_every == 0 or k == len(batches):
                yield epoch + k / len(batches), time.perf_counter() - start, k == len(batches)
                start = time.perf_counter()


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
