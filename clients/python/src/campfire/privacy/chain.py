"""The filters one task goes through, in the order FILTERS.md gives.

Incoming data: the client's own data filters, then the job's. The trainer's
result: the job's result filters, then the client's own, against the task's
data as the site sent it (before any data filter). A chain with no filter
leaves the DataExchange as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from campfire.common.v1 import exchange_pb2
from campfire.privacy.config import FilterConfig, PrivacyConfig
from campfire.privacy.filters import Filter
from campfire.privacy.update import Update


def _run(filters: Sequence[Filter], update: Update) -> list[str]:
    for filter_ in filters:
        filter_.apply(update)
    return [filter_.name for filter_ in filters]


def filter_data(filters: Sequence[Filter], data: exchange_pb2.DataExchange) -> exchange_pb2.DataExchange:
    """Task data through `filters` (its tensors are their own update)."""
    if not filters:
        return data
    update = Update.of_data(data)
    _run(filters, update)
    return update.rebuilt([])


def filter_result(filters: Sequence[Filter], result: exchange_pb2.DataExchange, task_data: exchange_pb2.DataExchange) -> exchange_pb2.DataExchange:
    """A result through `filters`, its update taken against `task_data`; meta "filters_applied" names them in order."""
    if not filters:
        return result
    update = Update.of_result(result, task_data)
    return update.rebuilt(_run(filters, update))


@dataclass(frozen=True)
class TaskFilters:
    data: tuple[Filter, ...] = ()
    result: tuple[Filter, ...] = ()

    @classmethod
    def for_task(cls, local: PrivacyConfig, client_config: Mapping[str, object], task_name: str) -> "TaskFilters":
        """The chains of one task; raises InvalidFilterConfig for a job's bad filter config."""
        job = FilterConfig.of_job(client_config)
        return cls((*local.data_filters(task_name), *job.data_filters(task_name)), (*job.result_filters(task_name), *local.result_filters(task_name)))
