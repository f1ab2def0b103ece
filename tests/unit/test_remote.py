"""Push, pull and clone between embedded repositories (``mvcstore.remote``)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from support import (
    Forked,
    assert_clean,
    make_state,
    overwrite_region,
    stored_region,
)

from mvcstore import Repo
from mvcstore.codec import (
    DELTA_ENCODINGS,
    ENCODING_DIFF,
    ENCODING_RAW,
    ENCODING_ZSTD,
    ObjectId,
    parse_frame,
)
from mvcstore.encodings import SECTION_PACKED
from mvcstore.errors import (
    CorruptObjectError,
    InvalidInputError,
    InvalidNameError,
    NonFastForwardError,
    WeightsDroppedError,
)
from mvcstore.gc import RetainPolicy, collect, retain
from mvcstore.objects import State, Tensor
from mvcstore.remote import (
    AHEAD,
    CREATED,
    DIVERGED,
    FAST_FORWARD,
    FORCED,
    UP_TO_DATE,
    TransferProgress,
    add_remote,
    clone,
    get_remote,
    list_remotes,
    open_remote,
    pull,
    push,
    remote_spec,
    remove_remote,
    transfer,
)
from mvcstore.stores.blobs import StorageOptions
from mvcstore.stores.liveness import references
from mvcstore.stores.local import LocalObjectStore


@pytest.fixture
def other(tmp_path: Path) -> Iterator[Repo]:
    """A second, empty repository: the remote."""
    opened = Repo.init(tmp_path / "remote", durable=False)
    try:
        yield opened
        assert_clean(opened)
    finally:
        opened.close()


def _reachable(repo: Repo, heads: Sequence[ObjectId]) -> set[ObjectId]:
    """Every object the heads need: links and frame dependencies."""
    dropped = set(repo.dropped_epochs())
    seen: set[ObjectId] = set()
    stack = list(heads)
    while stack:
        oid = stack.pop()
        if oid in seen:
            continue
        seen.add(oid)
        obj = repo.get(oid)
        stack.extend(references(repo.objects, oid, obj, dropped=oid in dropped))
    return seen


def _docs(repo: Repo) -> list[tuple[str, int, str, float]]:
    uids = set(repo.metrics_index.iter_uids())
    return sorted(
        (doc.uid, doc.step, doc.name, doc.value)
        for doc in repo.metrics_index.query(uids)
    )


def _assert_same_state(got: dict[str, object], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for name, array in want.items():
        value = got[name]
        assert isinstance(value, np.ndarray)
        assert value.dtype == array.dtype and value.shape == array.shape
        assert value.tobytes() == array.tobytes(), name


def _head(repo: Repo, session: str) -> ObjectId:
    head = repo.session_head(session)
    assert head is not None
    return head


# -- push ----------------------------------------------------------------------


def test_push_sends_the_session_its_objects_and_metric_documents(
    forked: Forked, other: Repo
) -> None:
    repo = forked.repo
    head = _head(repo, "b")

    report = push(repo, other, name="origin", session="b")

    assert [(u.name, u.status) for u in report.updates] == [("b", CREATED)]
    assert other.session_head("b") == head
    assert set(other.objects.iter_ids()) == _reachable(repo, [head])
    assert report.transfer.objects == len(_reachable(repo, [head]))
    assert [e.id for e in other.log("b")] == [e.id for e in repo.log("b")]
    # the view on the remote is the view here: every inherited document came
    assert other.metrics("b") == repo.metrics("b")
    assert report.transfer.docs == len(repo.metrics("b"))
    assert repo.refs.get("remotes/origin/b") == head
    assert repo.resolve_id("remotes/origin/b") == head
    for epoch in other.log("b"):
        assert epoch.id is not None
        _assert_same_state(other.checkout(epoch.id.hex).state, forked.states[epoch.id])


def test_a_second_push_writes_nothing(forked: Forked, other: Repo) -> None:
    repo = forked.repo
    push(repo, other, name="origin", session="a")
    stored = set(other.objects.iter_ids())
    docs = _docs(other)

    again = push(repo, other, name="origin", session="a")
    direct = transfer(repo, other, [_head(repo, "a")])

    assert [u.status for u in again.updates] == [UP_TO_DATE]
    assert again.transfer.objects == 0 and again.transfer.epochs == []
    assert direct.objects == 0 and direct.bytes == 0 and direct.docs == 0
    assert set(other.objects.iter_ids()) == stored
    assert _docs(other) == docs


def test_push_of_a_fork_sends_only_what_the_remote_lacks(
    forked: Forked, other: Repo
) -> None:
    repo = forked.repo
    a, b = _head(repo, "a"), _head(repo, "b")
    push(repo, other, name="origin", session="a")
    before = set(other.objects.iter_ids())

    report = push(repo, other, name="origin", session="b")

    added = set(other.objects.iter_ids()) - before
    assert added == _reachable(repo, [b]) - _reachable(repo, [a])
    assert report.transfer.objects == len(added)
    assert report.transfer.epochs == [e.id for e in forked.b]
    # only the fork's own epochs' documents travel: a#1..a#4 are there already
    assert report.transfer.docs == len(forked.b) * Forked.DOCS_PER_EPOCH
    assert _docs(other) == _docs(repo)


def test_non_fast_forward_push_is_refused_and_force_replaces(
    forked: Forked, other: Repo
) -> None:
    repo = forked.repo
    push(repo, other, name="origin", session="a")
    theirs = other.session("a").commit(make_state("x", 1), message="theirs")
    ours = repo.session("a").commit(make_state("y", 1), message="ours")
    assert theirs.id is not None and ours.id is not None
    stored = set(other.objects.iter_ids())

    with pytest.raises(NonFastForwardError) as refused:
        push(repo, other, name="origin", session="a")

    message = refused.value.message
    assert theirs.id.short() in message and ours.id.short() in message
    assert refused.value.hint is not None
    assert "pull first" in refused.value.hint and "--force" in refused.value.hint
    assert other.session_head("a") == theirs.id
    assert set(other.objects.iter_ids()) == stored

    forced = push(repo, other, name="origin", session="a", force=True)

    assert [u.status for u in forced.updates] == [FORCED]
    assert other.session_head("a") == ours.id
    # the remote's own epoch is left unreferenced, not deleted
    assert theirs.id in other.objects.has_many([theirs.id])


def test_push_fast_forwards_the_remote(forked: Forked, other: Repo) -> None:
    repo = forked.repo
    push(repo, other, name="origin", session="a")
    old = _head(repo, "a")
    new = repo.session("a").commit(make_state("a", 7))

    report = push(repo, other, name="origin", session="a")

    assert [(u.status, u.old, u.new) for u in report.updates] == [
        (FAST_FORWARD, old, new.id)
    ]
    assert report.transfer.epochs == [new.id]
    assert other.session_head("a") == new.id


def test_push_with_tags_creates_and_refuses_a_differing_tag(
    forked: Forked, other: Repo
) -> None:
    repo = forked.repo
    repo.tag("best", "a#3")
    push(repo, other, name="origin", session="a", tags=True)
    assert other.refs.get("tags/best") == repo.resolve_id("a#3")

    repo.tag("best", "a#5", force=True)
    with pytest.raises(InvalidInputError, match="tag 'best'"):
        push(repo, other, name="origin", session="a", tags=True)
    push(repo, other, name="origin", session="a", tags=True, force=True)

    assert other.refs.get("tags/best") == repo.resolve_id("a#5")


def test_push_without_a_current_session_is_refused(tmp_path: Path, other: Repo) -> None:
    with Repo.init(tmp_path / "empty", durable=False) as empty:
        with pytest.raises(InvalidInputError, match="no current session"):
            push(empty, other, name="origin")


# -- pull and clone ----------------------------------------------------------


def test_clone_is_whole_and_checks_out_bit_for_bit(
    forked: Forked, tmp_path: Path
) -> None:
    repo = forked.repo
    repo.tag("best", "a#4")
    spec = remote_spec("origin", [str(tmp_path)])

    cloned, report = clone(spec, tmp_path / "copy", durable=False)

    with cloned:
        assert_clean(cloned)
        assert sorted(cloned.sessions()) == sorted(repo.sessions())
        assert cloned.tags() == repo.tags()
        assert cloned.head_session() == repo.head_session()
        assert {u.status for u in report.updates} == {CREATED}
        assert _docs(cloned) == _docs(repo)
        assert [s.name for s in list_remotes(cloned)] == ["origin"]
        assert cloned.refs.get("remotes/origin/a") == _head(repo, "a")
        for oid, state in forked.states.items():
            _assert_same_state(cloned.checkout(oid.hex).state, state)
            assert cloned.checkout(oid.hex).graph == repo.checkout(oid.hex).graph
        assert set(cloned.objects.iter_ids()) == set(repo.objects.iter_ids())


def test_a_failed_clone_leaves_nothing(tmp_path: Path) -> None:
    source = tmp_path / "source"
    with Repo.init(source, durable=False):
        pass
    spec = remote_spec("origin", [str(source)])
    (source / ".mvc" / "config.json").unlink()

    with pytest.raises(InvalidInputError):
        clone(spec, tmp_path / "copy", durable=False)

    assert not (tmp_path / "copy").exists()


def test_pull_fast_forwards_and_keeps_a_diverged_head_as_tracking_ref(
    forked: Forked, tmp_path: Path
) -> None:
    repo = forked.repo
    cloned, _ = clone(remote_spec("origin", [str(tmp_path)]), tmp_path / "copy")
    with cloned:
        ahead = repo.session("a").commit(make_state("a", 7), metrics={"acc": 0.9})

        first = pull(cloned, repo, name="origin")

        statuses = {(u.kind, u.name): u.status for u in first.updates}
        assert statuses == {
            ("session", "a"): FAST_FORWARD,
            ("session", "b"): UP_TO_DATE,
        }
        assert cloned.session_head("a") == ahead.id
        assert first.transfer.epochs == [ahead.id]
        assert cloned.metrics("a") == repo.metrics("a")

        theirs = repo.session("a").commit(make_state("a", 8))
        ours = cloned.session("a").commit(make_state("z", 8))

        second = pull(cloned, repo, name="origin", session="a")

        (update,) = second.updates
        assert update.status == DIVERGED
        assert update.tracking == "remotes/origin/a"
        assert cloned.session_head("a") == ours.id
        assert cloned.resolve_id("remotes/origin/a") == theirs.id
        _assert_same_state(
            cloned.checkout("remotes/origin/a").state, make_state("a", 8)
        )
        assert_clean(cloned)

        mine = cloned.session("b").commit(make_state("b", 9))
        third = pull(cloned, repo, name="origin", session="b")
        assert [u.status for u in third.updates] == [AHEAD]
        assert cloned.session_head("b") == mine.id


def test_pulled_documents_are_not_duplicated(forked: Forked, other: Repo) -> None:
    repo = forked.repo
    push(repo, other, name="origin", session="a")
    push(repo, other, name="origin", session="b")

    back = pull(repo, other, name="origin")

    assert back.transfer.docs == 0 and back.transfer.objects == 0
    assert _docs(repo) == _docs(other)
    assert len(_docs(other)) == len(forked.states) * Forked.DOCS_PER_EPOCH


def test_pull_of_a_session_the_remote_lacks_is_refused(
    forked: Forked, other: Repo
) -> None:
    with pytest.raises(InvalidInputError, match="has no session 'nope'"):
        pull(forked.repo, other, name="origin", session="nope")


# -- what travels below the epochs -------------------------------------------


def _delta_history(repo: Repo) -> list[ObjectId]:
    """Three epochs of a large tensor changed a little each time: deltas, chunks."""
    repo.storage = StorageOptions(chunk_size=1024)
    rng = np.random.default_rng(7)
    weights = rng.standard_normal(4096).astype(np.float32)
    session = repo.session("d")
    ids = []
    for number in range(3):
        weights = weights.copy()
        weights[number * 10 : number * 10 + 5] += 1.0
        epoch = session.commit({"w": weights, "small": np.arange(5.0)})
        assert epoch.id is not None
        ids.append(epoch.id)
    return ids


def _frames_with_dependencies(repo: Repo) -> int:
    assert isinstance(repo.objects, LocalObjectStore)
    return sum(
        1 for oid in repo.objects.iter_ids() if repo.objects.frame_dependencies(oid)
    )


def test_transfer_carries_delta_bases_and_chunks(repo: Repo, other: Repo) -> None:
    ids = _delta_history(repo)
    assert _frames_with_dependencies(repo) > 0

    push(repo, other, name="origin", session="d")

    assert set(other.objects.iter_ids()) == _reachable(repo, [ids[-1]])
    assert _frames_with_dependencies(other) == _frames_with_dependencies(repo)
    for oid in ids:
        want = repo.checkout(oid.hex).state
        got = other.checkout(oid.hex).state
        assert {k: v.tobytes() for k, v in got.items()} == {
            k: v.tobytes() for k, v in want.items()
        }


def test_a_format_1_destination_gets_whole_frames(repo: Repo, tmp_path: Path) -> None:
    ids = _delta_history(repo)
    target = tmp_path / "old"
    Repo.init(target, durable=False).close()
    config_path = target / ".mvc" / "config.json"
    config = json.loads(config_path.read_text())
    config["version"] = 1
    config_path.write_text(json.dumps(config))

    with Repo.open(target, durable=False) as old:
        push(repo, old, name="origin", session="d")

        for oid in old.objects.iter_ids():
            assert old.objects.get_framed(oid)[6] in (ENCODING_RAW, ENCODING_ZSTD)
        assert_clean(old)
        state = old.checkout(ids[-1].hex).state
        assert state["w"].tobytes() == repo.checkout(ids[-1].hex).state["w"].tobytes()


def _drifting_history(repo: Repo, epochs: int = 5) -> list[ObjectId]:
    # a large tensor a little further from epoch 1 each epoch: differences
    # whose third byte plane holds small values, so packed sections
    rng = np.random.default_rng(4)
    weights = rng.standard_normal(1 << 18).astype(np.float32)
    session = repo.session("d")
    ids = []
    for _ in range(epochs):
        noise = rng.standard_normal(weights.size).astype(np.float32)
        weights = (weights * (1 + np.float32(1e-3) * noise)).astype(np.float32)
        epoch = session.commit({"w": weights})
        assert epoch.id is not None
        ids.append(epoch.id)
    return ids


def _methods_and_encodings(repo: Repo) -> tuple[set[int], set[int]]:
    methods: set[int] = set()
    encodings: set[int] = set()
    for oid in repo.objects.iter_ids():
        layout = parse_frame(repo.objects.get_framed(oid))
        encodings.add(layout.encoding)
        methods.update(section.method for section in layout.sections)
    return methods, encodings


def test_a_format_2_destination_gets_frames_it_reads(
    repo: Repo, tmp_path: Path
) -> None:
    ids = _drifting_history(repo)
    methods, encodings = _methods_and_encodings(repo)
    assert SECTION_PACKED in methods and ENCODING_DIFF in encodings
    target = tmp_path / "old"
    Repo.init(target, durable=False).close()
    config_path = target / ".mvc" / "config.json"
    config = json.loads(config_path.read_text())
    config["version"] = 2
    config_path.write_text(json.dumps(config))

    with Repo.open(target, durable=False) as old:
        push(repo, old, name="origin", session="d")

        methods, encodings = _methods_and_encodings(old)
        assert SECTION_PACKED not in methods
        assert not encodings & DELTA_ENCODINGS
        assert_clean(old)
        for oid in ids:
            want = repo.checkout(oid.hex).state["w"].tobytes()
            assert old.checkout(oid.hex).state["w"].tobytes() == want
        # and what it then writes itself is format 2 too
        _drifting_history(old, epochs=3)
        methods, encodings = _methods_and_encodings(old)
        assert SECTION_PACKED not in methods and ENCODING_DIFF not in encodings


@pytest.mark.damaged
def test_a_corrupt_source_frame_is_refused_and_no_ref_moves(
    forked: Forked, other: Repo
) -> None:
    repo = forked.repo
    state = repo.get(forked.a[-1].state)
    assert isinstance(state, State)
    tensor = repo.get(state.tensors["weight"])
    assert isinstance(tensor, Tensor)
    region = stored_region(repo, tensor.data)

    def flip(frame: bytearray) -> None:
        frame[-1] ^= 0xFF

    overwrite_region(region, flip)

    with pytest.raises(CorruptObjectError) as found:
        push(repo, other, name="origin", session="a")

    assert tensor.data.hex in found.value.message
    assert other.session_head("a") is None
    assert list(other.index.iter_entries()) == []
    assert repo.refs.get("remotes/origin/a") is None


def test_dropped_weights_stay_dropped_on_the_remote(
    forked: Forked, other: Repo
) -> None:
    repo = forked.repo
    dropped = retain(repo, "a", RetainPolicy(keep_last=1)).dropped
    assert dropped
    collect(repo, grace_s=0)

    push(repo, other, name="origin", session="a")
    push(repo, other, name="origin", session="b")

    assert set(other.dropped_epochs()) == set(dropped)
    some = next(iter(dropped))
    with pytest.raises(WeightsDroppedError):
        other.checkout(some.hex)
    head = _head(repo, "a")
    _assert_same_state(other.checkout(head.hex).state, forked.states[head])


def test_progress_counts_every_object_and_byte(forked: Forked, other: Repo) -> None:
    seen: list[TransferProgress] = []

    report = push(forked.repo, other, name="origin", session="b", progress=seen.append)

    assert seen
    assert [p.objects for p in seen] == list(range(1, len(seen) + 1))
    assert seen[-1].objects == seen[-1].total
    assert seen[-1].bytes == report.transfer.bytes


# -- remotes in the config -----------------------------------------------------


def test_remotes_are_added_listed_and_removed(forked: Forked, other: Repo) -> None:
    repo = forked.repo
    spec = remote_spec("origin", [str(other.path.parent)])
    add_remote(repo, spec)
    backends = remote_spec(
        "servers",
        ["gs://bucket-a/prefix", "os+http://127.0.0.1:9200/metrics"],
        refs="mongodb://127.0.0.1:27017/db",
    )
    add_remote(repo, backends)

    assert [s.name for s in list_remotes(repo)] == ["origin", "servers"]
    assert get_remote(repo, "origin").path == other.path.resolve()
    assert get_remote(repo, "servers").uris["objects"] == "gs://bucket-a/prefix"
    with pytest.raises(InvalidInputError, match="already exists"):
        add_remote(repo, spec)

    with open_remote(get_remote(repo, "origin")) as opened:
        push(repo, opened, name="origin", session="a")
    assert repo.refs.get("remotes/origin/a") is not None

    remove_remote(repo, "origin")

    assert [s.name for s in list_remotes(repo)] == ["servers"]
    assert list(repo.refs.iter_refs("remotes/")) == []
    assert other.session_head("a") == _head(repo, "a")


@pytest.mark.parametrize("name", ["a/b", "-x", ".hidden", "HEAD", "", "x y"])
def test_bad_remote_names_are_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidNameError):
        remote_spec(name, [str(tmp_path)])


@pytest.mark.parametrize(
    ("locations", "options", "match"),
    [
        ([], {}, "has no location"),
        (["gs://bucket-a/p"], {}, "has no refs or metrics URI"),
        (["ftp://host/x"], {}, "names no backend"),
        (["gs://bucket-a/p", "gs://bucket-b/p"], {}, "two objects URIs"),
        (["somewhere"], {"objects": "gs://bucket-a/p"}, "both a path"),
        (["nowhere/at/all"], {}, "no mvcstore repository"),
        (["gs://bucket-a/p"], {"refs": "local", "metrics": "local"}, "'local'"),
    ],
)
def test_bad_remote_locations_are_refused(
    locations: list[str], options: dict[str, str], match: str
) -> None:
    with pytest.raises(InvalidInputError, match=match):
        remote_spec("origin", locations, **options)


@pytest.mark.parametrize(
    "refs",
    [
        "mongodb://user:s3cret-word@127.0.0.1:27017/db",
        "mongodb://127.0.0.1:27017/db?password=s3cret-word",
    ],
)
def test_credentials_in_a_remote_uri_are_refused_unshown(refs: str) -> None:
    with pytest.raises(InvalidInputError) as refused:
        remote_spec(
            "origin",
            objects="gs://bucket-a/p",
            refs=refs,
            metrics="os+http://127.0.0.1:9200/m",
        )

    assert "credentials" in refused.value.message
    assert "s3cret" not in refused.value.message
    assert "s3cret" not in (refused.value.hint or "")


def test_a_pulled_tag_that_differs_is_left_alone_and_not_fetched(
    forked: Forked, other: Repo
) -> None:
    repo = forked.repo
    push(repo, other, name="origin", session="a")
    theirs = other.session("side").commit(make_state("x", 1))
    assert theirs.id is not None
    other.tag("best", theirs.id.hex)
    other.delete_session("side")
    other.set_head("a")
    other.tag("first", "a#1")
    repo.tag("best", "a#2")

    report = pull(repo, other, name="origin")

    tags = {u.name: u.status for u in report.updates if u.kind == "tag"}
    assert tags == {"best": DIVERGED, "first": CREATED}
    assert repo.refs.get("tags/best") == repo.resolve_id("a#2")
    assert repo.refs.get("tags/first") == repo.resolve_id("a#1")
    assert theirs.id not in set(repo.objects.iter_ids())


def test_push_refuses_a_name_the_remote_uses_for_a_tag(
    forked: Forked, other: Repo
) -> None:
    repo = forked.repo
    push(repo, other, name="origin", session="a")
    other.tag("b", "a#1")

    with pytest.raises(InvalidInputError, match="has a tag named 'b'"):
        push(repo, other, name="origin", session="b")

    assert other.session_head("b") is None
