"""Session: the protocol state machine of one host <-> proxy stream.

    host                                   proxy (enclave side)
    send_hello      -- Hello -->           receive -> HelloReceived
    receive -> WelcomeReceived  <-- Welcome --  send_welcome
    send_call / receive -> Call, Result, ThreadGone ... in both directions
    send_goodbye    -- Goodbye -->         receive -> SessionEnded   (or the other way round)

Rules enforced on everything received (a violation ends the session: state ERROR, a `SessionEnded` event whose
status says what was wrong, and a goodbye to send):

- frames come in the order above; a frame the state does not allow is a violation;
- call ids are unique per direction among the calls in progress; a result answers exactly one call;
- thread matching: each thread's calls form a stack (entry, exit, entry, ...). A call arrives only for a thread that
  is empty or waiting on the peer's side of it; a result answers the innermost call of its thread; the host sees an
  exit call only on a thread that has an entry call in progress; a thread ends only when it has no call in progress;
- every size and count is bounded by `SessionLimits`; a call or result too large for one frame comes as a header
  (the call without its extents, with their sizes) and fragments that add up to exactly the announced body.

With a handshake (`asylo.session.handshake`), the host offers a key share in its hello and accepts only a welcome
whose evidence its verifier accepts; from then on every frame in either direction is an AES-256-GCM record with an
implicit sequence number. Records are sealed by the transport with `seal`, in the order it writes them (frames of
different calls take turns on the stream, so only the writer knows the order), and opened here, in `receive`: an
altered, replayed, reordered or missing record ends the session (DATA_LOSS). No call can be made before the
handshake is verified: the session is not open until then.

Liveness: once open, each side pings the other every `ping_interval` (`tick`, on the transport's clock: the core reads
no clock of its own), and the peer answers at once with a pong carrying how many frames it has received since the
welcome. The stream is in order, so that count is exactly how many we had sent up to and including the ping: fewer
means frames were lost (DATA_LOSS), and no answer within `ping_deadline` means the peer is dead, frozen or cut off
(UNAVAILABLE). Either ends the session. A lost record in the middle of the stream already fails the next record's
authentication; the pings make sure there always is a next record, and catch a lost frame of an unencrypted session.
Pings and pongs are frames like any other (records, counted); a ping or pong before the session is open is a
violation.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from asylo.crypto import RecordChannel, RecordError
from asylo.primitives.matching import Call, Result, ThreadGone
from asylo.proto import enclave_pb2, session_pb2
from asylo.session.body import FRAGMENT_OVERHEAD, BodyFrames, decode_fragment, join_extents
from asylo.session.handshake import (
    HANDSHAKE_FRAME_OVERHEAD,
    MAX_HANDSHAKE_SIZE,
    EnclaveHandshake,
    HostHandshake,
    check_offer,
)
from asylo.session.limits import SessionLimits
from asylo.status import (
    AsyloError,
    EnclaveUnavailable,
    FailedPreconditionError,
    InvalidArgumentError,
    ResourceExhaustedError,
    Status,
    StatusCode,
    code_or_unknown,
)

PROTOCOL_VERSION = 1

#: Bodies up to this size are encoded whole when sent; larger ones fragment by fragment as the transport writes them
#: (`BodyFrames`), so that they cost a few frames of memory rather than a copy of themselves. The transport writes on
#: its I/O loop, which every other call waits on, so small bodies are better built beforehand: a 1 MiB remote call
#: took ~4.9 ms built by the writer against ~4.0 ms built by the sender.
_BODY_BUILT_AT_ONCE = 8 << 20

#: Pongs owed to the peer and not yet taken by the transport (`data_to_send`). A transport takes them after every
#: message it hands to `receive` (at most a batch of frames): a peer that makes us owe more is flooding us.
_MAX_PONGS_OWED = 1024


class Role(enum.Enum):
    HOST = "host"
    ENCLAVE = "enclave"


class SessionState(enum.Enum):
    AWAITING_HELLO = "awaiting hello"  # enclave side, before the host's first frame
    IDLE = "idle"  # host side, before it says hello
    AWAITING_WELCOME = "awaiting welcome"
    HELLO_RECEIVED = "hello received"  # enclave side, deciding whether to welcome
    OPEN = "open"
    CLOSED = "closed"  # ended in order (a goodbye either way)
    ERROR = "error"  # ended by a protocol violation


@dataclass(frozen=True)
class HelloReceived:
    version: int
    token: bytes
    load_config: enclave_pb2.EnclaveLoadConfig
    handshake: bytes


@dataclass(frozen=True)
class WelcomeReceived:
    version: int
    measurement: bytes
    signer: bytes
    enclave_name: str
    handshake: bytes
    #: What the host's verifier returned for the enclave's evidence (None without a handshake).
    identity: object = None


@dataclass(frozen=True)
class SessionEnded:
    """The session is over. `by_peer`: the peer said goodbye; otherwise we found a violation, and `goodbye` is the
    frame that tells the peer why (send it if the transport still can)."""

    status: Status
    by_peer: bool
    goodbye: bytes | None = None


Event = HelloReceived | WelcomeReceived | Call | Result | ThreadGone | SessionEnded


class PeerUnresponsive(EnclaveUnavailable):
    """`Session.tick` found our last ping unanswered past `ping_deadline`: the session has ended (state ERROR,
    UNAVAILABLE); `ended` is the event, with the goodbye to send if the transport still can."""

    def __init__(self, ended: SessionEnded) -> None:
        super().__init__(ended.status.message)
        self.ended = ended


@dataclass(frozen=True)
class _PingInFlight:
    id: int
    #: When `tick` made it, on the transport's clock.
    sent_at: float
    #: Frames sealed before it: the pong must count more than these (the ping itself at least), and no more than
    #: were sealed by the time the pong arrives.
    sent_before: int


class ProtocolViolation(Exception):  # noqa: N818 - internal control flow, never escapes this module
    def __init__(self, code: StatusCode, message: str) -> None:
        super().__init__(message)
        self.status = Status(code, f"protocol violation: {message}")


def _welcome_fields(welcome: session_pb2.Welcome) -> bytes:
    """The welcome without its handshake, deterministically encoded: what the handshake's transcript covers of it."""
    fields = session_pb2.Welcome()
    fields.CopyFrom(welcome)
    fields.ClearField("handshake")
    return fields.SerializeToString(deterministic=True)


def _violation(message: str, code: StatusCode = StatusCode.INTERNAL) -> ProtocolViolation:
    return ProtocolViolation(code, message)


@dataclass
class _Transfer:
    """The body of a large call or result whose header has arrived: its pieces so far, and what it completes."""

    total: int
    sizes: list[int]
    complete: Callable[[list[bytes]], Call | Result]
    pieces: list[memoryview] = field(default_factory=list)
    received: int = 0


class Session:
    """One side of a session. Not thread-safe: its owner serializes access (the gRPC adapter holds a lock)."""

    def __init__(self, role: Role, limits: SessionLimits | None = None, *,
                 handshake: HostHandshake | EnclaveHandshake | None = None) -> None:
        if handshake is not None and isinstance(handshake, HostHandshake) != (role is Role.HOST):
            raise ValueError("a host session takes a HostHandshake, an enclave session an EnclaveHandshake")
        self.role = role
        self._handshake = handshake
        self._offer = b""
        # The hello frame exactly as sent or received: the handshake's transcript covers all of it.
        self._hello_frame = b""
        self._records: RecordChannel | None = None
        self.limits = limits or SessionLimits()
        self.state = SessionState.IDLE if role is Role.HOST else SessionState.AWAITING_HELLO
        self.end_status: Status | None = None
        # Per thread, the stack of calls in progress: (True if we made it, call id).
        self._stacks: dict[int, list[tuple[bool, int]]] = {}
        self._incoming_ids: set[int] = set()
        self._outgoing_ids: set[int] = set()
        self._transfers: dict[int, _Transfer] = {}
        self._reassembly_bytes = 0
        self._transfer_ids = itertools.count(1)
        # Liveness: frames sealed for and received from the peer since the welcome, our ping in flight (one at a
        # time), the pongs we owe, and what the peer last said it had received.
        self._sent = 0
        self._received = 0
        self._liveness_received = 0
        self._ping_ids = itertools.count(1)
        self._ping: _PingInFlight | None = None
        self._next_ping_at: float | None = None
        self._pongs: list[bytes] = []
        self._peer_received = 0

    # -- sending -------------------------------------------------------------------------------------------------

    def send_hello(self, token: bytes, load_config: enclave_pb2.EnclaveLoadConfig) -> bytes:
        self._require_sending(SessionState.IDLE, Role.HOST, "hello")
        self.state = SessionState.AWAITING_WELCOME
        handshake = self._handshake.offer() if isinstance(self._handshake, HostHandshake) else b""
        hello = session_pb2.Hello(version=PROTOCOL_VERSION, token=token, load_config=load_config,
                                  handshake=handshake, max_frame_size=self.limits.max_frame_size,
                                  max_message_size=self.limits.max_message_size,
                                  max_reassembly_bytes=self.limits.max_reassembly_bytes)
        self._hello_frame = session_pb2.Frame(hello=hello).SerializeToString()
        return self._hello_frame

    def send_welcome(self, measurement: bytes, signer: bytes, enclave_name: str) -> bytes:
        """The welcome; with the host's offer and an EnclaveHandshake, it carries the answer and every frame after
        it is a record. Raises (an AsyloError from the platform) if evidence cannot be made; nothing changes then."""
        self._require_sending(SessionState.HELLO_RECEIVED, Role.ENCLAVE, "welcome")
        welcome = session_pb2.Welcome(version=PROTOCOL_VERSION, measurement=measurement, signer=signer,
                                      enclave_name=enclave_name, max_frame_size=self.limits.max_frame_size,
                                      max_message_size=self.limits.max_message_size,
                                      max_reassembly_bytes=self.limits.max_reassembly_bytes)
        if self._offer and isinstance(self._handshake, EnclaveHandshake):
            welcome.handshake, self._records = self._handshake.answer(self._offer, self._hello_frame,
                                                                      _welcome_fields(welcome))
        self.state = SessionState.OPEN
        return session_pb2.Frame(welcome=welcome).SerializeToString()

    def send_call(self, call: Call) -> Sequence[bytes]:
        """Frames for a call we make (a large body's fragments are built as they are read: `BodyFrames`). Raises
        (changing nothing) if it breaks a rule or a limit."""
        self._require_open()
        stack = self._stacks.get(call.thread, [])
        if self.role is Role.ENCLAVE and not (stack and not stack[-1][0]):
            raise FailedPreconditionError(f"an exit call on thread {call.thread} needs an entry call of that "
                                          f"thread in progress")
        if stack and stack[-1][0]:
            raise FailedPreconditionError(f"thread {call.thread} is already waiting for call {stack[-1][1]}")
        if call.call_id in self._outgoing_ids:
            raise FailedPreconditionError(f"call id {call.call_id} is already in use")
        self._check_extents(call.extents, "call")

        def frame(extents: Sequence[bytes], body: int, sizes: Sequence[int]) -> session_pb2.Frame:
            return session_pb2.Frame(call=session_pb2.CallFrame(
                call_id=call.call_id, thread=call.thread, selector=call.selector, extents=extents,
                body_transfer=body, extent_sizes=sizes))

        frames = self._encode(call.extents, frame, "call")
        self._stacks.setdefault(call.thread, []).append((True, call.call_id))
        self._outgoing_ids.add(call.call_id)
        return frames

    def send_result(self, result: Result) -> Sequence[bytes]:
        """Frames answering a call we received. A result too large for the limits raises ResourceExhaustedError and
        changes nothing, so the caller can answer with that error instead."""
        self._require_open()
        stack = self._stacks.get(result.thread)
        if not stack or stack[-1] != (False, result.call_id):
            raise FailedPreconditionError(f"call {result.call_id} is not the innermost call in progress on thread "
                                          f"{result.thread}")
        self._check_extents(result.extents if result.status.ok else (), "result")

        def frame(extents: Sequence[bytes], body: int, sizes: Sequence[int]) -> session_pb2.Frame:
            return session_pb2.Frame(result=session_pb2.ResultFrame(
                call_id=result.call_id, thread=result.thread, code=int(result.status.code),
                message=result.status.message, extents=extents, body_transfer=body, extent_sizes=sizes))

        frames = self._encode(result.extents if result.status.ok else (), frame, "result")
        self._pop(result.thread)
        self._incoming_ids.discard(result.call_id)
        return frames

    def send_thread_gone(self, thread: int) -> bytes:
        self._require_open()
        if self.role is not Role.HOST:
            raise FailedPreconditionError("only the host reports ended threads")
        if self._stacks.get(thread):
            raise FailedPreconditionError(f"thread {thread} still has calls in progress")
        self._stacks.pop(thread, None)
        return session_pb2.Frame(thread_gone=session_pb2.ThreadGone(thread=thread)).SerializeToString()

    def send_goodbye(self, status: Status | None = None) -> bytes:
        """End the session; the frame tells the peer why (OK: an orderly end). Idempotent for the state."""
        status = status or Status()
        if self.state not in (SessionState.CLOSED, SessionState.ERROR):
            self.state = SessionState.CLOSED
            self.end_status = status
            self._drop_transfers()
        # A goodbye is one frame (never fragmented), so its reason is cut to fit one: a long reason (a traceback,
        # say) must not make the peer reject the goodbye itself as an oversized frame. The cut keeps valid UTF-8.
        room = self.limits.max_frame_size - 64
        message = status.message.encode()[:room].decode(errors="ignore")
        goodbye = session_pb2.Goodbye(code=int(status.code), message=message)
        return session_pb2.Frame(goodbye=goodbye).SerializeToString()

    def _require_sending(self, state: SessionState, role: Role, what: str) -> None:
        if self.role is not role or self.state is not state:
            raise FailedPreconditionError(f"cannot send {what}: the {self.role.value} session is {self.state.value}")

    def _require_open(self) -> None:
        if self.state is not SessionState.OPEN:
            if self.end_status is not None:
                raise EnclaveUnavailable(self.end_status.message or "the session ended")
            raise FailedPreconditionError(f"the session is {self.state.value}, not open")

    def _check_extents(self, extents: Sequence[bytes], what: str) -> None:
        if len(extents) > self.limits.max_extents:
            raise ResourceExhaustedError(f"a {what} with {len(extents)} extents exceeds max_extents "
                                         f"({self.limits.max_extents})")

    def _encode(self, extents: Sequence[bytes],
                frame: Callable[[Sequence[bytes], int, Sequence[int]], session_pb2.Frame],
                what: str) -> Sequence[bytes]:
        """One frame if the message fits, else a header frame and the body's fragments."""
        size = sum(len(extent) for extent in extents)
        if size > self.limits.max_message_size:
            raise ResourceExhaustedError(f"a {what} of {size} bytes exceeds max_message_size "
                                         f"({self.limits.max_message_size})")
        # Each extent costs a tag and a length (at most 11 bytes) besides its data; the rest of a frame is small.
        if size == 0 or size + 11 * len(extents) + 256 <= self.limits.max_frame_size:
            data = frame(extents, 0, ()).SerializeToString()
            if len(data) <= self.limits.max_frame_size:
                return [data]
            # The estimate leaves out a result's status message: with a long one, the extents go as a body instead.
            if size == 0:
                raise ResourceExhaustedError(f"a {what} of {len(extents)} extents does not fit in a frame")
        transfer_id = next(self._transfer_ids)
        header = frame((), transfer_id, [len(extent) for extent in extents]).SerializeToString()
        if len(header) > self.limits.max_frame_size:
            raise ResourceExhaustedError(f"a {what} of {len(extents)} extents does not fit in a frame")
        body = BodyFrames(header, transfer_id, extents, self.limits.max_frame_size - FRAGMENT_OVERHEAD)
        # A small body is built here, by the sending thread and before the call or result changes any state (so an
        # interrupt cannot leave a call recorded that never went out); a large one as the transport writes it.
        return list(body) if body.total <= _BODY_BUILT_AT_ONCE else body

    def _pop(self, thread: int) -> None:
        stack = self._stacks[thread]
        stack.pop()
        if not stack:
            # An idle thread is forgotten: max_threads bounds threads with calls in progress, so host threads that
            # come and go (or are refused) never add up to a violation.
            del self._stacks[thread]

    @property
    def encrypted(self) -> bool:
        """True once the handshake succeeded: every frame from here on is a record."""
        return self._records is not None

    def seal(self, frame: bytes) -> bytes:
        """The record to write for `frame` (the frame itself before or without a handshake). The transport calls
        this for every frame it writes after the hello/welcome, in exactly the order it writes them."""
        self._sent += 1  # what the peer's pongs must add up to
        records = self._records
        return frame if records is None else records.sealer.seal(frame)

    def seal_into(self, parts: Sequence[bytes | memoryview], out: memoryview) -> int:
        """`seal` of the concatenation of `parts`, written into `out` (room: the parts, 16 bytes of tag and 15 the
        cipher may use); the record's length. For a large body's fragments (`BodyFrames.frame_parts`)."""
        self._sent += 1
        records = self._records
        if records is not None:
            return records.sealer.seal_into(parts, out)
        written = 0
        for part in parts:
            out[written:written + len(part)] = part
            written += len(part)
        return written

    # -- liveness ------------------------------------------------------------------------------------------------

    def tick(self, now: float) -> list[bytes]:
        """The frames due at `now` (a ping every `ping_interval`), `now` being seconds on any monotonic clock the
        transport keeps (the same one every call). Call it, once the session is open, at least every quarter of
        `ping_interval`; the frames go out like any other (sealed, in order). Nothing before the session is open or
        after it ended.

        Raises PeerUnresponsive (an EnclaveUnavailable), having ended the session, when our ping went unanswered for
        longer than `ping_deadline`."""
        if self.state is not SessionState.OPEN:
            return []
        ping = self._ping
        if ping is not None:
            if now - ping.sent_at > self.limits.ping_deadline:
                raise PeerUnresponsive(self._fail(Status(
                    StatusCode.UNAVAILABLE, f"no answer to a ping for {self.limits.ping_deadline:g} s: the peer is "
                                            f"gone, frozen, or the stream to it is stuck")))
            return []
        if self._next_ping_at is None:  # the first tick: the interval counts from here
            self._next_ping_at = now + self.limits.ping_interval
        if now < self._next_ping_at:
            return []
        self._ping = _PingInFlight(next(self._ping_ids), now, self._sent)
        self._next_ping_at = now + self.limits.ping_interval
        return [session_pb2.Frame(ping=session_pb2.Ping(id=self._ping.id, received=self._received))
                .SerializeToString()]

    def data_to_send(self) -> list[bytes]:
        """The pongs owed for pings `receive` took (and forgets them): the transport sends them after every message
        it hands to `receive`, so that the peer's deadline does not run down waiting for our next tick."""
        pongs, self._pongs = self._pongs, []
        return pongs

    @property
    def received(self) -> int:
        """Frames received since the welcome (pings and pongs included)."""
        return self._received

    @property
    def traffic_received(self) -> int:
        """Frames received since the welcome that were not pings or pongs: what says the peer is doing something."""
        return self._received - self._liveness_received

    def _receive_ping(self, ping: session_pb2.Ping) -> None:
        if ping.received > self._sent:
            raise _violation(f"the peer says it received {ping.received} frames, but {self._sent} were sent",
                             StatusCode.DATA_LOSS)
        if ping.received < self._peer_received:
            raise _violation(f"the peer says it received {ping.received} frames, fewer than the "
                             f"{self._peer_received} it reported before", StatusCode.DATA_LOSS)
        if len(self._pongs) >= _MAX_PONGS_OWED:
            raise _violation(f"more than {_MAX_PONGS_OWED} pings unanswered at once", StatusCode.RESOURCE_EXHAUSTED)
        self._peer_received = ping.received
        self._liveness_received += 1
        self._pongs.append(session_pb2.Frame(pong=session_pb2.Pong(id=ping.id, received=self._received))
                           .SerializeToString())

    def _receive_pong(self, pong: session_pb2.Pong) -> None:
        ping = self._ping
        if ping is None or pong.id != ping.id:
            raise _violation(f"a pong for ping {pong.id}, which is not in flight")
        if not ping.sent_before < pong.received <= self._sent:
            raise _violation(f"the peer received {pong.received} frames up to ping {ping.id}, which was sent "
                             f"after {ping.sent_before} (and {self._sent} are sent now): frames were lost on the way",
                             StatusCode.DATA_LOSS)
        self._ping = None
        self._peer_received = max(self._peer_received, pong.received)
        self._liveness_received += 1

    # -- receiving -----------------------------------------------------------------------------------------------

    @property
    def largest_frame(self) -> int:
        """The largest frame `receive` takes now (a transport unpacking frames uses the same bound): a frame and
        its fragment header, except while the host awaits the welcome, which is never fragmented and carries the
        platform's evidence (tens of KiB on hardware), whatever max_frame_size was asked for."""
        limit = self.limits.max_frame_size + FRAGMENT_OVERHEAD
        if self.state is SessionState.AWAITING_WELCOME:
            limit = max(limit, MAX_HANDSHAKE_SIZE + HANDSHAKE_FRAME_OVERHEAD)
        return limit

    def receive(self, data: bytes | memoryview) -> list[Event]:
        """Process one frame from the peer; return what happened. Never raises on hostile input."""
        if self.state in (SessionState.CLOSED, SessionState.ERROR):
            return []
        if self.state is SessionState.OPEN:
            self._received += 1  # what our pongs report: the frames the transport delivered
        try:
            if len(data) > self.largest_frame:
                raise _violation(f"a frame of {len(data)} bytes exceeds max_frame_size "
                                 f"({self.limits.max_frame_size})", StatusCode.RESOURCE_EXHAUSTED)
            if self._records is not None:
                try:
                    data = self._records.opener.open(data)
                except RecordError as exc:
                    raise _violation(f"a record failed authentication ({exc.message}): the stream was altered, "
                                     f"replayed or reordered", StatusCode.DATA_LOSS) from None
            fragment = decode_fragment(data)
            if fragment is not None:  # the bulk of a large payload: decoded without protobuf's copies
                self._require_open_for("fragment")
                return self._receive_fragment(*fragment)
            frame = self._parse(data)
            if frame.WhichOneof("kind") == "hello":
                self._hello_frame = bytes(data)
            return self._receive_frame(frame)
        except ProtocolViolation as violation:
            return [self._fail(violation.status)]

    def _drop_transfers(self) -> None:
        # A session that is over holds no half-received bodies, owes no pongs and waits for none.
        self._transfers.clear()
        self._reassembly_bytes = 0
        self._pongs.clear()
        self._ping = None

    def fail(self, message: str, code: StatusCode = StatusCode.INTERNAL) -> list[Event]:
        """End the session for a violation the transport found (a malformed batch, say): like one found here."""
        if self.state in (SessionState.CLOSED, SessionState.ERROR):
            return []
        return [self._fail(_violation(message, code).status)]

    def _fail(self, status: Status) -> SessionEnded:
        self.state = SessionState.ERROR
        self.end_status = status
        self._drop_transfers()
        goodbye = session_pb2.Frame(goodbye=session_pb2.Goodbye(code=int(status.code), message=status.message))
        return SessionEnded(status, by_peer=False, goodbye=goodbye.SerializeToString())

    @staticmethod
    def _parse(data: bytes | memoryview) -> session_pb2.Frame:
        try:
            frame = session_pb2.Frame.FromString(data)  # type: ignore[arg-type]  # any buffer parses; no copy
        except DecodeError as exc:
            raise _violation(f"undecodable frame: {exc}") from None
        if frame.WhichOneof("kind") is None:
            raise _violation("empty frame")
        return frame

    def _require_open_for(self, kind: str) -> None:
        if self.state is not SessionState.OPEN:
            raise _violation(f"a {kind} frame while the session is {self.state.value}")

    def _receive_frame(self, frame: session_pb2.Frame) -> list[Event]:
        kind = frame.WhichOneof("kind")
        assert kind is not None
        if kind == "goodbye":
            status = Status(code_or_unknown(frame.goodbye.code), frame.goodbye.message)
            self.state = SessionState.CLOSED
            self.end_status = status
            self._drop_transfers()
            return [SessionEnded(status, by_peer=True)]
        if kind == "hello":
            return [self._receive_hello(frame.hello)]
        if kind == "welcome":
            return [self._receive_welcome(frame.welcome)]
        self._require_open_for(kind)
        if kind == "call":
            call = self._receive_call(frame.call)
            return [] if call is None else [call]
        if kind == "result":
            result = self._receive_result(frame.result)
            return [] if result is None else [result]
        if kind == "ping":
            self._receive_ping(frame.ping)
            return []
        if kind == "pong":
            self._receive_pong(frame.pong)
            return []
        if kind == "fragment":
            fragment = frame.fragment
            return self._receive_fragment(fragment.transfer_id, fragment.total_size, memoryview(fragment.data))
        assert kind == "thread_gone"
        return [self._receive_thread_gone(frame.thread_gone.thread)]

    def _check_handshake(self, what: str, role: Role, state: SessionState, version: int) -> None:
        if self.role is not role or self.state is not state:
            raise _violation(f"a {what} while the {self.role.value} session is {self.state.value}")
        if version != PROTOCOL_VERSION:
            raise _violation(f"protocol version {version} (this side speaks {PROTOCOL_VERSION})",
                             StatusCode.FAILED_PRECONDITION)

    def _offered_limits(self, offer: session_pb2.Hello | session_pb2.Welcome) -> tuple[int, int, int]:
        """Frame, message and reassembly sizes a hello or welcome names; 0 there means "no preference": ours."""
        own = self.limits
        return (offer.max_frame_size or own.max_frame_size, offer.max_message_size or own.max_message_size,
                offer.max_reassembly_bytes or own.max_reassembly_bytes)

    def _own_limits(self) -> tuple[int, int, int]:
        return self.limits.max_frame_size, self.limits.max_message_size, self.limits.max_reassembly_bytes

    def _receive_hello(self, hello: session_pb2.Hello) -> HelloReceived:
        self._check_handshake("hello", Role.ENCLAVE, SessionState.AWAITING_HELLO, hello.version)
        # Both sides use the smaller limits: each then sends only frames and messages the other accepts.
        frame_size, message_size, reassembly = map(min, self._offered_limits(hello), self._own_limits())
        self._adopt_limits(frame_size, message_size, reassembly)
        if hello.handshake:
            try:
                check_offer(hello.handshake)
            except InvalidArgumentError as exc:
                raise _violation(exc.message, StatusCode.INVALID_ARGUMENT) from None
        self._offer = hello.handshake
        self.state = SessionState.HELLO_RECEIVED
        return HelloReceived(hello.version, hello.token, hello.load_config, hello.handshake)

    def _receive_welcome(self, welcome: session_pb2.Welcome) -> WelcomeReceived:
        self._check_handshake("welcome", Role.HOST, SessionState.AWAITING_WELCOME, welcome.version)
        frame_size, message_size, reassembly = offered = self._offered_limits(welcome)
        if any(theirs > ours for theirs, ours in zip(offered, self._own_limits(), strict=True)):
            raise _violation(f"the welcome raised the limits above what we asked for (frames {frame_size}, "
                             f"messages {message_size}, reassembly {reassembly})", StatusCode.FAILED_PRECONDITION)
        identity: object = None
        if isinstance(self._handshake, HostHandshake):
            try:
                self._records, identity = self._handshake.finish(welcome.handshake, self._hello_frame,
                                                                 _welcome_fields(welcome))
            except AsyloError as exc:  # AttestationError, or the verifier's own failure
                raise _violation(f"attestation failed: {exc.message}", StatusCode.UNAUTHENTICATED) from None
        self._adopt_limits(frame_size, message_size, reassembly)
        self.state = SessionState.OPEN
        return WelcomeReceived(welcome.version, welcome.measurement, welcome.signer, welcome.enclave_name,
                               welcome.handshake, identity)

    def _adopt_limits(self, frame_size: int, message_size: int, reassembly: int) -> None:
        message_size = max(message_size, frame_size)
        reassembly = max(reassembly, message_size)
        try:
            self.limits = dataclasses.replace(self.limits, max_frame_size=frame_size, max_message_size=message_size,
                                              max_reassembly_bytes=reassembly)
        except ValueError as exc:
            raise _violation(f"unusable limits from the peer: {exc}", StatusCode.FAILED_PRECONDITION) from None

    def _receive_call(self, frame: session_pb2.CallFrame) -> Call | None:
        """The call, or None when its extents follow in a body transfer (the call is then in progress already)."""
        count = len(frame.extent_sizes) if frame.body_transfer else len(frame.extents)
        if count > self.limits.max_extents:
            raise _violation(f"a call with {count} extents (max_extents {self.limits.max_extents})",
                             StatusCode.RESOURCE_EXHAUSTED)
        self._check_body_header(frame.body_transfer, frame.extents, frame.extent_sizes, "call")
        if frame.call_id in self._incoming_ids:
            raise _violation(f"call id {frame.call_id} is already in progress")
        if len(self._incoming_ids) >= self.limits.max_calls_in_flight:
            raise _violation(f"more than max_calls_in_flight ({self.limits.max_calls_in_flight}) calls",
                             StatusCode.RESOURCE_EXHAUSTED)
        stack = self._stacks.get(frame.thread)
        if stack is None:
            if self.role is Role.HOST:
                raise _violation(f"an exit call on thread {frame.thread}, which has no entry call in progress")
            if len(self._stacks) >= self.limits.max_threads:
                raise _violation(f"more than max_threads ({self.limits.max_threads}) threads",
                                 StatusCode.RESOURCE_EXHAUSTED)
            stack = self._stacks[frame.thread] = []
        elif stack and not stack[-1][0]:
            raise _violation(f"a call on thread {frame.thread} while that thread is busy with call "
                             f"{stack[-1][1]} here")
        elif not stack and self.role is Role.HOST:
            raise _violation(f"an exit call on thread {frame.thread}, which has no entry call in progress")
        if len(stack) >= self.limits.max_call_depth:
            raise _violation(f"calls nested deeper than max_call_depth ({self.limits.max_call_depth}) on thread "
                             f"{frame.thread}", StatusCode.RESOURCE_EXHAUSTED)
        stack.append((False, frame.call_id))
        self._incoming_ids.add(frame.call_id)
        call_id, thread, selector = frame.call_id, frame.thread, frame.selector
        if frame.body_transfer:
            self._start_transfer(frame.body_transfer, list(frame.extent_sizes),
                                 lambda extents: Call(call_id, thread, selector, extents))
            return None
        return Call(call_id, thread, selector, list(frame.extents))

    def _receive_result(self, frame: session_pb2.ResultFrame) -> Result | None:
        """The result, or None when its extents follow in a body transfer."""
        stack = self._stacks.get(frame.thread)
        if frame.call_id not in self._outgoing_ids:
            raise _violation(f"a result for call {frame.call_id}, which is not in progress")
        if not stack or stack[-1] != (True, frame.call_id):
            raise _violation(f"a result for call {frame.call_id}, which is not the innermost call of thread "
                             f"{frame.thread}")
        count = len(frame.extent_sizes) if frame.body_transfer else len(frame.extents)
        if count > self.limits.max_extents:
            raise _violation(f"a result with {count} extents (max_extents {self.limits.max_extents})",
                             StatusCode.RESOURCE_EXHAUSTED)
        status = Status(code_or_unknown(frame.code), frame.message)
        if not status.ok and (frame.extents or frame.body_transfer):
            raise _violation(f"an error result for call {frame.call_id} that carries extents")
        self._check_body_header(frame.body_transfer, frame.extents, frame.extent_sizes, "result")
        self._pop(frame.thread)
        self._outgoing_ids.discard(frame.call_id)
        call_id, thread = frame.call_id, frame.thread
        if frame.body_transfer:
            self._start_transfer(frame.body_transfer, list(frame.extent_sizes),
                                 lambda extents: Result(call_id, thread, status, extents))
            return None
        return Result(call_id, thread, status, list(frame.extents))

    def _receive_thread_gone(self, thread: int) -> ThreadGone:
        if self.role is not Role.ENCLAVE:
            raise _violation("a thread_gone frame sent to the host")
        if self._stacks.get(thread):
            raise _violation(f"thread {thread} ended with calls in progress")
        self._stacks.pop(thread, None)
        return ThreadGone(thread)

    def _check_body_header(self, transfer_id: int, extents: Sequence[bytes], sizes: Sequence[int],
                           what: str) -> None:
        """Everything about a body header that can be checked before the call's own rules change any state."""
        if not transfer_id:
            if sizes:
                raise _violation(f"a {what} with extent sizes but no body transfer")
            return
        if extents:
            raise _violation(f"a {what} with both extents and a body transfer")
        total = sum(sizes)
        if not 0 < total <= self.limits.max_message_size:
            raise _violation(f"a {what} body of {total} bytes (it must be more than 0 and at most max_message_size "
                             f"{self.limits.max_message_size})", StatusCode.RESOURCE_EXHAUSTED)
        if transfer_id in self._transfers:
            raise _violation(f"body transfer {transfer_id} is already in progress")
        if len(self._transfers) >= self.limits.max_calls_in_flight:
            raise _violation("too many body transfers in progress", StatusCode.RESOURCE_EXHAUSTED)
        if self._reassembly_bytes + total > self.limits.max_reassembly_bytes:
            raise _violation(f"bodies in progress would hold more than max_reassembly_bytes "
                             f"({self.limits.max_reassembly_bytes})", StatusCode.RESOURCE_EXHAUSTED)

    def _start_transfer(self, transfer_id: int, sizes: list[int], complete: Callable[[list[bytes]], Call | Result]
                        ) -> None:
        total = sum(sizes)
        self._transfers[transfer_id] = _Transfer(total, sizes, complete)
        self._reassembly_bytes += total

    def _receive_fragment(self, transfer_id: int, total: int, data: memoryview) -> list[Event]:
        transfer = self._transfers.get(transfer_id)
        if transfer is None:
            raise _violation(f"a fragment of transfer {transfer_id}, which no call or result announced")
        if total != transfer.total:
            raise _violation(f"transfer {transfer_id} changed its size from {transfer.total} to {total}")
        if not data:
            raise _violation(f"an empty fragment in transfer {transfer_id}")
        # Every fragment but the last is a full chunk, as the sender cuts them: many tiny fragments would cost far
        # more memory (a view each) than the bytes the reassembly budget counts.
        remaining = transfer.total - transfer.received
        if len(data) < min(remaining, self.limits.max_frame_size - FRAGMENT_OVERHEAD):
            raise _violation(f"a short fragment ({len(data)} bytes) in the middle of transfer {transfer_id}")
        if transfer.received + len(data) > transfer.total:
            raise _violation(f"transfer {transfer_id} is longer than its declared {transfer.total} bytes")
        transfer.pieces.append(data)
        transfer.received += len(data)
        if transfer.received < transfer.total:
            return []
        del self._transfers[transfer_id]
        self._reassembly_bytes -= transfer.total
        return [transfer.complete(join_extents(transfer.pieces, transfer.sizes))]

    # -- inspection ----------------------------------------------------------------------------------------------

    def calls_in_progress(self, thread: int) -> list[tuple[bool, int]]:
        """The thread's call stack, innermost last: (made by this side, call id)."""
        return list(self._stacks.get(thread, []))

    @property
    def is_open(self) -> bool:
        return self.state is SessionState.OPEN
