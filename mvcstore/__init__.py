"""mvcstore: git-like, content-addressed version control for models in training.

Model graphs and weights become immutable objects named by their BLAKE3 hash;
each epoch is a commit pointing at the epoch it continued from; each training
session is a branch ref; metric documents are keyed by epoch and shared by
every session whose history holds that epoch.

Typical use from a training loop::

    import mvcstore

    repo = mvcstore.Repo.init("runs")          # or mvcstore.Repo.open()
    session = repo.session("baseline")
    for epoch in range(10):
        for step, loss in train_one_epoch():
            session.log_metrics(step, loss=loss)
        session.commit(model_state, params={"lr": 0.1}, metrics={"val_acc": acc})
"""

import logging

from mvcstore.arrays import RawTensor
from mvcstore.codec import ObjectId
from mvcstore.errors import (
    AmbiguousRevisionError,
    BackendUnavailableError,
    CorruptObjectError,
    InvalidInputError,
    InvalidNameError,
    MetricConflictError,
    MvcError,
    ObjectNotFoundError,
    RefConflictError,
    RepositoryFormatError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from mvcstore.metrics.base import MetricDoc, MetricStats
from mvcstore.objects import Epoch, Graph, Node
from mvcstore.repo import Checkout, FsckReport, Repo, Session

__all__ = [
    "Repo",
    "Session",
    "Checkout",
    "FsckReport",
    "Epoch",
    "Graph",
    "Node",
    "ObjectId",
    "RawTensor",
    "MetricDoc",
    "MetricStats",
    "MvcError",
    "RepositoryNotFoundError",
    "RepositoryFormatError",
    "InvalidInputError",
    "InvalidNameError",
    "RevisionNotFoundError",
    "AmbiguousRevisionError",
    "ObjectNotFoundError",
    "CorruptObjectError",
    "RefConflictError",
    "MetricConflictError",
    "BackendUnavailableError",
]

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
