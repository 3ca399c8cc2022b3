"""A fixed set of threads that each run one task per round, all released together.

The threads live across rounds, as an application's thread pool does: with the remote backend every host thread gets
an enclave worker thread of its own, and a thread that ends gives its worker up, so fresh threads per round would
time thread creation on both sides instead of calls.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

_Task = tuple[Callable[[int], None], threading.Barrier]


class Gang:
    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self._inboxes: list[queue.SimpleQueue[_Task | None]] = [queue.SimpleQueue() for _ in range(size)]
        self._done: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._serve, args=(index,), name=f"{name}-{index}", daemon=True)
                         for index in range(size)]
        for thread in self._threads:
            thread.start()

    def _serve(self, index: int) -> None:
        inbox = self._inboxes[index]
        while (task := inbox.get()) is not None:
            work, start = task
            try:
                start.wait()
                work(index)
            except BaseException as exc:  # handed to the caller of run(), which re-raises it
                self._done.put(exc)
            else:
                self._done.put(None)

    def run(self, work: Callable[[int], None]) -> float:
        """Run `work(index)` on every thread at once; return the seconds from their common start to the last end."""
        start = threading.Barrier(self.size + 1)
        for inbox in self._inboxes:
            inbox.put((work, start))
        start.wait()
        began = time.perf_counter()
        outcomes = [self._done.get() for _ in range(self.size)]
        elapsed = time.perf_counter() - began
        for outcome in outcomes:
            if outcome is not None:
                raise outcome
        return elapsed

    def close(self) -> None:
        for inbox in self._inboxes:
            inbox.put(None)
        for thread in self._threads:
            thread.join(10)

    def __enter__(self) -> Gang:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
