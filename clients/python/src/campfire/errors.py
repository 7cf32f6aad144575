"""Campfire's typed exceptions, and the one place where gRPC status codes become them.

Every exception the package raises is a CampfireError. Those that come from a
gRPC status carry it in `code` (a grpc.StatusCode) and the site's words in
`details`; the site's messages name the field and value at fault, so `str()`
of the exception is meant for a person.
"""

from __future__ import annotations

from typing import Optional

import grpc


class CampfireError(Exception):
    """Base of every error of this package."""

    def __init__(self, message: str, code: Optional[grpc.StatusCode] = None, details: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.details = details or message


# --- status codes, one class each (raised by Session and Agent calls) ---------------------------


class NoConnection(CampfireError):
    """UNAVAILABLE: the site cannot be reached, or stopped answering. Retrying later may work."""


class DeadlineExceeded(NoConnection):
    """DEADLINE_EXCEEDED: the site did not answer in time (overloaded, or the deadline is too short)."""


class Cancelled(CampfireError):
    """CANCELLED: the call was cancelled (by this process, or the site while it stopped)."""


class InvalidArgument(CampfireError):
    """INVALID_ARGUMENT: a request broke a rule; the message names the field and value."""


class InvalidJobDefinition(InvalidArgument):
    """A job folder or definition breaks a rule (found here, or by the site at submit or clone)."""


class NotFound(CampfireError):
    """NOT_FOUND: the thing named does not exist."""


class JobNotFound(NotFound):
    """NOT_FOUND from an admin call: no job has this id (or it was deleted)."""


class FailedPrecondition(CampfireError):
    """FAILED_PRECONDITION: the call is out of turn (a job not finished, a message out of order)."""


class JobNotDone(FailedPrecondition):
    """FAILED_PRECONDITION from an admin call: the job is not finished (download) or still running (delete)."""


class AlreadyExists(CampfireError):
    """ALREADY_EXISTS: for example an agent id registered for another client."""


class ResourceExhausted(CampfireError):
    """RESOURCE_EXHAUSTED: a message or job too large, or a limit on agents or uploads reached."""


class Unauthenticated(CampfireError):
    """UNAUTHENTICATED: no token or certificate, or one the site does not accept."""


class PermissionDenied(CampfireError):
    """PERMISSION_DENIED: the caller's identity may not do this (the message says which right it lacks)."""


class Internal(CampfireError):
    """INTERNAL, UNKNOWN, UNIMPLEMENTED and other codes: the site failed in a way the caller cannot fix."""


# --- the agent's own conditions -----------------------------------------------------------------


class AgentError(CampfireError):
    """Something about the agent's session with the site, rather than one call."""


class AgentClosed(AgentError):
    """The agent is closed (closed locally, replaced, or refused for good): no more tasks will come."""


class JobEnded(AgentClosed):
    """The site said bye because the job this agent served ended (BYE_REASON_JOB_ENDED)."""


class Replaced(AgentClosed):
    """Another agent with the same agent id connected and took over (BYE_REASON_REPLACED)."""


class TaskAborted(AgentError):
    """The site aborted the task the trainer holds: stop working on it, do not submit."""

    def __init__(self, task_id: str, reason: str) -> None:
        super().__init__(f"task {task_id} was aborted by the site: {reason}")
        self.task_id = task_id
        self.reason = reason


class ResultNotAccepted(AgentError):
    """The site acknowledged a result as REJECTED or IGNORED (`disposition` says which): it will not use it."""

    def __init__(self, task_id: str, disposition: str, reason: str) -> None:
        super().__init__(f"the site did not accept the result of task {task_id}: {disposition} {reason}".rstrip())
        self.task_id = task_id
        self.disposition = disposition
        self.reason = reason


class InvalidFilterConfig(InvalidArgument):
    """A privacy filter configuration breaks a rule: `source` (a file, "privacy", or "client_config"), the
    `path` of the entry and field at fault (task_result_filters[0].filters[1].args.max_norm) and the `problem`."""

    def __init__(self, source: str, path: str, problem: str) -> None:
        super().__init__(f"{source}: {path}: {problem}")
        self.source = source
        self.path = path
        self.problem = problem


class FilterFailed(AgentError):
    """A task filter failed while it ran (a tensor whose bytes do not fit its shape, say); the site was told so."""


_BY_CODE: dict[grpc.StatusCode, type[CampfireError]] = {
    grpc.StatusCode.UNAVAILABLE: NoConnection,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
}

# Admin calls whose codes mean something narrower: a definition, or a job.
_JOB_DEFINITION_CALLS = {"SubmitJob", "CloneJob"}
_ADMIN_JOB_CLASSES: dict[grpc.StatusCode, type[CampfireError]] = {
    grpc.StatusCode.NOT_FOUND: JobNotFound,
    grpc.StatusCode.FAILED_PRECONDITION: JobNotDone,
}

# Codes after which reconnecting would only be refused again: the agent closes instead.
PERMANENT_REFUSALS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)


def error_from_rpc(error: grpc.RpcError, call: str, site: str = "", admin: bool = False) -> CampfireError:
    """The typed exception for a failed call `call` (the RPC's name) to `site`."""
    code: grpc.StatusCode = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details: str = (error.details() if hasattr(error, "details") else "") or str(error)
    cls = _BY_CODE.get(code, Internal)
    if admin:
        cls = _ADMIN_JOB_CLASSES.get(code, cls)
        if call in _JOB_DEFINITION_CALLS and code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED):
            cls = InvalidJobDefinition
    if cls is NoConnection:
        message = f"{call}: cannot reach the site{f' at {site}' if site else ''}: {details}. Is it running, and is the address right?"
    elif cls is DeadlineExceeded:
        message = f"{call}: the site{f' at {site}' if site else ''} did not answer in time: {details}"
    else:
        message = f"{call}: {code.name}: {details}"
    return cls(message, code=code, details=details)
