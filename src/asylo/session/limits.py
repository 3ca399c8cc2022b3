"""The bounds a session enforces on what its peer sends, each with the reason it exists."""

from __future__ import annotations

from dataclasses import dataclass

from asylo.session.handshake import HANDSHAKE_FRAME_OVERHEAD, MAX_HANDSHAKE_SIZE

MiB = 1 << 20


@dataclass(frozen=True)
class SessionLimits:
    """Every size and count a peer can make us hold is bounded here, and how long it may keep us waiting for a sign
    of life. Both sides use the same defaults."""

    #: Largest single frame on the stream. Larger messages travel as fragments of this size, so that one big call
    #: does not hold the stream (and every other thread's calls) for long, and gRPC's own message limit is never hit.
    max_frame_size: int = 1 * MiB
    #: Largest call or result (all its extents, encoded). Reassembly buffers up to this much per transfer.
    max_message_size: int = 256 * MiB
    #: Bytes held at once in partly received fragmented messages, across all transfers.
    max_reassembly_bytes: int = 512 * MiB
    #: Calls the peer may have waiting on us at once (across threads), and fragmented transfers in progress.
    max_calls_in_flight: int = 4096
    #: Nested calls on one thread (entry -> exit -> entry ...). Each level is a few Python frames deep on both
    #: sides, so this stays well inside the interpreter's recursion limit.
    max_call_depth: int = 64
    #: Distinct host threads with calls in progress at once.
    max_threads: int = 4096
    #: Extents in one call or result.
    max_extents: int = 65536
    #: Seconds between our pings once the session is open (`Session.tick`). A ping is what makes a peer that stopped
    #: answering, or a record lost at the end of the stream, show: without one, nothing more would arrive to fail
    #: its authentication, and the transport's own keepalive is answered by the peer's network stack (gRPC's, in
    #: a frozen or wedged stream) rather than by its session. One small frame a second costs nothing measurable.
    ping_interval: float = 1.0
    #: Seconds a ping may go unanswered before the session ends (UNAVAILABLE). The peer answers on its I/O loop as
    #: soon as it reads the ping; what can hold the answer up is the stream ahead of it (bodies travel one frame per
    #: turn) and a loaded machine: tens of milliseconds. With the interval and the transport's tick (a quarter of
    #: the interval at most), a frozen or dead peer fails every waiting call within interval + deadline + tick
    #: = 4.25 s by default, inside the 5 s promised.
    ping_deadline: float = 3.0

    def __post_init__(self) -> None:
        if self.max_frame_size < 4096:
            raise ValueError("max_frame_size must be at least 4096 bytes")
        if self.max_message_size < self.max_frame_size:
            raise ValueError("max_message_size must be at least max_frame_size")
        if self.max_reassembly_bytes < self.max_message_size:
            raise ValueError("max_reassembly_bytes must be at least max_message_size")
        for name in ("max_calls_in_flight", "max_call_depth", "max_threads", "max_extents"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        for name in ("ping_interval", "ping_deadline"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a positive number of seconds")

    @property
    def grpc_message_limit(self) -> int:
        """What to give gRPC as its send/receive message limit: a frame plus room for its envelope (and never less
        than the unfragmented hello and welcome, whose hardware evidence can be tens of KiB)."""
        return max(self.max_frame_size, MAX_HANDSHAKE_SIZE + HANDSHAKE_FRAME_OVERHEAD) + 4096
