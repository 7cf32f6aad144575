"""The deterministic filters (exclude_vars, include_vars, clip_l2, percentile_sparsify) against plain float loops.

campfire.privacy computes with numpy; the TypeScript filters (services/privacy/)
with loops over Float32Arrays, each element in float64 and rounded to float32
once (Math.fround). Python floats are the same IEEE doubles, so the reference
below, written as the TypeScript is, must give the same bits as numpy on every
case of filter_cases.py; test/privacy-determinism.test.ts compares the
TypeScript filters with the same cases' numpy outputs.
"""

from __future__ import annotations

import base64
import math
import re
from typing import Any, Optional

import numpy as np
import pytest

from campfire.common.v1 import exchange_pb2, tensor_pb2
from filter_cases import all_cases

FLOAT32 = tensor_pb2.D_TYPE_FLOAT32


def float32(values: list[float]) -> list[float]:
    return np.array(values, dtype=np.float64).astype(np.float32).astype(np.float64).tolist()


class Wire:
    def __init__(self, tensor: dict) -> None:
        self.name: str = tensor["name"]
        self.dtype: int = tensor["dtype"]
        self.shape: list[int] = tensor["shape"]
        self.data = base64.b64decode(tensor["data"])
        self.values: list[float] = np.frombuffer(self.data, dtype="<f4").astype(np.float64).tolist() if self.dtype == FLOAT32 else []

    def with_values(self, values: list[float]) -> "Wire":
        made = Wire({"name": self.name, "dtype": FLOAT32, "shape": self.shape, "data": ""})
        made.values = float32(values)
        made.data = np.array(made.values, dtype="<f4").tobytes()
        return made


def reference(case: dict[str, Any]) -> list[Wire]:
    """The filters as the TypeScript runs them: per element, in order, float64, one rounding per rebuilt element."""
    tensors = [Wire(tensor) for tensor in case["tensors"]]
    measured = case["direction"] == "result" and case["kind"] in (exchange_pb2.DATA_KIND_WEIGHTS, exchange_pb2.DATA_KIND_UNSPECIFIED)
    bases = {tensor.name: tensor for tensor in map(Wire, case["base"]) if tensor.dtype == FLOAT32} if measured else {}

    def base_of(tensor: Wire) -> list[float]:
        base = bases.get(tensor.name)
        return base.values if base is not None and base.shape == tensor.shape else [0.0] * len(tensor.values)

    def update_of(tensor: Wire) -> list[float]:
        return [value - base for value, base in zip(tensor.values, base_of(tensor))]

    def rebuilt(change) -> list[Wire]:  # noqa: ANN001
        out = []
        for tensor in tensors:
            new: Optional[list[float]] = change(tensor, base_of(tensor), update_of(tensor)) if tensor.dtype == FLOAT32 else None
            out.append(tensor if new is None else tensor.with_values(new))
        return out

    for spec in case["filters"]:
        name, args = spec["name"], spec["args"]
        if name in ("exclude_vars", "include_vars"):
            keep = name == "include_vars"
            tensors = [tensor for tensor in tensors if any(re.fullmatch(pattern, tensor.name) for pattern in args["patterns"]) == keep]
        elif name == "clip_l2":
            max_norm = float(args["max_norm"])

            def scale(squared: float) -> float:
                return max_norm / math.sqrt(squared) if math.sqrt(squared) > max_norm else 1.0

            total = 0.0
            for tensor in tensors:
                for value in update_of(tensor) if tensor.dtype == FLOAT32 else []:
                    total += value * value

            def clip(tensor: Wire, base: list[float], update: list[float]) -> Optional[list[float]]:
                squared = 0.0
                for value in update:
                    squared += value * value
                s = scale(squared) if args.get("per_tensor") else scale(total)
                return None if s == 1.0 else [b + s * u for b, u in zip(base, update)]

            tensors = rebuilt(clip)
        elif name == "percentile_sparsify":
            magnitudes = sorted(abs(value) for tensor in tensors if tensor.dtype == FLOAT32 for value in update_of(tensor))
            if not magnitudes:
                continue
            percentile = float(args["percentile"])
            threshold = magnitudes[math.ceil((percentile / 100) * len(magnitudes)) - 1] if percentile > 0 else 0.0
            gamma = args.get("gamma")

            def sparsify(tensor: Wire, base: list[float], update: list[float]) -> list[float]:
                return [b if abs(u) < threshold else b + (u if gamma is None else min(gamma, max(-gamma, u))) for b, u in zip(base, update)]

            tensors = rebuilt(sparsify)
    return tensors


CASES = all_cases()


def test_there_are_a_few_hundred_cases_with_every_deterministic_filter_and_the_edge_cases() -> None:
    assert len(CASES) == 400
    assert {spec["name"] for case in CASES for spec in case["filters"]} == {"exclude_vars", "include_vars", "clip_l2", "percentile_sparsify"}
    assert sum(1 for case in CASES if case["direction"] == "result" and case["base"]) > 150


@pytest.mark.parametrize("index", range(len(CASES)))
def test_numpy_gives_the_bits_of_plain_float_loops(index: int) -> None:
    case = CASES[index]
    expected = [Wire(tensor) for tensor in case["expected"]["tensors"]]
    got = reference(case)
    assert [tensor.name for tensor in expected] == [tensor.name for tensor in got], case["name"]
    for mine, theirs in zip(expected, got):
        assert (mine.dtype, mine.shape) == (theirs.dtype, theirs.shape), (case["name"], mine.name)
        assert mine.data == theirs.data, (case["name"], mine.name, np.frombuffer(mine.data, dtype="<f4") if mine.dtype == FLOAT32 else None, theirs.values)
    assert case["expected"]["meta"] == {"filters_applied": [spec["name"] for spec in case["filters"]]}
