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
- every size and count is bounded by `SessionLimits`; fragments reassemble to exactly their declared size.

The session does not encrypt; the attested handshake and record layer fill the `handshake` fields of Hello and
Welcome and wrap call and result payloads, without changing these rules.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from asylo.primitives.matching import Call, Result, ThreadGone
from asylo.proto import enclave_pb2, session_pb2
from asylo.session.limits import SessionLimits
from asylo.status import (
    EnclaveUnavailable,
    FailedPreconditionError,
    ResourceExhaustedError,
    Status,
    StatusCode,
)

PROTOCOL_VERSION = 1
# Room for a Fragment's own fields around its data: tags, the two ids as varints, the length prefix.
_FRAGMENT_OVERHEAD = 40


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


@dataclass(frozen=True)
class SessionEnded:
    """The session is over. `by_peer`: the peer said goodbye; otherwise we found a violation, and `goodbye` is the
    frame that tells the peer why (send it if the transport still can)."""

    status: Status
    by_peer: bool
    goodbye: bytes | None = None


Event = HelloReceived | WelcomeReceived | Call | Result | ThreadGone | SessionEnded


class ProtocolViolation(Exception):  # noqa: N818 - internal control flow, never escapes this module
    def __init__(self, code: StatusCode, message: str) -> None:
        super().__init__(message)
        self.status = Status(code, f"protocol violation: {message}")


def _violation(message: str, code: StatusCode = StatusCode.INTERNAL) -> ProtocolViolation:
    return ProtocolViolation(code, message)


@dataclass
class _Transfer:
    total: int
    data: bytearray = field(default_factory=bytearray)


class Session:
    """One side of a session. Not thread-safe: its owner serializes access (the gRPC adapter holds a lock)."""

    def __init__(self, role: Role, limits: SessionLimits | None = None) -> None:
        self.role = role
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

    # -- sending -------------------------------------------------------------------------------------------------

    def send_hello(self, token: bytes, load_config: enclave_pb2.EnclaveLoadConfig, handshake: bytes = b"") -> bytes:
        self._require_sending(SessionState.IDLE, Role.HOST, "hello")
        self.state = SessionState.AWAITING_WELCOME
        hello = session_pb2.Hello(version=PROTOCOL_VERSION, token=token, load_config=load_config,
                                  handshake=handshake)
        return session_pb2.Frame(hello=hello).SerializeToString()

    def send_welcome(self, measurement: bytes, signer: bytes, enclave_name: str, handshake: bytes = b"") -> bytes:
        self._require_sending(SessionState.HELLO_RECEIVED, Role.ENCLAVE, "welcome")
        self.state = SessionState.OPEN
        welcome = session_pb2.Welcome(version=PROTOCOL_VERSION, measurement=measurement, signer=signer,
                                      enclave_name=enclave_name, handshake=handshake)
        return session_pb2.Frame(welcome=welcome).SerializeToString()

    def send_call(self, call: Call) -> list[bytes]:
        """Frames for a call we make. Raises (changing nothing) if it breaks a rule or a limit."""
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
        frame = session_pb2.Frame(call=session_pb2.CallFrame(call_id=call.call_id, thread=call.thread,
                                                             selector=call.selector, extents=call.extents))
        frames = self._encode(frame, "call")
        self._stacks.setdefault(call.thread, []).append((True, call.call_id))
        self._outgoing_ids.add(call.call_id)
        return frames

    def send_result(self, result: Result) -> list[bytes]:
        """Frames answering a call we received. A result too large for the limits raises ResourceExhaustedError and
        changes nothing, so the caller can answer with that error instead."""
        self._require_open()
        stack = self._stacks.get(result.thread)
        if not stack or stack[-1] != (False, result.call_id):
            raise FailedPreconditionError(f"call {result.call_id} is not the innermost call in progress on thread "
                                          f"{result.thread}")
        extents = result.extents if result.status.ok else ()
        self._check_extents(extents, "result")
        frame = session_pb2.Frame(result=session_pb2.ResultFrame(
            call_id=result.call_id, thread=result.thread, code=int(result.status.code),
            message=result.status.message, extents=extents))
        frames = self._encode(frame, "result")
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

    def _encode(self, frame: session_pb2.Frame, what: str) -> list[bytes]:
        data = frame.SerializeToString()
        if len(data) > self.limits.max_message_size:
            raise ResourceExhaustedError(f"a {what} of {len(data)} bytes exceeds max_message_size "
                                         f"({self.limits.max_message_size})")
        if len(data) <= self.limits.max_frame_size:
            return [data]
        transfer_id = next(self._transfer_ids)
        chunk = self.limits.max_frame_size - _FRAGMENT_OVERHEAD
        view = memoryview(data)
        frames = []
        for offset in range(0, len(data), chunk):
            fragment = session_pb2.Fragment(transfer_id=transfer_id, total_size=len(data),
                                            data=bytes(view[offset:offset + chunk]))
            frames.append(session_pb2.Frame(fragment=fragment).SerializeToString())
        return frames

    def _pop(self, thread: int) -> None:
        stack = self._stacks[thread]
        stack.pop()
        if not stack and self.role is Role.HOST:
            # The host forgets an idle thread; the enclave side keeps it until the host says it ended.
            del self._stacks[thread]

    # -- receiving -----------------------------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Event]:
        """Process one frame from the peer; return what happened. Never raises on hostile input."""
        if self.state in (SessionState.CLOSED, SessionState.ERROR):
            return []
        try:
            if len(data) > self.limits.max_frame_size + _FRAGMENT_OVERHEAD:
                raise _violation(f"a frame of {len(data)} bytes exceeds max_frame_size "
                                 f"({self.limits.max_frame_size})", StatusCode.RESOURCE_EXHAUSTED)
            return self._receive_frame(self._parse(data), fragmented=False)
        except ProtocolViolation as violation:
            return [self._fail(violation.status)]

    def _fail(self, status: Status) -> SessionEnded:
        self.state = SessionState.ERROR
        self.end_status = status
        self._transfers.clear()
        self._reassembly_bytes = 0
        goodbye = session_pb2.Frame(goodbye=session_pb2.Goodbye(code=int(status.code), message=status.message))
        return SessionEnded(status, by_peer=False, goodbye=goodbye.SerializeToString())

    @staticmethod
    def _parse(data: bytes) -> session_pb2.Frame:
        try:
            frame = session_pb2.Frame.FromString(data)
        except DecodeError as exc:
            raise _violation(f"undecodable frame: {exc}") from None
        if frame.WhichOneof("kind") is None:
            raise _violation("empty frame")
        return frame

    def _receive_frame(self, frame: session_pb2.Frame, *, fragmented: bool) -> list[Event]:
        kind = frame.WhichOneof("kind")
        # Checked before the goodbye too: a sender never fragments a goodbye, so a fragmented one is a violation, not
        # an orderly end (and must not let a peer make us reassemble a goodbye of up to max_message_size).
        if fragmented and kind not in ("call", "result"):
            raise _violation(f"a fragmented {kind} frame (only calls and results are fragmented)")
        if kind == "goodbye":
            status = Status(_known_code(frame.goodbye.code), frame.goodbye.message)
            self.state = SessionState.CLOSED
            self.end_status = status
            return [SessionEnded(status, by_peer=True)]
        if kind == "hello":
            return [self._receive_hello(frame.hello)]
        if kind == "welcome":
            return [self._receive_welcome(frame.welcome)]
        if self.state is not SessionState.OPEN:
            raise _violation(f"a {kind} frame while the session is {self.state.value}")
        if kind == "call":
            return [self._receive_call(frame.call)]
        if kind == "result":
            return [self._receive_result(frame.result)]
        if kind == "fragment":
            return self._receive_fragment(frame.fragment)
        assert kind == "thread_gone"
        return [self._receive_thread_gone(frame.thread_gone.thread)]

    def _receive_hello(self, hello: session_pb2.Hello) -> HelloReceived:
        if self.role is not Role.ENCLAVE or self.state is not SessionState.AWAITING_HELLO:
            raise _violation(f"a hello while the {self.role.value} session is {self.state.value}")
        if hello.version != PROTOCOL_VERSION:
            raise _violation(f"protocol version {hello.version} (this side speaks {PROTOCOL_VERSION})",
                             StatusCode.FAILED_PRECONDITION)
        self.state = SessionState.HELLO_RECEIVED
        return HelloReceived(hello.version, hello.token, hello.load_config, hello.handshake)

    def _receive_welcome(self, welcome: session_pb2.Welcome) -> WelcomeReceived:
        if self.role is not Role.HOST or self.state is not SessionState.AWAITING_WELCOME:
            raise _violation(f"a welcome while the {self.role.value} session is {self.state.value}")
        if welcome.version != PROTOCOL_VERSION:
            raise _violation(f"protocol version {welcome.version} (this side speaks {PROTOCOL_VERSION})",
                             StatusCode.FAILED_PRECONDITION)
        self.state = SessionState.OPEN
        return WelcomeReceived(welcome.version, welcome.measurement, welcome.signer, welcome.enclave_name,
                               welcome.handshake)

    def _receive_call(self, frame: session_pb2.CallFrame) -> Call:
        if len(frame.extents) > self.limits.max_extents:
            raise _violation(f"a call with {len(frame.extents)} extents (max_extents {self.limits.max_extents})",
                             StatusCode.RESOURCE_EXHAUSTED)
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
        return Call(frame.call_id, frame.thread, frame.selector, list(frame.extents))

    def _receive_result(self, frame: session_pb2.ResultFrame) -> Result:
        stack = self._stacks.get(frame.thread)
        if frame.call_id not in self._outgoing_ids:
            raise _violation(f"a result for call {frame.call_id}, which is not in progress")
        if not stack or stack[-1] != (True, frame.call_id):
            raise _violation(f"a result for call {frame.call_id}, which is not the innermost call of thread "
                             f"{frame.thread}")
        if len(frame.extents) > self.limits.max_extents:
            raise _violation(f"a result with {len(frame.extents)} extents (max_extents {self.limits.max_extents})",
                             StatusCode.RESOURCE_EXHAUSTED)
        status = Status(_known_code(frame.code), frame.message)
        if not status.ok and frame.extents:
            raise _violation(f"an error result for call {frame.call_id} that carries extents")
        self._pop(frame.thread)
        self._outgoing_ids.discard(frame.call_id)
        return Result(frame.call_id, frame.thread, status, list(frame.extents))

    def _receive_thread_gone(self, thread: int) -> ThreadGone:
        if self.role is not Role.ENCLAVE:
            raise _violation("a thread_gone frame sent to the host")
        if self._stacks.get(thread):
            raise _violation(f"thread {thread} ended with calls in progress")
        self._stacks.pop(thread, None)
        return ThreadGone(thread)

    def _receive_fragment(self, fragment: session_pb2.Fragment) -> list[Event]:
        transfer = self._transfers.get(fragment.transfer_id)
        if transfer is None:
            if not self.limits.max_frame_size < fragment.total_size <= self.limits.max_message_size:
                raise _violation(f"a fragmented message of {fragment.total_size} bytes (it must be more than "
                                 f"max_frame_size and at most max_message_size {self.limits.max_message_size})",
                                 StatusCode.RESOURCE_EXHAUSTED)
            if len(self._transfers) >= self.limits.max_calls_in_flight:
                raise _violation("too many fragmented messages in progress", StatusCode.RESOURCE_EXHAUSTED)
            if self._reassembly_bytes + fragment.total_size > self.limits.max_reassembly_bytes:
                raise _violation(f"fragmented messages in progress would hold more than max_reassembly_bytes "
                                 f"({self.limits.max_reassembly_bytes})", StatusCode.RESOURCE_EXHAUSTED)
            transfer = self._transfers[fragment.transfer_id] = _Transfer(fragment.total_size)
            self._reassembly_bytes += fragment.total_size
        elif fragment.total_size != transfer.total:
            raise _violation(f"transfer {fragment.transfer_id} changed its size from {transfer.total} to "
                             f"{fragment.total_size}")
        if not fragment.data:
            raise _violation(f"an empty fragment in transfer {fragment.transfer_id}")
        transfer.data += fragment.data
        if len(transfer.data) > transfer.total:
            raise _violation(f"transfer {fragment.transfer_id} is longer than its declared {transfer.total} bytes")
        if len(transfer.data) < transfer.total:
            return []
        del self._transfers[fragment.transfer_id]
        self._reassembly_bytes -= transfer.total
        return self._receive_frame(self._parse(bytes(transfer.data)), fragmented=True)

    # -- inspection ----------------------------------------------------------------------------------------------

    def calls_in_progress(self, thread: int) -> list[tuple[bool, int]]:
        """The thread's call stack, innermost last: (made by this side, call id)."""
        return list(self._stacks.get(thread, []))

    @property
    def is_open(self) -> bool:
        return self.state is SessionState.OPEN


def _known_code(value: int) -> StatusCode:
    try:
        return StatusCode(value)
    except ValueError:
        return StatusCode.UNKNOWN


