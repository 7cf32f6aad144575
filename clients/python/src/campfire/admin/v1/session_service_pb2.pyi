import datetime

from campfire.admin.v1 import job_pb2 as _job_pb2
from campfire.admin.v1 import metrics_pb2 as _metrics_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ArtifactState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ARTIFACT_STATE_UNSPECIFIED: _ClassVar[ArtifactState]
    ARTIFACT_STATE_ABSENT: _ClassVar[ArtifactState]
    ARTIFACT_STATE_PARTIAL: _ClassVar[ArtifactState]
    ARTIFACT_STATE_COMPLETE: _ClassVar[ArtifactState]

class MonitorReturnCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MONITOR_RETURN_CODE_UNSPECIFIED: _ClassVar[MonitorReturnCode]
    MONITOR_RETURN_CODE_JOB_FINISHED: _ClassVar[MonitorReturnCode]
    MONITOR_RETURN_CODE_TIMEOUT: _ClassVar[MonitorReturnCode]
    MONITOR_RETURN_CODE_ENDED_BY_CB: _ClassVar[MonitorReturnCode]
ARTIFACT_STATE_UNSPECIFIED: ArtifactState
ARTIFACT_STATE_ABSENT: ArtifactState
ARTIFACT_STATE_PARTIAL: ArtifactState
ARTIFACT_STATE_COMPLETE: ArtifactState
MONITOR_RETURN_CODE_UNSPECIFIED: MonitorReturnCode
MONITOR_RETURN_CODE_JOB_FINISHED: MonitorReturnCode
MONITOR_RETURN_CODE_TIMEOUT: MonitorReturnCode
MONITOR_RETURN_CODE_ENDED_BY_CB: MonitorReturnCode

class SubmitJobRequest(_message.Message):
    __slots__ = ("definition",)
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    definition: _job_pb2.JobDefinition
    def __init__(self, definition: _Optional[_Union[_job_pb2.JobDefinition, _Mapping]] = ...) -> None: ...

class SubmitJobResponse(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class UploadArtifactRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: ArtifactUploadHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[ArtifactUploadHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class ArtifactUploadHeader(_message.Message):
    __slots__ = ("sha256", "size_bytes", "offset")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size_bytes: int
    offset: int
    def __init__(self, sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class UploadArtifactResponse(_message.Message):
    __slots__ = ("artifact",)
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    artifact: _job_pb2.ArtifactRef
    def __init__(self, artifact: _Optional[_Union[_job_pb2.ArtifactRef, _Mapping]] = ...) -> None: ...

class GetArtifactStatusRequest(_message.Message):
    __slots__ = ("sha256",)
    SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    def __init__(self, sha256: _Optional[str] = ...) -> None: ...

class GetArtifactStatusResponse(_message.Message):
    __slots__ = ("state", "received_bytes", "size_bytes")
    STATE_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    state: ArtifactState
    received_bytes: int
    size_bytes: int
    def __init__(self, state: _Optional[_Union[ArtifactState, str]] = ..., received_bytes: _Optional[int] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class CloneJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CloneJobResponse(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetJobMetaRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetJobMetaResponse(_message.Message):
    __slots__ = ("meta",)
    META_FIELD_NUMBER: _ClassVar[int]
    meta: _job_pb2.JobMeta
    def __init__(self, meta: _Optional[_Union[_job_pb2.JobMeta, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("detailed", "all_submitters", "name_prefix", "id_prefix", "newest", "reverse")
    DETAILED_FIELD_NUMBER: _ClassVar[int]
    ALL_SUBMITTERS_FIELD_NUMBER: _ClassVar[int]
    NAME_PREFIX_FIELD_NUMBER: _ClassVar[int]
    ID_PREFIX_FIELD_NUMBER: _ClassVar[int]
    NEWEST_FIELD_NUMBER: _ClassVar[int]
    REVERSE_FIELD_NUMBER: _ClassVar[int]
    detailed: bool
    all_submitters: bool
    name_prefix: str
    id_prefix: str
    newest: int
    reverse: bool
    def __init__(self, detailed: _Optional[bool] = ..., all_submitters: _Optional[bool] = ..., name_prefix: _Optional[str] = ..., id_prefix: _Optional[str] = ..., newest: _Optional[int] = ..., reverse: _Optional[bool] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[_job_pb2.JobMeta]
    def __init__(self, jobs: _Optional[_Iterable[_Union[_job_pb2.JobMeta, _Mapping]]] = ...) -> None: ...

class DownloadJobResultRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class DownloadJobResultResponse(_message.Message):
    __slots__ = ("path", "file_size", "offset", "chunk")
    PATH_FIELD_NUMBER: _ClassVar[int]
    FILE_SIZE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    path: str
    file_size: int
    offset: int
    chunk: bytes
    def __init__(self, path: _Optional[str] = ..., file_size: _Optional[int] = ..., offset: _Optional[int] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class AbortJobRequest(_message.Message):
    __slots__ = ("job_id", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class AbortJobResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: _job_pb2.RunStatus
    def __init__(self, status: _Optional[_Union[_job_pb2.RunStatus, str]] = ...) -> None: ...

class DeleteJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class DeleteJobResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSystemInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSystemInfoResponse(_message.Message):
    __slots__ = ("site", "clients", "jobs")
    SITE_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    site: SiteInfo
    clients: _containers.RepeatedCompositeFieldContainer[ClientInfo]
    jobs: _containers.RepeatedCompositeFieldContainer[RunningJobInfo]
    def __init__(self, site: _Optional[_Union[SiteInfo, _Mapping]] = ..., clients: _Optional[_Iterable[_Union[ClientInfo, _Mapping]]] = ..., jobs: _Optional[_Iterable[_Union[RunningJobInfo, _Mapping]]] = ...) -> None: ...

class SiteInfo(_message.Message):
    __slots__ = ("name", "status", "start_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    status: str
    start_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., status: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ClientInfo(_message.Message):
    __slots__ = ("name", "last_connect_time", "agent_ids", "resources")
    class ResourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    LAST_CONNECT_TIME_FIELD_NUMBER: _ClassVar[int]
    AGENT_IDS_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    name: str
    last_connect_time: _timestamp_pb2.Timestamp
    agent_ids: _containers.RepeatedScalarFieldContainer[str]
    resources: _containers.ScalarMap[str, float]
    def __init__(self, name: _Optional[str] = ..., last_connect_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., agent_ids: _Optional[_Iterable[str]] = ..., resources: _Optional[_Mapping[str, float]] = ...) -> None: ...

class RunningJobInfo(_message.Message):
    __slots__ = ("job_id", "app_name", "status")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    APP_NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    app_name: str
    status: _job_pb2.RunStatus
    def __init__(self, job_id: _Optional[str] = ..., app_name: _Optional[str] = ..., status: _Optional[_Union[_job_pb2.RunStatus, str]] = ...) -> None: ...

class MonitorJobRequest(_message.Message):
    __slots__ = ("job_id", "timeout")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    timeout: _duration_pb2.Duration
    def __init__(self, job_id: _Optional[str] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class MonitorJobResponse(_message.Message):
    __slots__ = ("meta", "return_code", "sent_at", "rounds", "client_records", "dropped_client_records")
    META_FIELD_NUMBER: _ClassVar[int]
    RETURN_CODE_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_RECORDS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_CLIENT_RECORDS_FIELD_NUMBER: _ClassVar[int]
    meta: _job_pb2.JobMeta
    return_code: MonitorReturnCode
    sent_at: _timestamp_pb2.Timestamp
    rounds: _containers.RepeatedCompositeFieldContainer[_metrics_pb2.RoundRecord]
    client_records: _containers.RepeatedCompositeFieldContainer[_metrics_pb2.ClientMetricRecord]
    dropped_client_records: int
    def __init__(self, meta: _Optional[_Union[_job_pb2.JobMeta, _Mapping]] = ..., return_code: _Optional[_Union[MonitorReturnCode, str]] = ..., sent_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rounds: _Optional[_Iterable[_Union[_metrics_pb2.RoundRecord, _Mapping]]] = ..., client_records: _Optional[_Iterable[_Union[_metrics_pb2.ClientMetricRecord, _Mapping]]] = ..., dropped_client_records: _Optional[int] = ...) -> None: ...
