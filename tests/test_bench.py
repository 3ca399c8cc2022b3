"""`asylo bench --quick` (and `--provision --quick`) run end to end (servers and proxies all reaped) and write JSON;
the raw TCP baseline's server and wire format; how rows judge their targets.

The end-to-end runs are smoke tests only: the counts are tiny and no timing is asserted; the benchmark itself is run
by hand.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from asylo.bench import Row, Series, format_table
from asylo.bench.raw_tcp_client import RawTcpClient, RawTcpServerProcess
from asylo.bench.raw_tcp_wire import (
    COLLECT_MODE,
    ECHO_MODE,
    EMPTY,
    MAX_MESSAGE,
    FrameError,
    FrameReader,
    header,
    message,
)
from asylo.bench.series import BULK_UNIT, LATENCY_UNIT
from asylo.cli.bench_command import bench

#: The rows measured over the remote backend, which have the raw TCP floor and the gRPC transport beside them.
REMOTE_ROWS = ("empty_call_64", "empty_call_65536", "empty_call_1048576", "nested_exit_call", "nested_entry_total",
               "enter_and_run", "threads", "bulk", "bulk_upload_then_download")


def _within(ratio: float, target: dict[str, object]) -> bool:
    bound = target["ratio"]
    assert isinstance(bound, float)
    return ratio <= bound if target["op"] == "<=" else ratio >= bound


def test_quick_bench_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "bench-results.json"
    result = CliRunner().invoke(bench, ["--quick", "--json", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "empty call 64 B" in result.output
    assert "targets met:" in result.output

    document = json.loads(out.read_text())
    assert document["schema"] == "asylo-bench/1"
    assert document["settings"]["repeat"] == 1
    assert isinstance(document["targets_met"], bool)
    rows = {row["key"]: row for row in document["rows"]}
    assert {"empty_call_64", "empty_call_65536", "empty_call_1048576", "nested_exit_call", "threads",
            "bulk"} <= set(rows)
    for row in rows.values():
        for side in ("baseline", "asylo"):
            assert row[side]["unit"] == row["unit"]
            assert len(row[side]["rounds"]) == 1
        assert row["baseline"]["median"] > 0
        assert row["better"] in ("lower", "higher")
        assert {"raw_tcp", "asylo_grpc", "ratio_tcp", "ratio_grpc", "target_tcp"} <= set(row)
        targets = [(row["ratio"], row["target"]), (row["ratio_tcp"], row["target_tcp"])]
        bounded = [(ratio, target) for ratio, target in targets if target is not None]
        assert row["met"] is (all(_within(ratio, target) for ratio, target in bounded) if bounded else None)
    for key in REMOTE_ROWS:
        row = rows[key]
        for side in ("raw_tcp", "asylo_grpc"):
            assert row[side]["unit"] == row["unit"] and len(row[side]["rounds"]) == 1
            assert math.isfinite(row[side]["median"]) and row[side]["median"] > 0, (key, side)
        assert math.isclose(row["ratio_tcp"], row["asylo"]["median"] / row["raw_tcp"]["median"])
        assert math.isclose(row["ratio_grpc"], row["asylo_grpc"]["median"] / row["baseline"]["median"])
    for key in ("encrypted_call_64", "handshake"):
        assert rows[key]["raw_tcp"] is rows[key]["asylo_grpc"] is rows[key]["ratio_tcp"] is None
    assert rows["empty_call_64"]["target"] == {"op": "<=", "ratio": 0.6}
    assert rows["empty_call_64"]["target_tcp"] == {"op": "<=", "ratio": 2.5}
    assert rows["bulk_upload_then_download"]["target"] == {"op": ">=", "ratio": 1.0}
    assert rows["empty_call_65536"]["target"] is rows["empty_call_65536"]["target_tcp"] is None
    assert document["environment"]["transports"] == {"asylo": "direct", "asylo_grpc": "grpc"}
    for key in ("empty_call_64", "empty_call_65536", "empty_call_1048576", "threads", "bulk"):
        assert rows[key]["asylo"]["median"] > 0
        assert math.isclose(rows[key]["ratio"], rows[key]["asylo"]["median"] / rows[key]["baseline"]["median"])
    assert rows["empty_call_64"]["unit"] == "µs" and rows["empty_call_64"]["asylo"]["calls"] == 20
    assert rows["empty_call_64"]["raw_tcp"]["calls"] == rows["empty_call_64"]["asylo_grpc"]["calls"] == 20
    assert rows["threads"]["unit"] == "calls/s" and rows["bulk"]["unit"] == "MiB/s"
    table_header = next(line for line in result.output.splitlines() if line.startswith("measurement"))
    assert [cell.strip() for cell in table_header.split("|")] == [
        "measurement", "raw aio (in-loop)", "raw sync", "raw tcp", "asylo", "asylo grpc", "ratio", "vs tcp", "target",
        "result"]


def test_only_measures_the_groups_asked_for(tmp_path: Path) -> None:
    out = tmp_path / "bench-results.json"
    result = CliRunner().invoke(bench, ["--quick", "--only", "bulk", "--only", "nested", "--json", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert document["settings"]["groups"] == ["nested", "bulk"]
    assert {row["key"] for row in document["rows"]} == {"nested_exit_call", "nested_entry_total", "enter_and_run",
                                                        "bulk", "bulk_upload_then_download"}
    assert "without attestation" not in result.output  # the encryption group's second enclave was never loaded


def test_only_refuses_unknown_groups_and_provision() -> None:
    unknown = CliRunner().invoke(bench, ["--quick", "--only", "everything"])
    assert unknown.exit_code == 2 and "everything" in unknown.output
    provision = CliRunner().invoke(bench, ["--provision", "--only", "bulk"])
    assert provision.exit_code == 2 and "--only" in provision.output


def test_quick_provision_bench_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "provision.json"
    result = CliRunner().invoke(bench, ["--provision", "--quick", "--json", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "warm (--warm 1, pre-started proxy)" in result.output
    document = json.loads(out.read_text())
    assert document["schema"] == "asylo-bench-provision/1"
    assert len(document["cold"]) == len(document["warm"]) == 3
    assert all(value > 0 for value in document["cold"] + document["warm"])
    assert document["met"] is (document["warm_median"] <= document["target"]["warm_median_at_most_ms"])


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the peer closed the connection without sending anything (an orderly end, or a reset)."""
    try:
        return sock.recv(16) == b""
    except ConnectionResetError:
        return True


def test_raw_tcp_server_refuses_what_breaks_the_format_and_is_reaped() -> None:
    server = RawTcpServerProcess()
    try:
        client = RawTcpClient(server.port)
        assert len(client.pingpong(64, 3)) == 3
        for opening in (ECHO_MODE + header(MAX_MESSAGE + 1), COLLECT_MODE + header(0xFFFFFFFF), b"X" + bytes(8)):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(opening)
                assert _closed_by_peer(sock), opening
        # Collect mode holds the messages until an empty one, then sends them all back and an empty one.
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(COLLECT_MODE + message(b"one") + message(b"two" * 40_000) + EMPTY)
            reader = FrameReader(sock)
            replies = [bytes(reader.next() or b"") for _ in range(3)]
            assert replies == [message(b"one"), message(b"two" * 40_000), EMPTY]
        assert len(client.pingpong(64, 1)) == 1  # the server went on serving
    finally:
        server.stop()
    assert server.poll() == 0

    stopped = RawTcpServerProcess()
    try:
        os.kill(stopped.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while stopped.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert stopped.poll() == 0  # exited by itself, cleanly, on SIGTERM
    finally:
        stopped.stop()


def test_frame_reader_over_a_socket_pair() -> None:
    left, right = socket.socketpair()
    with left, right:
        left.settimeout(10)
        big = bytes(range(256)) * 1024  # larger than the reader's first buffer: it grows
        right.sendall(message(b"a") + message(big)[:1000])
        reader = FrameReader(left)
        assert bytes(reader.next() or b"") == message(b"a")
        # More than the socket pair buffers: sent from a thread while this one reads.
        sender = threading.Thread(target=right.sendall, args=(message(big)[1000:] + message(b""),), daemon=True)
        sender.start()
        try:
            assert bytes(reader.next() or b"") == message(big)
            assert bytes(reader.next() or b"") == EMPTY
        finally:
            sender.join(10)
        right.sendall(header(10) + b"short")
        right.shutdown(socket.SHUT_WR)
        with pytest.raises(FrameError, match="ended inside a message"):
            reader.next()
    left, right = socket.socketpair()
    with left, right:
        left.settimeout(10)
        right.sendall(message(b"last"))
        right.shutdown(socket.SHUT_WR)
        reader = FrameReader(left, limit=16)
        assert bytes(reader.next() or b"") == message(b"last")
        assert reader.next() is None  # a clean end between messages
    left, right = socket.socketpair()
    with left, right:
        left.settimeout(10)
        right.sendall(header(17))
        with pytest.raises(FrameError, match="above the bound of 16"):
            FrameReader(left, limit=16).next()


def _latency(median: float) -> Series:
    return Series(LATENCY_UNIT, samples=[median])


def _throughput(median: float) -> Series:
    return Series(BULK_UNIT, rounds=[median])


def test_a_row_meets_its_targets_only_when_it_meets_every_one() -> None:
    def call(asylo: float, tcp: float) -> Row:
        return Row("empty_call_64", "empty call 64 B", _latency(100), _latency(asylo), target=0.6,
                   raw_tcp=_latency(tcp), asylo_grpc=_latency(120), tcp_target=2.5)

    assert call(50, 25).met is True  # 0.5x the baseline, 2.0x the floor
    assert call(50, 19).met is False  # 0.5x the baseline, but 2.63x the floor
    assert call(70, 50).met is False  # 1.4x the floor, but 0.7x the baseline
    row = call(50, 25)
    assert (row.ratio, row.ratio_tcp, row.ratio_grpc) == (0.5, 2.0, 1.2)
    assert row.target_text == "<= 0.6x, tcp <= 2.5x"
    document = row.to_json()
    assert document["target"] == {"op": "<=", "ratio": 0.6}
    assert document["target_tcp"] == {"op": "<=", "ratio": 2.5}
    assert document["ratio_tcp"] == 2.0 and document["ratio_grpc"] == 1.2 and document["met"] is True

    bulk = Row("bulk", "bulk", _throughput(400), _throughput(360), target=0.8, raw_tcp=_throughput(600))
    assert bulk.met is True and bulk.ratio_tcp == 0.6  # no tcp target: the floor is shown, not judged
    assert Row("bulk", "bulk", _throughput(400), _throughput(360), target=1.0).met is False
    info = Row("enter_and_run", "enter_and_run", _latency(100), _latency(500), raw_tcp=_latency(10))
    assert info.met is None and info.target_text == "(info)"
    assert info.to_json()["asylo_grpc"] is None and info.to_json()["ratio_grpc"] is None
    with pytest.raises(ValueError, match="raw TCP measurement"):
        Row("empty_call_64", "empty call", _latency(100), _latency(50), tcp_target=2.5)

    table = format_table([row, info])
    assert "<= 0.6x, tcp <= 2.5x" in table
    assert table.splitlines()[2].split("|")[-3].strip() == "2.00x"  # vs tcp
