"""Part 7: what 8-bit optimizer state does to accuracy, on the MNIST MLP and the Adam paper's problem.

Adam trains two problems twice, from the same start on the same batches:
with float32 state (``exp_avg`` and ``exp_avg_sq`` in float32) and with
8-bit state (``optim.Adam(..., state_dtype="8bit")``: each moment of a tensor
of at least ``optim.QUANTIZE_MIN_SIZE`` elements is a
:class:`fastopt.QuantizedState`, one uint8 code per element and one float32
scale per block of ``block_size`` elements; smaller tensors keep float32):

- the MNIST MLP, two ReLU layers of 512 (the cost part's --quick MLP), Adam
  at lr 0.001 with no weight decay; every weight matrix, the last of 512×10
  included, has at least 4096 elements, so only the biases keep float32 state;
- the adam-paper part's logistic regression (Kingma & Ba, Fig. 1): mean NLL
  plus (λ/2)·‖θ‖², λ = 1e-4 as the step's weight_decay, α_t = α/√t at Adam's
  α of that part's grid search; the 784×10 weights get 8-bit state, the 10
  biases float32.

Each problem runs with ``n_seeds`` seeds (the CLI's seed and the next ones;
a seed fixes the start and the batch order, which both runs of it share).
The part compares the final training loss L over all training images:
the relative difference d = L_8bit / L_float32 − 1 per seed and its mean
over seeds, against the bound users were given, |d| ≤ 2% with every seed.
For scale it also gives how far float32-state runs of different seeds end
apart.  The state memory is counted from the optimizer's buffers after its
first step: codes plus scales for a QuantizedState, nbytes for an array.
"""

import math
from dataclasses import dataclass

import numpy as np

from fastopt import optim, schedules
from fastopt.demo.data import mnist_split
from fastopt.demo.experiments import adam_paper
from fastopt.demo.models import MLP, SoftmaxRegression
from fastopt.demo.optimizers import method
from fastopt.demo.training import train
from fastopt.quantized import QuantizedState

TITLE = ("8-bit optimizer state: Adam with float32 and with 8-bit state on the MNIST MLP and the Adam "
         "paper's logistic regression")

FLOAT32 = "float32"     # the state_dtype of each mode, and its key in the result
EIGHT_BIT = "8bit"
MODE_LABELS = {FLOAT32: "float32 state", EIGHT_BIT: "8-bit state"}

BOUND = 0.02            # the claim: 8-bit state's final training loss within 2% of float32 state's

MLP_KEY, LOGREG_KEY = "mlp", "logreg"
_ADAM_PAPER = adam_paper.Settings()


@dataclass(frozen=True)
class Settings:
    mlp_hidden: tuple = (512, 512)      # the last weight matrix, 512×10, is still >= 4096 elements
    mlp_lr: float = 1e-3
    mlp_epochs: int = 3
    mlp_evals_per_epoch: int = 1        # each evaluation is a forward pass over all training images
    logreg_alpha: float = 0.2           # Adam's α from the adam-paper part's grid, in --quick and --full
    logreg_epochs: int = _ADAM_PAPER.logreg_epochs
    logreg_evals_per_epoch: int = _ADAM_PAPER.logreg_evals_per_epoch
    weight_decay: float = _ADAM_PAPER.weight_decay     # the logistic regression's λ
    batch_size: int = 128
    block_size: int = 256
    n_seeds: int = 3
    n_test: int = 1000
    problems: tuple = (MLP_KEY, LOGREG_KEY)


PRESETS = {"quick": Settings(),
           "full": Settings(mlp_hidden=(1000, 1000), mlp_epochs=10, mlp_evals_per_epoch=2,
                            logreg_epochs=adam_paper.PRESETS["full"].logreg_epochs)}


# --------------------------------------------------------------------------
# the optimizer's state memory


def buffer_bytes(buffer):
    """The bytes a state buffer holds: codes and scales of a QuantizedState, else the array's."""
    if isinstance(buffer, QuantizedState):
        return buffer.codes.nbytes + buffer.scales.nbytes
    return buffer.nbytes


def state_memory(optimizer):
    """What the optimizer's state buffers hold: bytes, and how many params (and tensors) have 8-bit state."""
    summary = {"state_bytes": 0, "n_params": 0, "n_tensors": 0, "quantized_params": 0, "quantized_tensors": 0,
               "buffer_types": {}}
    for group, state in zip(optimizer.param_groups, optimizer.state):
        buffers = {name: value for name, value in state.items() if isinstance(value, list)}
        for name, values in buffers.items():
            summary["buffer_types"].setdefault(name, []).extend(type(b).__name__ for b in values)
        for k, param in enumerate(group["params"]):
            of_param = [values[k] for values in buffers.values()]
            summary["state_bytes"] += sum(buffer_bytes(b) for b in of_param)
            summary["n_params"] += param.size
            summary["n_tensors"] += 1
            if any(isinstance(b, QuantizedState) for b in of_param):
                summary["quantized_params"] += param.size
                summary["quantized_tensors"] += 1
    summary["bytes_per_param"] = summary["state_bytes"] / summary["n_params"]
    return summary


class StateMemory:
    """after_step hook: the optimizer's state memory, read at its first step (its buffers keep their size)."""

    def __init__(self):
        self.summary = None

    def __call__(self, optimizer):
        if self.summary is None:
            self.summary = state_memory(optimizer)


# --------------------------------------------------------------------------
# the runs


def _problems(settings, split):
    """key -> (model, cost, Adam's arguments, epochs, evaluations per epoch, what the result says of it)."""
    problems = {}
    for key in settings.problems:
        if key == MLP_KEY:
            model = MLP(split.n_features, settings.mlp_hidden, split.n_classes)
            problems[key] = (model, model, {"lr": settings.mlp_lr}, settings.mlp_epochs,
                             settings.mlp_evals_per_epoch,
                             {"name": "MNIST MLP " + "–".join(map(str, settings.mlp_hidden)),
                              "hidden": settings.mlp_hidden, "lr": settings.mlp_lr, "schedule": "constant",
                              "cost": "mean NLL"})
        elif key == LOGREG_KEY:
            model = SoftmaxRegression(split.n_features, split.n_classes)
            problems[key] = (model, adam_paper.L2Cost(model, settings.weight_decay),
                             {"lr": schedules.inverse_sqrt(settings.logreg_alpha),
                              "weight_decay": settings.weight_decay},
                             settings.logreg_epochs, settings.logreg_evals_per_epoch,
                             {"name": "logistic regression", "alpha": settings.logreg_alpha,
                              "schedule": "alpha/sqrt(t)", "weight_decay": settings.weight_decay,
                              "cost": "mean NLL + (weight_decay/2)*||theta||^2 over weights and biases"})
        else:
            raise ValueError(f"unknown problem {key!r}")
    return problems


def run(settings, seed, show_progress=True):
    split = mnist_split(seed, settings.n_test)
    seeds = [seed + k for k in range(settings.n_seeds)]
    result = {"n_train": len(split.y_train), "steps_per_epoch": math.ceil(len(split.y_train) / settings.batch_size),
              "batch_size": settings.batch_size, "block_size": settings.block_size,
              "quantize_min_size": optim.QUANTIZE_MIN_SIZE, "bound": BOUND, "seeds": seeds, "problems": {}}
    for key, (model, cost, hyper, epochs, evals, about) in _problems(settings, split).items():
        runs = {mode: [] for mode in MODE_LABELS}
        memory = {}
        for run_seed in seeds:
            for mode in MODE_LABELS:
                params = model.init(np.random.default_rng(run_seed))
                adam = method("Adam", **hyper, state_dtype=mode, block_size=settings.block_size)
                counter = StateMemory()
                history = train(cost, params, adam, split, batch_size=settings.batch_size, epochs=epochs,
                                rng=np.random.default_rng([run_seed, 1]), evals_per_epoch=evals,
                                show_progress=show_progress,
                                description=f"{about['name']}: {MODE_LABELS[mode]}, seed {run_seed}",
                                after_step=counter)
                runs[mode].append({"seed": run_seed, **history})
                if memory.setdefault(mode, counter.summary) != counter.summary:
                    raise RuntimeError(f"{about['name']}: the state memory changed between seeds")
        result["problems"][key] = {**about, "epochs": epochs, "runs": runs, "state": memory,
                                   "comparison": compare(runs)}
    result["findings"] = findings(result)
    return result


# --------------------------------------------------------------------------
# the claim, measured


def final(run_):
    return run_["train_loss"][-1]


def compare(runs):
    """Final losses per seed, the relative difference d = L_8bit / L_float32 − 1 per seed and its mean,
    whether |d| <= BOUND with every seed, and how far the float32-state runs of different seeds end apart."""
    base = [final(r) for r in runs[FLOAT32]]
    eight = [final(r) for r in runs[EIGHT_BIT]]
    gaps = [e / b - 1 for e, b in zip(eight, base)]
    return {"final_float32": base, "final_8bit": eight, "gaps": gaps, "mean_gap": float(np.mean(gaps)),
            "mean_final_float32": float(np.mean(base)), "mean_final_8bit": float(np.mean(eight)),
            "holds": all(abs(g) <= BOUND for g in gaps),
            "seed_spread_float32": (max(base) - min(base)) / float(np.mean(base))}


def _pct(x, digits=2):
    return f"{100 * x:+.{digits}f}%"


def _losses(values):
    return ", ".join(f"{v:.4g}" for v in values)


def _bytes(n):
    return f"{n:,} bytes"


def findings(result):
    lines = []
    seeds = ", ".join(map(str, result["seeds"]))
    for key, p in result["problems"].items():
        c = p["comparison"]
        what = (f"Adam (lr {p['lr']:g})" if key == MLP_KEY
                else f"Adam (α {p['alpha']:g}/√t, λ {p['weight_decay']:g})")
        lines.append(f"{p['name'][0].upper()}{p['name'][1:]}, {what}, {p['epochs']} epochs, "
                     f"final training loss with seeds {seeds}: float32 state {_losses(c['final_float32'])}; "
                     f"8-bit state {_losses(c['final_8bit'])}; 8-bit vs float32 "
                     + ", ".join(_pct(g) for g in c["gaps"]) + f" (mean {_pct(c['mean_gap'])}).")
    for key, p in result["problems"].items():
        c = p["comparison"]
        outside = [(s, g) for s, g in zip(result["seeds"], c["gaps"]) if abs(g) > BOUND]
        line = (f"{p['name'][0].upper()}{p['name'][1:]}: 8-bit state ends within {100 * BOUND:g}% of float32 "
                f"state's final training loss with every seed: {'holds' if c['holds'] else 'does not hold'}")
        if outside:
            line += (" (" + "; ".join(f"seed {s}: {_pct(g)}, {'lower' if g < 0 else 'higher'}" for s, g in outside)
                     + ")")
        lines.append(line + f". For scale, float32-state runs of different seeds end "
                            f"{100 * c['seed_spread_float32']:.1f}% apart (max − min over mean).")
    for key, p in result["problems"].items():
        f32, q8 = p["state"][FLOAT32], p["state"][EIGHT_BIT]
        lines.append(f"Optimizer state, {p['name']}: {_bytes(f32['state_bytes'])} with float32 state, "
                     f"{_bytes(q8['state_bytes'])} with 8-bit state ({f32['state_bytes'] / q8['state_bytes']:.2f}× "
                     f"less, {q8['bytes_per_param']:.2f} bytes per parameter); {q8['quantized_params']:,} of "
                     f"{q8['n_params']:,} parameters ({q8['quantized_tensors']} of {q8['n_tensors']} tensors) "
                     f"have 8-bit state, the rest float32 (under {result['quantize_min_size']} elements).")
    return lines


def notes(result):
    return result["findings"]


def table(result):
    headers = ["problem", "state", "state bytes", "8-bit params", "final loss by seed", "mean", "vs float32 by seed",
               "mean vs float32", "test acc.", "training s"]
    rows = []
    for key, p in result["problems"].items():
        c = p["comparison"]
        for mode in MODE_LABELS:
            runs, memory = p["runs"][mode], p["state"][mode]
            finals = [final(r) for r in runs]
            rows.append([p["name"], MODE_LABELS[mode], memory["state_bytes"],
                         f"{memory['quantized_params']:,} of {memory['n_params']:,}",
                         " / ".join(f"{v:.4g}" for v in finals), float(np.mean(finals)),
                         " / ".join(_pct(g) for g in c["gaps"]) if mode == EIGHT_BIT else "",
                         _pct(c["mean_gap"]) if mode == EIGHT_BIT else "",
                         float(np.mean([r.get("test_accuracy", np.nan) for r in runs])),
                         float(np.mean([r["seconds"][-1] for r in runs]))])
    return headers, rows


# --------------------------------------------------------------------------
# the figure

COLORS = {FLOAT32: "#000000", EIGHT_BIT: "#D55E00"}


def plot(result, out_dir):
    import textwrap

    from fastopt.demo import plots

    problems = result["problems"]
    with plots.style():
        fig, axes = plots.subplots(2, len(problems), figsize=(6.8 * len(problems), 7.6), squeeze=False,
                                   gridspec_kw={"height_ratios": [1.6, 1]})
        for (key, p), ax, ax_gap in zip(problems.items(), axes[0], axes[1]):
            for mode, label in MODE_LABELS.items():
                runs, memory = p["runs"][mode], p["state"][mode]
                epochs, losses = _curves(runs)
                ax.fill_between(epochs, losses.min(axis=0), losses.max(axis=0), color=COLORS[mode], alpha=0.18, lw=0)
                ax.plot(epochs, losses.mean(axis=0), color=COLORS[mode], lw=2.2 if mode == FLOAT32 else 1.6,
                        ls="-" if mode == FLOAT32 else (0, (4, 2)),
                        label=f"{label}: {_bytes(memory['state_bytes'])} "
                              f"({memory['bytes_per_param']:.2f} per param)")
            ax.set_xlabel(f"epochs ({result['n_train']} training images, {result['steps_per_epoch']} steps each)")
            ax.set_ylabel("training " + ("NLL" if key == MLP_KEY else "cost: NLL + (λ/2)·‖θ‖²"))
            plots.log_loss_axis(ax)
            ax.set_title(f"{p['name']}: mean of {len(result['seeds'])} seeds, band min–max", fontsize=10)
            ax.legend(loc="upper right", title="optimizer state", title_fontsize=9)

            c = p["comparison"]
            ax_gap.axhspan(-100 * BOUND, 100 * BOUND, color="#009E73", alpha=0.12, lw=0,
                           label=f"within ±{100 * BOUND:g}%")
            ax_gap.axhline(0, color="black", lw=0.8)
            gaps = [_gap_curve(base, eight) for base, eight in zip(p["runs"][FLOAT32], p["runs"][EIGHT_BIT])]
            for k, (epochs, gap) in enumerate(gaps):
                ax_gap.plot(epochs, gap, color=plots.BATCH_COLORS[k % len(plots.BATCH_COLORS)], lw=1.4,
                            marker="o", ms=2.5, label=f"seed {result['seeds'][k]}: {_pct(c['gaps'][k])} at the end")
            reach = max(1.5 * 100 * BOUND, *(float(np.nanmax(np.abs(gap))) for _, gap in gaps))
            ax_gap.set_ylim(-1.15 * reach, 2.1 * reach)     # room above the curves for the legend
            ax_gap.set_xlabel("epochs")
            ax_gap.set_ylabel("8-bit vs float32 state, %")
            ax_gap.set_title(f"L_8bit / L_float32 − 1: {'within' if c['holds'] else 'not within'} "
                             f"±{100 * BOUND:g}% at the end with every seed", fontsize=10)
            ax_gap.legend(loc="upper left", ncol=2, fontsize=8.5)
        fig.suptitle(f"Adam with float32 and with 8-bit optimizer state (blocks of {result['block_size']}), "
                     f"same start and batches per seed", fontweight="bold")
        fig.tight_layout()
        text = "\n".join(textwrap.fill(line, 160, initial_indent="• ", subsequent_indent="  ")
                         for line in result["findings"])
        fig.text(0.01, -0.01, text, va="top", ha="left", fontsize=8.8)
        return [plots.save(fig, out_dir / "state_8bit.png")]


def _gap_curve(base, eight):
    """The evaluation epochs and 100·(L_8bit / L_float32 − 1) at each, for one seed's pair of runs."""
    n = min(len(base["train_loss"]), len(eight["train_loss"]))
    ratio = np.asarray(eight["train_loss"][:n], float) / np.asarray(base["train_loss"][:n], float)
    return np.asarray(base["epoch"][:n], float), 100 * (ratio - 1)


def _curves(runs):
    """The evaluation epochs and a (seeds, evaluations) array of losses, cut to the shortest run."""
    n = min(len(r["train_loss"]) for r in runs)
    return np.asarray(runs[0]["epoch"][:n], float), np.array([r["train_loss"][:n] for r in runs], float)
