"""SessionLink: the thread-safe bridge between the thread-matching layer and a session's frames.

Threads on either side send Calls, Results and ThreadGone messages from wherever they run; the link encodes each with
the session (under one lock, so frames leave in the order the session accepted them) and hands the frames to an
`Outbox`, which the stream's writer task drains on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from asylo.primitives.matching import Call, Message, Result, ThreadGone
from asylo.session import Session
from asylo.session.connection import Event
from asylo.status import EnclaveUnavailable, ResourceExhaustedError, Status

_log = logging.getLogger(__name__)

#: Written last: tells the writer task to half-close the stream.
END_OF_STREAM: list[bytes] = []


class Outbox:
    """Lists of frames for the writer task, put from any thread, in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[list[bytes]] = asyncio.Queue()
        self._closed = False

    def put(self, frames: list[bytes]) -> None:
        if self._closed:
            raise EnclaveUnavailable("the connection is closed")
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, frames)
        except RuntimeError:  # the loop is closed: the connection is gone
            self._closed = True
            raise EnclaveUnavailable("the connection is closed") from None

    def close(self) -> None:
        """Put END_OF_STREAM and refuse everything after it."""
        if not self._closed:
            self.put(END_OF_STREAM)
            self._closed = True

    async def get(self) -> list[bytes]:
        return await self._queue.get()


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
        with self._lock:
            try:
                if self.session.is_open:
                    self._outbox.put([self.session.send_goodbye(status)])
                self._outbox.close()
            except EnclaveUnavailable:
                pass

    def send_raw(self, frames: list[bytes]) -> None:
        """Queue frames the session already produced (a goodbye after a violation)."""
        with self._lock:
            try:
                self._outbox.put(frames)
                self._outbox.close()
            except EnclaveUnavailable:
                _log.debug("could not send the final frames: the connection is closed")
