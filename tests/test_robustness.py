"""Promises tried as an adversarial caller would: no crash, no hang, no half-applied step,
clear errors that name the argument, and torch's results where arithmetic is at its edges."""

import math
import textwrap

import numpy as np
import pytest

import fastopt
import optional_packages
from child_python import run_python
from fastopt import optim, reference


def snapshot(arrays):
    return [a.copy() for a in arrays]


def unchanged(arrays, before):
    return all(a.tobytes() == b.tobytes() for a, b in zip(arrays, before))


# --------------------------------------------------------------------------
# sequences that lie about their length

class LongList(list):
    def __len__(self):
        return 1000


class ShortTuple(tuple):
    def __len__(self):
        return 0


@pytest.mark.parametrize("kind", [LongList, ShortTuple])
def test_a_sequence_whose_len_lies_is_read_by_its_items(kind):
    """The count comes from the items a sequence yields, never from its __len__."""
    params = [np.ones(4), np.ones(3)]
    grads = [np.ones(4), np.ones(3)]
    fastopt.sgd_step(kind(params), kind(grads), lr=0.5)
    assert all(np.array_equal(p, np.full_like(p, 0.5)) for p in params)
    m = [np.zeros(4), np.zeros(3)]
    v = [np.zeros(4), np.zeros(3)]
    fastopt.adam_step(kind(params), grads, kind(m), v, step=1)
    ref = [np.full(4, 0.5), np.full(3, 0.5)]
    reference.adam_step(ref, grads, [np.zeros(4), np.zeros(3)], [np.zeros(4), np.zeros(3)], step=1)
    assert all(np.array_equal(a, b) for a, b in zip(params, ref))


def test_a_sequence_of_other_length_than_its_items_is_measured_by_them():
    class Lying(list):
        def __len__(self):
            return 1  # yields 2 items
    params, grads = [np.ones(2), np.ones(2)], [np.ones(2)]
    with pytest.raises(ValueError, match="grad has 1 tensors but param has 2"):
        fastopt.sgd_step(Lying(params), grads, lr=0.1)
    assert all(np.array_equal(p, np.ones(2)) for p in params)


# --------------------------------------------------------------------------
# fork after another library's OpenMP threads ran

FORK_AFTER_TORCH = textwrap.dedent("""
    import os, numpy as np, fastopt, torch
    torch.set_num_threads(2)
    torch.ones(4_000_000).exp_().sum()   # torch's OpenMP pool starts
    p, g = np.ones(2_000_000, np.float32), np.ones(2_000_000, np.float32)
    pid = os.fork()
    if pid == 0:
        fastopt.sgd_step(p, g, lr=0.5, num_threads=2)
        os._exit(0 if p[0] == 0.5 else 3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    print("ok")
""")


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no fork on this platform")
def test_a_child_forked_after_torch_ran_parallel_work_does_not_hang():
    optional_packages.importorskip("torch")
    assert run_python(["-c", FORK_AFTER_TORCH], timeout=120).stdout.strip().endswith("ok")


# --------------------------------------------------------------------------
# a step that would fail part-way fails before its first write

def _two_group_adam():
    params = [np.ones(5, np.float32), np.ones((3, 4), np.float32), np.ones(2, np.float32)]
    opt = optim.Adam([{"params": params[:1]}, {"params": params[1:]}], lr=0.1, amsgrad=True)
    grads = [np.ones_like(p) for p in params]
    opt.step(grads)
    return opt, grads


def _replace_param(opt, replacement):
    opt.param_groups[1]["params"][0] = replacement


@pytest.mark.parametrize("spoil", [
    lambda opt: _replace_param(opt, np.ones((4, 3), np.float32)),                 # other shape
    lambda opt: _replace_param(opt, np.ones((3, 4), np.float64)),                 # other dtype
    lambda opt: _replace_param(opt, np.asfortranarray(np.ones((3, 4), np.float32))),  # memory order
    lambda opt: opt.state[1]["exp_avg"].__setitem__(0, np.zeros((3, 4), np.float64)),   # state dtype
    lambda opt: opt.state[1]["exp_avg_sq"].__setitem__(1, np.zeros(3, np.float32)),     # state shape
    lambda opt: opt.state[1]["exp_avg"].__setitem__(1, opt.param_groups[1]["params"][1]),  # aliases a param
    lambda opt: opt.param_groups[1].__setitem__("eps", -1.0),                     # a hyperparameter
    lambda opt: opt.param_groups[1].__setitem__("amsgrad", "yes"),                # a switch
    lambda opt: opt.param_groups[1].__setitem__("betas", 0.9),                    # not a pair
], ids=["param-shape", "param-dtype", "param-order", "state-dtype", "state-shape", "state-aliasing",
        "eps", "switch", "betas"])
def test_a_spoiled_later_group_leaves_every_group_untouched(spoil):
    opt, grads = _two_group_adam()
    spoil(opt)
    arrays = opt.params + [b for state in opt.state for name, buffers in state.items() if name != "step"
                           for b in buffers]
    before, steps = snapshot(arrays), [s["step"] for s in opt.state]
    with pytest.raises((TypeError, ValueError)):
        opt.step(grads)
    assert unchanged(arrays, before)
    assert [s["step"] for s in opt.state] == steps


# --------------------------------------------------------------------------
# arithmetic at the edge: huge gradients

@pytest.mark.parametrize("name, dtype, g", [
    ("adam_step", np.float32, 3e19), ("adamw_step", np.float32, 3e19), ("adam_step", np.float64, 2e154),
    ("rmsprop_step", np.float32, 3e19), ("rmsprop_step", np.float64, 2e154)])
def test_huge_gradients_whose_square_overflows_still_step(name, dtype, g):
    """(1 − β)·g·g is computed as ((1 − β)·g)·g, as torch does: finite where g·g is not."""
    p = np.zeros(2, dtype)
    grad = np.array([g, -g], dtype)
    state = [np.zeros(2, dtype) for _ in range(2 if name != "rmsprop_step" else 1)]
    twin = [p.copy(), grad.copy()] + [s.copy() for s in state]
    kwargs = dict(lr=0.01) if name == "rmsprop_step" else dict(lr=0.01, step=1)
    for t in range(1, 4):
        if "step" in kwargs:
            kwargs["step"] = t
        getattr(fastopt, name)(p, grad, *state, **kwargs)
        getattr(reference, name)(*twin, **kwargs)
    assert np.all(np.isfinite(p)) and np.all(p != 0) and np.array_equal(p, twin[0])
    if name != "rmsprop_step":  # Adam's step is lr per step for a constant gradient
        np.testing.assert_allclose(p, [-0.03, 0.03], rtol=1e-3)  # AdamW: less its weight decay


def test_huge_gradients_match_torch():
    torch = optional_packages.importorskip("torch")
    p = torch.zeros(2, requires_grad=True)
    opt = torch.optim.Adam([p], lr=0.01)
    ours = optim.Adam([np.zeros(2, np.float32)], lr=0.01)
    for _ in range(3):
        p.grad = torch.tensor([3e19, -3e19])
        opt.step()
        ours.step([np.array([3e19, -3e19], np.float32)])
    np.testing.assert_allclose(ours.params[0], p.detach().numpy(), rtol=1e-6)


# --------------------------------------------------------------------------
# numbers too large for C, and switches that are not bools

def _adam_args():
    return [np.ones(3), np.ones(3), np.zeros(3), np.zeros(3)]


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(step=2**63), ValueError, "step must be an integer in"),
    (dict(step=2**70), ValueError, "step must be an integer in"),
    (dict(num_threads=2**64), ValueError, "num_threads must be an integer in"),
    (dict(lr=10**400), ValueError, "lr must be finite"),
    (dict(weight_decay=10**400), ValueError, "weight_decay must be finite"),
    (dict(eps=-10**400), ValueError, "eps must be finite"),
    (dict(grad_scale=10**400), ValueError, "grad_scale must be finite"),
    (dict(maximize="no"), TypeError, "maximize must be a bool"),
    (dict(amsgrad=1), TypeError, "amsgrad must be a bool"),
    (dict(maximize=np.array([1, 0])), TypeError, "maximize must be a bool"),
])
def test_out_of_range_arguments_raise_errors_naming_them(kwargs, error, match):
    args = _adam_args()
    before = snapshot(args)
    with pytest.raises(error, match=match):
        fastopt.adam_step(*args, **dict(dict(step=1), **kwargs))
    assert unchanged(args, before)


def test_sgd_switches_are_checked_as_bools():
    p, g, b = np.ones(3), np.ones(3), np.zeros(3)
    with pytest.raises(TypeError, match="nesterov must be a bool"):
        fastopt.sgd_momentum_step(p, g, b, step=1, lr=0.1, momentum=0.9, nesterov=np.array([1, 0]))
    with pytest.raises(TypeError, match="centered must be a bool"):
        fastopt.rmsprop_step(p, g, b, centered="yes")
    assert np.array_equal(p, np.ones(3))


def test_momentum_too_large_for_a_double_names_it():
    p = np.ones(3)
    with pytest.raises(ValueError, match="momentum must be finite"):
        optim.SGD([p], lr=0.1, momentum=10**400)


def test_a_switch_changed_on_a_group_is_checked_at_the_next_step():
    opt = optim.Adam([np.zeros(3)], lr=0.1)
    opt.param_groups[0]["maximize"] = "no"
    with pytest.raises(TypeError, match="maximize must be a bool"):
        opt.step([np.ones(3)])
    assert opt.state[0]["step"] == 0


def test_set_num_threads_too_large_names_it():
    with pytest.raises(ValueError, match="num_threads must be an integer in"):
        fastopt.set_num_threads(2**64)


# --------------------------------------------------------------------------
# checkpoints that would break the optimizer later

@pytest.mark.parametrize("step", [2**63, 2**70, 2**63 - 1])
def test_a_checkpoint_with_a_step_count_too_large_is_refused(step):
    opt = optim.Adam([np.zeros(3)], lr=0.1)
    opt.step([np.ones(3)])
    saved = opt.state_dict()
    saved["groups.0.step"] = step
    with pytest.raises(ValueError, match="groups.0.step"):
        opt.load_state_dict(saved)
    assert opt.state[0]["step"] == 1
    assert opt.step([np.ones(3)])


def test_the_largest_step_count_a_checkpoint_may_hold_still_steps():
    opt = optim.Adam([np.zeros(3)], lr=0.1)
    saved = opt.state_dict()
    saved["groups.0.step"] = optim.MAX_SAVED_STEP
    opt.load_state_dict(saved)
    assert opt.step([np.ones(3)]) and math.isfinite(opt.params[0][0])
