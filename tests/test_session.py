"""The sans-I/O session core: a HOST and an ENCLAVE `Session` wired back to back by handing frames over, no I/O.

Plain tests pin each rule of the protocol (the handshake, calls and results, thread matching, fragmentation, limits,
goodbye) and the status a violation of it ends the session with; hypothesis drives both sides through random
interleavings of valid traffic, with and without hostile frames, and fuzzes `receive` in every reachable state.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pytest
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
from asylo.session.connection import Event
from asylo.status import EnclaveUnavailable, FailedPreconditionError, ResourceExhaustedError, Status, StatusCode

# Small frames so that fragmentation is cheap to exercise.
SMALL = SessionLimits(max_frame_size=4096, max_message_size=65536, max_reassembly_bytes=131072)
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


def fragment_frame(transfer_id: int, total_size: int, data: bytes) -> bytes:
    return frame(fragment=session_pb2.Fragment(transfer_id=transfer_id, total_size=total_size, data=data))


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


def split(data: bytes, transfer_id: int, chunk: int = 3000) -> list[bytes]:
    """Fragments of `data` as a sender would make them (any chunk size will do for the receiver)."""
    return [fragment_frame(transfer_id, len(data), data[i:i + chunk]) for i in range(0, len(data), chunk)]


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


def encoded_call_size(call: Call) -> int:
    return len(frame(call=session_pb2.CallFrame(call_id=call.call_id, thread=call.thread, selector=call.selector,
                                                extents=call.extents)))


def call_of_size(size: int, call_id: int = 1, thread: int = 1) -> Call:
    """A call whose encoded frame is exactly `size` bytes."""
    for length in range(size, 0, -1):
        call = Call(call_id, thread, 0, [b"\xab" * length])
        if encoded_call_size(call) == size:
            return call
    raise AssertionError(f"no call of {size} bytes")


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

def test_handshake_round_trips_the_token_the_load_config_and_the_identity() -> None:
    host, enclave = Session(Role.HOST), Session(Role.ENCLAVE)
    assert (host.state, enclave.state) == (SessionState.IDLE, SessionState.AWAITING_HELLO)

    hello = host.send_hello(b"\x00one-time token\xff", LOAD_CONFIG, handshake=b"host share")
    assert host.state is SessionState.AWAITING_WELCOME
    [event] = enclave.receive(hello)
    assert event == HelloReceived(PROTOCOL_VERSION, b"\x00one-time token\xff", LOAD_CONFIG, b"host share")
    assert isinstance(event, HelloReceived) and event.load_config.config.data == b"\x00config\xff"
    assert enclave.state is SessionState.HELLO_RECEIVED

    welcome = enclave.send_welcome(MEASUREMENT, SIGNER, "démo", handshake=b"evidence")
    assert enclave.state is SessionState.OPEN
    assert host.receive(welcome) == [WelcomeReceived(PROTOCOL_VERSION, MEASUREMENT, SIGNER, "démo", b"evidence")]
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
    for thread in (1, 2):
        do_call(host, enclave, thread, thread)
        do_result(enclave, host, thread, thread)
    # Idle threads still count: the enclave keeps a thread until the host says it ended.
    assert_violation(enclave, pump(host.send_call(Call(3, 3, 0, [])), enclave), StatusCode.RESOURCE_EXHAUSTED,
                     "more than max_threads (2) threads")

    host, enclave = open_pair(SessionLimits(max_threads=2))
    for thread in (1, 2):
        do_call(host, enclave, thread, thread)
        do_result(enclave, host, thread, thread)
    assert enclave.receive(host.send_thread_gone(1)) == [ThreadGone(1)]
    do_call(host, enclave, 3, 3)
    do_call(host, enclave, 2, 2)  # a known thread is not a new one


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


# -- fragmentation ---------------------------------------------------------------------------------------------------

def _payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.mark.parametrize("sizes", [[4097], [10_000], [1, 30_000, 0, 30_000], [65_400]])
def test_large_calls_and_results_round_trip_in_fragments_both_ways(sizes: list[int]) -> None:
    host, enclave = open_pair(SMALL)
    extents = [_payload(size, seed) for seed, size in enumerate(sizes)]
    for sender, receiver, call_id in ((host, enclave, 1), (enclave, host, 2)):
        call = Call(call_id, 1, 3, extents)
        frames = sender.send_call(call)
        assert len(frames) > 1 and all(len(data) <= SMALL.max_frame_size for data in frames)
        for data in frames[:-1]:
            assert receiver.receive(data) == []
        assert receiver.receive(frames[-1]) == [call]
    for sender, receiver, call_id in ((host, enclave, 2), (enclave, host, 1)):
        frames = sender.send_result(Result(call_id, 1, Status(), extents[::-1]))
        assert len(frames) > 1
        assert pump(frames, receiver) == [Result(call_id, 1, Status(), extents[::-1])]
    assert host.calls_in_progress(1) == [] and enclave.calls_in_progress(1) == []
    assert enclave._reassembly_bytes == host._reassembly_bytes == 0


def test_fragmentation_starts_just_above_max_frame_size() -> None:
    host, enclave = open_pair(SMALL)
    exact, over = call_of_size(4096), call_of_size(4097, call_id=2, thread=2)
    [whole] = host.send_call(exact)
    assert len(whole) == 4096 and enclave.receive(whole) == [exact]
    frames = host.send_call(over)
    assert len(frames) == 2
    assert pump(frames, enclave) == [over]


def test_a_message_of_exactly_max_message_size_travels() -> None:
    host, enclave = open_pair(SMALL)
    call = call_of_size(65536)
    assert pump(host.send_call(call), enclave) == [call]


def test_sending_a_message_over_max_message_size_raises_and_changes_nothing() -> None:
    host, enclave = open_pair(SMALL)
    with pytest.raises(ResourceExhaustedError, match="a call of 65537 bytes exceeds max_message_size"):
        host.send_call(call_of_size(65537))
    assert host.calls_in_progress(1) == [] and host.is_open
    small = Call(1, 1, 0, [b"fine"])  # the same id and thread work afterwards
    assert pump(host.send_call(small), enclave) == [small]

    with pytest.raises(ResourceExhaustedError, match=r"a result of \d+ bytes exceeds max_message_size"):
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


def test_a_truncated_fragment_is_a_violation() -> None:
    host, enclave = open_pair(SMALL)
    frames = host.send_call(Call(1, 1, 0, [_payload(10_000)]))
    assert enclave.receive(frames[0]) == []
    assert_violation(enclave, enclave.receive(frames[1][:-10]), StatusCode.INTERNAL, "undecodable frame")


def test_a_transfer_longer_than_declared_is_a_violation() -> None:
    _, enclave = open_pair(SMALL)
    assert enclave.receive(fragment_frame(1, 5000, b"x" * 3000)) == []
    assert_violation(enclave, enclave.receive(fragment_frame(1, 5000, b"x" * 3000)), StatusCode.INTERNAL,
                     "transfer 1 is longer than its declared 5000 bytes")


def test_a_transfer_that_changes_its_size_is_a_violation() -> None:
    _, enclave = open_pair(SMALL)
    assert enclave.receive(fragment_frame(1, 5000, b"x" * 3000)) == []
    assert_violation(enclave, enclave.receive(fragment_frame(1, 6000, b"x" * 1000)), StatusCode.INTERNAL,
                     "transfer 1 changed its size from 5000 to 6000")


@pytest.mark.parametrize("first", [True, False], ids=["first", "later"])
def test_an_empty_fragment_is_a_violation(first: bool) -> None:
    _, enclave = open_pair(SMALL)
    if not first:
        assert enclave.receive(fragment_frame(1, 5000, b"x" * 3000)) == []
    assert_violation(enclave, enclave.receive(fragment_frame(1, 5000, b"")), StatusCode.INTERNAL,
                     "an empty fragment in transfer 1")


def test_fragments_that_reassemble_to_garbage_are_a_violation() -> None:
    _, enclave = open_pair(SMALL)
    assert_violation(enclave, pump(split(b"\xff" * 5000, 1), enclave), StatusCode.INTERNAL, "undecodable frame")


@pytest.mark.parametrize("kind", ["hello", "welcome", "fragment", "thread_gone", "goodbye"])
def test_only_calls_and_results_may_be_fragmented(kind: str) -> None:
    inner = {
        "hello": hello_frame(token=b"t" * 5000),
        "welcome": padded(welcome_frame(), 5000),
        "fragment": fragment_frame(9, 60_000, b"y" * 5000),
        "thread_gone": padded(thread_gone_frame(1), 5000),
        "goodbye": padded(goodbye_frame(), 5000),
    }[kind]
    for session in open_pair(SMALL):
        assert_violation(session, pump(split(inner, 1), session), StatusCode.INTERNAL,
                         f"a fragmented {kind} frame (only calls and results are fragmented)")


@pytest.mark.parametrize("total", [65537, 2**64 - 1])
def test_a_declared_size_over_max_message_size_is_a_violation(total: int) -> None:
    _, enclave = open_pair(SMALL)
    assert_violation(enclave, enclave.receive(fragment_frame(1, total, b"x" * 100)), StatusCode.RESOURCE_EXHAUSTED,
                     f"a fragmented message of {total} bytes", "at most max_message_size 65536")


@pytest.mark.parametrize("total", [0, 1, 100, 4096])
def test_a_declared_size_that_fits_one_frame_is_a_violation(total: int) -> None:
    host, _ = open_pair(SMALL)
    assert_violation(host, host.receive(fragment_frame(1, total, b"x")), StatusCode.RESOURCE_EXHAUSTED,
                     f"a fragmented message of {total} bytes", "more than max_frame_size")


def test_reassembly_is_bounded_by_max_reassembly_bytes() -> None:
    host, enclave = open_pair(SMALL)
    first, second, third = (host.send_call(Call(n, n, 0, [_payload(60_000, n)])) for n in (1, 2, 3))
    assert enclave.receive(first[0]) == [] and enclave.receive(second[0]) == []  # 120 000 bytes held
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
    assert enclave.receive(fragment_frame(1, 5000, b"x")) == []
    assert enclave.receive(fragment_frame(2, 5000, b"x")) == []
    assert_violation(enclave, enclave.receive(fragment_frame(3, 5000, b"x")), StatusCode.RESOURCE_EXHAUSTED,
                     "too many fragmented messages in progress")


def test_a_transfer_id_may_be_reused_once_finished() -> None:
    _, enclave = open_pair(SMALL)
    for call_id in (1, 2):
        call = Call(call_id, call_id, 0, [_payload(6000, call_id)])
        data = frame(call=session_pb2.CallFrame(call_id=call_id, thread=call_id, extents=call.extents))
        assert pump(split(data, transfer_id=7), enclave) == [call]


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
_SIZES = st.one_of(st.integers(0, 40), st.sampled_from([4000, 4050, 4096, 4097]), st.integers(4000, 14_000))
# Extents as (seed, size): the bytes themselves come from a seeded generator, so big payloads stay cheap to draw.
_EXTENTS = st.lists(st.tuples(st.integers(0, 2**16), _SIZES), max_size=3).map(
    lambda specs: [_payload(size, seed) for seed, size in specs])
_CODES = st.sampled_from(list(StatusCode))
_UNCHECKED: list[Event] = [SessionEnded(Status(StatusCode.UNKNOWN, "unchecked"), by_peer=False)]


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
        return events
    [end] = ended
    if end.by_peer:
        assert session.state is SessionState.CLOSED and end.goodbye is None
    else:
        assert session.state is SessionState.ERROR and session.end_status == end.status
        assert end.status.code != StatusCode.OK and end.status.message.startswith("protocol violation: ")
        assert_goodbye(end.goodbye, end.status)
        assert session.receive(data) == []
    return events


@dataclass
class _InFlight:
    frames: deque[bytes]
    expected: Event  # what the receiver reports when the last frame arrives


class _Side:
    """What the application on one side knows: the calls it made and the calls it received, per thread (innermost
    last), built only from what it sent and the events its session gave it."""

    def __init__(self, session: Session, first_id: int) -> None:
        self.session = session
        self.role = session.role
        self.stacks: dict[int, list[tuple[bool, int]]] = {}
        self.sent: dict[int, Call] = {}
        self.received: set[int] = set()
        self.next_id = first_id
        self.reusable: list[int] = []

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

    def observe(self, event: Event) -> None:
        """Check that `event` is routed where it belongs, and note it."""
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
            self.stacks.pop(event.thread, None)
        else:
            assert isinstance(event, SessionEnded), f"unexpected {event!r} after the handshake"


class SessionPair(RuleBasedStateMachine):
    """A HOST and an ENCLAVE session back to back, driven through random valid traffic on several threads, frames
    delivered in stream order per direction with the two directions interleaved arbitrarily."""

    def __init__(self) -> None:
        super().__init__()
        host, enclave = open_pair(SMALL)
        self.sides = {Role.HOST: _Side(host, 0), Role.ENCLAVE: _Side(enclave, 0)}
        # Frames on their way to each side, in stream order.
        self.inflight: dict[Role, deque[_InFlight]] = {Role.HOST: deque(), Role.ENCLAVE: deque()}
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
        assert frames and all(len(data) <= SMALL.max_frame_size for data in frames)
        self.inflight[self.peer(side).role].append(_InFlight(deque(frames), expected))

    def _receive(self, side: _Side, data: bytes, expected: list[Event]) -> None:
        self.history.append((side.role, data))
        if side.session.state in TERMINAL:
            expected = []  # a side that has ended takes nothing more
        events = check_receive(side.session, data)
        if not self.tainted and expected is not _UNCHECKED:
            assert events == expected
        for event in events:
            side.observe(event)
        if events and isinstance(events[0], SessionEnded) and not events[0].by_peer:
            assert self.tainted, f"a violation from valid traffic: {events[0].status}"
            assert events[0].goodbye is not None
            # Tell the peer, as a transport would.
            self._send(side, [events[0].goodbye], SessionEnded(events[0].status, by_peer=True))

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
        self._send(side, frames, Call(call.call_id, thread, selector, list(extents)))

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
        self._send(side, frames, Result(top[1], thread, result.status, list(extents) if code == StatusCode.OK else []))

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

    @rule(data=st.data(), count=st.integers(1, 24))
    def deliver(self, data: st.DataObject, count: int) -> None:
        for _ in range(count):
            roles = [role for role, queue in self.inflight.items() if queue]
            if not roles:
                return
            role = data.draw(st.sampled_from(roles), label="to")
            queue = self.inflight[role]
            head = queue[0]
            data_frame = head.frames.popleft()
            if not head.frames:
                queue.popleft()
            self._receive(self.sides[role], data_frame, [head.expected] if not head.frames else [])

    @invariant()
    def sessions_agree_with_what_their_applications_saw(self) -> None:
        self.steps += 1
        for side in self.sides.values():
            for thread in set(THREADS) | set(side.stacks):
                assert side.session.calls_in_progress(thread) == side.stacks.get(thread, [])
            if not self.tainted:
                assert side.session.state is not SessionState.ERROR

    def teardown(self) -> None:
        if self.tainted:
            return
        # Everything sent arrives as sent, and leaves both sides in agreement.
        while any(self.inflight.values()):
            for role, queue in self.inflight.items():
                if queue:
                    head = queue[0]
                    data = head.frames.popleft()
                    if not head.frames:
                        queue.popleft()
                    self._receive(self.sides[role], data, [head.expected] if not head.frames else [])
        if self.host.open and self.enclave.open:
            for thread in THREADS:
                mine = [(not made, call_id) for made, call_id in self.host.stacks.get(thread, [])]
                assert self.enclave.session.calls_in_progress(thread) == mine


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
_HOSTILE_FRAMES = st.one_of(
    st.builds(hello_frame, st.integers(0, 3), st.binary(max_size=8)),
    st.builds(welcome_frame, st.integers(0, 3)),
    st.builds(call_frame, _SMALL_IDS, _SMALL_IDS, st.integers(0, 2**64 - 1), st.lists(st.binary(max_size=8),
                                                                                          max_size=3)),
    st.builds(result_frame, _SMALL_IDS, _SMALL_IDS, st.integers(-2**31, 2**31 - 1), st.text(max_size=8),
              st.lists(st.binary(max_size=8), max_size=3)),
    st.builds(fragment_frame, st.integers(0, 3),
              st.one_of(st.sampled_from([0, 1, 4096, 4097, 4100, 65536, 65537, 2**64 - 1]), st.integers(0, 2**20)),
              st.one_of(st.binary(max_size=64), st.builds(bytes, st.sampled_from([4000, 4096])))),
    st.builds(thread_gone_frame, _SMALL_IDS),
    st.builds(goodbye_frame, st.integers(-2**31, 2**31 - 1), st.text(max_size=8)),
)


class HostileSessionPair(SessionPair):
    """The same traffic, with garbage, mutated, replayed and forged frames injected into either side."""

    injected = 0

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
        queue = self.inflight[role]
        side = self.sides[role]
        if kind == "aimed":
            # Forged with the ids the target really has in progress, so that it tests the matching rules rather than
            # bouncing off unknown ids: mostly results for its own calls (outer ones, or on the wrong thread), and
            # calls on busy threads or with ids in use, thread_gone for busy threads.
            ids = sorted(side.sent) or [self.sides[r].next_id + 1 for r in Role]
            call_id = data.draw(st.one_of(st.sampled_from(ids), st.sampled_from(sorted(side.received) or ids)),
                                label="call id")
            thread = data.draw(st.sampled_from(THREADS), label="thread")
            hostile = data.draw(st.sampled_from([
                result_frame(call_id, thread), result_frame(call_id, thread, extents=[b"forged"]),
                result_frame(call_id, thread, code=int(StatusCode.ABORTED), message="forged"),
                result_frame(call_id, thread), call_frame(call_id, thread, extents=[b"forged"]),
                thread_gone_frame(thread)]), label="aimed")
        elif kind == "mutate in flight" and queue:
            head = queue[0]
            hostile = _mutate(head.frames.popleft(), *mutation)  # instead of the frame it replaces
            if not head.frames:
                queue.popleft()
        elif kind == "replay" and self.history:
            hostile = data.draw(st.sampled_from(self.history), label="replayed")[1]
        elif kind == "forged":
            hostile = data.draw(_HOSTILE_FRAMES, label="forged")
        else:
            hostile = data.draw(st.binary(max_size=64), label="garbage")
        self.tainted = True
        self._receive(self.sides[role], hostile, _UNCHECKED)


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
        # Nested calls in progress on two threads, and half a transfer received each way.
        do_call(host, enclave, 1, 1)
        do_call(enclave, host, 1, 1)
        do_call(host, enclave, 2, 1)
        do_call(host, enclave, 3, 2)
        do_result(enclave, host, 3, 2)
        enclave.receive(host.send_call(Call(4, 3, 0, [b"x" * 9000]))[0])
        host.receive(enclave.send_call(Call(2, 1, 0, [b"y" * 9000]))[0])
    elif state == "closed":
        session.receive(goodbye_frame())
    elif state == "failed":
        session.receive(b"\xff")
    return session


_STATES = [f"{role} {state}" for role in ("host", "enclave")
           for state in ("fresh", "handshaking", "open", "busy", "closed", "failed")]
# Frames a peer could send: valid ones of every kind (some fragments of a real call), and the same mutated.
_VALID = [hello_frame(), welcome_frame(), call_frame(1, 1), call_frame(5, 1, 2, [b"a", b"b"]), result_frame(1, 1),
          result_frame(2, 1, extents=[b"r"]), result_frame(2, 1, code=5, message="m"), thread_gone_frame(1),
          thread_gone_frame(3), goodbye_frame(), goodbye_frame(14, "bye"),
          *split(frame(call=session_pb2.CallFrame(call_id=9, thread=3, extents=[b"z" * 9000])), 1),
          *split(frame(result=session_pb2.ResultFrame(call_id=2, thread=1, extents=[b"z" * 9000])), 2)]
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
