"""The data plane: payloads too large for the control stream, moved in 1 MiB chunks.

UploadPayload takes a header (the agent's id and the payload's size) and then
the chunks; DownloadPayload streams a task's payload back in order. A payload
is the encoding of a campfire.common.v1.DataExchange. Downloads are checked
against the size the reference announced: a site that sends more or less is
refused, never trusted.
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional, Union

import grpc

from campfire.agent.v1 import agent_service_pb2 as agent_pb
from campfire.errors import CampfireError, InvalidArgument, error_from_rpc

CHUNK_BYTES = 1024 * 1024
# What travels inline until the site's welcome says otherwise (Welcome.max_inline_payload_bytes).
DEFAULT_INLINE_LIMIT = 512 * 1024

_UPLOAD_PAYLOAD = "/campfire.agent.v1.AgentService/UploadPayload"
_DOWNLOAD_PAYLOAD = "/campfire.agent.v1.AgentService/DownloadPayload"
# UploadPayloadRequest.chunk is field 2 and DownloadPayloadResponse.chunk field 1, both length-delimited.
_UPLOAD_CHUNK_TAG = b"\x12"
_DOWNLOAD_CHUNK_TAG = 0x0A


class PayloadCalls:
    """UploadPayload and DownloadPayload on `channel`, with the chunk messages framed and read by hand.

    A chunk message is one bytes field: its encoding is a tag, a length and the chunk. Going through
    the generated messages cost a copy of every chunk each way (a bytes object made for the message,
    then its serialization; a parsed message, then its bytes field), a third of this client's time
    per byte moved. Any other message, or a chunk message encoded another way (protobuf allows
    unknown fields), goes through the generated code.
    """

    def __init__(self, channel: grpc.Channel) -> None:
        self.upload = channel.stream_unary(
            _UPLOAD_PAYLOAD, request_serializer=_serialize_upload, response_deserializer=agent_pb.UploadPayloadResponse.FromString
        )
        self.download = channel.unary_stream(
            _DOWNLOAD_PAYLOAD, request_serializer=agent_pb.DownloadPayloadRequest.SerializeToString, response_deserializer=_download_chunk
        )


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _serialize_upload(message: Union[agent_pb.UploadPayloadRequest, bytes]) -> bytes:
    """A chunk comes already encoded (see _parts); the header is a generated message."""
    return message if isinstance(message, bytes) else message.SerializeToString()


def _download_chunk(encoded: bytes) -> Union[memoryview, bytes]:
    """DownloadPayloadResponse.chunk of `encoded`: a view of its bytes when it is the message's one field, as the site encodes it."""
    if len(encoded) >= 2 and encoded[0] == _DOWNLOAD_CHUNK_TAG:
        length = 0
        shift = 0
        # A chunk's length takes at most 3 varint bytes; past 5, the generated parser decides (and refuses an over-long one).
        for at in range(1, min(len(encoded), 6)):
            byte = encoded[at]
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                if at + 1 + length == len(encoded):
                    return memoryview(encoded)[at + 1 :]
                break
    return agent_pb.DownloadPayloadResponse.FromString(encoded).chunk


def _parts(agent_id: str, encoded: bytes) -> Iterator[Union[agent_pb.UploadPayloadRequest, bytes]]:
    yield agent_pb.UploadPayloadRequest(header=agent_pb.UploadHeader(agent_id=agent_id, size_bytes=len(encoded)))
    view = memoryview(encoded)
    for start in range(0, len(encoded), CHUNK_BYTES):
        piece = view[start : start + CHUNK_BYTES]
        yield _UPLOAD_CHUNK_TAG + _varint(len(piece)) + piece


def upload(calls: PayloadCalls, agent_id: str, encoded: bytes, timeout: Optional[float]) -> agent_pb.PayloadRef:
    """Uploads an encoded DataExchange; returns the reference a result sends instead of the data."""
    try:
        response = calls.upload(_parts(agent_id, encoded), timeout=timeout, wait_for_ready=True)
    except grpc.RpcError as error:
        raise error_from_rpc(error, "UploadPayload") from error
    return agent_pb.PayloadRef(payload_id=response.payload_id, size_bytes=len(encoded))


def download(calls: PayloadCalls, ref: agent_pb.PayloadRef, timeout: Optional[float], on_chunk: Optional[Callable[[], None]] = None) -> bytearray:
    """The payload `ref` names, assembled; `on_chunk()` is called per chunk (a sign of life)."""
    expected = ref.size_bytes
    assembled = bytearray(expected)
    received = 0
    call = calls.download(agent_pb.DownloadPayloadRequest(payload_id=ref.payload_id), timeout=timeout, wait_for_ready=True)
    try:
        for chunk in call:
            size = len(chunk)
            if size > CHUNK_BYTES or received + size > expected:
                call.cancel()
                raise InvalidArgument(f"payload {ref.payload_id}: the site sent more than the {expected} bytes announced (or a chunk over {CHUNK_BYTES})")
            assembled[received : received + size] = chunk
            received += size
            if on_chunk is not None:
                on_chunk()
    except grpc.RpcError as error:
        raise error_from_rpc(error, "DownloadPayload") from error
    if received != expected:
        raise CampfireError(f"payload {ref.payload_id}: received {received} bytes, but {expected} were announced")
    return assembled  # a bytearray: DataExchange.FromString takes it without another copy
