"""Adafactor's step function: factored second moments, whose state is not the param's shape.

A matrix (the last two axes of a param of ndim >= 2) keeps a row factor
``row_var`` of shape (..., m, 1) and a column factor ``col_var`` of shape
(..., 1, n), as torch.optim.Adafactor does; a vector keeps ``variance``, of
its own shape.  The rules of :mod:`fastopt.rules` have state of the param's
shape, read and written element by element in one pass; this rule reduces
rows and columns, then needs both norms of the whole tensor before any element
moves, so its checks and passes are its own (the passes: fastopt/_factored.pxi,
src_c/factored.h).  Everything is checked before the first write.

Buffers are all float64, or float32, bfloat16 (ml_dtypes) and float16 in any
mix, as in every step function: float32 master weights with 16-bit gradients
and a 16-bit ``param_copy``, 16-bit params with float32 or 16-bit factors.
"""

import math
import numbers

import ml_dtypes
import numpy as np

from fastopt import _core, reference

__all__ = ["adafactor_step"]

SIXTEEN_BIT = (np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16))
DTYPES = (np.dtype(np.float32), np.dtype(np.float64)) + SIXTEEN_BIT
_DTYPE_NAMES = "float32, float64, bfloat16 (ml_dtypes) or float16"
_BUFFERS = ("param", "grad", "row_var", "col_var", "variance", "param_copy")


def factor_shapes(shape):
    """(row_var's shape, col_var's shape) of a param of ``shape`` (ndim >= 2), as torch keeps them."""
    shape = tuple(shape)
    return shape[:-1] + (1,), shape[:-2] + (1, shape[-1])


def _as_lists(what, param, grad, row_var, col_var, variance, param_copy):
    """The buffers as lists of equal length (None where a tensor has no such buffer)."""
    if isinstance(param, np.ndarray):
        return [[b] for b in (param, grad, row_var, col_var, variance, param_copy)]
    if not isinstance(param, (list, tuple)):
        raise TypeError(f"{what}: param must be an ndarray or a list of ndarrays; got {type(param).__name__}")
    n = len(param)
    lists = [list(param)]
    for name, b in zip(_BUFFERS[1:], (grad, row_var, col_var, variance, param_copy)):
        if b is None and name != "grad":
            lists.append([None] * n)
        elif isinstance(b, (list, tuple)):
            if len(b) != n:
                raise ValueError(f"{what}: got {len(b)} {name} arrays for {n} params")
            lists.append(list(b))
        else:
            raise TypeError(f"{what}: param is a list, so {name} must be a list too; got {type(b).__name__}")
    return lists


def _check(what, label, a, param_label, param, shape, writes):
    """A buffer's type, dtype (float64 only with a float64 param), shape and memory."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{what}: {label} must be a numpy.ndarray; got {type(a).__name__}")
    if a.dtype not in DTYPES or not a.dtype.isnative:
        raise TypeError(f"{what}: {label} must have dtype {_DTYPE_NAMES} (native byte order); got {a.dtype}")
    if (a.dtype == np.float64) != (param.dtype == np.float64):
        raise TypeError(f"{what}: mixed dtypes: {label} is {a.dtype} but {param_label} is {param.dtype}; "
                        f"float64 goes only with float64")
    if a.shape != shape:
        raise ValueError(f"{what}: {label} must have shape {shape}; got {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{what}: {label} must be C-contiguous (rows and columns are its last two axes); "
                         f"got strides {a.strides}")
    if not a.flags.aligned:
        raise ValueError(f"{what}: {label} is not aligned to its dtype")
    if writes and not a.flags.writeable:
        raise ValueError(f"{what}: {label} is updated in place and must be writeable; got a read-only array")


def check_tensors(what, param, grad, row_var, col_var, variance, eps1, param_copy=None, stochastic=False):
    """Every tensor checked: a list of (param, grad, row_var, col_var, variance, param_copy, eps1) for
    the passes; stochastic: whether 16-bit params are to be rounded stochastically (they must be 16-bit)."""
    lists = _as_lists(what, param, grad, row_var, col_var, variance, param_copy)
    single = isinstance(param, np.ndarray)
    tensors = []
    for i, (p, g, rv, cv, v, copy) in enumerate(zip(*lists)):
        label = (lambda name: name) if single else (lambda name, i=i: f"{name}[{i}]")
        if not isinstance(p, np.ndarray):
            raise TypeError(f"{what}: {label('param')} must be a numpy.ndarray; got {type(p).__name__}")

        def check(name, b, shape, writes=True):
            _check(what, label(name), b, label("param"), p, shape, writes)

        check("param", p, p.shape)
        check("grad", g, p.shape, writes=False)
        if copy is not None:
            check("param_copy", copy, p.shape)
            if copy.dtype not in SIXTEEN_BIT:
                raise TypeError(f"{what}: {label('param_copy')} receives the new param in a 16-bit dtype: it "
                                f"must be bfloat16 or float16; got {copy.dtype}")
        if stochastic and p.dtype not in SIXTEEN_BIT:
            raise ValueError(f"{what}: stochastic_rounding=True rounds a 16-bit param; {label('param')} is "
                             f"{p.dtype}")
        if p.ndim >= 2:
            if v is not None:
                raise ValueError(f"{what}: {label('variance')} must be None for a param of ndim >= 2 (it "
                                 f"keeps row_var and col_var)")
            for name, b, shape in zip(("row_var", "col_var"), (rv, cv), factor_shapes(p.shape)):
                if b is None:
                    raise ValueError(f"{what}: {label(name)} must be an array of shape {shape} for a param "
                                     f"of shape {p.shape}; got None")
                check(name, b, shape)
        else:
            for name, b in (("row_var", rv), ("col_var", cv)):
                if b is not None:
                    raise ValueError(f"{what}: {label(name)} must be None for a param of ndim {p.ndim} (it "
                                     f"keeps variance)")
            if v is None:
                raise ValueError(f"{what}: {label('variance')} must be an array of shape {p.shape}; got None")
            check("variance", v, p.shape)
        # eps1=None: the machine epsilon of the gradient's dtype, as torch.optim.Adafactor
        tensors.append((p, g, rv, cv, v, copy, float(ml_dtypes.finfo(g.dtype).eps) if eps1 is None else eps1))
    arrays = [(b, f"{name}" if single else f"{name}[{i}]")
              for i, t in enumerate(tensors) for name, b in zip(_BUFFERS, t[:6]) if b is not None]
    overlap = _core.find_overlap([b for b, _ in arrays])
    if overlap is not None:
        raise ValueError(f"{what}: {arrays[overlap[0]][1]} and {arrays[overlap[1]][1]} overlap in memory")
    return tensors


def check_hyperparameters(what, step, lr, beta2_decay, eps1, eps2, d, weight_decay, maximize):
    """The hyperparameters checked as torch.optim.Adafactor checks them (and finite): values as floats."""
    step = _core.check_count("step", step)
    lr = _core.check_value("nonneg", "lr", lr)
    beta2_decay = _core.check_value("real", "beta2_decay", beta2_decay)
    if beta2_decay > 0:
        raise ValueError(f"{what}: beta2_decay must be <= 0 (beta2_t = 1 - t^beta2_decay); got {beta2_decay}")
    if eps1 is not None:
        eps1 = _core.check_value("nonneg", "eps1", eps1)
    eps2 = _core.check_value("nonneg", "eps2", eps2)
    # inf is no clipping; anything else must be a finite real
    d = math.inf if isinstance(d, numbers.Real) and not isinstance(d, bool) and d == math.inf else \
        _core.check_value("real", "d", d)
    if not d >= 1:
        raise ValueError(f"{what}: d, the clipping threshold of RMS(u), must be >= 1 (inf: no clipping); "
                         f"got {d!r}")
    weight_decay = _core.check_value("nonneg", "weight_decay", weight_decay)
    maximize = bool(_core.check_value("bool", "maximize", maximize))
    return step, lr, beta2_decay, eps1, eps2, float(d), weight_decay, maximize


def check_rounding(stochastic_rounding, seed):
    """The seed of stochastic rounding (an int in [0, 2**63), checked either way), or None when it is off."""
    seed = _core.check_count("seed", seed, 0, 2**63 - 1)
    return seed if _core.check_value("bool", "stochastic_rounding", stochastic_rounding) else None


def run(calls, grad_scale, num_threads=None, backend="fastopt"):
    """Run checked steps: each call a triple (the values check_hyperparameters returns, the tensors
    check_tensors returns, the seed of stochastic rounding or None); "reference" runs
    fastopt.reference.adafactor_step on them instead."""
    for (step, lr, beta2_decay, eps1, eps2, d, weight_decay, maximize), tensors, seed in calls:
        if backend == "fastopt":
            weight, rho, decay = reference.adafactor_scalars(step, lr, beta2_decay, weight_decay)
            _core.factored_run(tensors, weight, rho, eps2, d, decay, grad_scale, maximize, num_threads, seed, step)
        else:
            *buffers, param_copy = [list(column) for column in zip(*tensors)][:6]
            reference.adafactor_step(*buffers, param_copy=param_copy, step=step, lr=lr, beta2_decay=beta2_decay,
                                     eps1=eps1, eps2=eps2, d=d, weight_decay=weight_decay, maximize=maximize,
                                     stochastic_rounding=seed is not None, seed=seed or 0, grad_scale=grad_scale)


def adafactor_step(param, grad, row_var, col_var, variance, *, param_copy=None, step, lr=1e-2, beta2_decay=-0.8,
                   eps1=None, eps2=1e-3, d=1.0, weight_decay=0.0, maximize=False, stochastic_rounding=False, seed=0,
                   grad_scale=1.0, num_threads=None):
    what = "adafactor_step"
    values = check_hyperparameters(what, step, lr, beta2_decay, eps1, eps2, d, weight_decay, maximize)
    grad_scale = _core.check_value("nonneg", "grad_scale", grad_scale)
    if num_threads is not None:
        _core.check_count("num_threads", num_threads, 1, 1 << 16)
    seed = check_rounding(stochastic_rounding, seed)
    tensors = check_tensors(what, param, grad, row_var, col_var, variance, values[3], param_copy, seed is not None)
    run([(values, tensors, seed)], grad_scale, num_threads)


adafactor_step.__module__ = "fastopt"
adafactor_step.__doc__ = (reference.adafactor_step.__doc__ + "\n    Fused, in place, OpenMP-parallel; buffers are "
                          "ndarrays or lists of them (None where a tensor has no such buffer).\n    Pure-NumPy "
                          "twin: fastopt.reference.adafactor_step.\n")
