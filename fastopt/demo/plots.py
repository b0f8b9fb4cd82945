"""Shared look of the demo's figures: one colour per method everywhere, PNG output.

Figures are made with :class:`matplotlib.figure.Figure` and drawn by the Agg
renderer when saved, without pyplot: no window, no global backend switched,
nothing left open.
"""

import matplotlib
from matplotlib.figure import Figure

# Colour-blind-safe (Okabe-Ito), and the same method has the same colour in every figure.
METHOD_COLORS = {
    "GD": "#000000",
    "SGD": "#999999",
    "Momentum": "#E69F00",
    "Nesterov": "#56B4E9",
    "SGD Nesterov": "#56B4E9",
    "Adagrad": "#009E73",
    "RMSprop": "#CC79A7",
    "Adam": "#D55E00",
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


def color(name):
    return METHOD_COLORS.get(name, "#444444")


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


def save(fig, path):
    """Write fig as PNG."""
    fig.savefig(path, bbox_inches="tight")
    return str(path)
