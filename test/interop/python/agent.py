"""A minimal Campfire agent in Python, built only from the .proto files.

It shows a Python team everything an agent needs on AgentService.Connect:
say hello, wait for the welcome, then for each task acknowledge it, read the
tensors, compute, return a result; heartbeat while idle; leave on bye. Its
"training" adds 1.0 to every element of every FLOAT32 tensor, so a test can
check the arithmetic.

Generate the stubs first (the google/protobuf imports resolve through
grpcio-tools' bundled include path):

    python -m grpc_tools.protoc -I proto --python_out=STUBS --grpc_python_out=STUBS \\
        $(find proto/campfire -name '*.proto')

then run, with STUBS importable, against a site on loopback in plain text:

    PYTHONPATH=STUBS python agent.py --site 127.0.0.1:7443 --client-name hospital-a

or over mutual TLS with the client's kit folder from `campfire provision`
(ca.crt, hospital-a.crt, hospital-a.key). Dial a name the site's certificate
carries (its project's `site.hosts`), or say which with --tls-server-name:

    PYTHONPATH=STUBS python agent.py --site localhost:7443 --client-name hospital-a --tls-dir kits/hospital-a

A TLS site takes hello only for the client its certificate names (CN): an
agent with hospital-a's certificate saying hello as hospital-b is refused
with PERMISSION_DENIED.

It prints one line per event, for a person or a test to read:
"welcomed ...", "task <id> ...", "result <id> ...", "result_ack <id> ...",
"bye <REASON> ...",
and "error <STATUS_CODE> <details>" when the site ends the stream with an
error (a TLS handshake the site refused shows as UNAVAILABLE). Exit status:
0 after a bye, 2 when the site refused the stream, 3 when the kit could not be
read ("error kit <why>").

Out of scope for this example: reconnecting (a real agent would reconnect with
backoff and resend an unacknowledged result in hello.held_result), aborts
(our tasks finish at once) and metrics.
"""

from __future__ import annotations

import argparse
import array
import os
import queue
import sys
import time
import uuid
from typing import Iterator, Optional

import grpc

from campfire.agent.v1 import agent_service_pb2 as agent_pb
from campfire.agent.v1 import agent_service_pb2_grpc as agent_grpc
from campfire.common.v1 import exchange_pb2, return_code_pb2, tensor_pb2

PROTOCOL_VERSION = 1

# Until the welcome says otherwise (Welcome.max_inline_payload_bytes): results
# that encode to more than this travel as a PayloadRef, uploaded in chunks.
DEFAULT_INLINE_PAYLOAD_LIMIT = 512 * 1024
CHUNK_BYTES = 1024 * 1024


def say(*words: object) -> None:
    """One line on stdout, flushed at once so that a reader sees it now."""
    print(*words, flush=True)


class Outbox:
    """The agent's side of the bidirectional stream.

    gRPC Python takes the request stream as an iterator and pulls from it on a
    thread of its own. We feed that iterator from a queue.Queue, so any thread
    can send with put(). While nothing has been sent for a heartbeat interval,
    the iterator sends a heartbeat by itself: the site counts any message as a
    sign of life and treats an agent silent for Welcome.heartbeat_timeout as
    gone. Because the heartbeats come from gRPC's thread, they go on while the
    main thread is busy training.
    """

    _CLOSE = object()  # ends the request stream (half-close)
    _WAKE = object()  # makes the iterator recompute its wait (the interval changed)

    def __init__(self) -> None:
        self._queue: queue.Queue[object] = queue.Queue()
        self._heartbeat_sequence = 0
        # Until the welcome tells us the site's interval, the reference default.
        self._heartbeat_interval = 5.0

    def put(self, request: agent_pb.ConnectRequest) -> None:
        self._queue.put(request)

    def close(self) -> None:
        self._queue.put(self._CLOSE)

    def set_heartbeat_interval(self, seconds: float) -> None:
        # The iterator is already waiting with the old interval: wake it up.
        self._heartbeat_interval = seconds
        self._queue.put(self._WAKE)

    def requests(self) -> Iterator[agent_pb.ConnectRequest]:
        last_sent = time.monotonic()
        while True:
            wait = max(0.0, last_sent + self._heartbeat_interval - time.monotonic())
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                # Nothing sent for a whole interval: send a heartbeat.
                self._heartbeat_sequence += 1
                heartbeat = agent_pb.Heartbeat(sequence=self._heartbeat_sequence)
                heartbeat.sent_at.GetCurrentTime()
                item = agent_pb.ConnectRequest(heartbeat=heartbeat)
            if item is self._CLOSE:
                return
            if item is self._WAKE:
                continue
            last_sent = time.monotonic()
            yield item


# --- tensors ----------------------------------------------------------------
# A Tensor is dtype + shape + the elements' bytes, row-major and little-endian.
# With numpy it is numpy.frombuffer(t.data, "<f4").reshape(t.shape); here we use
# the standard library's array module so that the example needs no numpy.


def read_float32(tensor: tensor_pb2.Tensor) -> array.array:
    if tensor.dtype != tensor_pb2.D_TYPE_FLOAT32:
        raise ValueError(f"tensor {tensor.name}: {tensor_pb2.DType.Name(tensor.dtype)}, this agent reads FLOAT32 only")
    values = array.array("f")  # C float: 4 bytes, IEEE 754 binary32
    values.frombytes(tensor.data)
    if sys.byteorder == "big":
        values.byteswap()  # the wire is little-endian
    expected = 1
    for size in tensor.shape:
        expected *= size
    if len(values) != expected:
        raise ValueError(f"tensor {tensor.name}: {len(values)} elements, shape {list(tensor.shape)} needs {expected}")
    return values


def float32_tensor(name: str, shape: list[int], values: array.array) -> tensor_pb2.Tensor:
    if sys.byteorder == "big":
        values = array.array("f", values)
        values.byteswap()
    return tensor_pb2.Tensor(name=name, dtype=tensor_pb2.D_TYPE_FLOAT32, shape=shape, data=values.tobytes())


def train(data: exchange_pb2.DataExchange) -> exchange_pb2.DataExchange:
    """Our stand-in for a training round: every element plus one, names and shapes kept."""
    result = exchange_pb2.DataExchange(kind=exchange_pb2.DATA_KIND_WEIGHTS)
    for tensor in data.tensors:
        values = read_float32(tensor)
        for i in range(len(values)):
            values[i] += 1.0
        result.tensors.append(float32_tensor(tensor.name, list(tensor.shape), values))
    # meta is a google.protobuf.Struct: item assignment works like a dict
    # (numbers are stored as doubles). Fedavg weighs each result by this count.
    result.meta["NUM_STEPS_CURRENT_ROUND"] = 1
    return result


# --- payloads -----------------------------------------------------------------


def download(stub: agent_grpc.AgentServiceStub, ref: agent_pb.PayloadRef) -> exchange_pb2.DataExchange:
    """A task too large for the control stream: fetch its DataExchange in chunks."""
    chunks = stub.DownloadPayload(agent_pb.DownloadPayloadRequest(payload_id=ref.payload_id))
    return exchange_pb2.DataExchange.FromString(b"".join(response.chunk for response in chunks))


def upload(stub: agent_grpc.AgentServiceStub, agent_id: str, encoded: bytes) -> agent_pb.PayloadRef:
    """A result too large to send inline: upload it (header first, then chunks) and reference it."""

    def parts() -> Iterator[agent_pb.UploadPayloadRequest]:
        yield agent_pb.UploadPayloadRequest(header=agent_pb.UploadHeader(agent_id=agent_id, size_bytes=len(encoded)))
        for start in range(0, len(encoded), CHUNK_BYTES):
            yield agent_pb.UploadPayloadRequest(chunk=encoded[start : start + CHUNK_BYTES])

    response = stub.UploadPayload(parts())
    return agent_pb.PayloadRef(payload_id=response.payload_id, size_bytes=len(encoded))


def task_data(stub: agent_grpc.AgentServiceStub, payload: agent_pb.Payload) -> exchange_pb2.DataExchange:
    body = payload.WhichOneof("body")
    if body == "inline":
        return payload.inline
    if body == "ref":
        return download(stub, payload.ref)
    return exchange_pb2.DataExchange()  # a task without data


def result_payload(stub: agent_grpc.AgentServiceStub, agent_id: str, data: exchange_pb2.DataExchange, inline_limit: int) -> agent_pb.Payload:
    encoded = data.SerializeToString()
    if len(encoded) <= inline_limit:
        return agent_pb.Payload(inline=data)
    return agent_pb.Payload(ref=upload(stub, agent_id, encoded))


# --- the channel ----------------------------------------------------------------


def read_kit(directory: str) -> tuple[bytes, bytes, bytes]:
    """A kit folder as `campfire provision` writes it: (ca.crt, <name>.key, <name>.crt).

    The certificate is the one named after the folder, or the only one there
    besides ca.crt; its key sits beside it with the same name.
    """
    entries = os.listdir(directory)
    if "ca.crt" not in entries:
        raise ValueError(f"TLS kit {directory}: ca.crt is missing; a kit holds ca.crt, <name>.crt and <name>.key")
    certificates = sorted(entry for entry in entries if entry.endswith(".crt") and entry != "ca.crt")
    own = f"{os.path.basename(os.path.normpath(directory))}.crt"
    if own not in certificates:
        if len(certificates) != 1:
            raise ValueError(f"TLS kit {directory}: needs one <name>.crt besides ca.crt, found {certificates or 'none'}")
        own = certificates[0]
    key = own[: -len(".crt")] + ".key"
    if key not in entries:
        raise ValueError(f"TLS kit {directory}: {own} has no {key} beside it")

    def read(name: str) -> bytes:
        with open(os.path.join(directory, name), "rb") as file:
            return file.read()

    return read("ca.crt"), read(key), read(own)


def open_channel(site: str, tls_dir: Optional[str], server_name: Optional[str]) -> grpc.Channel:
    """Plain text without a kit (a site on loopback), mutual TLS with one.

    With TLS the channel trusts only the project's CA and presents the kit's
    certificate; the site's certificate must name the host dialled, or
    `server_name` when given (a site reached through a tunnel or a proxy).
    """
    if tls_dir is None:
        return grpc.insecure_channel(site)
    root_certificates, private_key, certificate_chain = read_kit(tls_dir)
    credentials = grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.secure_channel(site, credentials, options=options)


# --- the session ----------------------------------------------------------------


def run(channel: grpc.Channel, client_name: str, agent_id: str) -> int:
    with channel:
        stub = agent_grpc.AgentServiceStub(channel)
        outbox = Outbox()
        # hello must be the first message on the stream, and only the first.
        outbox.put(
            agent_pb.ConnectRequest(
                hello=agent_pb.Hello(client_name=client_name, agent_id=agent_id, protocol_version=PROTOCOL_VERSION)
            )
        )
        responses = stub.Connect(outbox.requests())
        done_tasks: set[str] = set()
        said_bye: Optional[str] = None
        inline_limit = DEFAULT_INLINE_PAYLOAD_LIMIT
        try:
            for response in responses:
                kind = response.WhichOneof("kind")
                if kind == "welcome":
                    welcome = response.welcome
                    interval = welcome.heartbeat_interval.ToMilliseconds() / 1000
                    # Heartbeat at the site's interval: its heartbeat_timeout may be far
                    # shorter than our 5 s default.
                    if interval > 0:
                        outbox.set_heartbeat_interval(interval)
                    inline_limit = welcome.max_inline_payload_bytes or DEFAULT_INLINE_PAYLOAD_LIMIT
                    say(f"welcomed site={welcome.site_name} agent={welcome.agent_id} heartbeat_interval={interval}s")
                elif kind == "task":
                    task = response.task
                    # Acknowledge first: the site resends an unacknowledged task.
                    outbox.put(agent_pb.ConnectRequest(task_ack=agent_pb.TaskAck(task_id=task.task_id)))
                    if task.task_id in done_tasks:
                        say(f"duplicate task {task.task_id} acknowledged again")
                        continue
                    body = task.payload.WhichOneof("body") or "none"
                    say(f"task {task.task_id} name={task.task_name} job={task.job_id} payload={body}")
                    try:
                        data = train(task_data(stub, task.payload))
                        result = agent_pb.TaskResult(
                            task_id=task.task_id,
                            return_code=return_code_pb2.RETURN_CODE_OK,
                            payload=result_payload(stub, agent_id, data, inline_limit),
                        )
                    except ValueError as error:
                        say(f"task {task.task_id} failed: {error}")
                        result = agent_pb.TaskResult(task_id=task.task_id, return_code=return_code_pb2.RETURN_CODE_BAD_TASK_DATA)
                    done_tasks.add(task.task_id)
                    outbox.put(agent_pb.ConnectRequest(result=result))
                    code = return_code_pb2.ReturnCode.Name(result.return_code)
                    say(f"result {task.task_id} {code} payload={result.payload.WhichOneof('body') or 'none'}")
                elif kind == "result_ack":
                    ack = response.result_ack
                    disposition = agent_pb.ResultDisposition.Name(ack.disposition)
                    say(f"result_ack {ack.task_id} {disposition} {ack.reason}".rstrip())
                elif kind == "abort":
                    say(f"abort {response.abort.task_id} {response.abort.reason}")
                elif kind == "bye":
                    said_bye = agent_pb.ByeReason.Name(response.bye.reason)
                    say(f"bye {said_bye} {response.bye.message}".rstrip())
                    # End our half of the stream; the loop ends when the site ends its half.
                    outbox.close()
                # kind == "heartbeat": the site is alive; nothing to do.
        except grpc.RpcError as error:
            # The site refused the stream (INVALID_ARGUMENT, FAILED_PRECONDITION, ...).
            # The details name the offending field and value.
            outbox.close()
            if said_bye is None:
                say(f"error {error.code().name} {error.details()}")
                return 2
        outbox.close()
        if said_bye is None:
            say("error the site ended the stream without bye")
            return 1
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", required=True, help="host:port of the site's AgentService")
    parser.add_argument("--client-name", required=True, help="the client this agent acts for, as in deploy maps")
    parser.add_argument("--agent-id", default=f"py-{uuid.uuid4().hex[:12]}", help="unique per agent process")
    parser.add_argument("--tls-dir", help="the client's kit folder (ca.crt, <name>.crt, <name>.key): mutual TLS; without it, plain text")
    parser.add_argument("--tls-server-name", help="the name to check the site's certificate against, when it is not the host dialled")
    args = parser.parse_args()
    try:
        channel = open_channel(args.site, args.tls_dir, args.tls_server_name)
    except (OSError, ValueError) as error:
        say(f"error kit {error}")
        return 3
    return run(channel, args.client_name, args.agent_id)


if __name__ == "__main__":
    sys.exit(main())
