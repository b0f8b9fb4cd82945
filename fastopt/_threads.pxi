# Threads, fork safety, SIMD dispatch and build facts (included by _core.pyx).

cdef enum:
    # The most threads a call may ask for.
    MAX_THREADS = 1 << 16

cdef int _num_threads = 0   # 0: follow the OpenMP default

# libgomp's thread pool does not survive fork(): a child process that enters
# a parallel region after the pool was started in its parent hangs.  fastopt
# knows when it started the pool itself.  Another library in the process
# (torch, numba) may have started it too: that shows as threads that did not
# exist when fastopt was imported and are not Python's own.  A child forked in
# either case runs every step on the calling thread, without a region.
cdef bint _pool_started = False   # this process has run a parallel region of fastopt's
cdef bint _parent_threaded = False  # at fork, the parent had threads started since import
cdef bint _forked = False         # this is a child forked in one of those cases


def _task_ids():
    """The ids of this process's threads (Linux), or None where /proc does not tell."""
    try:
        return set(os.listdir("/proc/self/task"))
    except OSError:
        return None


_TASKS_AT_IMPORT = _task_ids()


def get_num_threads():
    """The thread count a step uses when ``num_threads=None``.

    What :func:`set_num_threads` set, or else the OpenMP default, which
    honours ``OMP_NUM_THREADS`` and ``threadpoolctl.threadpool_limits``.
    1 in a child process forked after its parent's OpenMP threads started
    (they do not survive fork).
    """
    return _resolve_threads(None)


def set_num_threads(n):
    """Set the default thread count of every step; ``None`` restores the OpenMP default."""
    global _num_threads
    _num_threads = 0 if n is None else _check_num_threads(n)


cdef int _check_num_threads(object n) except -1:
    return <int>_integer_in("num_threads", n, 1, MAX_THREADS)


cdef inline int _resolve_threads(object n) except -1:
    cdef int resolved
    if n is None:
        resolved = _num_threads if _num_threads > 0 else fo_omp_max_threads()
    else:
        resolved = _check_num_threads(n)
    return 1 if _forked else resolved


def _threads_started_since_import():
    """Whether threads other than Python's run now that did not when fastopt was imported."""
    if _TASKS_AT_IMPORT is None:
        return False
    import threading
    python_threads = {str(t.native_id) for t in threading.enumerate()}
    return bool(_task_ids() - _TASKS_AT_IMPORT - python_threads)


def _before_fork():
    global _parent_threaded
    _parent_threaded = _pool_started or _threads_started_since_import()


def _after_fork_in_child():
    global _forked
    _forked = _forked or _pool_started or _parent_threaded


def _after_fork_in_parent():
    global _parent_threaded
    _parent_threaded = False


cdef inline void _will_run_parallel(Py_ssize_t nthreads) noexcept:
    global _pool_started
    if nthreads > 1:
        _pool_started = True


# When the OS leaves a thread of a region waiting (another process keeps its
# core busy), the region ends only once that thread has run: the others take
# all the blocks, then wait for it at the region's end.  A region in which a
# thread took no block is the sign; the next calls then run on one thread, for
# a stretch that doubles while it persists, and parallel again once a region
# sees every thread work.  Any assignment of blocks to threads gives the same
# bits, so this changes only the time.
cdef enum:
    MAX_SERIAL_STRETCH = 256

cdef int _serial_calls_left = 0   # calls that run on one thread before the next try
cdef int _serial_stretch = 0      # the length of the last such stretch


cdef inline Py_ssize_t _threads_now(Py_ssize_t wanted) noexcept:
    """The threads a region that wants `wanted` (> 1) runs on: 1 during a stretch after contention."""
    global _serial_calls_left
    if _serial_calls_left > 0:
        _serial_calls_left -= 1
        return 1
    return wanted


cdef enum:
    # Below this many elements per thread a region runs on fewer threads (down
    # to one): starting a parallel region costs more than updating a small buffer.
    MIN_ELEMENTS_PER_THREAD = 32768


cdef inline Py_ssize_t _region_threads(Py_ssize_t wanted, Py_ssize_t elements) noexcept:
    """The threads of a region over `elements` that wants `wanted`: fewer (down to one) for a small
    one, one during a stretch after contention."""
    cdef Py_ssize_t nt = max(1, min(wanted, elements // MIN_ELEMENTS_PER_THREAD))
    return _threads_now(nt) if nt > 1 else nt


cdef inline void _region_done(bint every_thread_worked) noexcept:
    global _serial_calls_left, _serial_stretch
    if every_thread_worked:
        _serial_stretch = _serial_calls_left = 0
    else:
        _serial_stretch = min(max(2 * _serial_stretch, 4), <int>MAX_SERIAL_STRETCH)
        _serial_calls_left = _serial_stretch


def _contention():
    """(calls left on one thread, length of the current stretch): for tests and show_config."""
    return _serial_calls_left, _serial_stretch


def _record_region(every_thread_worked):
    """Record a region as if it had run (tests of the stretches above)."""
    _region_done(bool(every_thread_worked))


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child,
                    after_in_parent=_after_fork_in_parent)


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
