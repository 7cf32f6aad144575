"""The filters one task goes through, in the order FILTERS.md gives.

Incoming data: the client's own data filters, then the job's. The trainer's
result: the job's result filters, then the client's own, against the task's
data as the site sent it (before any data filter). A chain with no filter
leaves the DataExchange as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from google.protobuf import json_format

from campfire.common.v1 import exchange_pb2
from campfire.privacy.config import FilterConfig, PrivacyConfig
from campfire.privacy.filters import ChainState, Filter
from campfire.privacy.update import Update


def _run(filters: Sequence[Filter], update: Update) -> exchange_pb2.DataExchange:
    """The update through `filters`, rebuilt; its meta's "filters_applied" (appended to) names them in order."""
    state = ChainState()
    for filter_ in filters:
        filter_.apply(update, state)
        for tensor in update.tensors:
            tensor.settle()
    meta = json_format.MessageToDict(update.source.meta) if update.source.HasField("meta") else {}
    previous = meta.get("filters_applied")
    applied = [*(previous if isinstance(previous, list) else []), *(filter_.name for filter_ in filters)]
    return update.rebuilt({**state.meta, "filters_applied": applied})


def filter_data(filters: Sequence[Filter], data: exchange_pb2.DataExchange) -> exchange_pb2.DataExchange:
    """Task data through `filters` (its tensors are their own update); `data` itself when there are none."""
    return _run(filters, Update.of_data(data)) if filters else data


def filter_result(filters: Sequence[Filter], result: exchange_pb2.DataExchange, task_data: exchange_pb2.DataExchange) -> exchange_pb2.DataExchange:
    """A result through `filters`, its update taken against `task_data` (as the site sent it); `result` itself when there are none."""
    return _run(filters, Update.of_result(result, task_data)) if filters else result


@dataclass(frozen=True)
class TaskFilters:
    data: tuple[Filter, ...] = ()
    result: tuple[Filter, ...] = ()

    @classmethod
    def for_task(cls, local: PrivacyConfig, job: FilterConfig, task_name: str) -> "TaskFilters":
        """The chains of task `task_name`: data filters the client's then the job's, result filters the job's then the client's."""
        return cls((*local.data_filters(task_name), *job.data_filters(task_name)), (*job.result_filters(task_name), *local.result_filters(task_name)))
