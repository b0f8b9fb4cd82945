# Checks of numbers and switches; every message names the argument (included by _core.pyx).

cdef enum:
    # A step count past this cannot be a real run; 2**63 - 1 is where C's long long ends.
    MAX_STEP = 0x7fffffffffffffff

# How a hyperparameter is checked: the names of fastopt.rules.CHECKS.
cdef enum Check:
    CHECK_NONNEG
    CHECK_UNIT
    CHECK_REAL
    CHECK_BOOL
    CHECK_CAP

_CHECK_CODES = {"nonneg": CHECK_NONNEG, "unit": CHECK_UNIT, "real": CHECK_REAL, "bool": CHECK_BOOL,
                "cap": CHECK_CAP}

# Each check has a fast path for the exact Python types a call brings (a step
# of a small model is dominated by per-call costs), and the general one else.
cdef object _NUMPY_BOOL = _np.bool_


cdef long long _integer_in(str name, object x, long long low, long long high) except? -1:
    """An integer (not a bool, not a float) in [low, high], or an error naming `name`."""
    cdef int overflow = 0
    cdef long long v
    if type(x) is int:
        v = PyLong_AsLongLongAndOverflow(x, &overflow)
        if not overflow and low <= v <= high:
            return v
    if isinstance(x, (bool, _NUMPY_BOOL)):
        raise TypeError(f"{name} must be an integer; got {x!r}")
    try:
        value = operator.index(x)
    except TypeError:
        raise TypeError(f"{name} must be an integer; got {x!r}") from None
    if not (low <= value <= high):
        raise ValueError(f"{name} must be an integer in [{low}, {high}]; got {x!r}")
    return value


cdef inline long long _step(object step) except -1:
    return _integer_in("step", step, 1, MAX_STEP)


cdef double _real(str name, object x) except? -1:
    """A real number as a double; one too large for a double is infinite (and refused by the checks)."""
    if type(x) is float:
        return PyFloat_AS_DOUBLE(x)
    if isinstance(x, (bool, _NUMPY_BOOL)) or not isinstance(x, (int, float, cnp.integer, cnp.floating)):
        raise TypeError(f"{name} must be a real number; got {x!r}")
    try:
        return <double>x
    except OverflowError:
        return float("inf") if x > 0 else float("-inf")


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


cdef double _finite(str name, object x) except? -1:
    cdef double v = _real(name, x)
    if not isfinite(v):
        raise ValueError(f"{name} must be finite; got {x!r}")
    return v


cdef double _cap(str name, object x) except? -1:
    cdef double v = _real(name, x)
    if not v > 0.0:
        raise ValueError(f"{name} must be > 0 (inf: no cap); got {x!r}")
    return v


cdef int _switch(str name, object x) except -1:
    if x is True:
        return 1
    if x is False:
        return 0
    if not isinstance(x, (bool, _NUMPY_BOOL)):
        raise TypeError(f"{name} must be a bool; got {x!r}")
    return 1 if x else 0


cdef double _checked(int check, str name, object x) except? -1:
    """x checked as `check` says, as a double (a switch as 0 or 1)."""
    if check == CHECK_NONNEG:
        return _nonneg(name, x)
    if check == CHECK_UNIT:
        return _unit(name, x)
    if check == CHECK_REAL:
        return _finite(name, x)
    if check == CHECK_CAP:
        return _cap(name, x)
    return _switch(name, x)


def check_value(str check, str name, x):
    """x checked as fastopt.rules.CHECKS[check] says; returns it as a float (a switch as a bool)."""
    cdef int code = _CHECK_CODES[check]
    cdef double v = _checked(code, name, x)
    return bool(v) if code == CHECK_BOOL else v


def check_count(str name, x, long long low=1, long long high=MAX_STEP):
    """x checked as an integer in [low, high]; returns it as an int."""
    return _integer_in(name, x, low, high)
