"""One benchmark per optimizer rule x dtype x workload x implementation, and Adafactor's.

The implementations, their hyperparameters and the bytes each rule moves
come from fastopt.bench, which ``python -m fastopt bench`` runs too.
"""

import numpy as np
import pytest

from fastopt.bench import factored, peers, rules, timing, workloads


def test_step(benchmark, case, buffers, threads, rounds):
    workload, dtype, rule_name, implementation = case
    rule = rules.RULES[rule_name]
    shapes = workloads.workload_shapes(workload)
    if implementation == "fastopt-per-tensor" and len(shapes) == 1:
        pytest.skip("one tensor: the same call as the list call")
    params, grads = buffers(workload, dtype)
    try:
        step = peers.make_step(implementation, rule, dtype, params, grads, threads)
    except peers.Unavailable as exc:
        pytest.skip(str(exc))

    n = workloads.count_params(shapes)
    benchmark.group = f"{rule_name}-{dtype}-{workload}-{threads}t"
    benchmark.extra_info.update(optimizer=rule_name, dtype=dtype, workload=workload,
                                implementation=implementation, threads=threads, n_params=n,
                                bytes_per_param=rule.bytes_per_param(dtype))
    prepare = getattr(step, "prepare", None)
    if prepare:
        prepare()
    step()                       # warm-up: lazy state, JIT compile, first touch
    number = timing.calibrate(step)
    benchmark.pedantic(step, iterations=number, rounds=rounds, warmup_rounds=1)

    _assert_moves_the_params(step, buffers, workload, dtype, implementation)


def _assert_moves_the_params(step, buffers, workload, dtype, implementation):
    """A step that does nothing would be fast: check that it moves the params."""
    params, _ = buffers(workload, dtype)
    first = params[0].reshape(-1)[:256]
    before = first.copy()
    step()
    # by their bits: the ceiling's integer adds make NaN patterns, which 16-bit comparisons warn of
    assert np.any(first.view(np.uint8) != before.view(np.uint8)), f"{implementation} left the params unchanged"


def test_adafactor_step(benchmark, adafactor_case, buffers, threads, rounds):
    workload, dtype, implementation = adafactor_case
    torch = factored.optional_torch()
    if implementation.startswith("torch") and torch is None:
        pytest.skip("torch with torch.optim.Adafactor is not installed")
    shapes = workloads.workload_shapes(workload)
    params, grads = buffers(workload, dtype)
    step = factored.make_steps(params, grads, threads, torch, (implementation,))[implementation]
    benchmark.group = f"adafactor-{dtype}-{workload}-{threads}t"
    benchmark.extra_info.update(optimizer="adafactor", dtype=dtype, workload=workload,
                                implementation=implementation, threads=threads,
                                n_params=workloads.count_params(shapes),
                                bytes_per_step=factored.bytes_per_step(shapes, dtype))
    step()
    number = timing.calibrate(step)
    benchmark.pedantic(step, iterations=number, rounds=rounds, warmup_rounds=1)

    if not implementation.startswith("torch"):   # (torch steps copies of the params)
        _assert_moves_the_params(step, buffers, workload, dtype, implementation)
