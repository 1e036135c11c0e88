"""The stream framing, bytes in and frames out: however the stream is cut, the same frames come out."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asupermachine import NetBackendError
from asupermachine._core.net.stream_framing import (
    MAX_RECEIVED_FRAME_LENGTH,
    MAX_SENT_FRAME_LENGTH,
    MIN_CAPACITY,
    MIN_FRAME_LENGTH,
    EthernetStreamDecoder,
    encode_frames,
    frame_buffers,
)


def pattern(length: int) -> bytes:
    """A frame of ``length`` bytes whose content says where it was cut, if it was."""
    return bytes(range(256)) * (length // 256) + bytes(range(length % 256))


small_frames = st.binary(min_size=MIN_FRAME_LENGTH, max_size=2000)
big_frames = st.integers(MIN_FRAME_LENGTH, MAX_SENT_FRAME_LENGTH).map(pattern)
frame_lists = st.lists(st.one_of(small_frames, small_frames, big_frames), max_size=12)


def stream(frames: list[bytes]) -> bytes:
    return b"".join(struct.pack(">I", len(frame)) + frame for frame in frames)


@settings(max_examples=200, deadline=None)
@given(frames=frame_lists, cuts=st.lists(st.floats(0, 1), max_size=20))
def test_random_splits_of_a_stream_decode_to_the_same_frames(frames: list[bytes], cuts: list[float]) -> None:
    data = stream(frames)
    points = sorted({int(cut * len(data)) for cut in cuts} | {0, len(data)})
    decoder = EthernetStreamDecoder()
    decoded: list[bytes] = []
    for start, end in zip(points, points[1:], strict=False):
        decoded += decoder.feed(data[start:end])
    assert decoded == frames
    assert decoder.pending == 0


@settings(max_examples=200, deadline=None)
@given(frames=frame_lists, sizes=st.lists(st.integers(1, 3 * MAX_RECEIVED_FRAME_LENGTH), min_size=1, max_size=8))
def test_frames_received_in_place_by_recv_into_are_the_frames_sent(frames: list[bytes], sizes: list[int]) -> None:
    data = memoryview(stream(frames))
    decoder = EthernetStreamDecoder(MIN_CAPACITY)
    decoded: list[bytes] = []
    position = 0
    while position < len(data):
        space = decoder.receive_buffer()
        count = min(len(space), sizes[len(decoded) % len(sizes)], len(data) - position)
        space[:count] = data[position : position + count]  # what sock.recv_into does
        position += count
        decoded += [bytes(frame) for frame in decoder.received(count)]
    assert decoded == frames


def test_frames_are_views_of_the_decoders_buffer_not_copies() -> None:
    decoder = EthernetStreamDecoder()
    space = decoder.receive_buffer()
    data = stream([pattern(60), pattern(1514)])
    space[: len(data)] = data
    first, second = decoder.received(len(data))
    assert first.obj is second.obj
    assert isinstance(first.obj, bytearray)
    assert (bytes(first), bytes(second)) == (pattern(60), pattern(1514))


def test_a_frame_of_the_largest_length_passt_builds_decodes() -> None:
    frame = pattern(MAX_RECEIVED_FRAME_LENGTH)
    assert EthernetStreamDecoder().feed(stream([frame])) == [frame]


@pytest.mark.parametrize("length", [0, 1, MIN_FRAME_LENGTH - 1, MAX_RECEIVED_FRAME_LENGTH + 1, 2**32 - 1])
def test_a_bad_length_is_refused_as_soon_as_it_is_in_and_from_then_on(length: int) -> None:
    decoder = EthernetStreamDecoder()
    assert decoder.feed(stream([b"g" * 60])) == [b"g" * 60]
    with pytest.raises(NetBackendError, match=f"frame length of {length} bytes at stream offset 64"):
        decoder.feed(struct.pack(">I", length))  # no body needed to know
    with pytest.raises(NetBackendError):
        decoder.feed(stream([b"g" * 60]))
    with pytest.raises(NetBackendError):
        decoder.receive_buffer()


def test_pending_counts_the_bytes_of_an_incomplete_frame() -> None:
    decoder = EthernetStreamDecoder()
    data = stream([pattern(100)])
    assert decoder.feed(data[:3]) == []
    assert decoder.pending == 3
    assert decoder.feed(data[3:50]) == []
    assert decoder.pending == 50
    assert decoder.feed(data[50:]) == [pattern(100)]
    assert decoder.pending == 0


def test_a_decoder_too_small_for_a_frame_is_refused() -> None:
    with pytest.raises(ValueError):
        EthernetStreamDecoder(MIN_CAPACITY - 1)


def test_received_refuses_more_bytes_than_there_was_room_for() -> None:
    decoder = EthernetStreamDecoder()
    with pytest.raises(ValueError):
        decoder.received(len(decoder.receive_buffer()) + 1)


@given(frames=frame_lists)
def test_encoded_frames_are_the_stream_and_buffers_for_sendmsg_are_the_same_bytes(frames: list[bytes]) -> None:
    assert encode_frames(frames) == stream(frames)
    assert b"".join(frame_buffers(frames)) == stream(frames)


def test_frame_buffers_point_at_the_frames_without_copying_them() -> None:
    frame = bytearray(pattern(100))
    buffers = frame_buffers([frame, memoryview(frame)[:50]])
    assert [buffer.nbytes for buffer in buffers] == [4, 100, 4, 50]
    frame[0] = 0xAA
    assert buffers[1][0] == buffers[3][0] == 0xAA


@pytest.mark.parametrize("length", [0, MIN_FRAME_LENGTH - 1, MAX_SENT_FRAME_LENGTH + 1])
def test_a_frame_passt_would_not_take_is_refused_before_anything_is_encoded(length: int) -> None:
    with pytest.raises(NetBackendError, match=f"a frame of {length} bytes"):
        frame_buffers([pattern(60), bytes(length)])
    with pytest.raises(NetBackendError):
        encode_frames([bytes(length)])
