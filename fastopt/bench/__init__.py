"""Throughput of every step, side by side: ``python -m fastopt bench`` and the suite in ``bench/``.

For one optimizer rule, precision mode (the dtype of every buffer: float32,
bfloat16, float32 master weights with 16-bit grads, 8-bit state, ...),
workload (a list of tensor shapes) and thread count, the implementations of
:mod:`fastopt.bench.peers` run on the same params and grads.  How it measures, so that ratios are fair on a shared,
noisy machine:

- every implementation is warmed up (lazy state, JIT compile, first touch of
  fresh pages), then timed in samples of ``number`` back-to-back calls, with
  ``number`` chosen so one sample lasts at least ``timing.MIN_SAMPLE_S``;
- the samples of all implementations of a group are interleaved round by
  round, so a burst of load from elsewhere hits all of them alike; the
  figure is the median.  Where not all fit in ``timing.INTERLEAVE_MAX_BYTES``
  (gpt2-small), the key ones are interleaved, the rest timed one by one;
- a ratio of two implementations timed in the same rounds (% of the ceiling,
  speedups) is the median of the per-round ratios, so load that comes and
  goes between rounds cancels out;
- before each sample the process idles ``timing.IDLE_GAP_S``, so OpenMP
  worker threads of one runtime (fastopt's, torch's, numba's) have stopped
  spinning before another runtime starts.

Modules, one concern each:

=============  ==============================================================
``workloads``  the workloads (lists of shapes), params and grads
``modes``      the precision modes (``--dtype``): their buffers and the bytes they move
``rules``      the benchmarked configurations: ``Rule`` and ``RULES``
``peers``      the implementations of a step, ``make_step``
``timing``     calibration, interleaved samples, the interleaving plan, progress
``groups``     one rule x mode x workload at each thread count: the rows
``overhead``   per-call overhead, import time, the first call of a process
``report``     rows, ratios, tables, machine information
``goals``      the named goals and how this run's figures meet them
``cli``        ``python -m fastopt bench``: options and the run
=============  ==============================================================
"""
