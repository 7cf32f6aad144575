"""Tensor conversion between the wire, numpy and safetensors (no site needed)."""

from __future__ import annotations

import numpy as np
import pytest

import campfire
from campfire.common.v1 import tensor_pb2

DTYPES = {
    "float32": tensor_pb2.D_TYPE_FLOAT32,
    "float64": tensor_pb2.D_TYPE_FLOAT64,
    "float16": tensor_pb2.D_TYPE_FLOAT16,
    "int8": tensor_pb2.D_TYPE_INT8,
    "int16": tensor_pb2.D_TYPE_INT16,
    "int32": tensor_pb2.D_TYPE_INT32,
    "int64": tensor_pb2.D_TYPE_INT64,
    "uint8": tensor_pb2.D_TYPE_UINT8,
    "bool": tensor_pb2.D_TYPE_BOOL,
}


@pytest.mark.parametrize("name", sorted(DTYPES))
def test_every_dtype_round_trips_with_its_shape(name: str) -> None:
    array = (np.arange(24) % 3).astype(name).reshape(2, 3, 4)
    tensor = campfire.from_numpy("t", array)
    assert tensor.dtype == DTYPES[name] and list(tensor.shape) == [2, 3, 4] and len(tensor.data) == array.nbytes
    back = campfire.to_numpy(tensor)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_the_wire_is_little_endian_row_major_whatever_the_array() -> None:
    big_endian = np.array([[1, 2], [3, 4]], dtype=">i4")
    assert campfire.from_numpy("t", big_endian).data == np.array([1, 2, 3, 4], dtype="<i4").tobytes()
    transposed = np.arange(6, dtype=np.float32).reshape(2, 3).T
    assert campfire.from_numpy("t", transposed).data == np.ascontiguousarray(transposed).tobytes()
    assert list(campfire.from_numpy("scalar", np.float32(2.5)).shape) == []


def test_bad_tensors_are_refused_naming_the_tensor() -> None:
    with pytest.raises(campfire.InvalidArgument, match="'w': 8 bytes, but shape \\[3\\]"):
        campfire.to_numpy(tensor_pb2.Tensor(name="w", dtype=tensor_pb2.D_TYPE_FLOAT32, shape=[3], data=bytes(8)))
    with pytest.raises(campfire.InvalidArgument, match="'c'.*complex128 has no campfire DType"):
        campfire.from_numpy("c", np.zeros(2, dtype=np.complex128))
    bf16 = tensor_pb2.Tensor(name="b", dtype=tensor_pb2.D_TYPE_BFLOAT16, shape=[2], data=bytes(4))
    with pytest.raises(campfire.InvalidArgument, match="D_TYPE_BFLOAT16 has no numpy equivalent"):
        campfire.to_numpy(bf16)
    assert campfire.to_numpy(bf16, bfloat16_as_uint16=True).dtype == np.dtype("<u2")


def test_data_exchanges_and_safetensors_keep_names_order_and_values() -> None:
    arrays = {"fc.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "fc.bias": np.array([1.5, -2], dtype=np.float64)}
    data = campfire.data_exchange(arrays, meta={"NUM_STEPS_CURRENT_ROUND": 3})
    assert [tensor.name for tensor in data.tensors] == ["fc.weight", "fc.bias"]
    assert data.meta["NUM_STEPS_CURRENT_ROUND"] == 3
    for source in (campfire.arrays_of(data), campfire.from_safetensors(campfire.to_safetensors(data))):
        assert set(source) == set(arrays)
        for name, array in arrays.items():
            assert source[name].dtype == array.dtype
            np.testing.assert_array_equal(source[name], array)
