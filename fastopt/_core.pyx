# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The Cython boundary between Python and the C kernels of src_c/.

Each public step function here checks its hyperparameters, then hands its
buffer arguments to ``_run``, which

1. validates every buffer of every tensor (type, dtype, shape, memory layout,
   writeability, alignment, overlaps) before anything is written,
2. collects raw pointers into C arrays, so no Python object is touched again,
3. releases the GIL once and runs one OpenMP parallel region over all tensors
   of the call: the concatenated elements are split into one contiguous,
   equal share per thread, so a 38M-element embedding beside 768-element norms
   still balances, and a share may cover pieces of several tensors.

Hyperparameter checks live here rather than in a Python layer because a step
of a small model is dominated by per-call overhead.
"""

import math
import operator
import os
import warnings

cimport numpy as cnp
from libc.stdlib cimport malloc, free
from libc.math cimport isfinite, sqrt, pow
from cython.parallel cimport prange

from fastopt._kernels cimport *
from fastopt._openmp cimport fo_omp_max_threads, fo_omp_thread_num, fo_openmp_library

cnp.import_array()

# Buffers per tensor, at most: param, grad and three state buffers.
DEF MAX_BUFS = 5
# Below this many elements per thread a call runs on fewer threads (down to
# one): starting a parallel region costs more than updating a small buffer.
DEF MIN_ELEMENTS_PER_THREAD = 32768
# Thread shares start on multiples of this many elements, so two threads do
# not write the same cache line.
DEF SHARE_ALIGN = 64

cdef int _num_threads = 0   # 0: follow the OpenMP default
# OpenMP's (libgomp's) thread pool does not survive fork(): a child process
# that enters a parallel region after its parent started the pool hangs.  So
# such a child runs every step on the calling thread, without a region.
cdef bint _pool_started = False   # this process has run a parallel region
cdef bint _forked = False         # ... and this is a child forked after that


# --------------------------------------------------------------------------
# threads and SIMD

def get_num_threads():
    """The thread count a step uses when ``num_threads=None``.

    What :func:`set_num_threads` set, or else the OpenMP default, which
    honours ``OMP_NUM_THREADS`` and ``threadpoolctl.threadpool_limits``.
    1 in a child process made by fork (OpenMP's threads do not survive fork).
    """
    return _resolve_threads(None)


def set_num_threads(n):
    """Set the default thread count of every step; ``None`` restores the OpenMP default."""
    global _num_threads
    _num_threads = 0 if n is None else _check_num_threads(n)


cdef int _check_num_threads(object n) except -1:
    return min(_integer_at_least_1("num_threads", n), 1 << 16)


cdef long long _integer_at_least_1(str name, object x) except -1:
    """An integer (not a bool, not a float) >= 1, or an error naming `name`."""
    if isinstance(x, bool):
        raise TypeError(f"{name} must be an integer >= 1; got {x!r}")
    try:
        value = operator.index(x)
    except TypeError:
        raise TypeError(f"{name} must be an integer >= 1; got {x!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {x!r}")
    return value


cdef inline int _resolve_threads(object n) except -1:
    cdef int resolved
    if n is None:
        resolved = _num_threads if _num_threads > 0 else fo_omp_max_threads()
    else:
        resolved = _check_num_threads(n)
    return 1 if _forked else resolved


def _after_fork_in_child():
    global _forked
    _forked = _forked or _pool_started


cdef inline int _will_run_parallel(Py_ssize_t nthreads) noexcept:
    global _pool_started
    if nthreads > 1:
        _pool_started = True
    return 0


os.register_at_fork(after_in_child=_after_fork_in_child)


def simd_levels():
    """The SIMD levels this build has, with whether this CPU supports each."""
    return {fo_simd_name(i).decode(): bool(fo_simd_supported(i)) for i in range(FO_N_SIMD)}


def get_simd_level():
    """The SIMD level the kernels use: 'baseline', 'avx2' or 'avx512'."""
    return fo_simd_name(fo_simd_level()).decode()


def set_simd_level(name=None):
    """Use the kernels of SIMD level ``name``; ``None`` picks the best this CPU has.

    Every level gives bit-identical results; this exists to test and compare
    them.  The environment variable ``FASTOPT_SIMD`` does the same at import.
    """
    if name is None:
        fo_simd_init(NULL)
        return
    encoded = str(name).encode()
    if fo_simd_init(encoded) != 0:
        raise ValueError(f"SIMD level {name!r} is unknown or not supported by this CPU; "
                         f"levels: {simd_levels()}")


def _init_simd_from_environment():
    forced = os.environ.get("FASTOPT_SIMD", "").strip().lower()
    if forced and forced != "auto":
        try:
            set_simd_level(forced)
            return
        except ValueError as exc:
            warnings.warn(f"FASTOPT_SIMD ignored: {exc}", RuntimeWarning, stacklevel=2)
    fo_simd_init(NULL)


_init_simd_from_environment()


def build_info():
    """Facts of the compiled extension, for show_config()."""
    return {
        "compiler": fo_compiler().decode(),
        "compile_args": fo_compile_args().decode(),
        "openmp": bool(fo_openmp_enabled()),
    }


def openmp_library():
    """Path of the OpenMP runtime file this extension's calls are bound to ('' if none)."""
    return fo_openmp_library().decode("utf-8", "surrogateescape")


def _openmp_probe(Py_ssize_t n):
    """Thread ids seen by a parallel loop of n iterations on all threads (build test)."""
    cdef int nt = _resolve_threads(None)
    cdef Py_ssize_t i
    cdef int[::1] ids = cnp.PyArray_ZEROS(1, [n], cnp.NPY_INT32, 0)
    _will_run_parallel(nt)
    for i in prange(n, nogil=True, schedule="static", num_threads=nt):
        ids[i] = fo_omp_thread_num()
    return sorted(set(ids))


# --------------------------------------------------------------------------
# hyperparameter checks: the message names the argument

cdef double _real(str name, object x) except? -1:
    if isinstance(x, bool) or not isinstance(x, (int, float, cnp.integer, cnp.floating)):
        raise TypeError(f"{name} must be a real number; got {x!r}")
    return <double>x


cdef double _nonneg(str name, object x) except? -1:
    cdef double v = _real(name, x)
    if not (isfinite(v) and v >= 0.0):
        raise ValueError(f"{name} must be finite and >= 0; got {x!r}")
    return v


cdef double _unit(str name, object x) except? -1:
    cdef double v = _real(name, x)
    if not (0.0 <= v < 1.0):
        raise ValueError(f"{name} must be in [0, 1); got {x!r}")
    return v


cdef inline long long _step(object step) except -1:
    return _integer_at_least_1("step", step)


cdef inline int _required(str name, object buffer, bint needed, str why) except -1:
    if needed and buffer is None:
        raise ValueError(f"{name} is required when {why}")
    if not needed and buffer is not None:
        raise ValueError(f"{name} is given but unused: it is used only when {why}")
    return 0


# --------------------------------------------------------------------------
# buffers

cdef str _label(tuple names, bint is_list, Py_ssize_t label):
    name = names[label % MAX_BUFS]
    return f"{name}[{label // MAX_BUFS}]" if is_list else name


cdef int _check_array(str func, tuple names, bint is_list, Py_ssize_t label, object a,
                      cnp.ndarray ref, int *type_num) except -1:
    """Check one buffer; ref is this tensor's param (None for param itself).

    The hot path touches only C fields; the argument's name is formatted
    only for an error message.
    """
    cdef int k = label % MAX_BUFS, t, d
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{func}: {_label(names, is_list, label)} must be a numpy.ndarray of "
                        f"float32 or float64; got {type(a).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    t = cnp.PyArray_TYPE(arr)
    if t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64:
        raise TypeError(f"{func}: {_label(names, is_list, label)} must have dtype float32 or "
                        f"float64; got {a.dtype}")
    if not cnp.PyArray_ISNOTSWAPPED(arr):
        raise TypeError(f"{func}: {_label(names, is_list, label)} must be in native byte order; "
                        f"got {a.dtype.str}")
    if type_num[0] == -1:
        type_num[0] = t
    elif type_num[0] != t:
        raise TypeError(f"{func}: mixed dtypes: {_label(names, is_list, label)} is {a.dtype} but "
                        f"the first param is {cnp.PyArray_DescrFromType(type_num[0])}")
    cdef bint c_order = cnp.PyArray_IS_C_CONTIGUOUS(arr)
    if ref is not None:
        if cnp.PyArray_NDIM(arr) != cnp.PyArray_NDIM(ref):
            _shape_error(func, names, is_list, label, a, ref)
        for d in range(cnp.PyArray_NDIM(ref)):
            if cnp.PyArray_DIM(arr, d) != cnp.PyArray_DIM(ref, d):
                _shape_error(func, names, is_list, label, a, ref)
    if not (c_order or cnp.PyArray_IS_F_CONTIGUOUS(arr)):
        raise ValueError(f"{func}: {_label(names, is_list, label)} must be C- or "
                         f"Fortran-contiguous; got strides {a.strides}")
    if ref is not None and not (
            (c_order and cnp.PyArray_IS_C_CONTIGUOUS(ref))
            or (cnp.PyArray_IS_F_CONTIGUOUS(arr) and cnp.PyArray_IS_F_CONTIGUOUS(ref))):
        raise ValueError(f"{func}: {_label(names, is_list, label)} must have the same memory "
                         f"order as param (both C- or both Fortran-contiguous)")
    if not cnp.PyArray_ISALIGNED(arr):
        raise ValueError(f"{func}: {_label(names, is_list, label)} is not aligned to its dtype")
    if k != 1 and not cnp.PyArray_ISWRITEABLE(arr):
        raise ValueError(f"{func}: {_label(names, is_list, label)} is updated in place and must "
                         f"be writeable; got a read-only array")
    return 0


cdef int _shape_error(str func, tuple names, bint is_list, Py_ssize_t label, object a,
                      object ref) except -1:
    raise ValueError(f"{func}: {_label(names, is_list, label)} has shape {a.shape}, but param "
                     f"has shape {ref.shape}")


cdef void _run_share(fo_kernel kernel, const fo_hyper *h, char **ptrs,
                     Py_ssize_t *offsets, Py_ssize_t ntensors, Py_ssize_t itemsize,
                     Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """Update elements [lo, hi) of the concatenation of all tensors."""
    cdef char *local[MAX_BUFS]
    cdef Py_ssize_t t = 0, first, last, k, step_lo, step_hi
    # find the tensor holding element lo (offsets is ascending)
    cdef Py_ssize_t a = 0, b = ntensors
    while b - a > 1:
        t = (a + b) // 2
        if offsets[t] <= lo:
            a = t
        else:
            b = t
    t = a
    while lo < hi and t < ntensors:
        step_lo = lo - offsets[t]
        step_hi = min(hi, offsets[t + 1]) - offsets[t]
        if step_hi > step_lo:
            for k in range(MAX_BUFS):
                local[k] = ptrs[t * MAX_BUFS + k]
                if local[k] != NULL:
                    local[k] = local[k] + step_lo * itemsize
            kernel(h, step_hi - step_lo, local)
        lo = offsets[t] + step_hi
        t += 1


cdef int _run(str func, int rule, fo_hyper *h, tuple names, tuple buffers,
              object num_threads, int n_required=-1) except -1:
    """Validate all buffers, then run the rule's kernel over every tensor.

    buffers[k] for k >= n_required may be None: an optional buffer not used
    (n_required = -1: all are required).
    """
    cdef int nthreads = _resolve_threads(num_threads)
    cdef int nbufs = len(buffers)
    if n_required < 0:
        n_required = nbufs
    cdef bint is_list = isinstance(buffers[0], (list, tuple))
    cdef Py_ssize_t ntensors, i, k, total, n_intervals, nt, tid
    cdef int type_num = -1
    cdef cnp.ndarray param = None
    cdef fo_index first = 0, second = 0
    cdef fo_kernel kernel
    cdef Py_ssize_t itemsize

    cdef list columns = None
    if is_list:
        ntensors = len(buffers[0])
        for k in range(1, nbufs):
            if buffers[k] is None and k >= n_required:
                continue
            if not isinstance(buffers[k], (list, tuple)):
                raise TypeError(f"{func}: param is a list, so {names[k]} must be a list of the "
                                f"same length; got {type(buffers[k]).__name__}")
            if len(buffers[k]) != ntensors:
                raise ValueError(f"{func}: {names[k]} has {len(buffers[k])} tensors but param has "
                                 f"{ntensors}")
        if ntensors == 0:
            return 0
        # copies as plain lists: the loop below indexes them without Python
        # calls, and they hold every array alive while the GIL is released,
        # whatever another thread does to the caller's lists meanwhile
        columns = [None if b is None else list(b) for b in buffers]
    else:
        ntensors = 1
        for k in range(1, nbufs):
            if isinstance(buffers[k], (list, tuple)):
                raise TypeError(f"{func}: param is an array, so {names[k]} must be an array too; "
                                f"got {type(buffers[k]).__name__}")

    # C arrays: one allocation per call, none per tensor
    cdef char *stack_ptrs[MAX_BUFS]
    cdef Py_ssize_t stack_offsets[2]
    cdef fo_interval stack_intervals[2 * MAX_BUFS]
    cdef char **ptrs = stack_ptrs
    cdef Py_ssize_t *offsets = stack_offsets
    cdef fo_interval *intervals = stack_intervals
    cdef void *block = NULL
    if ntensors > 1:
        # intervals and their sort's scratch, pointers, offsets
        block = malloc(ntensors * MAX_BUFS * (2 * sizeof(fo_interval) + sizeof(char *))
                       + (ntensors + 1) * sizeof(Py_ssize_t))
        if block == NULL:
            raise MemoryError()
        intervals = <fo_interval *>block
        ptrs = <char **>(intervals + 2 * ntensors * MAX_BUFS)
        offsets = <Py_ssize_t *>(ptrs + ntensors * MAX_BUFS)
    try:
        total = 0
        n_intervals = 0
        offsets[0] = 0
        for i in range(ntensors):
            for k in range(MAX_BUFS):
                ptrs[i * MAX_BUFS + k] = NULL
            for k in range(nbufs):
                if buffers[k] is None and k >= n_required:
                    continue
                a = (<list>columns[k])[i] if is_list else buffers[k]
                _check_array(func, names, is_list, i * MAX_BUFS + k, a,
                             None if k == 0 else param, &type_num)
                if k == 0:
                    param = <cnp.ndarray>a
                ptrs[i * MAX_BUFS + k] = <char *>cnp.PyArray_DATA(<cnp.ndarray>a)
                if cnp.PyArray_NBYTES(<cnp.ndarray>a) > 0:
                    intervals[n_intervals].start = <Py_ssize_t>cnp.PyArray_DATA(<cnp.ndarray>a)
                    intervals[n_intervals].end = (intervals[n_intervals].start
                                                  + cnp.PyArray_NBYTES(<cnp.ndarray>a))
                    intervals[n_intervals].label = i * MAX_BUFS + k
                    n_intervals += 1
            total += cnp.PyArray_SIZE(param)
            offsets[i + 1] = total

        # no two buffers may share memory
        if fo_find_overlap(intervals, intervals + n_intervals, n_intervals, &first, &second):
            raise ValueError(
                f"{func}: {_label(names, is_list, first)} and {_label(names, is_list, second)} "
                f"overlap in memory; every buffer must be a separate array")

        kernel = fo_get_kernel(rule, type_num == cnp.NPY_FLOAT64)
        itemsize = 8 if type_num == cnp.NPY_FLOAT64 else 4
        nt = min(<Py_ssize_t>nthreads, total // MIN_ELEMENTS_PER_THREAD)
        _will_run_parallel(nt)
        with nogil:
            if nt <= 1:
                _run_share(kernel, h, ptrs, offsets, ntensors, itemsize, 0, total)
            else:
                for tid in prange(nt, schedule="static", chunksize=1, num_threads=nt):
                    _run_share(kernel, h, ptrs, offsets, ntensors, itemsize,
                               _share_start(total, tid, nt), _share_start(total, tid + 1, nt))
    finally:
        free(block)
    return 0


cdef inline Py_ssize_t _share_start(Py_ssize_t total, Py_ssize_t tid, Py_ssize_t nt) noexcept nogil:
    if tid >= nt:
        return total
    cdef Py_ssize_t start = <Py_ssize_t>((<double>total) * tid / nt)
    return start - start % SHARE_ALIGN


# --------------------------------------------------------------------------
# the step functions (docstrings with formulas: fastopt.reference)

cdef tuple _SGD_NAMES = ("param", "grad", "", "", "")
cdef tuple _MOMENTUM_NAMES = ("param", "grad", "velocity", "", "")
cdef tuple _SGD_MOMENTUM_NAMES = ("param", "grad", "momentum_buffer", "", "")
cdef tuple _RMSPROP_NAMES = ("param", "grad", "square_avg", "grad_avg", "momentum_buffer")
cdef tuple _ADAGRAD_NAMES = ("param", "grad", "state_sum", "", "")
cdef tuple _ADAM_NAMES = ("param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")


cdef inline int _common(fo_hyper *h, double lr, double weight_decay, object maximize,
                        object grad_scale) except -1:
    h.lr = lr
    h.grad_scale = _nonneg("grad_scale", grad_scale)
    h.weight_decay = weight_decay
    h.maximize = bool(maximize)
    h.variant = 0
    h.first_step = 0
    return 0


def sgd_step(param, grad, *, lr, weight_decay=0.0, maximize=False, grad_scale=1.0, num_threads=None):
    cdef fo_hyper h
    _common(&h, _nonneg("lr", lr), _nonneg("weight_decay", weight_decay), maximize,
            grad_scale)
    _run("sgd_step", FO_SGD, &h, _SGD_NAMES, (param, grad), num_threads)


def momentum_step(param, grad, velocity, *, lr, beta=0.9, weight_decay=0.0, maximize=False,
                  grad_scale=1.0, num_threads=None):
    cdef fo_hyper h
    _common(&h, _nonneg("lr", lr), _nonneg("weight_decay", weight_decay), maximize,
            grad_scale)
    h.beta1 = _unit("beta", beta)
    h.one_minus_beta1 = 1.0 - h.beta1
    _run("momentum_step", FO_MOMENTUM, &h, _MOMENTUM_NAMES, (param, grad, velocity), num_threads)


def sgd_momentum_step(param, grad, momentum_buffer, *, step, lr, momentum, dampening=0.0,
                      nesterov=False, weight_decay=0.0, maximize=False, grad_scale=1.0, num_threads=None):
    cdef fo_hyper h
    _common(&h, _nonneg("lr", lr), _nonneg("weight_decay", weight_decay), maximize,
            grad_scale)
    h.first_step = _step(step) == 1
    h.beta1 = _nonneg("momentum", momentum)
    cdef double tau = _real("dampening", dampening)
    if not isfinite(tau):
        raise ValueError(f"dampening must be finite; got {dampening!r}")
    h.one_minus_beta1 = 1.0 - tau
    if nesterov:
        if h.beta1 <= 0.0 or tau != 0.0:
            raise ValueError("nesterov=True requires momentum > 0 and dampening = 0; "
                             f"got momentum={momentum!r}, dampening={dampening!r}")
        h.variant = FO_NESTEROV
    _run("sgd_momentum_step", FO_SGD_MOMENTUM, &h, _SGD_MOMENTUM_NAMES,
         (param, grad, momentum_buffer), num_threads)


def rmsprop_step(param, grad, square_avg, *, grad_avg=None, momentum_buffer=None, lr=1e-2,
                 alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
                 maximize=False, grad_scale=1.0, num_threads=None):
    cdef fo_hyper h
    _common(&h, _nonneg("lr", lr), _nonneg("weight_decay", weight_decay), maximize,
            grad_scale)
    h.beta1 = _unit("alpha", alpha)
    h.one_minus_beta1 = 1.0 - h.beta1
    h.eps = _nonneg("eps", eps)
    h.beta2 = _nonneg("momentum", momentum)
    _required("grad_avg", grad_avg, bool(centered), "centered=True")
    _required("momentum_buffer", momentum_buffer, h.beta2 > 0.0, "momentum > 0")
    h.variant = (FO_RMSPROP_CENTERED if centered else 0) | (FO_RMSPROP_MOMENTUM if h.beta2 > 0.0 else 0)
    _run("rmsprop_step", FO_RMSPROP, &h, _RMSPROP_NAMES,
         (param, grad, square_avg, grad_avg, momentum_buffer), num_threads, 3)


def adagrad_step(param, grad, state_sum, *, step, lr=1e-2, lr_decay=0.0, eps=1e-10,
                 weight_decay=0.0, maximize=False, grad_scale=1.0, num_threads=None):
    cdef fo_hyper h
    cdef long long t = _step(step)
    cdef double base_lr = _nonneg("lr", lr)
    _common(&h, base_lr / (1.0 + (t - 1) * _nonneg("lr_decay", lr_decay)),
            _nonneg("weight_decay", weight_decay), maximize,
            grad_scale)
    h.eps = _nonneg("eps", eps)
    _run("adagrad_step", FO_ADAGRAD, &h, _ADAGRAD_NAMES, (param, grad, state_sum), num_threads)


cdef int _adam_scalars(fo_hyper *h, object step, object lr, object beta1, object beta2,
                       object eps, object weight_decay, object amsgrad, object maximize,
                       object grad_scale, object max_exp_avg_sq) except -1:
    cdef long long t = _step(step)
    cdef double base_lr = _nonneg("lr", lr)
    _common(h, base_lr, _nonneg("weight_decay", weight_decay), maximize,
            grad_scale)
    h.beta1 = _unit("beta1", beta1)
    h.beta2 = _unit("beta2", beta2)
    h.one_minus_beta1 = 1.0 - h.beta1
    h.one_minus_beta2 = 1.0 - h.beta2
    h.eps = _nonneg("eps", eps)
    _required("max_exp_avg_sq", max_exp_avg_sq, bool(amsgrad), "amsgrad=True")
    h.variant = FO_AMSGRAD if amsgrad else 0
    # per-step scalars, once, in double
    h.lr = base_lr / (1.0 - pow(h.beta1, <double>t))
    h.bias2_rsqrt = 1.0 / sqrt(1.0 - pow(h.beta2, <double>t))
    h.decay_factor = 1.0 - base_lr * h.weight_decay
    return 0


def adam_step(param, grad, exp_avg, exp_avg_sq, *, max_exp_avg_sq=None, step, lr=1e-3,
              beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False,
              maximize=False, grad_scale=1.0, num_threads=None):
    cdef fo_hyper h
    _adam_scalars(&h, step, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize,
                  grad_scale, max_exp_avg_sq)
    _run("adam_step", FO_ADAM, &h, _ADAM_NAMES,
         (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq), num_threads, 4)


def adamw_step(param, grad, exp_avg, exp_avg_sq, *, max_exp_avg_sq=None, step, lr=1e-3,
               beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2, amsgrad=False,
               maximize=False, grad_scale=1.0, num_threads=None):
    cdef fo_hyper h
    _adam_scalars(&h, step, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize,
                  grad_scale, max_exp_avg_sq)
    _run("adamw_step", FO_ADAMW, &h, _ADAM_NAMES,
         (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq), num_threads, 4)


_CEILING_NAMES = ("param", "grad", "state1", "state2", "state3")


def ceiling_step(param, grad, *state, num_threads=None):
    """The traffic ceiling: the memory traffic of a rule with len(state) state
    buffers and one add per buffer.  For benchmarks; updates all but grad."""
    cdef fo_hyper h
    if len(state) > 3:
        raise ValueError("ceiling_step takes at most 3 state buffers")
    _common(&h, 0.0, 0.0, False, 1.0)
    h.variant = len(state)
    _run("ceiling_step", FO_CEILING, &h, _CEILING_NAMES, (param, grad) + state, num_threads)


# --------------------------------------------------------------------------
# the gradient-norm pass (clipping, non-finite checks)

include "_norms.pxi"
