"""The session's delta cache: where each tensor's next base is kept."""

from __future__ import annotations

import numpy as np

from mvcstore.codec import ObjectId
from mvcstore.stores.blobs import CachedTensor, DeltaCache


def _entry(data: np.ndarray) -> CachedTensor:
    return CachedTensor(
        dtype="U8",
        shape=(data.size,),
        blob=ObjectId(bytes(32)),
        data=data,
        depth=0,
        chunks=None,
    )


def test_a_first_fill_is_one_allocation_cut_at_64_byte_boundaries() -> None:
    cache = DeltaCache(1 << 20)

    buffers = cache.buffers_for([(("", "a"), 100), (("", "b"), 64), (("", "c"), 1)])

    assert [b.size for b in buffers if b is not None] == [100, 64, 1]
    bases = {b.base is not None and id(b.base) for b in buffers if b is not None}
    assert len(bases) == 1  # views of one array
    starts = [b.ctypes.data for b in buffers if b is not None]
    assert starts[1] - starts[0] == 128 and starts[2] - starts[1] == 64


def test_later_fills_reuse_same_sizes_and_replace_new_shapes() -> None:
    cache = DeltaCache(1 << 20)
    cache.begin(None)
    first = cache.buffers_for([(("", "a"), 100), (("", "b"), 64)])
    for name, buffer in zip("ab", first, strict=True):
        assert buffer is not None
        cache.stage(("", name), _entry(buffer))
    cache.publish(_entry(first[0]).blob)  # any id will do here

    second = cache.buffers_for([(("", "a"), 100), (("", "b"), 32), (("", "c"), 8)])

    assert second[0] is first[0]
    assert cache.get(("", "b")) is None  # the old shape is no base any more
    # a shrunk tensor (pruned) keeps its memory: no new allocation
    assert second[1] is not None and second[1].size == 32
    assert first[1] is not None and second[1].ctypes.data == first[1].ctypes.data
    assert second[2] is not None and second[2].size == 8
    for name, buffer in zip("abc", second, strict=True):
        assert buffer is not None
        cache.stage(("", name), _entry(buffer))
    cache.publish(_entry(first[0]).blob)
    assert cache.nbytes == 128 + 64 + 8  # the first fill's allocation, and c

    # a grown one gets a fresh buffer
    third = cache.buffers_for([(("", "a"), 100), (("", "b"), 48), (("", "c"), 8)])
    assert third[1] is not None and third[1].size == 48
    assert not np.shares_memory(third[1], first[1])


def test_tensors_beyond_the_limit_get_no_buffer() -> None:
    cache = DeltaCache(200)  # 128 + 64: parts are rounded up to 64 bytes

    buffers = cache.buffers_for([(("", "a"), 100), (("", "b"), 100), (("", "c"), 50)])

    assert buffers[0] is not None and buffers[1] is None
    assert buffers[2] is not None and buffers[2].size == 50


def _fill(cache: DeltaCache, sizes: dict[str, int]) -> list[np.ndarray | None]:
    cache.begin(cache.epoch)
    buffers = cache.buffers_for([(("", name), size) for name, size in sizes.items()])
    for name, buffer in zip(sizes, buffers, strict=True):
        if buffer is not None:
            cache.stage(("", name), _entry(buffer))
    cache.publish(ObjectId(bytes(32)))
    return buffers


def test_memory_kept_alive_stays_within_the_limit_as_tensors_shrink() -> None:
    # a shrunk tensor's slice keeps its whole old buffer alive: that counts
    cache = DeltaCache(1000)
    _fill(cache, {"a": 900})
    assert cache.nbytes == 960  # one allocation, 64-byte aligned
    buffers = _fill(cache, {"a": 500, "b": 800})
    old = buffers[0]
    assert old is not None  # reused: 500 of 900
    assert buffers[1] is None  # no room beside the 960 kept alive
    assert cache.nbytes <= 1000
    buffers = _fill(cache, {"a": 100, "b": 800})
    # a shrank by more than half: new memory, the old buffer is let go
    assert buffers[0] is not None and not np.shares_memory(buffers[0], old)
    assert buffers[1] is not None
    assert cache.nbytes == 128 + 832  # one new allocation for both
    for sizes in ({"a": 90, "b": 700, "c": 300}, {"a": 80, "b": 600, "c": 300}):
        _fill(cache, sizes)
        assert cache.nbytes <= 1000


def test_many_small_tensors_stay_within_the_limit() -> None:
    # each part of the first fill's allocation is rounded up to 64 bytes
    cache = DeltaCache(4096)
    buffers = _fill(cache, {f"t{index}": 4 for index in range(1000)})
    assert sum(buffer is not None for buffer in buffers) == 4096 // 64
    assert cache.nbytes <= 4096
