"""Histories for the dashboard tests (imported as ``dashboard_kit``).

``build_tree`` makes a tree of four sessions through the library: ``a`` with
ten epochs; ``b`` forked at ``a#4``; ``c`` forked at ``b#6``; ``d`` forked at
``a#4`` too. Epoch N of every session logs ``loss`` at each of the steps
10N-9 .. 10N and commits summary metrics ``acc`` and ``params`` at step 10N,
so steps run on across every fork without gap or overlap. The graph changes
(a pruning step) every third epoch, and each session prunes by its own plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mvcstore import Epoch, Graph, Repo

STEPS_PER_EPOCH = 10
TREE = {
    # session: (forked at, own epoch numbers)
    "a": (None, range(1, 11)),
    "b": ("a#4", range(5, 9)),
    "c": ("b#6", range(7, 10)),
    "d": ("a#4", range(5, 7)),
}
OFFSET = {"a": 0.0, "b": 0.05, "c": 0.1, "d": 0.2}
PLAN = {"a": "plan-a", "b": "plan-b", "c": "plan-c", "d": "plan-d"}


def loss(session: str, step: int) -> float:
    """The loss ``session`` logs at ``step``: falling, offset per session."""
    return round(1.0 / step + OFFSET[session], 6)


def acc(session: str, number: int) -> float:
    """The summary accuracy of epoch ``number`` of ``session``."""
    return round(0.5 + number / 40 - OFFSET[session] / 2, 6)


def width(session: str, number: int) -> int:
    """The hidden width trained by epoch ``number``: it shrinks every 3rd epoch."""
    shrink = {"a": 2, "b": 3, "c": 4, "d": 1}[session]
    return 32 - shrink * ((number - 1) // 3)


def graph(session: str, number: int) -> Graph:
    """A two-layer graph with shapes on its nodes and the session's plan."""
    hidden = width(session, number)
    plan = PLAN[session] if number > 3 else None
    return Graph.from_value(
        {
            "nodes": [
                {
                    "id": "fc1",
                    "data": {
                        "class": "Linear",
                        "params": {
                            "weight": {"shape": [hidden, 8], "dtype": "F32"},
                            "bias": {"shape": [hidden], "dtype": "F32"},
                        },
                    },
                    "outputs": {"fc2": 0},
                    "pruning_plan_id": plan,
                },
                {
                    "id": "fc2",
                    "data": {
                        "class": "Linear",
                        "params": {
                            "weight": {"shape": [2, hidden], "dtype": "F32"},
                            "bias": {"shape": [2], "dtype": "F32"},
                        },
                    },
                    "inputs": {"fc1": 0},
                },
            ]
        }
    )


def param_count(session: str, number: int) -> int:
    """The parameter count of ``graph(session, number)``."""
    hidden = width(session, number)
    return hidden * 8 + hidden + 2 * hidden + 2


def state(session: str, number: int) -> dict[str, np.ndarray]:
    """Small weights, different for every epoch."""
    rng = np.random.default_rng(sum(session.encode()) * 100 + number)
    return {"w": rng.standard_normal(4).astype(np.float32)}


@dataclass
class Tree:
    """The tree of sessions and its epochs by ``session#number``."""

    repo: Repo
    epochs: dict[str, Epoch] = field(default_factory=dict)

    def line(self, session: str) -> list[str]:
        """The labels on ``session``'s line, oldest first."""
        start, numbers = TREE[session]
        inherited = (
            self.line(start.split("#")[0])[: int(start.split("#")[1])] if start else []
        )
        return inherited + [f"{session}#{n}" for n in numbers]

    def docs(self, session: str) -> set[tuple[str, int, str]]:
        """Every (uid, step, name) the view of ``session`` must hold."""
        out: set[tuple[str, int, str]] = set()
        for label in self.line(session):
            epoch = self.epochs[label]
            number = epoch.number
            for step in range(10 * number - 9, 10 * number + 1):
                out.add((epoch.uid, step, "loss"))
            out.add((epoch.uid, 10 * number, "acc"))
            out.add((epoch.uid, 10 * number, "params"))
        return out


def commit_epoch(repo: Repo, session_name: str, number: int) -> Epoch:
    """Log and commit epoch ``number`` of a session through the library."""
    session = repo.session(session_name)
    for step in range(10 * number - 9, 10 * number + 1):
        session.log_metrics(step, loss=loss(session_name, step))
    return session.commit(
        state(session_name, number),
        graph=graph(session_name, number),
        params={"lr": 0.1 if session_name == "a" else 0.05, "session": session_name},
        metrics={
            "acc": acc(session_name, number),
            "params": param_count(session_name, number),
        },
        step=10 * number,
    )


def build_tree(repo: Repo) -> Tree:
    """Build sessions a, b, c, d as the module docstring says."""
    tree = Tree(repo)
    for name, (start, numbers) in TREE.items():
        if start is not None:
            repo.create_session(name, at=start)
        for number in numbers:
            tree.epochs[f"{name}#{number}"] = commit_epoch(repo, name, number)
    return tree
