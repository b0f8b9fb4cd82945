"""One group: a rule, precision mode (``--dtype``) and workload, measured at each thread count.

The implementations of a group are timed interleaved where their memory
fits together (see ``fastopt.bench.timing.plan_interleaving``); each of the
rest on its own, with only its state alive.
"""

import numpy as np

from fastopt.bench.modes import get_mode, make_mode_buffers, state_bytes, traffic_bytes
from fastopt.bench.peers import Unavailable, make_step, new_states, runs_in
from fastopt.bench.report import add_ratios, make_row
from fastopt.bench.timing import measure, plan_interleaving
from fastopt.bench.workloads import count_params, workload_shapes


def run_group(rule, dtype, workload, threads_list, implementations, repeat, progress=None,
              seed=0):
    """Measure ``implementations`` of one rule/mode/workload at each thread count.

    ``dtype`` is a precision mode (:mod:`fastopt.bench.modes`).  Returns (rows,
    skipped).  NumPy is serial, so it is measured once, with the first thread
    count, and its row serves every thread count's ratios.  Bytes per param
    are counted on the buffers themselves (8-bit state: codes and scales).
    """
    mode = get_mode(dtype)
    shapes = workload_shapes(workload)
    n_params = count_params(shapes)
    params, grads, copies = make_mode_buffers(shapes, mode, seed)
    first_params = [p.copy() for p in params] if len(threads_list) > 1 else None
    rows, skipped, numpy_row = [], [], None
    for threads in threads_list:
        if threads != threads_list[0]:
            # thousands of steps drift params far (no effect on speed): start afresh
            for p, p0 in zip(params, first_params):
                np.copyto(p, p0)
        label = f"{rule.name} {dtype} {workload}, {threads} thread{'s' if threads > 1 else ''}"
        wanted = [i for i in implementations
                  if not (i == "numpy" and numpy_row is not None)
                  and not (i == "fastopt-per-tensor" and len(shapes) == 1) and runs_in(i, mode)]
        together, alone = plan_interleaving(wanted, rule, params, mode=mode)
        states = new_states(rule, params, mode)
        moved = traffic_bytes(params, grads, states, copies, rule.second_pass) / n_params
        kept = state_bytes(params, states, copies) / n_params
        own_state = {}

        def build(name):
            if progress:
                progress.show(f"{label}: {name}")
            try:
                fn = make_step(name, rule, mode, params, grads, threads, states=states, copies=copies)
            except Unavailable as exc:
                skipped.append({"optimizer": rule.name, "dtype": dtype, "workload": workload,
                                "threads": threads, "implementation": name, "reason": str(exc)})
                return None
            own_state[name] = getattr(fn, "state_bytes", None)
            return fn

        steps = {name: fn for name in together if (fn := build(name)) is not None}
        if progress:
            progress.show(f"{label}: {', '.join(steps)} (interleaved)")
        samples = measure(steps, repeat)
        steps = None
        for name in alone:
            # one at a time, so only one implementation's own state is alive
            fn = build(name)
            if fn is not None:
                samples.update(measure({name: fn}, repeat))
            fn = None
        if progress:
            progress.advance()
        group = [dict(make_row(rule, mode.name, workload, shapes, threads, name, s, bytes_per_param=moved,
                               state_bytes_per_param=kept,
                               own_state_bytes_per_param=None if own_state.get(name) is None
                               else own_state[name] / n_params),
                      interleaved=name in together)
                 for name, s in samples.items()]
        if numpy_row is None:
            numpy_row = next((r for r in group if r["implementation"] == "numpy"), None)
        add_ratios(group, numpy_row)
        rows.extend(group)
    return rows, skipped

