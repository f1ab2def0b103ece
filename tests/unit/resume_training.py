"""A tiny training run that test_torch_resume.py starts in fresh processes.

Usage::

    python resume_training.py REPO --optimizer sgd|adam --session NAME \
        --first N --last M [--resume REV]

A small MLP with dropout learns a synthetic task from a shuffling DataLoader
(with its own torch.Generator) whose samples are augmented with draws from
Python's ``random`` and NumPy's global RNG. Each epoch is committed with
``mvcstore.torch.commit``. Without ``--resume`` the run starts from fixed
seeds; with it, every state comes from ``mvcstore.torch.resume`` and the
process seeds its RNGs with other values first, so nothing but the stored
states can make the runs agree.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

import mvcstore
import mvcstore.torch as mvt

SAMPLES = 48
BATCH = 8


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(6, 16)
        self.drop = nn.Dropout(0.3)
        self.out = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(F.relu(self.hidden(x))))


class Augmented(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Fixed samples, each jittered by NumPy noise and a Python-random scale."""

    def __init__(self) -> None:
        source = torch.Generator().manual_seed(7)
        self.x = torch.randn(SAMPLES, 6, generator=source)
        self.y = torch.randint(0, 3, (SAMPLES,), generator=source)

    def __len__(self) -> int:
        return SAMPLES

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.from_numpy(np.random.normal(0.0, 0.05, 6).astype(np.float32))
        scale = 0.9 + 0.2 * random.random()
        return self.x[index] * scale + noise, self.y[index]


def make_loader(seed: int) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
    return DataLoader(
        Augmented(),
        batch_size=BATCH,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )


def make_optimizer(kind: str):
    def build(model: nn.Module) -> torch.optim.Optimizer:
        if kind == "sgd":
            return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        return torch.optim.Adam(model.parameters(), lr=0.01)

    return build


def make_scheduler(kind: str):
    if kind == "sgd":
        return None
    return lambda optimizer: torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=2, gamma=0.5
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("repo", type=Path)
    parser.add_argument("--optimizer", choices=["sgd", "adam"], required=True)
    parser.add_argument("--session", required=True)
    parser.add_argument("--first", type=int, required=True)
    parser.add_argument("--last", type=int, required=True)
    parser.add_argument("--resume")
    args = parser.parse_args()
    torch.set_num_threads(1)
    build_optimizer = make_optimizer(args.optimizer)
    build_scheduler = make_scheduler(args.optimizer)

    if args.resume is None:
        torch.manual_seed(0)
        np.random.seed(0)
        random.seed(0)
        repo = mvcstore.Repo.init(args.repo, durable=False)
        loader = make_loader(1)
        model = Net()
        optimizer = build_optimizer(model)
        scheduler = build_scheduler(optimizer) if build_scheduler else None
        step = 0
    else:
        # other seeds: only the stored states can bring the runs together
        torch.manual_seed(1234)
        np.random.seed(1234)
        random.seed(1234)
        repo = mvcstore.Repo.open(args.repo, durable=False)
        loader = make_loader(99)
        resumed = mvt.resume(
            repo,
            args.resume,
            Net,
            build_optimizer,
            scheduler_factory=build_scheduler,
            loader=loader,
        )
        if not resumed.exact or resumed.epoch != args.first - 1:
            print(f"unexpected resume: {resumed}", file=sys.stderr)
            return 1
        model, optimizer, scheduler = (
            resumed.model,
            resumed.optimizer,
            resumed.scheduler,
        )
        step = resumed.step

    session = repo.session(args.session)
    for _ in range(args.first, args.last + 1):
        model.train()
        for x, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            step += 1
        if scheduler is not None:
            scheduler.step()
        mvt.commit(
            session,
            model,
            optimizer=optimizer,
            scheduler=scheduler,
            loader=loader,
            step=step,
        )
    repo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
