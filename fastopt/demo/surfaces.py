"""Two-dimensional test functions of the lecture: value, gradient, minima, and where to start.

Each function takes coordinates x, y (scalars or arrays, for contour grids)
and the gradient returns (df/dx, df/dy).
"""

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Surface:
    name: str
    title: str
    formula: str
    value: Callable
    gradient: Callable
    minima: tuple           # ((x, y), ...)
    min_value: float
    start: tuple
    xlim: tuple
    ylim: tuple
    log_levels: bool = True  # contour levels spaced in log(f - min): narrow valleys need it

    def distance_to_minimum(self, point):
        """Distance from point to the nearest minimum, and that minimum's index."""
        d = np.hypot(*(np.asarray(self.minima, float) - np.asarray(point, float)).T)
        return float(d.min()), int(d.argmin())


# An ill-conditioned quadratic: curvature 0.1 along x, 4 along y (condition number 40).
def _ravine(x, y):
    return 0.05 * x**2 + 2.0 * y**2


def _ravine_gradient(x, y):
    return 0.1 * x, 4.0 * y


# A saddle at the origin (x² − y²/2 near it) between two minima at (0, ±1).
def _saddle(x, y):
    return x**2 - 0.5 * y**2 + 0.25 * y**4


def _saddle_gradient(x, y):
    return 2.0 * x, y**3 - y


def _beale_terms(x, y):
    return 1.5 - x + x * y, 2.25 - x + x * y**2, 2.625 - x + x * y**3


def _beale(x, y):
    a, b, c = _beale_terms(x, y)
    return a**2 + b**2 + c**2


def _beale_gradient(x, y):
    a, b, c = _beale_terms(x, y)
    dx = 2 * a * (y - 1) + 2 * b * (y**2 - 1) + 2 * c * (y**3 - 1)
    dy = 2 * a * x + 2 * b * 2 * x * y + 2 * c * 3 * x * y**2
    return dx, dy


def _rosenbrock(x, y):
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def _rosenbrock_gradient(x, y):
    return -2 * (1 - x) - 400 * x * (y - x**2), 200 * (y - x**2)


def _himmelblau(x, y):
    return (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2


def _himmelblau_gradient(x, y):
    a, b = x**2 + y - 11, x + y**2 - 7
    return 4 * x * a + 2 * b, 2 * a + 4 * y * b


SURFACES = {
    s.name: s for s in [
        Surface("ravine", "Ravine: an ill-conditioned quadratic", r"$0.05x^2 + 2y^2$",
                _ravine, _ravine_gradient, ((0.0, 0.0),), 0.0,
                start=(-9.0, 1.6), xlim=(-10, 10), ylim=(-2.5, 2.5)),
        Surface("saddle", "Saddle point", r"$x^2 - y^2/2 + y^4/4$",
                _saddle, _saddle_gradient, ((0.0, 1.0), (0.0, -1.0)), -0.25,
                start=(1.5, 1e-3), xlim=(-1.75, 1.75), ylim=(-1.6, 1.6), log_levels=False),
        Surface("beale", "Beale's function", r"$(1.5-x+xy)^2 + (2.25-x+xy^2)^2 + (2.625-x+xy^3)^2$",
                _beale, _beale_gradient, ((3.0, 0.5),), 0.0,
                start=(0.7, 1.4), xlim=(-4.5, 4.5), ylim=(-4.5, 4.5)),
        Surface("rosenbrock", "Rosenbrock's valley", r"$(1-x)^2 + 100(y-x^2)^2$",
                _rosenbrock, _rosenbrock_gradient, ((1.0, 1.0),), 0.0,
                start=(-1.2, 1.0), xlim=(-2.0, 2.0), ylim=(-1.0, 3.0)),
        Surface("himmelblau", "Himmelblau's function: four minima", r"$(x^2+y-11)^2 + (x+y^2-7)^2$",
                _himmelblau, _himmelblau_gradient,
                ((3.0, 2.0), (-2.805118, 3.131313), (-3.779310, -3.283186), (3.584428, -1.848126)), 0.0,
                start=(-0.27, -0.92), xlim=(-5.0, 5.0), ylim=(-5.0, 5.0)),
    ]
}
