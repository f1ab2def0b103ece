"""Lightning example: every training epoch becomes an epoch of a session.

Trains a small classifier on scikit-learn's bundled handwritten digits (no
download) with a Lightning ``Trainer`` on the CPU. ``MvcCallback`` commits
the module after each epoch (graph, weights, optimizer and scheduler states,
RNG states, the data loader's generator) and turns every metric the module
logs into a metric document. Afterwards the example resumes the second epoch
with ``mvcstore.torch.resume`` and checks it got the committed weights back.

Run it as ``python examples/lightning_example.py --dir DIR`` (needs the
``lightning`` package: ``pip install lightning``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import warnings
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import mvcstore
import mvcstore.torch as mvt
from mvcstore.torch.lightning import MvcCallback, pl

EPOCHS = 3


class DigitsMlp(pl.LightningModule):
    """A two-layer classifier of flattened 8x8 digit images."""

    def __init__(self, hidden: int = 64, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.body = nn.Sequential(
            nn.Linear(64, hidden), nn.ReLU(), nn.Dropout(0.1), nn.Linear(hidden, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def training_step(self, batch, index):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, index):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
        return [optimizer], [scheduler]


def loaders() -> tuple[DataLoader, DataLoader]:
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, val = order[:1400], order[1400:]
    # a generator of the loader's own: its state is stored with each epoch
    train_loader = DataLoader(
        TensorDataset(x[train], y[train]),
        batch_size=64,
        shuffle=True,
        generator=torch.Generator().manual_seed(1),
    )
    return train_loader, DataLoader(TensorDataset(x[val], y[val]), batch_size=256)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="example folder")
    args = parser.parse_args()
    torch.manual_seed(0)
    if (args.dir / ".mvc").exists():
        shutil.rmtree(args.dir / ".mvc")
    args.dir.mkdir(parents=True, exist_ok=True)

    repo = mvcstore.Repo.init(args.dir)
    callback = MvcCallback(repo.session("mlp"))
    trainer = pl.Trainer(
        max_epochs=EPOCHS,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=5,
        default_root_dir=args.dir,
        accelerator="cpu",
        devices=1,
    )
    train_loader, val_loader = loaders()
    with warnings.catch_warnings():
        # Lightning's advice on worker counts and the like, not results
        warnings.simplefilter("ignore")
        trainer.fit(DigitsMlp(), train_loader, val_loader)

    for epoch in callback.epochs:
        print(
            f"mlp#{epoch.number}  step {epoch.step}  val_acc"
            f" {epoch.summary['val_acc']:.4f}  val_loss {epoch.summary['val_loss']:.4f}"
            f"  resume exact: {epoch.meta['resume_exact']}"
        )
    documents = repo.metrics("mlp")
    print(f"{len(documents)} metric documents in session mlp's view")

    resumed = mvt.resume(
        repo,
        "mlp#2",
        DigitsMlp,
        lambda model: torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        scheduler_factory=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1, 0.7),
        loader=train_loader,
    )
    committed = repo.checkout("mlp#2", as_="torch").state
    same = all(
        torch.equal(tensor, committed[name])
        for name, tensor in resumed.model.state_dict().items()
    )
    print(
        f"resumed mlp#{resumed.epoch} at step {resumed.step}: weights"
        f" {'identical to' if same else 'DIFFERENT from'} the committed epoch,"
        f" lr {resumed.optimizer.param_groups[0]['lr']:.4g}, exact {resumed.exact}"
    )
    report = repo.fsck()
    repo.close()
    return 0 if same and report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
