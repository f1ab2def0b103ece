"""Resuming training: the same bits as never stopping, or a warning saying why.

The bit-for-bit tests train in fresh processes (``resume_training.py``): one
trains epochs 1 to 6, committing each; another, started later with other
seeds, resumes from epoch 3 and trains 4 to 6. Equal content gives equal ids,
so the two runs agree bit for bit exactly when their weights, optimizer and
RNG states have the same ids.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import mvcstore.torch as mvt  # noqa: E402
from mvcstore import InvalidInputError, Repo  # noqa: E402
from mvcstore.torch import InexactResumeWarning  # noqa: E402

SCRIPT = Path(__file__).with_name("resume_training.py")
DATA = TensorDataset(
    torch.randn(12, 4, generator=torch.Generator().manual_seed(0)),
    torch.arange(12) % 2,
)


def train(args: list[str]) -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def small_model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5), nn.Linear(3, 2))


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def one_epoch(
    model: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader
) -> None:
    for x, y in loader:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def rng_draws() -> tuple[list[float], list[float], float]:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random()


@pytest.mark.parametrize(
    "optimizer", ["sgd", "adam"], ids=["sgd-momentum", "adam-steplr"]
)
def test_resume_in_a_new_process_trains_epochs_4_to_6_bit_for_bit(
    tmp_path: Path, optimizer: str
) -> None:
    repo_dir = tmp_path / "runs"
    train(
        [str(repo_dir), "--optimizer", optimizer, "--session", "full"]
        + ["--first", "1", "--last", "6"]
    )
    with Repo.open(repo_dir, durable=False) as repo:
        repo.fork("part", at="full#3")

    train(
        [str(repo_dir), "--optimizer", optimizer, "--session", "part"]
        + ["--first", "4", "--last", "6", "--resume", "part"]
    )

    with Repo.open(repo_dir, durable=False) as repo:
        for number in (4, 5, 6):
            straight = repo.resolve(f"full#{number}")
            resumed = repo.resolve(f"part#{number}")
            assert resumed.state == straight.state, number
            assert resumed.extra == straight.extra, number
            assert resumed.step == straight.step == number * 6
            assert resumed.meta == straight.meta
        assert set(straight.extra) == {"optimizer", "rng"}
        assert straight.meta["resume_exact"] is True
        if optimizer == "adam":
            scheduler = straight.meta["scheduler"]
            assert scheduler["class"] == "torch.optim.lr_scheduler.StepLR"
            assert scheduler["state"]["last_epoch"] == 6
            assert straight.meta["optimizer"]["param_groups"][0]["lr"] == 0.01 / 8
        assert repo.fsck().ok


def test_commit_draws_from_no_rng(repo: Repo) -> None:
    loader = DataLoader(
        DATA, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(5)
    )
    model = small_model()
    optimizer = sgd(model)
    one_epoch(model, optimizer, loader)
    loader_state = loader.generator.get_state()
    states = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())

    mvt.commit(repo.session("a"), model, optimizer=optimizer, loader=loader)

    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1])
    assert random.getstate() == states[2]
    assert torch.equal(loader.generator.get_state(), loader_state)


def test_commit_stores_every_rng_state_without_pickle(repo: Repo) -> None:
    loader = DataLoader(DATA, batch_size=4, shuffle=True, generator=torch.Generator())
    model = small_model()

    epoch = mvt.commit(repo.session("a"), model, optimizer=sgd(model), loader=loader)

    rng = repo.checkout("a", as_="raw").extra["rng"]
    assert set(rng) >= {"torch", "python", "numpy.keys", "numpy.cached_gaussian"}
    assert "loader.generator" in rng
    assert rng["python"].dtype == "U32" and rng["python"].shape == (625,)
    assert rng["numpy.keys"].shape == (624,)
    assert epoch.meta["rng"]["numpy"]["name"] == "MT19937"
    assert epoch.meta["loader"]["generators"] == ["loader.generator"]
    assert epoch.meta["resume_exact"] is True


def test_resume_sets_the_rngs_after_the_factories_have_drawn(repo: Repo) -> None:
    torch.manual_seed(8)
    model = small_model()
    optimizer = sgd(model)
    mvt.commit(repo.session("a"), model, optimizer=optimizer)
    expected = rng_draws()
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)

    # the factory initialises weights: it draws from the torch RNG
    resumed = mvt.resume(repo, "a", small_model, sgd)

    assert resumed.exact
    assert rng_draws() == expected
    assert (resumed.epoch, resumed.step) == (1, 0)


def test_loader_without_generator_makes_the_resume_inexact_and_warns(
    repo: Repo,
) -> None:
    loader = DataLoader(DATA, batch_size=4, shuffle=True)
    model = small_model()
    optimizer = sgd(model)
    one_epoch(model, optimizer, loader)

    epoch = mvt.commit(repo.session("a"), model, optimizer=optimizer, loader=loader)
    with pytest.warns(InexactResumeWarning, match="torch.Generator") as caught:
        resumed = mvt.resume(repo, "a", small_model, sgd, loader=loader)

    assert epoch.meta["resume_exact"] is False
    assert "torch.Generator" in epoch.meta["resume_reasons"][0]
    assert not resumed.exact
    assert len(caught) == 1


def test_loader_with_workers_is_recorded_as_not_exact(repo: Repo) -> None:
    loader = DataLoader(
        DATA, batch_size=4, shuffle=True, num_workers=2, generator=torch.Generator()
    )

    epoch = mvt.commit(repo.session("a"), small_model(), loader=loader)

    assert epoch.meta["resume_exact"] is False
    assert any("2 worker processes" in r for r in epoch.meta["resume_reasons"])


def test_resume_without_the_stored_loader_warns(repo: Repo) -> None:
    loader = DataLoader(DATA, batch_size=4, shuffle=True, generator=torch.Generator())
    model = small_model()
    mvt.commit(repo.session("a"), model, optimizer=sgd(model), loader=loader)

    with pytest.warns(InexactResumeWarning, match="no loader= was given"):
        resumed = mvt.resume(repo, "a", small_model, sgd)

    assert not resumed.exact


def test_resume_without_optimizer_state_warns_and_starts_it_fresh(
    repo: Repo,
) -> None:
    mvt.commit(repo.session("a"), small_model())

    with pytest.warns(InexactResumeWarning, match="without optimizer="):
        resumed = mvt.resume(repo, "a", small_model, sgd)

    assert resumed.optimizer.state_dict()["state"] == {}


def test_resume_refuses_an_optimizer_of_another_class(repo: Repo) -> None:
    model = small_model()
    mvt.commit(repo.session("a"), model, optimizer=sgd(model))

    with pytest.raises(InvalidInputError, match="SGD optimizer") as caught:
        mvt.resume(repo, "a", small_model, lambda m: torch.optim.Adam(m.parameters()))

    assert "optimizer_factory" in (caught.value.hint or "")


def test_scheduler_with_integer_keys_round_trips(repo: Repo) -> None:
    model = small_model()
    optimizer = sgd(model)

    def multistep(opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 4], gamma=0.1)

    scheduler = multistep(optimizer)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    mvt.commit(repo.session("a"), model, optimizer=optimizer, scheduler=scheduler)

    resumed = mvt.resume(repo, "a", small_model, sgd, scheduler_factory=multistep)

    assert resumed.scheduler.state_dict() == scheduler.state_dict()
    assert isinstance(resumed.scheduler.milestones, Counter)
    assert resumed.optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
