"""How threads share one direct stream: who writes, who reads, and who keeps the session alive in between.

There is no event loop and no writer thread on the data path:

- **Writing** (`DirectWriter`): a thread that sends a call or a result seals and writes its own frames, one frame at
  a time under the write lock, so that the frames of a large body take turns with other threads' small ones. The
  bodies being written at once stay within the peer's reassembly budget (negotiated in the handshake): a body that
  would exceed it waits until earlier ones are out, as on the gRPC stream.
- **Reading, host side** (`ReadTurn`): the host's waiting threads take turns reading the socket (leaders and
  followers). The thread whose turn it is reads records and hands each message to the thread it belongs to; when
  its own answer has come, it passes the turn to another waiting thread. A lone caller thus reads its own answer:
  no thread crossing at all. **Proxy side**: one reader thread hands each call to its enclave worker, which writes
  its own result.
- **Keeping** (`Keeper`): a thread that wakes every quarter ping interval to tick the session's liveness clock,
  to write the small frames a reader must not wait to write (pongs, thread-gone reports: see below), and, on the
  host, to read whatever arrived while no caller was waiting (the proxy's pings must be answered between calls).

The rule that keeps this free of deadlocks: **a thread never waits for the write lock while it holds the turn to
read.** A reader that has to send something (a pong, an answer refusing a call) queues it with `put_soon`, and the
keeper — or whichever thread writes next — writes it. Were readers to wait, two peers each blocked writing into a
full socket, whose readers each wait for the write lock, would never read again.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence

from asylo.primitives.matching import Inbox, InboxMessage, Nudge, closed_message
from asylo.remote.direct_stream import HEADER_SIZE, RecordStream
from asylo.session.body import BodyFrames
from asylo.status import EnclaveUnavailable

_log = logging.getLogger(__name__)

#: Room a sealed record needs beyond its plaintext: the GCM tag (16) and what the cipher may write ahead (15).
_SEAL_ROOM = 16 + 15
#: Frames this large are sealed into the writer's buffer rather than into a fresh one (small ones: `seal`, whose
#: allocation costs nothing worth a copy into the buffer).
_SEAL_INTO_FROM = 64 * 1024
#: How often the keeper wakes at most (a quarter of the ping interval, if that is less): how late a ping, a pong
#: from a reader, or a missed deadline may be noticed.
TICK_PERIOD = 0.25


class DirectWriter:
    """The direct stream's `FrameSink`: the sending thread writes; readers queue (see the module's rule)."""

    def __init__(self, stream: RecordStream, seal: Callable[[bytes], bytes], *, body_budget: int,
                 on_broken: Callable[[str], None],
                 seal_into: Callable[[Sequence[bytes | memoryview], memoryview], int] | None = None) -> None:
        self._stream = stream
        self._seal = seal
        self._seal_into = seal_into
        #: Where a large body's fragments are sealed, one after another (made at the first such body): a fresh
        #: megabyte per fragment costs more in page faults than sealing it does.
        self._out: bytearray | None = None
        self._lock = threading.Lock()
        self._pending: collections.deque[bytes] = collections.deque()
        self._closed = False
        self._broken: str | None = None
        self._on_broken = on_broken
        self._budget = body_budget
        self._in_flight = 0
        self._room = threading.Condition()
        self._end_requested = False
        #: Set (per thread) while a thread holds the turn to read: its `put` becomes `put_soon`.
        self._reading = threading.local()
        #: Woken when frames are queued for the keeper.
        self.queued = threading.Event()

    def set_reading(self, active: bool) -> None:
        """Mark the current thread as the reader (True) until it is unmarked (see the module's rule). Set and unset
        around each read (in a try/finally), not a context manager: it is every call's path."""
        self._reading.active = active

    def put(self, frames: Sequence[bytes], *, body: int = 0) -> None:
        if getattr(self._reading, "active", False):
            self.put_soon(frames)
            return
        self._check_open()
        if body:
            self._reserve(body)
        try:
            if isinstance(frames, BodyFrames) and self._seal_into is not None:
                # A large body: each fragment sealed from views of the extents into one buffer, sent from there.
                for index in range(len(frames)):
                    parts = frames.frame_parts(index)
                    with self._lock:
                        self._check_open()
                        self._write_pending()
                        self._write_parts(parts)
            else:
                for frame in frames:
                    with self._lock:
                        self._check_open()
                        self._write_pending()
                        if len(frame) >= _SEAL_INTO_FROM and self._seal_into is not None:
                            self._write_parts([frame])
                        else:
                            self._write(frame)
        except EnclaveUnavailable:
            raise
        except Exception as exc:
            # A fragment that could not be made (MemoryError): frames are lost, so the session cannot go on.
            self._break(f"a frame could not be made: {exc!r}")
            raise EnclaveUnavailable(f"writing failed: a frame could not be made: {exc!r}") from None
        except BaseException:
            # Interrupted (Ctrl-C on the thread that writes) between a body's frames: the peer would hold the
            # half-sent body for the rest of the session. (Inside a record, `_write` has ended the session already.)
            if len(frames) > 1:
                self._break("interrupted in the middle of sending a message")
            raise
        finally:
            if body:
                self._release(body)
        if self._pending:
            self.queued.set()

    def put_soon(self, frames: Sequence[bytes]) -> None:
        self._check_open()
        self._pending.extend(frames)
        self.queued.set()

    def write_queued(self) -> None:
        """Write what readers queued (the keeper's job; it may wait for the lock, being no reader)."""
        if not self._pending or self._closed:
            return
        with self._lock:
            if not self._closed:
                self._write_pending()

    def close(self, frames: Sequence[bytes] = ()) -> None:
        """Write everything queued, then `frames`, then end our half of the stream. From a reader, the keeper
        does it (it is queued, with the end)."""
        if self._closed:
            return
        if getattr(self._reading, "active", False):
            self._pending.extend(frames)
            self._end_requested = True
            self.queued.set()
            return
        with self._lock:
            if self._closed:
                return
            try:
                self._write_pending()
                for frame in frames:
                    self._write(frame)
            except EnclaveUnavailable as exc:
                _log.debug("could not write the last frames: %s", exc.message)
            finally:
                self._closed = True
                self._stream.end_writing()
                with self._room:
                    self._room.notify_all()

    @property
    def end_requested(self) -> bool:
        """A reader asked for the end of the stream (`close` from a reader): the keeper calls `close()`."""
        return self._end_requested

    # -- under the lock ------------------------------------------------------------------------------------------

    def _write_pending(self) -> None:
        while self._pending:
            self._write(self._pending.popleft())

    def _write_parts(self, parts: Sequence[bytes | memoryview]) -> None:
        assert self._seal_into is not None
        size = sum(len(part) for part in parts)
        room = HEADER_SIZE + size + _SEAL_ROOM
        if self._out is None or len(self._out) < room:
            self._out = bytearray(room)
        out, seal_into = self._out, self._seal_into
        self._send_record(lambda: self._stream.write_framed(out, seal_into(parts, memoryview(out)[HEADER_SIZE:])))

    def _write(self, frame: bytes) -> None:
        # Sealed here, under the lock: records must go out in the order they are sealed.
        self._send_record(lambda: self._stream.write(self._seal(frame)))

    def _send_record(self, seal_and_send: Callable[[], None]) -> None:
        """Seal and send one record; any failure ends the session. A broken stream says why; an interrupt (Ctrl-C)
        has spent the record's number or put part of it on the wire, so the stream can no longer be read as
        records: ended here, cleanly, rather than failing later as an unreadable record."""
        try:
            seal_and_send()
        except EnclaveUnavailable as exc:
            self._break(exc.message)
            raise
        except BaseException:
            self._break("interrupted while writing a record")
            raise

    # -- state ---------------------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._broken is not None:
            raise EnclaveUnavailable(f"the connection is broken: {self._broken}")
        if self._closed:
            raise EnclaveUnavailable("the connection is closed")

    def _break(self, reason: str) -> None:
        first = self._broken is None
        self._broken = self._broken or reason
        if first:
            self._on_broken(reason)
        with self._room:
            self._room.notify_all()

    def _reserve(self, body: int) -> None:
        with self._room:
            while self._in_flight and self._in_flight + body > self._budget:
                self._check_open()
                self._room.wait(1.0)
            self._in_flight += body

    def _release(self, body: int) -> None:
        with self._room:
            self._in_flight -= body
            self._room.notify_all()


class ReadTurn:
    """The host's waiting threads take turns reading the stream (leader and followers); see the module.

    `read_one` reads one record and hands its messages to their threads' inboxes (including, maybe, the reader's
    own); once the stream is over it calls `end`, after telling every inbox that the session closed.
    """

    def __init__(self, read_one: Callable[[], None]) -> None:
        self._read_one = read_one
        self._over: str | None = None
        self._lock = threading.Lock()
        self._taken = False
        self._waiting: collections.deque[Inbox] = collections.deque()

    def next_message(self, inbox: Inbox) -> InboxMessage:
        """The `NextMessage` of the host's threads: this thread's next message, reading the stream when it is this
        thread's turn."""
        while True:
            if not inbox.empty():  # (no exception on the way: this is every call's path)
                message = inbox.get()
                if not isinstance(message, Nudge):
                    return message
                continue  # a stale nudge (see _leave_queue): look again
            if self._over is not None:
                return closed_message(self._over)
            with self._lock:
                mine = not self._taken
                if mine:
                    self._taken = True
                else:
                    self._waiting.append(inbox)
            if not mine:
                message = inbox.get()
                if not isinstance(message, Nudge):
                    self._leave_queue(inbox)
                    return message
                # The turn was passed to us.
            try:
                while inbox.empty() and self._over is None:
                    self._read_one()
            finally:
                self._pass_turn()

    def end(self, reason: str) -> None:
        """The stream is over: threads that would read from now on get `closed_message(reason)` instead."""
        self._over = self._over or reason

    def read_available(self, readable: Callable[[], bool]) -> None:
        """Between calls (the keeper's part): if no thread reads, read what has arrived, without waiting for more."""
        with self._lock:
            if self._taken:
                return
            self._taken = True
        try:
            while self._over is None and readable():
                self._read_one()
        finally:
            self._pass_turn()

    def _leave_queue(self, inbox: Inbox) -> None:
        """A waiter's own message came first: leave the queue — or, if the turn was passed to it meanwhile (its
        nudge is in its inbox, behind the message), take the nudge out and pass the turn on."""
        with self._lock:
            try:
                self._waiting.remove(inbox)
                return
            except ValueError:
                pass  # removed by _pass_turn: the nudge is there
        held: list[InboxMessage] = []
        while not isinstance(message := inbox.get(), Nudge):
            held.append(message)
        for kept in held:
            inbox.put(kept)
        self._pass_turn()

    def _pass_turn(self) -> None:
        with self._lock:
            if self._waiting:
                self._waiting.popleft().put(Nudge())
            else:
                self._taken = False


class Keeper:
    """The thread that keeps a direct session alive: ticks, queued frames, (host) reading between calls.

    `tick()` returns False when the session is over (the keeper then stops); `idle_read()` is called every period
    too, and may read what arrived while nobody else reads."""

    def __init__(self, name: str, writer: DirectWriter, tick: Callable[[float], bool],
                 idle_read: Callable[[], None] | None, period: float) -> None:
        self._writer = writer
        self._tick = tick
        self._idle_read = idle_read
        self._period = period
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._writer.queued.set()
        if self._thread is not threading.current_thread() and self._thread.ident is not None:
            self._thread.join(5)

    def _run(self) -> None:
        next_tick = time.monotonic() + self._period
        while not self._stopped.is_set():
            self._writer.queued.wait(max(0.0, next_tick - time.monotonic()))
            self._writer.queued.clear()
            if self._stopped.is_set():
                return
            try:
                self._writer.write_queued()
                if self._writer.end_requested:
                    self._writer.close()
            except EnclaveUnavailable:
                pass  # the writer reported it (on_broken)
            now = time.monotonic()
            if now < next_tick:
                continue
            next_tick = now + self._period
            if not self._tick(now):
                return
            if self._idle_read is not None:
                self._idle_read()
