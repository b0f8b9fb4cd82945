"""Gradient clipping, as torch.nn.utils does it, over NumPy arrays.

The norm is one fused parallel read of all gradients, accumulated in
float64 in blocks fixed by element index and combined in a fixed order: it
is bit-identical for any thread count.  An optimizer built with
``max_grad_norm=`` clips without writing the gradients at all (the
coefficient is folded into its step); these functions are for loops that
want the clipped gradients themselves.
"""

import math

import numpy as np

from fastopt import _core

__all__ = ["get_total_norm", "clip_grad_norm", "clip_grad_value", "clip_coefficient", "step_scale"]

# torch.nn.utils.clip_grad_norm_'s guard against dividing by a zero norm.
NORM_EPSILON = 1e-6


def get_total_norm(grads, norm_type=2.0, error_if_nonfinite=False, num_threads=None):
    """The norm of all gradients together (an ndarray or a list of them), as a float.

    norm_type: 1, 2, inf or any p > 0.  As torch.nn.utils.get_total_norm
    (the norm of the per-array norms), up to rounding: here every element is
    accumulated in float64, in a fixed order.  ``error_if_nonfinite=True``
    raises RuntimeError when the norm is NaN or Inf.
    """
    norm = _core.total_norm(grads, norm_type, num_threads)
    if error_if_nonfinite and not math.isfinite(norm):
        raise RuntimeError(
            f"The total norm of order {float(norm_type)} for gradients is non-finite, so it cannot be "
            "clipped. To disable this error and scale the gradients by the non-finite norm anyway, "
            "set error_if_nonfinite=False")
    return norm


def clip_coefficient(total_norm, max_norm):
    """The factor torch's clip_grad_norm_ scales gradients by: max_norm / (norm + 1e-6), at most 1.

    NaN when the norm is NaN, as in torch (whose clamp keeps NaN).
    """
    coefficient = max_norm / (total_norm + NORM_EPSILON)
    return 1.0 if coefficient >= 1.0 else coefficient


def step_scale(gradients, grad_scale=1.0, *, max_norm=None, norm_type=2.0, skip_nonfinite=False):
    """What an optimizer step multiplies its gradients by: ``(scale, norm)``, scale None to skip the step.

    The one place that decides clipping and skipping, for every optimizer
    (and for the sharded one, whose gradients are spread over ranks).
    ``gradients`` has ``norm(norm_type)`` and ``all_finite()``: a step's plan
    (:meth:`fastopt.optim.Optimizer.plan_step`), or a view of all ranks'.
    One read pass at most: the clipping norm when max_norm is set (a finite
    norm proves the gradients finite), else the finiteness check when
    skip_nonfinite is.  ``norm`` is the norm of the scaled gradients, or None
    without clipping.
    """
    if max_norm is None:
        if skip_nonfinite and not gradients.all_finite():
            return None, None
        return grad_scale, None
    norm = gradients.norm(norm_type)
    if not math.isfinite(norm) and skip_nonfinite and (
            math.isinf(norm_type) or not gradients.all_finite()):
        return None, norm  # a finite gradient can overflow a p-norm: checked apart, rarely
    if grad_scale != 1.0:
        norm *= grad_scale
    coefficient = clip_coefficient(norm, max_norm)
    # A NaN norm (NaN gradients, not skipped) cannot scale: step unclipped, NaN flows on.
    return (grad_scale if math.isnan(coefficient) else grad_scale * coefficient), norm


def clip_grad_norm(grads, max_norm, norm_type=2.0, error_if_nonfinite=False, num_threads=None):
    """Scale grads in place so their total norm is at most max_norm; return the norm before.

    As torch.nn.utils.clip_grad_norm_: the factor is max_norm / (norm + 1e-6),
    applied only when it is below 1 (and, as in torch, a NaN norm turns every
    gradient NaN).  grads: an ndarray or a list of them, writeable.
    """
    max_norm = _max(max_norm, "max_norm")
    arrays = _writeable(grads)
    norm = get_total_norm(arrays, norm_type, error_if_nonfinite, num_threads)
    coefficient = clip_coefficient(norm, max_norm)
    if coefficient != 1.0:
        with np.errstate(invalid="ignore"):  # inf * 0 -> NaN, as in torch
            for g in arrays:
                np.multiply(g, g.dtype.type(coefficient), out=g)
    return norm


def clip_grad_value(grads, clip_value):
    """Clip every gradient element to [-clip_value, clip_value] in place, as torch's clip_grad_value_."""
    clip_value = _max(clip_value, "clip_value")
    for g in _writeable(grads):
        bound = g.dtype.type(clip_value)
        np.clip(g, -bound, bound, out=g)


def _max(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number; got {value!r}")
    value = float(value)
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0; got {value!r}")
    return value


def _writeable(grads):
    """grads as a list of arrays, checked before anything is written."""
    arrays = _core.as_array_list(grads)
    for index, g in enumerate(arrays):
        if not g.flags.writeable:
            raise ValueError(f"grads[{index}] is clipped in place and must be writeable")
    return arrays
