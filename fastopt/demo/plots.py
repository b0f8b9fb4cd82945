"""Shared look of the demo's figures: one colour per method everywhere, PNG output.

Figures are made with :class:`matplotlib.figure.Figure` and drawn by the Agg
renderer when saved, without pyplot: no window, no global backend switched,
nothing left open.
"""

import matplotlib
import numpy as np
from matplotlib.figure import Figure

# Colour-blind-safe (Okabe-Ito), and the same method has the same colour in every figure.
METHOD_COLORS = {
    "GD": "#000000",
    "SGD": "#0072B2",
    "Momentum": "#E69F00",
    "Heavy ball": "#882255",
    "Nesterov": "#56B4E9",
    "SGD Nesterov": "#56B4E9",
    "Adagrad": "#009E73",
    "RMSprop": "#CC79A7",
    "Adam": "#D55E00",
    # Adam's variants: Paul Tol's colour-blind-safe indigo, olive and teal, Okabe-Ito's eight being taken
    "NAdam": "#332288",
    "RAdam": "#999933",
    "Adamax": "#44AA99",
    "ScheduleFreeAdamW": "#AA4499",
    # after Adam: Paul Tol's rose, cyan and sand
    "Lion": "#CC6677",
    "LAMB": "#88CCEE",
    "Adafactor": "#DDCC77",
}
BATCH_COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7"]
BACKEND_COLORS = ["#D55E00", "#E69F00", "#0072B2"]  # fastopt 1 thread, all threads, NumPy

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 110,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "legend.frameon": False,
    "legend.fontsize": 9,
    "contour.negative_linestyle": "solid",
}


# Line width, dash pattern and marker per method on the surfaces, so that paths on top of
# each other all show: a dashed or dotted line over a solid one, different marker shapes.
METHOD_LINES = {
    "GD": dict(lw=3.0, ls="-", marker="o"),
    "SGD": dict(lw=1.0, ls="-", marker=None),
    "Momentum": dict(lw=2.6, ls="-", marker="s"),
    "Heavy ball": dict(lw=1.6, ls=(0, (4, 2.5)), marker="D"),
    "Nesterov": dict(lw=1.8, ls=(0, (7, 2, 1.5, 2)), marker="^"),
    "SGD Nesterov": dict(lw=1.8, ls="-", marker=None),
    "Adagrad": dict(lw=3.0, ls="-", marker="o"),
    "RMSprop": dict(lw=1.9, ls=(0, (5, 2.5)), marker="s"),
    "Adam": dict(lw=2.0, ls=(0, (1, 1.6)), marker="^"),
    "NAdam": dict(lw=1.6, ls=(0, (3, 1.5, 1, 1.5)), marker="v"),
    "RAdam": dict(lw=1.5, ls=(0, (6, 3)), marker="P"),
    "Adamax": dict(lw=1.4, ls=(0, (2, 2)), marker="X"),
    "Lion": dict(lw=2.4, ls="-", marker="d"),
    "LAMB": dict(lw=1.8, ls=(0, (5, 2.5)), marker="h"),
    "Adafactor": dict(lw=1.6, ls=(0, (1, 1.6)), marker="*"),
}


def color(name):
    return METHOD_COLORS.get(name, "#444444")


def path_style(name):
    """Keyword arguments for Axes.plot: the method's colour, width, dashes and marker."""
    line = METHOD_LINES.get(name, dict(lw=1.8, ls="-", marker=None))
    style = dict(color=color(name), lw=line["lw"], ls=line["ls"], alpha=0.95)
    if line["marker"]:
        style.update(marker=line["marker"], ms=5.5, mfc="white", mec=color(name), mew=1.3)
    return style


def style():
    """The demo's look, as a context: global rcParams are left alone."""
    return matplotlib.rc_context(STYLE)


def subplots(nrows=1, ncols=1, *, figsize, **kwargs):
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def figure(*, figsize):
    return Figure(figsize=figsize)


def log_loss_axis(ax):
    """A log-scaled loss axis labelled 0.2, 0.3, 0.5, ... rather than in powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def log_axis(ax, which="y", subs=(1.0,)):
    """A log-scaled axis labelled 1e-6, 0.01, 1, 10, ... as plain text, without minor ticks:
    mathtext's 10^k labels cost a parse each, and every tick is an object to lay out."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    axis = ax.yaxis if which == "y" else ax.xaxis
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    axis.set_major_locator(LogLocator(subs=subs, numticks=12))
    axis.set_major_formatter(FuncFormatter(_power_of_ten))
    axis.set_minor_locator(NullLocator())


def _power_of_ten(value, _):
    exponent = np.log10(value) if value > 0 else np.nan
    if not np.isfinite(exponent):
        return f"{value:g}"
    k = int(np.floor(exponent + 1e-9))
    mantissa = round(value / 10.0**k, 6)
    if -3 <= k <= 3:
        return f"{value:g}"
    return f"1e{k}" if mantissa == 1 else f"{mantissa:g}e{k}"


def save(fig, path, tight=True, dpi=None):
    """Write fig as PNG (tight: trimmed to what is drawn, which costs one more layout pass)."""
    fig.savefig(path, bbox_inches="tight" if tight else None, **({} if dpi is None else {"dpi": dpi}))
    return str(path)
