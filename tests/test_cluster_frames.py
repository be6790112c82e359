"""The frame codec without sockets or an event loop (spectral/cluster/frames.py)."""

from __future__ import annotations

import ast
import itertools
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spectral.cluster.frames import (
    HEADER_SIZE,
    NEED_DATA,
    Call,
    Failed,
    FrameDecodeError,
    FrameDecoder,
    FrameTooLargeError,
    GoAway,
    Ok,
    call_frame,
    encode_frame,
    failed_frame,
    goaway_frame,
    ok_frame,
    parse_reply,
    parse_request,
    request_id,
)

VALUES = [{"id": 1, "op": "get", "body": {"taskId": "t-1"}}, [1, 2, 3], "é", None, {}, 0.5]


def drain(decoder: FrameDecoder) -> list[object]:
    out = []
    while (value := decoder.next_frame()) is not NEED_DATA:
        out.append(value)
    return out


def test_round_trip() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"".join(encode_frame(value) for value in VALUES))
    assert drain(decoder) == VALUES
    assert decoder.buffered == 0


def test_header_is_big_endian_length() -> None:
    frame = encode_frame({"a": 1})
    assert frame[:HEADER_SIZE] == struct.pack(">I", len(b'{"a":1}'))
    assert frame[HEADER_SIZE:] == b'{"a":1}'


def test_every_split_point() -> None:
    stream = b"".join(encode_frame(value) for value in VALUES)
    for cut in range(len(stream) + 1):
        decoder = FrameDecoder()
        decoder.feed(stream[:cut])
        first = drain(decoder)
        decoder.feed(stream[cut:])
        assert first + drain(decoder) == VALUES, cut


def test_byte_by_byte() -> None:
    stream = b"".join(encode_frame(value) for value in VALUES)
    decoder = FrameDecoder()
    out = []
    for index in range(len(stream)):
        decoder.feed(stream[index : index + 1])
        out += drain(decoder)
    assert out == VALUES


@given(st.lists(st.binary(max_size=40)), st.lists(st.integers(0, 10_000), max_size=20))
def test_arbitrary_chunks(blobs: list[bytes], cuts: list[int]) -> None:
    values = [blob.hex() for blob in blobs]
    stream = b"".join(encode_frame(value) for value in values)
    points = sorted({0, len(stream), *(cut % (len(stream) + 1) for cut in cuts)})
    decoder = FrameDecoder()
    out: list[object] = []
    for start, end in itertools.pairwise(points):
        decoder.feed(stream[start:end])
        out += drain(decoder)
    assert out == values


def test_encoder_refuses_oversized() -> None:
    with pytest.raises(FrameTooLargeError) as caught:
        encode_frame("x" * 100, max_size=50)
    assert caught.value.size == 102 and caught.value.limit == 50
    assert len(encode_frame("x" * 48, max_size=50)) == HEADER_SIZE + 50


def test_decoder_refuses_oversized_from_the_header_alone() -> None:
    decoder = FrameDecoder(max_size=50)
    decoder.feed(struct.pack(">I", 51))  # no payload needed to refuse it
    with pytest.raises(FrameTooLargeError):
        decoder.next_frame()
    decoder.feed(b"more")
    with pytest.raises(FrameTooLargeError):  # broken for good: framing is lost
        decoder.next_frame()


def test_frames_before_an_oversized_one_are_returned() -> None:
    decoder = FrameDecoder(max_size=50)
    decoder.feed(encode_frame(1) + struct.pack(">I", 10**9))
    assert decoder.next_frame() == 1
    with pytest.raises(FrameTooLargeError):
        decoder.next_frame()


@pytest.mark.parametrize("payload", [b"", b"{", b"\xff\xfe", b"nan", b'{"a":1}x'])
def test_garbage_payload(payload: bytes) -> None:
    decoder = FrameDecoder()
    decoder.feed(struct.pack(">I", len(payload)) + payload)
    with pytest.raises(FrameDecodeError):
        decoder.next_frame()
    with pytest.raises(FrameDecodeError):
        decoder.next_frame()


def test_http_bytes_are_refused_not_buffered() -> None:
    """A stray HTTP client: 'GET ' read as a length is ~1.2 GB, refused at once."""
    decoder = FrameDecoder()
    decoder.feed(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(FrameTooLargeError):
        decoder.next_frame()


def test_messages_round_trip() -> None:
    decoder = FrameDecoder()
    decoder.feed(call_frame(7, "get", {"taskId": "t"}))
    assert parse_request(decoder.next_frame()) == Call(7, "get", {"taskId": "t"})
    for frame, reply in [
        (ok_frame(7, [1]), Ok(7, [1])),
        (ok_frame(8, None), Ok(8, None)),
        (
            failed_frame(Failed(9, "NOT_FOUND", "no task", 404)),
            Failed(9, "NOT_FOUND", "no task", 404),
        ),
        (failed_frame(Failed(9, "X", "m", 422, {"f": 1})), Failed(9, "X", "m", 422, {"f": 1})),
        (goaway_frame(12), GoAway(12)),
        (goaway_frame(-1), GoAway(-1)),
    ]:
        decoder.feed(frame)
        assert parse_reply(decoder.next_frame()) == reply


@pytest.mark.parametrize(
    "value",
    [[], {"op": "x"}, {"id": "1", "op": "x"}, {"id": -1, "op": "x"}, {"id": True, "op": "x"},
     {"id": 1.0, "op": "x"}, {"id": 1}, {"id": 1, "op": 3}],
)  # fmt: skip
def test_bad_requests(value: object) -> None:
    with pytest.raises(FrameDecodeError):
        parse_request(value)


def test_request_id_of_a_bad_request() -> None:
    assert request_id({"id": 4, "op": 3}) == 4
    assert request_id({"id": "4"}) is None
    assert request_id([4]) is None


@pytest.mark.parametrize(
    "value",
    [[], {"id": 1}, {"id": 1, "error": "x"}, {"id": 1, "error": {"code": "X", "message": "m"}},
     {"id": 1, "error": {"code": "X", "message": "m", "status": "500"}}, {"goaway": -2},
     {"goaway": "1"}, {"ok": 1}],
)  # fmt: skip
def test_bad_replies(value: object) -> None:
    with pytest.raises(FrameDecodeError):
        parse_reply(value)


def test_codec_imports_no_io() -> None:
    source = Path(__file__).parents[1] / "spectral" / "cluster" / "frames.py"
    imported = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"trio", "socket", "asyncio", "anyio", "time"}
