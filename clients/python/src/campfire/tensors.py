"""Tensors between the wire (campfire.common.v1.Tensor), numpy and safetensors.

A Tensor on the wire is a dtype, a shape and the elements' bytes, row-major
and little-endian. `to_numpy` views those bytes without a copy where it can
(the array is then read-only); `from_numpy` copies the array once into the
message. bfloat16 has no numpy dtype: such tensors are refused unless asked for
as raw uint16 (`bfloat16_as_uint16=True`).
"""

from __future__ import annotations

from typing import Mapping, Optional, Union

import numpy as np

from campfire.common.v1 import exchange_pb2, tensor_pb2
from campfire.errors import InvalidArgument

Tensor = tensor_pb2.Tensor
DataExchange = exchange_pb2.DataExchange

_NUMPY_OF: dict[int, np.dtype] = {
    tensor_pb2.D_TYPE_FLOAT32: np.dtype("<f4"),
    tensor_pb2.D_TYPE_FLOAT64: np.dtype("<f8"),
    tensor_pb2.D_TYPE_FLOAT16: np.dtype("<f2"),
    tensor_pb2.D_TYPE_INT8: np.dtype("i1"),
    tensor_pb2.D_TYPE_INT16: np.dtype("<i2"),
    tensor_pb2.D_TYPE_INT32: np.dtype("<i4"),
    tensor_pb2.D_TYPE_INT64: np.dtype("<i8"),
    tensor_pb2.D_TYPE_UINT8: np.dtype("u1"),
    tensor_pb2.D_TYPE_BOOL: np.dtype("?"),
}
# By (kind, width), whatever the byte order: "f4" is FLOAT32 in either.
_DTYPE_OF: dict[tuple[str, int], int] = {(dtype.kind, dtype.itemsize): wire for wire, dtype in _NUMPY_OF.items()}


def _wire_dtype(array: np.ndarray, name: str) -> int:
    wire = _DTYPE_OF.get((array.dtype.kind, array.dtype.itemsize))
    if wire is None:
        supported = ", ".join(sorted(str(dtype) for dtype in _NUMPY_OF.values()))
        raise InvalidArgument(f"tensor {name!r}: numpy dtype {array.dtype} has no campfire DType; use one of {supported}")
    return wire


def to_numpy(tensor: Tensor, bfloat16_as_uint16: bool = False) -> np.ndarray:
    """The tensor as a numpy array of its shape (read-only: it views the message's bytes)."""
    dtype = _NUMPY_OF.get(tensor.dtype)
    if dtype is None and tensor.dtype == tensor_pb2.D_TYPE_BFLOAT16 and bfloat16_as_uint16:
        dtype = np.dtype("<u2")
    if dtype is None:
        raise InvalidArgument(f"tensor {tensor.name!r}: dtype {tensor_pb2.DType.Name(tensor.dtype) if tensor.dtype in tensor_pb2.DType.values() else tensor.dtype} has no numpy equivalent")
    shape = tuple(int(size) for size in tensor.shape)
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if len(tensor.data) != count * dtype.itemsize:
        raise InvalidArgument(f"tensor {tensor.name!r}: {len(tensor.data)} bytes, but shape {list(shape)} of {dtype} needs {count * dtype.itemsize}")
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape)


def from_numpy(name: str, array: Union[np.ndarray, np.generic, float, int]) -> Tensor:
    """A wire tensor named `name` holding `array` (any layout or byte order; sent little-endian, row-major)."""
    array = np.asarray(array)
    wire = _wire_dtype(array, name)
    little = array.astype(array.dtype.newbyteorder("<"), copy=False) if array.dtype.byteorder == ">" else array
    return Tensor(name=name, dtype=wire, shape=list(array.shape), data=np.ascontiguousarray(little).tobytes())


def arrays_of(data: DataExchange) -> dict[str, np.ndarray]:
    """A DataExchange's tensors as {name: array}, in their order."""
    return {tensor.name: to_numpy(tensor) for tensor in data.tensors}


def data_exchange(
    arrays: Mapping[str, np.ndarray],
    meta: Optional[Mapping[str, object]] = None,
    values: Optional[Mapping[str, object]] = None,
    kind: int = exchange_pb2.DATA_KIND_WEIGHTS,
) -> DataExchange:
    """A DataExchange of `kind` with the arrays as tensors (in the mapping's order), meta and values as Structs."""
    data = DataExchange(kind=kind, tensors=[from_numpy(name, array) for name, array in arrays.items()])
    if meta:
        data.meta.update(dict(meta))
    if values:
        data.values.update(dict(values))
    return data


def to_safetensors(data: Union[DataExchange, Mapping[str, np.ndarray]], metadata: Optional[Mapping[str, str]] = None) -> bytes:
    """The tensors in the safetensors format (what a job's initial_model file holds). Needs `safetensors`."""
    from safetensors.numpy import save

    arrays = arrays_of(data) if isinstance(data, DataExchange) else dict(data)
    return save({name: np.ascontiguousarray(array) for name, array in arrays.items()}, metadata=dict(metadata) if metadata else None)


def from_safetensors(blob: bytes) -> dict[str, np.ndarray]:
    """The arrays of a safetensors file's bytes. Needs `safetensors`."""
    from safetensors.numpy import load

    return load(blob)
