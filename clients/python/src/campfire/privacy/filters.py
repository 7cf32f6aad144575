"""The built-in filters, each made from its config's args and applied to an Update in place.

Same semantics in every language (docs/privacy.md; TypeScript: services/privacy/):
exclude_vars / include_vars by full-match regular expressions on the names
(every dtype); clip_l2, gaussian_noise and percentile_sparsify on the FLOAT32
tensors' float64 update. The norm is one running sum, element after element
and tensor after tensor, so that TypeScript, which sums in a loop, gets the
same bits (np.sum would sum pairwise).
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Protocol

import numpy as np
import re2  # type: ignore[import-untyped]

from campfire.errors import FilterFailed
from campfire.privacy.update import Update, UpdateTensor

MAX_PATTERNS = 256
MAX_PATTERN_LENGTH = 1024
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a bad pattern is reported as InvalidFilterConfig, not also on stderr


class _NamePattern(Protocol):
    def fullmatch(self, text: str) -> object: ...


Problem = Callable[[str, str], Exception]  # (path relative to the filter, what is wrong) -> the error to raise


@dataclass
class ChainState:
    """What the filters of one chain share while it runs."""

    # The max_norm of the last clip_l2 applied: gaussian_noise's noise_multiplier is relative to it.
    last_clip_norm: Optional[float] = None
    # Added to the DataExchange's meta (what gaussian_noise applied, for the site's accountant).
    meta: dict[str, object] = field(default_factory=dict)


class Filter(Protocol):
    @property
    def name(self) -> str: ...

    def apply(self, update: Update, state: ChainState) -> None: ...


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

    def patterns(self, name: str) -> tuple[_NamePattern, ...]:
        """Tensor name patterns: RE2 syntax, matched in linear time, so a job's pattern from a site the client
        does not trust cannot stall the agent by backtracking (the TypeScript agent uses re2js alike)."""
        value = self._args.get(name)
        if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
            raise self._problem(f"args.{name}", f"must be a non-empty list of regular expressions (strings), not {value!r}")
        if len(value) > MAX_PATTERNS:
            raise self._problem(f"args.{name}", f"must list at most {MAX_PATTERNS} patterns")
        compiled = []
        for index, pattern in enumerate(value):
            if len(pattern) > MAX_PATTERN_LENGTH:
                raise self._problem(f"args.{name}[{index}]", f"must be at most {MAX_PATTERN_LENGTH} characters")
            try:
                compiled.append(re2.compile(pattern, options=_RE2_OPTIONS))
            except re2.error as error:
                reason = error.args[0].decode() if error.args and isinstance(error.args[0], bytes) else str(error)
                raise self._problem(f"args.{name}[{index}]", f"{pattern!r} is not an RE2 regular expression: {reason}") from error
        return tuple(compiled)

    def done(self, known: tuple[str, ...]) -> None:
        unknown = sorted(set(self._args) - set(known))
        if unknown:
            raise self._problem(f"args.{unknown[0]}", f"is not an arg of this filter (it takes {', '.join(known)})")


def _matches(patterns: tuple[_NamePattern, ...], name: str) -> bool:
    return any(pattern.fullmatch(name) for pattern in patterns)


@dataclass(frozen=True)
class ExcludeVars:
    patterns: tuple[_NamePattern, ...]
    name: str = "exclude_vars"

    def apply(self, update: Update, state: ChainState) -> None:
        update.tensors = [tensor for tensor in update.tensors if not _matches(self.patterns, tensor.name)]


@dataclass(frozen=True)
class IncludeVars:
    patterns: tuple[_NamePattern, ...]
    name: str = "include_vars"

    def apply(self, update: Update, state: ChainState) -> None:
        update.tensors = [tensor for tensor in update.tensors if _matches(self.patterns, tensor.name)]


def _running_sum_of_squares(tensor: UpdateTensor, start: float) -> float:
    """start + u_1^2 + u_2^2 + ..., added one element after the other (np.add.accumulate is sequential)."""
    values = tensor.values
    if values.size == 0:
        return start
    squares = values * values
    squares[0] = start + squares[0]
    return float(np.add.accumulate(squares, out=squares)[-1])


def _scale(tensors: list[UpdateTensor], squared_norm: float, max_norm: float) -> None:
    norm = math.sqrt(squared_norm)
    if norm > max_norm:
        scale = max_norm / norm
        for tensor in tensors:
            np.multiply(tensor.values, scale, out=tensor.values)
            tensor.dirty = True


@dataclass(frozen=True)
class ClipL2:
    max_norm: float
    per_tensor: bool = False
    name: str = "clip_l2"

    def apply(self, update: Update, state: ChainState) -> None:
        state.last_clip_norm = self.max_norm
        tensors = update.float32()
        if self.per_tensor:
            for tensor in tensors:
                _scale([tensor], _running_sum_of_squares(tensor, 0.0), self.max_norm)
            return
        total = 0.0
        for tensor in tensors:
            total = _running_sum_of_squares(tensor, total)
        _scale(tensors, total, self.max_norm)


@dataclass(frozen=True)
class GaussianNoise:
    """N(0, stddev^2) on every element; stddev given, or noise_multiplier x the max_norm of the last clip_l2 applied."""

    stddev: Optional[float] = None
    noise_multiplier: Optional[float] = None
    seed: Optional[int] = None
    name: str = "gaussian_noise"

    def apply(self, update: Update, state: ChainState) -> None:
        stddev = self.stddev
        if self.noise_multiplier is not None:
            if state.last_clip_norm is None:
                raise FilterFailed("gaussian_noise: noise_multiplier needs a clip_l2 applied before it in this task's chain, and none applied to this task")
            stddev = self.noise_multiplier * state.last_clip_norm
            state.meta.update({"dp_noise_multiplier": self.noise_multiplier, "dp_clip_norm": state.last_clip_norm})
        if not stddev:
            return
        # Without a seed (tests only), from the OS's secure source, fresh for every update.
        generator = np.random.Generator(np.random.PCG64(self.seed if self.seed is not None else secrets.randbits(128)))
        for tensor in update.float32():
            np.add(tensor.values, generator.normal(0.0, stddev, tensor.values.size), out=tensor.values)
            tensor.dirty = True


@dataclass(frozen=True)
class PercentileSparsify:
    percentile: float = 90.0
    gamma: Optional[float] = None
    name: str = "percentile_sparsify"

    def apply(self, update: Update, state: ChainState) -> None:
        tensors = update.float32()
        count = sum(tensor.values.size for tensor in tensors)
        if count == 0:
            return
        threshold = 0.0
        if self.percentile > 0:
            rank = math.ceil((self.percentile / 100) * count)
            magnitudes = np.abs(np.concatenate([tensor.values for tensor in tensors]))
            threshold = float(np.partition(magnitudes, rank - 1)[rank - 1])
        for tensor in tensors:
            values = tensor.values
            dropped = np.abs(values) < threshold
            if self.gamma is not None:
                np.clip(values, -self.gamma, self.gamma, out=values)
            # -0.0: base + -0.0 is the base's own bits (a -0.0 base included), as "the element becomes its base value" says.
            values[dropped] = -0.0
            tensor.dirty = True


def make_filter(name: object, raw_args: object, clip_before: bool, problem: Problem) -> Filter:
    """The filter `name` with its args checked; `clip_before`: a clip_l2 comes before it in its list (noise_multiplier needs one)."""
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


def _gaussian_noise(args: Args, clip_before: bool, problem: Problem) -> GaussianNoise:
    if args.has("stddev") == args.has("noise_multiplier"):
        raise problem("args", "needs exactly one of stddev and noise_multiplier")
    seed = args.integer("seed")
    if args.has("stddev"):
        return GaussianNoise(stddev=args.number("stddev", None, lambda value: value >= 0, "a number >= 0"), seed=seed)
    multiplier = args.number("noise_multiplier", None, lambda value: value >= 0, "a number >= 0")
    if not clip_before:
        raise problem("args.noise_multiplier", "needs a clip_l2 before it in this list (the noise is noise_multiplier x its max_norm); give stddev instead, or clip first")
    return GaussianNoise(noise_multiplier=multiplier, seed=seed)


# Each built-in filter's name and the args it takes.
BUILT_IN: dict[str, tuple[str, ...]] = {
    "exclude_vars": ("patterns",),
    "include_vars": ("patterns",),
    "clip_l2": ("max_norm", "per_tensor"),
    "gaussian_noise": ("stddev", "noise_multiplier", "seed"),
    "percentile_sparsify": ("percentile", "gamma"),
}
