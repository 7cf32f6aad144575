"""The chunk messages of UploadPayload and DownloadPayload, framed and read by hand: the same bytes as the generated code (no site needed)."""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError

from campfire import payloads
from campfire.agent.v1 import agent_service_pb2 as agent_pb

CHUNKS = [b"", b"x", bytes(range(256)) * 3, bytes(payloads.CHUNK_BYTES)]


@pytest.mark.parametrize("chunk", CHUNKS, ids=lambda chunk: f"{len(chunk)} bytes")
def test_a_download_chunk_is_read_as_the_generated_parser_reads_it(chunk: bytes) -> None:
    encoded = agent_pb.DownloadPayloadResponse(chunk=chunk).SerializeToString()
    assert bytes(payloads._download_chunk(encoded)) == chunk


@pytest.mark.parametrize("chunk", CHUNKS, ids=lambda chunk: f"{len(chunk)} bytes")
def test_upload_chunks_are_the_generated_encoding(chunk: bytes) -> None:
    header, *framed = payloads._parts("agent-1", chunk)
    assert payloads._serialize_upload(header) == header.SerializeToString()
    assert [payloads._serialize_upload(message) for message in framed] == ([agent_pb.UploadPayloadRequest(chunk=chunk).SerializeToString()] if chunk else [])


def test_a_payload_past_one_chunk_is_cut_into_chunks_in_order() -> None:
    payload = bytes(range(256)) * (payloads.CHUNK_BYTES // 128 + 3)
    header, *framed = payloads._parts("agent-1", payload)
    assert header.header.size_bytes == len(payload)
    chunks = [agent_pb.UploadPayloadRequest.FromString(message).chunk for message in framed]
    assert [len(chunk) for chunk in chunks] == [payloads.CHUNK_BYTES, payloads.CHUNK_BYTES, len(payload) - 2 * payloads.CHUNK_BYTES]
    assert b"".join(chunks) == payload


@pytest.mark.parametrize(
    "encoded, chunk",
    [
        # An unknown field before the chunk, and one after it.
        (b"\x18\x05" + agent_pb.DownloadPayloadResponse(chunk=b"abc").SerializeToString(), b"abc"),
        (agent_pb.DownloadPayloadResponse(chunk=b"abc").SerializeToString() + b"\x18\x05", b"abc"),
        # The field twice: the last one wins, as protobuf says.
        (b"\x0a\x01a\x0a\x02bc", b"bc"),
    ],
)
def test_anything_else_goes_through_the_generated_parser(encoded: bytes, chunk: bytes) -> None:
    assert bytes(payloads._download_chunk(encoded)) == chunk


@pytest.mark.parametrize(
    "encoded",
    [
        b"\x0a\x05ab",  # the length runs past the message
        b"\x0a\x81" + b"\x80" * 8 + b"\x00x",  # an over-long length varint
    ],
)
def test_a_malformed_chunk_message_is_refused(encoded: bytes) -> None:
    with pytest.raises(DecodeError):
        payloads._download_chunk(encoded)
