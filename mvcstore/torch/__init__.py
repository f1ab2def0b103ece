"""PyTorch integration: tensors, model graphs, committing and restoring models.

Imported only on request (``import mvcstore.torch``), so the core library
never needs torch. Importing it registers the ``torch`` array adapter, which
makes ``Repo.checkout(rev, as_="torch")`` and torch tensors in
``Session.commit`` work.

Typical use in a training loop::

    import mvcstore
    import mvcstore.torch as mvt

    repo = mvcstore.Repo.init("runs")
    session = repo.session("baseline")
    for epoch in range(10):
        train_one_epoch(model, optimizer, loader)
        mvt.commit(
            session, model, optimizer=optimizer, loader=loader,
            metrics={"val_acc": acc},
        )
    model = mvt.restore(repo, "baseline#6", factory=Net)

    # continue training from epoch 6 in another process, bit for bit
    resumed = mvt.resume(
        repo, "baseline#6", Net, lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
        loader=loader,
    )
"""

from mvcstore.torch.graph import (
    ROOT_ID,
    build_module,
    capture_graph,
    fit_model,
    rebuild_model,
    with_pruning_plan,
)
from mvcstore.torch.models import (
    OPTIMIZER_ROLE,
    commit,
    load_state,
    optimizer_state,
    restore,
)
from mvcstore.torch.resume import InexactResumeWarning, Resumed, resume
from mvcstore.torch.tensors import TorchAdapter

__all__ = [
    "ROOT_ID",
    "OPTIMIZER_ROLE",
    "TorchAdapter",
    "capture_graph",
    "with_pruning_plan",
    "build_module",
    "fit_model",
    "rebuild_model",
    "commit",
    "restore",
    "load_state",
    "optimizer_state",
    "resume",
    "Resumed",
    "InexactResumeWarning",
]
