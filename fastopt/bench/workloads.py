"""The workloads: lists of tensor shapes, and the params and grads of a run."""

import math
import re

import ml_dtypes
import numpy as np

_GPT2_BLOCK = [
    (768,), (768,),                 # ln_1
    (768, 2304), (2304,),           # attn.c_attn
    (768, 768), (768,),             # attn.c_proj
    (768,), (768,),                 # ln_2
    (768, 3072), (3072,),           # mlp.c_fc
    (3072, 768), (768,),            # mlp.c_proj
]

WORKLOADS = {
    "1e5": [(100_000,)],
    "1e7": [(10_000_000,)],
    "mnist-mlp": [(784, 256), (256,), (256, 128), (128,), (128, 10), (10,)],
    # wte, wpe, 12 blocks, ln_f: 148 tensors, 124,439,808 params
    "gpt2-small": [(50257, 768), (1024, 768)] + _GPT2_BLOCK * 12 + [(768,), (768,)],
}

DTYPES = ("float32", "float64")

_NUMERIC_WORKLOAD = re.compile(r"^(\d+(?:\.\d+)?(?:e\d+)?)(?:x(\d+))?$")


def workload_shapes(name):
    """The shapes of workload ``name``: one of WORKLOADS, or ``N`` (one buffer of
    N elements, e.g. ``1e5``) or ``NxK`` (K buffers of N elements, e.g. ``16x148``)."""
    if name in WORKLOADS:
        return list(WORKLOADS[name])
    match = _NUMERIC_WORKLOAD.match(name)
    size = float(match.group(1)) if match else -1.0
    if size < 1 or size != int(size):
        raise ValueError(f"unknown workload {name!r}: use one of {', '.join(WORKLOADS)}, "
                         f"a size such as 1e5, or NxK for K buffers of N elements")
    return [(int(size),)] * int(match.group(2) or 1)


def count_params(shapes):
    return sum(math.prod(s) for s in shapes)


SIXTEEN_BIT = {"bfloat16": np.dtype(ml_dtypes.bfloat16), "float16": np.dtype(np.float16)}


def numpy_dtype(name):
    """The NumPy dtype of a dtype's name ("float32", "bfloat16", ...)."""
    return SIXTEEN_BIT[name] if name in SIXTEEN_BIT else np.dtype(name)


def make_buffers(shapes, dtype, seed=0):
    """Params and grads, standard normal: values stay finite and normal (no
    denormals) over thousands of steps of every rule.  dtype "bfloat16" or
    "float16": float32 draws rounded."""
    rng = np.random.default_rng(seed)
    draw = np.float32 if dtype in SIXTEEN_BIT else dtype
    params = [rng.standard_normal(s, dtype=draw) for s in shapes]
    grads = [rng.standard_normal(s, dtype=draw) for s in shapes]
    if dtype in SIXTEEN_BIT:
        params, grads = [p.astype(SIXTEEN_BIT[dtype]) for p in params], [g.astype(SIXTEEN_BIT[dtype]) for g in grads]
    return params, grads
