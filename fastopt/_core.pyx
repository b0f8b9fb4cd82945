# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, auto_pickle=False
"""The Cython boundary between Python and the C kernels of src_c/.

Data crosses it once, one way.  A step, of a step function or of a whole
optimizer (every parameter group), becomes a :class:`Plan`:

1. every hyperparameter and every buffer of every tensor is checked (type,
   dtype, shape, memory layout, writeability, alignment, overlaps) and each
   rule's per-call scalars are derived, before anything is written;
2. raw pointers are collected into C arrays, so no Python object is touched
   again;
3. ``Plan.norm`` / ``Plan.all_finite`` read the gradients once (clipping,
   non-finite detection) and ``Plan.run`` releases the GIL once and runs one
   OpenMP parallel region over all tensors of all calls.

This module owns every parallel region: the step kernels' and the norm
pass's.  What a rule is (its buffers, hyperparameters and checks) comes from
the registry, :mod:`fastopt.rules`, through :class:`RuleSpec`.
"""

import operator

import numpy as _np
import os
import warnings

cimport numpy as cnp
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.long cimport PyLong_AsLongLongAndOverflow
from libc.stdlib cimport malloc, free
from libc.string cimport memchr, memset
from libc.math cimport isfinite, sqrt
from cython.parallel cimport prange

from fastopt._kernels cimport *
from fastopt._openmp cimport fo_omp_max_threads, fo_omp_thread_num, fo_openmp_library
from fastopt.quantized import QuantizedState as _QuantizedState

cnp.import_array()

include "_threads.pxi"
include "_scalars.pxi"
include "_plan.pxi"
include "_norms.pxi"
include "_quantize.pxi"
include "_factored.pxi"
include "_views.pxi"
