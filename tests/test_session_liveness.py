"""Liveness in the sans-I/O session core: pings due on the transport's clock, pongs counting what arrived, a peer
that stops answering or lost frames ending the session — and, with a SessionLink and HostThreads but no network,
every waiting call failing when it does."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable

import pytest

from asylo.primitives.matching import Call, HostThreads, Result
from asylo.proto import enclave_pb2, session_pb2
from asylo.remote.link import Outbox, SessionLink, keep_alive
from asylo.session import (
    HelloReceived,
    PeerUnresponsive,
    Role,
    Session,
    SessionEnded,
    SessionLimits,
    SessionState,
    WelcomeReceived,
)
from asylo.session.connection import _MAX_PONGS_OWED, Event
from asylo.status import EnclaveUnavailable, Status, StatusCode

LOAD_CONFIG = enclave_pb2.EnclaveLoadConfig(name="demo")
LIMITS = SessionLimits()  # interval 1 s, deadline 3 s


def open_pair(limits: SessionLimits | None = None) -> tuple[Session, Session]:
    host, enclave = Session(Role.HOST, limits), Session(Role.ENCLAVE, limits)
    assert isinstance(enclave.receive(host.send_hello(b"token", LOAD_CONFIG))[0], HelloReceived)
    assert isinstance(host.receive(enclave.send_welcome(b"\x11" * 32, b"\x22" * 32, "demo"))[0], WelcomeReceived)
    return host, enclave


def wire(sender: Session, frames: Iterable[bytes], receiver: Session) -> list[Event]:
    """Frames through the transport: sealed by the sender in order (counted), then received."""
    events: list[Event] = []
    for data in frames:
        events += receiver.receive(sender.seal(data))
    return events


def parsed(data: bytes) -> session_pb2.Frame:
    return session_pb2.Frame.FromString(data)


def ping_of(session: Session, now: float) -> bytes:
    [ping] = session.tick(now)
    assert parsed(ping).WhichOneof("kind") == "ping"
    return ping


def assert_ended(session: Session, ended: SessionEnded, code: StatusCode, *words: str) -> None:
    assert not ended.by_peer and ended.status.code == code, ended.status
    for word in words:
        assert word in ended.status.message, (word, ended.status.message)
    assert session.state is SessionState.ERROR and session.end_status == ended.status
    assert ended.goodbye is not None and parsed(ended.goodbye).goodbye.code == int(code)
    with pytest.raises(EnclaveUnavailable):
        session.send_call(Call(99, 99, 0, []))
    assert session.tick(10**6) == []  # an ended session pings no more


def test_no_pings_before_the_session_is_open() -> None:
    host, enclave = Session(Role.HOST), Session(Role.ENCLAVE)
    assert host.tick(100.0) == [] and enclave.tick(100.0) == []
    enclave.receive(host.send_hello(b"token", LOAD_CONFIG))
    assert host.tick(200.0) == [] and enclave.tick(200.0) == []  # awaiting the welcome / hello received


def test_a_ping_is_due_every_interval_from_the_first_tick_and_one_at_a_time() -> None:
    host, enclave = open_pair()
    assert host.tick(10.0) == []  # the interval counts from here
    assert host.tick(10.9) == []
    ping = parsed(ping_of(host, 11.0)).ping
    assert ping.id == 1 and ping.received == 0
    assert host.tick(11.5) == [] and host.tick(12.5) == []  # the first still in flight
    assert enclave.tick(0.0) == []  # each side keeps its own clock


def test_an_answered_ping_counts_what_arrived_and_the_next_follows_an_interval_later() -> None:
    host, enclave = open_pair()
    host.tick(0.0)
    # Traffic both ways first: the counts cover it.
    assert wire(host, host.send_call(Call(1, 1, 7, [b"x"])), enclave) == [Call(1, 1, 7, [b"x"])]
    assert wire(enclave, enclave.send_result(Result(1, 1, Status(), [b"y"])), host) == [Result(1, 1, Status(), [b"y"])]
    assert wire(host, [ping_of(host, 1.0)], enclave) == []  # a ping is no event
    [pong] = enclave.data_to_send()
    assert enclave.data_to_send() == []
    answer = parsed(pong).pong
    assert (answer.id, answer.received) == (1, 2)  # the call and the ping itself
    assert wire(enclave, [pong], host) == []
    assert host.is_open and enclave.is_open
    assert host.tick(1.9) == []
    assert parsed(ping_of(host, 2.0)).ping == session_pb2.Ping(id=2, received=2)  # the result and the pong
    # Pings and pongs are records like any other, but no sign that the peer is doing anything.
    assert enclave.received == 2 and enclave.traffic_received == 1
    assert host.received == 2 and host.traffic_received == 1


def test_a_ping_unanswered_past_the_deadline_ends_the_session_unavailable() -> None:
    host, enclave = open_pair()
    host.tick(0.0)
    wire(host, host.send_call(Call(1, 1, 7, [])), enclave)
    host.seal(ping_of(host, 1.0))  # written, never answered
    assert host.tick(1.0 + LIMITS.ping_deadline) == []  # at the deadline: still waiting
    with pytest.raises(PeerUnresponsive) as raised:
        host.tick(1.0 + LIMITS.ping_deadline + 0.01)
    assert isinstance(raised.value, EnclaveUnavailable)
    assert_ended(host, raised.value.ended, StatusCode.UNAVAILABLE, "no answer to a ping for 3 s")
    assert host.calls_in_progress(1) == [(True, 1)]  # the transport fails the waiting call (see below)


def test_a_late_pong_after_the_end_changes_nothing() -> None:
    host, enclave = open_pair()
    host.tick(0.0)
    wire(host, [ping_of(host, 1.0)], enclave)
    with pytest.raises(PeerUnresponsive):
        host.tick(5.0)
    assert wire(enclave, enclave.data_to_send(), host) == []
    assert host.state is SessionState.ERROR


def test_a_last_record_lost_on_the_way_makes_the_pong_disagree() -> None:
    """The enclave's result never arrives; its next ping's pong counts one frame fewer than it sent."""
    host, enclave = open_pair()
    wire(host, host.send_call(Call(1, 1, 7, [])), enclave)
    enclave.tick(0.0)
    for data in enclave.send_result(Result(1, 1, Status(), [b"lost"])):
        enclave.seal(data)  # written, then dropped by the network
    wire(enclave, [ping_of(enclave, 1.0)], host)
    [ended] = wire(host, host.data_to_send(), enclave)
    assert isinstance(ended, SessionEnded)
    assert_ended(enclave, ended, StatusCode.DATA_LOSS, "received 1 frames up to ping 1", "frames were lost")


def test_a_frame_lost_right_before_the_ping_is_caught_by_the_next_one() -> None:
    """Sealed between the tick and the ping, the lost frame is not yet one the first pong must count."""
    host, enclave = open_pair()
    host.tick(0.0)
    ping = ping_of(host, 1.0)
    host.seal(host.send_thread_gone(5))  # written after the tick, before the ping; dropped
    wire(host, [ping], enclave)
    assert wire(enclave, enclave.data_to_send(), host) == [] and host.is_open
    wire(host, [ping_of(host, 2.0)], enclave)
    [ended] = wire(enclave, enclave.data_to_send(), host)
    assert isinstance(ended, SessionEnded)
    assert_ended(host, ended, StatusCode.DATA_LOSS, "frames were lost")


def test_a_ping_claiming_more_frames_than_were_sent_ends_the_session() -> None:
    host, enclave = open_pair()
    lie = session_pb2.Frame(ping=session_pb2.Ping(id=1, received=5)).SerializeToString()
    [ended] = wire(host, [lie], enclave)
    assert isinstance(ended, SessionEnded)
    assert_ended(enclave, ended, StatusCode.DATA_LOSS, "received 5 frames, but 0 were sent")


def test_a_ping_whose_count_goes_back_ends_the_session() -> None:
    host, enclave = open_pair()
    enclave.tick(0.0)
    wire(enclave, [ping_of(enclave, 1.0)], host)
    wire(host, host.data_to_send(), enclave)
    host.tick(0.0)
    wire(host, [ping_of(host, 1.0)], enclave)  # received 1 (the enclave's ping)
    wire(enclave, enclave.data_to_send(), host)
    back = session_pb2.Frame(ping=session_pb2.Ping(id=9, received=0)).SerializeToString()
    [ended] = wire(host, [back], enclave)
    assert isinstance(ended, SessionEnded)
    assert_ended(enclave, ended, StatusCode.DATA_LOSS, "fewer than the 1 it reported before")


@pytest.mark.parametrize("pong_id", [1, 2])
def test_a_pong_for_no_ping_in_flight_is_a_violation(pong_id: int) -> None:
    host, enclave = open_pair()
    if pong_id == 2:
        host.tick(0.0)
        host.seal(ping_of(host, 1.0))  # ping 1 in flight; the pong names another
    stray = session_pb2.Frame(pong=session_pb2.Pong(id=pong_id, received=1)).SerializeToString()
    if pong_id == 1:
        [ended] = host.receive(stray)  # nothing was ever pinged
    else:
        [ended] = wire(enclave, [stray], host)
    assert isinstance(ended, SessionEnded)
    assert_ended(host, ended, StatusCode.INTERNAL, f"a pong for ping {pong_id}, which is not in flight")


@pytest.mark.parametrize("kind", ["ping", "pong"])
def test_a_ping_or_pong_before_the_handshake_completes_is_a_violation(kind: str) -> None:
    message = session_pb2.Ping(id=1) if kind == "ping" else session_pb2.Pong(id=1)
    data = session_pb2.Frame(**{kind: message}).SerializeToString()  # type: ignore[arg-type]
    enclave = Session(Role.ENCLAVE)
    [ended] = enclave.receive(data)
    assert isinstance(ended, SessionEnded)
    assert ended.status.code is StatusCode.INTERNAL
    assert f"a {kind} frame while the session is awaiting hello" in ended.status.message
    host = Session(Role.HOST)
    host.send_hello(b"token", LOAD_CONFIG)
    [ended] = host.receive(data)
    assert isinstance(ended, SessionEnded)
    assert f"a {kind} frame while the session is awaiting welcome" in ended.status.message
    assert enclave.data_to_send() == [] and host.data_to_send() == []


def test_a_flood_of_pings_nobody_takes_the_pongs_of_is_bounded() -> None:
    host, enclave = open_pair()
    pings = [session_pb2.Frame(ping=session_pb2.Ping(id=i)).SerializeToString() for i in range(_MAX_PONGS_OWED + 1)]
    events = wire(host, pings, enclave)
    [ended] = events
    assert isinstance(ended, SessionEnded)
    assert_ended(enclave, ended, StatusCode.RESOURCE_EXHAUSTED, f"more than {_MAX_PONGS_OWED} pings unanswered")
    assert enclave.data_to_send() == []  # an ended session owes nothing


@pytest.mark.parametrize("field", ["ping_interval", "ping_deadline"])
@pytest.mark.parametrize("value", [0, -1.0, float("nan")])
def test_liveness_bounds_must_be_positive(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"{field} must be a positive number of seconds"):
        SessionLimits(**{field: value})  # type: ignore[arg-type]


def test_the_default_bounds_detect_a_silent_peer_within_5_s() -> None:
    tick = min(0.25, LIMITS.ping_interval / 4)  # asylo.remote.link's tick period
    assert LIMITS.ping_interval + LIMITS.ping_deadline + tick <= 4.5
    assert LIMITS.ping_deadline >= 2.0  # far above what a pong takes on a loaded machine (ms)


def test_an_unanswered_ping_fails_every_waiting_call_through_the_link() -> None:
    """SessionLink + keep_alive on a loop + HostThreads, no network: the proxy never answers; both waiting callers
    get EnclaveUnavailable within interval + deadline + a tick, and a later call fails at once."""
    limits = SessionLimits(ping_interval=0.2, ping_deadline=0.4)
    host, enclave = open_pair(limits)
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    outbox = Outbox(loop)
    link = SessionLink(host, outbox)
    threads = HostThreads(link.send, lambda selector, extents: [])
    ended: list[SessionEnded] = []

    def on_ended(event: SessionEnded) -> None:
        ended.append(event)
        threads.close(f"unavailable: {event.status}")

    errors: list[BaseException] = []

    def wait() -> None:
        try:
            threads.enter(1, [b"never answered"])
        except BaseException as exc:
            errors.append(exc)

    callers = [threading.Thread(target=wait) for _ in range(2)]
    started = time.monotonic()
    for caller in callers:
        caller.start()
    pinger = asyncio.run_coroutine_threadsafe(keep_alive(link, on_ended), loop)
    try:
        for caller in callers:
            caller.join(5)
        took = time.monotonic() - started
        assert not any(caller.is_alive() for caller in callers)
        assert len(errors) == 2 and all(isinstance(exc, EnclaveUnavailable) for exc in errors), errors
        assert took < limits.ping_interval + limits.ping_deadline + 0.05 + 1.0, took
        pinger.result(1)
        [event] = ended
        assert event.status.code is StatusCode.UNAVAILABLE and host.state is SessionState.ERROR
        with pytest.raises(EnclaveUnavailable):
            threads.enter(1, [b"later"])
    finally:
        threads.close("test over")
        loop.call_soon_threadsafe(loop.stop)
        runner.join(5)
        loop.close()
    del enclave
