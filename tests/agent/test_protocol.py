import struct

import pytest

from asupermachine._core.agent.protocol import (
    FRAME_HEADER,
    LIST_DETACHED,
    LIST_ENDED,
    LIST_RECORD,
    MAX_FRAME,
    PROTOCOL_VERSION,
    WINDOW_SIZE,
    Frame,
    FrameDecoder,
    GuestProcess,
    Hello,
    Kind,
    VectorState,
    decode_hello,
    decode_process_list,
    encode_exec,
    encode_frame,
    encode_window,
)
from asupermachine._errors import AgentProtocolError


def test_exec_frame_layout_matches_the_agent() -> None:
    frame = encode_exec(["sh", "-c", "echo hi"], {"A": "1"}, "/tmp", "nobody")
    length, kind, zero = FRAME_HEADER.unpack_from(frame)
    body = frame[FRAME_HEADER.size :]
    assert (kind, zero, length) == (Kind.EXEC, 0, len(body))
    assert struct.unpack_from("<II", body) == (3, 1)
    assert body[8:].split(b"\0")[:-1] == [b"/tmp", b"nobody", b"sh", b"-c", b"echo hi", b"A=1"]


@pytest.mark.parametrize(
    ("argv", "env"), [([], {}), (["a\0b"], {}), (["ls"], {"A=B": "1"}), (["ls"], {"": "1"}), (["ls"], {"A": "\0"})]
)
def test_exec_requests_the_agent_could_misread_are_refused(argv: list[str], env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        encode_exec(argv, env, "")


def test_decoder_reassembles_frames_split_anywhere() -> None:
    wire = encode_frame(Kind.HELLO, b"\x01\0\0\0") + encode_frame(Kind.STDOUT, b"x" * 1000) + encode_frame(Kind.EXITED)
    decoder = FrameDecoder()
    frames = []
    for i in range(0, len(wire), 7):
        decoder.feed(wire[i : i + 7])
        while (frame := decoder.next_frame()) is not None:
            frames.append(frame)
    assert frames == [Frame(Kind.HELLO, b"\x01\0\0\0"), Frame(Kind.STDOUT, b"x" * 1000), Frame(Kind.EXITED)]


def test_oversize_and_unknown_frames_are_protocol_errors() -> None:
    with pytest.raises(AgentProtocolError, match="exceeds"):
        FrameDecoder().feed(FRAME_HEADER.pack(MAX_FRAME + 1, Kind.STDOUT, 0))
    with pytest.raises(AgentProtocolError, match="unknown"):
        FrameDecoder().feed(FRAME_HEADER.pack(0, 99, 0))
    with pytest.raises(ValueError):
        encode_frame(Kind.STDIN, bytes(MAX_FRAME + 1))


def test_hello_carries_the_protocol_version_and_the_guest_vector_state() -> None:
    frame = Frame(Kind.HELLO, struct.pack("<II", PROTOCOL_VERSION, VectorState.LEAKS))
    assert decode_hello(frame) == Hello(PROTOCOL_VERSION, VectorState.LEAKS)


@pytest.mark.parametrize(
    "frame",
    [
        Frame(Kind.HELLO, struct.pack("<I", PROTOCOL_VERSION)),
        Frame(Kind.HELLO, struct.pack("<II", PROTOCOL_VERSION - 1, VectorState.ISOLATED)),
        Frame(Kind.HELLO, struct.pack("<II", PROTOCOL_VERSION, 77)),
        Frame(Kind.STARTED, struct.pack("<II", PROTOCOL_VERSION, VectorState.ISOLATED)),
    ],
)
def test_a_hello_of_another_version_or_shape_is_refused(frame: Frame) -> None:
    with pytest.raises(AgentProtocolError):
        decode_hello(frame)


@pytest.mark.parametrize("kind", [Kind.TTY, Kind.RESIZE])
def test_a_window_frame_carries_rows_then_columns_as_u16s(kind: Kind) -> None:
    assert WINDOW_SIZE.size == 4
    assert encode_window(kind, 24, 80) == struct.pack("<IHH", 4, kind, 0) + b"\x18\x00\x50\x00"
    assert encode_window(kind, 1, 0xFFFF) == struct.pack("<IHH", 4, kind, 0) + b"\x01\x00\xff\xff"


@pytest.mark.parametrize(("rows", "cols"), [(0, 80), (24, 0), (0x10000, 80), (24, 0x10000), (-1, 80)])
def test_a_window_of_no_or_too_many_rows_or_columns_is_refused(rows: int, cols: int) -> None:
    with pytest.raises(ValueError, match="1 to 65535"):
        encode_window(Kind.RESIZE, rows, cols)


@pytest.mark.parametrize("kind", [Kind.EXEC, Kind.STDIN, Kind.SIGNAL, Kind.HELLO])
def test_only_tty_and_resize_frames_carry_a_window(kind: Kind) -> None:
    with pytest.raises(ValueError, match="carries no window size"):
        encode_window(kind, 24, 80)


def test_a_process_list_decodes_each_record_and_refuses_one_cut_short() -> None:
    records = (
        LIST_RECORD.pack(42, 0, 11) + b"sh\0-c\0x y\0\0"
        + LIST_RECORD.pack(7, LIST_DETACHED, 5) + b"top\0\xff"
        + LIST_RECORD.pack(9, LIST_DETACHED | LIST_ENDED, 0)
    )
    assert decode_process_list(records) == [
        GuestProcess(42, ("sh", "-c", "x y", ""), attached=True, running=True),
        GuestProcess(7, ("top", "\udcff"), attached=False, running=True),
        GuestProcess(9, (), attached=False, running=False),
    ]
    assert decode_process_list(b"") == []
    for damaged in (records[:5], LIST_RECORD.pack(1, 0, 10) + b"short"):
        with pytest.raises(AgentProtocolError):
            decode_process_list(damaged)
