"""The built-in filters, each made from its config's args and applied to an Update in place.

Same semantics in every language (/work/coord/FILTERS.md, docs/privacy.md):
exclude_vars / include_vars by full-match regular expressions on the names
(every dtype); clip_l2, gaussian_noise and percentile_sparsify on the FLOAT32
tensors' float64 update. The norm is summed sequentially (each tensor's squares
in element order, the tensors' subtotals in tensor order) so that TypeScript,
which sums in a loop, gets the same bits: np.sum would sum pairwise.
"""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Protocol

import numpy as np

from campfire.privacy.update import Update, UpdateTensor

Problem = Callable[[str, str], Exception]  # (path relative to the filter, what is wrong) -> the error to raise


class Filter(Protocol):
    name: str

    def apply(self, update: Update) -> None: ...


class Args:
    """A filter's args, read field by field; what is left unread at the end is an unknown arg."""

    def __init__(self, args: object, problem: Problem) -> None:
        if args is None:
            args = {}
        if not isinstance(args, Mapping):
            raise problem("args", f"must be an object of named args, not {type(args).__name__}")
        self._args = dict(args)
        self._problem = problem

    def has(self, name: str) -> bool:
        return name in self._args

    def number(self, name: str, default: Optional[float], rule: Callable[[float], bool], what: str) -> float:
        value = self._args.get(name)
        if value is None:
            if default is None:
                raise self._problem(f"args.{name}", f"is required: {what}")
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not rule(float(value)):
            raise self._problem(f"args.{name}", f"must be {what}, not {value!r}")
        return float(value)

    def integer(self, name: str) -> Optional[int]:
        value = self._args.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value != int(value):
            raise self._problem(f"args.{name}", f"must be an integer, not {value!r}")
        return int(value)

    def boolean(self, name: str, default: bool) -> bool:
        value = self._args.get(name, default)
        if not isinstance(value, bool):
            raise self._problem(f"args.{name}", f"must be true or false, not {value!r}")
        return value

    def patterns(self, name: str) -> tuple[re.Pattern[str], ...]:
        value = self._args.get(name)
        if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
            raise self._problem(f"args.{name}", f"must be a non-empty list of regular expressions (strings), not {value!r}")
        compiled = []
        for index, pattern in enumerate(value):
            try:
                compiled.append(re.compile(pattern))
            except re.error as error:
                raise self._problem(f"args.{name}[{index}]", f"{pattern!r} is not a regular expression: {error}") from error
        return tuple(compiled)

    def done(self, known: tuple[str, ...]) -> None:
        unknown = sorted(set(self._args) - set(known))
        if unknown:
            raise self._problem(f"args.{unknown[0]}", f"is not an arg of this filter (it takes {', '.join(known)})")


def _matches(patterns: tuple[re.Pattern[str], ...], name: str) -> bool:
    return any(pattern.fullmatch(name) for pattern in patterns)


@dataclass(frozen=True)
class ExcludeVars:
    patterns: tuple[re.Pattern[str], ...]
    name: str = "exclude_vars"

    def apply(self, update: Update) -> None:
        update.tensors = [tensor for tensor in update.tensors if not _matches(self.patterns, tensor.name)]


@dataclass(frozen=True)
class IncludeVars:
    patterns: tuple[re.Pattern[str], ...]
    name: str = "include_vars"

    def apply(self, update: Update) -> None:
        update.tensors = [tensor for tensor in update.tensors if _matches(self.patterns, tensor.name)]


def _squared_norm(tensor: UpdateTensor) -> float:
    """The sum of squares of the tensor's update, added in element order (np.add.accumulate is sequential)."""
    values = tensor.values
    if values.size == 0:
        return 0.0
    squares = values * values
    return float(np.add.accumulate(squares, out=squares)[-1])


def _scale(tensors: list[UpdateTensor], squared_norm: float, max_norm: float) -> None:
    norm = math.sqrt(squared_norm)
    if norm > max_norm:
        scale = max_norm / norm
        for tensor in tensors:
            np.multiply(tensor.values, scale, out=tensor.values)
            tensor.changed = True


@dataclass(frozen=True)
class ClipL2:
    max_norm: float
    per_tensor: bool = False
    name: str = "clip_l2"

    def apply(self, update: Update) -> None:
        tensors = update.float32()
        if self.per_tensor:
            for tensor in tensors:
                _scale([tensor], _squared_norm(tensor), self.max_norm)
            return
        total = 0.0
        for tensor in tensors:
            total += _squared_norm(tensor)
        _scale(tensors, total, self.max_norm)


@dataclass(frozen=True)
class GaussianNoise:
    stddev: float
    seed: Optional[int] = None
    name: str = "gaussian_noise"

    def apply(self, update: Update) -> None:
        # Without a seed (tests only), from the OS's secure source, fresh for every update.
        generator = np.random.Generator(np.random.PCG64(self.seed if self.seed is not None else secrets.randbits(128)))
        for tensor in update.float32():
            np.add(tensor.values, generator.normal(0.0, self.stddev, tensor.values.size), out=tensor.values)
            tensor.changed = True


@dataclass(frozen=True)
class PercentileSparsify:
    percentile: float = 90.0
    gamma: Optional[float] = None
    name: str = "percentile_sparsify"

    def apply(self, update: Update) -> None:
        tensors = update.float32()
        count = sum(tensor.values.size for tensor in tensors)
        if count == 0:
            return
        rank = math.ceil((self.percentile / 100) * count)
        threshold = 0.0
        if rank > 0:
            magnitudes = np.abs(np.concatenate([tensor.values for tensor in tensors]))
            threshold = float(np.partition(magnitudes, rank - 1)[rank - 1])
        for tensor in tensors:
            values = tensor.values
            values[np.abs(values) < threshold] = 0.0
            if self.gamma is not None:
                np.clip(values, -self.gamma, self.gamma, out=values)
            tensor.changed = True


def make_filter(name: object, raw_args: object, clip_before: Optional[ClipL2], problem: Problem) -> Filter:
    """The filter `name` with its args checked; `clip_before` is the entry's nearest clip_l2 before it (for noise_multiplier)."""
    if not isinstance(name, str) or name not in BUILT_IN:
        raise problem("name", f"{name!r} is not a filter; the built-in filters are {', '.join(BUILT_IN)}")
    args = Args(raw_args, problem)
    args.done(BUILT_IN[name])
    if name == "exclude_vars":
        return ExcludeVars(args.patterns("patterns"))
    if name == "include_vars":
        return IncludeVars(args.patterns("patterns"))
    if name == "clip_l2":
        return ClipL2(args.number("max_norm", None, lambda value: value > 0, "a number > 0"), args.boolean("per_tensor", False))
    if name == "gaussian_noise":
        return _gaussian_noise(args, clip_before, problem)
    gamma = args.number("gamma", None, lambda value: value > 0, "a number > 0") if args.has("gamma") else None
    return PercentileSparsify(args.number("percentile", 90.0, lambda value: 0 <= value < 100, "a number in [0, 100)"), gamma)


def _gaussian_noise(args: Args, clip_before: Optional[ClipL2], problem: Problem) -> GaussianNoise:
    if args.has("stddev") == args.has("noise_multiplier"):
        raise problem("args", "needs exactly one of stddev and noise_multiplier")
    seed = args.integer("seed")
    if args.has("stddev"):
        return GaussianNoise(args.number("stddev", None, lambda value: value >= 0, "a number >= 0"), seed)
    multiplier = args.number("noise_multiplier", None, lambda value: value >= 0, "a number >= 0")
    if clip_before is None:
        raise problem("args.noise_multiplier", "needs a clip_l2 before this filter in the same entry (its max_norm scales the noise); give stddev instead")
    return GaussianNoise(multiplier * clip_before.max_norm, seed)


# Each built-in filter's name and the args it takes.
BUILT_IN: dict[str, tuple[str, ...]] = {
    "exclude_vars": ("patterns",),
    "include_vars": ("patterns",),
    "clip_l2": ("max_norm", "per_tensor"),
    "gaussian_noise": ("stddev", "noise_multiplier", "seed"),
    "percentile_sparsify": ("percentile", "gamma"),
}
