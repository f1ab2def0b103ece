"""Fork-and-compare demo: prune a CNN while it trains, go back, train again.

Trains a small convolutional network on scikit-learn's bundled handwritten
digits (8x8 images, no download) on the CPU, and versions every epoch with
mvcstore:

1. Session ``a`` trains 12 epochs under a structured pruning plan: every 2
   epochs, 20% of the output channels with the smallest L1 norm are removed
   from each convolution, so the model graph really shrinks.
2. Session ``b`` is forked from ``a#6`` (nothing is copied), the training state
   of that epoch is resumed bit for bit (weights, optimizer momentum, RNG
   states, counters) with ``mvcstore.torch.resume``, and it trains to epoch 12
   under another plan (10% every 3 epochs) and another learning rate.
3. The two sessions are compared: ``mvc log --all --graph``, the final accuracy
   and size of each, the best epoch of both, and how many metric documents the
   fork shares with its parent instead of copying.

Run it as ``python examples/demo_digits.py --dir DIR``; it starts from a fresh
repository in ``DIR/.mvc`` every time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

import mvcstore
import mvcstore.torch as mvt

EPOCHS = 12
FORK_AT = 6
BATCH_SIZE = 64
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
SEED = 0


@dataclass(frozen=True)
class Plan:
    """A structured pruning plan, kept with every epoch it is in force for.

    Before every ``every``-th epoch, ``share`` of each convolution's output
    channels are removed: those whose weights have the smallest L1 norm.
    """

    id: str
    share: float
    every: int

    def as_params(self) -> dict[str, object]:
        return {
            "id": self.id,
            "method": "structured-l1",
            "share": self.share,
            "every": self.every,
            "layers": [conv for conv, _, _ in PRUNABLE],
        }

    def prunes_before(self, epoch: int) -> bool:
        return epoch > 1 and (epoch - 1) % self.every == 0


class DigitsNet(nn.Module):
    """Two conv blocks and a linear classifier for 1x8x8 images."""

    def __init__(self, width1: int = 16, width2: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width1, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width1)
        self.conv2 = nn.Conv2d(width1, width2, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(width2)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(width2 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.pool(F.relu(self.bn2(self.conv2(x))))
        return self.fc(torch.flatten(x, 1))


PRUNABLE = [("conv1", "bn1", "conv2"), ("conv2", "bn2", "fc")]
"""Each pruned convolution, its batch norm, and the layer that reads it."""


# -- pruning ---------------------------------------------------------------


def _sliced_conv(
    conv: nn.Conv2d,
    *,
    keep_out: torch.Tensor | None = None,
    keep_in: torch.Tensor | None = None,
) -> nn.Conv2d:
    weight = conv.weight.detach()
    bias = conv.bias.detach() if conv.bias is not None else None
    if keep_out is not None:
        weight = weight[keep_out]
        bias = bias[keep_out] if bias is not None else None
    if keep_in is not None:
        weight = weight[:, keep_in]
    new = nn.Conv2d(
        weight.shape[1],
        weight.shape[0],
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        bias=bias is not None,
    )
    new.weight.data.copy_(weight)
    if bias is not None:
        new.bias.data.copy_(bias)
    return new


def _sliced_bn(bn: nn.BatchNorm2d, keep: torch.Tensor) -> nn.BatchNorm2d:
    new = nn.BatchNorm2d(len(keep), eps=bn.eps, momentum=bn.momentum)
    new.weight.data.copy_(bn.weight.detach()[keep])
    new.bias.data.copy_(bn.bias.detach()[keep])
    new.running_mean.copy_(bn.running_mean[keep])
    new.running_var.copy_(bn.running_var[keep])
    new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new


def _sliced_linear(fc: nn.Linear, keep: torch.Tensor, channels: int) -> nn.Linear:
    # flatten puts each channel's spatial positions side by side
    per_channel = fc.in_features // channels
    columns = (keep[:, None] * per_channel + torch.arange(per_channel)).reshape(-1)
    new = nn.Linear(len(columns), fc.out_features)
    new.weight.data.copy_(fc.weight.detach()[:, columns])
    new.bias.data.copy_(fc.bias.detach())
    return new


def prune(model: DigitsNet, share: float) -> list[int]:
    """Remove ``share`` of each conv layer's output channels (lowest L1 norm).

    The conv, its batch norm and the next layer's inputs are rebuilt smaller,
    so the model graph changes. Returns the new widths.
    """
    widths = []
    for conv_name, bn_name, next_name in PRUNABLE:
        conv = getattr(model, conv_name)
        channels = conv.out_channels
        drop = min(round(channels * share), channels - 1)
        norms = conv.weight.detach().abs().sum(dim=(1, 2, 3))
        keep = torch.sort(
            torch.argsort(norms, descending=True)[: channels - drop]
        ).values
        setattr(model, conv_name, _sliced_conv(conv, keep_out=keep))
        setattr(model, bn_name, _sliced_bn(getattr(model, bn_name), keep))
        nxt = getattr(model, next_name)
        if isinstance(nxt, nn.Conv2d):
            setattr(model, next_name, _sliced_conv(nxt, keep_in=keep))
        else:
            setattr(model, next_name, _sliced_linear(nxt, keep, channels))
        widths.append(len(keep))
    return widths


# -- training --------------------------------------------------------------


@dataclass
class Data:
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor


def load_data() -> Data:
    digits = load_digits()
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.tensor(np.random.default_rng(SEED).permutation(len(labels)))
    split = int(len(order) * 0.8)
    train, val = order[:split], order[split:]
    return Data(images[train], labels[train], images[val], labels[val])


def count_params(model: nn.Module) -> int:
    return sum(param.numel() for param in model.parameters())


def evaluate(model: nn.Module, data: Data) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        logits = model(data.val_x)
    model.train()
    loss = F.cross_entropy(logits, data.val_y).item()
    accuracy = (logits.argmax(1) == data.val_y).float().mean().item()
    return accuracy, loss


def new_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        model.parameters(), lr=lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
    )


def train(
    session: mvcstore.Session,
    model: DigitsNet,
    data: Data,
    *,
    plan: Plan,
    lr: float,
    first_epoch: int,
    first_step: int,
    seed: int,
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Train epochs ``first_epoch``..EPOCHS, committing each one.

    A resumed optimizer keeps its momentum and takes the new learning rate.
    """
    if optimizer is None:
        optimizer = new_optimizer(model, lr)
    for group in optimizer.param_groups:
        group["lr"] = lr
    step = first_step
    for epoch in range(first_epoch, EPOCHS + 1):
        message = ""
        if plan.prunes_before(epoch):
            widths = prune(model, plan.share)
            # the old momentum belongs to tensors that no longer exist
            optimizer = new_optimizer(model, lr)
            message = f"pruned to {widths[0]}/{widths[1]} channels"

        shuffle = torch.Generator().manual_seed(seed * 1000 + epoch)
        order = torch.randperm(len(data.train_y), generator=shuffle)
        for start in range(0, len(order), BATCH_SIZE):
            batch = order[start : start + BATCH_SIZE]
            optimizer.zero_grad()
            loss = F.cross_entropy(model(data.train_x[batch]), data.train_y[batch])
            loss.backward()
            optimizer.step()
            session.log_metrics(step, train_loss=loss.item())
            step += 1

        accuracy, val_loss = evaluate(model, data)
        size = count_params(model)
        committed = mvt.commit(
            session,
            model,
            optimizer=optimizer,
            metrics={"val_acc": accuracy, "val_loss": val_loss, "params": size},
            params={
                "lr": lr,
                "batch_size": BATCH_SIZE,
                "momentum": MOMENTUM,
                "weight_decay": WEIGHT_DECAY,
                "seed": seed,
            },
            pruning_plan=plan.as_params(),
            message=message or None,
            step=step - 1,
        )
        print(
            f"  {session.name}#{epoch:<2}  val_acc {accuracy:.4f}  val_loss"
            f" {val_loss:.4f}  params {size:>6,}  graph"
            f" {committed.graph.short() if committed.graph else '-'}"
            + (f"  ({message})" if message else "")
        )


# -- reporting -------------------------------------------------------------


def show_log(repo_dir: Path) -> bool:
    """Print ``mvc log --all --graph``; return whether the command worked."""
    mvc = Path(sys.executable).parent / "mvc"
    if not mvc.exists():
        print(f"(the mvc command is not installed next to {sys.executable})")
        return False
    env = {**os.environ, "MVC_DIR": str(repo_dir)}
    done = subprocess.run(
        [str(mvc), "log", "--all", "--graph"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    print(done.stdout, end="")
    if done.returncode != 0:
        print(f"(mvc log exited with {done.returncode}: {done.stderr.strip()})")
        return False
    return True


def compare(repo: mvcstore.Repo) -> None:
    print("\nfinal epochs")
    header = ("session", "epoch", "val_acc", "params", "best val_acc")
    print("  {:<8} {:<6} {:>8} {:>8} {:>13}".format(*header))
    for name in ("a", "b"):
        head = repo.resolve(name)
        best = repo.metric_stats(name, names=["val_acc"])["val_acc"].max
        print(
            f"  {name:<8} #{head.number:<5} {head.summary['val_acc']:>8.4f}"
            f" {int(head.summary['params']):>8,} {best:>13.4f}"
        )

    # every epoch once, whichever session committed it
    epochs = list(repo.log(all_refs=True))
    best = max(
        epochs, key=lambda e: (e.summary["val_acc"], -e.summary["params"], e.number)
    )
    assert best.id is not None
    print(
        "\nbest epoch of both sessions by val_acc (ties go to the smaller model):"
        f" {best.session}#{best.number}"
        f" ({best.id.short()}), val_acc {best.summary['val_acc']:.4f}"
        f" with {int(best.summary['params']):,} params"
    )

    a_view, b_view = repo.view_uids("a"), repo.view_uids("b")
    b_docs = len(repo.metrics("b"))
    shared = repo.metrics_index.count(a_view & b_view)
    stored = repo.metrics_index.count(a_view | b_view)
    a_docs = repo.metrics_index.count(a_view)
    print(
        f"\nmetric documents: b's view holds {b_docs}, of which {shared} are a's"
        f" epochs 1-{FORK_AT}, shared and not copied;"
        f" a's view holds {a_docs}, and the index stores {stored}"
        f" = {a_docs} + {b_docs} - {shared} documents for both"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="demo folder")
    args = parser.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(2)

    root: Path = args.dir
    repo_dir = root / ".mvc"
    if repo_dir.exists():
        shutil.rmtree(repo_dir)
    root.mkdir(parents=True, exist_ok=True)
    repo = mvcstore.Repo.init(root)
    data = load_data()
    print(
        f"digits: {len(data.train_y)} training and {len(data.val_y)} validation"
        f" images; repository {repo_dir}"
    )

    plan_a = Plan(id="l1-20pct-every-2", share=0.2, every=2)
    lr_a = 0.05
    print(f"\nsession a: lr {lr_a}, plan {plan_a.id}")
    torch.manual_seed(SEED)
    model = DigitsNet()
    train(
        repo.session("a"),
        model,
        data,
        plan=plan_a,
        lr=lr_a,
        first_epoch=1,
        first_step=0,
        seed=SEED,
    )

    fork_rev = f"a#{FORK_AT}"
    session_b = repo.fork("b", at=fork_rev)
    fork_epoch = repo.resolve(fork_rev)
    # the whole training state of a#6: weights (reshaped to its pruned graph),
    # the optimizer's momentum, the RNG states and the counters
    resumed = mvt.resume(
        repo, fork_rev, DigitsNet, lambda model: new_optimizer(model, lr_a)
    )
    restored = resumed.model
    accuracy, val_loss = evaluate(restored, data)
    identical = (accuracy, val_loss) == (
        fork_epoch.summary["val_acc"],
        fork_epoch.summary["val_loss"],
    )
    plan_b = Plan(id="l1-10pct-every-3", share=0.1, every=3)
    print(
        f"\nsession b: forked at {fork_rev}, restored {count_params(restored):,}"
        f" params, val_acc {accuracy:.4f}"
        f" ({'identical to' if identical else 'DIFFERENT from'} the committed"
        f" epoch); lr 0.02, plan {plan_b.id}"
    )
    train(
        session_b,
        restored,
        data,
        plan=plan_b,
        lr=0.02,
        first_epoch=resumed.epoch + 1,
        first_step=resumed.step + 1,
        seed=SEED + 1,
        optimizer=resumed.optimizer,
    )

    print("\nmvc log --all --graph")
    log_ok = show_log(repo_dir)
    compare(repo)
    report = repo.fsck()
    repo.close()
    print(
        f"\nfsck: {report.objects} objects, {'ok' if report.ok else 'PROBLEMS'};"
        f" finished in {time.perf_counter() - started:.1f} s"
    )
    return 0 if report.ok and identical and log_ok else 1


if __name__ == "__main__":
    sys.exit(main())
