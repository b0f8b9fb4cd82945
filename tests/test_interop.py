"""Zero-copy interop: a step on a NumPy view of someone else's memory updates
that memory, and gives the reference's bits.

Each test builds the four Adam buffers in some foreign memory (torch tensors,
DLPack exports, memory-mapped files, slices of one flat buffer), steps them
with fastopt through NumPy views, and reads the result back through the
owner, against ``fastopt.reference`` run on plain copies.
"""

import math

import numpy as np
import pytest

import fastopt
from fastopt import reference
import optional_packages

try:
    import torch
except ImportError:
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason=optional_packages.reason("torch"))

# weight decay on and step > 1, so every term of the update is exercised
ADAM = dict(step=3, lr=1e-2, weight_decay=1e-2)
BUFFERS = ("param", "grad", "exp_avg", "exp_avg_sq")
DTYPES = [np.float32, np.float64]
# np.from_dlpack gives writeable arrays from NumPy 2.3 on; before, read-only ones
DLPACK_WRITEABLE = np.lib.NumpyVersion(np.__version__) >= "2.3.0"
needs_writeable_dlpack = pytest.mark.skipif(not DLPACK_WRITEABLE,
                                            reason="np.from_dlpack is read-only before NumPy 2.3")


def initial_buffers(shape, dtype, seed=0):
    """param, grad, exp_avg, exp_avg_sq as fresh NumPy arrays."""
    rng = np.random.default_rng(seed)
    param, grad, exp_avg = (rng.standard_normal(shape).astype(dtype) for _ in range(3))
    exp_avg_sq = np.abs(rng.standard_normal(shape)).astype(dtype)
    return [param, grad, exp_avg, exp_avg_sq]


def expected_after_step(buffers):
    copies = [np.array(b, copy=True) for b in buffers]
    reference.adam_step(*copies, **ADAM)
    return copies


def assert_same_bits(actual, expected, names=BUFFERS):
    for name, a, e in zip(names, actual, expected):
        a = np.asarray(a)
        assert (a.dtype, a.shape) == (e.dtype, e.shape), name
        np.testing.assert_array_equal(a, e, err_msg=name)


# --------------------------------------------------------------------------
# torch

TORCH_TO_NUMPY = [
    pytest.param(lambda t: t.numpy(), id="Tensor.numpy"),
    pytest.param(lambda t: np.asarray(t), id="np.asarray"),
    pytest.param(lambda t: np.from_dlpack(t), id="np.from_dlpack", marks=needs_writeable_dlpack),
]


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("convert", TORCH_TO_NUMPY)
def test_torch_tensors_are_updated_in_place(convert, dtype):
    initial = initial_buffers((37, 29), dtype)
    tensors = [torch.tensor(a) for a in initial]  # torch owns this memory
    views = [convert(t) for t in tensors]
    assert all(v.ctypes.data == t.data_ptr() for v, t in zip(views, tensors)), "not a view"
    fastopt.adam_step(*views, **ADAM)
    # read back through torch, not through the views
    assert_same_bits([t.clone().numpy() for t in tensors], expected_after_step(initial))


@needs_torch
def test_torch_model_parameters_are_updated_in_place():
    """A training step: torch computes gradients, fastopt updates the model."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.Tanh(), torch.nn.Linear(64, 3))
    x, y = torch.randn(16, 20), torch.randn(16, 3)
    torch.nn.functional.mse_loss(model(x), y).backward()
    tensors = list(model.parameters())
    params = [p.detach().numpy() for p in tensors]
    grads = [p.grad.numpy() for p in tensors]
    states = [[np.zeros_like(p) for p in params] for _ in range(2)]
    expected = [[np.array(b) for b in buffers] for buffers in (params, grads, *states)]
    reference.adam_step(*expected, step=1, lr=1e-3)
    fastopt.adam_step(params, grads, *states, step=1, lr=1e-3)
    names = [name for name, _ in model.named_parameters()]
    assert_same_bits([t.detach().clone().numpy() for t in tensors], expected[0], names)


@needs_torch
def test_transposed_torch_tensors_work_as_fortran_order():
    initial = initial_buffers((23, 41), np.float32)
    tensors = [torch.tensor(a) for a in initial]
    views = [t.T.numpy() for t in tensors]  # Fortran-contiguous views
    assert all(v.flags.f_contiguous and not v.flags.c_contiguous for v in views)
    fastopt.adam_step(*views, **ADAM)
    expected = expected_after_step([a.T for a in initial])
    assert_same_bits([t.clone().numpy().T for t in tensors], expected)


@needs_torch
def test_strided_torch_views_are_refused_untouched():
    tensors = [torch.tensor(a) for a in initial_buffers((8, 12), np.float32)]
    before = [t.clone() for t in tensors]
    with pytest.raises(ValueError, match="contiguous"):
        fastopt.adam_step(*[t[:, ::2].numpy() for t in tensors], **ADAM)
    assert all(torch.equal(t, b) for t, b in zip(tensors, before))


@needs_torch
def test_16_bit_tensors_are_stepped_in_place():
    """float16 through Tensor.numpy(); bfloat16, which Tensor.numpy() refuses, through a
    same-size integer view reinterpreted as ml_dtypes.bfloat16: either way torch's memory."""
    import ml_dtypes

    for dtype, view in ((torch.float16, lambda t: t.numpy()),
                        (torch.bfloat16, lambda t: t.view(torch.int16).numpy().view(ml_dtypes.bfloat16))):
        tensors = [torch.randn(300, dtype=torch.float32).to(dtype) for _ in BUFFERS]
        tensors[3].abs_()  # a second moment
        twins = [view(t).copy() for t in tensors]
        fastopt.adam_step(*[view(t) for t in tensors], **ADAM)
        reference.adam_step(*twins, **ADAM)
        for t, twin in zip(tensors, twins):
            assert np.array_equal(view(t).view(np.uint16), twin.view(np.uint16))


# --------------------------------------------------------------------------
# DLPack without torch: NumPy exporting to NumPy


@needs_writeable_dlpack
@pytest.mark.parametrize("dtype", DTYPES)
def test_dlpack_views_are_updated_in_place(dtype):
    owners = initial_buffers((513,), dtype)
    initial = [a.copy() for a in owners]
    views = [np.from_dlpack(a) for a in owners]
    assert all(np.shares_memory(v, a) for v, a in zip(views, owners))
    fastopt.adam_step(*views, **ADAM)
    assert_same_bits(owners, expected_after_step(initial))


def test_read_only_dlpack_views_are_refused_untouched():
    """A read-only export (or, before NumPy 2.3, any import) must not be written."""
    owners = initial_buffers((64,), np.float64)
    if DLPACK_WRITEABLE:
        owners[0].flags.writeable = False
    before = [a.copy() for a in owners]
    views = [np.from_dlpack(a) for a in owners]
    assert not views[0].flags.writeable
    with pytest.raises(ValueError, match="param is updated in place and must be writeable"):
        fastopt.adam_step(*views, **ADAM)
    assert_same_bits(owners, before)


# --------------------------------------------------------------------------
# memory-mapped files


def _memmaps(tmp_path, arrays, mode="r+"):
    maps = []
    for name, a in zip(BUFFERS, arrays):
        path = tmp_path / f"{name}.bin"
        if not path.exists():
            a.tofile(path)
        maps.append(np.memmap(path, dtype=a.dtype, mode=mode, shape=a.shape))
    return maps


@pytest.mark.parametrize("dtype", DTYPES)
def test_memmap_files_are_updated_in_place(tmp_path, dtype):
    initial = initial_buffers((65, 33), dtype)
    maps = _memmaps(tmp_path, initial)
    maps[1] = np.memmap(tmp_path / "grad.bin", dtype=dtype, mode="r", shape=initial[1].shape)  # read-only grad is fine
    fastopt.adam_step(*maps, **ADAM)
    for m in maps:
        m.flush()
    del maps
    on_disk = [np.fromfile(tmp_path / f"{name}.bin", dtype=dtype).reshape(initial[0].shape)
               for name in BUFFERS]
    assert_same_bits(on_disk, expected_after_step(initial))


def test_read_only_memmap_state_is_refused_untouched(tmp_path):
    initial = initial_buffers((100,), np.float32)
    maps = _memmaps(tmp_path, initial)
    maps[2] = np.memmap(tmp_path / "exp_avg.bin", dtype=np.float32, mode="r", shape=(100,))
    with pytest.raises(ValueError, match="exp_avg is updated in place and must be writeable"):
        fastopt.adam_step(*maps, **ADAM)
    assert_same_bits([np.fromfile(tmp_path / f"{n}.bin", dtype=np.float32) for n in BUFFERS], initial)


# --------------------------------------------------------------------------
# views of one flat buffer (a model whose parameters live in one allocation)

# one large tensor so two threads split the call, shares spanning tensors
SHAPES = [(300, 257), (1,), (7, 5), (33,), (4, 4, 3)]


def carve(flat, shapes):
    """Contiguous views of consecutive slices of `flat`, one per shape."""
    views, offset = [], 0
    for shape in shapes:
        size = math.prod(shape)
        views.append(flat[offset:offset + size].reshape(shape))
        offset += size
    return views


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_threads", [1, 2])
def test_views_of_a_flat_buffer_update_the_buffer(dtype, num_threads):
    total = sum(math.prod(s) for s in SHAPES)
    initial = initial_buffers((total,), dtype)
    flats = [a.copy() for a in initial]
    fastopt.adam_step(*[carve(f, SHAPES) for f in flats], **ADAM, num_threads=num_threads)
    # the list call on the views equals one reference step on the whole buffers
    assert_same_bits(flats, expected_after_step(initial))


def test_overlapping_views_are_refused_untouched():
    flats = initial_buffers((100,), np.float32)
    before = [f.copy() for f in flats]
    views = [[f[0:50], f[49:100]] for f in flats]  # element 49 is in both params
    with pytest.raises(ValueError, match="overlap"):
        fastopt.adam_step(*views, **ADAM)
    assert_same_bits(flats, before)
