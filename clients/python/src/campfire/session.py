"""campfire.Session: an admin's session with a site's SessionService.

    with campfire.Session("127.0.0.1:7443", token="s3cret") as session:
        job_id = session.submit_job("examples/mnist-fedavg")
        for update in session.monitor(job_id):
            print(campfire.status_name(update.meta.status), update.meta.progress.current_round)
        session.download_job_result(job_id, "results")

Callers identify with a bearer token ("authorization: Bearer <token>") or an
admin kit (mutual TLS); with a kit, submitted jobs are signed with its key
(campfire.job_signing). Every call but monitor has a deadline; every failure
is one of campfire.errors' typed exceptions (JobNotFound, JobNotDone,
InvalidJobDefinition, PermissionDenied, ...).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path, PurePosixPath
from typing import Iterator, Optional, Union

import grpc

from campfire.admin.v1 import job_pb2, session_service_pb2 as session_pb
from campfire.admin.v1 import session_service_pb2_grpc as session_grpc
from campfire.channels import Kit, open_channel
from campfire.errors import CampfireError, Internal, error_from_rpc
from campfire.job_folder import read_job_folder
from campfire.job_signing import sign_job_definition

DEFAULT_SITE = "127.0.0.1:7443"
FINISHED = frozenset(
    {
        job_pb2.RUN_STATUS_FINISHED_COMPLETED,
        job_pb2.RUN_STATUS_FINISHED_ABORTED,
        job_pb2.RUN_STATUS_FINISHED_EXECUTION_EXCEPTION,
        job_pb2.RUN_STATUS_FAILED_TO_RUN,
        job_pb2.RUN_STATUS_FINISHED_CAN_NOT_SCHEDULE,
        job_pb2.RUN_STATUS_FINISHED_ABNORMAL,
    }
)


def status_name(status: int) -> str:
    """A RunStatus as the reference system writes it: "RUNNING", "FINISHED:COMPLETED", ..."""
    name = job_pb2.RunStatus.Name(status).removeprefix("RUN_STATUS_")
    return name.replace("FINISHED_", "FINISHED:", 1) if name.startswith("FINISHED_") else name


def _safe_relative(path: str) -> Optional[str]:
    """What is wrong with a result file's path from the site, or None."""
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or "\\" in path or any(part in ("..", ".", "") for part in path.split("/")):
        return f"the site sent a file with the unsafe path {path!r}"
    return None


class Session:
    def __init__(
        self,
        site: str = DEFAULT_SITE,
        token: Optional[str] = None,
        kit: Union[Kit, str, None] = None,
        server_name: Optional[str] = None,
        insecure: bool = False,
        timeout: float = 30.0,
        download_timeout: float = 1800.0,
        sign_jobs: bool = True,
    ) -> None:
        self.site = site
        self.timeout = timeout
        self.download_timeout = download_timeout
        kit = Kit.read(kit) if isinstance(kit, str) else kit
        # An admin's kit signs what it submits, so that agents can tell the job is the one this admin sent.
        self._signing_kit = kit if sign_jobs else None
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        # A job definition can be large (the site's --max-job-mb); results arrive in 1 MiB chunks.
        self._channel = open_channel(site, kit, server_name, insecure, [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", 8 * 1024 * 1024)])
        self._stub = session_grpc.SessionServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _unary(self, name: str, request):  # noqa: ANN001, ANN202 - any request, its response
        try:
            return getattr(self._stub, name)(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise error_from_rpc(error, name, self.site, admin=True) from error

    def submit_job(self, folder: Union[str, os.PathLike[str]]) -> str:
        """Reads a job folder (see campfire.job_folder) and submits it. Returns the job's id."""
        return self.submit_definition(read_job_folder(folder))

    def submit_definition(self, definition: job_pb2.JobDefinition) -> str:
        """Submits a definition; with a kit (and sign_jobs), signed with its key first unless it carries a signature."""
        if self._signing_kit is not None and not definition.HasField("signature"):
            signed = job_pb2.JobDefinition()
            signed.CopyFrom(definition)
            signed.signature.CopyFrom(sign_job_definition(definition, self._signing_kit))
            definition = signed
        return self._unary("SubmitJob", session_pb.SubmitJobRequest(definition=definition)).job_id

    def clone_job(self, job_id: str) -> str:
        """Submits a new job with the definition of `job_id`; returns the new job's id."""
        return self._unary("CloneJob", session_pb.CloneJobRequest(job_id=job_id)).job_id

    def get_job_meta(self, job_id: str) -> job_pb2.JobMeta:
        return self._unary("GetJobMeta", session_pb.GetJobMetaRequest(job_id=job_id)).meta

    def list_jobs(self, detailed: bool = False, all_submitters: bool = False, name_prefix: str = "", id_prefix: str = "", newest: int = 0, reverse: bool = False) -> list[job_pb2.JobMeta]:
        request = session_pb.ListJobsRequest(detailed=detailed, all_submitters=all_submitters, name_prefix=name_prefix, id_prefix=id_prefix, newest=newest, reverse=reverse)
        return list(self._unary("ListJobs", request).jobs)

    def abort_job(self, job_id: str, reason: str = "") -> int:
        """Aborts a job (no effect once finished); returns its RunStatus after the call."""
        return self._unary("AbortJob", session_pb.AbortJobRequest(job_id=job_id, reason=reason)).status

    def delete_job(self, job_id: str) -> None:
        """Deletes a job that is not dispatched or running, with its workspace."""
        self._unary("DeleteJob", session_pb.DeleteJobRequest(job_id=job_id))

    def system_info(self) -> session_pb.GetSystemInfoResponse:
        return self._unary("GetSystemInfo", session_pb.GetSystemInfoRequest())

    def monitor(self, job_id: str, timeout: Optional[float] = None) -> Iterator[session_pb.MonitorJobResponse]:
        """The job's changes (its meta now first) until it finishes or `timeout` passes.

        The last message carries the return_code (JOB_FINISHED or TIMEOUT).
        Stop iterating (or close the generator) to stop watching.
        """
        request = session_pb.MonitorJobRequest(job_id=job_id)
        if timeout:
            request.timeout.FromNanoseconds(int(timeout * 1e9))
        call = self._stub.MonitorJob(request, timeout=timeout + self.timeout if timeout else None, metadata=self._metadata)
        try:
            for update in call:
                yield update
                if update.return_code != session_pb.MONITOR_RETURN_CODE_UNSPECIFIED:
                    return
        except grpc.RpcError as error:
            raise error_from_rpc(error, "MonitorJob", self.site, admin=True) from error
        finally:
            call.cancel()
        raise Internal(f"MonitorJob: the site ended monitoring of job {job_id} without saying why")

    def wait_for_job(self, job_id: str, timeout: Optional[float] = None) -> job_pb2.JobMeta:
        """Monitors the job until it finishes (or `timeout` passes); returns its last meta."""
        meta = job_pb2.JobMeta()
        for update in self.monitor(job_id, timeout):
            meta = update.meta
        return meta

    def download_job_result(self, job_id: str, directory: Union[str, os.PathLike[str]] = ".") -> Path:
        """Downloads a finished job's result into <directory>/<job_id>/ (replacing it) and returns that folder.

        Files are written as their chunks arrive, into a temporary sibling
        renamed at the end: a failed download leaves nothing half-written.
        """
        target = Path(directory).resolve() / job_id
        staging = target.with_name(f"{job_id}.partial-{uuid.uuid4().hex[:8]}")
        call = self._stub.DownloadJobResult(session_pb.DownloadJobResultRequest(job_id=job_id), timeout=self.download_timeout, metadata=self._metadata)
        handle = None
        current: Optional[tuple[str, int]] = None  # path, size
        written = 0
        try:
            staging.mkdir(parents=True)
            for chunk in call:
                if current is None or current[0] != chunk.path:
                    if handle is not None:
                        handle.close()
                        if current is not None and written != current[1]:
                            raise Internal(f"{current[0]}: received {written} of its {current[1]} bytes")
                    problem = _safe_relative(chunk.path)
                    if problem:
                        raise Internal(problem)
                    local = staging.joinpath(*chunk.path.split("/"))
                    local.parent.mkdir(parents=True, exist_ok=True)
                    handle = open(local, "xb")
                    current, written = (chunk.path, chunk.file_size), 0
                if chunk.offset != written:
                    raise Internal(f"{chunk.path}: a chunk at offset {chunk.offset}, expected {written}")
                handle.write(chunk.chunk)
                written += len(chunk.chunk)
            if handle is not None:
                handle.close()
                handle = None
                if current is not None and written != current[1]:
                    raise Internal(f"{current[0]}: received {written} of its {current[1]} bytes")
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
            return target
        except grpc.RpcError as error:
            raise error_from_rpc(error, "DownloadJobResult", self.site, admin=True) from error
        except (OSError, CampfireError):
            call.cancel()
            raise
        finally:
            if handle is not None:
                handle.close()
            shutil.rmtree(staging, ignore_errors=True)
