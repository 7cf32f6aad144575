"""The update a filter chain works on, and the DataExchange it is rebuilt into.

For a result of kind WEIGHTS (or UNSPECIFIED, which FedAvg reads as WEIGHTS)
the update of a FLOAT32 tensor is u = float64(result) - float64(base), the base
being the task's tensor of the same name and shape as the site sent it; for
WEIGHT_DIFF, task data, other kinds and tensors without such a base it is the
tensor itself. Other dtypes are carried along untouched (only exclude_vars and
include_vars act on them). The float64 values are made on first use, so a chain
of name filters never converts a tensor. A tensor a value filter changed is
rebuilt after that filter as float32(base + u') computed in float64 (base 0
without one); every other tensor keeps its exact bytes. docs/privacy.md is the specification
both languages follow (the TypeScript agent's is services/privacy/).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

from campfire.common.v1 import exchange_pb2, tensor_pb2
from campfire.tensors import to_numpy

FLOAT32 = tensor_pb2.D_TYPE_FLOAT32
_KINDS_WITH_BASE = (exchange_pb2.DATA_KIND_WEIGHTS, exchange_pb2.DATA_KIND_UNSPECIFIED)


class UpdateTensor:
    """One tensor of the update: its wire form, and for FLOAT32 its float64 update values (flat)."""

    def __init__(self, tensor: tensor_pb2.Tensor, base: Optional[tensor_pb2.Tensor]) -> None:
        self.tensor = tensor
        self._base = base
        self._base_values: Optional[np.ndarray] = None
        self._values: Optional[np.ndarray] = None
        self.dirty = False  # a filter changed `values`: the tensor is rebuilt before the next filter reads it

    @property
    def name(self) -> str:
        return self.tensor.name

    @property
    def is_float32(self) -> bool:
        return self.tensor.dtype == FLOAT32

    @property
    def values(self) -> np.ndarray:
        """The update u in float64, flat (FLOAT32 tensors only); a filter changes it in place and sets `dirty`."""
        if self._values is None:
            values = to_numpy(self.tensor).reshape(-1).astype(np.float64)
            if self._base is not None:
                if self._base_values is None:
                    self._base_values = to_numpy(self._base).reshape(-1).astype(np.float64)
                values -= self._base_values
            self._values = values
        return self._values

    def settle(self) -> None:
        """Rebuilds a changed tensor: float32(base + u) computed in float64, base 0 without one.

        After every filter, not once at the end: the next filter measures its update from the float32
        tensor, as the TypeScript filters do, so that a chain gives the same bits in both.
        """
        if not self.dirty:
            return
        rebuilt = ((self._base_values if self._base_values is not None else 0.0) + self.values).astype("<f4")
        self.tensor = tensor_pb2.Tensor(name=self.tensor.name, dtype=FLOAT32, shape=self.tensor.shape, data=rebuilt.tobytes())
        self._values = None
        self.dirty = False


class Update:
    """The tensors of a task's data or a trainer's result, as the filters see them, in their order."""

    def __init__(self, source: exchange_pb2.DataExchange, tensors: list[UpdateTensor]) -> None:
        self.source = source
        self.tensors = tensors

    @classmethod
    def of_data(cls, data: exchange_pb2.DataExchange) -> "Update":
        """Task data: the tensors themselves are the update."""
        return cls(data, [UpdateTensor(tensor, None) for tensor in data.tensors])

    @classmethod
    def of_result(cls, result: exchange_pb2.DataExchange, task_data: exchange_pb2.DataExchange) -> "Update":
        """A result, against the task's data as the site sent it (the base of a WEIGHTS result)."""
        bases: dict[str, tensor_pb2.Tensor] = {}
        if result.kind in _KINDS_WITH_BASE:
            bases = {tensor.name: tensor for tensor in task_data.tensors if tensor.dtype == FLOAT32}

        def base_of(tensor: tensor_pb2.Tensor) -> Optional[tensor_pb2.Tensor]:
            base = bases.get(tensor.name)
            return base if base is not None and tensor.dtype == FLOAT32 and list(base.shape) == list(tensor.shape) else None

        return cls(result, [UpdateTensor(tensor, base_of(tensor)) for tensor in result.tensors])

    def float32(self) -> list[UpdateTensor]:
        return [tensor for tensor in self.tensors if tensor.is_float32]

    def rebuilt(self, meta: Mapping[str, Any]) -> exchange_pb2.DataExchange:
        """The filtered DataExchange: the source's kind and values, the update's tensors, the source's meta updated with `meta`."""
        data = exchange_pb2.DataExchange(kind=self.source.kind, tensors=[tensor.tensor for tensor in self.tensors])
        for field in ("values", "meta"):
            if self.source.HasField(field):
                getattr(data, field).CopyFrom(getattr(self.source, field))
        data.meta.update(dict(meta))
        return data
