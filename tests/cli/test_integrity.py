"""A damaged object file is named by `mvc checkout` and `mvc fsck`, exit 1."""

from __future__ import annotations

from safetensors.numpy import load_file
from support import drop_object, overwrite_region, stored_region

from mvcstore import Repo


def _flip_one_byte_of_tensor_data(root, revision, tensor):
    with Repo.open(root) as repo:
        epoch = repo.resolve(revision)
        state = repo.get(epoch.state)
        blob_id = repo.get(state.tensors[tensor]).data
        # packed or loose: the byte flipped lies inside this object's frame
        region = stored_region(repo, blob_id)
    overwrite_region(region, lambda frame: _flip_byte(frame, len(frame) // 2 + 8))
    return blob_id.hex


def _flip_byte(frame, position):
    frame[position] ^= 0x01


def test_flipped_byte_fails_checkout_and_fsck_naming_the_object(history, kit):
    history.damaged = True
    damaged = _flip_one_byte_of_tensor_data(history.root, "main", "layer.weight")

    checkout = history.mvc.fails("checkout", "main", "-o", "out")
    fsck = history.mvc("fsck", expect=1)
    fsck_json = history.mvc("fsck", "--json", expect=1).json()
    other = history.mvc("checkout", "fork", "-o", "fork-files")

    assert damaged in checkout.err
    assert "mvc fsck" in checkout.err
    assert not (history.root / "out").exists()
    assert damaged in fsck.out
    assert "1 problem" in fsck.out
    assert fsck.err.startswith("error: fsck found 1 problem")
    assert [p["object"] for p in fsck_json["problems"]] == [damaged]
    assert "main" in fsck_json["problems"][0]["affects"]
    # epochs that do not need the damaged object still read back bit for bit
    assert other.code == 0
    kit.assert_same_tensors(
        load_file(str(history.root / "fork-files" / "weights.safetensors")),
        history.weights["fork#4"],
    )


def test_missing_object_file_is_reported_by_fsck(history):
    history.damaged = True
    with Repo.open(history.root) as repo:
        state_id = repo.resolve("main#1").state
        drop_object(repo, state_id)

    result = history.mvc("fsck", "--json", expect=1).json()

    assert [(p["kind"], p["object"]) for p in result["problems"]] == [
        ("missing", state_id.hex)
    ]
