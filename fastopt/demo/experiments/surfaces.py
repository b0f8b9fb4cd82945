"""Part 1, the lecture's Figures 3, 4 and 7: optimizer trajectories on two-dimensional loss surfaces.

Every method runs at every step size of a log grid (the R10 series: 1, 1.25,
1.6, 2, 2.5, 3.2, 4, 5, 6.3, 8 per decade); the figure draws one run per
method, chosen in one of two ways, and says which:

- best of grid (Beale, Rosenbrock, Himmelblau, the saddle): each method at
  the step size that reaches the target in the fewest steps;
- matched (the ravine): GD at its best step size, and SGD and the momentum
  methods at the same effective step size; the adaptive methods at their best.

After Adam come three steps of other shapes: Lion's is lr times the sign of
an interpolated momentum (the same length on every axis), LAMB's is Adam's
direction scaled to lr·‖θ‖ by the trust ratio, and Adafactor's is relative,
min(lr, 1/√t) times the RMS of θ.  A fixed-length step cannot settle closer
to a minimum than its own length, so Lion without a schedule hovers there.

The effective step size is the step on a constant slope of gradient g, over
g: lr for GD and for the lecture's momentum, which averages gradients
(v ← βv + (1−β)g, θ ← θ − lr·v); lr/(1−β) for heavy ball and Nesterov, which
sum them as torch.optim's SGD does (b ← βb + g, θ ← θ − lr·b).  So heavy ball
at lr·(1−β) is the lecture's momentum at lr, step for step: at matched step
sizes their paths coincide.

The target is f − f_min < tolerance; on the saddle it is the escape, the loss
falling below a level halfway from the saddle's value to the minima's.  Either
counts only for a run that also ends within tolerance of a minimum.  A run that leaves the
plotted window fails ("left" in the table): every path drawn shows in full, and
a step size that reaches the minimum by a jump off the picture is not a best.

Each surface ends with findings: the lecture's claims about it, measured
(held or not, with the numbers), printed, stored in the JSON and written on
the figure.
"""

from dataclasses import dataclass, field

import numpy as np

from fastopt import optim
from fastopt.demo import optimizers
from fastopt.demo.optimizers import make_optimizer, method
from fastopt.demo.report import progress
from fastopt.demo.surfaces import SURFACES

TITLE = ("Loss surfaces: GD, SGD, momentum (EMA and heavy ball), Nesterov, Adagrad, RMSprop, Adam and its "
         "variants NAdam, RAdam and Adamax, and Lion, LAMB and Adafactor in two dimensions")

# "SGD" is GD fed the gradient plus Gaussian noise: a stand-in for a mini-batch's error.
# Schedule-Free AdamW is not drawn: its params hold y, where gradients are taken, and the point
# it returns is the average x, so a path of its params is not its trajectory.
METHODS = ("GD", "SGD", "Momentum", "Heavy ball", "Nesterov", "Adagrad", "RMSprop", "Adam", "NAdam", "RAdam",
           "Adamax", "Lion", "LAMB", "Adafactor")
GD_FAMILY = ("GD", "SGD", "Momentum", "Heavy ball", "Nesterov")   # their step sizes compare directly
ADAPTIVE = ("Adagrad", "RMSprop", "Adam", "NAdam", "RAdam", "Adamax")
AFTER_ADAM = ("Lion", "LAMB", "Adafactor")   # sign, trust-ratio and relative steps
MOMENTUM = 0.9   # β of every momentum method here (torch's and the lecture's default)
SUMS_GRADIENTS = ("Heavy ball", "Nesterov")   # effective step lr/(1−β)

R10 = (1.0, 1.25, 1.6, 2.0, 2.5, 3.2, 4.0, 5.0, 6.3, 8.0)
# decades of each method's lr grid, wide enough that no best step size sits on an edge
GRID_DECADES = {"GD": (-3, 1), "SGD": (-3, 1), "Momentum": (-3, 2), "Heavy ball": (-4, 1),
                "Nesterov": (-4, 1), "Adagrad": (-2, 1), "RMSprop": (-3, 0), "Adam": (-3, 1),
                "NAdam": (-3, 1), "RAdam": (-3, 1), "Adamax": (-3, 1), "Lion": (-4, 0), "LAMB": (-3, 1),
                "Adafactor": (-3, 1)}


def lr_grid(name):
    low, high = GRID_DECADES[name]
    return tuple(round(a * 10.0**k, 12) for k in range(low, high) for a in R10)


def effective_step(name, lr):
    """The step on a constant slope, per unit of gradient, once momentum has built up."""
    return lr / (1 - MOMENTUM) if name in SUMS_GRADIENTS else lr


def make_method(name, lr):
    if name in ("GD", "SGD"):
        return method("GD", lr=lr)
    if name == "Momentum":                       # the lecture's EMA form: fastopt.momentum_step
        return method("Momentum", lr=lr, beta=MOMENTUM)
    if name in SUMS_GRADIENTS:                   # torch.optim.SGD(momentum=β, nesterov=...)
        return method("Nesterov", lr=lr, momentum=MOMENTUM, nesterov=name == "Nesterov")
    return method(name, lr=lr)


@dataclass(frozen=True)
class Setup:
    steps: int
    tolerance: float                 # "reached" once f - f_min < tolerance
    noise: float                     # standard deviation of SGD's gradient noise, per coordinate
    compare: str = "best"            # "best": each method at its best lr; "matched": GD's effective step
    escape_level: float = None       # saddle: "escaped" once f < escape_level


SETUPS = {
    "ravine": Setup(150, 1e-3, 0.3, compare="matched"),
    "saddle": Setup(150, 1e-3, 0.1, escape_level=-0.125),   # halfway from f(saddle) = 0 to f_min = -0.25
    "beale": Setup(600, 1e-3, 1.0),
    "rosenbrock": Setup(1000, 1e-3, 1.0),
    "himmelblau": Setup(300, 1e-3, 2.0),
}


@dataclass(frozen=True)
class Settings:
    surfaces: tuple = tuple(SETUPS)
    step_fraction: float = 1.0    # run this share of each surface's steps (the tests use less)
    grids: dict = field(default_factory=lambda: {m: lr_grid(m) for m in METHODS})


PRESETS = {"quick": Settings(), "full": Settings()}


def _window(surface):
    """Bounds a run must stay within: the plotted window, so that every drawn path shows in full."""
    (x0, x1), (y0, y1) = surface.xlim, surface.ylim
    return np.array([x0, y0]), np.array([x1, y1])


SETTLED = 1e-14   # f - f_min below this and steps below 1e-12: converged to rounding, the rest is the same


def trajectory(surface, name, lr, steps, noise, rng, stop_settled=False):
    """The path of one method: (steps + 1, 2) points, NaN after it leaves the window.

    With stop_settled, a run that has converged to rounding error (f - f_min < SETTLED,
    steps under 1e-12) stops there and its last point fills the rest: the grid search
    needs only where a run gets to, not its last digits.
    """
    theta = np.array(surface.start, dtype=np.float64)
    gradient = np.empty(2)
    optimizer = make_optimizer(make_method(name, lr), [theta])
    (x_low, y_low), (x_high, y_high) = _window(surface)
    path = np.full((steps + 1, 2), np.nan)
    path[0] = theta
    x, y = theta.tolist()          # Python floats: the surfaces' arithmetic is fastest on them
    for t in range(1, steps + 1):
        gradient[:] = surface.gradient(x, y)
        if name == "SGD":
            gradient += noise * rng.standard_normal(2)
        optimizer.step([gradient])
        x_before, y_before = x, y
        x, y = theta.tolist()
        if not (x_low < x < x_high and y_low < y < y_high):   # left the window: stop here
            break
        path[t] = x, y
        if (stop_settled and surface.value(x, y) - surface.min_value < SETTLED
                and abs(x - x_before) + abs(y - y_before) < 1e-12):
            path[t:] = x, y
            break
    return path


def _first(mask):
    hits = np.flatnonzero(mask)
    return int(hits[0]) if len(hits) else None


def _outcome(surface, setup, path):
    """What a path achieved.  A target counts only for a run that ends within tolerance of a minimum:
    steps_to_tolerance is the first step below the tolerance, steps_to_escape the first below the
    escape level; first_below_tolerance counts a run that got there and left again too."""
    finite = ~np.isnan(path[:, 0])
    values = surface.value(*path[finite].T)
    excess = values - surface.min_value
    ends_within = bool(finite[-1] and excess[-1] < setup.tolerance)
    first = _first(excess < setup.tolerance)
    out = {"steps_to_tolerance": first if ends_within else None, "first_below_tolerance": first,
           "ends_within_tolerance": ends_within, "final_loss": float(values[-1]),
           "left_window": bool(not finite[-1]), "last": path[finite][-1]}
    if setup.escape_level is not None:
        escape = _first(values < setup.escape_level)
        out["steps_to_escape"] = escape if ends_within else None
    return out


def _target(setup, outcome):
    """Steps to this surface's target, None if not reached (the quantity a step size is ranked by)."""
    return outcome["steps_to_escape" if setup.escape_level is not None else "steps_to_tolerance"]


def _rank(setup, outcome):
    steps = _target(setup, outcome)
    if steps is not None:
        return (0, steps, outcome["final_loss"])
    return (2, 0, 0.0) if outcome["left_window"] else (1, 0, outcome["final_loss"])


def _search(surface, setup, name, grid, steps, rng_key):
    """Every lr of the grid: {lr: outcome}."""
    outcomes = {}
    for lr in grid:
        path = trajectory(surface, name, lr, steps, setup.noise, np.random.default_rng(rng_key),
                          stop_settled=True)
        outcomes[lr] = _outcome(surface, setup, path)
    return outcomes


def run(settings, seed, show_progress=True):
    result = {}
    for name in progress(settings.surfaces, "surfaces", show_progress):
        index = list(SETUPS).index(name)  # SGD's noise depends on the seed and surface, not on the others run
        surface, setup = SURFACES[name], SETUPS[name]
        steps = max(1, round(setup.steps * settings.step_fraction))
        searches = {m: _search(surface, setup, m, settings.grids[m], steps, [seed, index]) for m in METHODS}
        best = {m: min(s, key=lambda lr: _rank(setup, s[lr])) for m, s in searches.items()}
        chosen, how = {}, {}
        for m in METHODS:
            if setup.compare == "matched" and m in GD_FAMILY and m != "GD":
                step = effective_step("GD", best["GD"])
                chosen[m] = round(step * (1 - MOMENTUM), 12) if m in SUMS_GRADIENTS else step
                how[m] = "matched to GD's effective step"
            else:
                chosen[m], how[m] = best[m], "best of grid"
        runs = {}
        for m in METHODS:
            lr = chosen[m]
            path = trajectory(surface, m, lr, steps, setup.noise, np.random.default_rng([seed, index]))
            outcome = _outcome(surface, setup, path)
            distance, nearest = surface.distance_to_minimum(outcome.pop("last"))
            grid = {g: _target(setup, o) for g, o in searches[m].items()}
            runs[m] = {"lr": lr, "effective_step": effective_step(m, lr), "picked": how[m],
                       "best_lr": best[m], "best_on_grid_edge": best[m] in (min(grid), max(grid)),
                       "path": path, "loss": surface.value(*path.T), **outcome,
                       "distance": distance, "minimum_number": nearest + 1,
                       "grid_steps_to_target": grid}
        r = {"title": surface.title, "formula": surface.formula, "start": surface.start,
             "minima": surface.minima, "min_value": surface.min_value, "steps": steps,
             "tolerance": setup.tolerance, "escape_level": setup.escape_level, "sgd_noise": setup.noise,
             "compare": setup.compare, "momentum": MOMENTUM, "runs": runs}
        r["findings"] = FINDINGS.get(name, _generic_findings)(r)
        result[name] = r
    return result


# --------------------------------------------------------------------------
# findings: the lecture's claims about each surface, measured on this run


def _steps(run_, key="steps_to_tolerance"):
    value = run_.get(key)
    return "not reached" if value is None else f"{value} steps"


def _matched_wins(r, a, b):
    """Effective step sizes where both a and b reach the target, and those where a is no later than b."""
    ga, gb = r["runs"][a]["grid_steps_to_target"], r["runs"][b]["grid_steps_to_target"]
    by_step_a = {round(effective_step(a, lr), 9): s for lr, s in ga.items()}
    by_step_b = {round(effective_step(b, lr), 9): s for lr, s in gb.items()}
    both = sorted(s for s in by_step_a.keys() & by_step_b.keys()
                  if by_step_a[s] is not None and by_step_b[s] is not None)
    return both, [s for s in both if by_step_a[s] <= by_step_b[s]], by_step_a, by_step_b


def settle_step(path, axis, threshold):
    """The first step after which |coordinate| stays below threshold (None if it never does)."""
    values = np.abs(path[:, axis])
    above = np.flatnonzero(~(values < threshold))
    if len(above) == 0:
        return 0
    return None if above[-1] == len(values) - 1 else int(above[-1] + 1)


def sign_changes(path, axis, steps):
    y = path[:steps + 1, axis]
    y = y[~np.isnan(y)]
    return int(np.sum(np.sign(y[1:]) != np.sign(y[:-1])))


def _ravine_findings(r):
    runs = r["runs"]
    gd, mom = runs["GD"], runs["Momentum"]
    lines = [f"Matched step sizes: GD at its best lr {gd['lr']:g}; SGD and the lecture's momentum at lr "
             f"{mom['lr']:g}, heavy ball and Nesterov at lr·(1−β) = {runs['Heavy ball']['lr']:g} "
             f"(effective step {gd['effective_step']:g} for all)."]
    held = (mom["steps_to_tolerance"] is not None
            and (gd["steps_to_tolerance"] is None or mom["steps_to_tolerance"] < gd["steps_to_tolerance"]))
    lines.append(f"Momentum speeds it up: {'holds' if held else 'does not hold'}. To f − f_min < "
                 f"{r['tolerance']:g}: momentum {_steps(mom)}, GD {_steps(gd)}, Nesterov "
                 f"{_steps(runs['Nesterov'])}.")
    both, wins, *_ = _matched_wins(r, "Momentum", "GD")
    if both:
        lines.append(f"At each of the {len(both)} matched step sizes where both reach it "
                     f"({min(both):g}–{max(both):g}), momentum is no later than GD at {len(wins)}.")
    threshold = 0.05
    settle_gd, settle_mom = settle_step(gd["path"], 1, threshold), settle_step(mom["path"], 1, threshold)
    flips_gd, flips_mom = sign_changes(gd["path"], 1, 30), sign_changes(mom["path"], 1, 30)
    swing_gd = float(np.nanmax(np.abs(gd["path"][2:, 1])))
    swing_mom = float(np.nanmax(np.abs(mom["path"][2:, 1])))
    damped = settle_mom is not None and (settle_gd is None or settle_mom <= settle_gd)
    lines.append(
        f"Momentum damps the zigzag: {'holds' if damped else 'does not hold'}. It turns GD's step-by-step "
        f"zigzag (y changes sign {flips_gd} times in 30 steps; momentum {flips_mom}) into a slower, wider "
        f"swing: after the first step |y| reaches {swing_mom:.2f} (GD {swing_gd:.2f}), and it stays below "
        f"{threshold:g} from step {settle_mom if settle_mom is not None else 'never'} on (GD: "
        f"{settle_gd if settle_gd is not None else 'never'}). With β = {r['momentum']:g} the swing across "
        f"the steep axis shrinks by only √β ≈ {np.sqrt(r['momentum']):.2f} a step.")
    adaptive = ", ".join(f"{m} {_steps(runs[m])}" for m in ADAPTIVE)
    lines.append(f"Adaptive methods, each at its best lr, rescale each axis and reach the tolerance in: "
                 f"{adaptive} (GD {_steps(gd)}).")
    lines.append(_after_adam_finding(r))
    return lines


def _after_adam_finding(r):
    """Where Lion's fixed-length sign step ends, against the tolerance: it settles only as close as lr."""
    runs = r["runs"]
    lion = runs["Lion"]
    reached = ", ".join(f"{m} {_steps(runs[m])}" for m in AFTER_ADAM)
    return (f"After Adam, each at its best lr, steps to the tolerance: {reached}. Lion's step is lr on "
            f"every axis at every step, so at lr {lion['lr']:g} it ends at f − f_min = "
            f"{lion['final_loss'] - r['min_value']:.2g}: " + ("within" if lion["ends_within_tolerance"] else
                                                          "not within") + f" {r['tolerance']:g}.")


def _saddle_findings(r):
    runs = r["runs"]
    level = r["escape_level"]
    gd = runs["GD"]
    esc = {m: runs[m]["steps_to_escape"] for m in runs}

    def s(m):
        return "no escape" if esc[m] is None else f"{esc[m]}"

    lines = [f"Escape: steps until f < {level:g}, halfway down from the saddle (f = 0) to the minima, "
             f"each method at its best lr: GD {s('GD')} (lr {gd['lr']:g}), momentum {s('Momentum')} "
             f"(lr {runs['Momentum']['lr']:g}), heavy ball {s('Heavy ball')} (lr "
             f"{runs['Heavy ball']['lr']:g}), Nesterov {s('Nesterov')} (lr {runs['Nesterov']['lr']:g}); "
             + ", ".join(f"{m} {s(m)}" for m in ADAPTIVE + AFTER_ADAM) + "."]
    warmup = radam_unrectified_steps(optimizers.METHODS["RAdam"])
    lines.append(f"RAdam's first {warmup} steps are not adaptive (ρ_t ≤ 5: momentum SGD, which does not "
                 f"rescale the tiny gradient across the saddle): it escapes in {s('RAdam')} steps, Adam in "
                 f"{s('Adam')}.")
    for m, label in (("Heavy ball", "heavy ball, and the lecture's EMA form with it"),
                     ("Nesterov", "Nesterov")):
        held = esc[m] is not None and (esc["GD"] is None or esc[m] <= esc["GD"])
        lines.append(f"Momentum helps escape ({label}, each at its best lr): "
                     f"{'holds' if held else 'does not hold'}: {s(m)} steps vs GD's {s('GD')}.")
    both, wins, hb, g = _matched_wins(r, "Heavy ball", "GD")
    if both:
        lines.append(f"At the same effective step size, heavy ball escapes no later than GD at {len(wins)} "
                     f"of the {len(both)} step sizes where both escape (at {both[0]:g}: {hb[both[0]]} vs "
                     f"{g[both[0]]} steps): its speed takes ~1/(1−β) = {1 / (1 - r['momentum']):.0f} steps "
                     f"to build up.")
    # the same lr, not the same effective step: torch's form steps 1/(1−β) times further
    hb_grid, gd_grid = runs["Heavy ball"]["grid_steps_to_target"], gd["grid_steps_to_target"]
    same = sorted(lr for lr in hb_grid.keys() & gd_grid.keys()
                  if hb_grid[lr] is not None and gd_grid[lr] is not None)
    sooner = [lr for lr in same if hb_grid[lr] < gd_grid[lr]]
    if sooner:
        lr = sooner[0]
        lines.append(f"At the same lr, heavy ball escapes sooner than GD at {len(sooner)} of {len(same)} "
                     f"lrs ({min(sooner):g}–{max(sooner):g}; at {lr:g}: {hb_grid[lr]} vs {gd_grid[lr]} "
                     f"steps), its steps being 1/(1−β) times GD's: that is where momentum helps.")
    return lines


def radam_unrectified_steps(radam):
    """How many first steps RAdam takes without its adaptive step, at the method's β2 (torch's ρ_t ≤ 5)."""
    beta2 = radam.hyper.get("betas", optim.RAdam([np.zeros(1)]).defaults["betas"])[1]
    rho_inf = 2 / (1 - beta2) - 1
    if rho_inf <= 5:   # ρ_t < ρ∞: never adaptive
        return None
    t = 1
    while rho_inf - 2 * t * beta2**t / (1 - beta2**t) <= 5:
        t += 1
    return t - 1


def _generic_findings(r):
    runs = r["runs"]
    order = sorted((m for m in runs if runs[m]["steps_to_tolerance"] is not None),
                   key=lambda m: runs[m]["steps_to_tolerance"])
    missed = [m for m in runs if runs[m]["steps_to_tolerance"] is None]
    lines = [f"Each method at its best lr; steps to f − f_min < {r['tolerance']:g}: "
             + ", ".join(f"{m} {runs[m]['steps_to_tolerance']}" for m in order)
             + (f"; not reached in {r['steps']} steps: {', '.join(missed)}" if missed else "") + "."]
    gd, mom = runs["GD"], runs["Momentum"]
    if gd["steps_to_tolerance"] is None or (mom["steps_to_tolerance"] is not None
                                            and mom["steps_to_tolerance"] < gd["steps_to_tolerance"]):
        lines.append(f"Momentum speeds up GD: holds ({_steps(mom)} vs {_steps(gd)}).")
    else:
        lines.append(f"Momentum speeds up GD: does not hold here ({_steps(mom)} vs {_steps(gd)}).")
    lines.append(_after_adam_finding(r))
    return lines


def _himmelblau_findings(r):
    lines = _generic_findings(r)
    runs = r["runs"]
    at = {}
    for m, run_ in runs.items():
        if run_["steps_to_tolerance"] is not None:
            at.setdefault(run_["minimum_number"], []).append(m)
    where = "; ".join(f"minimum {k}: {', '.join(v)}" for k, v in sorted(at.items()))
    lines.append(f"The methods end in {len(at)} different minima ({where}).")
    return lines


FINDINGS = {"ravine": _ravine_findings, "saddle": _saddle_findings, "himmelblau": _himmelblau_findings}


def table(result):
    headers = ["surface", "method", "lr", "picked", "final loss", "dist. to min", "min #", "steps to tol",
               "steps to escape"]
    rows = []
    for name, r in result.items():
        for m, run_ in r["runs"].items():
            escape = None
            if r["escape_level"] is not None:
                escape = run_["steps_to_escape"]
            rows.append([name, m, run_["lr"], "matched" if run_["picked"].startswith("matched") else "best",
                         run_["final_loss"], run_["distance"],
                         run_["minimum_number"] if len(r["minima"]) > 1 else None,
                         "left" if run_["left_window"] else run_["steps_to_tolerance"], escape])
    return headers, rows


def notes(result):
    """The findings, surface by surface, for the terminal."""
    return [f"{name}: {line}" for name, r in result.items() for line in r["findings"]]


# --------------------------------------------------------------------------
# figures


def plot(result, out_dir):
    from fastopt.demo import plots

    with plots.style():
        return [plots.save(_figure(name, r), out_dir / f"surface_{name}.png", tight=False, dpi=100)
                for name, r in result.items()]


def _contour_levels(surface, values):
    if surface.log_levels:
        excess = values - surface.min_value
        low = max(np.percentile(excess, 0.5), 1e-3)
        return surface.min_value + np.geomspace(low, np.percentile(excess, 98), 18)
    # levels crowd towards the bottom, where the saddle and the two wells are
    low, high = values.min(), np.percentile(values, 75)
    return low + (high - low) * np.linspace(0, 1, 20) ** 2


# Three groups of paths, so that no panel is a tangle: GD is in each, as the yardstick.
PANELS = (("GD, SGD and momentum", GD_FAMILY), ("Adaptive step sizes (GD for reference)", ("GD",) + ADAPTIVE),
          ("After Adam: sign, trust-ratio and relative steps (GD for reference)", ("GD",) + AFTER_ADAM))

LOSS_FLOOR = 1e-12   # the loss panel's bottom: curves end where they reach it


def _marker_every(steps):
    return max(1, steps // 12)


def _draw_surface(ax, surface, r, methods, levels, grid):
    from matplotlib.colors import BoundaryNorm

    from fastopt.demo import plots

    X, Y, Z = grid
    norm = BoundaryNorm(levels, 256, extend="both")
    ax.contourf(X, Y, Z, levels=levels, cmap="Greys_r", norm=norm, extend="both", alpha=0.45)
    ax.contour(X, Y, Z, levels=levels, colors="white", linewidths=0.6, alpha=0.9)
    ax.grid(False)
    every = _marker_every(r["steps"])
    for m in methods:
        path = r["runs"][m]["path"]
        ax.plot(path[:, 0], path[:, 1], zorder=3, markevery=every, **plots.path_style(m))
        last = path[~np.isnan(path[:, 0])][-1]
        ax.plot(*last, "o", color=plots.color(m), ms=6, mec="white", mew=0.8, zorder=4)
    minima = np.array(surface.minima)
    ax.plot(minima[:, 0], minima[:, 1], "*", color="gold", mec="black", ms=15, zorder=5)
    if len(minima) > 1:   # numbered as in the table's "min #" column
        for k, (mx, my) in enumerate(minima, 1):
            ax.annotate(str(k), (mx, my), xytext=(7, 7), textcoords="offset points", fontsize=10,
                        fontweight="bold", zorder=6,
                        bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="black", lw=0.6))
    ax.plot(*surface.start, "s", color="white", mec="black", ms=7, zorder=5)
    ax.set_xlim(surface.xlim)
    ax.set_ylim(surface.ylim)
    ax.set_xlabel("x")
    ax.set_ylabel("y")


def _level_label(ax, value, text):
    """A horizontal reference line, labelled outside the axes on the right: never over a curve."""
    ax.axhline(value, color="gray", ls=":", lw=1.2, zorder=1)
    ax.annotate(text, xy=(1, value), xycoords=("axes fraction", "data"), xytext=(4, 0),
                textcoords="offset points", va="center", ha="left", color="dimgray", fontsize=8,
                annotation_clip=False)


def _draw_loss(ax, surface, r):
    from fastopt.demo import plots

    lowest, highest = np.inf, 0.0
    floored = []
    for m, run_ in r["runs"].items():
        excess = np.asarray(run_["loss"], float) - surface.min_value
        below = np.flatnonzero(excess < LOSS_FLOOR)
        if len(below):      # ends at the floor, marked
            excess = excess[:below[0] + 1].copy()
            excess[-1] = LOSS_FLOOR
            floored.append(m)
            ax.plot(below[0], LOSS_FLOOR, "v", color=plots.color(m), ms=7, clip_on=False, zorder=4)
        style = plots.path_style(m)
        style.pop("marker", None)
        ax.plot(excess, **style)
        finite = excess[np.isfinite(excess)]
        lowest, highest = min(lowest, finite.min()), max(highest, finite.max())
    plots.log_axis(ax)
    ax.set_ylim(max(LOSS_FLOOR, lowest) / 3, highest * 3)
    _level_label(ax, r["tolerance"], f"tol. {r['tolerance']:g}")
    if r["escape_level"] is not None:
        _level_label(ax, r["escape_level"] - surface.min_value, f"escape\n(f < {r['escape_level']:g})")
    ax.set_xlabel("step")
    ax.set_ylabel(r"$f - f_{min}$")
    title = "Loss above the minimum"
    if floored:
        title += f"\n(▼: reached {LOSS_FLOOR:g}, the axis floor)"
    ax.set_title(title, fontsize=10)


def _draw_grid(ax, r, title, methods, effective):
    """Steps to the target against step size, every lr of the grid; the drawn run circled."""
    from fastopt.demo import plots

    target = "escape" if r["escape_level"] is not None else "tolerance"
    steps_cap = r["steps"]
    drawn_x = []
    for m in methods:
        run_ = r["runs"][m]
        lrs = np.array([float(lr) for lr in run_["grid_steps_to_target"]])
        reached = np.array([np.nan if s is None else s for s in run_["grid_steps_to_target"].values()], float)
        x = np.array([effective_step(m, lr) for lr in lrs]) if effective else lrs
        style = plots.path_style(m)
        style.update(lw=1.3, ms=4, markevery=1)
        ax.plot(x, reached, **style)
        picked = effective_step(m, run_["lr"]) if effective else run_["lr"]
        drawn_x += [v for v, s in zip(x, reached) if np.isfinite(s)] + [picked]
        steps = run_["grid_steps_to_target"].get(run_["lr"])
        if steps is not None:
            ax.plot([picked], [steps], "o", ms=11, mfc="none", mec=plots.color(m), mew=2, zorder=5)
        else:   # not reached: circled on the top edge
            ax.plot([picked], [steps_cap], "o", ms=11, mfc="none", mec=plots.color(m), mew=2, zorder=5,
                    clip_on=False)
    decades = np.log10(max(drawn_x) / min(drawn_x))
    plots.log_axis(ax, "x", subs=(1.0, 2.0, 5.0) if decades < 2.5 else (1.0,))
    ax.set_ylim(0, steps_cap * 1.04)
    ax.set_xlabel("effective step size: lr, or lr/(1−β) for heavy ball and Nesterov" if effective
                  else "lr")
    ax.set_ylabel(f"steps to {target}")
    ax.set_title(f"{title}: steps to {target} at every lr", fontsize=10)


def coinciding_paths(surface, r, tolerance=0.01):
    """Groups of drawn paths in the same panel that stay within tolerance × the window's size of each other."""
    size = np.hypot(np.ptp(surface.xlim), np.ptp(surface.ylim))
    groups = []
    for _, methods in PANELS:
        for k, a in enumerate(methods):
            for b in methods[k + 1:]:
                pa = np.asarray(r["runs"][a]["path"], float)
                pb = np.asarray(r["runs"][b]["path"], float)
                if np.nanmax(np.hypot(*(pa - pb).T)) < tolerance * size:
                    group = next((g for g in groups if a in g or b in g), None)
                    if group is None:
                        groups.append([a, b])
                    elif b not in group:
                        group.append(b)
    return groups


def _figure(name, r):
    import textwrap

    from matplotlib.lines import Line2D

    from fastopt.demo import plots

    surface = SURFACES[name]
    fig = plots.figure(figsize=(21, 10.5))
    # a fixed layout: tight_layout's search would cost a second a figure
    grid_spec = fig.add_gridspec(2, 4, height_ratios=[1, 0.8], left=0.04, right=0.95, top=0.915,
                                 bottom=0.13, wspace=0.22, hspace=0.3)
    X, Y = np.meshgrid(np.linspace(*surface.xlim, 200), np.linspace(*surface.ylim, 200))
    Z = surface.value(X, Y)
    levels = _contour_levels(surface, Z)
    for k, (title, methods) in enumerate(PANELS):
        ax = fig.add_subplot(grid_spec[0, k])
        _draw_surface(ax, surface, r, methods, levels, (X, Y, Z))
        ax.set_title(title, fontsize=10)
    _draw_loss(fig.add_subplot(grid_spec[0, 3]), surface, r)
    _draw_grid(fig.add_subplot(grid_spec[1, 0]), r, "GD family", GD_FAMILY, effective=True)
    _draw_grid(fig.add_subplot(grid_spec[1, 1]), r, "Adaptive methods", ADAPTIVE, effective=False)
    _draw_grid(fig.add_subplot(grid_spec[1, 2]), r, "After Adam", AFTER_ADAM, effective=False)
    ax_text = fig.add_subplot(grid_spec[1, 3])
    ax_text.axis("off")
    picked = ("Step sizes: GD's best, the others of its family matched to it; adaptive methods at their "
              "best" if r["compare"] == "matched" else "Step sizes: each method at its best lr of the grid")
    target = (f"f < {r['escape_level']:g}" if r["escape_level"] is not None
              else f"f − f_min < {r['tolerance']:g}")
    picked += (f". Grid panels: steps until {target}, counted for runs that end within {r['tolerance']:g} "
               f"of a minimum (gaps: the others); circled: the run drawn, on the top edge if it misses")
    same = coinciding_paths(surface, r)
    if same:
        picked += (". Paths on top of each other (told apart by their dashes and markers): "
                   + "; ".join(" and ".join(group) for group in same))
    text = "\n\n".join([textwrap.fill(picked + ".", 70)]
                       + [textwrap.fill(line, 70, initial_indent="• ", subsequent_indent="  ")
                          for line in r["findings"]])
    ax_text.text(-0.02, 1.02, text, va="top", ha="left", fontsize=8.0, transform=ax_text.transAxes)
    handles = [Line2D([], [], **{**plots.path_style(m), "markevery": [1]},
                      label=f"{m} (lr {r['runs'][m]['lr']:g})") for m in r["runs"]]
    handles += [Line2D([], [], ls="", marker="s", color="white", mec="black", label="start"),
                Line2D([], [], ls="", marker="*", color="gold", mec="black", ms=12,
                       label="minimum" if len(surface.minima) == 1 else "minima, numbered")]
    fig.legend(handles=handles, loc="lower center", ncol=6, bbox_to_anchor=(0.5, 0.0), fontsize=9.5,
               handlelength=3.2, columnspacing=1.5)
    fig.suptitle(f"{surface.title}:  f = {surface.formula},  {r['steps']} steps "
                 f"(markers every {_marker_every(r['steps'])})", fontsize=12, fontweight="bold")
    return fig
