"""The sans-I/O session core: a HOST and an ENCLAVE `Session` wired back to back by handing frames over, no I/O.

Plain tests pin each rule of the protocol (the handshake, calls and results, thread matching, fragmentation, limits,
goodbye) and the status a violation of it ends the session with; hypothesis drives both sides through random
interleavings of valid traffic, with and without hostile frames, and fuzzes `receive` in every reachable state.
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from asylo.primitives.matching import Call, Result, ThreadGone
from asylo.proto import enclave_pb2, session_pb2
from asylo.session import (
    PROTOCOL_VERSION,
    HelloReceived,
    Role,
    Session,
    SessionEnded,
    SessionLimits,
    SessionState,
    WelcomeReceived,
)
from asylo.session.body import FRAGMENT_OVERHEAD, BodyFrames, decode_fragment, join_extents
from asylo.session.connection import Event
from asylo.status import EnclaveUnavailable, FailedPreconditionError, ResourceExhaustedError, Status, StatusCode

# Small frames so that fragmentation is cheap to exercise.
SMALL = SessionLimits(max_frame_size=4096, max_message_size=65536, max_reassembly_bytes=131072)
# The data of a full fragment under SMALL: every fragment of a body but the last is exactly this (or the rest).
CHUNK = SMALL.max_frame_size - FRAGMENT_OVERHEAD
TERMINAL = (SessionState.CLOSED, SessionState.ERROR)
LOAD_CONFIG = enclave_pb2.EnclaveLoadConfig(
    name="demo", config=enclave_pb2.EnclaveConfig(name="demo", data=b"\x00config\xff"), debug=True,
    measurement=bytes(range(32)))
MEASUREMENT = b"\x11" * 32
SIGNER = b"\x22" * 32


# -- helpers ---------------------------------------------------------------------------------------------------------

def frame(**kind: object) -> bytes:
    return session_pb2.Frame(**kind).SerializeToString()  # type: ignore[arg-type]


def hello_frame(version: int = PROTOCOL_VERSION, token: bytes = b"token") -> bytes:
    return frame(hello=session_pb2.Hello(version=version, token=token, load_config=LOAD_CONFIG))


def welcome_frame(version: int = PROTOCOL_VERSION) -> bytes:
    return frame(welcome=session_pb2.Welcome(version=version, measurement=MEASUREMENT, signer=SIGNER,
                                             enclave_name="demo"))


def call_frame(call_id: int, thread: int, selector: int = 0, extents: Sequence[bytes] = ()) -> bytes:
    return frame(call=session_pb2.CallFrame(call_id=call_id, thread=thread, selector=selector, extents=extents))


def result_frame(call_id: int, thread: int, code: int = 0, message: str = "", extents: Sequence[bytes] = ()) -> bytes:
    return frame(result=session_pb2.ResultFrame(call_id=call_id, thread=thread, code=code, message=message,
                                                extents=extents))


def call_header(call_id: int, thread: int, transfer: int, sizes: Sequence[int], selector: int = 0,
                extents: Sequence[bytes] = ()) -> bytes:
    """The header of a call whose extents (of `sizes`) follow in body transfer `transfer`."""
    return frame(call=session_pb2.CallFrame(call_id=call_id, thread=thread, selector=selector, extents=extents,
                                            body_transfer=transfer, extent_sizes=sizes))


def result_header(call_id: int, thread: int, transfer: int, sizes: Sequence[int], code: int = 0, message: str = "",
                  extents: Sequence[bytes] = ()) -> bytes:
    return frame(result=session_pb2.ResultFrame(call_id=call_id, thread=thread, code=code, message=message,
                                                extents=extents, body_transfer=transfer, extent_sizes=sizes))


# Fragment fields in wire order: 1 transfer_id, 2 total_size, 3 data. The canonical order is the one body.py decodes
# itself; any other is plain protobuf too, and must be read the same through the protobuf path.
CANONICAL = (1, 2, 3)
REORDERED = (3, 1, 2)
ORDERS = [CANONICAL, REORDERED]


def fragment_frame(transfer_id: int, total_size: int, data: bytes, order: tuple[int, ...] = CANONICAL) -> bytes:
    """A Fragment frame with its fields in `order`, each written even when zero."""
    fields = {1: b"\x08" + _varint(transfer_id), 2: b"\x10" + _varint(total_size),
              3: b"\x1a" + _varint(len(data)) + data}
    inner = b"".join(fields[number] for number in order)
    return b"\x2a" + _varint(len(inner)) + inner


def thread_gone_frame(thread: int) -> bytes:
    return frame(thread_gone=session_pb2.ThreadGone(thread=thread))


def goodbye_frame(code: int = 0, message: str = "") -> bytes:
    return frame(goodbye=session_pb2.Goodbye(code=code, message=message))


def padded(data: bytes, size: int) -> bytes:
    """`data` (a Frame) with an unknown bytes field appended so that it is exactly `size` bytes; parsers skip it."""
    for length in range(size, 0, -1):
        pad = bytes([15 << 3 | 2]) + _varint(length) + b"\x00" * length
        if len(data) + len(pad) == size:
            return data + pad
    raise AssertionError(f"cannot pad {len(data)} bytes to {size}")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def split(body: bytes, transfer_id: int, chunk: int = CHUNK, order: tuple[int, ...] = CANONICAL) -> list[bytes]:
    """Fragments of a body, in full chunks (the receiver takes no shorter fragment but the last)."""
    return [fragment_frame(transfer_id, len(body), body[i:i + chunk], order) for i in range(0, len(body), chunk)]


def _payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def pump(frames: Iterable[bytes], receiver: Session) -> list[Event]:
    events: list[Event] = []
    for data in frames:
        events += receiver.receive(data)
    return events


def open_pair(limits: SessionLimits | None = None) -> tuple[Session, Session]:
    host, enclave = Session(Role.HOST, limits), Session(Role.ENCLAVE, limits)
    assert isinstance(enclave.receive(host.send_hello(b"token", LOAD_CONFIG))[0], HelloReceived)
    assert isinstance(host.receive(enclave.send_welcome(MEASUREMENT, SIGNER, "demo"))[0], WelcomeReceived)
    assert host.is_open and enclave.is_open
    return host, enclave


def do_call(sender: Session, receiver: Session, call_id: int, thread: int, extents: Sequence[bytes] = (),
            selector: int = 7) -> None:
    call = Call(call_id, thread, selector, list(extents))
    assert pump(sender.send_call(call), receiver) == [call]


def do_result(sender: Session, receiver: Session, call_id: int, thread: int, extents: Sequence[bytes] = (),
              status: Status | None = None) -> None:
    result = Result(call_id, thread, status or Status(), list(extents))
    expected = Result(call_id, thread, result.status, list(extents) if result.status.ok else [])
    assert pump(sender.send_result(result), receiver) == [expected]


def inline(limits: SessionLimits, extents: Sequence[bytes]) -> bool:
    """Whether a sender must send a message with `extents` in one frame rather than as a header and a body."""
    size = sum(len(extent) for extent in extents)
    return size == 0 or size + 11 * len(extents) + 256 <= limits.max_frame_size


def check_encoding(frames: Sequence[bytes], extents: Sequence[bytes], limits: SessionLimits) -> int:
    """`frames` are what a sender must make of a call or result with `extents`: one frame carrying them when they fit
    inline, else a header (no extents, their sizes, a transfer id) and full canonical fragments of their bytes, all
    within max_frame_size. Returns the transfer id (0 inline)."""
    assert frames and all(len(data) <= limits.max_frame_size for data in frames)
    parsed = session_pb2.Frame.FromString(frames[0])
    kind = parsed.WhichOneof("kind")
    assert kind in ("call", "result")
    message = parsed.call if kind == "call" else parsed.result
    if inline(limits, extents):
        assert len(frames) == 1 and list(message.extents) == list(extents)
        assert not message.body_transfer and not message.extent_sizes
        return 0
    assert message.body_transfer and not message.extents
    assert list(message.extent_sizes) == [len(extent) for extent in extents]
    body, chunk = b"".join(extents), limits.max_frame_size - FRAGMENT_OVERHEAD
    assert len(frames) == 1 + -(-len(body) // chunk)
    pieces = []
    for data in frames[1:]:
        decoded = decode_fragment(data)
        assert decoded is not None, "a sender writes canonical fragments"
        transfer_id, total, piece = decoded
        assert (transfer_id, total) == (message.body_transfer, len(body))
        pieces.append(bytes(piece))
    assert b"".join(pieces) == body and all(len(piece) == chunk for piece in pieces[:-1])
    return message.body_transfer


def sized_extents(total: int, count: int, seed: int = 0) -> list[bytes]:
    """`count` extents adding up to `total` bytes: an empty one first when there are several, the rest alike."""
    sizes = [0] + [total // (count - 1)] * (count - 1) if count > 1 else [total]
    sizes[-1] += total - sum(sizes)
    return [_payload(size, seed + index) for index, size in enumerate(sizes)]


def assert_goodbye(data: bytes | None, status: Status) -> None:
    assert data is not None
    parsed = session_pb2.Frame.FromString(data)
    assert parsed.WhichOneof("kind") == "goodbye"
    assert (parsed.goodbye.code, parsed.goodbye.message) == (int(status.code), status.message)


def assert_violation(session: Session, events: list[Event], code: StatusCode, *words: str) -> Status:
    """`events` is the one SessionEnded of a violation with `code` whose message says `words`; the session is over."""
    assert len(events) == 1, events
    [ended] = events
    assert isinstance(ended, SessionEnded)
    assert not ended.by_peer
    assert ended.status.code == code, ended.status
    assert ended.status.message.startswith("protocol violation: ")
    for word in words:
        assert word in ended.status.message, (word, ended.status.message)
    assert session.state is SessionState.ERROR and not session.is_open
    assert session.end_status == ended.status
    assert_goodbye(ended.goodbye, ended.status)
    # Nothing more is processed, and nothing more can be sent.
    assert session.receive(goodbye_frame()) == []
    assert session.receive(b"\xff\xff") == []
    assert session.state is SessionState.ERROR
    with pytest.raises(EnclaveUnavailable, match="protocol violation"):
        session.send_call(Call(10**6, 10**6, 0, []))
    return ended.status


# -- handshake -------------------------------------------------------------------------------------------------------

def test_unattested_hello_and_welcome_round_trip_the_token_the_load_config_and_the_identity() -> None:
    host, enclave = Session(Role.HOST), Session(Role.ENCLAVE)
    assert (host.state, enclave.state) == (SessionState.IDLE, SessionState.AWAITING_HELLO)

    hello = host.send_hello(b"\x00one-time token\xff", LOAD_CONFIG)
    assert host.state is SessionState.AWAITING_WELCOME
    [event] = enclave.receive(hello)
    assert event == HelloReceived(PROTOCOL_VERSION, b"\x00one-time token\xff", LOAD_CONFIG, b"")
    assert isinstance(event, HelloReceived) and event.load_config.config.data == b"\x00config\xff"
    assert enclave.state is SessionState.HELLO_RECEIVED

    welcome = enclave.send_welcome(MEASUREMENT, SIGNER, "démo")
    assert enclave.state is SessionState.OPEN
    assert host.receive(welcome) == [WelcomeReceived(PROTOCOL_VERSION, MEASUREMENT, SIGNER, "démo", b"")]
    assert not host.encrypted and not enclave.encrypted  # no handshake offered: the measurement-only mode
    assert host.is_open and enclave.is_open


def test_sending_out_of_order_raises_and_changes_nothing() -> None:
    host, enclave = Session(Role.HOST), Session(Role.ENCLAVE)
    with pytest.raises(FailedPreconditionError, match="cannot send welcome"):
        host.send_welcome(MEASUREMENT, SIGNER, "demo")
    with pytest.raises(FailedPreconditionError, match="cannot send hello"):
        enclave.send_hello(b"t", LOAD_CONFIG)
    with pytest.raises(FailedPreconditionError, match="cannot send welcome: the enclave session is awaiting hello"):
        enclave.send_welcome(MEASUREMENT, SIGNER, "demo")
    with pytest.raises(FailedPreconditionError, match="not open"):
        host.send_call(Call(1, 1, 0, []))
    with pytest.raises(FailedPreconditionError, match="not open"):
        host.send_thread_gone(1)
    enclave.receive(host.send_hello(b"t", LOAD_CONFIG))
    with pytest.raises(FailedPreconditionError, match="cannot send hello"):
        host.send_hello(b"t", LOAD_CONFIG)
    with pytest.raises(FailedPreconditionError, match="not open"):
        enclave.send_result(Result(1, 1, Status()))
    assert (host.state, enclave.state) == (SessionState.AWAITING_WELCOME, SessionState.HELLO_RECEIVED)


def _host_awaiting_welcome() -> Session:
    host = Session(Role.HOST)
    host.send_hello(b"t", LOAD_CONFIG)
    return host


def _enclave_hello_received() -> Session:
    enclave = Session(Role.ENCLAVE)
    enclave.receive(hello_frame())
    return enclave


@pytest.mark.parametrize("make", [lambda: Session(Role.ENCLAVE), _enclave_hello_received, _host_awaiting_welcome,
                                  lambda: Session(Role.HOST)],
                         ids=["enclave awaiting hello", "enclave hello received", "host awaiting welcome",
                              "host idle"])
@pytest.mark.parametrize(("kind", "data"), [
    ("call", call_frame(1, 1)),
    ("result", result_frame(1, 1)),
    ("fragment", fragment_frame(1, 5000, b"x" * 100)),
    ("thread_gone", thread_gone_frame(1)),
])
def test_traffic_before_the_handshake_is_a_violation(make: object, kind: str, data: bytes) -> None:
    session = make()  # type: ignore[operator]
    assert_violation(session, session.receive(data), StatusCode.INTERNAL, f"a {kind} frame while the session is")


def test_a_second_hello_is_a_violation() -> None:
    enclave = _enclave_hello_received()
    assert_violation(enclave, enclave.receive(hello_frame()), StatusCode.INTERNAL,
                     "a hello while the enclave session is hello received")
    _, enclave = open_pair()
    assert_violation(enclave, enclave.receive(hello_frame()), StatusCode.INTERNAL,
                     "a hello while the enclave session is open")


def test_a_second_welcome_is_a_violation() -> None:
    host, _ = open_pair()
    assert_violation(host, host.receive(welcome_frame()), StatusCode.INTERNAL,
                     "a welcome while the host session is open")


@pytest.mark.parametrize("version", [0, 2, 2**32 - 1])
def test_a_hello_of_another_protocol_version_fails_the_precondition(version: int) -> None:
    enclave = Session(Role.ENCLAVE)
    assert_violation(enclave, enclave.receive(hello_frame(version)), StatusCode.FAILED_PRECONDITION,
                     f"protocol version {version}", f"speaks {PROTOCOL_VERSION}")


@pytest.mark.parametrize("version", [0, 2])
def test_a_welcome_of_another_protocol_version_fails_the_precondition(version: int) -> None:
    host = _host_awaiting_welcome()
    assert_violation(host, host.receive(welcome_frame(version)), StatusCode.FAILED_PRECONDITION,
                     f"protocol version {version}")


@pytest.mark.parametrize("state", ["idle", "awaiting welcome", "open"])
def test_the_host_never_accepts_a_hello(state: str) -> None:
    host = {"idle": lambda: Session(Role.HOST), "awaiting welcome": _host_awaiting_welcome,
            "open": lambda: open_pair()[0]}[state]()
    assert_violation(host, host.receive(hello_frame()), StatusCode.INTERNAL, f"a hello while the host session is "
                                                                             f"{state}")


@pytest.mark.parametrize("make", [lambda: Session(Role.ENCLAVE), _enclave_hello_received,
                                  lambda: open_pair()[1]], ids=["awaiting hello", "hello received", "open"])
def test_the_enclave_never_accepts_a_welcome(make: object) -> None:
    enclave = make()  # type: ignore[operator]
    assert_violation(enclave, enclave.receive(welcome_frame()), StatusCode.INTERNAL, "a welcome while the enclave")


def test_the_host_never_accepts_thread_gone() -> None:
    host, _ = open_pair()
    assert_violation(host, host.receive(thread_gone_frame(1)), StatusCode.INTERNAL, "thread_gone frame sent to the "
                                                                                    "host")
    host, enclave = open_pair()
    with pytest.raises(FailedPreconditionError, match="only the host"):
        enclave.send_thread_gone(1)


@pytest.mark.parametrize(("data", "words"), [
    (b"\xff\xff\xff", ["undecodable frame"]),
    (b"\x0a\x05ab", ["undecodable frame"]),  # truncated
    (b"", ["empty frame"]),
    (b"\x7a\x01x", ["empty frame"]),  # an unknown field only
])
def test_undecodable_and_empty_frames_are_violations(data: bytes, words: list[str]) -> None:
    for session in (Session(Role.ENCLAVE), open_pair()[0], open_pair()[1]):
        assert_violation(session, session.receive(data), StatusCode.INTERNAL, *words)


def test_a_frame_over_max_frame_size_is_resource_exhausted() -> None:
    _, enclave = open_pair(SMALL)
    assert_violation(enclave, enclave.receive(padded(thread_gone_frame(1), 4096 + 100)),
                     StatusCode.RESOURCE_EXHAUSTED, "4196 bytes exceeds max_frame_size (4096)")


# -- calls and results -----------------------------------------------------------------------------------------------

EXTENTS = [[], [b""], [b"a"], [b"\x00" * 3, bytes(range(256)), b"last"]]


@pytest.mark.parametrize("extents", EXTENTS, ids=["none", "one empty", "one byte", "three"])
def test_calls_and_results_round_trip_both_ways(extents: list[bytes]) -> None:
    host, enclave = open_pair()
    do_call(host, enclave, 1, thread=5, extents=extents, selector=2**64 - 1)
    assert enclave.calls_in_progress(5) == [(False, 1)] and host.calls_in_progress(5) == [(True, 1)]
    do_call(enclave, host, 1, thread=5, extents=extents[::-1])  # ids are per direction: 1 again is fine
    do_result(host, enclave, 1, 5, extents=extents)
    do_result(enclave, host, 1, 5, extents=extents[::-1])
    assert host.calls_in_progress(5) == [] and enclave.calls_in_progress(5) == []


def test_error_results_carry_their_status_and_no_extents() -> None:
    host, enclave = open_pair()
    do_call(host, enclave, 1, 1)
    do_call(enclave, host, 2, 1)
    do_result(host, enclave, 2, 1, status=Status(StatusCode.NOT_FOUND, "no exit handler ünïcode"), extents=[b"x"])
    do_result(enclave, host, 1, 1, status=Status(StatusCode.PERMISSION_DENIED, "nope"))


def test_an_unknown_result_code_becomes_unknown() -> None:
    host, enclave = open_pair()
    do_call(host, enclave, 1, 1)
    assert host.receive(result_frame(1, 1, code=999, message="odd")) == [Result(1, 1, Status(StatusCode.UNKNOWN,
                                                                                               "odd"), [])]


def test_nested_calls_on_one_thread_finish_in_lifo_order() -> None:
    host, enclave = open_pair()
    depth = 6
    expected: list[tuple[bool, int]] = []
    for level in range(depth):
        sender, receiver = (host, enclave) if level % 2 == 0 else (enclave, host)
        do_call(sender, receiver, 100 + level, thread=3, extents=[bytes([level])])
        expected.append((sender is host, 100 + level))
        assert host.calls_in_progress(3) == expected
        assert enclave.calls_in_progress(3) == [(not mine, call_id) for mine, call_id in expected]
    for level in reversed(range(depth)):
        sender, receiver = (enclave, host) if level % 2 == 0 else (host, enclave)
        # Only the innermost call can be answered, on either side.
        if level:
            with pytest.raises(FailedPreconditionError, match="not the innermost"):
                receiver.send_result(Result(100 + level - 1, 3, Status()))
        do_result(sender, receiver, 100 + level, 3, extents=[bytes([level]) * 2])
    assert host.calls_in_progress(3) == enclave.calls_in_progress(3) == []
    # The thread can enter again, and ends when the host says so.
    do_call(host, enclave, 100, 3)
    do_result(enclave, host, 100, 3)
    assert enclave.receive(host.send_thread_gone(3)) == [ThreadGone(3)]


def test_threads_are_independent_and_call_ids_are_reusable_once_answered() -> None:
    host, enclave = open_pair()
    for thread in (1, 2, 3):
        do_call(host, enclave, thread, thread)
    do_call(enclave, host, 1, 2)
    do_result(enclave, host, 3, 3)
    do_result(host, enclave, 1, 2)
    do_result(enclave, host, 1, 1)
    do_call(host, enclave, 1, 1)  # answered above, so usable again
    do_call(host, enclave, 3, 4)
    assert host.calls_in_progress(2) == [(True, 2)]
    assert enclave.receive(host.send_thread_gone(3)) == [ThreadGone(3)]


def test_sending_calls_and_results_checks_the_rules_and_changes_nothing() -> None:
    host, enclave = open_pair()
    with pytest.raises(FailedPreconditionError, match="needs an entry call"):
        enclave.send_call(Call(1, 1, 0, []))
    do_call(host, enclave, 1, 1)
    with pytest.raises(FailedPreconditionError, match="already waiting for call 1"):
        host.send_call(Call(2, 1, 0, []))
    with pytest.raises(FailedPreconditionError, match="call id 1 is already in use"):
        host.send_call(Call(1, 2, 0, []))
    with pytest.raises(FailedPreconditionError, match="not the innermost"):
        host.send_result(Result(1, 1, Status()))
    with pytest.raises(FailedPreconditionError, match="not the innermost"):
        enclave.send_result(Result(1, 2, Status()))
    with pytest.raises(FailedPreconditionError, match="still has calls in progress"):
        host.send_thread_gone(1)
    assert host.calls_in_progress(1) == [(True, 1)] and host.calls_in_progress(2) == []
    do_result(enclave, host, 1, 1)


def test_a_result_for_a_call_not_in_progress_is_a_violation() -> None:
    host, enclave = open_pair()
    assert_violation(host, host.receive(result_frame(42, 1)), StatusCode.INTERNAL,
                     "a result for call 42, which is not in progress")
    host, enclave = open_pair()
    do_call(host, enclave, 1, 1)
    do_result(enclave, host, 1, 1)
    assert_violation(host, host.receive(result_frame(1, 1)), StatusCode.INTERNAL, "call 1, which is not in "
                                                                                  "progress")
    # The enclave side too (a result for an exit call it never made).
    _, enclave = open_pair()
    assert_violation(enclave, enclave.receive(result_frame(7, 1)), StatusCode.INTERNAL, "call 7")


def test_a_duplicated_call_id_in_progress_is_a_violation() -> None:
    host, enclave = open_pair()
    do_call(host, enclave, 9, 1)
    assert_violation(enclave, enclave.receive(call_frame(9, 2)), StatusCode.INTERNAL,
                     "call id 9 is already in progress")
    host, enclave = open_pair()
    do_call(host, enclave, 1, 1)
    do_call(enclave, host, 9, 1)
    assert_violation(host, host.receive(call_frame(9, 1)), StatusCode.INTERNAL, "call id 9 is already in progress")


def test_a_result_that_is_not_the_innermost_call_of_its_thread_is_a_violation() -> None:
    host, enclave = open_pair()
    do_call(host, enclave, 1, 1)
    do_call(enclave, host, 1, 1)
    do_call(host, enclave, 2, 1)
    # The outer entry call cannot finish before the nested one.
    assert_violation(host, host.receive(result_frame(1, 1)), StatusCode.INTERNAL,
                     "a result for call 1, which is not the innermost call of thread 1")


def test_a_result_on_the_wrong_thread_is_a_violation() -> None:
    host, enclave = open_pair()
    do_call(host, enclave, 1, 1)
    do_call(host, enclave, 2, 2)
    assert_violation(host, host.receive(result_frame(1, 2)), StatusCode.INTERNAL,
                     "call 1, which is not the innermost call of thread 2")


def test_an_exit_call_on_a_host_thread_without_an_entry_call_is_a_violation() -> None:
    host, enclave = open_pair()
    assert_violation(host, host.receive(call_frame(1, 4)), StatusCode.INTERNAL,
                     "an exit call on thread 4, which has no entry call in progress")
    # Nor after the entry call of that thread has finished.
    host, enclave = open_pair()
    do_call(host, enclave, 1, 4)
    do_result(enclave, host, 1, 4)
    assert_violation(host, host.receive(call_frame(1, 4)), StatusCode.INTERNAL, "thread 4, which has no entry call")


def test_a_call_on_a_thread_busy_serving_a_call_is_a_violation() -> None:
    host, enclave = open_pair()
    do_call(host, enclave, 1, 1)
    assert_violation(enclave, enclave.receive(call_frame(2, 1)), StatusCode.INTERNAL,
                     "a call on thread 1 while that thread is busy with call 1 here")
    # The host side: a second exit call while the thread serves one.
    host, enclave = open_pair()
    do_call(host, enclave, 1, 1)
    do_call(enclave, host, 5, 1)
    assert_violation(host, host.receive(call_frame(6, 1)), StatusCode.INTERNAL, "thread 1 while that thread is busy "
                                                                                "with call 5")


def test_thread_gone_with_calls_in_progress_is_a_violation() -> None:
    host, enclave = open_pair()
    do_call(host, enclave, 1, 1)
    assert_violation(enclave, enclave.receive(thread_gone_frame(1)), StatusCode.INTERNAL,
                     "thread 1 ended with calls in progress")


def test_thread_gone_for_an_idle_or_unknown_thread_is_fine() -> None:
    _, enclave = open_pair()
    assert enclave.receive(thread_gone_frame(77)) == [ThreadGone(77)]
    assert enclave.receive(thread_gone_frame(77)) == [ThreadGone(77)]
    assert enclave.is_open


def test_an_error_result_carrying_extents_is_a_violation() -> None:
    host, enclave = open_pair()
    do_call(host, enclave, 1, 1)
    assert_violation(host, host.receive(result_frame(1, 1, code=int(StatusCode.INTERNAL), extents=[b"x"])),
                     StatusCode.INTERNAL, "an error result for call 1 that carries extents")


def test_max_call_depth() -> None:
    limits = SessionLimits(max_call_depth=3)
    host, enclave = open_pair(limits)
    do_call(host, enclave, 1, 1)
    do_call(enclave, host, 1, 1)
    do_call(host, enclave, 2, 1)
    frames = enclave.send_call(Call(2, 1, 0, []))  # the sender does not count; the receiver does
    assert_violation(host, pump(frames, host), StatusCode.RESOURCE_EXHAUSTED,
                     "calls nested deeper than max_call_depth (3) on thread 1")


def test_max_call_depth_on_the_enclave_side() -> None:
    host, enclave = open_pair(SessionLimits(max_call_depth=2))
    do_call(host, enclave, 1, 1)
    do_call(enclave, host, 1, 1)
    assert_violation(enclave, enclave.receive(call_frame(2, 1)), StatusCode.RESOURCE_EXHAUSTED,
                     "max_call_depth (2)")


def test_max_calls_in_flight() -> None:
    host, enclave = open_pair(SessionLimits(max_calls_in_flight=2))
    do_call(host, enclave, 1, 1)
    do_call(host, enclave, 2, 2)
    assert_violation(enclave, pump(host.send_call(Call(3, 3, 0, [])), enclave), StatusCode.RESOURCE_EXHAUSTED,
                     "more than max_calls_in_flight (2) calls")
    # Answered calls no longer count.
    host, enclave = open_pair(SessionLimits(max_calls_in_flight=2))
    for call_id in range(1, 10):
        do_call(host, enclave, call_id, call_id % 2)
        do_result(enclave, host, call_id, call_id % 2)


def test_max_threads() -> None:
    host, enclave = open_pair(SessionLimits(max_threads=2))
    do_call(host, enclave, 1, 1)
    do_call(host, enclave, 2, 2)
    # Threads with calls in progress count; a third one at the same time is too many.
    assert_violation(enclave, pump(host.send_call(Call(3, 3, 0, [])), enclave), StatusCode.RESOURCE_EXHAUSTED,
                     "more than max_threads (2) threads")

    host, enclave = open_pair(SessionLimits(max_threads=2))
    for thread in (1, 2):
        do_call(host, enclave, thread, thread)
        do_result(enclave, host, thread, thread)
    # Idle threads do not count: host threads that come and go never add up to a violation.
    for thread in range(3, 50):
        do_call(host, enclave, thread, thread)
        do_result(enclave, host, thread, thread)
    assert enclave.receive(host.send_thread_gone(1)) == [ThreadGone(1)]
    assert enclave.receive(host.send_thread_gone(99)) == [ThreadGone(99)]  # never seen, or idle: nothing to do


def test_limits_are_negotiated_down_to_the_smaller() -> None:
    small = SessionLimits(max_frame_size=8192, max_message_size=65536, max_reassembly_bytes=131072)
    for host_limits, enclave_limits in ((small, None), (None, small)):
        host, enclave = Session(Role.HOST, host_limits), Session(Role.ENCLAVE, enclave_limits)
        enclave.receive(host.send_hello(b"token", LOAD_CONFIG))
        host.receive(enclave.send_welcome(MEASUREMENT, SIGNER, "demo"))
        for side in (host, enclave):
            assert (side.limits.max_frame_size, side.limits.max_message_size,
                    side.limits.max_reassembly_bytes) == (8192, 65536, 131072)
        body = [b"z" * 60000]
        frames = host.send_call(Call(1, 1, 0, body))
        assert all(len(frame) <= 8192 + 64 for frame in frames)
        assert pump(frames, enclave) == [Call(1, 1, 0, body)]
        with pytest.raises(ResourceExhaustedError, match="exceeds max_message_size"):
            host.send_call(Call(2, 2, 0, [b"z" * 70000]))


def _budget(reassembly: int) -> SessionLimits:
    return SessionLimits(max_frame_size=4096, max_message_size=131072, max_reassembly_bytes=reassembly)


@pytest.mark.parametrize(("host_limits", "enclave_limits"), [(_budget(131072 * 4), _budget(131072 * 2)),
                                                             (_budget(131072 * 2), _budget(131072 * 4))],
                         ids=["the enclave's smaller", "the host's smaller"])
def test_the_reassembly_budget_is_negotiated_down_to_the_smaller(host_limits: SessionLimits,
                                                                  enclave_limits: SessionLimits) -> None:
    host, enclave = Session(Role.HOST, host_limits), Session(Role.ENCLAVE, enclave_limits)
    hello = host.send_hello(b"token", LOAD_CONFIG)
    assert session_pb2.Frame.FromString(hello).hello.max_reassembly_bytes == host_limits.max_reassembly_bytes
    enclave.receive(hello)
    welcome = enclave.send_welcome(MEASUREMENT, SIGNER, "demo")
    assert session_pb2.Frame.FromString(welcome).welcome.max_reassembly_bytes == 131072 * 2
    assert isinstance(host.receive(welcome)[0], WelcomeReceived)
    assert host.limits.max_reassembly_bytes == enclave.limits.max_reassembly_bytes == 131072 * 2
    # Each side holds the other to it, whichever asked for it: two bodies of 100 000 bytes fit, a third does not.
    headers = [host.send_call(Call(n, n, 0, [_payload(100_000, n)]))[0] for n in (1, 2, 3)]
    assert enclave.receive(headers[0]) == [] and enclave.receive(headers[1]) == []
    assert_violation(enclave, enclave.receive(headers[2]), StatusCode.RESOURCE_EXHAUSTED,
                     f"would hold more than max_reassembly_bytes ({131072 * 2})")
    host, enclave = open_pair_with(host_limits, enclave_limits)
    for call_id in (1, 2, 3):
        do_call(host, enclave, call_id, call_id)
    headers = [enclave.send_result(Result(n, n, Status(), [_payload(100_000, n)]))[0] for n in (1, 2, 3)]
    assert host.receive(headers[0]) == [] and host.receive(headers[1]) == []
    assert_violation(host, host.receive(headers[2]), StatusCode.RESOURCE_EXHAUSTED,
                     f"would hold more than max_reassembly_bytes ({131072 * 2})")


def open_pair_with(host_limits: SessionLimits, enclave_limits: SessionLimits) -> tuple[Session, Session]:
    host, enclave = Session(Role.HOST, host_limits), Session(Role.ENCLAVE, enclave_limits)
    enclave.receive(host.send_hello(b"token", LOAD_CONFIG))
    host.receive(enclave.send_welcome(MEASUREMENT, SIGNER, "demo"))
    assert host.is_open and enclave.is_open
    return host, enclave


def test_a_missing_or_small_reassembly_budget_in_a_hello_keeps_a_usable_one() -> None:
    # 0 (an older host) means no preference; a budget below the message size is raised to it.
    for asked, expected in ((0, 131072), (1000, 65536), (70_000, 70_000)):
        enclave = Session(Role.ENCLAVE, SMALL)
        hello = session_pb2.Frame.FromString(Session(Role.HOST, SMALL).send_hello(b"token", LOAD_CONFIG))
        hello.hello.max_reassembly_bytes = asked
        assert isinstance(enclave.receive(hello.SerializeToString())[0], HelloReceived)
        assert enclave.limits.max_reassembly_bytes == expected
        assert enclave.limits.max_message_size == 65536


@pytest.mark.parametrize(("field", "value", "words"), [
    ("max_frame_size", 1 << 20, "frames 1048576"),
    ("max_message_size", 1 << 30, "messages 1073741824"),
    ("max_reassembly_bytes", 1 << 20, "reassembly 1048576"),
    ("max_reassembly_bytes", 131072 + 1, "reassembly 131073"),
])
def test_a_welcome_that_raises_the_limits_is_a_violation(field: str, value: int, words: str) -> None:
    limits = SessionLimits(max_frame_size=8192, max_message_size=65536, max_reassembly_bytes=131072)
    host = Session(Role.HOST, limits)
    host.send_hello(b"token", LOAD_CONFIG)
    # The welcome of an enclave with the same limits, with one of them raised.
    welcome = session_pb2.Frame.FromString(_welcome_bytes(Session(Role.ENCLAVE, limits)))
    setattr(welcome.welcome, field, value)
    assert_violation(host, host.receive(welcome.SerializeToString()), StatusCode.FAILED_PRECONDITION,
                     "raised the limits", words)


def test_a_welcome_that_lowers_the_reassembly_budget_or_leaves_it_out_is_taken() -> None:
    for value, expected in ((0, 131072), (100_000, 100_000), (65536, 65536)):
        host = Session(Role.HOST, SMALL)
        host.send_hello(b"token", LOAD_CONFIG)
        welcome = session_pb2.Frame.FromString(_welcome_bytes(Session(Role.ENCLAVE, SMALL)))
        welcome.welcome.max_reassembly_bytes = value
        assert isinstance(host.receive(welcome.SerializeToString())[0], WelcomeReceived)
        assert host.limits.max_reassembly_bytes == expected


def test_unusable_limits_in_a_hello_are_a_violation() -> None:
    enclave = Session(Role.ENCLAVE)
    hello = session_pb2.Frame.FromString(Session(Role.HOST).send_hello(b"token", LOAD_CONFIG))
    hello.hello.max_frame_size = 100
    assert_violation(enclave, enclave.receive(hello.SerializeToString()), StatusCode.FAILED_PRECONDITION,
                     "unusable limits")


def _welcome_bytes(enclave: Session) -> bytes:
    enclave.receive(Session(Role.HOST).send_hello(b"token", LOAD_CONFIG))
    return enclave.send_welcome(MEASUREMENT, SIGNER, "demo")


def test_max_extents() -> None:
    limits = SessionLimits(max_extents=3)
    host, enclave = open_pair(limits)
    with pytest.raises(ResourceExhaustedError, match="4 extents exceeds max_extents"):
        host.send_call(Call(1, 1, 0, [b""] * 4))
    assert host.calls_in_progress(1) == []
    do_call(host, enclave, 1, 1, extents=[b""] * 3)
    with pytest.raises(ResourceExhaustedError, match="4 extents exceeds max_extents"):
        enclave.send_result(Result(1, 1, Status(), [b""] * 4))
    assert enclave.calls_in_progress(1) == [(False, 1)]
    # An error result carries no extents, so it always fits.
    do_result(enclave, host, 1, 1, status=Status(StatusCode.RESOURCE_EXHAUSTED, "too many"), extents=[b""] * 4)

    host, enclave = open_pair(limits)
    assert_violation(enclave, enclave.receive(call_frame(1, 1, extents=[b"x"] * 4)), StatusCode.RESOURCE_EXHAUSTED,
                     "a call with 4 extents (max_extents 3)")
    host, enclave = open_pair(limits)
    do_call(host, enclave, 1, 1)
    assert_violation(host, host.receive(result_frame(1, 1, extents=[b"x"] * 4)), StatusCode.RESOURCE_EXHAUSTED,
                     "a result with 4 extents (max_extents 3)")
    # A header counts the extents it announces.
    host, enclave = open_pair(limits)
    assert_violation(enclave, enclave.receive(call_header(1, 1, 1, [5000, 0, 0, 0])), StatusCode.RESOURCE_EXHAUSTED,
                     "a call with 4 extents (max_extents 3)")
    host, enclave = open_pair(limits)
    do_call(host, enclave, 1, 1)
    assert_violation(host, host.receive(result_header(1, 1, 1, [1] * 4)), StatusCode.RESOURCE_EXHAUSTED,
                     "a result with 4 extents (max_extents 3)")
    host, enclave = open_pair(limits)
    do_call(host, enclave, 1, 1, [b""] * 2 + [_payload(5000)])


# -- large calls and results: a header, then the body in fragments ---------------------------------------------------

@pytest.mark.parametrize("sizes", [[4097], [10_000], [1, 30_000, 0, 30_000], [65_400]])
def test_large_calls_and_results_round_trip_in_fragments_both_ways(sizes: list[int]) -> None:
    host, enclave = open_pair(SMALL)
    extents = [_payload(size, seed) for seed, size in enumerate(sizes)]
    for sender, receiver, call_id in ((host, enclave, 1), (enclave, host, 2)):
        call = Call(call_id, 1, 3, extents)
        frames = sender.send_call(call)
        assert check_encoding(frames, extents, SMALL) == 1  # each side numbers its own transfers
        for data in frames[:-1]:
            assert receiver.receive(data) == []
        assert receiver.receive(frames[-1]) == [call]
    for sender, receiver, call_id in ((host, enclave, 2), (enclave, host, 1)):
        frames = sender.send_result(Result(call_id, 1, Status(), extents[::-1]))
        assert check_encoding(frames, extents[::-1], SMALL) == 2
        assert pump(frames, receiver) == [Result(call_id, 1, Status(), extents[::-1])]
    assert host.calls_in_progress(1) == [] and enclave.calls_in_progress(1) == []
    assert enclave._reassembly_bytes == host._reassembly_bytes == 0


@pytest.mark.parametrize("count", [1, 2, 40])
@pytest.mark.parametrize("kind", ["call", "result"])
def test_a_body_transfer_starts_just_above_the_inline_threshold(kind: str, count: int) -> None:
    host, enclave = open_pair(SMALL)
    threshold = SMALL.max_frame_size - 256 - 11 * count
    for call_id, size in enumerate((threshold - 1, threshold, threshold + 1, threshold + 2), start=1):
        extents = sized_extents(size, count, seed=call_id)
        if kind == "call":
            frames = host.send_call(Call(call_id, call_id, 2**64 - 1, extents))
            expected: Event = Call(call_id, call_id, 2**64 - 1, extents)
        else:
            do_call(host, enclave, call_id, call_id)
            frames = enclave.send_result(Result(call_id, call_id, Status(), extents))
            expected = Result(call_id, call_id, Status(), extents)
        # Up to the threshold one frame (the largest ids and selector still fit), above it a header and one fragment.
        assert len(frames) == (1 if size <= threshold else 2)
        check_encoding(frames, extents, SMALL)
        assert pump(frames, host if kind == "result" else enclave) == [expected]


def test_empty_extents_always_travel_inline() -> None:
    host, enclave = open_pair(SMALL)
    frames = host.send_call(Call(1, 1, 0, [b""] * 1000))  # 11 bytes each by the estimate, but no body to send
    assert len(frames) == 1 and check_encoding(frames, [b""] * 1000, SMALL) == 0
    assert pump(frames, enclave) == [Call(1, 1, 0, [b""] * 1000)]


def test_an_ok_result_with_a_long_message_sends_its_extents_as_a_body() -> None:
    # The inline estimate does not count a result's status message; such a result must still go, as a body.
    host, enclave = open_pair(SMALL)
    do_call(host, enclave, 1, 1)
    result = Result(1, 1, Status(StatusCode.OK, "m" * 400), [_payload(3700)])
    frames = enclave.send_result(result)
    assert len(frames) == 2 and all(len(data) <= SMALL.max_frame_size for data in frames)
    assert session_pb2.Frame.FromString(frames[0]).result.body_transfer == 1
    assert pump(frames, host) == [result]


def test_a_message_of_exactly_max_message_size_travels() -> None:
    host, enclave = open_pair(SMALL)
    call = Call(1, 1, 0, sized_extents(65536, 3))
    frames = host.send_call(call)
    check_encoding(frames, call.extents, SMALL)
    assert pump(frames, enclave) == [call]
    result = Result(1, 1, Status(), sized_extents(65536, 1, seed=5))
    assert pump(enclave.send_result(result), host) == [result]


def test_sending_a_message_over_max_message_size_raises_and_changes_nothing() -> None:
    host, enclave = open_pair(SMALL)
    with pytest.raises(ResourceExhaustedError, match="a call of 65537 bytes exceeds max_message_size"):
        host.send_call(Call(1, 1, 0, sized_extents(65537, 2)))
    assert host.calls_in_progress(1) == [] and host.is_open
    small = Call(1, 1, 0, [b"fine"])  # the same id and thread work afterwards
    assert pump(host.send_call(small), enclave) == [small]

    with pytest.raises(ResourceExhaustedError, match="a result of 70000 bytes exceeds max_message_size"):
        enclave.send_result(Result(1, 1, Status(), [b"x" * 70_000]))
    assert enclave.calls_in_progress(1) == [(False, 1)] and enclave.is_open
    # The caller answers with that error instead.
    do_result(enclave, host, 1, 1, status=Status(StatusCode.RESOURCE_EXHAUSTED, "result too large"))


def test_interleaved_fragments_of_several_transfers_reassemble_each() -> None:
    host, enclave = open_pair(SMALL)
    big_a, big_b = Call(1, 1, 0, [_payload(20_000, 1)]), Call(2, 2, 0, [_payload(9_000, 2), _payload(5_000, 3)])
    small = Call(3, 3, 0, [b"small"])
    frames_a, frames_b, [frame_small] = host.send_call(big_a), host.send_call(big_b), host.send_call(small)
    assert len(frames_a) > len(frames_b) > 1
    events: list[Event] = []
    for index in range(len(frames_a)):
        events += enclave.receive(frames_a[index])
        if index < len(frames_b):
            events += enclave.receive(frames_b[index])
        if index == 1:
            events += enclave.receive(frame_small)
    assert events == [small, big_b, big_a]
    # And results the other way, interleaved too.
    result_a, result_b = Result(1, 1, Status(), [_payload(30_000, 4)]), Result(2, 2, Status(), [_payload(8_000, 5)])
    frames_a, frames_b = enclave.send_result(result_a), enclave.send_result(result_b)
    events = []
    for index in range(max(len(frames_a), len(frames_b))):
        for frames in (frames_b, frames_a):
            if index < len(frames):
                events += host.receive(frames[index])
    assert events == [result_b, result_a]


def test_a_header_is_a_call_at_once_and_its_event_comes_with_the_last_fragment() -> None:
    host, enclave = open_pair(SMALL)
    call = Call(1, 1, 5, [_payload(9000)])
    header, *fragments = host.send_call(call)
    assert enclave.receive(header) == []
    assert enclave.calls_in_progress(1) == [(False, 1)]  # in progress from the header on
    assert enclave.receive(fragments[0]) == []
    do_call(host, enclave, 2, 2)  # other threads go on meanwhile
    assert pump(fragments[1:], enclave) == [call]
    # A result header ends the call at once too.
    result = Result(1, 1, Status(), [_payload(5000, 1)])
    header, *fragments = enclave.send_result(result)
    assert host.receive(header) == [] and host.calls_in_progress(1) == []
    assert pump(fragments, host) == [result]


def test_a_header_breaking_the_matching_rules_is_refused_before_its_body() -> None:
    host, enclave = open_pair(SMALL)
    header, *_ = host.send_call(Call(1, 1, 0, [_payload(9000)]))
    assert enclave.receive(header) == []
    assert_violation(enclave, enclave.receive(call_header(2, 1, 2, [5000])), StatusCode.INTERNAL,
                     "a call on thread 1 while that thread is busy with call 1 here")
    host, enclave = open_pair(SMALL)
    enclave.receive(host.send_call(Call(1, 1, 0, [_payload(9000)]))[0])
    assert_violation(enclave, enclave.receive(thread_gone_frame(1)), StatusCode.INTERNAL,
                     "thread 1 ended with calls in progress")
    host, _ = open_pair(SMALL)
    assert_violation(host, host.receive(result_header(1, 1, 1, [5000])), StatusCode.INTERNAL,
                     "a result for call 1, which is not in progress")
    host, _ = open_pair(SMALL)
    assert_violation(host, host.receive(call_header(1, 4, 1, [5000])), StatusCode.INTERNAL,
                     "an exit call on thread 4, which has no entry call in progress")


def test_a_truncated_fragment_is_a_violation() -> None:
    host, enclave = open_pair(SMALL)
    frames = host.send_call(Call(1, 1, 0, [_payload(10_000)]))
    assert enclave.receive(frames[0]) == []
    assert_violation(enclave, enclave.receive(frames[1][:-10]), StatusCode.INTERNAL, "undecodable frame")


def _announced(total: int = 5000) -> Session:
    """An enclave session that has received the header of a call whose body (transfer 1) is `total` bytes."""
    _, enclave = open_pair(SMALL)
    assert enclave.receive(call_header(1, 1, 1, [total - 1000, 1000])) == []
    return enclave


@pytest.mark.parametrize("order", ORDERS, ids=["canonical", "protobuf path"])
@pytest.mark.parametrize(("total", "pieces"), [(3000, [3001]), (3000, [4000]), (5000, [CHUNK, 953]),
                                               (5000, [CHUNK, CHUNK]), (9000, [CHUNK, CHUNK, 905]),
                                               (2 * CHUNK, [CHUNK, CHUNK + 1])])
def test_a_transfer_longer_than_declared_is_a_violation(order: tuple[int, ...], total: int,
                                                        pieces: list[int]) -> None:
    enclave = _announced(total)
    for size in pieces[:-1]:
        assert enclave.receive(fragment_frame(1, total, b"x" * size, order)) == []
    assert_violation(enclave, enclave.receive(fragment_frame(1, total, b"x" * pieces[-1], order)),
                     StatusCode.INTERNAL, f"transfer 1 is longer than its declared {total} bytes")


@pytest.mark.parametrize("order", ORDERS, ids=["canonical", "protobuf path"])
@pytest.mark.parametrize(("first", "total"), [(True, 6000), (True, 0), (False, 6000), (False, 4000)])
def test_a_transfer_that_changes_its_size_is_a_violation(order: tuple[int, ...], first: bool, total: int) -> None:
    enclave = _announced()
    if not first:
        assert enclave.receive(fragment_frame(1, 5000, b"x" * CHUNK, order)) == []
    assert_violation(enclave, enclave.receive(fragment_frame(1, total, b"x" * 1000, order)), StatusCode.INTERNAL,
                     f"transfer 1 changed its size from 5000 to {total}")


@pytest.mark.parametrize("order", ORDERS, ids=["canonical", "protobuf path"])
@pytest.mark.parametrize("first", [True, False], ids=["first", "later"])
def test_an_empty_fragment_is_a_violation(order: tuple[int, ...], first: bool) -> None:
    enclave = _announced()
    if not first:
        assert enclave.receive(fragment_frame(1, 5000, b"x" * CHUNK, order)) == []
    empty = fragment_frame(1, 5000, b"", order)
    assert (decode_fragment(empty) is None) == (order != CANONICAL)
    assert_violation(enclave, enclave.receive(empty), StatusCode.INTERNAL, "an empty fragment in transfer 1")


@pytest.mark.parametrize("order", ORDERS, ids=["canonical", "protobuf path"])
@pytest.mark.parametrize(("total", "pieces"), [
    (10_000, [1]), (10_000, [CHUNK - 1]), (10_000, [CHUNK, 2000]),  # short while more than a chunk is left
    (5000, [CHUNK, 951]), (5000, [1]), (3000, [2999]),  # the last fragment short of the rest
    (2 * CHUNK + 1, [CHUNK, CHUNK - 1]),
])
def test_a_short_fragment_in_the_middle_of_a_transfer_is_a_violation(order: tuple[int, ...], total: int,
                                                                     pieces: list[int]) -> None:
    # Only the last fragment may be shorter than a full chunk, and then it is exactly the rest of the body.
    enclave = _announced(total)
    for size in pieces[:-1]:
        assert enclave.receive(fragment_frame(1, total, b"x" * size, order)) == []
    assert_violation(enclave, enclave.receive(fragment_frame(1, total, b"x" * pieces[-1], order)),
                     StatusCode.INTERNAL, f"a short fragment ({pieces[-1]} bytes) in the middle of transfer 1")
    assert enclave._transfers == {} and enclave._reassembly_bytes == 0


@pytest.mark.parametrize("order", ORDERS, ids=["canonical", "protobuf path"])
@pytest.mark.parametrize("total", [1000, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 7])
def test_full_chunks_and_a_shorter_last_fragment_are_accepted(order: tuple[int, ...], total: int) -> None:
    enclave = _announced(total)
    body = _payload(total)
    events = pump(split(body, 1, order=order), enclave)
    assert events == [Call(1, 1, 0, [body[:total - 1000], body[total - 1000:]])]
    assert enclave._transfers == {} and enclave._reassembly_bytes == 0


def test_a_full_chunk_is_measured_by_the_negotiated_frame_size() -> None:
    # Both sides asked for 8192-byte frames: a 4048-byte fragment (full under SMALL) is short here.
    limits = SessionLimits(max_frame_size=8192, max_message_size=65536, max_reassembly_bytes=131072)
    host, enclave = open_pair(limits)
    frames = host.send_call(Call(1, 1, 0, [_payload(20_000)]))
    assert [len(decode_fragment(data)[2]) for data in frames[1:]] == [8192 - FRAGMENT_OVERHEAD] * 2 + [
        20_000 - 2 * (8192 - FRAGMENT_OVERHEAD)]  # type: ignore[index]
    assert pump(frames, enclave) == [Call(1, 1, 0, [_payload(20_000)])]
    assert enclave.receive(call_header(2, 2, 9, [20_000])) == []
    assert_violation(enclave, enclave.receive(fragment_frame(9, 20_000, b"x" * CHUNK)), StatusCode.INTERNAL,
                     f"a short fragment ({CHUNK} bytes) in the middle of transfer 9")


def _after_transfers() -> tuple[Session, Session]:
    """A pair after three finished body transfers: 1 and 2 host -> enclave, 1 enclave -> host."""
    host, enclave = open_pair(SMALL)
    do_call(host, enclave, 1, 1, [_payload(5000)])
    do_call(enclave, host, 1, 1, [_payload(5000, 1)])
    do_result(host, enclave, 1, 1, [_payload(5000, 2)])
    return host, enclave


@pytest.mark.parametrize("order", ORDERS, ids=["canonical", "protobuf path"])
@pytest.mark.parametrize(("receiver", "transfer"), [
    ("enclave", 9), ("host", 9),  # never announced
    ("enclave", 0), ("host", 0),  # 0 means no transfer
    ("enclave", 2),  # finished already
    ("host", 2),  # the host's own transfer 2, to the enclave: each direction has its own
])
def test_a_fragment_not_announced_by_a_header_is_a_violation(order: tuple[int, ...], receiver: str,
                                                             transfer: int) -> None:
    # Whatever the fragment carries, even a whole frame: only a call or result header opens a transfer.
    for inner in (b"x" * 100, padded(hello_frame(), 200), goodbye_frame(), thread_gone_frame(1)):
        session = _after_transfers()[0 if receiver == "host" else 1]
        assert_violation(session, session.receive(fragment_frame(transfer, 5000, inner, order)), StatusCode.INTERNAL,
                         f"a fragment of transfer {transfer}, which no call or result announced")


def _awaiting_result() -> Session:
    host, enclave = open_pair(SMALL)
    do_call(host, enclave, 1, 1)
    return host


_CALL_SHAPES = [
    (lambda: call_header(1, 1, 1, [5000], extents=[b"x"]), "a call with both extents and a body transfer"),
    (lambda: call_header(1, 1, 0, [5000]), "a call with extent sizes but no body transfer"),
    (lambda: call_header(1, 1, 0, [5], extents=[b"12345"]), "a call with extent sizes but no body transfer"),
]
_RESULT_SHAPES = [
    (lambda: result_header(1, 1, 1, [5000], extents=[b"x"]), "a result with both extents and a body transfer"),
    (lambda: result_header(1, 1, 0, [5000]), "a result with extent sizes but no body transfer"),
    (lambda: result_header(1, 1, 0, [0]), "a result with extent sizes but no body transfer"),
    (lambda: result_header(1, 1, 1, [5000], code=int(StatusCode.INTERNAL)),
     "an error result for call 1 that carries extents"),
    (lambda: result_header(1, 1, 0, [5], code=int(StatusCode.INTERNAL)),
     "a result with extent sizes but no body transfer"),
]


@pytest.mark.parametrize(("make", "words"), _CALL_SHAPES + _RESULT_SHAPES)
def test_a_header_of_the_wrong_shape_is_a_violation(make: object, words: str) -> None:
    data = make()  # type: ignore[operator]
    session = open_pair(SMALL)[1] if words.startswith("a call") else _awaiting_result()
    assert_violation(session, session.receive(data), StatusCode.INTERNAL, words)


@pytest.mark.parametrize("sizes", [[], [0], [0, 0, 0], [65537], [65536, 1], [2**64 - 1], [2**64 - 1] * 2,
                                   [40_000, 30_000]])
@pytest.mark.parametrize("kind", ["call", "result"])
def test_a_body_of_no_bytes_or_over_max_message_size_is_a_violation(kind: str, sizes: list[int]) -> None:
    if kind == "call":
        session, data = open_pair(SMALL)[1], call_header(1, 1, 1, sizes)
    else:
        session, data = _awaiting_result(), result_header(1, 1, 1, sizes)
    assert_violation(session, session.receive(data), StatusCode.RESOURCE_EXHAUSTED,
                     f"a {kind} body of {sum(sizes)} bytes", "more than 0 and at most max_message_size 65536")


@pytest.mark.parametrize("sizes", [[1], [0, 100, 0], [4096], [65536]])
def test_a_body_of_any_size_up_to_max_message_size_is_accepted(sizes: list[int]) -> None:
    # A sender sends small messages inline, but a receiver does not second-guess where it drew the line.
    _, enclave = open_pair(SMALL)
    extents = [_payload(size, seed) for seed, size in enumerate(sizes)]
    assert enclave.receive(call_header(1, 1, 7, sizes, selector=3)) == []
    assert pump(split(b"".join(extents), 7), enclave) == [Call(1, 1, 3, extents)]


def test_a_duplicate_transfer_id_in_progress_is_a_violation() -> None:
    _, enclave = open_pair(SMALL)
    assert enclave.receive(call_header(1, 1, 7, [5000])) == []
    assert_violation(enclave, enclave.receive(call_header(2, 2, 7, [5000])), StatusCode.INTERNAL,
                     "body transfer 7 is already in progress")
    # A result's transfer and a call's share the ids of their direction.
    host, enclave = open_pair(SMALL)
    do_call(host, enclave, 1, 1)
    do_call(host, enclave, 2, 2)
    do_call(enclave, host, 3, 2)
    assert host.receive(result_header(1, 1, 7, [5000])) == []
    assert_violation(host, host.receive(call_header(4, 2, 7, [5000])), StatusCode.INTERNAL,
                     "body transfer 7 is already in progress")


def test_a_transfer_id_may_be_reused_once_finished() -> None:
    host, enclave = open_pair(SMALL)
    for call_id in (1, 2):
        call = Call(call_id, call_id, 0, [_payload(6000, call_id), b"", b"tail"])
        assert enclave.receive(call_header(call_id, call_id, 7, [6000, 0, 4])) == []
        assert pump(split(b"".join(call.extents), transfer_id=7), enclave) == [call]
    # The other direction's transfer 7 is another transfer, in progress at the same time.
    do_call(host, enclave, 3, 3)
    assert host.receive(result_header(3, 3, 7, [5000])) == []
    assert enclave.receive(call_header(4, 4, 7, [5000])) == []
    assert pump(split(b"r" * 5000, 7), host) == [Result(3, 3, Status(), [b"r" * 5000])]
    assert pump(split(b"c" * 5000, 7), enclave) == [Call(4, 4, 0, [b"c" * 5000])]


def test_reassembly_is_bounded_by_max_reassembly_bytes() -> None:
    host, enclave = open_pair(SMALL)
    first, second, third = (host.send_call(Call(n, n, 0, [_payload(60_000, n)])) for n in (1, 2, 3))
    assert enclave.receive(first[0]) == [] and enclave.receive(second[0]) == []  # 120 000 bytes announced
    assert_violation(enclave, enclave.receive(third[0]), StatusCode.RESOURCE_EXHAUSTED,
                     "would hold more than max_reassembly_bytes (131072)")


def test_finished_transfers_free_their_reassembly_bytes() -> None:
    host, enclave = open_pair(SMALL)
    calls = [Call(n, n, 0, [_payload(60_000, n)]) for n in range(1, 6)]
    frames = [host.send_call(call) for call in calls]
    assert enclave.receive(frames[0][0]) == []
    for index in range(1, 5):  # always one open transfer plus the one going through
        assert pump(frames[index], enclave) == [calls[index]]
    assert pump(frames[0][1:], enclave) == [calls[0]]
    assert enclave._reassembly_bytes == 0 and enclave.is_open


def test_transfers_in_progress_are_bounded() -> None:
    limits = SessionLimits(max_frame_size=4096, max_message_size=65536, max_reassembly_bytes=131072,
                           max_calls_in_flight=2)
    _, enclave = open_pair(limits)
    assert enclave.receive(call_header(1, 1, 1, [5000])) == []
    assert enclave.receive(call_header(2, 2, 2, [5000])) == []
    assert_violation(enclave, enclave.receive(call_header(3, 3, 3, [5000])), StatusCode.RESOURCE_EXHAUSTED,
                     "too many body transfers in progress")
    # Results' transfers count too, though their calls are over.
    host, enclave = open_pair(limits)
    do_call(host, enclave, 1, 1)
    do_call(host, enclave, 2, 2)
    for call_id in (1, 2):  # only the headers are in
        assert host.receive(enclave.send_result(Result(call_id, call_id, Status(), [_payload(5000)]))[0]) == []
    do_call(host, enclave, 3, 3)
    assert_violation(host, pump(enclave.send_call(Call(1, 3, 0, [_payload(5000)]))[:1], host),
                     StatusCode.RESOURCE_EXHAUSTED, "too many body transfers in progress")
    # Finished ones do not.
    host, enclave = open_pair(limits)
    for call_id in range(1, 6):
        do_call(host, enclave, call_id, 1, [_payload(5000, call_id)])
        do_result(enclave, host, call_id, 1, [_payload(5000, call_id)])


@settings(max_examples=60, deadline=None)
@given(extents=st.lists(st.one_of(st.binary(max_size=40), st.sampled_from([b"", frame(goodbye=session_pb2.Goodbye()),
                                                                          fragment_frame(1, 5, b"12345"), b"\xff"]),
                                  st.builds(_payload, st.integers(0, 9000), st.integers(0, 2**16))),
                        min_size=1, max_size=6).filter(any),
       frame_size=st.one_of(st.just(4096), st.integers(4096, 6000)),
       orders=st.lists(st.permutations(CANONICAL), min_size=1))
def test_a_body_arrives_byte_identical_however_it_is_cut_and_encoded(
        extents: list[bytes], frame_size: int, orders: list[list[int]]) -> None:
    """Full chunks fall anywhere in the body (across extents, mid-extent: the extents and the frame size are random)
    and fragments may write their fields in any order: the canonical ones are read by body.py, the others by
    protobuf, and the extents come out as sent, never parsed."""
    body = b"".join(extents)
    limits = SessionLimits(max_frame_size=frame_size, max_message_size=65536, max_reassembly_bytes=131072)
    _, enclave = open_pair(limits)
    assert enclave.receive(call_header(1, 1, 5, [len(extent) for extent in extents])) == []
    chunk = frame_size - FRAGMENT_OVERHEAD
    fragments = [fragment_frame(5, len(body), body[start:start + chunk], tuple(orders[index % len(orders)]))
                 for index, start in enumerate(range(0, len(body), chunk))]
    assert pump(fragments, enclave) == [Call(1, 1, 0, extents)]
    assert enclave._transfers == {} and enclave._reassembly_bytes == 0


@pytest.mark.parametrize("order", [(1, 3, 2), (2, 1, 3), (2, 3, 1), (3, 1, 2), (3, 2, 1)])
def test_a_fragment_with_its_fields_in_another_order_is_read_through_protobuf_alike(order: tuple[int, ...]) -> None:
    body = _payload(9000)
    events = {}
    for name, fields in (("canonical", CANONICAL), ("other", order)):
        fragments = split(body, 1, order=fields)
        assert all((decode_fragment(data) is None) == (fields != CANONICAL) for data in fragments)
        _, enclave = open_pair(SMALL)
        assert enclave.receive(call_header(1, 1, 1, [1000, 8000])) == []
        events[name] = pump(fragments, enclave)
    assert events["canonical"] == events["other"] == [Call(1, 1, 0, [body[:1000], body[1000:]])]


# -- body.py: fragments on the wire ----------------------------------------------------------------------------------

def _frame_fields(data: bytes) -> tuple[int, int, bytes] | None:
    """What protobuf reads from `data` as a fragment frame: (transfer id, total size, data), or None."""
    try:
        parsed = session_pb2.Frame.FromString(data)
    except DecodeError:
        return None
    if parsed.WhichOneof("kind") != "fragment":
        return None
    return parsed.fragment.transfer_id, parsed.fragment.total_size, parsed.fragment.data


@settings(max_examples=150, deadline=None)
@given(extents=st.lists(st.one_of(st.just(b""), st.binary(max_size=300)), max_size=8),
       chunk=st.one_of(st.integers(1, 8), st.integers(1, 700)),
       transfer_id=st.one_of(st.integers(1, 4), st.integers(1, 2**64 - 1)))
def test_body_frames_decode_fragment_and_join_extents_round_trip(extents: list[bytes], chunk: int,
                                                                  transfer_id: int) -> None:
    body = b"".join(extents)
    sequence = BodyFrames(b"header", transfer_id, extents, chunk)
    assert len(sequence) == 1 + -(-len(body) // chunk)
    # Iterating, indexing (from either end) and slicing build the same frames.
    assert list(sequence) == [sequence[i] for i in range(len(sequence))] == sequence[:]
    assert sequence[-1] == sequence[len(sequence) - 1] and sequence[0] == b"header"
    frames = list(sequence)[1:]
    pieces = []
    for data in frames:
        decoded = decode_fragment(data)
        assert decoded is not None
        decoded_id, total, piece = decoded
        assert isinstance(piece, memoryview) and (decoded_id, total) == (transfer_id, len(body))
        assert len(data) <= len(piece) + FRAGMENT_OVERHEAD
        # Plain protobuf: protobuf reads the same fields, and would have written the very same bytes.
        assert _frame_fields(data) == (transfer_id, len(body), bytes(piece))
        assert session_pb2.Frame.FromString(data).SerializeToString() == data
        pieces.append(piece)
    assert all(len(piece) == chunk for piece in pieces[:-1]) and all(pieces)
    assert b"".join(pieces) == body
    joined = join_extents(pieces, [len(extent) for extent in extents])
    assert joined == extents and all(type(extent) is bytes for extent in joined)


def test_body_frames_send_what_the_extents_held_when_the_call_was_made() -> None:
    buffer = bytearray(b"a" * 10)
    frames = BodyFrames(b"header", 1, [buffer, b"b" * 5], 4)
    buffer[:] = b"z" * 10  # the caller reuses its buffer while the frames are still being written
    fragments = [decode_fragment(frame) for frame in frames[1:]]
    assert b"".join(bytes(fragment[2]) for fragment in fragments if fragment) == b"a" * 10 + b"b" * 5
    with pytest.raises(IndexError):
        frames[len(frames)]
    with pytest.raises(IndexError):
        frames[-len(frames) - 1]


@settings(max_examples=100, deadline=None)
@given(extents=st.lists(st.binary(max_size=60), max_size=8), cuts=st.lists(st.integers(0, 500), max_size=10))
def test_join_extents_cuts_pieces_cut_anywhere_into_the_extents(extents: list[bytes], cuts: list[int]) -> None:
    body = b"".join(extents)
    bounds = sorted({0, len(body), *(cut % (len(body) + 1) for cut in cuts)})
    pieces = [memoryview(body)[start:end] for start, end in itertools.pairwise(bounds)]
    joined = join_extents(pieces, [len(extent) for extent in extents])
    assert joined == extents and all(type(extent) is bytes for extent in joined)


@settings(max_examples=150, deadline=None)
@given(transfer_id=st.integers(0, 2**64 - 1), total=st.integers(0, 2**64 - 1), data=st.binary(max_size=40),
       order=st.permutations(CANONICAL))
def test_decode_fragment_reads_the_canonical_order_only_and_as_protobuf_does(
        transfer_id: int, total: int, data: bytes, order: list[int]) -> None:
    framed = fragment_frame(transfer_id, total, data, tuple(order))
    assert _frame_fields(framed) == (transfer_id, total, data)
    decoded = decode_fragment(framed)
    if tuple(order) == CANONICAL:
        assert decoded is not None and (decoded[0], decoded[1], bytes(decoded[2])) == (transfer_id, total, data)
    else:
        assert decoded is None  # left to protobuf


def _raw_varint(value: int, padding: int) -> bytes:
    """`value` as a varint with `padding` needless continuation bytes (protobuf reads those too)."""
    encoded = bytearray(_varint(value))
    if padding:
        encoded[-1] |= 0x80
        encoded += b"\x80" * (padding - 1) + b"\x00"
    return bytes(encoded)


_VARINT_VALUES = st.one_of(st.integers(0, 300), st.integers(2**64 - 2, 2**64 + 2), st.integers(0, 2**70 - 1))


@st.composite
def _fragment_like(draw: st.DrawFn) -> bytes:
    """Bytes close to a canonical fragment frame: odd varints (long, padded, beyond 64 bits), wrong lengths and
    tags, extra fields, and mutations of all that."""
    canonical = [0x08, 0x10, 0x1A]
    tags = canonical if draw(st.booleans()) else draw(st.lists(st.sampled_from([*canonical, 0x18, 0x22, 0x7A]),
                                                               max_size=4))
    inner = b""
    for tag in tags:
        if tag & 7 == 2:
            payload = draw(st.binary(max_size=12))
            length = len(payload) + draw(st.sampled_from([0, 0, 0, -1, 1]))
            inner += bytes([tag]) + _raw_varint(max(length, 0), draw(st.integers(0, 2))) + payload
        else:
            inner += bytes([tag]) + _raw_varint(draw(_VARINT_VALUES), draw(st.sampled_from([0, 0, 1, 5])))
    length = len(inner) + draw(st.sampled_from([0, 0, 0, -1, 1]))
    data = bytes([draw(st.sampled_from([0x2A, 0x2A, 0x22, 0x0A]))]) + _raw_varint(max(length, 0),
                                                                                 draw(st.integers(0, 3))) + inner
    if draw(st.booleans()):
        data = _mutate(data, *draw(_MUTATIONS))
    return data


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(st.binary(max_size=64), _fragment_like()))
def test_decode_fragment_never_raises_and_never_disagrees_with_protobuf(data: bytes) -> None:
    decoded = decode_fragment(data)
    if decoded is not None:
        assert _frame_fields(data) == (decoded[0], decoded[1], bytes(decoded[2]))


def test_a_varint_beyond_64_bits_is_left_to_protobuf() -> None:
    # Ten bytes can say more than 64 bits; protobuf keeps the low 64, so the session must read the frame as that.
    inner = b"\x08" + b"\xff" * 9 + b"\x7f" + b"\x10\x01\x1a\x01x"
    data = b"\x2a" + _varint(len(inner)) + inner
    assert decode_fragment(data) is None
    assert _frame_fields(data) == (2**64 - 1, 1, b"x")
    _, enclave = open_pair(SMALL)
    assert enclave.receive(call_header(1, 1, 2**64 - 1, [1])) == []
    assert enclave.receive(data) == [Call(1, 1, 0, [b"x"])]


# -- goodbye ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("who", ["host", "enclave"])
@pytest.mark.parametrize("status", [Status(), Status(StatusCode.UNAVAILABLE, "enclave destroyed")])
def test_goodbye_ends_the_session_on_both_sides(who: str, status: Status) -> None:
    host, enclave = open_pair()
    do_call(host, enclave, 1, 1)  # calls in progress do not stop a goodbye
    leaver, peer = (host, enclave) if who == "host" else (enclave, host)
    data = leaver.send_goodbye(status if status.code else None)
    assert leaver.state is SessionState.CLOSED and leaver.end_status == status
    assert peer.receive(data) == [SessionEnded(status, by_peer=True)]
    assert peer.state is SessionState.CLOSED and peer.end_status == status
    for session in (host, enclave):
        assert not session.is_open
        with pytest.raises(EnclaveUnavailable):
            session.send_call(Call(2, 2, 0, []))
        with pytest.raises(EnclaveUnavailable):
            session.send_result(Result(1, 1, Status()))
        assert session.receive(call_frame(2, 1)) == []
        assert session.receive(b"garbage") == []
        assert session.receive(goodbye_frame(3, "again")) == []
        assert session.state is SessionState.CLOSED and session.end_status == status


def _half_received_both_ways() -> tuple[Session, Session]:
    """A pair with two bodies half received by each side: a header and a fragment in, the rest still coming."""
    host, enclave = open_pair(SMALL)
    for thread in (1, 2):
        do_call(host, enclave, thread, thread)
        assert pump(enclave.send_result(Result(thread, thread, Status(), [_payload(9000, thread)]))[:2], host) == []
    for call_id in (3, 4):
        assert pump(host.send_call(Call(call_id, call_id, 0, [_payload(9000, call_id)]))[:2], enclave) == []
    for session in (host, enclave):
        assert len(session._transfers) == 2 and session._reassembly_bytes == 18_000
    return host, enclave


@pytest.mark.parametrize("who", ["host", "enclave"])
@pytest.mark.parametrize("status", [None, Status(StatusCode.UNAVAILABLE, "enclave destroyed")])
def test_goodbye_drops_half_received_bodies_on_both_sides(who: str, status: Status | None) -> None:
    host, enclave = _half_received_both_ways()
    leaver, peer = (host, enclave) if who == "host" else (enclave, host)
    data = leaver.send_goodbye(status)
    assert leaver.state is SessionState.CLOSED
    assert leaver._transfers == {} and leaver._reassembly_bytes == 0  # goodbye sent
    assert len(peer._transfers) == 2 and peer._reassembly_bytes == 18_000  # not yet told
    assert peer.receive(data) == [SessionEnded(status or Status(), by_peer=True)]
    assert peer._transfers == {} and peer._reassembly_bytes == 0  # goodbye received
    # The rest of a dropped body is ignored, like any frame after the end.
    for session in (host, enclave):
        assert session.receive(fragment_frame(1, 9000, b"x" * CHUNK)) == []
        assert session._transfers == {} and session._reassembly_bytes == 0


def test_a_goodbye_said_after_a_violation_leaves_nothing_held() -> None:
    host, _ = _half_received_both_ways()
    assert_violation(host, host.receive(fragment_frame(1, 9000, b"x")), StatusCode.INTERNAL, "a short fragment")
    host.send_goodbye()
    assert host._transfers == {} and host._reassembly_bytes == 0 and host.state is SessionState.ERROR


def test_goodbye_before_the_handshake_and_with_an_unknown_code() -> None:
    enclave = Session(Role.ENCLAVE)
    assert enclave.receive(goodbye_frame(12345, "bye")) == [SessionEnded(Status(StatusCode.UNKNOWN, "bye"),
                                                                         by_peer=True)]
    assert enclave.state is SessionState.CLOSED
    host = _host_awaiting_welcome()
    assert host.receive(goodbye_frame(int(StatusCode.PERMISSION_DENIED), "bad token")) == [
        SessionEnded(Status(StatusCode.PERMISSION_DENIED, "bad token"), by_peer=True)]
    with pytest.raises(EnclaveUnavailable, match="bad token"):
        host.send_call(Call(1, 1, 0, []))


def test_saying_goodbye_twice_keeps_the_first_reason() -> None:
    host, _ = open_pair()
    host.send_goodbye(Status(StatusCode.CANCELLED, "first"))
    data = host.send_goodbye(Status(StatusCode.INTERNAL, "second"))
    assert_goodbye(data, Status(StatusCode.INTERNAL, "second"))
    assert host.end_status == Status(StatusCode.CANCELLED, "first")
    with pytest.raises(EnclaveUnavailable, match="first"):
        host.send_call(Call(1, 1, 0, []))


def test_the_goodbye_of_a_violation_tells_the_peer_why() -> None:
    host, enclave = open_pair()
    [ended] = enclave.receive(result_frame(5, 5))
    assert isinstance(ended, SessionEnded) and ended.goodbye is not None
    assert host.receive(ended.goodbye) == [SessionEnded(ended.status, by_peer=True)]
    with pytest.raises(EnclaveUnavailable, match="protocol violation: a result for call 5"):
        host.send_call(Call(1, 1, 0, []))
    with pytest.raises(EnclaveUnavailable, match="protocol violation"):
        enclave.send_call(Call(1, 1, 0, []))
    # Saying goodbye after a violation does not hide it.
    enclave.send_goodbye()
    assert enclave.state is SessionState.ERROR and enclave.end_status == ended.status


def test_a_goodbye_with_a_long_reason_still_fits_one_frame() -> None:
    host, enclave = open_pair(SMALL)
    reason = "é" * 10_000  # a traceback, say; multi-byte, so cutting it must keep it valid UTF-8
    data = host.send_goodbye(Status(StatusCode.INTERNAL, reason))
    assert len(data) <= SMALL.max_frame_size
    [ended] = enclave.receive(data)
    assert isinstance(ended, SessionEnded) and ended.by_peer
    assert ended.status.code == StatusCode.INTERNAL and reason.startswith(ended.status.message)
    assert len(ended.status.message) > 1000
    assert host.end_status == Status(StatusCode.INTERNAL, reason)  # the full reason stays with the sender


# -- properties ------------------------------------------------------------------------------------------------------

THREADS = (0, 1, 2, 2**64 - 1)
# Sizes around the inline threshold of one to three extents (4096 - 256 - 11 * n), and bodies of a few fragments.
_SIZES = st.one_of(st.integers(0, 40), st.sampled_from([3807, 3808, 3818, 3819, 3829, 3830, 4096]),
                   st.integers(3700, 14_000))
# Extents as (seed, size): the bytes themselves come from a seeded generator, so big payloads stay cheap to draw.
_EXTENTS = st.lists(st.tuples(st.integers(0, 2**16), _SIZES), max_size=3).map(
    lambda specs: [_payload(size, seed) for seed, size in specs])
_CODES = st.sampled_from(list(StatusCode))
_UNCHECKED: list[Event] = [SessionEnded(Status(StatusCode.UNKNOWN, "unchecked"), by_peer=False)]
# The state machines let several bodies be in progress per direction (one per thread), so reassembly gets room for
# them; everything else is SMALL.
STREAM = SessionLimits(max_frame_size=4096, max_message_size=65536, max_reassembly_bytes=4 * 65536)


def check_receive(session: Session, data: bytes) -> list[Event]:
    """`session.receive(data)` keeps the promises every frame, however hostile, is owed."""
    before = session.state
    events = session.receive(data)  # never raises: an exception here fails the test
    if before in TERMINAL:
        assert events == []
        assert session.state is before
        return events
    assert len(events) <= 1, events  # one frame finishes at most one message
    ended = [event for event in events if isinstance(event, SessionEnded)]
    if not ended:
        assert session.state is before or {before, session.state} <= {SessionState.AWAITING_HELLO,
                                                                       SessionState.HELLO_RECEIVED,
                                                                       SessionState.AWAITING_WELCOME,
                                                                       SessionState.OPEN}
        if not events and session.state is SessionState.OPEN:
            # Nothing to report: it can only have been a fragment, or the header of a body.
            assert decode_fragment(data) is not None or _parsed_kind(data) == "fragment" or body_header(data)
        return events
    [end] = ended
    # An ended session holds no half-received bodies, whoever ended it.
    assert session._transfers == {} and session._reassembly_bytes == 0
    if end.by_peer:
        assert session.state is SessionState.CLOSED and end.goodbye is None
    else:
        assert session.state is SessionState.ERROR and session.end_status == end.status
        assert end.status.code != StatusCode.OK and end.status.message.startswith("protocol violation: ")
        assert_goodbye(end.goodbye, end.status)
        assert session.receive(data) == []
    return events


def _parsed_kind(data: bytes) -> str | None:
    try:
        kind: str | None = session_pb2.Frame.FromString(data).WhichOneof("kind")
    except DecodeError:
        return None
    return kind


@dataclass(frozen=True)
class _Pending:
    """A call or result whose header a side has accepted and whose body is still coming."""

    kind: type
    call_id: int
    transfer: int
    total: int


def body_header(data: bytes) -> tuple[int, _Pending] | None:
    """(thread, what it announces) if `data` is the header of a call or result with a body."""
    if decode_fragment(data) is not None or _parsed_kind(data) not in ("call", "result"):
        return None
    parsed = session_pb2.Frame.FromString(data)
    message = parsed.call if parsed.HasField("call") else parsed.result
    if not message.body_transfer:
        return None
    kind = Call if parsed.HasField("call") else Result
    return message.thread, _Pending(kind, message.call_id, message.body_transfer, sum(message.extent_sizes))


@dataclass
class _InFlight:
    frames: deque[bytes] = field(repr=False)
    expected: Event = field(repr=False)  # what the receiver reports when the last frame arrives
    started: bool = False  # its first frame (the whole message, or its header) is in
    barrier: bool = False  # a goodbye: it waits for everything sent before it, and nothing after it passes it


class _Side:
    """What the application on one side knows: the calls it made and the calls it received, per thread (innermost
    last), built only from what it sent and the events its session gave it; and the headers its session accepted
    whose bodies are still coming (at most one per thread: the thread's next move waits for that message)."""

    def __init__(self, session: Session, first_id: int) -> None:
        self.session = session
        self.role = session.role
        self.stacks: dict[int, list[tuple[bool, int]]] = {}
        self.sent: dict[int, Call] = {}
        self.received: set[int] = set()
        self.next_id = first_id
        self.reusable: list[int] = []
        self.pending: dict[int, _Pending] = {}

    @property
    def open(self) -> bool:
        return self.session.state is SessionState.OPEN

    def top(self, thread: int) -> tuple[bool, int] | None:
        stack = self.stacks.get(thread)
        return stack[-1] if stack else None

    def can_call(self, thread: int) -> bool:
        top = self.top(thread)
        if self.role is Role.HOST:
            return top is None or not top[0]
        return top is not None and not top[0]

    def can_answer(self, thread: int) -> bool:
        top = self.top(thread)
        return top is not None and not top[0]

    def new_id(self, reuse: bool) -> int:
        if reuse and self.reusable:
            return self.reusable.pop()
        self.next_id += 1
        return self.next_id

    def made_call(self, call: Call) -> None:
        self.stacks.setdefault(call.thread, []).append((True, call.call_id))
        self.sent[call.call_id] = call

    def answered(self, result: Result) -> None:
        assert self.stacks[result.thread].pop() == (False, result.call_id)
        self.received.discard(result.call_id)
        self._forget_if_idle(result.thread)

    def _forget_if_idle(self, thread: int) -> None:
        if not self.stacks[thread] and self.role is Role.HOST:
            del self.stacks[thread]

    def accepted_header(self, thread: int, pending: _Pending) -> None:
        assert thread not in self.pending, "a second body on a thread whose body is still coming"
        self.pending[thread] = pending

    def expected_stack(self, thread: int) -> list[tuple[bool, int]]:
        """What the session must hold for `thread`: the application's view, with the accepted headers applied."""
        stack = list(self.stacks.get(thread, []))
        pending = self.pending.get(thread)
        if pending is not None and pending.kind is Call:
            stack.append((False, pending.call_id))
        elif pending is not None:
            assert stack[-1] == (True, pending.call_id), "a result header accepted for another call"
            stack.pop()
        return stack

    def observe(self, event: Event) -> None:
        """Check that `event` is routed where it belongs, and note it."""
        if isinstance(event, (Call, Result)):
            # A thread with a body coming gets nothing before that body's own call or result.
            pending = self.pending.pop(event.thread, None)
            assert pending is None or (pending.kind, pending.call_id) == (type(event), event.call_id), (event, pending)
            assert pending is None or pending.total == sum(len(extent) for extent in event.extents)
        if isinstance(event, Result):
            # The heart of it: a result answers the innermost call this side has in progress on that thread.
            assert self.top(event.thread) == (True, event.call_id), (event, self.stacks)
            call = self.sent.pop(event.call_id)
            assert call.thread == event.thread
            assert event.status.ok or not event.extents
            self.stacks[event.thread].pop()
            self._forget_if_idle(event.thread)
            self.reusable.append(event.call_id)
        elif isinstance(event, Call):
            assert event.call_id not in self.received
            top = self.top(event.thread)
            if self.role is Role.HOST:
                assert top is not None and top[0], "an exit call needs an entry call waiting on its thread"
            else:
                assert top is None or top[0], "an entry call arrived on a busy thread"
            self.stacks.setdefault(event.thread, []).append((False, event.call_id))
            self.received.add(event.call_id)
        elif isinstance(event, ThreadGone):
            assert self.role is Role.ENCLAVE and not self.stacks.get(event.thread)
            assert event.thread not in self.pending
            self.stacks.pop(event.thread, None)
        else:
            assert isinstance(event, SessionEnded), f"unexpected {event!r} after the handshake"


class SessionPair(RuleBasedStateMachine):
    """A HOST and an ENCLAVE session back to back, driven through random valid traffic on several threads. Each
    direction is a stream: messages start (their one frame, or their header) in the order they were sent, but a body's
    fragments may trail behind, interleaved with other messages' frames; the two directions interleave arbitrarily."""

    def __init__(self) -> None:
        super().__init__()
        host, enclave = open_pair(STREAM)
        self.sides = {Role.HOST: _Side(host, 0), Role.ENCLAVE: _Side(enclave, 0)}
        # Messages on their way to each side, in the order they were sent.
        self.inflight: dict[Role, list[_InFlight]] = {Role.HOST: [], Role.ENCLAVE: []}
        self.history: list[tuple[Role, bytes]] = []
        self.tainted = False  # a hostile frame was injected: from then on only the promises are checked
        self.entered: set[int] = set()  # host threads that made an entry call since they last ended
        self.steps = 0

    @property
    def host(self) -> _Side:
        return self.sides[Role.HOST]

    @property
    def enclave(self) -> _Side:
        return self.sides[Role.ENCLAVE]

    def peer(self, side: _Side) -> _Side:
        return self.sides[Role.ENCLAVE if side.role is Role.HOST else Role.HOST]

    @initialize(host_base=st.sampled_from([0, 2**63, 2**64 - 1000]),
                enclave_base=st.sampled_from([0, 2**32, 2**64 - 1000]))
    def id_bases(self, host_base: int, enclave_base: int) -> None:
        self.host.next_id, self.enclave.next_id = host_base, enclave_base

    def _send(self, side: _Side, frames: list[bytes], expected: Event) -> None:
        assert frames and all(len(data) <= STREAM.max_frame_size for data in frames)
        self.inflight[self.peer(side).role].append(_InFlight(deque(frames), expected,
                                                             barrier=isinstance(expected, SessionEnded)))

    def _send_message(self, side: _Side, frames: list[bytes], extents: list[bytes], expected: Event) -> None:
        transfer = check_encoding(frames, extents, STREAM)
        if transfer and not self.tainted:  # not the id of a body still on its way (or coming in) in that direction
            headers = [body_header(message.frames[0]) for message in self.inflight[self.peer(side).role]
                       if not message.started]
            assert transfer not in {header[1].transfer for header in headers if header is not None}
            assert transfer not in {pending.transfer for pending in self.peer(side).pending.values()}
        self._send(side, frames, expected)

    def _ready(self, role: Role) -> list[_InFlight]:
        """The messages whose next frame may come next on the stream to `role`."""
        ready: list[_InFlight] = []
        for message in self.inflight[role]:
            if message.started:
                ready.append(message)
                continue
            if not (message.barrier and ready):
                ready.append(message)
            break
        return ready

    def _deliver(self, role: Role, message: _InFlight) -> None:
        data = message.frames.popleft()
        message.started = True
        if not message.frames:
            self.inflight[role].remove(message)
        self._receive(self.sides[role], data, [message.expected] if not message.frames else [])

    def _receive(self, side: _Side, data: bytes, expected: list[Event]) -> list[Event]:
        self.history.append((side.role, data))
        before = side.session.state
        if before in TERMINAL:
            expected = []  # a side that has ended takes nothing more
        events = check_receive(side.session, data)
        if not self.tainted and expected is not _UNCHECKED:
            assert events == expected
        if before is SessionState.OPEN and side.session.state is SessionState.OPEN and not events:
            header = body_header(data)
            if header is not None:
                side.accepted_header(*header)
        for event in events:
            side.observe(event)
        if events and isinstance(events[0], SessionEnded) and not events[0].by_peer:
            assert self.tainted, f"a violation from valid traffic: {events[0].status}"
            assert events[0].goodbye is not None
            # Tell the peer, as a transport would.
            self._send(side, [events[0].goodbye], SessionEnded(events[0].status, by_peer=True))
        return events

    # -- valid traffic -------------------------------------------------------------------------------------------

    @precondition(lambda self: self.host.open and any(self.host.can_call(t) for t in THREADS))
    @rule(data=st.data(), extents=_EXTENTS, selector=st.integers(0, 2**64 - 1), reuse=st.booleans())
    def entry_call(self, data: st.DataObject, extents: list[bytes], selector: int, reuse: bool) -> None:
        self._call(self.host, data, extents, selector, reuse)

    @precondition(lambda self: self.enclave.open and any(self.enclave.can_call(t) for t in THREADS))
    @rule(data=st.data(), extents=_EXTENTS, selector=st.integers(0, 2**64 - 1), reuse=st.booleans())
    def exit_call(self, data: st.DataObject, extents: list[bytes], selector: int, reuse: bool) -> None:
        self._call(self.enclave, data, extents, selector, reuse)

    def _call(self, side: _Side, data: st.DataObject, extents: list[bytes], selector: int, reuse: bool) -> None:
        thread = data.draw(st.sampled_from([t for t in THREADS if side.can_call(t)]), label="thread")
        call = Call(side.new_id(reuse), thread, selector, extents)
        frames = side.session.send_call(call)
        side.made_call(call)
        if side.role is Role.HOST:
            self.entered.add(thread)
        self._send_message(side, frames, extents, Call(call.call_id, thread, selector, list(extents)))

    def _can_answer(self) -> bool:
        return any(side.open and any(side.can_answer(t) for t in THREADS) for side in self.sides.values())

    @precondition(_can_answer)
    @rule(data=st.data(), extents=_EXTENTS, message=st.text(max_size=20))
    def answer(self, data: st.DataObject, extents: list[bytes], message: str) -> None:
        self._answer(data, extents, StatusCode.OK, message)

    @precondition(_can_answer)
    @rule(data=st.data(), extents=_EXTENTS, code=_CODES.filter(lambda code: code != StatusCode.OK),
          message=st.text(max_size=20))
    def fail(self, data: st.DataObject, extents: list[bytes], code: StatusCode, message: str) -> None:
        self._answer(data, extents, code, message)  # the extents are dropped: error results carry none

    def _answer(self, data: st.DataObject, extents: list[bytes], code: StatusCode, message: str) -> None:
        side = data.draw(st.sampled_from([side for side in self.sides.values()
                                          if side.open and any(side.can_answer(t) for t in THREADS)]), label="side")
        thread = data.draw(st.sampled_from([t for t in THREADS if side.can_answer(t)]), label="thread")
        top = side.top(thread)
        assert top is not None
        result = Result(top[1], thread, Status(code, message), extents)
        frames = side.session.send_result(result)
        side.answered(result)
        sent = list(extents) if code == StatusCode.OK else []
        self._send_message(side, frames, sent, Result(top[1], thread, result.status, sent))

    def _ended_threads(self) -> list[int]:
        # Threads that entered since they last ended and are idle now (ending others is legal but adds little).
        return sorted(t for t in self.entered if not self.host.stacks.get(t))

    @precondition(lambda self: self.host.open and self._ended_threads())
    @rule(data=st.data())
    def thread_gone(self, data: st.DataObject) -> None:
        thread = data.draw(st.sampled_from(self._ended_threads()), label="thread")
        self.entered.discard(thread)
        self._send(self.host, [self.host.session.send_thread_gone(thread)], ThreadGone(thread))

    @precondition(lambda self: self.steps >= 30 and any(side.open for side in self.sides.values()))
    @rule(data=st.data(), code=_CODES, message=st.text(max_size=20))
    def goodbye(self, data: st.DataObject, code: StatusCode, message: str) -> None:
        side = data.draw(st.sampled_from([side for side in self.sides.values() if side.open]), label="side")
        status = Status(code, message)
        self._send(side, [side.session.send_goodbye(status)], SessionEnded(status, by_peer=True))
        assert side.session.state is SessionState.CLOSED
        # Its half-received bodies are dropped at once; the rest of them, still on the way, will be ignored.
        assert side.session._transfers == {} and side.session._reassembly_bytes == 0

    @rule(data=st.data(), count=st.integers(1, 24))
    def deliver(self, data: st.DataObject, count: int) -> None:
        for _ in range(count):
            roles = [role for role, queue in self.inflight.items() if queue]
            if not roles:
                return
            role = data.draw(st.sampled_from(roles), label="to")
            self._deliver(role, data.draw(st.sampled_from(self._ready(role)), label="message"))

    @invariant()
    def sessions_agree_with_what_their_applications_saw(self) -> None:
        self.steps += 1
        for side in self.sides.values():
            for thread in set(THREADS) | set(side.stacks) | set(side.pending):
                assert side.session.calls_in_progress(thread) == side.expected_stack(thread)
            if not self.tainted:
                assert side.session.state is not SessionState.ERROR

    def teardown(self) -> None:
        if self.tainted:
            return
        # Everything sent arrives as sent, and leaves both sides in agreement.
        while any(self.inflight.values()):
            for role in Role:
                if self.inflight[role]:
                    self._deliver(role, self._ready(role)[-1])
        for side in self.sides.values():
            assert not side.pending or not side.open
        if self.host.open and self.enclave.open:
            for thread in THREADS:
                mine = [(not made, call_id) for made, call_id in self.host.stacks.get(thread, [])]
                assert self.enclave.session.calls_in_progress(thread) == mine
            assert self.host.session._reassembly_bytes == self.enclave.session._reassembly_bytes == 0


def _mutate(data: bytes, how: str, position: int, junk: bytes) -> bytes:
    if not data:
        return junk
    position %= len(data)
    if how == "flip":
        return data[:position] + bytes([data[position] ^ (1 << (len(junk) % 8))]) + data[position + 1:]
    if how == "truncate":
        return data[:position]
    if how == "insert":
        return data[:position] + junk + data[position:]
    return data[:position] + junk + data[position + len(junk):]  # overwrite


_MUTATIONS = st.tuples(st.sampled_from(["flip", "truncate", "insert", "overwrite"]), st.integers(0, 2**16),
                       st.binary(min_size=1, max_size=8))
_SMALL_IDS = st.one_of(st.integers(0, 4), st.just(2**64 - 1), st.integers(0, 2**64 - 1))
_ORDERS = st.permutations(CANONICAL).map(tuple)
_BODY_SIZES = st.lists(st.one_of(st.sampled_from([0, 1, 3000, 5000, 65536, 65537, 2**64 - 1]), st.integers(0, 2**20)),
                       max_size=3)
_HOSTILE_FRAMES = st.one_of(
    st.builds(hello_frame, st.integers(0, 3), st.binary(max_size=8)),
    st.builds(welcome_frame, st.integers(0, 3)),
    st.builds(call_frame, _SMALL_IDS, _SMALL_IDS, st.integers(0, 2**64 - 1), st.lists(st.binary(max_size=8),
                                                                                          max_size=3)),
    st.builds(result_frame, _SMALL_IDS, _SMALL_IDS, st.integers(-2**31, 2**31 - 1), st.text(max_size=8),
              st.lists(st.binary(max_size=8), max_size=3)),
    st.builds(call_header, _SMALL_IDS, _SMALL_IDS, st.integers(0, 4), _BODY_SIZES, st.integers(0, 3),
              st.lists(st.binary(max_size=8), max_size=2)),
    st.builds(result_header, _SMALL_IDS, _SMALL_IDS, st.integers(0, 4), _BODY_SIZES, st.sampled_from([0, 0, 2]),
              st.text(max_size=8), st.lists(st.binary(max_size=8), max_size=2)),
    st.builds(fragment_frame, st.integers(0, 4),
              st.one_of(st.sampled_from([0, 1, 4096, 4097, 4100, 65536, 65537, 2**64 - 1]), st.integers(0, 2**20)),
              st.one_of(st.binary(max_size=64), st.builds(bytes, st.sampled_from([4000, CHUNK, 4096]))), _ORDERS),
    st.builds(thread_gone_frame, _SMALL_IDS),
    st.builds(goodbye_frame, st.integers(-2**31, 2**31 - 1), st.text(max_size=8)),
)


class HostileSessionPair(SessionPair):
    """The same traffic, with garbage, mutated, replayed and forged frames injected into either side."""

    injected = 0
    forged_bodies = 0

    # A few injections, after some traffic has built up, into a side that is still open: the first violation ends
    # a side, so injecting earlier or more often would mostly test sessions that are already over.
    @precondition(lambda self: self.steps >= 6 and self.injected < 3 and any(side.open for side in
                                                                               self.sides.values()))
    @rule(data=st.data(), kind=st.sampled_from(["mutate in flight", "garbage", "forged", "aimed", "aimed", "replay"]),
          mutation=_MUTATIONS)
    def inject(self, data: st.DataObject, kind: str, mutation: tuple[str, int, bytes]) -> None:
        self.injected += 1
        targets = [role for role, side in self.sides.items() if side.open]
        if kind == "aimed" and any(self.sides[role].sent for role in targets):
            targets = [role for role in targets if self.sides[role].sent]
        role = data.draw(st.sampled_from(targets), label="target")
        side = self.sides[role]
        if kind == "aimed":
            # Forged with the ids the target really has in progress, so that it tests the matching rules rather than
            # bouncing off unknown ids: mostly results for its own calls (outer ones, or on the wrong thread), and
            # calls on busy threads or with ids in use, thread_gone for busy threads; some announcing a body.
            ids = sorted(side.sent) or [self.sides[r].next_id + 1 for r in Role]
            call_id = data.draw(st.one_of(st.sampled_from(ids), st.sampled_from(sorted(side.received) or ids)),
                                label="call id")
            thread = data.draw(st.sampled_from(THREADS), label="thread")
            transfer = data.draw(st.sampled_from(sorted({1, 2, 40} | {p.transfer for p in side.pending.values()})),
                                 label="transfer")
            hostile = data.draw(st.sampled_from([
                result_frame(call_id, thread), result_frame(call_id, thread, extents=[b"forged"]),
                result_frame(call_id, thread, code=int(StatusCode.ABORTED), message="forged"),
                result_header(call_id, thread, transfer, [5000]),
                result_header(call_id, thread, transfer, [5000], code=int(StatusCode.ABORTED)),
                result_frame(call_id, thread), call_frame(call_id, thread, extents=[b"forged"]),
                call_header(call_id, thread, transfer, [0, 5000]), thread_gone_frame(thread)]), label="aimed")
        elif kind == "mutate in flight" and self._ready(role):
            message = data.draw(st.sampled_from(self._ready(role)), label="message")
            hostile = _mutate(message.frames.popleft(), *mutation)  # instead of the frame it replaces
            message.started = True
            if not message.frames:
                self.inflight[role].remove(message)
        elif kind == "replay" and self.history:
            hostile = data.draw(st.sampled_from(self.history), label="replayed")[1]
        elif kind == "forged":
            hostile = data.draw(_HOSTILE_FRAMES, label="forged")
        else:
            hostile = data.draw(st.binary(max_size=64), label="garbage")
        self.tainted = True
        self._receive(side, hostile, _UNCHECKED)

    def _next_body(self, role: Role) -> _InFlight | None:
        """A message with a body that may start next on the stream to `role`."""
        ready = self._ready(role)
        return ready[-1] if ready and not ready[-1].started and len(ready[-1].frames) > 1 else None

    def _can_forge_body(self, role: Role) -> bool:
        side = self.sides[role]
        return side.open and bool(side.pending or self._next_body(role))

    @precondition(lambda self: self.forged_bodies < 2 and any(self._can_forge_body(role) for role in Role))
    @rule(data=st.data(), how=st.sampled_from(["complete", "complete", "piece", "short", "too long", "wrong size",
                                               "empty"]), order=_ORDERS)
    def forge_body(self, data: st.DataObject, how: str, order: tuple[int, ...]) -> None:
        """Fragments for a body the target really has coming (its header let in first if need be), in either decoding
        path: the rest of it forged in full chunks (the call or result must still reach the one it belongs to), or a
        stray byte, a piece a byte short of a full chunk (or of the rest), a byte too much, the wrong size or
        nothing, each a violation."""
        self.forged_bodies += 1
        role = data.draw(st.sampled_from([role for role in Role if self._can_forge_body(role)]), label="target")
        side = self.sides[role]
        if not side.pending:
            message = self._next_body(role)
            assert message is not None
            self._deliver(role, message)
            if not side.pending:
                return  # refused: the target was already off the rails
        target = data.draw(st.sampled_from(sorted(side.pending.values(), key=lambda p: p.transfer)), label="body")
        # What is left of it (the data of its fragments still on the way; all of it, if the header was forged).
        transfer = side.session._transfers[target.transfer]
        assert transfer.total == target.total
        remaining = target.total - transfer.received
        full = min(remaining, CHUNK)
        pieces = {"complete": [CHUNK] * (remaining // CHUNK) + ([remaining % CHUNK] if remaining % CHUNK else []),
                  "piece": [1], "short": [full - 1], "wrong size": [1], "empty": [0],
                  "too long": [CHUNK] * ((remaining - 1) // CHUNK) + [(remaining - 1) % CHUNK + 2]}[how]
        total = target.total + 1 if how == "wrong size" else target.total
        words = {"complete": None, "piece": "a short fragment (1 bytes)",
                 "short": f"a short fragment ({full - 1} bytes)", "too long": "is longer than its declared",
                 "wrong size": "changed its size", "empty": "an empty fragment"}[how]
        if how in ("piece", "short") and pieces[-1] in (0, remaining):
            words = "an empty fragment" if pieces[-1] == 0 else None  # a body a byte long has no short piece
        self.tainted = True
        events: list[Event] = []
        for size in pieces:
            assert not events, "the body was over before the last forged piece"
            events = self._receive(side, fragment_frame(target.transfer, total, b"\xee" * size, order), _UNCHECKED)
        if words is None:
            # The whole body, forged or not, completes the call or result it was announced for (observe checked it).
            assert len(events) == 1 and isinstance(events[0], (Call, Result)), events
            assert (type(events[0]), events[0].call_id) == (target.kind, target.call_id)
            assert b"".join(events[0].extents).endswith(b"\xee" * remaining)
        else:
            assert len(events) == 1 and isinstance(events[0], SessionEnded) and not events[0].by_peer, events
            assert words in events[0].status.message and f"transfer {target.transfer}" in events[0].status.message, (
                words, events[0].status.message)
        assert target.transfer not in side.session._transfers


def test_random_valid_traffic_is_delivered_exactly_and_never_mis_routed() -> None:
    run_state_machine_as_test(SessionPair, settings=settings(
        max_examples=150, stateful_step_count=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]))


def test_random_traffic_with_hostile_frames_never_crashes_or_mis_routes() -> None:
    run_state_machine_as_test(HostileSessionPair, settings=settings(
        max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]))


@st.composite
def _nested_pairs(draw: st.DrawFn) -> tuple[Session, Session]:
    """An open pair with a random stack of nested calls (entry, exit, entry, ...) on each of a few threads, some
    calls answered, the ids of both directions drawn from overlapping small ranges."""
    host, enclave = open_pair()
    used = {True: set(), False: set()}  # ids in progress, per direction (True: host -> enclave)
    for thread in draw(st.lists(st.sampled_from(THREADS), unique=True, max_size=3)):
        for level in range(draw(st.integers(0, 5))):
            entry = level % 2 == 0
            call_id = draw(st.integers(0, 12).filter(lambda i, entry=entry: i not in used[entry]))
            used[entry].add(call_id)
            do_call(host if entry else enclave, enclave if entry else host, call_id, thread)
        stack = host.calls_in_progress(thread)
        for made_by_host, call_id in reversed(stack[len(stack) - draw(st.integers(0, len(stack))):]):
            used[made_by_host].discard(call_id)
            answerer, caller = (enclave, host) if made_by_host else (host, enclave)
            do_result(answerer, caller, call_id, thread)
    return host, enclave


@settings(max_examples=200, deadline=None)
@given(pair=_nested_pairs(), on_host=st.booleans(), call_id=st.integers(0, 13), thread=st.sampled_from(THREADS),
       is_result=st.booleans())
def test_a_forged_frame_is_accepted_exactly_when_the_matching_rules_allow_it(
        pair: tuple[Session, Session], on_host: bool, call_id: int, thread: int, is_result: bool) -> None:
    host, enclave = pair
    session = host if on_host else enclave
    stack = session.calls_in_progress(thread)
    top = stack[-1] if stack else None
    mine = {i for t in THREADS for made, i in session.calls_in_progress(t) if made}
    theirs = {i for t in THREADS for made, i in session.calls_in_progress(t) if not made}
    if is_result:
        events = session.receive(result_frame(call_id, thread, extents=[b"r"]))
        if top == (True, call_id):
            assert events == [Result(call_id, thread, Status(), [b"r"])]
            assert session.calls_in_progress(thread) == stack[:-1]
        else:
            assert_violation(session, events, StatusCode.INTERNAL, f"a result for call {call_id}",
                             "not in progress" if call_id not in mine else "not the innermost call")
        return
    events = session.receive(call_frame(call_id, thread, extents=[b"c"]))
    allowed = call_id not in theirs and (top is not None and top[0] if on_host else top is None or top[0])
    if allowed:
        assert events == [Call(call_id, thread, 0, [b"c"])]
        assert session.calls_in_progress(thread) == [*stack, (False, call_id)]
    else:
        assert_violation(session, events, StatusCode.INTERNAL, "already in progress" if call_id in theirs else
                         "thread")


def _reachable(name: str) -> Session:
    """A session in one of the states a peer can find it in."""
    role, _, state = name.partition(" ")
    if state == "fresh":
        return Session(Role.HOST if role == "host" else Role.ENCLAVE, SMALL)
    if state == "handshaking":
        return _host_awaiting_welcome() if role == "host" else _enclave_hello_received()
    host, enclave = open_pair(SMALL)
    session = host if role == "host" else enclave
    if state == "busy":
        # Nested calls in progress on two threads, and part of a body received each way (a header and a fragment).
        do_call(host, enclave, 1, 1)
        do_call(enclave, host, 1, 1)
        do_call(host, enclave, 2, 1)
        do_call(host, enclave, 3, 2)
        do_result(enclave, host, 3, 2)
        assert pump(host.send_call(Call(4, 3, 0, [b"x" * 9000]))[:2], enclave) == []
        assert pump(enclave.send_call(Call(2, 1, 0, [b"y" * 9000]))[:2], host) == []
    elif state == "closed":
        session.receive(goodbye_frame())
    elif state == "failed":
        session.receive(b"\xff")
    return session


_STATES = [f"{role} {state}" for role in ("host", "enclave")
           for state in ("fresh", "handshaking", "open", "busy", "closed", "failed")]
# Frames a peer could send: valid ones of every kind (headers and fragments of real bodies, among them some of the
# transfers the busy states have in progress), and the same mutated.
_VALID = [hello_frame(), welcome_frame(), call_frame(1, 1), call_frame(5, 1, 2, [b"a", b"b"]), result_frame(1, 1),
          result_frame(2, 1, extents=[b"r"]), result_frame(2, 1, code=5, message="m"), thread_gone_frame(1),
          thread_gone_frame(3), goodbye_frame(), goodbye_frame(14, "bye"),
          call_header(9, 3, 2, [4000, 0, 5000]), *split(b"z" * 9000, 1), *split(b"z" * 9000, 2, order=REORDERED),
          result_header(2, 1, 2, [9000]), result_header(4, 3, 1, [1, 8999]),
          *split(b"z" * 9000, 1, chunk=4000, order=REORDERED)]
_FUZZ_FRAMES = st.one_of(
    st.binary(max_size=200),
    _HOSTILE_FRAMES,
    st.sampled_from(_VALID),
    st.builds(_mutate, st.sampled_from(_VALID), *(st.sampled_from(["flip", "truncate", "insert", "overwrite"]),
                                                  st.integers(0, 2**16), st.binary(min_size=1, max_size=8))),
)


@settings(max_examples=200, deadline=None)
@given(state=st.sampled_from(_STATES), frames=st.lists(_FUZZ_FRAMES, max_size=8))
def test_receive_never_raises_in_any_reachable_state(state: str, frames: list[bytes]) -> None:
    session = _reachable(state)
    for data in frames:
        check_receive(session, data)


@settings(max_examples=100, deadline=None)
@given(role=st.sampled_from([Role.HOST, Role.ENCLAVE]), data=st.binary(max_size=5000))
def test_receive_never_raises_on_arbitrary_bytes(role: Role, data: bytes) -> None:
    check_receive(Session(role, SMALL), data)
