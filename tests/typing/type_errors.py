"""Calls the stubs must reject: mypy must report an error on each line marked E."""

import numpy as np

import fastopt

p32 = np.zeros(4, dtype=np.float32)
fastopt.sgd_step(p32, p32, 0.1)  # E: hyperparameters are keyword-only
fastopt.sgd_step(p32, p32)  # E: lr has no default
fastopt.adam_step(p32, p32, p32, p32, lr=1e-3)  # E: step is required
fastopt.adam_step(p32, p32, p32, p32, step=1.5)  # E: step is an integer
fastopt.momentum_step(p32, p32, p32, lr=0.1, betas=(0.9, 0.99))  # E: unknown keyword
n: str = fastopt.get_num_threads()  # E: returns int
