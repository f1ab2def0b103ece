"""The torch array adapter: every dtype round trips bit for bit."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mvcstore import InvalidInputError, RawTensor, Repo  # noqa: E402
from mvcstore.arrays import adapter_for, to_numpy, to_raw  # noqa: E402
from mvcstore.objects import DTYPES  # noqa: E402
from mvcstore.torch.tensors import DTYPE_NAMES, TorchAdapter  # noqa: E402

ADAPTER = TorchAdapter()
ALL_DTYPES = sorted(DTYPE_NAMES, key=str)


def random_tensor(dtype: torch.dtype, shape: tuple[int, ...], seed: int = 0):
    """A tensor of arbitrary bit patterns (NaNs included), valid for its dtype."""
    generator = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=generator).bool()
    size = torch.empty((), dtype=dtype).element_size()
    raw = torch.randint(0, 256, (math.prod(shape) * size,), generator=generator)
    return raw.to(torch.uint8).view(dtype).reshape(shape)


def same_bits(left: torch.Tensor, right: torch.Tensor) -> bool:
    if left.dtype != right.dtype or left.shape != right.shape:
        return False
    flat = [t.contiguous().reshape(-1).view(torch.uint8) for t in (left, right)]
    return torch.equal(flat[0], flat[1])


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(3, 5), (), (0,), (2, 0, 3), (1, 1, 7)], ids=str)
def test_every_dtype_round_trips_bit_for_bit(dtype, shape) -> None:
    tensor = random_tensor(dtype, shape)

    raw = ADAPTER.to_raw(tensor)
    back = ADAPTER.from_raw(raw)

    assert raw.dtype == DTYPE_NAMES[dtype]
    assert raw.shape == shape
    assert raw.data.nbytes == math.prod(shape) * DTYPES[raw.dtype]
    assert same_bits(back, tensor)


def test_every_stored_dtype_name_has_a_torch_dtype() -> None:
    assert set(DTYPE_NAMES.values()) == set(DTYPES)


@pytest.mark.parametrize(
    "view",
    [
        lambda t: t.t(),
        lambda t: t[:, ::2],
        lambda t: t[1:, 1:],
        lambda t: t[0].expand(4, 6),
        lambda t: t.unsqueeze(0).transpose(0, 2),
    ],
    ids=["transposed", "strided", "offset", "expanded", "permuted"],
)
def test_non_contiguous_tensor_is_stored_in_c_order(view) -> None:
    tensor = view(random_tensor(torch.float32, (5, 6)))

    back = ADAPTER.from_raw(ADAPTER.to_raw(tensor))

    assert back.is_contiguous()
    assert same_bits(back, tensor.contiguous())


def test_lazy_conjugate_and_negative_views_store_their_values() -> None:
    complex_tensor = random_tensor(torch.complex64, (4,))
    conjugated = complex_tensor.conj()
    negated = complex_tensor.conj().imag

    assert conjugated.is_conj()
    assert negated.is_neg()
    for tensor in (conjugated, negated):
        assert same_bits(
            ADAPTER.from_raw(ADAPTER.to_raw(tensor)),
            tensor.resolve_conj().resolve_neg(),
        )


def test_bytes_are_little_endian_and_match_numpy() -> None:
    tensor = torch.tensor([1.5, -2.0], dtype=torch.bfloat16)

    raw = ADAPTER.to_raw(tensor)

    assert bytes(raw.data) == bytes([0xC0, 0x3F, 0x00, 0xC0])
    assert to_numpy(raw).astype(np.float32).tolist() == [1.5, -2.0]


def test_parameter_that_requires_grad_is_stored() -> None:
    param = torch.nn.Parameter(torch.ones(2, 2))

    back = ADAPTER.from_raw(ADAPTER.to_raw(param))

    assert not back.requires_grad
    assert same_bits(back, param.detach())


def test_restored_tensor_is_writable_and_owns_its_memory() -> None:
    data = bytearray(np.arange(4, dtype=np.float32).tobytes())
    raw = RawTensor(dtype="F32", shape=(4,), data=memoryview(bytes(data)))

    back = ADAPTER.from_raw(raw)
    back.add_(1)

    assert back.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert to_numpy(raw).tolist() == [0.0, 1.0, 2.0, 3.0]


def test_meta_tensor_is_refused_with_a_hint() -> None:
    with pytest.raises(InvalidInputError, match="meta tensor") as caught:
        ADAPTER.to_raw(torch.empty(3, device="meta"))

    assert caught.value.hint is not None
    assert "to_empty" in caught.value.hint


def test_sparse_tensor_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="layout"):
        ADAPTER.to_raw(torch.eye(3).to_sparse())


def test_dtype_without_a_stored_name_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="cannot be stored"):
        ADAPTER.to_raw(torch.zeros(2, dtype=torch.float8_e4m3fnuz))


def test_non_tensor_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="expected a torch tensor"):
        ADAPTER.to_raw([1.0, 2.0])


def test_bool_data_other_than_zero_or_one_is_refused() -> None:
    raw = RawTensor(dtype="BOOL", shape=(2,), data=memoryview(b"\x01\x02"))

    with pytest.raises(InvalidInputError, match="other than 0 or 1"):
        ADAPTER.from_raw(raw)


def test_byte_count_that_does_not_match_the_shape_is_refused() -> None:
    raw = RawTensor(dtype="F32", shape=(2,), data=memoryview(b"\x00" * 7))

    with pytest.raises(InvalidInputError, match="needs 8 bytes"):
        ADAPTER.from_raw(raw)


def test_torch_adapter_loads_by_name_and_generic_conversion_uses_it() -> None:
    tensor = random_tensor(torch.float16, (3,))

    assert isinstance(adapter_for("torch"), TorchAdapter)
    assert same_bits(adapter_for("torch").from_raw(to_raw(tensor)), tensor)


def test_repository_round_trips_every_dtype_through_checkout(repo: Repo) -> None:
    state = {
        f"t{index}": random_tensor(dtype, (2, 3), seed=index)
        for index, dtype in enumerate(ALL_DTYPES)
    }
    state["scalar"] = torch.tensor(7, dtype=torch.int64)
    state["empty"] = torch.zeros(0, 4, dtype=torch.bfloat16)

    repo.session("s").commit(state)
    back = repo.checkout("s", as_="torch").state

    assert set(back) == set(state)
    for name, tensor in state.items():
        assert same_bits(back[name], tensor), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensor_is_copied_to_the_cpu() -> None:
    tensor = random_tensor(torch.bfloat16, (8, 8))

    back = ADAPTER.from_raw(ADAPTER.to_raw(tensor.cuda()))

    assert back.device.type == "cpu"
    assert same_bits(back, tensor)
