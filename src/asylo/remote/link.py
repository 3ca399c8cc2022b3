"""SessionLink: the thread-safe bridge between the thread-matching layer and a session's frames, for both transports.

Threads on either side send Calls, Results and ThreadGone messages from wherever they run; the link encodes each with
the session (under one lock) and hands the frames to the transport's `FrameSink`: on the gRPC stream an `Outbox`,
which the stream's writer task drains on the event loop; on the direct stream a writer that the sending thread
itself writes through (`asylo.remote.direct_link`). Frames are handed over after the lock is let go, so that a
thread blocked writing to a full socket never holds up the thread that reads (and so empties the peer's).
`keep_alive`, a task on the gRPC stream's loop, ticks the session's liveness clock: its pings go out through the
outbox, and a peer that stops answering them ends the session (the direct stream's keeper does the same).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from asylo.primitives.matching import Call, Message, Result, ThreadGone
from asylo.remote import batching
from asylo.session import PeerUnresponsive, Session, SessionEnded
from asylo.session.body import FRAGMENT_OVERHEAD
from asylo.session.connection import Event
from asylo.status import (
    AsyloError,
    EnclaveUnavailable,
    FailedPreconditionError,
    InvalidArgumentError,
    ResourceExhaustedError,
    Status,
    StatusCode,
)

_log = logging.getLogger(__name__)

#: How often `keep_alive` looks at the session's liveness clock (a quarter of the ping interval, if that is less):
#: what a ping or a missed deadline may be late by.
_TICK_PERIOD = 0.25

@dataclass(frozen=True)
class _Item:
    frames: Sequence[bytes]
    #: Bytes of the body this message's fragments carry (0: it is one frame). The peer holds a body from its header
    #: to its last fragment, within its reassembly budget.
    body: int = 0
    #: Written only after everything queued before it (a goodbye must not overtake the calls it ends).
    final: bool = False
    #: After this item the stream is half-closed.
    end: bool = False


class FrameSink(Protocol):
    """Where a link's frames go: the transport's side of `SessionLink`."""

    def put(self, frames: Sequence[bytes], *, body: int = 0) -> None:
        """Send a message's frames (a body of `body` bytes when it is fragmented); may wait for room.
        EnclaveUnavailable once the stream is closed."""

    def put_soon(self, frames: Sequence[bytes]) -> None:
        """Send small frames without waiting (pongs, thread-gone reports): the thread that reads calls this, and
        must not wait for the writing side, which may be waiting for the peer to read what we have not read."""

    def close(self, frames: Sequence[bytes] = ()) -> None:
        """Send `frames` after everything already handed over, then end the stream; refuse everything after."""


class Outbox:
    """The gRPC stream's FrameSink: messages (lists of frames) for the writer task, put from any thread, in
    order; nothing here waits (the writer task does)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._closed = False

    def put(self, frames: Sequence[bytes], *, body: int = 0) -> None:
        self._put(_Item(frames, body=body))

    def put_soon(self, frames: Sequence[bytes]) -> None:
        self._put(_Item(frames))

    def _put(self, item: _Item) -> None:
        if self._closed:
            raise EnclaveUnavailable("the connection is closed")
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: the connection is gone
            self._closed = True
            raise EnclaveUnavailable("the connection is closed") from None

    def close(self, frames: Sequence[bytes] = ()) -> None:
        """Queue `frames` last, then the end of the stream, and refuse everything after."""
        if not self._closed:
            self._put(_Item(frames, final=True, end=True))
            self._closed = True


@dataclass
class _Sending:
    frames: Iterator[bytes]
    body: int


class _FairWriter:
    """The state of `write_fairly`: messages being written, messages waiting for body budget."""

    def __init__(self, write: Callable[[bytes], Awaitable[None]], frame_limit: int, body_budget: int,
                 seal: Callable[[bytes], bytes]) -> None:
        self._write = write
        self._seal = seal
        self.frame_limit = frame_limit
        self.body_budget = body_budget
        self.active: collections.deque[_Sending] = collections.deque()
        self.waiting: collections.deque[_Item] = collections.deque()
        self.in_flight = 0

    def take(self, item: _Item) -> None:
        """Start writing `item`, or let it wait if its body would exceed the peer's budget."""
        if item.body and (self.waiting or (self.in_flight and self.in_flight + item.body > self.body_budget)):
            self.waiting.append(item)
        else:
            self._admit(item)

    def _admit(self, item: _Item) -> None:
        self.in_flight += item.body
        self.active.append(_Sending(iter(item.frames), item.body))

    def _finished(self, sending: _Sending) -> None:
        self.in_flight -= sending.body
        while self.waiting and (self.in_flight == 0 or self.in_flight + self.waiting[0].body <= self.body_budget):
            self._admit(self.waiting.popleft())

    async def drain(self) -> None:
        """Write everything, one message after another: at most one body in flight, always within the budget."""
        for sending in [*self.active, *(_Sending(iter(item.frames), item.body) for item in self.waiting)]:
            await self.write_packed(sending.frames)
        self.active.clear()
        self.waiting.clear()
        self.in_flight = 0

    async def write_packed(self, frames: Iterable[bytes]) -> None:
        batch: list[bytes] = []
        size = 0
        for frame in frames:
            if batch and (size + len(frame) > self.frame_limit or len(batch) == batching.MAX_FRAMES_PER_MESSAGE):
                await self.write(batch)
                batch, size = [], 0
            batch.append(frame)
            size += len(frame)
        if batch:
            await self.write(batch)

    async def write_turns(self) -> None:
        """One frame from each message in turn, as many as fit in one gRPC message."""
        turns: list[bytes] = []
        size = 0
        while self.active and len(turns) < batching.MAX_FRAMES_PER_MESSAGE:
            sending = self.active.popleft()
            turn = next(sending.frames, None)
            if turn is None:
                self._finished(sending)
                continue
            if turns and size + len(turn) > self.frame_limit:
                self.active.appendleft(_Sending(itertools.chain([turn], sending.frames), sending.body))
                break
            turns.append(turn)
            size += len(turn)
            self.active.append(sending)
        if turns:
            await self.write(turns)

    async def write(self, frames: list[bytes]) -> None:
        """One gRPC message of `frames`, each sealed into a record here: this is the order the peer reads them in."""
        seal = self._seal
        await self._write(batching.pack([seal(frame) for frame in frames]))


async def write_fairly(outbox: Outbox, write: Callable[[bytes], Awaitable[None]], frame_limit: int,
                       body_budget: int, seal: Callable[[bytes], bytes]) -> None:
    """Write the outbox's messages to the stream until its end, taking turns frame by frame between messages, and
    packing the frames that are ready at once into one gRPC message (see `batching`).

    A 256 MiB call is hundreds of frames; written back to back they would hold every other thread's small calls
    behind them for as long as the transfer takes. Taking turns keeps them moving. Frames of one message stay in
    order, and messages of one thread cannot overlap (each waits for the peer's answer to the one before).

    Bodies being written at once stay within `body_budget`, the peer's reassembly budget (negotiated in the
    handshake): a message whose body would exceed it waits until earlier bodies are out. Without this, several large
    calls at once would make the peer end the session.

    `seal` (the session's) turns each frame into the record that goes on the wire, in wire order.
    """
    writer = _FairWriter(write, frame_limit, body_budget, seal)
    queue = outbox._queue
    while True:
        while not writer.active or not queue.empty():
            item = queue.get_nowait() if not queue.empty() else await queue.get()
            if item.final:
                await writer.drain()
                await writer.write_packed(item.frames)
                if item.end:
                    return
            else:
                writer.take(item)
        await writer.write_turns()


class _OwnedLock:
    """A lock refused (FailedPreconditionError) to the thread that holds it already.

    That thread is in the middle of encoding or decoding, and the garbage collector can run a finalizer there (a
    `__del__` in enclave or host code) which crosses the boundary: waiting for the lock it holds would hang the
    session for good, and entering the session mid-operation would corrupt it. Reading `_owner` unlocked is safe:
    only this thread can have set it to this thread's id. A class rather than a generator-based context manager:
    it is taken twice per call on each side.
    """

    __slots__ = ("_lock", "_owner")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None

    def __call__(self) -> _OwnedLock:
        return self

    def __enter__(self) -> None:
        me = threading.get_ident()
        if self._owner == me:
            raise FailedPreconditionError("a call across the enclave boundary from code that runs while this thread "
                                          "is sending or receiving (a finalizer run by the garbage collector?)")
        self._lock.acquire()
        self._owner = me

    def __exit__(self, *_: object) -> None:
        self._owner = None
        self._lock.release()


class SessionLink:
    def __init__(self, session: Session, outbox: FrameSink) -> None:
        self.session = session
        self._outbox = outbox
        self._locked = _OwnedLock()
        #: Host threads that ended while the enclave side still had calls of theirs in progress.
        self._gone_when_idle: set[int] = set()

    def send(self, message: Message) -> None:
        """Encode and queue a message (the `send` of HostThreads and EnclaveThreads)."""
        with self._locked():
            encoded = self._encode(message)
        if encoded is not None:
            frames, body = encoded
            self._outbox.put(frames, body=body)

    def _encode(self, message: Message) -> tuple[Sequence[bytes], int] | None:
        """The frames of `message` and the size of the body they carry (0: one frame), or None: nothing to send."""
        if isinstance(message, Call):
            frames = self.session.send_call(message)
        elif isinstance(message, Result):
            try:
                frames = self.session.send_result(message)
            except ResourceExhaustedError as exc:
                # Too large to send: the caller gets that error instead of waiting forever for an answer.
                frames = self.session.send_result(Result(message.call_id, message.thread, exc.status))
            except AsyloError:
                raise  # not an answer the session expects: nobody waits for it
            except Exception as exc:  # no memory to encode it (MemoryError): the same, for the same reason
                status = Status(StatusCode.RESOURCE_EXHAUSTED, f"the result could not be encoded: {exc!r}")
                frames = self.session.send_result(Result(message.call_id, message.thread, status))
        else:
            assert isinstance(message, ThreadGone)
            if not self.session.is_open:
                return None
            if self.session.calls_in_progress(message.thread):
                # Its host thread stopped waiting (an interrupt) while the enclave side still works on its calls:
                # the enclave side hears of it once they are over.
                self._gone_when_idle.add(message.thread)
                return None
            frames = [self.session.send_thread_gone(message.thread)]
        # Several frames: a header and the fragments of a body of the extents' size (see Session._encode).
        extents = message.extents if isinstance(message, Call | Result) else ()
        return frames, sum(len(extent) for extent in extents) if len(frames) > 1 else 0

    def receive(self, data: bytes) -> list[Event]:
        """Events of one gRPC message (one or more frames); a malformed message is a protocol violation."""
        with self._locked():
            try:
                frames = batching.unpack(data, self.session.limits.max_frame_size + FRAGMENT_OVERHEAD)
            except InvalidArgumentError as exc:
                return self.session.fail(f"a malformed message: {exc.message}")
            events: list[Event] = []
            for frame in frames:
                events += self.session.receive(frame)
            self._send_pongs()
            if self._gone_when_idle:  # hardly ever: an interrupted host thread whose calls were still running
                self._report_idle_threads()
            return events

    def receive_frame(self, frame: bytes | memoryview) -> list[Event]:
        """Events of one frame (the direct stream's unit: one record)."""
        with self._locked():
            events = self.session.receive(frame)
            self._send_pongs()
            if self._gone_when_idle:
                self._report_idle_threads()
            return events

    def _send_pongs(self) -> None:
        pongs = self.session.data_to_send()
        if pongs:  # answered at once: the peer's deadline runs from its ping
            with contextlib.suppress(EnclaveUnavailable):
                self._outbox.put_soon(pongs)

    def fail(self, message: str, code: StatusCode = StatusCode.INTERNAL) -> list[Event]:
        """End the session for a violation the transport found (a malformed message or record)."""
        with self._locked():
            return self.session.fail(message, code)

    def _report_idle_threads(self) -> None:
        """Tell the enclave side of ended host threads whose last calls are now over (the lock is held)."""
        for thread in [t for t in self._gone_when_idle if not self.session.calls_in_progress(t)]:
            self._gone_when_idle.discard(thread)
            if self.session.is_open:
                with contextlib.suppress(EnclaveUnavailable):
                    self._outbox.put_soon([self.session.send_thread_gone(thread)])

    def tick(self, now: float) -> SessionEnded | None:
        """Send the pings due at `now`; the SessionEnded if the peer left our last one unanswered too long."""
        with self._locked():
            try:
                frames = self.session.tick(now)
            except PeerUnresponsive as exc:
                return exc.ended
            if frames:
                with contextlib.suppress(EnclaveUnavailable):
                    self._outbox.put_soon(frames)
            return None

    def goodbye(self, status: Status) -> None:
        """Say goodbye (if the session is still open) and end the stream; safe to call more than once."""
        with self._locked():
            frames = [self.session.send_goodbye(status)] if self.session.is_open else []
        with contextlib.suppress(EnclaveUnavailable):
            self._outbox.close(frames)

    def send_raw(self, frames: list[bytes]) -> None:
        """Send frames the session already produced (a goodbye after a violation) and end the stream."""
        try:
            self._outbox.close(frames)
        except EnclaveUnavailable:
            _log.debug("could not send the final frames: the connection is closed")


async def keep_alive(link: SessionLink, on_ended: Callable[[SessionEnded], None],
                     clock: Callable[[], float] = time.monotonic) -> None:
    """Tick the session's liveness clock until the peer leaves a ping unanswered too long: then say why (the goodbye
    goes out if the stream still takes it) and call `on_ended`, which ends the transport's side of the session.

    Runs on the stream's event loop, beside its reader and writer, so that what it measures is what the transport
    actually delivered: a stalled stream (a frozen peer, a lost frame, a corrupted length prefix that leaves gRPC
    waiting for bytes that never come) stops the pongs as surely as a dead one."""
    period = min(_TICK_PERIOD, link.session.limits.ping_interval / 4)
    while True:
        await asyncio.sleep(period)
        ended = link.tick(clock())
        if ended is not None:
            _log.warning("ending the session: %s", ended.status.message)
            if ended.goodbye is not None:
                link.send_raw([ended.goodbye])
            on_ended(ended)
            return
