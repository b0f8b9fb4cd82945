"""The demo's models, forward and backward in NumPy: softmax regression and an MLP.

Parameters are a list of arrays (what one fused step call updates); a model
holds only its shapes.  Losses are the mean negative log-likelihood of the
labels; an L2 penalty, where used, is the step kernels' ``weight_decay``.
Arithmetic follows the parameters' dtype (float32 for speed, float64 for the
finite-difference checks).
"""

import numpy as np


def log_softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def nll_and_grad(logits, y):
    """Mean negative log-likelihood of labels y under softmax(logits), and its gradient in logits."""
    n = len(y)
    log_p = log_softmax(logits)
    loss = -log_p[np.arange(n), y].mean()
    d_logits = np.exp(log_p)
    d_logits[np.arange(n), y] -= 1
    d_logits /= n
    return float(loss), d_logits


def nll(logits, y):
    return float(-log_softmax(logits)[np.arange(len(y)), y].mean())


class Model:
    """Common interface: ``init(rng, dtype)``, ``logits``, ``loss``, ``loss_and_grad``, ``accuracy``."""

    def loss(self, params, X, y):
        return nll(self.logits(params, X), y)

    def accuracy(self, params, X, y):
        return float((self.logits(params, X).argmax(axis=1) == y).mean())


class SoftmaxRegression(Model):
    """Multinomial logistic regression: logits = X·W + b."""

    def __init__(self, n_features, n_classes):
        self.n_features, self.n_classes = n_features, n_classes

    def init(self, rng, dtype=np.float32):
        # A convex problem: zeros are the customary start, and every method starts alike.
        return [np.zeros((self.n_features, self.n_classes), dtype), np.zeros(self.n_classes, dtype)]

    def logits(self, params, X):
        W, b = params
        return X @ W + b

    def loss_and_grad(self, params, X, y):
        loss, d_logits = nll_and_grad(self.logits(params, X), y)
        return loss, [X.T @ d_logits, d_logits.sum(axis=0)]


class MLP(Model):
    """ReLU layers of the given widths, then a linear layer to the classes (Kingma & Ba's Fig. 2 net)."""

    def __init__(self, n_features, hidden, n_classes):
        self.sizes = (n_features, *hidden, n_classes)

    def init(self, rng, dtype=np.float32):
        # He initialization: keeps ReLU activations at a steady scale through the layers.
        params = []
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            params.append((rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(dtype))
            params.append(np.zeros(fan_out, dtype))
        return params

    def first_layer(self, params, X):
        """The first pre-activation X·W1 + b1: linear in W1, which the loss-landscape slice exploits."""
        return X @ params[0] + params[1]

    def logits_from_first_layer(self, params, z):
        for W, b in zip(params[2::2], params[3::2]):
            z = np.maximum(z, 0) @ W + b
        return z

    def logits(self, params, X):
        return self.logits_from_first_layer(params, self.first_layer(params, X))

    def loss_and_grad(self, params, X, y):
        # forward, keeping each layer's input
        inputs, z = [X], self.first_layer(params, X)
        for W, b in zip(params[2::2], params[3::2]):
            h = np.maximum(z, 0)
            inputs.append(h)
            z = h @ W + b
        loss, d_z = nll_and_grad(z, y)
        # backward, last layer first
        grads = [None] * len(params)
        for layer in reversed(range(len(inputs))):
            grads[2 * layer] = inputs[layer].T @ d_z
            grads[2 * layer + 1] = d_z.sum(axis=0)
            if layer > 0:
                d_z = (d_z @ params[2 * layer].T) * (inputs[layer] > 0)
        return loss, grads
