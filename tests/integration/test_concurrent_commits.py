"""Two processes committing to one session through MongoDB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pymongo
import pytest
import servers
from support import assert_clean

from mvcstore import Repo
from mvcstore.codec import ObjectId

pytestmark = pytest.mark.integration

ROUNDS = 6
TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture
def database() -> Iterator[str]:
    name = servers.unique("mvc_race_")
    servers.mongo_uri(name)
    try:
        yield name
    finally:
        servers.drop_mongo_database(name)


def test_one_process_wins_each_race_and_no_epoch_is_lost(
    database: str, tmp_path: Path
) -> None:
    uri = servers.mongo_uri(database)
    with Repo.init(tmp_path, durable=False, objects=uri, refs=uri) as repo:
        first = repo.session("shared").commit({"w": np.zeros(4, np.float32)})

    start = time.time() + 4.0
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    worker = Path(__file__).with_name("commit_race_worker.py")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(worker),
                str(tmp_path),
                str(start),
                str(ROUNDS),
                str(side),
            ],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        for side in (1, 2)
    ]
    outcomes = []
    for proc in procs:
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0
        outcomes.append(json.loads(out))

    with Repo.open(tmp_path, durable=False) as repo:
        winners: list[str] = []
        base = first.id.hex
        for k in range(ROUNDS):
            sides = [outcomes[0][k], outcomes[1][k]]
            won = [result for result in sides if result["won"]]
            lost = [result for result in sides if not result["won"]]
            assert len(won) == 1 and len(lost) == 1, sides
            assert won[0]["base"] == lost[0]["base"] == base
            # the loser's error names both epochs, and its epoch is kept
            assert lost[0]["expected"] == base
            assert lost[0]["actual"] == won[0]["epoch"]
            kept = repo.read_epoch(ObjectId.from_hex(lost[0]["proposed"]))
            assert kept.parents == (ObjectId.from_hex(base),)
            winners.append(won[0]["epoch"])
            base = won[0]["epoch"]

        line = [epoch.id.hex for epoch in repo.log("shared")]
        assert line == [*reversed(winners), first.id.hex]
        moves = repo.refs.reflog("sessions/shared")
        assert [move.new.hex for move in moves] == [first.id.hex, *winners]
        assert all(a.new == b.old for a, b in zip(moves, moves[1:], strict=False))

        repo.create_session("kept", at=lost[0]["proposed"])
        assert len(list(repo.log("kept"))) == ROUNDS + 1
        assert_clean(repo)

    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
        servers.require_env(servers.MONGO_ENV)
    )
    try:
        session = client[database]["TrainingSession"].find_one({"_id": "shared"})
        listed = [entry["_id"] for entry in session["epochs"]]
        with Repo.open(tmp_path, durable=False) as repo:
            assert listed == [epoch.uid for epoch in reversed(list(repo.log("shared")))]
    finally:
        client.close()
