"""Part 6: what 16-bit training does to accuracy, on the MNIST MLP.

The same MLP, from the same start and the same batches, trained four ways
with SGD with momentum and no weight decay (``optim.SGD(momentum=0.9)``,
torch's form: b ← μ·b + g, θ ← θ − lr·b):

- float32 parameters, gradients and momentum;
- bfloat16 parameters, gradients and momentum, each new parameter rounded to
  nearest (even), the default for bfloat16 arrays;
- the same with stochastic rounding of the parameters
  (``stochastic_rounding=True``; the momentum is still rounded to nearest),
  once for each of three ``seed`` values;
- bfloat16 parameters and gradients with float32 master weights
  (``master_weights=True``; the momentum is then float32 too): the step
  updates the float32 copy and writes it, rounded, into the bfloat16 param.

In every 16-bit run the forward and backward pass compute in float32 from
``p.astype(np.float32)`` and hand the optimizer gradients rounded to the
param's dtype, as mixed-precision training does (:class:`Float32Compute`).

bfloat16 keeps 8 significant bits (7 stored, one implicit): the values next
to a weight w in [2^e, 2^(e+1)) lie 2^(e−7) away, between 1/256 and 1/128 of
|w|.  Rounding to nearest drops every update smaller than half that gap,
about 0.2-0.4% of |w|: a weight whose gradient is small for long stops
moving, and those updates are lost for good.  Stochastic rounding moves it a
whole gap with probability update/gap, so on average nothing is lost;
master weights keep the update in float32, where it adds up.

SGD with momentum shows it plainly: its update is lr times the averaged
gradient, so weights with small gradients take small updates, and more of
them fall under half a gap as the gradients shrink.  The rate, lr = 0.01
with momentum 0.9, trains the float32 MLP well; a smaller rate makes more
updates small enough to round away, a larger one fewer.  After
every step the part measures how far the weights moved along their updates,
as a share of the updates' size (:class:`UpdateTaken`): 100% in float32, less
where updates round away.
"""

import math
from dataclasses import dataclass
from types import MappingProxyType

import ml_dtypes
import numpy as np

from fastopt.demo.data import mnist_split
from fastopt.demo.models import MLP
from fastopt.demo.optimizers import Method
from fastopt.demo.training import train

TITLE = ("Accuracy in 16 bits: the MNIST MLP in float32, and in bfloat16 rounded to nearest, "
         "stochastically, or with float32 master weights")

BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
SIGNIFICANT_BITS = 8          # bfloat16's: 7 stored and one implicit

FLOAT32 = "float32"
NEAREST = "bfloat16, round to nearest"
MASTER = "bfloat16 + float32 master"
STOCHASTIC = "bfloat16, stochastic rounding"

MASTER_BOUND = 0.01           # the claim: master weights end within 1% of float32's final loss
STOCHASTIC_BOUND = 0.03       # stochastic rounding within 3%, every seed


def stochastic_label(seed):
    return f"{STOCHASTIC}, seed {seed}"


@dataclass(frozen=True)
class Settings:
    hidden: tuple = (128, 128)
    epochs: int = 8
    lr: float = 0.01
    momentum: float = 0.9
    batch_size: int = 128
    rounding_seeds: tuple = (0, 1, 2)    # the seeds of stochastic rounding
    evals_per_epoch: int = 1
    n_test: int = 1000
    runs: tuple = (FLOAT32, NEAREST, STOCHASTIC, MASTER)   # which runs to make


PRESETS = {"quick": Settings(), "full": Settings(hidden=(256, 256), epochs=30)}


class Float32Compute:
    """model, computing in float32 whatever its params' dtype: the forward and backward pass run
    on ``p.astype(np.float32)`` (no copy for float32 params), and the gradients come back in each
    param's dtype, rounded to nearest, as mixed-precision training hands them to its optimizer."""

    def __init__(self, model):
        self.model = model

    def __getattr__(self, name):
        return getattr(self.model, name)

    @staticmethod
    def widened(params):
        return [p.astype(np.float32, copy=False) for p in params]

    def loss(self, params, X, y):
        return self.model.loss(self.widened(params), X, y)

    def accuracy(self, params, X, y):
        return self.model.accuracy(self.widened(params), X, y)

    def loss_and_grad(self, params, X, y):
        loss, grads = self.model.loss_and_grad(self.widened(params), X, y)
        return loss, [g.astype(p.dtype, copy=False) for g, p in zip(grads, params)]


class UpdateTaken:
    """Called after each step of SGD with momentum (θ ← θ − lr·b, b the momentum buffer): how far
    the params moved along the updates they were given, as a share of those updates' size, per epoch.

    Per epoch: Σ (θ_new − θ_old)·sign(−b) / Σ lr·|b| over every element of every step: 1 in
    float32 (to rounding), below 1 where updates round away.  Also records the dtype of the
    momentum buffer and the bytes the run holds per parameter (params, state, any master copy).
    """

    def __init__(self, params, lr, steps_per_epoch):
        self.before = [p.astype(np.float32).ravel() for p in params]
        self.lr, self.steps_per_epoch = lr, steps_per_epoch
        self.steps = 0
        self.moved, self.asked = [], []     # per epoch
        self.bytes_per_param = self.state_dtype = None

    def __call__(self, optimizer):
        state = optimizer.state[0]
        if self.bytes_per_param is None:
            arrays = list(optimizer.params) + [a for name, v in state.items() if name != "step" for a in v]
            self.bytes_per_param = sum(a.nbytes for a in arrays) / sum(p.size for p in optimizer.params)
            self.state_dtype = state["momentum_buffer"][0].dtype.name
        if self.steps % self.steps_per_epoch == 0:
            self.moved.append(0.0)
            self.asked.append(0.0)
        self.steps += 1
        for p, before, b in zip(optimizer.params, self.before, state["momentum_buffer"]):
            now = p.astype(np.float32, copy=False).ravel()
            b = b.astype(np.float32, copy=False).ravel()
            sign = np.sign(b)
            self.moved[-1] -= float(np.dot(sign, now - before))
            self.asked[-1] += self.lr * float(np.dot(sign, b))
            before[...] = now

    def shares(self):
        """The share of the updates' size the params moved, per epoch."""
        return [moved / asked if asked else 1.0 for moved, asked in zip(self.moved, self.asked)]


def run_kinds(settings):
    """label -> (param dtype, optimizer options) for every run of settings."""
    kinds = {}
    for kind in settings.runs:
        if kind == FLOAT32:
            kinds[FLOAT32] = (np.dtype(np.float32), {})
        elif kind == NEAREST:
            kinds[NEAREST] = (BFLOAT16, {})
        elif kind == STOCHASTIC:
            for seed in settings.rounding_seeds:
                kinds[stochastic_label(seed)] = (BFLOAT16, {"stochastic_rounding": True, "seed": seed})
        elif kind == MASTER:
            kinds[MASTER] = (BFLOAT16, {"master_weights": True})
        else:
            raise ValueError(f"unknown run {kind!r}")
    return kinds


def run(settings, seed, show_progress=True):
    split = mnist_split(seed, settings.n_test)
    model = MLP(split.n_features, settings.hidden, split.n_classes)
    steps_per_epoch = math.ceil(len(split.y_train) / settings.batch_size)
    start = model.init(np.random.default_rng(seed))
    runs = {}
    for label, (dtype, options) in run_kinds(settings).items():
        params = [p.astype(dtype) for p in start]      # every run from the same start (rounded in 16 bits)
        sgd = Method(label, "SGD", MappingProxyType({"lr": settings.lr, "momentum": settings.momentum,
                                                     **options}))
        counter = UpdateTaken(params, settings.lr, steps_per_epoch)
        history = train(Float32Compute(model), params, sgd, split, batch_size=settings.batch_size,
                        epochs=settings.epochs, rng=np.random.default_rng([seed, 1]),
                        evals_per_epoch=settings.evals_per_epoch, show_progress=show_progress,
                        description=label, after_step=counter)
        runs[label] = {"param_dtype": dtype.name, "options": dict(options),
                       "state_dtype": counter.state_dtype,
                       "update_taken_by_epoch": counter.shares(), "bytes_per_param": counter.bytes_per_param,
                       **history}
    result = {"n_train": len(split.y_train), "steps_per_epoch": steps_per_epoch, "hidden": settings.hidden,
              "lr": settings.lr, "momentum": settings.momentum, "epochs": settings.epochs,
              "batch_size": settings.batch_size, "significant_bits": SIGNIFICANT_BITS, "runs": runs}
    result["claims"] = claims(result)
    result["findings"] = findings(result)
    return result


# --------------------------------------------------------------------------
# the claims, measured


def final(run_):
    return run_["train_loss"][-1]


def gap(run_, reference):
    """How far run_'s final training loss ends from reference's, relative to it (+: higher)."""
    return final(run_) / final(reference) - 1


def stochastic_runs(result):
    return {label: r for label, r in result["runs"].items() if label.startswith(STOCHASTIC)}


def claims(result):
    """Each claim's numbers and whether it holds, for the claims whose runs were made."""
    runs = result["runs"]
    out = {}
    if FLOAT32 not in runs:
        return out
    base = runs[FLOAT32]
    if MASTER in runs:
        g = gap(runs[MASTER], base)
        out["master"] = {"bound": MASTER_BOUND, "gap": g, "holds": abs(g) <= MASTER_BOUND}
    sr = stochastic_runs(result)
    if sr:
        gaps = [gap(r, base) for r in sr.values()]
        finals = [final(r) for r in sr.values()]
        out["stochastic"] = {"bound": STOCHASTIC_BOUND, "seeds": len(sr), "gaps": gaps,
                             "mean": float(np.mean(finals)), "min": min(finals), "max": max(finals),
                             "holds": all(abs(g) <= STOCHASTIC_BOUND for g in gaps)}
    if NEAREST in runs:
        nearest = runs[NEAREST]
        out["nearest"] = {"gap": gap(nearest, base),
                          "float32_epoch_at_nearest_final": epoch_reaching(base, final(nearest)),
                          "last_epoch_drop": last_epoch_drop(nearest),
                          "float32_last_epoch_drop": last_epoch_drop(base)}
    return out


def epoch_reaching(run_, level):
    """When run_'s training loss first came down to level, in epochs, interpolated between
    evaluations (None: never)."""
    epochs, losses = np.asarray(run_["epoch"], float), np.asarray(run_["train_loss"], float)
    reached = np.flatnonzero(losses <= level)
    if len(reached) == 0:
        return None
    k = reached[0]
    if k == 0:
        return float(epochs[0])
    return float(np.interp(level, [losses[k], losses[k - 1]], [epochs[k], epochs[k - 1]]))


def last_epoch_drop(run_):
    """How much the training loss fell over the last epoch, relative to where it was."""
    epochs, losses = np.asarray(run_["epoch"], float), np.asarray(run_["train_loss"], float)
    before = float(np.interp(epochs[-1] - 1, epochs, losses))
    return 1 - losses[-1] / before


def _pct(x, digits=1):
    return f"{100 * x:+.{digits}f}%"


def _share(run_, epoch=-1):
    return f"{100 * run_['update_taken_by_epoch'][epoch]:.0f}%"


def _short(label):
    """A run's name without 'bfloat16' and the seed: 'stochastic rounding', 'float32 master'."""
    return label.split(", seed")[0].replace("bfloat16, ", "").replace("bfloat16 + ", "")


def findings(result):
    runs, c = result["runs"], result["claims"]
    lines = []
    if FLOAT32 not in runs:
        return lines
    base = runs[FLOAT32]
    epochs = result["epochs"]
    lines.append(f"Final training loss after {epochs} epochs of SGD (lr {result['lr']:g}, momentum "
                 f"{result['momentum']:g}): float32 {final(base):.4f}"
                 + "".join(f", {_short(label)} {final(r):.4f}" for label, r in runs.items()
                           if label in (NEAREST, MASTER))
                 + (f", stochastic rounding {c['stochastic']['mean']:.4f} (mean of {c['stochastic']['seeds']} "
                    f"seeds, {c['stochastic']['min']:.4f} to {c['stochastic']['max']:.4f})"
                    if "stochastic" in c else "") + ".")
    if "nearest" in c:
        n, nearest = c["nearest"], runs[NEAREST]
        at = n["float32_epoch_at_nearest_final"]
        shown = n["gap"] > STOCHASTIC_BOUND
        others = dict.fromkeys(f"{_short(label)} {_share(r)}" for label, r in runs.items()
                               if label not in (FLOAT32, NEAREST))   # each seed's share, once if equal
        lines.append(
            f"Round to nearest {'slows training down' if shown else 'costs little here'}: it ends "
            f"{_pct(n['gap'])} above float32"
            + (f", at a loss float32 had reached by epoch {at:.1f} of {epochs}" if at is not None else "")
            + f". In its last epoch its weights moved {_share(nearest)} of the way their updates asked "
              f"({_share(nearest, 0)} in its first; float32 {_share(base)}"
            + "".join(f", {o}" for o in others)
            + f"): bfloat16 keeps {result['significant_bits']} significant bits, so the values next to a "
              f"weight w lie 1/256 to 1/128 of |w| away, and an update under half that gap rounds back to w. "
            + (f"A slower descent rather than a full stall: its loss still fell "
               f"{100 * n['last_epoch_drop']:.1f}% over the last epoch, float32's "
               f"{100 * n['float32_last_epoch_drop']:.1f}%." if n["last_epoch_drop"] > 0.002 else
               f"Its loss has stalled: it fell {100 * n['last_epoch_drop']:.2f}% over the last epoch, "
               f"float32's {100 * n['float32_last_epoch_drop']:.1f}%."))
    if "master" in c:
        m = c["master"]
        lines.append(f"Float32 master weights end within {100 * m['bound']:g}% of float32's final loss: "
                     f"{'holds' if m['holds'] else 'does not hold'} ({_pct(m['gap'], 2)}: "
                     f"{final(runs[MASTER]):.4f} vs {final(base):.4f}).")
    if "stochastic" in c:
        s = c["stochastic"]
        lines.append(f"Stochastic rounding ends within {100 * s['bound']:g}% of float32's final loss, "
                     f"with each of {s['seeds']} seeds: {'holds' if s['holds'] else 'does not hold'} ("
                     + ", ".join(_pct(g, 2) for g in s["gaps"]) + ").")
    return lines


def table(result):
    headers = ["run", "param", "state", "bytes/param", "final loss", "vs float32", "test acc.",
               "update taken (last epoch)", "training s"]
    base = result["runs"].get(FLOAT32)
    rows = []
    for label, r in result["runs"].items():
        rows.append([label, r["param_dtype"], r["state_dtype"], r["bytes_per_param"], final(r),
                     _pct(gap(r, base)) if base is not None else None, r.get("test_accuracy"),
                     _share(r), r["seconds"][-1]])
    return headers, rows


def notes(result):
    return result["findings"]


# --------------------------------------------------------------------------
# the figure

STYLES = {FLOAT32: {"color": "#000000", "lw": 2.6, "ls": "-"},
          NEAREST: {"color": "#D55E00", "lw": 2.2, "ls": "-"},
          STOCHASTIC: {"color": "#0072B2", "lw": 1.2, "ls": "-"},
          MASTER: {"color": "#009E73", "lw": 2.0, "ls": (0, (4, 2.5))}}


PANEL_NOTE = ("Right: per epoch, Σ (θ_new − θ_old)·sign(−b) / Σ lr·|b| over every weight and step (b the "
              "momentum, θ ← θ − lr·b). bfloat16 keeps {bits} significant bits; an update under half the gap to "
              "the next value is lost for good when rounded to nearest, taken as a whole gap with probability "
              "update/gap by stochastic rounding, and added up by a float32 master until it moves the "
              "bfloat16 weight.")


def _style(label):
    return STYLES[STOCHASTIC if label.startswith(STOCHASTIC) else label]


def plot(result, out_dir):
    import textwrap

    from fastopt.demo import plots

    runs = result["runs"]
    with plots.style():
        fig, (ax, ax_taken) = plots.subplots(1, 2, figsize=(13.5, 5.0), gridspec_kw={"width_ratios": [1.6, 1]})
        for label, r in runs.items():
            ax.plot(r["epoch"], r["train_loss"], **_style(label),
                    label=f"{label}: {final(r):.4f} ({r['seconds'][-1]:.1f} s)")
        ax.set_xlabel(f"epochs ({result['n_train']} training images, {result['steps_per_epoch']} steps each)")
        ax.set_ylabel("training loss (NLL on the whole training set)")
        plots.log_loss_axis(ax)
        together = [label for label in runs if label != NEAREST]
        title = "Training loss (legend: final loss, training time)"
        if len(together) > 1 and FLOAT32 in runs and _curves_within(runs, together, 0.02):
            title += f"\n{_and([_short(label) for label in together])}: within 2% of each other throughout"
        ax.set_title(title, fontsize=10)
        ax.legend(loc="upper right")
        if FLOAT32 in runs and NEAREST in runs:
            n = runs[NEAREST]
            ax.annotate(f"round to nearest: {_pct(gap(n, runs[FLOAT32]))}", (n["epoch"][-1], final(n)),
                        xytext=(-30, 25), textcoords="offset points", ha="right",
                        color=STYLES[NEAREST]["color"], fontsize=9,
                        arrowprops={"arrowstyle": "->", "color": STYLES[NEAREST]["color"]})

        shown = set()
        for label, r in runs.items():
            taken = 100 * np.asarray(r["update_taken_by_epoch"], float)
            name = _short(label) if label != FLOAT32 else label
            ax_taken.plot(np.arange(1, len(taken) + 1), taken, marker="o", ms=3.5, **_style(label),
                          label=None if name in shown else name)
            shown.add(name)
        ax_taken.set_xlabel("epoch")
        ax_taken.set_ylabel("movement along the updates, % of their size")
        ax_taken.set_ylim(0, 130)
        ax_taken.set_yticks(range(0, 101, 20))
        ax_taken.set_title("How much of each update the weights took", fontsize=10)
        ax_taken.legend(loc="upper center", ncol=2, fontsize=8.5)
        fig.suptitle(f"MNIST MLP {'–'.join(map(str, result['hidden']))}, SGD (lr {result['lr']:g}, momentum "
                     f"{result['momentum']:g}), batches of {result['batch_size']}: float32 and bfloat16 "
                     f"training", fontweight="bold")
        fig.tight_layout()
        lines = result["findings"] + [PANEL_NOTE.format(bits=result["significant_bits"])]
        text = "\n".join(textwrap.fill(line, 180, initial_indent="• ", subsequent_indent="  ") for line in lines)
        fig.text(0.01, -0.01, text, va="top", ha="left", fontsize=8.8)
        return [plots.save(fig, out_dir / "precision.png")]


def _curves_within(runs, labels, tolerance):
    """Whether the training-loss curves of labels stay within tolerance of float32's, relatively."""
    base = np.asarray(runs[FLOAT32]["train_loss"], float)
    return all(len(runs[label]["train_loss"]) == len(base)
               and np.all(np.abs(np.asarray(runs[label]["train_loss"], float) / base - 1) <= tolerance)
               for label in labels)


def _and(names):
    names = list(dict.fromkeys(names))
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
