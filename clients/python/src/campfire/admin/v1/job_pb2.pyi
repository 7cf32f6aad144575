import datetime

from campfire.common.v1 import job_signature_pb2 as _job_signature_pb2
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

class RunStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATUS_UNSPECIFIED: _ClassVar[RunStatus]
    RUN_STATUS_SUBMITTED: _ClassVar[RunStatus]
    RUN_STATUS_APPROVED: _ClassVar[RunStatus]
    RUN_STATUS_DISPATCHED: _ClassVar[RunStatus]
    RUN_STATUS_RUNNING: _ClassVar[RunStatus]
    RUN_STATUS_FINISHED_COMPLETED: _ClassVar[RunStatus]
    RUN_STATUS_FINISHED_ABORTED: _ClassVar[RunStatus]
    RUN_STATUS_FINISHED_EXECUTION_EXCEPTION: _ClassVar[RunStatus]
    RUN_STATUS_FAILED_TO_RUN: _ClassVar[RunStatus]
    RUN_STATUS_FINISHED_CAN_NOT_SCHEDULE: _ClassVar[RunStatus]
    RUN_STATUS_FINISHED_ABNORMAL: _ClassVar[RunStatus]
RUN_STATUS_UNSPECIFIED: RunStatus
RUN_STATUS_SUBMITTED: RunStatus
RUN_STATUS_APPROVED: RunStatus
RUN_STATUS_DISPATCHED: RunStatus
RUN_STATUS_RUNNING: RunStatus
RUN_STATUS_FINISHED_COMPLETED: RunStatus
RUN_STATUS_FINISHED_ABORTED: RunStatus
RUN_STATUS_FINISHED_EXECUTION_EXCEPTION: RunStatus
RUN_STATUS_FAILED_TO_RUN: RunStatus
RUN_STATUS_FINISHED_CAN_NOT_SCHEDULE: RunStatus
RUN_STATUS_FINISHED_ABNORMAL: RunStatus

class JobDefinition(_message.Message):
    __slots__ = ("name", "deploy_map", "resource_spec", "min_clients", "mandatory_clients", "apps", "job_folder_name", "signature")
    class ResourceSpecEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ResourceRequirement
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ResourceRequirement, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEPLOY_MAP_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_SPEC_FIELD_NUMBER: _ClassVar[int]
    MIN_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    MANDATORY_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    APPS_FIELD_NUMBER: _ClassVar[int]
    JOB_FOLDER_NAME_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    name: str
    deploy_map: _containers.RepeatedCompositeFieldContainer[AppDeployment]
    resource_spec: _containers.MessageMap[str, ResourceRequirement]
    min_clients: int
    mandatory_clients: _containers.RepeatedScalarFieldContainer[str]
    apps: _containers.RepeatedCompositeFieldContainer[App]
    job_folder_name: str
    signature: _job_signature_pb2.JobSignature
    def __init__(self, name: _Optional[str] = ..., deploy_map: _Optional[_Iterable[_Union[AppDeployment, _Mapping]]] = ..., resource_spec: _Optional[_Mapping[str, ResourceRequirement]] = ..., min_clients: _Optional[int] = ..., mandatory_clients: _Optional[_Iterable[str]] = ..., apps: _Optional[_Iterable[_Union[App, _Mapping]]] = ..., job_folder_name: _Optional[str] = ..., signature: _Optional[_Union[_job_signature_pb2.JobSignature, _Mapping]] = ...) -> None: ...

class AppDeployment(_message.Message):
    __slots__ = ("app_name", "sites")
    APP_NAME_FIELD_NUMBER: _ClassVar[int]
    SITES_FIELD_NUMBER: _ClassVar[int]
    app_name: str
    sites: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, app_name: _Optional[str] = ..., sites: _Optional[_Iterable[str]] = ...) -> None: ...

class ResourceRequirement(_message.Message):
    __slots__ = ("resources",)
    class ResourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    resources: _containers.ScalarMap[str, float]
    def __init__(self, resources: _Optional[_Mapping[str, float]] = ...) -> None: ...

class App(_message.Message):
    __slots__ = ("name", "server_config", "client_config", "files")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SERVER_CONFIG_FIELD_NUMBER: _ClassVar[int]
    CLIENT_CONFIG_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    name: str
    server_config: _struct_pb2.Struct
    client_config: _struct_pb2.Struct
    files: _containers.RepeatedCompositeFieldContainer[AppFile]
    def __init__(self, name: _Optional[str] = ..., server_config: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., client_config: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., files: _Optional[_Iterable[_Union[AppFile, _Mapping]]] = ...) -> None: ...

class AppFile(_message.Message):
    __slots__ = ("path", "content", "artifact")
    PATH_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    path: str
    content: bytes
    artifact: ArtifactRef
    def __init__(self, path: _Optional[str] = ..., content: _Optional[bytes] = ..., artifact: _Optional[_Union[ArtifactRef, _Mapping]] = ...) -> None: ...

class ArtifactRef(_message.Message):
    __slots__ = ("sha256", "size_bytes")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size_bytes: int
    def __init__(self, sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class JobMeta(_message.Message):
    __slots__ = ("job_id", "name", "job_folder_name", "status", "deploy_map", "resource_spec", "content_location", "result_location", "approvals", "min_clients", "mandatory_clients", "submit_time", "submit_time_iso", "start_time", "duration", "submitter", "end_reason", "schedule_attempts", "cloned_from", "progress", "clients", "end_time", "resume_count", "submitter_org", "submitter_role", "refusals")
    class ResourceSpecEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ResourceRequirement
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ResourceRequirement, _Mapping]] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    JOB_FOLDER_NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DEPLOY_MAP_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_SPEC_FIELD_NUMBER: _ClassVar[int]
    CONTENT_LOCATION_FIELD_NUMBER: _ClassVar[int]
    RESULT_LOCATION_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_FIELD_NUMBER: _ClassVar[int]
    MIN_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    MANDATORY_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    SUBMIT_TIME_FIELD_NUMBER: _ClassVar[int]
    SUBMIT_TIME_ISO_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    SUBMITTER_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    CLONED_FROM_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    RESUME_COUNT_FIELD_NUMBER: _ClassVar[int]
    SUBMITTER_ORG_FIELD_NUMBER: _ClassVar[int]
    SUBMITTER_ROLE_FIELD_NUMBER: _ClassVar[int]
    REFUSALS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    name: str
    job_folder_name: str
    status: RunStatus
    deploy_map: _containers.RepeatedCompositeFieldContainer[AppDeployment]
    resource_spec: _containers.MessageMap[str, ResourceRequirement]
    content_location: str
    result_location: str
    approvals: _containers.RepeatedScalarFieldContainer[str]
    min_clients: int
    mandatory_clients: _containers.RepeatedScalarFieldContainer[str]
    submit_time: _timestamp_pb2.Timestamp
    submit_time_iso: str
    start_time: _timestamp_pb2.Timestamp
    duration: _duration_pb2.Duration
    submitter: str
    end_reason: str
    schedule_attempts: int
    cloned_from: str
    progress: JobProgress
    clients: _containers.RepeatedScalarFieldContainer[str]
    end_time: _timestamp_pb2.Timestamp
    resume_count: int
    submitter_org: str
    submitter_role: str
    refusals: _containers.RepeatedCompositeFieldContainer[ClientRefusal]
    def __init__(self, job_id: _Optional[str] = ..., name: _Optional[str] = ..., job_folder_name: _Optional[str] = ..., status: _Optional[_Union[RunStatus, str]] = ..., deploy_map: _Optional[_Iterable[_Union[AppDeployment, _Mapping]]] = ..., resource_spec: _Optional[_Mapping[str, ResourceRequirement]] = ..., content_location: _Optional[str] = ..., result_location: _Optional[str] = ..., approvals: _Optional[_Iterable[str]] = ..., min_clients: _Optional[int] = ..., mandatory_clients: _Optional[_Iterable[str]] = ..., submit_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., submit_time_iso: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., submitter: _Optional[str] = ..., end_reason: _Optional[str] = ..., schedule_attempts: _Optional[int] = ..., cloned_from: _Optional[str] = ..., progress: _Optional[_Union[JobProgress, _Mapping]] = ..., clients: _Optional[_Iterable[str]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., resume_count: _Optional[int] = ..., submitter_org: _Optional[str] = ..., submitter_role: _Optional[str] = ..., refusals: _Optional[_Iterable[_Union[ClientRefusal, _Mapping]]] = ...) -> None: ...

class ClientRefusal(_message.Message):
    __slots__ = ("client", "reason", "task_name", "time")
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TASK_NAME_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    client: str
    reason: str
    task_name: str
    time: _timestamp_pb2.Timestamp
    def __init__(self, client: _Optional[str] = ..., reason: _Optional[str] = ..., task_name: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class JobProgress(_message.Message):
    __slots__ = ("current_round", "total_rounds", "latest_metrics", "phase")
    class LatestMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CURRENT_ROUND_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    LATEST_METRICS_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    current_round: int
    total_rounds: int
    latest_metrics: _containers.ScalarMap[str, float]
    phase: str
    def __init__(self, current_round: _Optional[int] = ..., total_rounds: _Optional[int] = ..., latest_metrics: _Optional[_Mapping[str, float]] = ..., phase: _Optional[str] = ...) -> None: ...
