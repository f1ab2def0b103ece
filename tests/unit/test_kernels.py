"""The compiled loops of ``mvcstore/_kernels.c`` against the NumPy reference.

Each transform (split into planes, XOR, zigzag difference, and their inverse
joins) must give exactly the bytes of the NumPy code it replaces, for every
width and for unaligned buffers; a repository written with the loops and one
written without them hold the same frames; bad arguments are refused with
ValueError, never a crash.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mvcstore import Repo, encodings, native
from mvcstore.codec import parse_frame
from mvcstore.encodings import (
    JOIN_ADD,
    JOIN_SET,
    JOIN_XOR,
    diff_planes,
    join_planes,
    pack_small,
    split_planes,
    unpack_small,
    xor_planes,
)
from mvcstore.stores.blobs import StorageOptions

kernels = native.kernels
needs_kernels = pytest.mark.skipif(
    kernels is None, reason="the C extension is not built (no compiler?)"
)

WIDTHS = (1, 2, 4, 8)


def _reference(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(encodings, "_kernels", None)
        return fn(*args, **kwargs)


def _pair(data: bytes, width: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    # two equally long arrays of whole elements, starting ``offset`` bytes
    # into their buffers (unaligned views must work too)
    count = len(data) // (2 * width)
    size = count * width
    raw = np.frombuffer(b"\0" * offset + data[: 2 * size], dtype=np.uint8)
    return raw[offset : offset + size].copy(), raw[offset + size :].copy()


def _unaligned(array: np.ndarray, offset: int) -> np.ndarray:
    holder = np.zeros(array.size + offset, dtype=np.uint8)
    view = holder[offset:]
    view[:] = array
    return view


@needs_kernels
@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(min_size=0, max_size=600),
    width=st.sampled_from(WIDTHS),
    offset=st.integers(0, 7),
)
def test_split_gives_the_numpy_planes(data: bytes, width: int, offset: int) -> None:
    new, old = _pair(data, width, offset)
    new, old = _unaligned(new, offset), _unaligned(old, offset)
    for transform in (diff_planes, xor_planes):
        fast = [p.copy() for p in transform(new, old, width)]
        slow = [p.copy() for p in _reference(transform, new, old, width)]
        assert [p.tobytes() for p in fast] == [p.tobytes() for p in slow]
    fast = [p.copy() for p in split_planes(new, width)]
    slow = [p.copy() for p in _reference(split_planes, new, width)]
    assert [p.tobytes() for p in fast] == [p.tobytes() for p in slow]


@needs_kernels
@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(min_size=0, max_size=600),
    width=st.sampled_from(WIDTHS),
    offset=st.integers(0, 7),
)
def test_join_gives_the_numpy_elements(data: bytes, width: int, offset: int) -> None:
    planes_source, out_source = _pair(data, width, offset)
    count = planes_source.size // width
    planes = [
        _unaligned(planes_source[k * count : (k + 1) * count], offset)
        for k in range(width)
    ]
    for mode in (JOIN_SET, JOIN_XOR, JOIN_ADD):
        fast = _unaligned(out_source, offset)
        slow = out_source.copy()
        join_planes(planes, width, fast, mode)
        _reference(join_planes, planes, width, slow, mode)
        assert fast.tobytes() == slow.tobytes(), mode


@needs_kernels
@settings(max_examples=100, deadline=None)
@given(data=st.binary(min_size=0, max_size=800), width=st.sampled_from(WIDTHS))
def test_join_undoes_split(data: bytes, width: int) -> None:
    new, old = _pair(data, width, 0)
    planes = [p.copy() for p in diff_planes(new, old, width)]
    back = old.copy()
    join_planes(planes, width, back, JOIN_ADD)
    assert back.tobytes() == new.tobytes()
    planes = [p.copy() for p in xor_planes(new, old, width)]
    back = old.copy()
    join_planes(planes, width, back, JOIN_XOR)
    assert back.tobytes() == new.tobytes()
    planes = [p.copy() for p in split_planes(new, width)]
    back = np.zeros_like(new)
    join_planes(planes, width, back, JOIN_SET)
    assert back.tobytes() == new.tobytes()


@needs_kernels
@settings(max_examples=150, deadline=None)
@given(
    size=st.integers(0, 300),
    bits=st.sampled_from((1, 2, 4)),
    seed=st.integers(0, 2**32 - 1),
    offset=st.integers(0, 7),
)
def test_pack_gives_the_numpy_bytes(
    size: int, bits: int, seed: int, offset: int
) -> None:
    values = np.random.default_rng(seed).integers(0, 1 << bits, size, dtype=np.uint8)
    values = _unaligned(values, offset)
    fast = pack_small(values, bits)
    slow = _reference(pack_small, values, bits)
    assert fast.tobytes() == slow.tobytes()
    back = _unaligned(np.full(size, 0xEE, dtype=np.uint8), offset)
    unpack_small(_unaligned(fast, offset), bits, back)
    assert back.tobytes() == values.tobytes()
    slow_back = np.full(size, 0xEE, dtype=np.uint8)
    _reference(unpack_small, slow, bits, slow_back)
    assert slow_back.tobytes() == values.tobytes()


@needs_kernels
def test_extreme_differences_wrap() -> None:
    # the largest steps either way: the difference wraps, zigzag is exact
    for width, kind in ((2, np.uint16), (4, np.uint32), (8, np.uint64)):
        top = np.iinfo(kind).max
        new = np.array([0, top, top // 2 + 1, 1, top], dtype=kind).view(np.uint8)
        old = np.array([top, 0, top // 2, top, top], dtype=kind).view(np.uint8)
        fast = [p.copy() for p in diff_planes(new, old, width)]
        slow = _reference(diff_planes, new, old, width)
        assert [p.tobytes() for p in fast] == [p.tobytes() for p in slow]
        back = old.copy()
        join_planes(fast, width, back, JOIN_ADD)
        assert back.tobytes() == new.tobytes()


@needs_kernels
def test_bad_arguments_are_refused() -> None:
    assert kernels is not None
    data = np.arange(16, dtype=np.uint8)
    out = np.empty(16, dtype=np.uint8)
    with pytest.raises(ValueError, match="width 3"):
        kernels.split(data, data, 3, out, 2)
    with pytest.raises(ValueError, match="mode 7"):
        kernels.split(data, data, 4, out, 7)
    with pytest.raises(ValueError, match="whole number"):
        kernels.split(data[:15], data[:15], 4, out, 2)
    with pytest.raises(ValueError, match="out holds 8 bytes"):
        kernels.split(data, data, 4, out[:8], 2)
    with pytest.raises(ValueError, match="old holds 8 bytes"):
        kernels.split(data, data[:8], 4, out, 2)
    with pytest.raises(TypeError):
        kernels.split(data, None, 4, out, 2)
    with pytest.raises(TypeError):
        kernels.split(data, data, 4, b"read-only buffer", 0)
    planes = [data[:4], data[4:8], data[8:12], data[12:]]
    with pytest.raises(ValueError, match="3 planes given for width 4"):
        kernels.join(planes[:3], 4, out, 0)
    with pytest.raises(ValueError, match="plane 2 holds 3 bytes"):
        kernels.join([planes[0], planes[1], data[:3], planes[3]], 4, out, 0)
    with pytest.raises(TypeError, match="sequence"):
        kernels.join(5, 4, out, 0)
    with pytest.raises(ValueError, match="bits 3"):
        kernels.pack(data, 3, out[:6])
    with pytest.raises(ValueError, match="out holds 16 bytes, 8 are needed"):
        kernels.pack(data, 4, out)
    with pytest.raises(ValueError, match="packed holds 16 bytes, 4 are needed"):
        kernels.unpack(data, 4, out[:8])
    # nothing was written by a refused call
    before = out.copy()
    with pytest.raises(ValueError):
        kernels.join(planes, 4, out, 9)
    assert out.tobytes() == before.tobytes()


@needs_kernels
def test_writeback_is_a_hint(tmp_path: Path) -> None:
    assert kernels is not None
    path = tmp_path / "file"
    with open(path, "wb") as handle:
        handle.write(b"x" * 100_000)
        handle.flush()
        assert kernels.writeback(handle.fileno(), 0, 100_000) in (True, False)
    # a closed or invalid descriptor: refused, not raised
    assert kernels.writeback(-1, 0, 10) is False
    assert path.read_bytes() == b"x" * 100_000


def _states() -> Iterator[dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    weights = rng.standard_normal((64, 300)).astype(np.float32)
    half = rng.standard_normal(5000).astype(np.float16)
    wide = rng.standard_normal(3000)
    steps = np.arange(4, dtype=np.int64)
    for epoch in range(7):
        yield {
            "w": weights,
            "h": half,
            "d": wide,
            "steps": steps + epoch,
            "mask": (rng.random(4096) < 0.7).astype(np.float32),
        }
        weights = weights + np.float32(1e-3) * rng.standard_normal(
            weights.shape
        ).astype(np.float32)
        half = (half + np.float16(0.01)).astype(np.float16)
        wide = wide * (1 + 1e-6)


def _blob_frames(root: Path) -> dict[str, bytes]:
    # the tensors' frames (epochs differ: they carry their commit times)
    repo = Repo.open(root)
    try:
        found: dict[str, bytes] = {}
        for oid in repo.objects.iter_ids():
            framed = bytes(repo.objects.get_framed(oid))
            if parse_frame(framed).kind == "blob":
                found[oid.hex] = framed
        return found
    finally:
        repo.close()


@needs_kernels
@pytest.mark.parametrize("difference", [True, False])
def test_both_paths_store_the_same_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, difference: bool
) -> None:
    options = StorageOptions(difference=difference, max_delta_depth=3)
    for name, compiled in (("fast", kernels), ("pure", None)):
        monkeypatch.setattr(encodings, "_kernels", compiled)
        repo = Repo.init(tmp_path / name)
        repo.storage = options
        session = repo.session("s")
        for state in _states():
            session.commit(state)
        for epoch in range(1, 8):
            back = repo.checkout(f"s#{epoch}", as_="numpy").state
            assert set(back) == {"w", "h", "d", "steps", "mask"}
        repo.close()
    monkeypatch.setattr(encodings, "_kernels", kernels)
    fast = _blob_frames(tmp_path / "fast")
    pure = _blob_frames(tmp_path / "pure")
    assert len(fast) > 20
    assert fast.keys() == pure.keys()
    assert fast == pure
    # and each reads the other's repository back, bit for bit
    for name in ("fast", "pure"):
        for compiled in (kernels, None):
            monkeypatch.setattr(encodings, "_kernels", compiled)
            repo = Repo.open(tmp_path / name)
            states = list(_states())
            for epoch in range(1, 8):
                back = repo.checkout(f"s#{epoch}", as_="numpy").state
                for key, value in states[epoch - 1].items():
                    assert np.asarray(back[key]).tobytes() == value.tobytes()
            repo.close()


def test_the_extension_is_built_where_it_can_be() -> None:
    # a machine with a C compiler and the Python headers builds it on install;
    # a silent build failure there would leave every commit three times slower
    import shutil
    import sysconfig

    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not (shutil.which("cc") or shutil.which("gcc")) or not headers.exists():
        pytest.skip("no C compiler or Python headers here")
    if os.environ.get("MVCSTORE_NO_KERNELS", "").strip().lower() not in native._UNSET:
        pytest.skip("turned off by MVCSTORE_NO_KERNELS")
    assert native.kernels is not None, "pip install -e . should have built it"


def test_the_switch_turns_the_loops_off(tmp_path: Path) -> None:
    # MVCSTORE_NO_KERNELS is read when mvcstore is imported
    import subprocess
    import sys

    probe = "from mvcstore import encodings; print(encodings.compiled_kernels())"
    for value, expected in (("1", "False"), ("yes", "False"), ("0", None), ("", None)):
        env = dict(os.environ, MVCSTORE_NO_KERNELS=value)
        out = subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        if expected is None:  # left on: in use wherever it was built
            expected = str(importlib.util.find_spec("mvcstore._kernels") is not None)
        assert out.stdout.strip() == expected, value
