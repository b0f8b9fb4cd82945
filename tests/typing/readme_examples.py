"""The README's examples, as one program: run by tests/test_typing.py and checked by mypy --strict."""

import numpy as np
from numpy.typing import NDArray

import fastopt
from fastopt import reference

rng = np.random.default_rng(0)

# One tensor: Adam, in place, three steps.
param = rng.standard_normal(10_000).astype(np.float32)
grad = rng.standard_normal(10_000).astype(np.float32)
exp_avg = np.zeros_like(param)
exp_avg_sq = np.zeros_like(param)
for step in range(1, 4):
    fastopt.adam_step(param, grad, exp_avg, exp_avg_sq, step=step, lr=1e-3)

# A whole model in one call: lists of arrays, one parallel region.
params: list[NDArray[np.float64]] = [rng.standard_normal((256, 128)), rng.standard_normal(128)]
grads = [np.ones_like(p) for p in params]
momentum_buffers = [np.zeros_like(p) for p in params]
fastopt.sgd_momentum_step(params, grads, momentum_buffers, step=1, lr=0.1, momentum=0.9,
                          nesterov=True, weight_decay=1e-4)

# Gradient clipping folded into the step: scale the gradient by max_norm / norm.
max_norm = 1.0
norm = float(np.sqrt(sum(float(np.vdot(g, g)) for g in grads)))
exp_avgs = [np.zeros_like(p) for p in params]
exp_avg_sqs = [np.zeros_like(p) for p in params]
fastopt.adamw_step(params, grads, exp_avgs, exp_avg_sqs, step=1, lr=1e-3,
                   grad_scale=min(1.0, max_norm / (norm + 1e-6)))

# Optional state buffers: centered RMSprop with momentum.
square_avg = np.zeros_like(param)
fastopt.rmsprop_step(param, grad, square_avg, grad_avg=np.zeros_like(param),
                     momentum_buffer=np.zeros_like(param), centered=True, momentum=0.9)

# The NumPy reference gives the same bits.
p_fused, p_ref = param.copy(), param.copy()
s_fused, s_ref = np.zeros_like(param), np.zeros_like(param)
fastopt.adagrad_step(p_fused, grad, s_fused, step=1, lr=0.1)
reference.adagrad_step(p_ref, grad, s_ref, step=1, lr=0.1)
assert np.array_equal(p_fused, p_ref) and np.array_equal(s_fused, s_ref)

# Threads: the OpenMP default, or a count of your own, per process or per call.
default_threads: int = fastopt.get_num_threads()
fastopt.set_num_threads(1)
fastopt.sgd_step(param, grad, lr=0.01, num_threads=2)
fastopt.set_num_threads(None)
assert fastopt.get_num_threads() == default_threads

version: str = fastopt.__version__
fastopt.show_config()
