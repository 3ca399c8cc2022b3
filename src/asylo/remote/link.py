"""SessionLink: the thread-safe bridge between the thread-matching layer and a session's frames.

Threads on either side send Calls, Results and ThreadGone messages from wherever they run; the link encodes each with
the session (under one lock, so frames leave in the order the session accepted them) and hands the frames to an
`Outbox`, which the stream's writer task drains on the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass

from asylo.primitives.matching import Call, Message, Result, ThreadGone
from asylo.session import Session
from asylo.session.connection import Event
from asylo.status import EnclaveUnavailable, ResourceExhaustedError, Status

_log = logging.getLogger(__name__)

@dataclass(frozen=True)
class _Item:
    frames: Sequence[bytes]
    #: Written only after everything queued before it (a goodbye must not overtake the calls it ends).
    final: bool = False
    #: After this item the stream is half-closed.
    end: bool = False


class Outbox:
    """Messages (lists of frames) for the writer task, put from any thread, in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._closed = False

    def put(self, frames: Sequence[bytes], *, final: bool = False) -> None:
        self._put(_Item(frames, final=final))

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


async def write_fairly(outbox: Outbox, write: Callable[[bytes], Awaitable[None]]) -> None:
    """Write the outbox's messages to the stream until its end, taking turns frame by frame between messages.

    A 256 MiB call is hundreds of frames; written back to back they would hold every other thread's small calls
    behind them for as long as the transfer takes. Taking turns keeps them moving. Frames of one message stay in
    order, and messages of one thread cannot overlap (each waits for the peer's answer to the one before).
    """
    active: collections.deque[Iterator[bytes]] = collections.deque()
    queue = outbox._queue
    while True:
        item = queue.get_nowait() if active and not queue.empty() else (None if active else await queue.get())
        if item is not None:
            if item.final:
                while active:
                    for frame in active.popleft():
                        await write(frame)
                for frame in item.frames:
                    await write(frame)
                if item.end:
                    return
            else:
                active.append(iter(item.frames))
            continue
        frames = active.popleft()
        turn = next(frames, None)
        if turn is not None:
            await write(turn)
            active.append(frames)


class SessionLink:
    def __init__(self, session: Session, outbox: Outbox) -> None:
        self.session = session
        self._outbox = outbox
        self._lock = threading.Lock()

    def send(self, message: Message) -> None:
        """Encode and queue a message (the `send` of HostThreads and EnclaveThreads)."""
        with self._lock:
            if isinstance(message, Call):
                frames = self.session.send_call(message)
            elif isinstance(message, Result):
                try:
                    frames = self.session.send_result(message)
                except ResourceExhaustedError as exc:
                    # Too large to send: the caller gets that error instead of waiting forever for an answer.
                    frames = self.session.send_result(Result(message.call_id, message.thread, exc.status))
            else:
                assert isinstance(message, ThreadGone)
                if not self.session.is_open:
                    return
                frames = [self.session.send_thread_gone(message.thread)]
            self._outbox.put(frames)

    def receive(self, data: bytes) -> list[Event]:
        with self._lock:
            return self.session.receive(data)

    def goodbye(self, status: Status) -> None:
        """Say goodbye (if the session is still open) and end the stream; safe to call more than once."""
        with self._lock, contextlib.suppress(EnclaveUnavailable):
            self._outbox.close([self.session.send_goodbye(status)] if self.session.is_open else [])

    def send_raw(self, frames: list[bytes]) -> None:
        """Queue frames the session already produced (a goodbye after a violation) and end the stream."""
        with self._lock:
            try:
                self._outbox.close(frames)
            except EnclaveUnavailable:
                _log.debug("could not send the final frames: the connection is closed")
