import datetime

from campfire.common.v1 import exchange_pb2 as _exchange_pb2
from campfire.common.v1 import job_signature_pb2 as _job_signature_pb2
from campfire.common.v1 import return_code_pb2 as _return_code_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ResultDisposition(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESULT_DISPOSITION_UNSPECIFIED: _ClassVar[ResultDisposition]
    RESULT_DISPOSITION_ACCEPTED: _ClassVar[ResultDisposition]
    RESULT_DISPOSITION_DUPLICATE: _ClassVar[ResultDisposition]
    RESULT_DISPOSITION_IGNORED: _ClassVar[ResultDisposition]
    RESULT_DISPOSITION_REJECTED: _ClassVar[ResultDisposition]

class ByeReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BYE_REASON_UNSPECIFIED: _ClassVar[ByeReason]
    BYE_REASON_JOB_ENDED: _ClassVar[ByeReason]
    BYE_REASON_SITE_SHUTTING_DOWN: _ClassVar[ByeReason]
    BYE_REASON_AGENT_STOPPING: _ClassVar[ByeReason]
    BYE_REASON_REPLACED: _ClassVar[ByeReason]

class LogLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOG_LEVEL_UNSPECIFIED: _ClassVar[LogLevel]
    LOG_LEVEL_DEBUG: _ClassVar[LogLevel]
    LOG_LEVEL_INFO: _ClassVar[LogLevel]
    LOG_LEVEL_WARN: _ClassVar[LogLevel]
    LOG_LEVEL_ERROR: _ClassVar[LogLevel]
RESULT_DISPOSITION_UNSPECIFIED: ResultDisposition
RESULT_DISPOSITION_ACCEPTED: ResultDisposition
RESULT_DISPOSITION_DUPLICATE: ResultDisposition
RESULT_DISPOSITION_IGNORED: ResultDisposition
RESULT_DISPOSITION_REJECTED: ResultDisposition
BYE_REASON_UNSPECIFIED: ByeReason
BYE_REASON_JOB_ENDED: ByeReason
BYE_REASON_SITE_SHUTTING_DOWN: ByeReason
BYE_REASON_AGENT_STOPPING: ByeReason
BYE_REASON_REPLACED: ByeReason
LOG_LEVEL_UNSPECIFIED: LogLevel
LOG_LEVEL_DEBUG: LogLevel
LOG_LEVEL_INFO: LogLevel
LOG_LEVEL_WARN: LogLevel
LOG_LEVEL_ERROR: LogLevel

class ConnectRequest(_message.Message):
    __slots__ = ("hello", "task_ack", "result", "heartbeat", "bye", "metric", "trainer_log")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    TASK_ACK_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    BYE_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    TRAINER_LOG_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    task_ack: TaskAck
    result: TaskResult
    heartbeat: Heartbeat
    bye: Bye
    metric: MetricRecord
    trainer_log: TrainerLog
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., task_ack: _Optional[_Union[TaskAck, _Mapping]] = ..., result: _Optional[_Union[TaskResult, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., bye: _Optional[_Union[Bye, _Mapping]] = ..., metric: _Optional[_Union[MetricRecord, _Mapping]] = ..., trainer_log: _Optional[_Union[TrainerLog, _Mapping]] = ...) -> None: ...

class ConnectResponse(_message.Message):
    __slots__ = ("welcome", "task", "result_ack", "heartbeat", "abort", "bye")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    RESULT_ACK_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    ABORT_FIELD_NUMBER: _ClassVar[int]
    BYE_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    task: Task
    result_ack: ResultAck
    heartbeat: Heartbeat
    abort: AbortTask
    bye: Bye
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., task: _Optional[_Union[Task, _Mapping]] = ..., result_ack: _Optional[_Union[ResultAck, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., abort: _Optional[_Union[AbortTask, _Mapping]] = ..., bye: _Optional[_Union[Bye, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("client_name", "agent_id", "protocol_version", "resources", "task_names", "held_result")
    class ResourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CLIENT_NAME_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    TASK_NAMES_FIELD_NUMBER: _ClassVar[int]
    HELD_RESULT_FIELD_NUMBER: _ClassVar[int]
    client_name: str
    agent_id: str
    protocol_version: int
    resources: _containers.ScalarMap[str, float]
    task_names: _containers.RepeatedScalarFieldContainer[str]
    held_result: TaskResult
    def __init__(self, client_name: _Optional[str] = ..., agent_id: _Optional[str] = ..., protocol_version: _Optional[int] = ..., resources: _Optional[_Mapping[str, float]] = ..., task_names: _Optional[_Iterable[str]] = ..., held_result: _Optional[_Union[TaskResult, _Mapping]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("site_name", "agent_id", "protocol_version", "heartbeat_interval", "heartbeat_timeout", "max_message_bytes", "max_inline_payload_bytes")
    SITE_NAME_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_INLINE_PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    site_name: str
    agent_id: str
    protocol_version: int
    heartbeat_interval: _duration_pb2.Duration
    heartbeat_timeout: _duration_pb2.Duration
    max_message_bytes: int
    max_inline_payload_bytes: int
    def __init__(self, site_name: _Optional[str] = ..., agent_id: _Optional[str] = ..., protocol_version: _Optional[int] = ..., heartbeat_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., heartbeat_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_message_bytes: _Optional[int] = ..., max_inline_payload_bytes: _Optional[int] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("task_id", "task_name", "job_id", "payload", "deadline", "result_ack", "job_signature", "client_config")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_NAME_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    RESULT_ACK_FIELD_NUMBER: _ClassVar[int]
    JOB_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_CONFIG_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    task_name: str
    job_id: str
    payload: Payload
    deadline: _timestamp_pb2.Timestamp
    result_ack: ResultAck
    job_signature: _job_signature_pb2.JobSignature
    client_config: _struct_pb2.Struct
    def __init__(self, task_id: _Optional[str] = ..., task_name: _Optional[str] = ..., job_id: _Optional[str] = ..., payload: _Optional[_Union[Payload, _Mapping]] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., result_ack: _Optional[_Union[ResultAck, _Mapping]] = ..., job_signature: _Optional[_Union[_job_signature_pb2.JobSignature, _Mapping]] = ..., client_config: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class TaskAck(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("task_id", "return_code", "payload", "message")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    RETURN_CODE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    return_code: _return_code_pb2.ReturnCode
    payload: Payload
    message: str
    def __init__(self, task_id: _Optional[str] = ..., return_code: _Optional[_Union[_return_code_pb2.ReturnCode, str]] = ..., payload: _Optional[_Union[Payload, _Mapping]] = ..., message: _Optional[str] = ...) -> None: ...

class ResultAck(_message.Message):
    __slots__ = ("task_id", "disposition", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    DISPOSITION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    disposition: ResultDisposition
    reason: str
    def __init__(self, task_id: _Optional[str] = ..., disposition: _Optional[_Union[ResultDisposition, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("sequence", "sent_at")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    sent_at: _timestamp_pb2.Timestamp
    def __init__(self, sequence: _Optional[int] = ..., sent_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AbortTask(_message.Message):
    __slots__ = ("task_id", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    reason: str
    def __init__(self, task_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Bye(_message.Message):
    __slots__ = ("reason", "message")
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    reason: ByeReason
    message: str
    def __init__(self, reason: _Optional[_Union[ByeReason, str]] = ..., message: _Optional[str] = ...) -> None: ...

class MetricRecord(_message.Message):
    __slots__ = ("task_id", "sequence", "record", "logged_at")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    LOGGED_AT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    sequence: int
    record: _exchange_pb2.DataExchange
    logged_at: _timestamp_pb2.Timestamp
    def __init__(self, task_id: _Optional[str] = ..., sequence: _Optional[int] = ..., record: _Optional[_Union[_exchange_pb2.DataExchange, _Mapping]] = ..., logged_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TrainerLog(_message.Message):
    __slots__ = ("task_id", "level", "message", "logged_at")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LOGGED_AT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    level: LogLevel
    message: str
    logged_at: _timestamp_pb2.Timestamp
    def __init__(self, task_id: _Optional[str] = ..., level: _Optional[_Union[LogLevel, str]] = ..., message: _Optional[str] = ..., logged_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Payload(_message.Message):
    __slots__ = ("inline", "ref")
    INLINE_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    inline: _exchange_pb2.DataExchange
    ref: PayloadRef
    def __init__(self, inline: _Optional[_Union[_exchange_pb2.DataExchange, _Mapping]] = ..., ref: _Optional[_Union[PayloadRef, _Mapping]] = ...) -> None: ...

class PayloadRef(_message.Message):
    __slots__ = ("payload_id", "size_bytes")
    PAYLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    payload_id: str
    size_bytes: int
    def __init__(self, payload_id: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class UploadPayloadRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: UploadHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[UploadHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class UploadHeader(_message.Message):
    __slots__ = ("agent_id", "size_bytes")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    size_bytes: int
    def __init__(self, agent_id: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class UploadPayloadResponse(_message.Message):
    __slots__ = ("payload_id",)
    PAYLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    payload_id: str
    def __init__(self, payload_id: _Optional[str] = ...) -> None: ...

class DownloadPayloadRequest(_message.Message):
    __slots__ = ("payload_id",)
    PAYLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    payload_id: str
    def __init__(self, payload_id: _Optional[str] = ...) -> None: ...

class DownloadPayloadResponse(_message.Message):
    __slots__ = ("chunk",)
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    chunk: bytes
    def __init__(self, chunk: _Optional[bytes] = ...) -> None: ...
