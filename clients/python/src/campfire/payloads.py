"""The data plane: payloads too large for the control stream, moved in 1 MiB chunks.

UploadPayload takes a header (the agent's id and the payload's size) and then
the chunks; DownloadPayload streams a task's payload back in order. A payload
is the encoding of a campfire.common.v1.DataExchange. Downloads are checked
against the size the reference announced: a site that sends more or less is
refused, never trusted.
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional

import grpc

from campfire.agent.v1 import agent_service_pb2 as agent_pb
from campfire.agent.v1 import agent_service_pb2_grpc as agent_grpc
from campfire.errors import CampfireError, InvalidArgument, error_from_rpc

CHUNK_BYTES = 1024 * 1024
# What travels inline until the site's welcome says otherwise (Welcome.max_inline_payload_bytes).
DEFAULT_INLINE_LIMIT = 512 * 1024


def _parts(agent_id: str, encoded: bytes) -> Iterator[agent_pb.UploadPayloadRequest]:
    yield agent_pb.UploadPayloadRequest(header=agent_pb.UploadHeader(agent_id=agent_id, size_bytes=len(encoded)))
    view = memoryview(encoded)
    for start in range(0, len(encoded), CHUNK_BYTES):
        yield agent_pb.UploadPayloadRequest(chunk=bytes(view[start : start + CHUNK_BYTES]))


def upload(stub: agent_grpc.AgentServiceStub, agent_id: str, encoded: bytes, timeout: Optional[float]) -> agent_pb.PayloadRef:
    """Uploads an encoded DataExchange; returns the reference a result sends instead of the data."""
    try:
        response = stub.UploadPayload(_parts(agent_id, encoded), timeout=timeout, wait_for_ready=True)
    except grpc.RpcError as error:
        raise error_from_rpc(error, "UploadPayload") from error
    return agent_pb.PayloadRef(payload_id=response.payload_id, size_bytes=len(encoded))


def download(stub: agent_grpc.AgentServiceStub, ref: agent_pb.PayloadRef, timeout: Optional[float], on_chunk: Optional[Callable[[], None]] = None) -> bytearray:
    """The payload `ref` names, assembled; `on_chunk()` is called per chunk (a sign of life)."""
    expected = ref.size_bytes
    assembled = bytearray(expected)
    received = 0
    call = stub.DownloadPayload(agent_pb.DownloadPayloadRequest(payload_id=ref.payload_id), timeout=timeout, wait_for_ready=True)
    try:
        for response in call:
            size = len(response.chunk)
            if size > CHUNK_BYTES or received + size > expected:
                call.cancel()
                raise InvalidArgument(f"payload {ref.payload_id}: the site sent more than the {expected} bytes announced (or a chunk over {CHUNK_BYTES})")
            assembled[received : received + size] = response.chunk
            received += size
            if on_chunk is not None:
                on_chunk()
    except grpc.RpcError as error:
        raise error_from_rpc(error, "DownloadPayload") from error
    if received != expected:
        raise CampfireError(f"payload {ref.payload_id}: received {received} bytes, but {expected} were announced")
    return assembled  # a bytearray: DataExchange.FromString takes it without another copy
