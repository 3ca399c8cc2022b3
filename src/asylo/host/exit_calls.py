"""The host's exit-call registry: the handlers an enclave reaches with host calls.

Built in: log (into this process's `logging`), write to standard output, the host's time, and the sealed-blob store
(`ExitCallRegistry(key_store=DIR)`: `self.host.store_sealed` / `load_sealed` in the enclave keep sealed blobs in
DIR; without a store those calls fail with FAILED_PRECONDITION). Applications add named handlers
(`registry.register("name", fn)`, reached from the enclave with `self.host.call("name", *args)`) and raw selector
handlers. A handler that raises sends its error back into the enclave as a status; it never crashes the host, and
an enclave asking for a handler that does not exist gets NOT_FOUND.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import overload

from asylo.host.sealed_store import SealedBlobStore
from asylo.primitives import selectors
from asylo.primitives.extents import MessageReader, MessageWriter, as_extents
from asylo.primitives.matching import Handler
from asylo.primitives.named import MAX_CALL_NAME, call_name_bytes, named_call_result
from asylo.status import FailedPreconditionError, InvalidArgumentError, NotFoundError

#: A named handler: takes the bytes arguments the enclave passed, returns bytes (or None for b"").
NamedHandler = Callable[..., bytes | bytearray | memoryview | None]
#: A selector handler: takes the call's extents, returns the answer's extents (or None for none).
SelectorHandler = Callable[[list[bytes]], Sequence[bytes] | None]

#: Longest log message or stdout write taken from an enclave; longer ones are cut, and say so.
MAX_TEXT = 1 << 20


class ExitCallRegistry:
    """Named and selector exit handlers, shared by every enclave loaded with this registry."""

    def __init__(self, *, key_store: str | os.PathLike[str] | SealedBlobStore | None = None) -> None:
        """`key_store`: the directory (or store) that keeps the enclaves' sealed blobs; None: no store."""
        self._named: dict[str, NamedHandler] = {}
        self._selectors: dict[int, SelectorHandler] = {}
        self._lock = threading.Lock()
        self.key_store: SealedBlobStore | None = (
            key_store if isinstance(key_store, SealedBlobStore) or key_store is None else SealedBlobStore(key_store)
        )

    @overload
    def register(self, name: str, handler: NamedHandler, /) -> NamedHandler: ...
    @overload
    def register(self, name: str, /) -> Callable[[NamedHandler], NamedHandler]: ...
    def register(self, name: str, handler: NamedHandler | None = None, /) -> object:
        """Register `handler` under `name`; without a handler, return a decorator that registers the function."""
        if call_name_bytes(name) is None:
            raise ValueError(f"handler names are 1..{MAX_CALL_NAME} bytes, got {name!r}")

        def add(func: NamedHandler) -> NamedHandler:
            with self._lock:
                self._named[name] = func
            return func

        return add if handler is None else add(handler)

    def register_selector(self, selector: int, handler: SelectorHandler) -> None:
        """Register a raw handler for user exit selector `selector` (256 and up)."""
        selectors.check_user_selector(selector)
        with self._lock:
            self._selectors[selector] = handler

    def unregister(self, name: str) -> None:
        with self._lock:
            self._named.pop(name, None)

    def handler_for(self, enclave_name: str) -> Handler:
        """The function that serves exit calls of the enclave named `enclave_name`."""
        logger = logging.getLogger(f"asylo.enclave.{enclave_name}")

        def handle(selector: int, extents: Sequence[bytes]) -> list[bytes]:
            if selector == selectors.EXIT_CALL_NAMED:
                return self._call_named(extents)
            if selector == selectors.EXIT_LOG:
                reader = MessageReader(extents)
                level, message = reader.next_i64(), _text(reader.next())
                reader.expect_end()
                logger.log(min(max(level, logging.DEBUG), logging.CRITICAL), "%s", message)
                return []
            if selector == selectors.EXIT_WRITE_STDOUT:
                reader = MessageReader(extents)
                text = _text(reader.next())
                reader.expect_end()
                sys.stdout.write(text)
                sys.stdout.flush()
                return []
            if selector == selectors.EXIT_HOST_TIME:
                MessageReader(extents).expect_end()
                return MessageWriter().push_i64(time.time_ns()).extents()
            if selector == selectors.EXIT_STORE_SEALED:
                reader = MessageReader(extents)
                name, blob = reader.next_str(), reader.next()
                reader.expect_end()
                self._store().store(name, blob)
                logger.debug("stored sealed blob %r (%d bytes)", name, len(blob))
                return []
            if selector == selectors.EXIT_LOAD_SEALED:
                reader = MessageReader(extents)
                name = reader.next_str()
                reader.expect_end()
                loaded = self._store().load(name)
                return [] if loaded is None else [loaded]
            with self._lock:
                handler = self._selectors.get(selector)
            if handler is None:
                raise NotFoundError(f"the host has no exit handler for selector {selector}")
            return as_extents(handler(list(extents)))

        return handle

    def _store(self) -> SealedBlobStore:
        if self.key_store is None:
            raise FailedPreconditionError("the host has no sealed-blob store: the host application must create its "
                                          "ExitCallRegistry with key_store=DIR (asylo quickstart: --key-store DIR)")
        return self.key_store

    def _call_named(self, extents: Sequence[bytes]) -> list[bytes]:
        reader = MessageReader(extents)
        name = reader.next_str()
        with self._lock:
            handler = self._named.get(name)
        if handler is None:
            raise NotFoundError(f"the host has no exit handler named {name!r}")
        return named_call_result(handler(*reader.rest()), f"exit handler {name!r}", InvalidArgumentError)


def _text(raw: bytes) -> str:
    text = raw[:MAX_TEXT].decode("utf-8", errors="replace")
    return text if len(raw) <= MAX_TEXT else text + f"... [{len(raw) - MAX_TEXT} bytes cut]"
