"""ZeroRedundancyOptimizer(optimizer_class=fastopt.torch.AdamW) over gloo, against the unsharded run.

``python -m torch_zero_worker WORLD_SIZE DIRECTORY`` (from tests/, with this tree's fastopt on
PYTHONPATH; tests/test_torch.py runs it) starts WORLD_SIZE processes on this machine, which meet
through a file in DIRECTORY.  Every rank trains the same model on the same batches three ways: sharded
by ZeroRedundancyOptimizer over fastopt.torch.AdamW (with and without parameters_as_bucket_view),
unsharded with fastopt.torch.AdamW, and with torch.optim.AdamW.  The sharded run must equal the
unsharded fastopt run bit for bit (the same kernels on the same values) and torch's to rounding; its
consolidated checkpoint must resume in torch.optim.AdamW.  Any mismatch fails the rank, and the run.
"""

import copy
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.optim import ZeroRedundancyOptimizer

import fastopt.torch as fot

HYPER = dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=0.1)


def make_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.Tanh(), torch.nn.Linear(32, 16), torch.nn.Tanh(),
                               torch.nn.Linear(16, 3)).double()


def make_batches(count, seed):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 10, generator=generator, dtype=torch.float64),
             torch.randn(8, 3, generator=generator, dtype=torch.float64)) for _ in range(count)]


def train(model, opt, scheduler, batches):
    for x, y in batches:
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()


def check(rank, what, ok):
    if not ok:
        raise AssertionError(f"rank {rank}: {what}")


def worker(rank, world_size, directory):
    dist.init_process_group("gloo", init_method=f"file://{directory}/rendezvous", rank=rank,
                            world_size=world_size)
    torch.set_num_threads(1)
    for bucket_view in (False, True):
        models = [make_model() for _ in range(3)]
        sharded = ZeroRedundancyOptimizer(models[0].parameters(), optimizer_class=fot.AdamW,
                                          parameters_as_bucket_view=bucket_view, num_threads=1, **HYPER)
        unsharded = fot.AdamW(models[1].parameters(), num_threads=1, **HYPER)
        reference = torch.optim.AdamW(models[2].parameters(), **HYPER)
        check(rank, "the local optimizer is fastopt's", isinstance(sharded.optim, fot.AdamW))
        batches = make_batches(6, seed=1)
        for model, opt in zip(models, (sharded, unsharded, reference)):
            train(model, opt, torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5), batches)
        for a, b, c in zip(*(m.parameters() for m in models)):
            check(rank, f"bucket_view={bucket_view}: sharded equals unsharded", torch.equal(a, b))
            check(rank, f"bucket_view={bucket_view}: sharded is torch's to rounding",
                  torch.allclose(a, c, rtol=1e-10, atol=1e-13))
        owned = sum(len(g["params"]) for g in sharded.optim.param_groups)
        check(rank, "state only for this rank's params", len(sharded.optim.state) == owned < 6)
        sharded.consolidate_state_dict(to=0)
        if rank == 0:
            resumed_model = copy.deepcopy(models[0])
            resumed = torch.optim.AdamW(resumed_model.parameters(), **HYPER)
            resumed.load_state_dict(sharded.state_dict())
            more = make_batches(3, seed=2)
            unsharded.param_groups[0]["lr"] = resumed.param_groups[0]["lr"]
            train(resumed_model, resumed, None, more)
            train(models[1], unsharded, None, more)
            for a, b in zip(resumed_model.parameters(), models[1].parameters()):
                check(rank, "the consolidated checkpoint resumes in torch.optim.AdamW",
                      torch.allclose(a, b, rtol=1e-10, atol=1e-13))
        dist.barrier()
    if rank == 0:
        print(f"{world_size} ranks: sharded equals unsharded (with and without bucket views); "
              f"its checkpoint resumes in torch.optim.AdamW", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    size = int(sys.argv[1])
    mp.spawn(worker, args=(size, sys.argv[2]), nprocs=size)
