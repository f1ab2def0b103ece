"""MvcCallback: a Lightning Trainer commits every epoch and logs its metrics."""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")


def _lightning():
    for name in ("lightning.pytorch", "pytorch_lightning"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    pytest.skip("neither lightning nor pytorch_lightning can be imported")


pl = _lightning()

from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import mvcstore.torch as mvt  # noqa: E402
from mvcstore import Repo  # noqa: E402
from mvcstore.torch.lightning import MvcCallback  # noqa: E402

BATCHES = 4


class Tiny(pl.LightningModule):
    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, index):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, index):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
        return [optimizer], [scheduler]


def test_callback_commits_each_epoch_with_its_training_state_and_metrics(
    repo: Repo, tmp_path: Path
) -> None:
    source = torch.Generator().manual_seed(0)
    data = TensorDataset(
        torch.randn(8 * BATCHES, 4, generator=source),
        torch.randint(0, 2, (8 * BATCHES,), generator=source),
    )
    train = DataLoader(
        data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(1)
    )
    callback = MvcCallback(repo.session("pl"))
    trainer = pl.Trainer(
        max_epochs=2,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        default_root_dir=tmp_path,
        accelerator="cpu",
        devices=1,
    )
    module = Tiny()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, train, DataLoader(data, batch_size=16))

    first, second = callback.epochs
    assert (first.number, first.step) == (1, BATCHES - 1)
    assert (second.number, second.step) == (2, 2 * BATCHES - 1)
    assert set(second.extra) == {"optimizer", "rng"}
    assert second.meta["scheduler"]["class"] == "torch.optim.lr_scheduler.StepLR"
    assert second.meta["loader"]["generators"] == ["loader.generator"]
    assert second.meta["resume_exact"] is True
    assert second.params == {"lr": 0.1}
    assert {"val_loss", "train_loss_epoch"} <= set(second.summary)
    assert not any(name.endswith("_step") for name in second.summary)
    steps = [d.step for d in repo.metrics("pl", names=["train_loss_step"])]
    assert steps == list(range(2 * BATCHES))
    restored = mvt.restore(repo, "pl", factory=Tiny)
    for name, tensor in module.state_dict().items():
        assert torch.equal(restored.state_dict()[name], tensor), name
