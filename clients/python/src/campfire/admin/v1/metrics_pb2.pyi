import datetime

from campfire.agent.v1 import agent_service_pb2 as _agent_service_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RoundRecord(_message.Message):
    __slots__ = ("round", "finished_at", "metrics", "duration", "clients", "best")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ROUND_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    BEST_FIELD_NUMBER: _ClassVar[int]
    round: int
    finished_at: _timestamp_pb2.Timestamp
    metrics: _containers.ScalarMap[str, float]
    duration: _duration_pb2.Duration
    clients: _containers.RepeatedScalarFieldContainer[str]
    best: bool
    def __init__(self, round: _Optional[int] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., clients: _Optional[_Iterable[str]] = ..., best: _Optional[bool] = ...) -> None: ...

class ClientMetricRecord(_message.Message):
    __slots__ = ("client", "time", "task_id", "round", "values")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    client: str
    time: _timestamp_pb2.Timestamp
    task_id: str
    round: int
    values: _containers.ScalarMap[str, float]
    def __init__(self, client: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., task_id: _Optional[str] = ..., round: _Optional[int] = ..., values: _Optional[_Mapping[str, float]] = ...) -> None: ...

class GetJobMetricsRequest(_message.Message):
    __slots__ = ("job_id", "client")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    client: str
    def __init__(self, job_id: _Optional[str] = ..., client: _Optional[str] = ...) -> None: ...

class GetJobMetricsResponse(_message.Message):
    __slots__ = ("rounds", "client_records", "best_round", "dropped_client_records")
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_RECORDS_FIELD_NUMBER: _ClassVar[int]
    BEST_ROUND_FIELD_NUMBER: _ClassVar[int]
    DROPPED_CLIENT_RECORDS_FIELD_NUMBER: _ClassVar[int]
    rounds: _containers.RepeatedCompositeFieldContainer[RoundRecord]
    client_records: _containers.RepeatedCompositeFieldContainer[ClientMetricRecord]
    best_round: int
    dropped_client_records: int
    def __init__(self, rounds: _Optional[_Iterable[_Union[RoundRecord, _Mapping]]] = ..., client_records: _Optional[_Iterable[_Union[ClientMetricRecord, _Mapping]]] = ..., best_round: _Optional[int] = ..., dropped_client_records: _Optional[int] = ...) -> None: ...

class TrainerLogLine(_message.Message):
    __slots__ = ("client", "time", "task_id", "level", "message")
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    client: str
    time: _timestamp_pb2.Timestamp
    task_id: str
    level: _agent_service_pb2.LogLevel
    message: str
    def __init__(self, client: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., task_id: _Optional[str] = ..., level: _Optional[_Union[_agent_service_pb2.LogLevel, str]] = ..., message: _Optional[str] = ...) -> None: ...

class GetJobLogsRequest(_message.Message):
    __slots__ = ("job_id", "client", "follow")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    client: str
    follow: bool
    def __init__(self, job_id: _Optional[str] = ..., client: _Optional[str] = ..., follow: _Optional[bool] = ...) -> None: ...

class GetJobLogsResponse(_message.Message):
    __slots__ = ("lines",)
    LINES_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedCompositeFieldContainer[TrainerLogLine]
    def __init__(self, lines: _Optional[_Iterable[_Union[TrainerLogLine, _Mapping]]] = ...) -> None: ...
