"""Part 5: how much of a training step the optimizer costs, fused kernels against plain NumPy.

An MLP is trained on MNIST mini-batches of 128; every step's forward and
backward pass and its optimizer step are timed separately.  The same steps
run with fastopt's fused kernels (on one thread and on all) and with
:mod:`fastopt.reference` (the NumPy twin: one temporary array per operation),
from the same start, on the same batches, in alternating blocks so that
machine load falls on all alike; the first step of each block is not counted.
The runs must end with identical parameters: the kernels are bit-identical
to the reference.

On a busy machine the step on all threads can be far slower than on one:
during the forward and backward pass OpenMP's worker threads go to sleep,
and the next step waits until the scheduler wakes them.
"""

import time
from dataclasses import dataclass

import numpy as np

import fastopt
from fastopt.demo.data import minibatches, mnist_split
from fastopt.demo.models import MLP
from fastopt.demo.optimizers import METHODS, make_optimizer, method
from fastopt.demo.report import progress

TITLE = "The optimizer's share of a training step: fastopt's fused kernels vs the NumPy reference"

# learning rates near the adam-paper part's picks (and torch's, optax's or schedulefree's defaults for
# the others); speed does not depend on them
LEARNING_RATES = {"Adam": 1e-3, "Nesterov": 0.03, "Adagrad": 0.01, "RMSprop": 1e-3, "NAdam": 2e-3, "RAdam": 1e-3,
                  "Adamax": 2e-3, "Lion": 1e-4, "LAMB": 1e-3, "Adafactor": 1e-2,
                  "ScheduleFreeAdamW": 2.5e-3}


@dataclass(frozen=True)
class Settings:
    hidden: tuple = (512, 512)
    rounds: int = 4              # blocks per backend, alternating
    steps_per_round: int = 6     # the first of each block is a warm-up
    batch_size: int = 128
    n_test: int = 1000


PRESETS = {"quick": Settings(),
           "full": Settings(hidden=(1000, 1000), rounds=10, steps_per_round=11)}


def library_default_threads():
    """The thread count fastopt uses when nothing is set (OpenMP's default)."""
    current = fastopt.get_num_threads()
    fastopt.set_num_threads(None)
    default = fastopt.get_num_threads()
    fastopt.set_num_threads(current)
    return default


def _backends():
    """(label, optimizer backend, thread count) for each way of taking the step."""
    threads = library_default_threads()
    backends = [("fastopt, 1 thread", "fastopt", 1)]
    if threads > 1:
        backends.append((f"fastopt, {threads} threads", "fastopt", threads))
    backends.append(("NumPy reference", "reference", 1))
    return backends


def _timed_block(model, params, optimizer, X, y, batches):
    """Run a block of steps; return the forward-backward and step times of all but the first."""
    forward_backward, step = [], []
    for batch in batches:
        t0 = time.perf_counter()
        _, grads = model.loss_and_grad(params, X[batch], y[batch])
        t1 = time.perf_counter()
        optimizer.step(grads)
        t2 = time.perf_counter()
        forward_backward.append(t1 - t0)
        step.append(t2 - t1)
    return forward_backward[1:], step[1:]


def run(settings, seed, show_progress=True):
    split = mnist_split(seed, settings.n_test)
    X, y = split.X_train, split.y_train
    model = MLP(split.n_features, settings.hidden, split.n_classes)
    backends = _backends()
    n_batches = settings.rounds * settings.steps_per_round
    epochs_needed = -(-n_batches * settings.batch_size // len(y)) + 1
    schedule = [batch for epoch in range(epochs_needed)
                for batch in minibatches(len(y), settings.batch_size, np.random.default_rng([seed, epoch]))]
    result = {"hidden": settings.hidden, "n_parameters": 0, "batch_size": settings.batch_size,
              "methods": {}}
    for name, lr in progress(LEARNING_RATES.items(), "optimizer cost", show_progress):
        runs = {}
        for label, backend, threads in backends:
            params = model.init(np.random.default_rng(seed))
            m = method(name, lr=lr, num_threads=threads)
            runs[label] = {"params": params, "optimizer": make_optimizer(m, params, backend=backend),
                           "forward_backward": [], "step": []}
        result["n_parameters"] = sum(p.size for p in params)
        for r in range(settings.rounds):
            block = schedule[r * settings.steps_per_round:(r + 1) * settings.steps_per_round]
            for run_ in runs.values():
                fb, st = _timed_block(model, run_["params"], run_["optimizer"], X, y, block)
                run_["forward_backward"] += fb
                run_["step"] += st
        result["methods"][METHODS[name].label] = _summarize(runs)
    return result


def _summarize(runs):
    reference_params = runs["NumPy reference"]["params"]
    reference_step = float(np.median(runs["NumPy reference"]["step"]))
    summary = {}
    for label, run_ in runs.items():
        fb, st = float(np.median(run_["forward_backward"])), float(np.median(run_["step"]))
        summary[label] = {
            "forward_backward_ms": 1e3 * fb, "step_ms": 1e3 * st, "share": st / (fb + st),
            "step_speedup_vs_reference": reference_step / st,
            "max_abs_difference_from_reference": max(float(np.max(np.abs(p - q)))
                                                     for p, q in zip(run_["params"], reference_params)),
            "step_times_ms": 1e3 * np.asarray(run_["step"]),
            "forward_backward_times_ms": 1e3 * np.asarray(run_["forward_backward"])}
    return summary


def table(result):
    headers = ["method", "step taken by", "fwd+bwd ms", "step ms", "step share", "step speed-up",
               "max |Δθ| vs ref."]
    rows = []
    for name, runs in result["methods"].items():
        for label, r in runs.items():
            rows.append([name, label, r["forward_backward_ms"], r["step_ms"], f"{100 * r['share']:.1f}%",
                         f"{r['step_speedup_vs_reference']:.1f}x", r["max_abs_difference_from_reference"]])
    return headers, rows


def notes(result):
    """The ranges over the methods: each backend's share of a training step, and its speed-up."""
    labels = list(next(iter(result["methods"].values())))
    lines = []
    for label in labels:
        runs = [result["methods"][m][label] for m in result["methods"]]
        shares = [100 * r["share"] for r in runs]
        speedups = [r["step_speedup_vs_reference"] for r in runs]
        line = f"{label}: the optimizer step is {min(shares):.0f}–{max(shares):.0f}% of a training step"
        if label != "NumPy reference":
            line += f", its step {min(speedups):.1f}–{max(speedups):.1f}× as fast as the NumPy reference's"
        lines.append(line + f" (medians, over the {len(runs)} methods).")
    return lines


def plot(result, out_dir):
    from fastopt.demo import plots

    methods = list(result["methods"])
    labels = list(result["methods"][methods[0]])
    colors = dict(zip(labels, plots.BACKEND_COLORS))
    with plots.style():
        fig, (ax_share, ax_ms) = plots.subplots(1, 2, figsize=(13, 1.6 + 0.7 * len(methods)))
        height = 0.8 / len(labels)
        for k, label in enumerate(labels):
            pos = np.arange(len(methods)) + (k - (len(labels) - 1) / 2) * height
            share = [100 * result["methods"][m][label]["share"] for m in methods]
            step = [result["methods"][m][label]["step_ms"] for m in methods]
            bars = ax_share.barh(pos, share, height * 0.92, color=colors[label], label=label)
            ax_share.bar_label(bars, [f"{s:.0f}%" for s in share], padding=2, fontsize=8)
            bars = ax_ms.barh(pos, step, height * 0.92, color=colors[label], label=label)
            ax_ms.bar_label(bars, [f"{s:.2f}" for s in step], padding=2, fontsize=8)
        for ax in (ax_share, ax_ms):
            ax.set_yticks(np.arange(len(methods)), methods)
            ax.invert_yaxis()
            ax.grid(axis="y", visible=False)
        ax_share.set_xlabel("optimizer step, % of a training step (median)")
        ax_share.set_title("Share of training time in the optimizer")
        largest_share = max(100 * r["share"] for runs in result["methods"].values() for r in runs.values())
        ax_share.set_xlim(0, min(100.0, largest_share * 1.25))   # room for the bar labels, never past 100%
        handles, names = ax_share.get_legend_handles_labels()
        fig.legend(handles, names, loc="lower center", ncol=len(names), bbox_to_anchor=(0.5, -0.06))
        ax_ms.set_xlabel("milliseconds per optimizer step (median)")
        ax_ms.set_title("Time of one optimizer step")
        ax_ms.set_xlim(0, ax_ms.get_xlim()[1] * 1.15)
        hidden = "–".join(map(str, result["hidden"]))
        fig.suptitle(f"MLP {hidden} ({result['n_parameters'] / 1e6:.2f} M parameters), "
                     f"batches of {result['batch_size']}: the optimizer's cost", fontweight="bold")
        fig.tight_layout()
        return [plots.save(fig, out_dir / "cost.png")]
