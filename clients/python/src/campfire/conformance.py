"""The Python runner of Campfire's conformance suite: python -m campfire.conformance <scenario>.

The harness (test/conformance/ in the repository; the contract is
docs/protocol.md and the suite's README) starts a real site, sets
CAMPFIRE_SITE, CAMPFIRE_CLIENT, CAMPFIRE_TOKEN, CAMPFIRE_JOB_DIR and
CAMPFIRE_WORK_DIR, runs this with one scenario name, and reads one JSON
object per line on stdout. Agent scenarios use campfire.Agent; steps a
library never takes (a message before hello, a raw duplicate) use the
generated stubs that ship in this package. Exit 0 when the scenario's
observations were made; 1 with the reason on stderr otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator, Optional

import grpc
import numpy as np

from campfire.admin.v1 import job_pb2
from campfire.admin.v1 import session_service_pb2 as session_pb
from campfire.agent.v1 import agent_service_pb2 as agent_pb
from campfire.agent.v1 import agent_service_pb2_grpc as agent_grpc
from campfire.agent_client import PROTOCOL_VERSION, Agent, Task
from campfire.channels import open_channel
from campfire.common.v1 import exchange_pb2, return_code_pb2
from campfire.errors import CampfireError, JobEnded, ResultNotAccepted, TaskAborted
from campfire.job_folder import read_job_folder
from campfire.session import Session
from campfire.tensors import data_exchange, from_numpy

TIMINGS = {"reconnect_base_delay": 0.1, "reconnect_max_delay": 1.0, "resend_interval": 1.0, "submit_timeout": 25.0}


class ScenarioFailed(Exception):
    pass


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ScenarioFailed(f"{name} is not set")
    return value


def status_of(error: CampfireError) -> dict:
    code = error.code or grpc.StatusCode.UNKNOWN
    return {"code": code.value[0], "message": error.details}


def rpc_status(error: grpc.RpcError) -> dict:
    return {"code": error.code().value[0], "message": error.details() or ""}


# --- the conformance trainer ------------------------------------------------------------------


def add_one(task: Task) -> exchange_pb2.DataExchange:
    delay = task.meta.get("delay_ms")
    if isinstance(delay, (int, float)) and delay > 0:
        time.sleep(delay / 1000)
    return data_exchange({name: array + np.float32(1) for name, array in task.arrays().items()}, meta={"NUM_STEPS_CURRENT_ROUND": 1})


def serve(agent: Agent) -> None:
    """Runs the conformance trainer on every task until the agent closes; prints task, result, aborted, bye."""
    for task in agent.tasks():
        emit("task", task_id=task.task_id, task_name=task.task_name)
        if task.task_name == "wait":
            task.wait_aborted()
            emit("aborted", task_id=task.task_id)
            continue
        try:
            task.submit(add_one(task))
            emit("result", task_id=task.task_id, accepted=True)
        except ResultNotAccepted:
            emit("result", task_id=task.task_id, accepted=False)
        except TaskAborted:
            emit("aborted", task_id=task.task_id)
    if not isinstance(agent.closed_with, JobEnded):
        raise ScenarioFailed(f"the agent closed without the site's bye JOB_ENDED: {agent.closed_with}")
    emit("bye", reason=agent_pb.ByeReason.Name(agent.bye.reason))


def library_agent(client: str) -> Agent:
    def welcomed(welcome: agent_pb.Welcome) -> None:
        emit("welcome", protocol=welcome.protocol_version, agent_id=welcome.agent_id)

    # CAMPFIRE_PRIVACY (agent.task-filters): the client's own filter config, a JSON file.
    privacy = os.environ.get("CAMPFIRE_PRIVACY") or None
    return Agent(env("CAMPFIRE_SITE"), client, agent_id=f"{client}-py-{uuid.uuid4().hex[:6]}", on_welcome=welcomed, privacy=privacy, **TIMINGS)


def agent_scenario(agent: Agent) -> None:
    with agent:
        if not agent.wait_until_connected(20):
            raise ScenarioFailed("no welcome within 20 s")
        serve(agent)


# --- raw streams, for what the library never sends ---------------------------------------------


class RawStream:
    """A Connect stream driven message by message."""

    def __init__(self, stub: agent_grpc.AgentServiceStub) -> None:
        self._outgoing: "queue.Queue[Optional[agent_pb.ConnectRequest]]" = queue.Queue()
        self.call = stub.Connect(self._requests(), timeout=25)

    def _requests(self) -> Iterator[agent_pb.ConnectRequest]:
        while (message := self._outgoing.get()) is not None:
            yield message

    def send(self, **kind: object) -> None:
        self._outgoing.put(agent_pb.ConnectRequest(**kind))

    def receive(self, wanted: Callable[[agent_pb.ConnectResponse], bool]) -> agent_pb.ConnectResponse:
        for response in self.call:
            if wanted(response):
                return response
        raise ScenarioFailed("the site ended the stream before the expected message")

    def close(self) -> None:
        self._outgoing.put(None)

    def status(self) -> dict:
        """Reads to the stream's end: the status the site ended it with."""
        try:
            for _ in self.call:
                pass
        except grpc.RpcError as error:
            return rpc_status(error)
        raise ScenarioFailed("the site ended the stream without an error")


def hello(client: str, agent_id: str, protocol: int = PROTOCOL_VERSION) -> agent_pb.Hello:
    return agent_pb.Hello(client_name=client, agent_id=agent_id, protocol_version=protocol)


def is_welcome(response: agent_pb.ConnectResponse) -> bool:
    return response.WhichOneof("kind") == "welcome"


def raw_stub() -> tuple[grpc.Channel, agent_grpc.AgentServiceStub]:
    channel = open_channel(env("CAMPFIRE_SITE"), options=[("grpc.max_send_message_length", 8 * 1024 * 1024)])
    return channel, agent_grpc.AgentServiceStub(channel)


# --- agent scenarios ---------------------------------------------------------------------------


def agent_hello() -> None:
    client = env("CAMPFIRE_CLIENT")
    agent = library_agent(client)
    with agent:
        if not agent.wait_until_connected(20):
            raise ScenarioFailed("no welcome within 20 s")
        channel, stub = raw_stub()
        with channel:
            for offered in (1, 99):
                stream = RawStream(stub)
                stream.send(hello=hello(client, f"{agent.agent_id}-v{offered}", offered))
                welcome = stream.receive(is_welcome).welcome
                emit("negotiated", offered=offered, protocol=welcome.protocol_version)
                stream.send(bye=agent_pb.Bye(reason=agent_pb.BYE_REASON_AGENT_STOPPING, message="negotiation checked"))
                stream.close()
                stream.call.cancel()


def agent_duplicate_stale() -> None:
    client = env("CAMPFIRE_CLIENT")
    channel, stub = raw_stub()
    with channel:
        stream = RawStream(stub)
        stream.send(hello=hello(client, f"{client}-py-raw"))
        stream.receive(is_welcome)
        task = stream.receive(lambda response: response.WhichOneof("kind") == "task").task
        tensors = [from_numpy(tensor.name, np.frombuffer(tensor.data, "<f4").reshape(tuple(tensor.shape)) + np.float32(1)) for tensor in task.payload.inline.tensors]
        data = exchange_pb2.DataExchange(kind=exchange_pb2.DATA_KIND_WEIGHTS, tensors=tensors)
        data.meta.update({"NUM_STEPS_CURRENT_ROUND": 1})

        def ack_of(task_id: str) -> agent_pb.ResultAck:
            def carries(response: agent_pb.ConnectResponse) -> bool:
                kind = response.WhichOneof("kind")
                return (kind == "result_ack" and response.result_ack.task_id == task_id) or (kind == "task" and response.task.result_ack.task_id == task_id)

            response = stream.receive(carries)
            return response.result_ack if response.WhichOneof("kind") == "result_ack" else response.task.result_ack

        for task_id in (task.task_id, task.task_id, "never-sent-1"):
            stream.send(result=agent_pb.TaskResult(task_id=task_id, return_code=return_code_pb2.RETURN_CODE_OK, payload=agent_pb.Payload(inline=data)))
            ack = ack_of(task_id)
            emit("ack", task_id=task_id, status=agent_pb.ResultDisposition.Name(ack.disposition))
        stream.send(bye=agent_pb.Bye(reason=agent_pb.BYE_REASON_AGENT_STOPPING, message="done"))
        stream.close()


def agent_errors() -> None:
    client = env("CAMPFIRE_CLIENT")
    channel, stub = raw_stub()
    with channel:

        def stream_case(case: str, steps: Callable[[RawStream], None]) -> None:
            stream = RawStream(stub)
            steps(stream)
            emit("status", case=case, **stream.status())
            stream.close()

        def before_hello(stream: RawStream) -> None:
            stream.send(heartbeat=agent_pb.Heartbeat(sequence=1))

        def welcomed_then(then: Callable[[RawStream], None]) -> Callable[[RawStream], None]:
            def steps(stream: RawStream) -> None:
                stream.send(hello=hello(client, f"{client}-py-{uuid.uuid4().hex[:6]}"))
                stream.receive(is_welcome)
                then(stream)

            return steps

        def second_hello(stream: RawStream) -> None:
            stream.send(hello=hello(client, f"{client}-py-again"))

        def oversized(stream: RawStream) -> None:
            big = data_exchange({"big": np.zeros(3 * 1024 * 1024 // 4, dtype=np.float32)})
            stream.send(result=agent_pb.TaskResult(task_id="oversized", return_code=return_code_pb2.RETURN_CODE_OK, payload=agent_pb.Payload(inline=big)))

        stream_case("before-hello", before_hello)
        stream_case("empty-client-name", lambda stream: stream.send(hello=hello("", f"{client}-py-nameless")))
        stream_case("protocol-zero", lambda stream: stream.send(hello=hello(client, f"{client}-py-zero", 0)))
        stream_case("second-hello", welcomed_then(second_hello))
        stream_case("oversized", welcomed_then(oversized))

        def upload_parts() -> Iterator[agent_pb.UploadPayloadRequest]:
            yield agent_pb.UploadPayloadRequest(header=agent_pb.UploadHeader(agent_id="nobody-connected", size_bytes=4))
            yield agent_pb.UploadPayloadRequest(chunk=b"\0\0\0\0")

        try:
            stub.UploadPayload(upload_parts(), timeout=10)
            raise ScenarioFailed("UploadPayload for an agent that is not connected succeeded")
        except grpc.RpcError as error:
            emit("status", case="upload-without-stream", **rpc_status(error))
        try:
            for _ in stub.DownloadPayload(agent_pb.DownloadPayloadRequest(payload_id="no-such-payload"), timeout=10):
                pass
            raise ScenarioFailed("DownloadPayload of an unknown payload succeeded")
        except grpc.RpcError as error:
            emit("status", case="unknown-payload", **rpc_status(error))


# --- admin scenarios ---------------------------------------------------------------------------


def admin_session(token: Optional[str]) -> Session:
    return Session(env("CAMPFIRE_SITE"), token=token, timeout=20)


def admin_lifecycle() -> None:
    with admin_session(env("CAMPFIRE_TOKEN")) as session:
        job_id = session.submit_job(env("CAMPFIRE_JOB_DIR"))
        emit("submitted", job_id=job_id)
        emit("listed", job_ids=[job.job_id for job in session.list_jobs()])
        last = None
        for update in session.monitor(job_id, timeout=25):
            status = job_pb2.RunStatus.Name(update.meta.status)
            if status != last:
                emit("status", status=status)
                last = status
            if update.return_code != session_pb.MONITOR_RETURN_CODE_UNSPECIFIED:
                emit("monitor_end", return_code=session_pb.MonitorReturnCode.Name(update.return_code))
        emit("meta", status=job_pb2.RunStatus.Name(session.get_job_meta(job_id).status))
        result = session.download_job_result(job_id, Path(env("CAMPFIRE_WORK_DIR")) / "download")
        emit("downloaded", files=sorted(path.relative_to(result).as_posix() for path in result.rglob("*") if path.is_file()))
        clone_id = session.clone_job(job_id)
        emit("cloned", job_id=clone_id)
        emit("aborted", job_id=clone_id, status=job_pb2.RunStatus.Name(session.abort_job(clone_id, "conformance")))
        for done in (job_id, clone_id):
            session.delete_job(done)
            emit("deleted", job_id=done)


def admin_errors() -> None:
    token = env("CAMPFIRE_TOKEN")

    def case(name: str, call: Callable[[], object]) -> None:
        try:
            call()
        except CampfireError as error:
            emit("status", case=name, **status_of(error))
            return
        raise ScenarioFailed(f"admin.errors {name}: the call succeeded")

    with admin_session(None) as anonymous:
        case("no-token", anonymous.list_jobs)
    with admin_session("not-a-token") as impostor:
        case("bad-token", impostor.list_jobs)
    with admin_session(token) as session:
        case("unknown-job", lambda: session.get_job_meta("no-such-job"))
        nameless = read_job_folder(env("CAMPFIRE_JOB_DIR"))
        nameless.name = ""
        case("invalid-job", lambda: session.submit_definition(nameless))
        unknown = read_job_folder(env("CAMPFIRE_JOB_DIR"))
        for app in unknown.apps:
            if app.HasField("server_config"):
                app.server_config["workflow"] = "no-such-workflow"
        case("unknown-workflow", lambda: session.submit_definition(unknown))
        waiting = session.submit_job(env("CAMPFIRE_JOB_DIR"))
        case("not-finished", lambda: session.download_job_result(waiting, Path(env("CAMPFIRE_WORK_DIR")) / "download"))
        session.abort_job(waiting, "conformance")
        session.delete_job(waiting)


SCENARIOS: dict[str, Callable[[], None]] = {
    "agent.hello": agent_hello,
    "agent.task-result": lambda: agent_scenario(library_agent(env("CAMPFIRE_CLIENT"))),
    "agent.large-result": lambda: agent_scenario(library_agent(env("CAMPFIRE_CLIENT"))),
    "agent.abort": lambda: agent_scenario(library_agent(env("CAMPFIRE_CLIENT"))),
    "agent.task-filters": lambda: agent_scenario(library_agent(env("CAMPFIRE_CLIENT"))),
    "agent.bye": lambda: agent_scenario(library_agent(env("CAMPFIRE_CLIENT"))),
    "agent.reconnect": lambda: agent_scenario(library_agent(env("CAMPFIRE_CLIENT"))),
    "agent.site-restart": lambda: agent_scenario(library_agent(env("CAMPFIRE_CLIENT"))),
    "agent.duplicate-stale": agent_duplicate_stale,
    "agent.errors": agent_errors,
    "admin.lifecycle": admin_lifecycle,
    "admin.errors": admin_errors,
}


def main(argv: list[str]) -> int:
    logging.basicConfig(stream=sys.stderr, level=os.environ.get("CAMPFIRE_LOG_LEVEL", "WARNING"))
    if len(argv) != 1 or argv[0] not in SCENARIOS:
        print(f"usage: python -m campfire.conformance <scenario>; scenarios: {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    try:
        SCENARIOS[argv[0]]()
    except (ScenarioFailed, CampfireError, grpc.RpcError) as error:
        print(f"{argv[0]}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
