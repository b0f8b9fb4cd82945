# Rule specs, plans (validated calls, ready to run) and the step kernels'
# parallel region (included by _core.pyx).

cdef enum:
    # Blocks start on multiples of this many elements, so two threads do not
    # write the same cache line of a tensor that starts on one.
    SHARE_ALIGN = 64
    # Blocks per thread: threads take blocks as they come (any assignment
    # gives the same bits, the rules being elementwise), so a thread that the
    # OS deschedules leaves its share to the others.
    BLOCKS_PER_THREAD = 4
    # ... but blocks of at least this many elements: a block costs a kernel
    # call and a restart of its prefetching.
    MIN_BLOCK = 16384
    MAX_HYPER = 16
    # RuleSpec.enabled_by: the buffer is always used; the caller decides (the ceiling's state)
    ENABLED_ALWAYS = -1
    ENABLED_BY_CALLER = -2


def _hyper_fields():
    """fo_hyper's settable fields: name -> (offset, is_switch)."""
    fields = {}
    cdef int i = 0
    cdef fo_field f = fo_hyper_field(0)
    while f.name != NULL:
        fields[f.name.decode()] = (f.offset, bool(f.is_switch))
        i += 1
        f = fo_hyper_field(i)
    return fields


def _rule_ids():
    """The C rules (FO_RULES in src_c/fastopt_kernels.h): name -> id."""
    ids = {}
    cdef int i = 0
    while fo_rule_name(i) != NULL:
        ids[fo_rule_name(i).decode()] = i
        i += 1
    return ids


cdef dict _FIELDS = _hyper_fields()
RULE_IDS = _rule_ids()


def _bfloat16_type_number():
    """NumPy's number of ml_dtypes.bfloat16, the bfloat16 of the JAX/TensorFlow ecosystem (-1 without it)."""
    try:
        import ml_dtypes
    except ImportError:
        return -1
    return _np.dtype(ml_dtypes.bfloat16).num


cdef int _BFLOAT16 = _bfloat16_type_number()
cdef str _DTYPE_NAMES = "float32, float64, bfloat16 (ml_dtypes) or float16"
# bytes per element, by enum fo_dtype
cdef Py_ssize_t _ITEMSIZE[6]
_ITEMSIZE[:] = [4, 8, 2, 2, 1, 1]

# RuleSpec.quant: which QuantizedState a slot takes
cdef enum:
    QUANT_NONE = 0       # none: an ndarray only
    QUANT_SIGNED = 1     # signed codes (state that changes sign)
    QUANT_UNSIGNED = 2   # unsigned codes (nonnegative state)
    QUANT_EITHER = 3     # the ceiling's state


cdef inline int _dtype_code(int type_num) noexcept:
    """The enum fo_dtype of a NumPy type number, or -1."""
    if type_num == cnp.NPY_FLOAT32:
        return FO_F32
    if type_num == cnp.NPY_FLOAT64:
        return FO_F64
    if type_num == cnp.NPY_FLOAT16:
        return FO_F16
    if type_num == _BFLOAT16 and type_num >= 0:
        return FO_BF16
    return -1


cdef class RuleSpec:
    """A rule of the registry (:class:`fastopt.rules.Rule`) compiled for the boundary.

    It knows the C rule, the buffers a call brings (and which are optional,
    enabled by which hyperparameter), and how each hyperparameter is checked
    and where in ``fo_hyper`` it goes.
    """

    cdef readonly str name
    cdef readonly str function_name
    cdef readonly tuple buffer_names
    cdef readonly tuple hyper_names
    cdef readonly bint takes_step
    cdef int rule_id
    cdef int second_rule                # the C rule of a second pass over each tensor (LAMB's), or -1
    cdef int n_buffers                  # in a call's buffers: param, grad, the state, param_copy
    cdef int slots[FO_CALL_BUFFERS]     # where buffer j goes among the kernel's (enum fo_buffer)
    cdef int enabled_by[FO_CALL_BUFFERS]
    cdef tuple slot_names               # the name of the buffer in each slot ("" where none)
    cdef tuple required_when
    cdef int quant[FO_CALL_BUFFERS]     # enum QUANT_*
    cdef int n_hyper
    cdef int checks[MAX_HYPER]
    cdef Py_ssize_t offsets[MAX_HYPER]

    def __init__(self, rule):
        """From a registry entry (fastopt.rules.Rule)."""
        if rule.name not in RULE_IDS:
            raise ValueError(f"rule {rule.name!r} has no C kernel: add it to FO_RULES in src_c/fastopt_kernels.h")
        buffers = rule.buffer_names + ("param_copy",)
        if len(rule.state) > FO_MAX_STATE or len(rule.hyper) > MAX_HYPER:
            raise ValueError(f"rule {rule.name!r} has more buffers or hyperparameters than fo_hyper holds")
        self.name = rule.name
        self.function_name = rule.function_name
        self.rule_id = RULE_IDS[rule.name]
        second = getattr(rule, "second_pass", None)
        if second is not None and second not in RULE_IDS:
            raise ValueError(f"rule {rule.name!r}: its second pass {second!r} has no C kernel (FO_RULES)")
        self.second_rule = -1 if second is None else RULE_IDS[second]
        self.buffer_names = tuple(buffers)
        self.n_buffers = len(buffers)
        _set_slots(self)
        self.takes_step = rule.takes_step
        self.hyper_names = tuple(h.name for h in rule.hyper)
        self.n_hyper = len(rule.hyper)
        index = {h.name: i for i, h in enumerate(rule.hyper)}
        why = ["", ""]
        self.enabled_by[FO_PARAM] = self.enabled_by[FO_GRAD] = ENABLED_ALWAYS
        for k in range(FO_CALL_BUFFERS):
            self.quant[k] = QUANT_NONE
        for k, buffer in enumerate(rule.state, start=FO_STATE):
            if buffer.quantizable:
                self.quant[k] = QUANT_UNSIGNED if buffer.nonnegative else QUANT_SIGNED
            if buffer.enabled_by is None:
                self.enabled_by[k] = ENABLED_ALWAYS
                why.append("")
            else:
                switch = rule.hyper[index[buffer.enabled_by]]
                self.enabled_by[k] = index[buffer.enabled_by]
                why.append(f"{switch.name}=True" if switch.is_switch else f"{switch.name} > 0")
        self.enabled_by[self.n_buffers - 1] = ENABLED_BY_CALLER  # param_copy
        self.required_when = tuple(why) + ("",)
        for i, h in enumerate(rule.hyper):
            self.checks[i] = _CHECK_CODES[h.check]
            if h.name in _FIELDS:
                offset, is_switch = _FIELDS[h.name]
                if is_switch != h.is_switch:
                    raise ValueError(f"{rule.name}: {h.name} is {'a switch' if is_switch else 'a number'} in fo_hyper")
                self.offsets[i] = offset
            elif h.is_switch and any(b.enabled_by == h.name for b in rule.state):
                self.offsets[i] = -1  # only says which buffers the call brings
            else:
                raise ValueError(f"{rule.name}: hyperparameter {h.name!r} is not a field of fo_hyper "
                                 f"(FO_HYPERPARAMETERS in src_c/fastopt_kernels.h)")

    def __repr__(self):
        return f"RuleSpec({self.name!r})"


cdef void _set_slots(RuleSpec spec):
    """Buffer j of a call goes to slot j, but the last, param_copy, to FO_PARAM_COPY."""
    cdef int j
    names = [""] * FO_CALL_BUFFERS
    for j in range(spec.n_buffers):
        spec.slots[j] = FO_PARAM_COPY if j == spec.n_buffers - 1 else j
        names[spec.slots[j]] = spec.buffer_names[j]
    spec.slot_names = tuple(names)


cdef RuleSpec _ceiling_spec():
    """The traffic ceiling: param, grad and up to FO_MAX_STATE state buffers, no hyperparameters."""
    cdef RuleSpec spec = RuleSpec.__new__(RuleSpec)
    spec.name = "ceiling"
    spec.function_name = "ceiling_step"
    spec.rule_id = FO_RULE_ceiling
    spec.second_rule = -1
    spec.buffer_names = (("param", "grad") + tuple(f"state{i + 1}" for i in range(FO_MAX_STATE))
                         + ("param_copy",))
    spec.n_buffers = FO_CALL_BUFFERS
    _set_slots(spec)
    spec.enabled_by[FO_PARAM] = spec.enabled_by[FO_GRAD] = ENABLED_ALWAYS
    for k in range(FO_CALL_BUFFERS):
        spec.quant[k] = QUANT_EITHER if FO_STATE <= k < FO_MAX_BUFFERS else QUANT_NONE
    for k in range(FO_STATE, FO_CALL_BUFFERS):
        spec.enabled_by[k] = ENABLED_BY_CALLER
    spec.required_when = ("",) * FO_CALL_BUFFERS
    spec.hyper_names = ()
    spec.n_hyper = 0
    spec.takes_step = False
    return spec


cdef RuleSpec _CEILING = _ceiling_spec()


cdef int _set_hyper(RuleSpec spec, fo_hyper *h, tuple values) except -1:
    """Check each hyperparameter of a call and write it into h."""
    cdef int i
    cdef double v
    cdef char *base = <char *>h
    if len(values) != spec.n_hyper:
        raise TypeError(f"{spec.function_name} takes {spec.n_hyper} hyperparameters "
                        f"{spec.hyper_names}; got {len(values)}")
    for i in range(spec.n_hyper):
        v = _checked(spec.checks[i], spec.hyper_names[i], values[i])
        if spec.offsets[i] < 0:
            continue
        if spec.checks[i] == CHECK_BOOL:
            (<int *>(base + spec.offsets[i]))[0] = <int>v
        else:
            (<double *>(base + spec.offsets[i]))[0] = v
    return 0


# --------------------------------------------------------------------------
# plans

cdef struct _Call:
    int rule
    int is_double         # every buffer is float64 (else float32 arithmetic)
    int used              # bit j: buffer j of the call is used
    int stochastic        # the param is rounded stochastically ...
    uint32_t key          # ... with random bits from this key
    Py_ssize_t first      # its first tensor in the plan's arrays
    Py_ssize_t ntensors
    Py_ssize_t total      # its elements
    fo_kernel kernel
    fo_hyper h
    int second_rule       # a second pass over each tensor (LAMB's trust ratio), or -1
    # how the pass now running treats the call (_run_pass):
    bint active           # it runs in this pass
    bint sums             # its kernel adds squares into FO_SUMS lanes, per norm block of each tensor
    bint per_tensor       # its tensors have scalars of their own (Plan.tensor_h)
    unsigned skip         # bit k: slot k is not passed to the kernel (NULL)
    unsigned read_only    # bit k: slot k is only read (staging does not store it back)


cdef class Plan:
    """Calls of step kernels, every buffer and hyperparameter checked: ready to run.

    Made by :func:`plan`.  Nothing has been written yet; :meth:`norm` and
    :meth:`all_finite` read the gradients of all calls, and :meth:`run` runs
    every call, once.  The plan holds a reference to every array it will touch.
    """

    cdef _Call *calls
    cdef Py_ssize_t ncalls
    cdef char **ptrs            # FO_CALL_BUFFERS per tensor, by slot (enum fo_buffer)
    cdef Py_ssize_t *starts     # per tensor: its first element within its call
    cdef Py_ssize_t *sizes      # per tensor: its elements
    cdef Py_ssize_t *index_base # per tensor: the index in a larger tensor of its element 0 (random bits)
    cdef unsigned char *dtypes  # FO_CALL_BUFFERS per tensor: each buffer's enum fo_dtype
    cdef char *staged           # per tensor: its mix of dtypes has no loop of its own (staging.h)
    cdef unsigned char *modes   # per tensor: the enum fo_mode of its loop, where not staged
    cdef float **qscales        # FO_CALL_BUFFERS per tensor: a quantized buffer's scales (else NULL)
    cdef Py_ssize_t *qblock     # FO_CALL_BUFFERS per tensor: its block size
    cdef Py_ssize_t align       # thread blocks, and the tensors of calls that need it, start on multiples of
                                # this: FO_Q8_MAX_BLOCK (a quantized buffer) or FO_NORM_BLOCK (a summing pass)
    cdef double *sums           # a summing pass's squares per norm block: param's [0, nsums), u's [nsums, 2 nsums)
    cdef Py_ssize_t nsums
    cdef Py_ssize_t *sum_first  # per tensor: its first norm block in sums
    cdef fo_hyper *tensor_h     # per tensor: the scalars of a second pass
    cdef Py_ssize_t ntensors
    cdef int nthreads
    cdef bint done
    cdef str what               # the function, for messages
    cdef bint model_labels      # name buffers as an optimizer does: params[i], grads[i], exp_avg[i]
    cdef list specs             # per call
    cdef list is_list           # per call
    cdef list slot_names        # per call: an optimizer's names of the slots, or None
    cdef list keep              # every array, alive while the GIL is released

    def __dealloc__(self):
        free(self.calls)
        free(self.ptrs)
        free(self.qscales)
        free(self.sums)
        free(self.tensor_h)

    @property
    def num_tensors(self):
        return self.ntensors

    @property
    def num_elements(self):
        return sum(self.sizes[t] for t in range(self.ntensors))

    def norm(self, norm_type=2.0):
        """The norm of every gradient of the plan together (float64 accumulation, any thread count: same bits)."""
        kind, p = norm_kind(norm_type)
        return _norm_pass(self.ptrs + FO_GRAD, self.dtypes + FO_GRAD, FO_CALL_BUFFERS, self.sizes,
                          self.ntensors, kind, p, self.nthreads)

    def all_finite(self):
        """Whether every gradient element of the plan is finite: one read pass."""
        return _norm_pass(self.ptrs + FO_GRAD, self.dtypes + FO_GRAD, FO_CALL_BUFFERS, self.sizes,
                          self.ntensors, FO_NORM_FINITE, 0.0, self.nthreads) == 0.0

    def run(self, grad_scale=1.0):
        """Run every call, gradients multiplied by grad_scale; a plan runs once."""
        _run(self, _nonneg("grad_scale", grad_scale))


cdef Py_ssize_t _call_of(Plan plan, Py_ssize_t tensor):
    cdef Py_ssize_t c = 0
    while c + 1 < plan.ncalls and plan.calls[c + 1].first <= tensor:
        c += 1
    return c


cdef Py_ssize_t _first_of_call(Plan plan, Py_ssize_t tensor):
    return plan.calls[_call_of(plan, tensor)].first


cdef str _label(Plan plan, Py_ssize_t tensor, int k):
    """How an error names the buffer in slot k of tensor `tensor`: exp_avg, exp_avg[3], or grads[7]
    in an optimizer (which may name its slots itself: a master weight in the param's slot)."""
    cdef Py_ssize_t c = _call_of(plan, tensor)
    cdef RuleSpec spec = plan.specs[c]
    if plan.model_labels:
        names = plan.slot_names[c]
        name = names[k] if names is not None else ("params", "grads")[k] if k < FO_STATE else spec.slot_names[k]
        return f"{name}[{tensor}]"
    name = spec.slot_names[k]
    return f"{name}[{tensor - plan.calls[c].first}]" if plan.is_list[c] else name


cdef int _check_array(Plan plan, Py_ssize_t tensor, int k, object a, cnp.ndarray ref,
                      int *mode) except -1:
    """Check the buffer in slot k of a tensor; ref is the tensor's param (None for param itself).

    Returns its enum fo_dtype.  mode is the call's arithmetic so far: -1
    unknown, FO_F64, or FO_F32 (float32 and the 16-bit floats mix freely;
    float64 goes only with float64).  The hot path touches only C fields;
    labels are formatted only for a message.
    """
    cdef int t, d, code
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{plan.what}: {_label(plan, tensor, k)} must be a numpy.ndarray of "
                        f"{_DTYPE_NAMES}; got {type(a).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    t = cnp.PyArray_TYPE(arr)
    code = _dtype_code(t)
    if code < 0:
        raise TypeError(f"{plan.what}: {_label(plan, tensor, k)} must have dtype {_DTYPE_NAMES}; "
                        f"got {a.dtype}")
    if not cnp.PyArray_ISNOTSWAPPED(arr):
        raise TypeError(f"{plan.what}: {_label(plan, tensor, k)} must be in native byte order; "
                        f"got {a.dtype.str}")
    if k == FO_PARAM_COPY and code != FO_BF16 and code != FO_F16:
        raise TypeError(f"{plan.what}: {_label(plan, tensor, k)} receives the new param in a 16-bit "
                        f"dtype: it must be bfloat16 or float16; got {a.dtype}")
    if mode[0] == -1:
        mode[0] = FO_F64 if code == FO_F64 else FO_F32
    elif (code == FO_F64) != (mode[0] == FO_F64):
        raise TypeError(f"{plan.what}: mixed dtypes: {_label(plan, tensor, k)} is {a.dtype} but "
                        f"{_label(plan, _first_of_call(plan, tensor), FO_PARAM)} is "
                        f"{'float64' if mode[0] == FO_F64 else 'not float64'}; float64 goes only with float64")
    cdef bint c_order = cnp.PyArray_IS_C_CONTIGUOUS(arr)
    if ref is not None:
        if cnp.PyArray_NDIM(arr) != cnp.PyArray_NDIM(ref):
            _shape_error(plan, tensor, k, a, ref)
        for d in range(cnp.PyArray_NDIM(ref)):
            if cnp.PyArray_DIM(arr, d) != cnp.PyArray_DIM(ref, d):
                _shape_error(plan, tensor, k, a, ref)
    if not (c_order or cnp.PyArray_IS_F_CONTIGUOUS(arr)):
        raise ValueError(f"{plan.what}: {_label(plan, tensor, k)} must be C- or "
                         f"Fortran-contiguous; got strides {a.strides}")
    if ref is not None and not (
            (c_order and cnp.PyArray_IS_C_CONTIGUOUS(ref))
            or (cnp.PyArray_IS_F_CONTIGUOUS(arr) and cnp.PyArray_IS_F_CONTIGUOUS(ref))):
        raise ValueError(f"{plan.what}: {_label(plan, tensor, k)} must have the same memory "
                         f"order as {_label(plan, tensor, FO_PARAM)} (both C- or both Fortran-contiguous)")
    if not cnp.PyArray_ISALIGNED(arr):
        raise ValueError(f"{plan.what}: {_label(plan, tensor, k)} is not aligned to its dtype")
    if k != FO_GRAD and not cnp.PyArray_ISWRITEABLE(arr):
        raise ValueError(f"{plan.what}: {_label(plan, tensor, k)} is updated in place and must "
                         f"be writeable; got a read-only array")
    return code


cdef str _part_label(Plan plan, fo_index label):
    """How the overlap check names an interval: a buffer, or a quantized buffer's codes or scales."""
    cdef Py_ssize_t slots = plan.ntensors * FO_CALL_BUFFERS
    cdef bint scales = label >= slots
    if scales:
        label -= slots
    name = _label(plan, label // FO_CALL_BUFFERS, label % FO_CALL_BUFFERS)
    if scales:
        return name + ".scales"
    if plan.dtypes[label] == FO_Q8S or plan.dtypes[label] == FO_Q8U:
        return name + ".codes"
    return name


cdef int _check_quantized(Plan plan, RuleSpec spec, Py_ssize_t tensor, int k, object q, cnp.ndarray ref,
                          int *mode) except -1:
    """Check a QuantizedState in slot k of a tensor whose param (checked) is ref; its enum fo_dtype."""
    cdef int d
    label = _label(plan, tensor, k)
    if spec.quant[k] == QUANT_NONE:
        raise TypeError(f"{plan.what}: {label} must be a numpy.ndarray of {_DTYPE_NAMES}; got a "
                        f"QuantizedState (8-bit state is taken for a rule's state buffers only, and not "
                        f"for {spec.slot_names[k] or 'this buffer'})")
    if mode[0] == FO_F64:
        raise TypeError(f"{plan.what}: {label} is 8-bit quantized state, but "
                        f"{_label(plan, tensor, FO_PARAM)} is float64; quantized state goes with float32 "
                        f"or 16-bit params")
    block_size = q.block_size
    if isinstance(block_size, bool) or not isinstance(block_size, int):
        raise TypeError(f"{plan.what}: {label}.block_size must be an int; got {type(block_size).__name__}")
    if not (64 <= block_size <= FO_Q8_MAX_BLOCK) or block_size & (block_size - 1):
        raise ValueError(f"{plan.what}: {label}.block_size must be a power of two in [64, {FO_Q8_MAX_BLOCK}]; "
                         f"got {block_size}")
    signed = q.signed
    if not isinstance(signed, bool):
        raise TypeError(f"{plan.what}: {label}.signed must be a bool; got {type(signed).__name__}")
    if spec.quant[k] == QUANT_UNSIGNED and signed:
        raise ValueError(f"{plan.what}: {label} holds nonnegative state and takes unsigned codes; got "
                         f"signed=True")
    if spec.quant[k] == QUANT_SIGNED and not signed:
        raise ValueError(f"{plan.what}: {label} changes sign and takes signed codes; got signed=False")
    codes, scales = q.codes, q.scales
    if not cnp.PyArray_Check(codes) or cnp.PyArray_TYPE(<cnp.ndarray>codes) != cnp.NPY_UINT8:
        raise TypeError(f"{plan.what}: {label}.codes must be a numpy.ndarray of uint8; got "
                        f"{getattr(codes, 'dtype', type(codes).__name__)}")
    if not cnp.PyArray_Check(scales) or cnp.PyArray_TYPE(<cnp.ndarray>scales) != cnp.NPY_FLOAT32 \
            or not cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>scales):
        raise TypeError(f"{plan.what}: {label}.scales must be a numpy.ndarray of native float32; got "
                        f"{getattr(scales, 'dtype', type(scales).__name__)}")
    cdef cnp.ndarray c = <cnp.ndarray>codes, s = <cnp.ndarray>scales
    if cnp.PyArray_NDIM(c) != cnp.PyArray_NDIM(ref):
        _shape_error(plan, tensor, k, codes, ref)
    for d in range(cnp.PyArray_NDIM(ref)):
        if cnp.PyArray_DIM(c, d) != cnp.PyArray_DIM(ref, d):
            _shape_error(plan, tensor, k, codes, ref)
    if not cnp.PyArray_IS_C_CONTIGUOUS(c):
        raise ValueError(f"{plan.what}: {label}.codes must be C-contiguous; got strides {codes.strides}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(ref):
        raise ValueError(f"{plan.what}: {label} is quantized in blocks of the C-order tensor, so "
                         f"{_label(plan, tensor, FO_PARAM)} must be C-contiguous; got strides {(<object>ref).strides}")
    cdef Py_ssize_t nblocks = (cnp.PyArray_SIZE(ref) + block_size - 1) // block_size
    if cnp.PyArray_NDIM(s) != 1 or cnp.PyArray_DIM(s, 0) != nblocks:
        raise ValueError(f"{plan.what}: {label}.scales must have shape ({nblocks},), one per block of "
                         f"{block_size} elements; got shape {scales.shape}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(s):
        raise ValueError(f"{plan.what}: {label}.scales must be contiguous; got strides {scales.strides}")
    if not cnp.PyArray_ISALIGNED(s):
        raise ValueError(f"{plan.what}: {label}.scales is not aligned to its dtype")
    if not cnp.PyArray_ISWRITEABLE(c) or not cnp.PyArray_ISWRITEABLE(s):
        raise ValueError(f"{plan.what}: {label}.{'codes' if not cnp.PyArray_ISWRITEABLE(c) else 'scales'} "
                         f"is updated in place and must be writeable; got a read-only array")
    return FO_Q8S if signed else FO_Q8U


cdef int _shape_error(Plan plan, Py_ssize_t tensor, int k, object a, object ref) except -1:
    raise ValueError(f"{plan.what}: {_label(plan, tensor, k)} has shape {a.shape}, but "
                     f"{_label(plan, tensor, FO_PARAM)} has shape {ref.shape}")


cdef int _buffers_used(RuleSpec spec, tuple buffers, tuple values) except -1:
    """The bit set of buffers a call uses; an optional one given when unused, or missing when used, is an error."""
    cdef int k, used = 0
    cdef bint needed
    if len(buffers) != spec.n_buffers:
        raise TypeError(f"{spec.function_name} takes {spec.n_buffers} buffers {spec.buffer_names}; "
                        f"got {len(buffers)}")
    for k in range(spec.n_buffers):
        if spec.enabled_by[k] == ENABLED_ALWAYS:
            needed = True
        elif spec.enabled_by[k] == ENABLED_BY_CALLER:
            needed = buffers[k] is not None
        else:
            needed = bool(values[spec.enabled_by[k]])
            name, why = spec.buffer_names[k], spec.required_when[k]
            if needed and buffers[k] is None:
                raise ValueError(f"{name} is required when {why}")
            if not needed and buffers[k] is not None:
                raise ValueError(f"{name} is given but unused: it is used only when {why}")
        if needed:
            used |= 1 << k
    return used


cdef Plan _make_plan(list calls, object num_threads, str what, bint model_labels):
    """calls: [(RuleSpec, buffers, hyperparameter values, step[, rounding seed[, slot names[, index bases]]]])];
    checked in full, nothing run.  Index bases (one per tensor, or None: all 0) say where each tensor's
    element 0 lies in a larger tensor it is a piece of, so that stochastic rounding draws that tensor's bits."""
    cdef Plan plan = Plan.__new__(Plan)
    cdef Py_ssize_t ncalls = len(calls), c, i, t, ntensors = 0, n_intervals = 0, total
    cdef int j, k, used, mode, code
    cdef unsigned char *dtypes
    cdef RuleSpec spec
    cdef tuple buffers, values
    cdef _Call *call
    cdef const char *message
    cdef cnp.ndarray param
    cdef list columns
    cdef fo_index first = 0, second = 0
    cdef fo_interval *intervals = NULL
    plan.what = what
    plan.model_labels = model_labels
    plan.nthreads = _resolve_threads(num_threads)
    plan.specs = []
    plan.is_list = []
    plan.slot_names = []
    plan.keep = []
    plan.calls = <_Call *>malloc((ncalls if ncalls > 0 else 1) * sizeof(_Call))
    if plan.calls == NULL:
        raise MemoryError()
    plan.ncalls = ncalls

    # the hyperparameters of every call, and the shape of its buffer arguments
    cdef tuple entry
    for c in range(ncalls):
        entry = tuple(calls[c])  # the same object when it is a tuple
        spec, buffers, values, step = entry[0], entry[1], entry[2], entry[3]
        seed = entry[4] if len(entry) > 4 else None
        call = &plan.calls[c]
        memset(call, 0, sizeof(_Call))
        call.rule = spec.rule_id
        call.second_rule = spec.second_rule
        _set_hyper(spec, &call.h, values)
        if spec.takes_step:
            call.h.step = _step(step)
        if seed is not None:
            call.stochastic = True
            call.key = fo_stochastic_key(_integer_in("seed", seed, 0, MAX_STEP), call.h.step)
        message = fo_prepare_call(spec.rule_id, &call.h)
        if message != NULL:
            raise ValueError(message.decode())
        used = _buffers_used(spec, buffers, values)
        call.used = used
        is_list = isinstance(buffers[0], (list, tuple))
        if is_list:
            # copies: the counts come from them and the loops below index them,
            # whatever the caller's sequences say or do meanwhile
            columns = [list(b) if used & (1 << j) and isinstance(b, (list, tuple)) else b
                       for j, b in enumerate(buffers)]
            call.ntensors = len(<list>columns[FO_PARAM])
            for j in range(1, spec.n_buffers):
                if not used & (1 << j):
                    continue
                if not isinstance(columns[j], list):
                    raise TypeError(f"{what}: {spec.buffer_names[FO_PARAM]} is a list, so "
                                    f"{spec.buffer_names[j]} must be a list of the same length; "
                                    f"got {type(buffers[j]).__name__}")
                if len(<list>columns[j]) != call.ntensors:
                    raise ValueError(f"{what}: {spec.buffer_names[j]} has {len(<list>columns[j])} tensors "
                                     f"but {spec.buffer_names[FO_PARAM]} has {call.ntensors}")
            plan.keep.append(columns)
        else:
            call.ntensors = 1
            for j in range(1, spec.n_buffers):
                if used & (1 << j) and isinstance(buffers[j], (list, tuple)):
                    raise TypeError(f"{what}: {spec.buffer_names[FO_PARAM]} is an array, so "
                                    f"{spec.buffer_names[j]} must be an array too; got "
                                    f"{type(buffers[j]).__name__}")
            plan.keep.append(buffers)
        call.first = ntensors
        ntensors += call.ntensors
        plan.specs.append(spec)
        plan.is_list.append(is_list)
        plan.slot_names.append(entry[5] if len(entry) > 5 else None)

    # C arrays: one allocation for the plan, one for the overlap check's intervals
    plan.ntensors = ntensors
    cdef Py_ssize_t n = ntensors if ntensors > 0 else 1
    plan.ptrs = <char **>malloc(n * (FO_CALL_BUFFERS * sizeof(char *) + 3 * sizeof(Py_ssize_t)
                                     + FO_CALL_BUFFERS + 2))
    plan.qscales = <float **>malloc(n * FO_CALL_BUFFERS * (sizeof(float *) + sizeof(Py_ssize_t)))
    # a quantized buffer spans two intervals (codes, scales): room for all, and as much scratch
    intervals = <fo_interval *>malloc(4 * n * FO_CALL_BUFFERS * sizeof(fo_interval))
    if plan.ptrs == NULL or plan.qscales == NULL or intervals == NULL:
        free(intervals)
        raise MemoryError()
    plan.starts = <Py_ssize_t *>(plan.ptrs + n * FO_CALL_BUFFERS)
    plan.sizes = plan.starts + n
    plan.index_base = plan.sizes + n
    plan.dtypes = <unsigned char *>(plan.index_base + n)
    plan.staged = <char *>(plan.dtypes + n * FO_CALL_BUFFERS)
    plan.modes = <unsigned char *>(plan.staged + n)
    plan.qblock = <Py_ssize_t *>(plan.qscales + n * FO_CALL_BUFFERS)
    plan.align = 1
    cdef Py_ssize_t tensor_align, t_align
    cdef cnp.ndarray arr
    cdef bint has_q8
    try:
        for c in range(ncalls):
            call = &plan.calls[c]
            spec = plan.specs[c]
            is_list = plan.is_list[c]
            buffers = calls[c][1]
            bases = calls[c][6] if len(calls[c]) > 6 else None
            if bases is not None and len(bases) != call.ntensors:
                raise ValueError(f"{what}: {len(bases)} index bases for {call.ntensors} tensors")
            columns = plan.keep[c] if is_list else None
            mode = -1
            total = 0
            # a summing pass's norm blocks must not straddle thread blocks
            tensor_align = FO_NORM_BLOCK if call.second_rule >= 0 else 1
            plan.align = max(plan.align, tensor_align)
            for i in range(call.ntensors):
                t = call.first + i
                plan.index_base[t] = 0 if bases is None else _integer_in("index base", bases[i], 0, MAX_STEP)
                param = None
                dtypes = plan.dtypes + t * FO_CALL_BUFFERS
                plan.staged[t] = False
                has_q8 = False
                for k in range(FO_CALL_BUFFERS):
                    plan.ptrs[t * FO_CALL_BUFFERS + k] = NULL
                    plan.qscales[t * FO_CALL_BUFFERS + k] = NULL
                    plan.qblock[t * FO_CALL_BUFFERS + k] = 0
                    dtypes[k] = FO_F32
                for j in range(spec.n_buffers):
                    if not call.used & (1 << j):
                        continue
                    k = spec.slots[j]
                    a = (<list>columns[j])[i] if is_list else buffers[j]
                    # an ndarray first: isinstance against a Python class looks up __instancecheck__
                    if k != FO_PARAM and not cnp.PyArray_Check(a) and isinstance(a, _QuantizedState):
                        code = _check_quantized(plan, spec, t, k, a, param, &mode)
                        arr = <cnp.ndarray>a.scales
                        plan.qscales[t * FO_CALL_BUFFERS + k] = <float *>cnp.PyArray_DATA(arr)
                        plan.qblock[t * FO_CALL_BUFFERS + k] = a.block_size
                        if cnp.PyArray_NBYTES(arr) > 0:
                            intervals[n_intervals].start = <fo_index>cnp.PyArray_DATA(arr)
                            intervals[n_intervals].end = intervals[n_intervals].start + cnp.PyArray_NBYTES(arr)
                            intervals[n_intervals].label = n * FO_CALL_BUFFERS + t * FO_CALL_BUFFERS + k
                            n_intervals += 1
                        arr = <cnp.ndarray>a.codes
                        has_q8 = True
                    else:
                        code = _check_array(plan, t, k, a, param, &mode)
                        arr = <cnp.ndarray>a
                    dtypes[k] = code
                    plan.staged[t] = plan.staged[t] or code != FO_F32 and code != FO_F64
                    if k == FO_PARAM:
                        param = arr
                    plan.ptrs[t * FO_CALL_BUFFERS + k] = <char *>cnp.PyArray_DATA(arr)
                    if cnp.PyArray_NBYTES(arr) > 0:
                        intervals[n_intervals].start = <fo_index>cnp.PyArray_DATA(arr)
                        intervals[n_intervals].end = intervals[n_intervals].start + cnp.PyArray_NBYTES(arr)
                        intervals[n_intervals].label = t * FO_CALL_BUFFERS + k
                        n_intervals += 1
                if call.stochastic and dtypes[FO_PARAM] != FO_BF16 and dtypes[FO_PARAM] != FO_F16:
                    raise ValueError(f"{what}: stochastic_rounding=True rounds a 16-bit param; "
                                     f"{_label(plan, t, FO_PARAM)} is {param.dtype}")
                plan.modes[t] = FO_MODE_F32
                if plan.staged[t]:
                    plan.modes[t] = _mode_of(dtypes, plan.ptrs + t * FO_CALL_BUFFERS)
                    plan.staged[t] = (plan.modes[t] == _STAGED or call.stochastic
                                      or call.rule == FO_RULE_ceiling)
                if has_q8:
                    # its elements start on a boundary of every thread block (_run_pass)
                    plan.align = max(plan.align, <Py_ssize_t>FO_Q8_MAX_BLOCK)
                t_align = max(tensor_align, <Py_ssize_t>FO_Q8_MAX_BLOCK) if has_q8 else tensor_align
                total = (total + t_align - 1) // t_align * t_align
                plan.starts[t] = total
                plan.sizes[t] = cnp.PyArray_SIZE(param)
                total += plan.sizes[t]
            call.total = total
            call.is_double = mode == FO_F64
            if call.is_double:
                for i in range(call.ntensors):
                    plan.modes[call.first + i] = FO_MODE_F64

        # no two buffers of the whole plan may share memory
        if fo_find_overlap(intervals, intervals + n_intervals, n_intervals, &first, &second):
            raise ValueError(
                f"{what}: {_part_label(plan, first)} and {_part_label(plan, second)} overlap in memory; "
                f"every buffer must be a separate array")
    finally:
        free(intervals)
    _allocate_sums(plan)
    return plan


cdef int _allocate_sums(Plan plan) except -1:
    """The norm-block sums and per-tensor scalars of the calls with a second pass."""
    cdef Py_ssize_t c, t, nsums = 0
    for c in range(plan.ncalls):
        if plan.calls[c].second_rule >= 0:
            break
    else:
        return 0
    plan.tensor_h = <fo_hyper *>malloc(plan.ntensors * sizeof(fo_hyper) + plan.ntensors * sizeof(Py_ssize_t))
    if plan.tensor_h == NULL:
        raise MemoryError()
    plan.sum_first = <Py_ssize_t *>(plan.tensor_h + plan.ntensors)
    for c in range(plan.ncalls):
        for t in range(plan.calls[c].first, plan.calls[c].first + plan.calls[c].ntensors):
            plan.sum_first[t] = nsums
            if plan.calls[c].second_rule >= 0:
                nsums += (plan.sizes[t] + FO_NORM_BLOCK - 1) // FO_NORM_BLOCK
    plan.nsums = nsums
    plan.sums = <double *>malloc((2 * nsums if nsums > 0 else 1) * sizeof(double))
    if plan.sums == NULL:
        raise MemoryError()
    return 0


def plan(list calls, num_threads=None, str what="step", bint model_labels=True):
    """A :class:`Plan` of calls ``[(spec, buffers, values, step)]``: every buffer and hyperparameter checked.

    ``spec`` is a :class:`RuleSpec`; ``buffers`` its buffers in its order
    (lists of arrays, one per tensor; None for an optional buffer not used);
    ``values`` its hyperparameters in its order; ``step`` t for rules that
    count steps.  Errors raise TypeError or ValueError naming the argument,
    prefixed with ``what``; nothing is written.
    """
    return _make_plan(calls, num_threads, what, model_labels)


def step(RuleSpec spec, tuple buffers, tuple values, object step, object stochastic_rounding, object seed,
         object grad_scale, object num_threads):
    """One call of a step function (fastopt.steps makes them): check everything, then run."""
    cdef double scale = _nonneg("grad_scale", grad_scale)
    cdef long long checked_seed = _integer_in("seed", seed, 0, MAX_STEP)
    cdef bint stochastic = _switch("stochastic_rounding", stochastic_rounding)
    cdef Plan p = _make_plan([(spec, buffers, values, step, checked_seed if stochastic else None)],
                             num_threads, spec.function_name, False)
    _run(p, scale)


def ceiling_step(param, grad, *state, param_copy=None, num_threads=None):
    """The traffic ceiling: the memory traffic of a rule with len(state) state
    buffers (and a param_copy) and one add per buffer.  For benchmarks; updates
    all but grad (16-bit buffers: an integer add of their bits, so it leaves
    them garbage)."""
    if len(state) > FO_MAX_STATE:
        raise ValueError(f"ceiling_step takes at most {FO_MAX_STATE} state buffers")
    buffers = (param, grad) + state + (None,) * (FO_MAX_STATE - len(state)) + (param_copy,)
    cdef Plan p = _make_plan([(_CEILING, buffers, (), None)], num_threads, "ceiling_step", False)
    _run(p, 1.0)


# --------------------------------------------------------------------------
# the parallel region

cdef int _run(Plan plan, double grad_scale) except -1:
    if plan.done:
        raise RuntimeError("this plan has run already: make a new one for the next step")
    plan.done = True
    cdef Py_ssize_t c
    cdef _Call *call
    cdef bint second = False
    for c in range(plan.ncalls):  # (a staged tensor runs the float32 kernel on its runs)
        call = &plan.calls[c]
        call.h.grad_scale = grad_scale
        call.kernel = fo_get_kernel(call.rule, FO_MODE_F64 if call.is_double else FO_MODE_F32)
        call.active = True
        call.per_tensor = False
        # a first pass of two (LAMB's) writes no param: it sums the squares the second pass scales by
        call.sums = call.second_rule >= 0
        call.skip = (1u << FO_PARAM_COPY) if call.sums else 0
        call.read_only = (1u << FO_PARAM) if call.sums else 0
        second = second or call.sums
    _run_pass(plan)
    if not second:
        return 0
    for c in range(plan.ncalls):
        call = &plan.calls[c]
        call.active = call.second_rule >= 0
        if not call.active:
            continue
        _trust_ratios(plan, call)
        call.rule = call.second_rule
        call.kernel = fo_get_kernel(call.rule, FO_MODE_F64 if call.is_double else FO_MODE_F32)
        call.sums = False
        call.per_tensor = True
        call.skip = 1u << FO_GRAD
        call.read_only = ((1u << FO_MAX_BUFFERS) - 1) & ~(1u << FO_PARAM)
    _run_pass(plan)
    return 0


cdef void _trust_ratios(Plan plan, _Call *call) noexcept:
    """Each tensor's scalars for LAMB's second pass: step_size = lr r, r = ||param|| / ||u|| (1 where
    either is 0, NaN where they are), at most max_trust_ratio; the norms as the norm pass finishes them."""
    cdef Py_ssize_t t, nblocks
    cdef double param_norm, update_norm, ratio
    for t in range(call.first, call.first + call.ntensors):
        nblocks = (plan.sizes[t] + FO_NORM_BLOCK - 1) // FO_NORM_BLOCK
        param_norm = fo_norm_finish(plan.sums + plan.sum_first[t], nblocks, FO_NORM_L2, 2.0)
        update_norm = fo_norm_finish(plan.sums + plan.nsums + plan.sum_first[t], nblocks, FO_NORM_L2, 2.0)
        ratio = 1.0 if param_norm == 0.0 or update_norm == 0.0 else param_norm / update_norm
        if ratio > call.h.max_trust_ratio:
            ratio = call.h.max_trust_ratio
        plan.tensor_h[t] = call.h
        plan.tensor_h[t].step_size = call.h.lr * ratio


cdef int _run_pass(Plan plan) except -1:
    """One parallel region over the elements of every active call."""
    cdef Py_ssize_t c, total = 0, nt, block, nblocks = 0, b, lo
    for c in range(plan.ncalls):
        if plan.calls[c].active:
            total += plan.calls[c].total
    nt = _region_threads(plan.nthreads, total)
    cdef _Call *calls = plan.calls
    cdef _Tensors tensors
    tensors.ptrs = plan.ptrs
    tensors.starts = plan.starts
    tensors.sizes = plan.sizes
    tensors.index_base = plan.index_base
    tensors.dtypes = plan.dtypes
    tensors.staged = plan.staged
    tensors.modes = plan.modes
    tensors.qscales = plan.qscales
    tensors.qblock = plan.qblock
    tensors.sums = plan.sums
    tensors.nsums = plan.nsums
    tensors.sum_first = plan.sum_first
    tensors.tensor_h = plan.tensor_h
    cdef Py_ssize_t ncalls = plan.ncalls
    if nt <= 1:
        with nogil:
            for c in range(ncalls):
                if calls[c].active:
                    _run_elements(&calls[c], &tensors, 0, calls[c].total)
        return 0

    # blocks of every call, taken by the threads as they come
    block = max(total // (nt * BLOCKS_PER_THREAD), <Py_ssize_t>MIN_BLOCK)
    block = block - block % SHARE_ALIGN + SHARE_ALIGN
    if plan.align > 1:  # whole quantization or norm blocks per thread block (tensors start on these too)
        block = block - block % plan.align + plan.align
    for c in range(plan.ncalls):
        if plan.calls[c].active:
            nblocks += (plan.calls[c].total + block - 1) // block
    cdef Py_ssize_t *block_call = <Py_ssize_t *>malloc(2 * nblocks * sizeof(Py_ssize_t) + nt)
    if block_call == NULL:
        raise MemoryError()
    cdef Py_ssize_t *block_lo = block_call + nblocks
    cdef char *worked = <char *>(block_lo + nblocks)   # per thread: it took a block
    memset(worked, 0, nt)
    b = 0
    for c in range(plan.ncalls):
        if not plan.calls[c].active:
            continue
        lo = 0
        while lo < plan.calls[c].total:
            block_call[b] = c
            block_lo[b] = lo
            lo += block
            b += 1
    _will_run_parallel(nt)
    with nogil:
        for b in prange(nblocks, schedule="dynamic", chunksize=1, num_threads=nt):
            worked[fo_omp_thread_num()] = 1
            _run_elements(&calls[block_call[b]], &tensors, block_lo[b],
                          min(block_lo[b] + block, calls[block_call[b]].total))
    _region_done(memchr(worked, 0, nt) == NULL)
    free(block_call)
    return 0


cdef enum:
    _STAGED = 255   # _mode_of: no loop of its own


cdef unsigned char _mode_of(unsigned char *dtypes, char **ptrs) noexcept:
    """The storage mode (enum fo_mode) of a tensor with 16-bit buffers, or _STAGED."""
    cdef int k, p = dtypes[FO_PARAM], g = dtypes[FO_GRAD]
    cdef bint copy = ptrs[FO_PARAM_COPY] != NULL
    for k in range(FO_STATE, FO_MAX_BUFFERS):
        if ptrs[k] != NULL and dtypes[k] != (FO_F32 if copy else p):
            return _STAGED
    if not copy and p == g and (p == FO_BF16 or p == FO_F16):
        return FO_MODE_BF16 if p == FO_BF16 else FO_MODE_F16
    if copy and p == FO_F32 and g == dtypes[FO_PARAM_COPY]:
        return FO_MODE_MASTER_BF16 if g == FO_BF16 else FO_MODE_MASTER_F16
    return _STAGED


cdef struct _Tensors:
    char **ptrs
    Py_ssize_t *starts
    Py_ssize_t *sizes
    Py_ssize_t *index_base
    unsigned char *dtypes
    char *staged
    unsigned char *modes
    float **qscales
    Py_ssize_t *qblock
    double *sums
    Py_ssize_t nsums
    Py_ssize_t *sum_first
    fo_hyper *tensor_h


cdef void _run_elements(_Call *call, _Tensors *tensors, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """Update elements [lo, hi) of a call's tensors, taken as one concatenation."""
    cdef Py_ssize_t a = call.first, b = call.first + call.ntensors, t, piece_lo, piece_hi, end, sub_lo, sub_hi
    cdef Py_ssize_t block
    cdef double lanes[FO_N_SUMS * FO_NORM_LANES]
    # the tensor holding element lo: starts[] is ascending within the call
    while b - a > 1:
        t = (a + b) // 2
        if tensors.starts[t] <= lo:
            a = t
        else:
            b = t
    t = a
    end = call.first + call.ntensors
    while lo < hi and t < end and tensors.starts[t] < hi:
        # (lo may fall in the gap before a tensor that starts on a quantization or norm block)
        piece_lo = max(lo - tensors.starts[t], <Py_ssize_t>0)
        piece_hi = min(hi - tensors.starts[t], tensors.sizes[t])
        if piece_hi > piece_lo and not call.sums:
            _run_piece(call, tensors, t, piece_lo, piece_hi, NULL)
        elif piece_hi > piece_lo:
            # one kernel run per norm block (piece_lo is on one), its lanes finished into the block's sums
            sub_lo = piece_lo
            while sub_lo < piece_hi:
                sub_hi = min(sub_lo + FO_NORM_BLOCK, piece_hi)
                memset(lanes, 0, sizeof(lanes))
                _run_piece(call, tensors, t, sub_lo, sub_hi, lanes)
                block = tensors.sum_first[t] + sub_lo // FO_NORM_BLOCK
                tensors.sums[block] = fo_combine_lanes(lanes, FO_NORM_L2)
                tensors.sums[tensors.nsums + block] = fo_combine_lanes(lanes + FO_NORM_LANES, FO_NORM_L2)
                sub_lo = sub_hi
        lo = max(lo, tensors.starts[t] + piece_hi)
        t += 1


cdef inline void _run_piece(_Call *call, _Tensors *tensors, Py_ssize_t t, Py_ssize_t piece_lo,
                            Py_ssize_t piece_hi, double *lanes) noexcept nogil:
    """Run the call's kernel on elements [piece_lo, piece_hi) of tensor t (lanes: its FO_SUMS, or NULL)."""
    cdef char *local[FO_KERNEL_SLOTS]
    cdef int k
    cdef unsigned char *dtypes = tensors.dtypes + t * FO_CALL_BUFFERS
    cdef fo_staged_call staged
    cdef const fo_hyper *h = &tensors.tensor_h[t] if call.per_tensor else &call.h
    for k in range(FO_CALL_BUFFERS):
        local[k] = NULL if call.skip >> k & 1u else tensors.ptrs[t * FO_CALL_BUFFERS + k]
        if local[k] != NULL:
            local[k] = local[k] + piece_lo * _ITEMSIZE[dtypes[k]]
    local[FO_SUMS] = <char *>lanes
    if tensors.staged[t]:
        # the ceiling of a staged tensor moves the same bytes without converting them
        staged.kernel = NULL if call.rule == FO_RULE_ceiling else call.kernel
        staged.h = h
        for k in range(FO_CALL_BUFFERS):
            staged.dtypes[k] = dtypes[k]
        for k in range(FO_MAX_BUFFERS):
            staged.block_size[k] = tensors.qblock[t * FO_CALL_BUFFERS + k]
            staged.scales[k] = tensors.qscales[t * FO_CALL_BUFFERS + k]
            if staged.scales[k] != NULL:  # piece_lo is a multiple of the block size
                staged.scales[k] = staged.scales[k] + piece_lo // staged.block_size[k]
        staged.stochastic = call.stochastic
        staged.key = call.key
        staged.read_only = call.read_only
        fo_run_staged(&staged, piece_hi - piece_lo, local, tensors.index_base[t] + piece_lo)
    else:
        fo_get_kernel(call.rule, tensors.modes[t])(h, piece_hi - piece_lo, local)


def find_overlap(list arrays):
    """(i, j), i < j, of two arrays that share memory, or None."""
    cdef Py_ssize_t n = len(arrays), i, count = 0
    cdef fo_index first = 0, second = 0
    cdef fo_interval *intervals = <fo_interval *>malloc((2 * n if n > 0 else 1) * sizeof(fo_interval))
    if intervals == NULL:
        raise MemoryError()
    try:
        for i in range(n):
            a = <cnp.ndarray?>arrays[i]
            if cnp.PyArray_NBYTES(a) > 0:
                intervals[count].start = <fo_index>cnp.PyArray_DATA(a)
                intervals[count].end = intervals[count].start + cnp.PyArray_NBYTES(a)
                intervals[count].label = i
                count += 1
        if fo_find_overlap(intervals, intervals + count, count, &first, &second):
            return (min(first, second), max(first, second))
        return None
    finally:
        free(intervals)
