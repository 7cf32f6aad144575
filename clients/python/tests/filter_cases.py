"""The cases of the cross-language test of the deterministic filters, with this package's outputs.

    python clients/python/tests/filter_cases.py <out.json>

writes a few hundred cases (fixed seed): input tensors (and, for results, the
task's tensors they are measured against), one filter list of exclude_vars,
include_vars, clip_l2 and percentile_sparsify, and what campfire.privacy made of
them. test/privacy-determinism.test.ts runs the same cases through the
TypeScript filters and compares bytes; test_filter_determinism.py checks them
against plain float loops. Edge cases first: a zero update, a norm exactly at
max_norm, ties at the percentile's threshold, p = 0, -0.0, empty tensors,
tensors of other dtypes passing through, base tensors of another shape.
"""

from __future__ import annotations

import base64
import json
import math
import sys
from typing import Any

import numpy as np
from google.protobuf import json_format

from campfire.common.v1 import exchange_pb2
from campfire.privacy import FilterConfig, filter_data, filter_result
from campfire.tensors import arrays_of, data_exchange, from_numpy

SEED = 20261204
CASES = 400
Arrays = dict[str, np.ndarray]


def wire(arrays: Arrays) -> list[dict]:
    return [{"name": name, "dtype": int(tensor.dtype), "shape": list(tensor.shape), "data": base64.b64encode(tensor.data).decode()} for name, tensor in ((name, from_numpy(name, array)) for name, array in arrays.items())]


def run(direction: str, kind: int, tensors: Arrays, base: Arrays, filters: list[dict]) -> exchange_pb2.DataExchange:
    """This package's output for one case (the filters read as one entry of a job's config, as the TS side does)."""
    key = "task_data_filters" if direction == "data" else "task_result_filters"
    chain = getattr(FilterConfig.of_job({key: [{"filters": filters}]}), "data" if direction == "data" else "result")[0].filters
    data = data_exchange(tensors, kind=kind)
    return filter_data(chain, data) if direction == "data" else filter_result(chain, data, data_exchange(base))


def case(name: str, direction: str, kind: int, tensors: Arrays, base: Arrays, filters: list[dict]) -> dict[str, Any]:
    out = run(direction, kind, tensors, base, filters)
    meta = json_format.MessageToDict(out.meta)
    return {"name": name, "direction": direction, "kind": kind, "tensors": wire(tensors), "base": wire(base), "filters": filters, "expected": {"tensors": wire(arrays_of(out)), "meta": meta}}


def sequential_norm(update: list[np.ndarray]) -> float:
    total = 0.0
    for values in update:
        for value in values.reshape(-1).astype(np.float64).tolist():
            total += value * value
    return math.sqrt(total)


def edge_cases() -> list[dict[str, Any]]:
    W, DIFF = exchange_pb2.DATA_KIND_WEIGHTS, exchange_pb2.DATA_KIND_WEIGHT_DIFF
    base = {"a": np.array([1.5, -2.0, 0.25, 3.0], dtype=np.float32), "b": np.arange(6, dtype=np.float32).reshape(2, 3) / 7}
    moved = {"a": base["a"] + np.array([0.5, -1, 2, 0], dtype=np.float32), "b": base["b"] * np.float32(1.5)}
    at_norm = sequential_norm([moved[name].astype(np.float64) - base[name].astype(np.float64) for name in ("a", "b")])
    ties = np.array([1, -1, 1, 2, -2, 0.5, -0.5, 1, 3, -1], dtype=np.float32)
    mixed = {"f": np.array([0.1, -7, 2.5], dtype=np.float32), "i": np.array([5, -6], dtype=np.int32), "d": np.array([1e300, -2.5]), "h": np.array([1.5], dtype=np.float16), "u": np.array([1, 255], dtype=np.uint8), "flag": np.array([True, False])}
    signed_zeros = {"z": np.array([-0.0, 0.0, -0.0, 1e-30, -1e-30, 3], dtype=np.float32)}
    clip = lambda max_norm, per_tensor=False: {"name": "clip_l2", "args": {"max_norm": max_norm, **({"per_tensor": True} if per_tensor else {})}}
    sparsify = lambda p, gamma=None: {"name": "percentile_sparsify", "args": {"percentile": p, **({"gamma": gamma} if gamma is not None else {})}}
    return [
        case("zero update, clip", "result", W, dict(base), base, [clip(0.1)]),
        case("zero update, sparsify p 50", "result", W, dict(base), base, [sparsify(50)]),
        case("zero update, WEIGHT_DIFF of zeros, sparsify", "result", DIFF, {"a": np.zeros(4, dtype=np.float32)}, base, [sparsify(90, 1.0)]),
        case("norm exactly at max_norm", "result", W, moved, base, [clip(at_norm)]),
        case("norm a hair over max_norm", "result", W, moved, base, [clip(np.nextafter(at_norm, 0))]),
        case("norm exactly at max_norm, per tensor", "result", W, moved, base, [clip(sequential_norm([moved["a"].astype(np.float64) - base["a"]]), True)]),
        case("ties at the threshold, p 50", "data", W, {"t": ties}, {}, [sparsify(50)]),
        case("ties at the threshold, p 60, gamma", "data", W, {"t": ties}, {}, [sparsify(60, 1.5)]),
        case("ties, p 99.99", "data", W, {"t": ties}, {}, [sparsify(99.99)]),
        case("p 0 keeps everything", "result", W, moved, base, [sparsify(0)]),
        case("p 0 with gamma clips only", "result", W, moved, base, [sparsify(0, 0.3)]),
        case("other dtypes pass through clip and sparsify", "result", W, mixed, {"f": np.zeros(3, dtype=np.float32), "i": np.zeros(2, dtype=np.int32)}, [clip(1.0), sparsify(50, 0.5)]),
        case("other dtypes excluded and included by name", "data", W, mixed, {}, [{"name": "exclude_vars", "args": {"patterns": ["[dh]"]}}, {"name": "include_vars", "args": {"patterns": ["f|i|fla.*"]}}]),
        case("signed zeros and tiny values, sparsify", "data", W, signed_zeros, {}, [sparsify(50)]),
        case("signed zeros against a base, clip and sparsify", "result", W, signed_zeros, {"z": np.array([0.0, -0.0, -0.0, 1, -1, -0.0], dtype=np.float32)}, [clip(0.5), sparsify(30)]),
        case("empty tensors only", "result", W, {"e": np.zeros((0, 3), dtype=np.float32)}, {"e": np.zeros((0, 3), dtype=np.float32)}, [clip(1.0), sparsify(50)]),
        case("no tensors", "data", W, {}, {}, [clip(1.0), sparsify(90)]),
        case("base of another shape counts as base 0", "result", W, {"a": moved["a"].reshape(2, 2)}, base, [clip(1.0)]),
        case("UNSPECIFIED kind measured from the base", "result", exchange_pb2.DATA_KIND_UNSPECIFIED, moved, base, [clip(1.0)]),
        case("METRICS kind is its own update", "result", exchange_pb2.DATA_KIND_METRICS, moved, base, [clip(1.0)]),
        case("huge and tiny magnitudes", "data", W, {"x": np.array([3e38, -3e38, 1e-45, -1e-45, 1], dtype=np.float32)}, {}, [clip(2.0), sparsify(40, 1e30)]),
        case("everything excluded", "result", W, moved, base, [{"name": "exclude_vars", "args": {"patterns": [".*"]}}, clip(1.0)]),
    ]


def random_values(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    style = rng.integers(5)
    count = int(np.prod(shape))
    if style == 0:
        values = rng.normal(0, 10.0 ** rng.integers(-6, 4), count)
    elif style == 1:  # a coarse grid: many ties
        values = rng.integers(-4, 5, count) * 0.25
    elif style == 2:
        values = rng.uniform(-1, 1, count) * 10.0 ** rng.integers(-30, 30, count)
    elif style == 3:
        values = np.where(rng.random(count) < 0.5, 0.0, rng.normal(0, 1, count))
    else:
        values = rng.standard_cauchy(count)
    return values.astype(np.float32).reshape(shape)


def random_filter(rng: np.random.Generator, names: list[str]) -> dict:
    kind = rng.choice(["exclude_vars", "include_vars", "clip_l2", "clip_l2", "percentile_sparsify", "percentile_sparsify"])
    if kind in ("exclude_vars", "include_vars"):
        picked = [str(name) for name in rng.choice(names, size=min(len(names), int(rng.integers(1, 3))), replace=False)] if names else ["none"]
        return {"name": kind, "args": {"patterns": [f"{name}(\\..*)?" if rng.random() < 0.5 else name for name in picked]}}
    if kind == "clip_l2":
        return {"name": "clip_l2", "args": {"max_norm": float(10.0 ** rng.uniform(-3, 3)), **({"per_tensor": True} if rng.random() < 0.4 else {})}}
    percentile = float(rng.choice([0, 10, 50, 75.5, 90, 99, 99.9, rng.uniform(0, 100)]))
    return {"name": "percentile_sparsify", "args": {"percentile": percentile, **({"gamma": float(10.0 ** rng.uniform(-2, 2))} if rng.random() < 0.5 else {})}}


def random_case(rng: np.random.Generator, index: int) -> dict[str, Any]:
    names = [f"layer{n}.{part}" for n in range(int(rng.integers(1, 4))) for part in ("weight", "bias")][: int(rng.integers(1, 6))]
    tensors: Arrays = {}
    for name in names:
        shape = tuple(int(size) for size in rng.integers(0 if rng.random() < 0.05 else 1, 9, size=int(rng.integers(1, 3))))
        tensors[name] = random_values(rng, shape)
    if rng.random() < 0.2:
        tensors["count"] = rng.integers(-100, 100, 3).astype(np.int64)
    direction = "data" if rng.random() < 0.25 else "result"
    kind = exchange_pb2.DATA_KIND_WEIGHTS if direction == "data" or rng.random() < 0.7 else exchange_pb2.DATA_KIND_WEIGHT_DIFF
    base: Arrays = {}
    if direction == "result":
        for name, array in tensors.items():
            if array.dtype == np.float32 and rng.random() < 0.85:
                base[name] = (array - random_values(rng, array.shape)).astype(np.float32) if rng.random() < 0.8 else array.copy()
    filters = [random_filter(rng, names) for _ in range(int(rng.integers(1, 4)))]
    return case(f"random {index}", direction, kind, tensors, base, filters)


def all_cases() -> list[dict[str, Any]]:
    rng = np.random.default_rng(SEED)
    edges = edge_cases()
    return edges + [random_case(rng, index) for index in range(CASES - len(edges))]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: filter_cases.py <out.json>", file=sys.stderr)
        return 2
    with open(argv[1], "w", encoding="utf-8") as out:
        json.dump({"seed": SEED, "cases": all_cases()}, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
