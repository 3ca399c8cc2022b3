"""The provision server's sessions: who owns which proxy, and the limits on how many there may be.

A slot is reserved before a proxy is started (so that 100 concurrent requests against a limit of 8 start 8 proxies,
not 100) and either filled with the running proxy or given back — but only once no process of it runs: when a client
gives up (its deadline passes, it cancels) while its proxy is starting, the slot stays reserved until that proxy has
started, been released and been reaped. Otherwise every cancelled request would free a slot for the next one while
its own proxy still came up, and a client cancelling in a loop would run any number of proxies past the limits.

Ownership is checked on every lookup: a client never sees, nor releases, another client's session — it gets
PERMISSION_DENIED, as the issue's bad-input table says, rather than NOT_FOUND, so that a client that mixed up its
ids learns it.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field

from asylo.provision_server.auth import ClientId
from asylo.provision_server.limits import LimitExceededError
from asylo.provision_server.proxies import RunningProxy
from asylo.provision_server.store import StoredImage
from asylo.status import InvalidArgumentError, NotFoundError, PermissionDeniedError

__all__ = ["LimitExceededError", "ProvisionedSession", "ServerLimits", "SessionTable"]

#: Session ids are random (they name another client's session only if guessed) and short enough to type.
_ID_BYTES = 16
_MAX_ID_LENGTH = 64


@dataclass(frozen=True)
class ServerLimits:
    """What one provision server allows. Over a limit, provisioning fails with RESOURCE_EXHAUSTED naming it."""

    max_enclaves: int = 64
    max_enclaves_per_client: int = 8

    def __post_init__(self) -> None:
        if self.max_enclaves < 1 or self.max_enclaves_per_client < 1:
            raise InvalidArgumentError("enclave limits must be at least 1")


@dataclass
class ProvisionedSession:
    """One client's enclave: its proxy and what it hosts."""

    session_id: str
    client: ClientId
    image: StoredImage
    proxy: RunningProxy
    created: float = field(default_factory=time.time)


class SessionTable:
    """Sessions by id, counted per client; thread-safe (the gRPC loop and executor threads share it)."""

    def __init__(self, limits: ServerLimits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._sessions: dict[str, ProvisionedSession] = {}
        self._reserved: dict[str, int] = {}  # client key -> slots reserved and not yet filled

    def reserve(self, client: ClientId) -> str:
        """Reserve a slot for `client` and return the new session's id; LimitExceededError if a limit is reached."""
        with self._lock:
            total = len(self._sessions) + sum(self._reserved.values())
            if total >= self.limits.max_enclaves:
                raise LimitExceededError(f"the server's limit of {self.limits.max_enclaves} concurrent enclaves is "
                                         f"reached; release one or try later", "server_limit")
            mine = self._count(client) + self._reserved.get(client.key, 0)
            if mine >= self.limits.max_enclaves_per_client:
                raise LimitExceededError(f"the per-client limit of {self.limits.max_enclaves_per_client} concurrent "
                                         f"enclaves is reached for client {client}; release one first",
                                         "client_limit")
            self._reserved[client.key] = self._reserved.get(client.key, 0) + 1
            return secrets.token_hex(_ID_BYTES)

    def fill(self, session: ProvisionedSession) -> None:
        """Turn the reservation made for `session.client` into the running session."""
        with self._lock:
            self._unreserve(session.client)
            self._sessions[session.session_id] = session

    def unreserve(self, client: ClientId) -> None:
        """Give back a reservation whose proxy never started, or was released and reaped unclaimed."""
        with self._lock:
            self._unreserve(client)

    def _unreserve(self, client: ClientId) -> None:
        left = self._reserved.get(client.key, 0) - 1
        if left > 0:
            self._reserved[client.key] = left
        else:
            self._reserved.pop(client.key, None)

    def _count(self, client: ClientId) -> int:
        return sum(1 for session in self._sessions.values() if session.client.key == client.key)

    def take(self, session_id: str, client: ClientId) -> ProvisionedSession:
        """Remove and return `client`'s session `session_id` (the caller releases its proxy)."""
        if not session_id or len(session_id) > _MAX_ID_LENGTH:
            raise InvalidArgumentError("a session id is 1-64 characters")
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                raise NotFoundError(f"no session {session_id!r}: it ended or was released")
            if session.client.key != client.key:
                raise PermissionDeniedError(f"session {session_id!r} belongs to another client")
            del self._sessions[session_id]
            return session

    def owned_by(self, client: ClientId) -> list[ProvisionedSession]:
        with self._lock:
            return sorted((s for s in self._sessions.values() if s.client.key == client.key),
                          key=lambda s: s.created)

    def take_ended(self) -> list[ProvisionedSession]:
        """Remove and return the sessions whose proxy has exited (the host left, an idle timeout, a crash)."""
        with self._lock:
            ended = [s for s in self._sessions.values() if s.proxy.exited()]
            for session in ended:
                del self._sessions[session.session_id]
            return ended

    def take_all(self) -> list[ProvisionedSession]:
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
            return sessions

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)
