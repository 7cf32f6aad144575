"""Campfire's Python client: an Agent for trainers, a Session for admins.

The gRPC stubs generated from Campfire's proto/ ship inside this package, at
the modules their proto packages name: campfire.agent.v1, campfire.admin.v1,
campfire.common.v1.
"""

from campfire.agent_client import PROTOCOL_VERSION, Agent, Task
from campfire.channels import Kit
from campfire.errors import (
    AgentClosed,
    AgentError,
    AlreadyExists,
    CampfireError,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    FilterFailed,
    Internal,
    InvalidArgument,
    InvalidFilterConfig,
    InvalidJobDefinition,
    JobEnded,
    JobNotDone,
    JobNotFound,
    NoConnection,
    NotFound,
    PermissionDenied,
    Replaced,
    ResourceExhausted,
    ResultNotAccepted,
    TaskAborted,
    Unauthenticated,
)
from campfire.job_folder import read_job_folder
from campfire.privacy import PrivacyConfig
from campfire.session import Session, status_name
from campfire.tensors import arrays_of, data_exchange, from_numpy, from_safetensors, to_numpy, to_safetensors

__all__ = [
    "PROTOCOL_VERSION",
    "Agent",
    "AgentClosed",
    "AgentError",
    "AlreadyExists",
    "CampfireError",
    "Cancelled",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FilterFailed",
    "Internal",
    "InvalidArgument",
    "InvalidFilterConfig",
    "InvalidJobDefinition",
    "JobEnded",
    "JobNotDone",
    "JobNotFound",
    "Kit",
    "NoConnection",
    "NotFound",
    "PermissionDenied",
    "PrivacyConfig",
    "Replaced",
    "ResourceExhausted",
    "ResultNotAccepted",
    "Session",
    "Task",
    "TaskAborted",
    "Unauthenticated",
    "arrays_of",
    "data_exchange",
    "from_numpy",
    "from_safetensors",
    "read_job_folder",
    "status_name",
    "to_numpy",
    "to_safetensors",
]
