"""Packing several frames into one gRPC message, and unpacking hostile messages without crashing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asylo.remote import batching
from asylo.status import InvalidArgumentError


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=batching.MAX_FRAMES_PER_MESSAGE))
def test_pack_unpack_round_trip(frames: list[bytes]) -> None:
    assert [bytes(frame) for frame in batching.unpack(batching.pack(frames), 300)] == frames


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2000))
def test_unpack_never_crashes_on_hostile_bytes(data: bytes) -> None:
    try:
        frames = batching.unpack(data, 1000)
    except InvalidArgumentError:
        return
    assert 1 <= len(frames) <= batching.MAX_FRAMES_PER_MESSAGE
    assert all(len(frame) <= 1000 for frame in frames)
    assert sum(len(frame) for frame in frames) <= len(data)


@pytest.mark.parametrize("message, words", [
    (b"", "an empty message"),
    (b"\x05abc", "a frame of 5 bytes"),
    (b"\x80", "a malformed frame length"),
    (b"\xff\xff\xff\xff\xff\xff\x01", "a frame of 8796093022207 bytes"),
    (b"\xff" * 11, "a malformed frame length"),
    (batching.pack([b"x" * 11]), "a frame of 11 bytes"),
    (batching.pack([b""] * (batching.MAX_FRAMES_PER_MESSAGE + 1)), "more than"),
])
def test_malformed_messages_are_refused(message: bytes, words: str) -> None:
    with pytest.raises(InvalidArgumentError, match=words):
        batching.unpack(message, 10)
