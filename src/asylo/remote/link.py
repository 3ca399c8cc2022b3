"""SessionLink: the thread-safe bridge between the thread-matching layer and a session's frames.

Threads on either side send Calls, Results and ThreadGone messages from wherever they run; the link encodes each with
the session (under one lock, so frames leave in the order the session accepted them) and hands the frames to an
`Outbox`, which the stream's writer task drains on the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass

from asylo.primitives.matching import Call, Message, Result, ThreadGone
from asylo.remote import batching
from asylo.session import Session
from asylo.session.body import FRAGMENT_OVERHEAD
from asylo.session.connection import Event
from asylo.status import EnclaveUnavailable, InvalidArgumentError, ResourceExhaustedError, Status

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


async def write_fairly(outbox: Outbox, write: Callable[[bytes], Awaitable[None]], frame_limit: int) -> None:
    """Write the outbox's messages to the stream until its end, taking turns frame by frame between messages, and
    packing the frames that are ready at once into one gRPC message (see `batching`).

    A 256 MiB call is hundreds of frames; written back to back they would hold every other thread's small calls
    behind them for as long as the transfer takes. Taking turns keeps them moving. Frames of one message stay in
    order, and messages of one thread cannot overlap (each waits for the peer's answer to the one before).
    """
    active: collections.deque[Iterator[bytes]] = collections.deque()
    queue = outbox._queue

    async def flush(frames: list[bytes]) -> None:
        batch: list[bytes] = []
        size = 0
        for frame in frames:
            if batch and (size + len(frame) > frame_limit or len(batch) == batching.MAX_FRAMES_PER_MESSAGE):
                await write(batching.pack(batch))
                batch, size = [], 0
            batch.append(frame)
            size += len(frame)
        if batch:
            await write(batching.pack(batch))

    while True:
        while not active or not queue.empty():
            item = queue.get_nowait() if not queue.empty() else await queue.get()
            if item.final:
                pending = [frame for frames in active for frame in frames]
                active.clear()
                await flush(pending + list(item.frames))
                if item.end:
                    return
            else:
                active.append(iter(item.frames))
        # One frame from each message in turn, as many as fit in one gRPC message.
        turns: list[bytes] = []
        size = 0
        while active and len(turns) < batching.MAX_FRAMES_PER_MESSAGE:
            frames = active.popleft()
            turn = next(frames, None)
            if turn is None:
                continue
            if turns and size + len(turn) > frame_limit:
                active.appendleft(itertools.chain([turn], frames))
                break
            turns.append(turn)
            size += len(turn)
            active.append(frames)
        if turns:
            await write(batching.pack(turns))


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
        """Events of one gRPC message (one or more frames); a malformed message is a protocol violation."""
        with self._lock:
            try:
                frames = batching.unpack(data, self.session.limits.max_frame_size + FRAGMENT_OVERHEAD)
            except InvalidArgumentError as exc:
                return self.session.fail(f"a malformed message: {exc.message}")
            events: list[Event] = []
            for frame in frames:
                events += self.session.receive(frame)
            return events

    def first_frame(self, data: bytes) -> memoryview:
        """The one frame of the first message (hello or welcome), which travels alone."""
        frames = batching.unpack(data, self.session.limits.max_frame_size + FRAGMENT_OVERHEAD)
        if len(frames) != 1:
            raise InvalidArgumentError(f"the first message holds {len(frames)} frames, not one")
        return frames[0]

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
