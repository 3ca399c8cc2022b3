"""Thread matching: the calls of one host thread run on one enclave thread, and its exit calls come back to it.

This is Asylo's core idea, and what makes a remote enclave behave like a local one. Each host thread that enters the
enclave gets its own enclave worker thread, for as long as the host thread lives. While the host thread waits for its
entry call, it serves the exit calls that its worker makes; while the worker waits for an exit call, it serves the
entry calls that the host thread makes from inside the exit handler. So thread-local state stays with its thread on both
sides, and re-entrancy works at any depth: nested calls finish before the calls around them (a stack), so the answer a
waiting thread receives is always the one to its innermost call.

Both sides run the same loop (`_wait_for_result`). The transport between them is a plain function that delivers a
message to the other side: a direct hand-over in-process (the sim backend) or a frame on a gRPC stream (the remote
backend). This module imports no gRPC and opens no sockets.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from asylo.status import (
    AsyloError,
    EnclaveUnavailable,
    FailedPreconditionError,
    InternalError,
    ResourceExhaustedError,
    Status,
    StatusCode,
)

_log = logging.getLogger(__name__)

#: Enclave worker threads at most: one per live host thread that has entered the enclave. Each costs a thread and its
#: stack, so a host that spawns threads without bound must not be able to make the enclave side do the same.
DEFAULT_MAX_THREADS = 1024


@dataclass(frozen=True)
class Call:
    """An entry call (host -> enclave) or an exit call (enclave -> host). `thread` is the host thread's key."""

    call_id: int
    thread: int
    selector: int
    extents: Sequence[bytes]


@dataclass(frozen=True)
class Result:
    """The answer to exactly one Call: the same call_id and thread; extents only when status is OK."""

    call_id: int
    thread: int
    status: Status
    extents: Sequence[bytes] = ()


@dataclass(frozen=True)
class ThreadGone:
    """The host thread with this key has ended: its enclave worker can stop."""

    thread: int


@dataclass(frozen=True)
class _Closed:
    status: Status


Message = Call | Result | ThreadGone
#: Delivers a message to the other side. A ThreadGone may come while the other side still works on calls of that
#: thread (its host thread stopped waiting: an interrupt); it takes effect once they are over.
Send = Callable[[Message], None]
Handler = Callable[[int, Sequence[bytes]], list[bytes]]


def _serve(call: Call, handler: Handler, send: Send) -> BaseException | None:
    """Run one incoming call and always send its Result: an exception becomes the Result's status, never a crash
    and never a caller left waiting. Returns a BaseException that is not an Exception (KeyboardInterrupt,
    SystemExit) after answering, for the caller to decide whether to re-raise it."""
    interrupt: BaseException | None = None
    try:
        extents = handler(call.selector, call.extents)
        result = Result(call.call_id, call.thread, Status(), extents)
    except AsyloError as exc:
        result = Result(call.call_id, call.thread, exc.status)
    except Exception as exc:
        _log.debug("call %d (selector %d) failed", call.call_id, call.selector, exc_info=True)
        result = Result(call.call_id, call.thread, Status.from_exception(exc))
    except BaseException as exc:
        interrupt = exc
        result = Result(call.call_id, call.thread, Status(StatusCode.CANCELLED,
                                                          f"the call was interrupted: {type(exc).__name__}"))
    try:
        send(result)
    except AsyloError as exc:
        # The other side is gone (or the transport refused the result): nobody is left to tell.
        _log.debug("could not send the result of call %d: %s", call.call_id, exc)
    except Exception:
        # The transport failed in a way it should not (it answers what it cannot encode with an error itself).
        # This thread must go on serving its peer thread whatever happens, so: log it, loudly.
        _log.exception("could not send the result of call %d", call.call_id)
    return interrupt


@dataclass(frozen=True)
class Nudge:
    """Carries nothing: a transport puts one in a waiting thread's inbox to wake it for a reason of its own (the
    direct stream hands its turn to read the socket over this way). Never returned by a `NextMessage`."""


#: What a waiting thread can receive: a call to serve, the result it waits for, or the end of the connection.
InboxMessage = Call | Result | _Closed
Inbox = queue.SimpleQueue[InboxMessage | Nudge]
#: How a waiting thread gets its next message: by default it waits on its inbox, which the transport fills; a
#: transport may instead have the waiting thread read the stream itself (the direct stream's host side), so that a
#: lone caller's answer reaches it without passing through another thread.
NextMessage = Callable[[Inbox], InboxMessage]


def closed_message(reason: str) -> InboxMessage:
    """The message that tells a waiting thread the connection is over (its call fails with EnclaveUnavailable)."""
    return _Closed(Status(EnclaveUnavailable.code, reason))


def _from_inbox(inbox: Inbox) -> InboxMessage:
    while isinstance(message := inbox.get(), Nudge):
        pass
    return message


def _wait_for_result(inbox: Inbox, call_id: int, handler: Handler, send: Send,
                     next_message: NextMessage = _from_inbox) -> list[bytes]:
    """Block until the Result for `call_id` arrives, serving the calls that reach this thread meanwhile."""
    while True:
        message = next_message(inbox)
        if isinstance(message, Call):
            interrupt = _serve(message, handler, send)
            if interrupt is not None:
                raise interrupt
        elif isinstance(message, Result):
            if message.call_id != call_id:
                # Nested calls finish first, so any other id means the peer broke the protocol.
                raise InternalError(f"protocol error: expected the result of call {call_id}, got call "
                                    f"{message.call_id}")
            message.status.raise_for_status()
            return list(message.extents)
        else:
            inbox.put(message)  # keep the close visible to outer waits on this thread
            raise EnclaveUnavailable(message.status.message)


@dataclass(eq=False)
class _HostThreadSlot:
    key: int
    inbox: Inbox = field(default_factory=queue.SimpleQueue)


def _report_thread_gone(threads_ref: weakref.ref[HostThreads], key: int) -> None:
    threads = threads_ref()
    if threads is not None:
        threads._thread_gone(key)


class HostThreads:
    """The host side: makes entry calls on the calling thread and serves exit calls on it.

    `send` delivers a message to the enclave side; the transport calls `deliver` with what comes back.
    `exit_handler(selector, extents)` runs an exit call.
    """

    _keys = itertools.count(1)

    def __init__(self, send: Send, exit_handler: Handler, *, next_message: NextMessage = _from_inbox) -> None:
        self._send = send
        self._exit_handler = exit_handler
        self._next_message = next_message
        self._local = threading.local()
        # Inboxes only: the slot itself must stay reachable from its thread's locals alone, so that it is collected
        # (and the enclave told) when the thread ends.
        self._inboxes: dict[int, Inbox] = {}
        #: Keys of slots whose thread stopped waiting (an interrupt): their late answers are dropped and their exit
        #: calls answered CANCELLED, for as long as the enclave side may still send any.
        self._abandoned: set[int] = set()
        #: Keys of host threads that ended, for the reporter thread (None stops it).
        self._gone: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._reporter: threading.Thread | None = None
        self._finalizers: list[weakref.finalize[..., _HostThreadSlot]] = []
        self._lock = threading.Lock()
        self._closed: Status | None = None
        self._call_ids = itertools.count(1)

    def _slot(self) -> _HostThreadSlot:
        slot: _HostThreadSlot | None = getattr(self._local, "slot", None)
        if slot is None or slot.key not in self._inboxes:
            slot = _HostThreadSlot(next(self._keys))
            with self._lock:
                self._inboxes[slot.key] = slot.inbox
                if self._reporter is None and self._closed is None:
                    self._reporter = threading.Thread(target=self._report_gone, daemon=True,
                                                      name=f"asylo-thread-reporter-{slot.key}")
                    self._reporter.start()
            self._local.slot = slot
            # The slot lives in this thread's locals, so it is collected when the thread ends: tell the enclave.
            # Weakly, so that a closed HostThreads (and its enclave) is not kept alive by a live thread, and not at
            # interpreter exit, where atexit hooks run in reverse and this one would pull the slot out from under
            # the manager's shutdown.
            finalizer = weakref.finalize(slot, _report_thread_gone, weakref.ref(self), slot.key)
            finalizer.atexit = False
            with self._lock:
                self._finalizers = [f for f in self._finalizers if f.alive]
                self._finalizers.append(finalizer)
        return slot

    def _thread_gone(self, key: int) -> None:
        # Called by a finalizer, which may run in any thread at any allocation — even one that holds the transport's
        # lock. So nothing is sent from here: SimpleQueue.put is safe in finalizers, and a reporter thread sends.
        self._gone.put(key)

    def _report_gone(self) -> None:
        while (key := self._gone.get()) is not None:
            with self._lock:
                self._inboxes.pop(key, None)
                closed = self._closed is not None
            if not closed:
                try:
                    self._send(ThreadGone(key))
                except Exception:  # the transport may be gone already; the worker then goes with it
                    _log.debug("could not report the end of host thread %d", key, exc_info=True)

    def enter(self, selector: int, extents: Sequence[bytes]) -> list[bytes]:
        """Make an entry call from this thread and wait for it, serving its exit calls meanwhile."""
        if self._closed is not None:
            raise EnclaveUnavailable(self._closed.message)
        slot = self._slot()
        key, inbox = slot.key, slot.inbox
        call_id = next(self._call_ids)
        try:
            # Sent inside the try: an interrupt while the call goes out (whether it went or not) leaves this thread
            # a fresh slot, not one whose peer may still be busy with the call.
            self._send(Call(call_id, key, selector, list(extents)))
            return _wait_for_result(inbox, call_id, self._exit_handler, self._send, self._next_message)
        except Exception:
            raise
        except BaseException:
            self._abandon(slot)
            raise
        finally:
            del slot  # a traceback that holds this frame must not keep the slot (and its enclave thread) alive

    def _abandon(self, slot: _HostThreadSlot) -> None:
        # This thread stopped waiting in the middle of a call (or while sending it): it gets a fresh slot next time.
        # What the enclave side still sends the old one is absorbed by `deliver`, and the old slot's end is reported
        # like any thread's (by its finalizer): the transport tells the enclave side once nothing of that thread is
        # in progress there (see `Send`).
        with self._lock:
            if self._inboxes.pop(slot.key, None) is not None:
                self._abandoned.add(slot.key)
        self._local.slot = None

    def deliver(self, message: Call | Result) -> None:
        """Route a message from the enclave to the host thread it belongs to."""
        with self._lock:
            inbox = self._inboxes.get(message.thread)
            abandoned = inbox is None and message.thread in self._abandoned
        if inbox is not None:
            inbox.put(message)
        elif abandoned and isinstance(message, Call):
            self._send(Result(message.call_id, message.thread,
                              Status(StatusCode.CANCELLED, "the host thread stopped waiting for its call")))
        else:
            # A late answer for a thread that stopped waiting, or traffic for a thread that ended or a connection
            # that closed: nobody waits for it.
            _log.debug("dropped a message for host thread %d, which is gone", message.thread)

    def close(self, reason: str) -> None:
        """Fail every waiting and every later call with EnclaveUnavailable(reason)."""
        with self._lock:
            if self._closed is None:
                self._closed = Status(EnclaveUnavailable.code, reason)
            inboxes = list(self._inboxes.values())
            closed = _Closed(self._closed)
            finalizers, self._finalizers = self._finalizers, []
        for finalizer in finalizers:
            finalizer.detach()
        for inbox in inboxes:
            inbox.put(closed)
        self._gone.put(None)
        reporter = self._reporter
        if reporter is not None and reporter is not threading.current_thread():
            reporter.join(5)

    @property
    def closed(self) -> bool:
        return self._closed is not None


@dataclass
class _Worker:
    key: int
    thread: threading.Thread | None = None
    inbox: Inbox = field(default_factory=queue.SimpleQueue)


class EnclaveThreads:
    """The enclave side: one worker thread per host thread; runs entry calls and makes exit calls.

    `send` delivers a message to the host side; the transport calls `deliver` with what the host sends.
    `entry_handler(selector, extents)` runs an entry call (the trusted runtime's `enter`).
    """

    def __init__(self, send: Send, entry_handler: Handler, *, name: str = "enclave",
                 max_threads: int = DEFAULT_MAX_THREADS) -> None:
        self._send = send
        self._entry_handler = entry_handler
        self._name = name
        self._max_threads = max_threads
        self._workers: dict[int, _Worker] = {}
        self._lock = threading.Lock()
        self._current = threading.local()
        self._call_ids = itertools.count(1)
        self._closed: Status | None = None

    def deliver(self, message: Message) -> None:
        """Route a message from the host: a Call may start a worker, a Result wakes the worker waiting for it."""
        if isinstance(message, ThreadGone):
            self._retire(message.thread)
            return
        refusal: Status | None = None
        with self._lock:
            worker = self._workers.get(message.thread)
            if self._closed is not None:
                refusal = self._closed
            elif worker is None and isinstance(message, Call):
                if len(self._workers) >= self._max_threads:
                    # Refused, not queued: the host thread gets a clear error instead of waiting forever.
                    refusal = Status(ResourceExhaustedError.code, f"enclave {self._name!r} already serves "
                                     f"{self._max_threads} host threads (max_threads)")
                else:
                    worker = self._start_worker(message.thread)
                    if worker is None:
                        refusal = Status(ResourceExhaustedError.code, f"enclave {self._name!r} cannot start a "
                                         f"thread for this host thread (the system refused a new thread)")
        if refusal is not None:
            if isinstance(message, Call):
                self._send(Result(message.call_id, message.thread, refusal))
            return
        if worker is None:
            raise InternalError(f"protocol error: result for host thread {message.thread}, which has no call "
                                f"in the enclave")
        worker.inbox.put(message)

    def _start_worker(self, key: int) -> _Worker | None:
        """A started worker for host thread `key`, or None if no thread can be started (a pids limit, say)."""
        worker = _Worker(key)
        thread = threading.Thread(target=self._run_worker, args=(worker,), daemon=True,
                                  name=f"{self._name}-worker-{key}")
        try:
            thread.start()
        except RuntimeError:  # "can't start new thread"
            _log.warning("enclave %r: cannot start a worker thread for host thread %d", self._name, key)
            return None
        worker.thread = thread
        self._workers[key] = worker
        return worker

    def _retire(self, key: int) -> None:
        with self._lock:
            worker = self._workers.pop(key, None)
        if worker is not None:
            worker.inbox.put(_Closed(Status(EnclaveUnavailable.code, "host thread ended")))

    def _run_worker(self, worker: _Worker) -> None:
        self._current.worker = worker
        while True:
            message = worker.inbox.get()
            if isinstance(message, _Closed):
                return
            if isinstance(message, Nudge):
                continue
            if isinstance(message, Result):
                _log.warning("enclave %r: dropped a result for call %d that no one waits for", self._name,
                             message.call_id)
                continue
            # A KeyboardInterrupt or SystemExit in enclave code was answered (CANCELLED) by _serve; the worker
            # goes on serving its host thread rather than dying with the thread's calls unanswered.
            _serve(message, self._entry_handler, self._send)
            del message  # an idle worker must not keep its last call's payload alive

    def exit_call(self, selector: int, extents: Sequence[bytes]) -> list[bytes]:
        """Make an exit call from the current worker thread to the host thread it serves (ExitCallPort)."""
        worker: _Worker | None = getattr(self._current, "worker", None)
        if worker is None:
            raise FailedPreconditionError("host calls can only be made from an enclave thread that is serving an "
                                          "entry call (not from a thread the enclave started itself)")
        if self._closed is not None:
            raise EnclaveUnavailable(self._closed.message)
        call_id = next(self._call_ids)
        self._send(Call(call_id, worker.key, selector, list(extents)))
        return _wait_for_result(worker.inbox, call_id, self._entry_handler, self._send)

    def close(self, reason: str, *, join_timeout: float = 5.0) -> None:
        """Stop every worker: waiting exit calls fail with EnclaveUnavailable, idle workers end.

        Waits up to `join_timeout` in all for workers busy in enclave code (0: do not wait; a worker cannot wait
        for itself); a worker still busy after that is left to finish on its own, and logged.
        """
        with self._lock:
            if self._closed is None:
                self._closed = Status(EnclaveUnavailable.code, reason)
            workers = list(self._workers.values())
            self._workers.clear()
            closed = _Closed(self._closed)
        for worker in workers:
            worker.inbox.put(closed)
        deadline = time.monotonic() + join_timeout
        current = threading.current_thread()
        busy = []
        for worker in workers:
            if worker.thread is None or worker.thread is current:
                continue
            worker.thread.join(max(0.0, deadline - time.monotonic()))
            if worker.thread.is_alive():
                busy.append(worker.thread.name)
        if busy and join_timeout > 0:
            _log.warning("enclave %r: %d worker threads still busy in enclave code after close: %s", self._name,
                         len(busy), ", ".join(busy))
