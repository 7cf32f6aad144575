"""Filter configurations: a job's (config_fed_client.json, on every task) and the client's own.

Both hold `task_data_filters` and `task_result_filters`: lists of entries
`{"tasks": [names] (absent or "*": every task), "filters": [{"name", "args"}]}`.
The client's own configuration (`Agent(privacy=...)`: a dict or a .json file)
also says whether a job may bring filters at all (`allow_job_filters`), and its
filters always run: its data filters before the job's, its result filters after
them, so a site cannot switch them off. Every rule broken is an
InvalidFilterConfig naming the source, the entry and the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Union

from campfire.errors import InvalidFilterConfig
from campfire.privacy.filters import ClipL2, Filter, make_filter

DIRECTIONS = ("task_data_filters", "task_result_filters")
LOCAL_KEYS = (*DIRECTIONS, "allow_job_filters")


@dataclass(frozen=True)
class FilterEntry:
    tasks: Optional[frozenset[str]]  # None: every task
    filters: tuple[Filter, ...]

    def applies_to(self, task_name: str) -> bool:
        return self.tasks is None or task_name in self.tasks


def _object(value: object, fields: tuple[str, ...], what: str, at: str, problem: Callable[[str, str], InvalidFilterConfig]) -> Mapping[str, object]:
    """`value` as an object holding only `fields` (a typo is an error, not a silently ignored key)."""
    if not isinstance(value, Mapping):
        raise problem(at, f"must be an object {{{', '.join(fields)}}}")
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise problem(f"{at}.{unknown[0]}", f"is not a field of {what} (it has {' and '.join(fields)})")
    return value


def _within(problem: Callable[[str, str], InvalidFilterConfig], prefix: str) -> Callable[[str, str], InvalidFilterConfig]:
    """`problem` for paths relative to `prefix` (a filter's own fields)."""
    return lambda path, what: problem(f"{prefix}.{path}", what)


def _entries(value: object, source: str, key: str) -> tuple[FilterEntry, ...]:
    def problem(path: str, what: str) -> InvalidFilterConfig:
        return InvalidFilterConfig(source, f"{key}{path}", what)

    if value is None:
        return ()
    if not isinstance(value, list):
        raise problem("", f"must be a list of entries {{tasks, filters}}, not {type(value).__name__}")
    entries = []
    clip_before = False  # noise_multiplier scales a clip_l2's max_norm: one must come before it in this list
    for index, entry in enumerate(value):
        at = f"[{index}]"
        entry = _object(entry, ("tasks", "filters"), "a filter entry", at, problem)
        tasks = entry.get("tasks")
        if tasks is not None and (not isinstance(tasks, list) or not tasks or not all(isinstance(name, str) for name in tasks)):
            raise problem(f"{at}.tasks", f'must be a non-empty list of task names ("*": every task; omit it for every task), not {tasks!r}')
        filters = entry.get("filters")
        if not isinstance(filters, list):
            raise problem(f"{at}.filters", f"must be a list of filters {{name, args}}, not {filters!r}")
        made: list[Filter] = []
        for position, spec in enumerate(filters):
            here = f"{at}.filters[{position}]"
            spec = _object(spec, ("name", "args"), "a filter", here, problem)
            made.append(make_filter(spec.get("name"), spec.get("args"), clip_before, _within(problem, here)))
            clip_before = clip_before or isinstance(made[-1], ClipL2)
        entries.append(FilterEntry(None if tasks is None or "*" in tasks else frozenset(tasks), tuple(made)))
    return tuple(entries)


@dataclass(frozen=True)
class FilterConfig:
    """The data and result filter entries of one source (a job, or the client's own configuration)."""

    data: tuple[FilterEntry, ...] = ()
    result: tuple[FilterEntry, ...] = ()

    def data_filters(self, task_name: str) -> list[Filter]:
        return [filter_ for entry in self.data if entry.applies_to(task_name) for filter_ in entry.filters]

    def result_filters(self, task_name: str) -> list[Filter]:
        return [filter_ for entry in self.result if entry.applies_to(task_name) for filter_ in entry.filters]

    @property
    def names_filters(self) -> bool:
        """Whether some entry holds a filter (a client with allow_job_filters false refuses a job whose config does)."""
        return any(entry.filters for entry in (*self.data, *self.result))

    @classmethod
    def of_job(cls, client_config: Mapping[str, object]) -> "FilterConfig":
        """The filters a job's client config (Task.client_config) names; raises InvalidFilterConfig (source "client_config")."""
        return cls(_entries(client_config.get("task_data_filters"), "client_config", "task_data_filters"), _entries(client_config.get("task_result_filters"), "client_config", "task_result_filters"))


@dataclass(frozen=True)
class PrivacyConfig(FilterConfig):
    """The client's own filters, applied whatever a job says; allow_job_filters=False refuses jobs that bring filters."""

    allow_job_filters: bool = True

    @classmethod
    def load(cls, source: Union[Mapping[str, object], str, Path, None]) -> "PrivacyConfig":
        """From a dict or a JSON file (YAML needs a library this package does not depend on: convert it to JSON)."""
        if source is None:
            return cls()
        if isinstance(source, Mapping):
            return cls.of(source, "privacy")
        path = Path(source)
        if path.suffix.lower() in (".yaml", ".yml"):
            raise InvalidFilterConfig(str(path), "(file)", "the Python client reads JSON (or a dict), not YAML; convert the file to JSON")
        try:
            parsed = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as error:
            raise InvalidFilterConfig(str(path), "(file)", f"cannot be read: {error}") from error
        except json.JSONDecodeError as error:
            raise InvalidFilterConfig(str(path), "(file)", f"is not JSON: {error}") from error
        if not isinstance(parsed, Mapping):
            raise InvalidFilterConfig(str(path), "(file)", "must hold a JSON object with task_result_filters, task_data_filters, allow_job_filters")
        return cls.of(parsed, str(path))

    @classmethod
    def of(cls, config: Mapping[str, object], source: str) -> "PrivacyConfig":
        unknown = sorted(set(config) - set(LOCAL_KEYS))
        if unknown:
            raise InvalidFilterConfig(source, unknown[0], f"is not a key of the privacy configuration ({', '.join(LOCAL_KEYS)})")
        allow = config.get("allow_job_filters", True)
        if not isinstance(allow, bool):
            raise InvalidFilterConfig(source, "allow_job_filters", f"must be true or false, not {allow!r}")
        return cls(_entries(config.get("task_data_filters"), source, "task_data_filters"), _entries(config.get("task_result_filters"), source, "task_result_filters"), allow)
