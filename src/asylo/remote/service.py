"""The proxy's gRPC service: one bidirectional-stream method, and the channel options both ends use.

The service is registered by hand (a generic handler with bytes in, bytes out): the session core encodes and checks
every frame itself, so gRPC only carries them and no generated stub is needed.
"""

from __future__ import annotations

import grpc

from asylo.session import SessionLimits
from asylo.status import AsyloError, StatusCode, error_for

SERVICE = "asylo.remote.EnclaveProxy"
CONNECT = "Connect"
CONNECT_METHOD = f"/{SERVICE}/{CONNECT}"

#: How often each side pings an idle connection, and how long it waits for the answer: a peer that vanished without
#: closing its socket (power loss, a cut cable, SIGSTOP) is noticed within about the sum.
KEEPALIVE_INTERVAL_MS = 2000
KEEPALIVE_TIMEOUT_MS = 2000


def _common_options(limits: SessionLimits) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", limits.grpc_message_limit),
        ("grpc.max_receive_message_length", limits.grpc_message_limit),
        ("grpc.keepalive_time_ms", KEEPALIVE_INTERVAL_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        # What actually bounds the wait for a ping's answer in this gRPC (the default is a minute).
        ("grpc.http2.ping_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def channel_options(limits: SessionLimits) -> list[tuple[str, int]]:
    return [
        *_common_options(limits),
        # The host never listens and the connection is made once: fail fast instead of retrying for minutes.
        ("grpc.enable_retries", 0),
        ("grpc.initial_reconnect_backoff_ms", 200),
    ]


def server_options(limits: SessionLimits) -> list[tuple[str, int]]:
    return [
        *_common_options(limits),
        # Accept the client's pings as often as it sends them (a strict server would close the connection).
        ("grpc.http2.min_recv_ping_interval_without_data_ms", KEEPALIVE_INTERVAL_MS // 2),
        ("grpc.http2.max_ping_strikes", 0),
    ]


def grpc_status_code(code: StatusCode) -> grpc.StatusCode:
    """gRPC's StatusCode for one of ours (the numbers are the same canonical codes)."""
    return next(c for c in grpc.StatusCode if c.value[0] == int(code))


def error_from_rpc(code: grpc.StatusCode, details: str, context: str) -> AsyloError:
    """The AsyloError for an RPC that ended with `code`, its message prefixed with what we were doing."""
    return error_for(StatusCode(code.value[0]), f"{context}: {details}")
