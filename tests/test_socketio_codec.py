"""The Engine.IO 4 and Socket.IO 5 codecs (spectral/socketio/engineio.py, packets.py):
every packet kind both ways, payload joining and splitting, and malformed input refused
with the codec's own error, never another exception (docs/api.md, "Socket.IO")."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spectral.socketio import engineio, packets
from spectral.socketio.engineio import ErrorCode, PayloadError
from spectral.socketio.packets import NO_DATA, Packet, PacketError, PacketType

# -- Engine.IO ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(engineio.PacketType))
def test_every_engineio_packet_type_round_trips(kind: engineio.PacketType) -> None:
    text = engineio.encode(kind, "data")
    assert text == f"{int(kind)}data"
    assert engineio.decode(text) == engineio.Packet(kind, "data")


def test_ping_probe_and_message() -> None:
    assert engineio.decode("2probe") == engineio.Packet(engineio.PacketType.PING, "probe")
    assert engineio.encode(engineio.PacketType.PONG, "probe") == "3probe"
    assert engineio.message('2["a"]') == '42["a"]'
    assert engineio.decode("6") == engineio.Packet(engineio.PacketType.NOOP)


def test_a_binary_message_is_decoded_as_such() -> None:
    assert engineio.decode("bAQID") == engineio.Packet(
        engineio.PacketType.MESSAGE, "AQID", binary=True
    )


@pytest.mark.parametrize("text", ["", "7", "x", "9hello", "\x1e"])
def test_malformed_engineio_packets_are_refused(text: str) -> None:
    with pytest.raises(PayloadError):
        engineio.decode(text)


def test_payloads_join_and_split_on_the_record_separator() -> None:
    texts = ["2", '42["job:progress",{"jobId":"a"}]', "6"]
    body = engineio.encode_payload(texts)
    assert body == '2\x1e42["job:progress",{"jobId":"a"}]\x1e6'
    assert [engineio.encode(p.type, p.data) for p in engineio.decode_payload(body)] == texts
    assert engineio.decode_payload("3") == [engineio.Packet(engineio.PacketType.PONG)]


def test_a_payload_with_one_bad_packet_is_refused_whole() -> None:
    with pytest.raises(PayloadError):
        engineio.decode_payload("3\x1e\x1e40")
    with pytest.raises(PayloadError):
        engineio.decode_payload("")


def test_the_open_packet() -> None:
    text = engineio.open_packet(
        "abc", ping_interval=25, ping_timeout=20, max_payload=1_000_000, upgrade=True
    )
    assert text[0] == "0"
    assert json.loads(text[1:]) == {
        "sid": "abc",
        "upgrades": ["websocket"],
        "pingInterval": 25000,
        "pingTimeout": 20000,
        "maxPayload": 1000000,
    }
    direct = engineio.open_packet(
        "abc", ping_interval=0.5, ping_timeout=0.25, max_payload=10, upgrade=False
    )
    assert json.loads(direct[1:])["upgrades"] == []
    assert json.loads(direct[1:])["pingInterval"] == 500


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"EIO": "4", "transport": "polling"}, None),
        ({"EIO": "4", "transport": "websocket"}, None),
        ({"EIO": "3", "transport": "polling"}, ErrorCode.UNSUPPORTED_PROTOCOL_VERSION),
        ({"transport": "polling"}, ErrorCode.UNSUPPORTED_PROTOCOL_VERSION),
        ({"EIO": "4", "transport": "flashsocket"}, ErrorCode.UNKNOWN_TRANSPORT),
        ({"EIO": "4"}, ErrorCode.UNKNOWN_TRANSPORT),
    ],
)
def test_query_checks(query: dict[str, str], code: ErrorCode | None) -> None:
    assert engineio.check_query(query) == code


def test_error_answers_are_engineios() -> None:
    assert engineio.error_answer(ErrorCode.UNKNOWN_SID) == (
        400,
        b'{"code":1,"message":"Session ID unknown"}',
    )
    assert engineio.error_answer(ErrorCode.FORBIDDEN)[0] == 403
    assert json.loads(engineio.error_answer(ErrorCode.UNSUPPORTED_PROTOCOL_VERSION)[1]) == {
        "code": 5,
        "message": "Unsupported protocol version",
    }


# -- Socket.IO ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "packet"),
    [
        ("0", Packet(PacketType.CONNECT)),
        ('0{"token":"k"}', Packet(PacketType.CONNECT, {"token": "k"})),
        ('0/admin,{"token":"k"}', Packet(PacketType.CONNECT, {"token": "k"}, "/admin")),
        ("1", Packet(PacketType.DISCONNECT)),
        ("1/admin,", Packet(PacketType.DISCONNECT, namespace="/admin")),
        ('2["hello",1]', Packet(PacketType.EVENT, ["hello", 1])),
        ('212["subscribe:job","a"]', Packet(PacketType.EVENT, ["subscribe:job", "a"], id=12)),
        ('2/nsp,7["x"]', Packet(PacketType.EVENT, ["x"], "/nsp", 7)),
        ('312[{"ok":true}]', Packet(PacketType.ACK, [{"ok": True}], id=12)),
        ('4{"message":"no"}', Packet(PacketType.CONNECT_ERROR, {"message": "no"})),
        ('4"no"', Packet(PacketType.CONNECT_ERROR, "no")),
        (
            '51-["up",{"_placeholder":true,"num":0}]',
            Packet(
                PacketType.BINARY_EVENT, ["up", {"_placeholder": True, "num": 0}], attachments=1
            ),
        ),
        ("61-3[]", Packet(PacketType.BINARY_ACK, [], id=3, attachments=1)),
    ],
)
def test_every_socketio_packet_kind_round_trips(text: str, packet: Packet) -> None:
    assert packets.decode(text) == packet
    assert packets.encode(packet) == text


def test_the_servers_packets() -> None:
    assert packets.event("job:progress", {"jobId": "a", "progress": 0.5}) == (
        '2["job:progress",{"jobId":"a","progress":0.5}]'
    )
    assert packets.ack(3, {"ok": True}) == '33[{"ok":true}]'
    assert packets.connected("s1") == '0{"sid":"s1"}'
    assert packets.connect_error("Invalid namespace", "/x") == (
        '4/x,{"message":"Invalid namespace"}'
    )
    assert packets.connect_error("bad key") == '4{"message":"bad key"}'
    assert packets.dumps({"big": 2**70}) == '{"big":1180591620717411303424}'
    assert packets.decode("1").data is NO_DATA


@pytest.mark.parametrize(
    "text",
    [
        "",
        "7",
        "x",
        "2",  # an event needs its name
        "2[]",
        "2[1]",
        '2{"a":1}',
        '2["a"',
        "2[NaN]",
        '0"string"',
        "0[]",
        '1{"a":1}',
        "3{}",
        "4",
        "4[1]",
        '5["a"]',  # attachments missing
        '5x-["a"]',
        "2" + "1" * 17 + '["a"]',  # an ack id beyond JavaScript's safe integers
        "2" + "[" * 100_000 + "]" * 100_000,
    ],
)
def test_malformed_socketio_packets_are_refused(text: str) -> None:
    with pytest.raises(PacketError):
        packets.decode(text)


@given(st.text(max_size=60))
def test_no_text_raises_anything_but_the_codecs_errors(text: str) -> None:
    for decode, error in ((packets.decode, PacketError), (engineio.decode_payload, PayloadError)):
        with contextlib.suppress(error):
            decode(text)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=5), children, max_size=4)
        ),
        max_leaves=12,
    ),
    st.none() | st.integers(min_value=0, max_value=2**53 - 1),
)
def test_events_round_trip(data: object, ack_id: int | None) -> None:
    packet = Packet(PacketType.EVENT, ["name", data], id=ack_id)
    assert packets.decode(packets.encode(packet)) == packet


def test_the_codecs_are_pure() -> None:
    code = (
        "import sys, spectral.socketio.engineio, spectral.socketio.packets; "
        "print(sorted(m for m in ('trio', 'sqlite3', 'wsproto') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
