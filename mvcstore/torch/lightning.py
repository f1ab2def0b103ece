"""Lightning integration: commit each epoch, keep logged metrics as documents.

``MvcCallback`` commits the ``LightningModule`` at the end of every training
epoch with ``mvcstore.torch.commit``: graph, weights, the optimizer's and
scheduler's states, every RNG state and the training ``DataLoader``'s
generator. It also attaches a small Lightning logger to the trainer, so every
metric Lightning logs (``self.log``) becomes a metric document of the epoch in
progress, at Lightning's own step; hyper-parameters saved with
``save_hyperparameters()`` become the epochs' ``params``.

Works with the ``lightning`` package (``lightning.pytorch``) and with the
older ``pytorch_lightning``; importing this module imports one of them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Final

import torch
from torch.utils.data import DataLoader

try:
    import lightning.pytorch as pl  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # the package's older name
    import pytorch_lightning as pl  # type: ignore[import-not-found, no-redef, unused-ignore]

from mvcstore.errors import InvalidInputError
from mvcstore.objects import Epoch
from mvcstore.repo import Session
from mvcstore.torch.models import commit

__all__ = ["MvcCallback", "MvcLogger"]

logger = logging.getLogger(__name__)

_SKIPPED: Final = frozenset({"epoch", "step"})
"""Keys Lightning adds to every logged dict for its own loggers' convenience."""
_STEP_SUFFIX: Final = "_step"
"""Lightning's suffix of a value logged with both on_step and on_epoch."""


def _number(value: object) -> float | None:
    """Return a logged value as a float, or None if it is not one number."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex():
            return None
        return float(value.detach().cpu().item())
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _plain(value: object) -> object:
    """Return a hyper-parameter as plain data, or None when it has no such form."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        items = [_plain(item) for item in value]
        return (
            None
            if any(
                i is None and v is not None for i, v in zip(items, value, strict=True)
            )
            else items
        )
    if isinstance(value, Mapping) and all(isinstance(key, str) for key in value):
        return {key: _plain(item) for key, item in value.items()}
    return None


class MvcLogger(pl.loggers.Logger):  # type: ignore[misc, unused-ignore]
    """A Lightning logger that writes metric documents into a session.

    Each ``log_metrics(metrics, step)`` call logs the numeric scalars with
    ``Session.log_metrics`` at Lightning's step, into the epoch in progress.
    A value logged again at the same step with another value (gradient
    accumulation runs several batches per step) keeps the first one.

    Args:
        session: The session the documents belong to.
    """

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
        self.hyperparameters: dict[str, object] = {}
        self.floor = -1
        """Documents at or below this step belong to an epoch already committed."""
        self._step = -1
        self._logged: dict[str, float] = {}

    @property
    def name(self) -> str:
        """The logger's name."""
        return "mvcstore"

    @property
    def version(self) -> str:
        """The session's name."""
        return self.session.name

    def log_hyperparams(self, params: object, *args: object, **kwargs: object) -> None:
        """Keep the module's hyper-parameters, for the epochs' ``params``."""
        if isinstance(params, Mapping):
            plain = _plain(dict(params))
            if isinstance(plain, dict):
                self.hyperparameters = plain

    def log_metrics(
        self, metrics: Mapping[str, object], step: int | None = None
    ) -> None:
        """Log the numeric scalars of ``metrics`` as documents at ``step``."""
        if step is None or step <= self.floor:
            logger.debug("metrics at step %s belong to a committed epoch", step)
            return
        if step != self._step:
            self._step, self._logged = step, {}
        values: dict[str, float] = {}
        for name, value in metrics.items():
            number = _number(value)
            if name in _SKIPPED or number is None:
                continue
            if name in self._logged and not _same(self._logged[name], number):
                continue
            values[name] = number
        self._logged.update(values)
        self.session.log_metrics(step, **values)

    def logged_at(self, step: int) -> dict[str, float]:
        """Return the values logged at ``step``, if it is the latest step."""
        return dict(self._logged) if step == self._step else {}


def _same(first: float, second: float) -> bool:
    return first == second or (math.isnan(first) and math.isnan(second))


class MvcCallback(pl.Callback):  # type: ignore[misc, unused-ignore]
    """Commit a Lightning module as one epoch per training epoch.

    The commit happens in ``on_train_epoch_end``, after validation: the
    epoch's summary metrics are the trainer's ``callback_metrics`` (less the
    ``NAME_step`` copies of per-step values), at the epoch's last step
    (``trainer.global_step - 1``, the step Lightning logged its last batch at).
    Lightning steps epoch-interval schedulers after the epoch's last batch,
    before this hook, so the stored scheduler state includes that step; only
    ``ReduceLROnPlateau`` is stepped after the hook (its stored state is the
    one before). Lightning logs epoch-level values after the hook too: they
    are kept in the summary rather than as documents of the next epoch. The
    optimizer and scheduler are stored when the module has exactly one of
    each.

    Args:
        session: The session to extend.
        example_input: Passed to ``capture_graph`` to record shapes.
        pruning_plan: The pruning plan in force (see ``mvcstore.torch.commit``).
        params: Hyper-parameters of every epoch; the module's saved
            hyper-parameters when None.
        every_n_epochs: Commit every n-th epoch only.
    """

    def __init__(
        self,
        session: Session,
        *,
        example_input: object = None,
        pruning_plan: Mapping[str, object] | None = None,
        params: Mapping[str, object] | None = None,
        every_n_epochs: int = 1,
    ) -> None:
        super().__init__()
        if isinstance(every_n_epochs, bool) or every_n_epochs < 1:
            raise InvalidInputError(
                f"every_n_epochs must be an integer >= 1, got {every_n_epochs!r}",
                hint="pass MvcCallback(session, every_n_epochs=1)",
            )
        self.session = session
        self.example_input = example_input
        self.pruning_plan = pruning_plan
        self.params = params
        self.every_n_epochs = every_n_epochs
        self.logger = MvcLogger(session)
        self.epochs: list[Epoch] = []
        """The epochs committed so far, oldest first."""

    def setup(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str
    ) -> None:
        """Attach the metric-document logger to the trainer."""
        if all(existing is not self.logger for existing in trainer.loggers):
            trainer.loggers = [*trainer.loggers, self.logger]

    def on_train_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> None:
        """Commit the module, its training state and the epoch's metrics."""
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        # Lightning logs batch k at step k: the epoch's last step is one less
        # than the optimizer steps taken
        step = max(int(trainer.global_step) - 1, 0)
        summary: dict[str, float] = {}
        for name, value in trainer.callback_metrics.items():
            number = _number(value)
            # NAME_step is the last step's value, already a document of its step
            if (
                number is not None
                and name not in _SKIPPED
                and not name.endswith(_STEP_SUFFIX)
            ):
                summary[name] = number
        # a value already logged at this step is kept as logged: one step, one value
        summary.update(
            (name, value)
            for name, value in self.logger.logged_at(step).items()
            if name in summary
        )
        optimizers = list(trainer.optimizers)
        schedulers = list(trainer.lr_scheduler_configs)
        loader = trainer.train_dataloader
        params = self.params
        if params is None and self.logger.hyperparameters:
            params = self.logger.hyperparameters
        epoch = commit(
            self.session,
            pl_module,
            optimizer=optimizers[0] if len(optimizers) == 1 else None,
            scheduler=schedulers[0].scheduler if len(schedulers) == 1 else None,
            loader=loader if isinstance(loader, DataLoader) else None,
            metrics=summary,
            params=params,
            step=step,
            pruning_plan=self.pruning_plan,
            example_input=self.example_input,
        )
        # Lightning logs epoch-end values at the epoch's last step, after this
        # hook: they are in the summary, not documents of the next epoch
        self.logger.floor = step
        self.epochs.append(epoch)
