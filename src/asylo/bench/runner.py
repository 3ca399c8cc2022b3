"""One `asylo bench` run: start the servers and the enclaves, measure everything in interleaved rounds, clean up,
report.

Each round measures the baselines and the project back to back, for every measurement, so a machine that gets
busier or quieter during the run shifts every column alike: the raw grpc.aio stream (in-loop and from a thread), the
raw blocking-TCP echo (the floor), and the project over its default transport and over its gRPC transport, two
enclaves loaded side by side (the two take turns going first). Latencies are medians over every call of every round;
throughputs are medians over rounds. Every process started here is reaped and the image's temporary directory
removed, whatever happens.
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field, replace

import grpc

import asylo
from asylo.bench.gang import Gang
from asylo.bench.handshake_timing import handshake_times
from asylo.bench.raw_client import RawEchoClient, RawServerProcess
from asylo.bench.raw_tcp_client import RawTcpClient, RawTcpServerProcess
from asylo.bench.remote_side import DEFAULT_TRANSPORT, GRPC_TRANSPORT, RemoteBench, bench_image
from asylo.bench.report import SCHEMA, Row, targets_met
from asylo.bench.series import BULK_UNIT, CALLS_UNIT, LATENCY_UNIT, Series

KiB = 1 << 10
MiB = 1 << 20

#: The targets (#12's; they replace #3's 1.25x / 1.25x / 0.8x / 0.8x / 1.05x), as ratios asylo / the raw grpc.aio
#: in-loop baseline unless said otherwise. An empty 64-byte call at most 0.6x one raw ping-pong:
CALL_TARGET = 0.6
#: ... and at most 2.5x one ping-pong over the blocking-TCP floor.
CALL_TCP_TARGET = 2.5
#: Each nested exit call at most 0.6x one raw ping-pong.
EXIT_TARGET = 0.6
#: 16 host threads of 64-byte calls at least 1.0x 16 raw streams' calls/s.
THREADS_TARGET = 1.0
#: 64 MiB each way at least 0.8x the raw pipelined echo stream ...
BULK_TARGET = 0.8
#: ... and at least 1.0x the raw stream that takes it all, then sends it all back (what one call does).
BULK_COLLECTED_TARGET = 1.0
#: An encrypted 64-byte call at most 1.10x the same call without attestation and record encryption.
ENCRYPTION_TARGET = 1.10

Progress = Callable[[str], None]

#: What `asylo bench` measures, in groups that can be run alone (`--only`): the empty calls at every size, the
#: nested exit calls, the 16-thread throughput, the bulk transfer, and the encrypted-vs-unencrypted comparison (with
#: the handshake).
GROUPS = ("calls", "nested", "threads", "bulk", "encryption")


@dataclass(frozen=True)
class BenchSettings:
    """How much to measure. The defaults take a minute or two on a 2-core machine; `quick()` a few seconds."""

    repeat: int = 5
    #: Payload sizes of the empty-call measurements, and how many calls each round makes at each size.
    sizes: tuple[int, ...] = (64, 64 * KiB, MiB)
    calls: tuple[int, ...] = (2000, 600, 80)
    #: Calls per round of the entry call that makes `nested_exits` exit calls (and of the one that makes none).
    nested_calls: int = 1000
    nested_exits: int = 3
    threads: int = 16
    #: Calls per thread per round of the throughput measurement (64-byte echoes).
    thread_calls: int = 200
    bulk_size: int = 64 * MiB
    #: The groups to measure (see GROUPS).
    groups: tuple[str, ...] = GROUPS

    def __post_init__(self) -> None:
        if len(self.sizes) != len(self.calls) or not self.sizes:
            raise ValueError("give one call count per size")
        unknown = sorted(set(self.groups) - set(GROUPS))
        if unknown or not self.groups:
            raise ValueError(f"measure at least one of {', '.join(GROUPS)}" + (f"; not {', '.join(unknown)}"
                                                                                 if unknown else ""))
        counts = (self.repeat, *self.calls, self.nested_calls, self.nested_exits, self.threads, self.thread_calls)
        if min(counts) < 1 or self.bulk_size < 1:
            raise ValueError("every count and size must be positive")

    @classmethod
    def quick(cls) -> BenchSettings:
        """Tiny counts: checks that everything runs, measures nothing worth quoting."""
        return cls(repeat=1, calls=(20, 10, 3), nested_calls=20, threads=4, thread_calls=5, bulk_size=4 * MiB)

    def with_repeat(self, repeat: int | None) -> BenchSettings:
        return self if repeat is None else replace(self, repeat=repeat)

    def with_groups(self, groups: Collection[str]) -> BenchSettings:
        """Only `groups` (in GROUPS' order); all of them if `groups` is empty."""
        return replace(self, groups=tuple(group for group in GROUPS if group in groups)) if groups else self


def size_label(size: int) -> str:
    for unit, scale in (("MiB", MiB), ("KiB", KiB)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


@dataclass
class BenchResult:
    settings: BenchSettings
    rows: list[Row]
    started: float
    seconds: float
    environment: dict[str, object] = field(default_factory=dict)

    @property
    def targets_met(self) -> bool:
        return targets_met(self.rows)

    def to_json(self) -> dict[str, object]:
        return {
            "schema": SCHEMA,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "seconds": self.seconds,
            "environment": self.environment,
            "settings": asdict(self.settings),
            "rows": [row.to_json() for row in self.rows],
            "targets_met": self.targets_met,
        }


def environment() -> dict[str, object]:
    return {
        "asylo": asylo.__version__,
        "grpcio": grpc.__version__,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        # The proxy tunes its allocator (asylo._malloc); the baseline's echo server and this process do not.
        "proxy_allocator": "glibc: mmap threshold 16 MiB, trim threshold 64 MiB, GLIBC_TUNABLES=glibc.malloc.hugetlb=1",
        # The `transport` each remote column's proxy configuration was given ("default": none given).
        "transports": {"asylo": DEFAULT_TRANSPORT or "default", "asylo_grpc": GRPC_TRANSPORT or "default"},
    }


@dataclass(frozen=True)
class Sides:
    """What every round measures: the two raw baselines' clients and the two remote enclaves."""

    raw: RawEchoClient
    tcp: RawTcpClient
    asylo: RemoteBench
    asylo_grpc: RemoteBench

    def remotes(self, round_index: int) -> tuple[RemoteBench, RemoteBench]:
        """Both enclaves, the default transport's first in even rounds and the gRPC one's first in odd rounds, so
        that neither always runs on a machine the other just warmed up."""
        both = (self.asylo, self.asylo_grpc)
        return both if round_index % 2 == 0 else (both[1], both[0])


def run_bench(settings: BenchSettings | None = None, progress: Progress | None = None) -> BenchResult:
    settings = settings or BenchSettings()
    say = progress or (lambda _: None)
    started = time.time()
    began = time.perf_counter()
    with contextlib.ExitStack() as stack:
        say("building the benchmark enclave")
        image_path = stack.enter_context(bench_image())
        say("starting the raw grpc.aio echo server (baseline)")
        server = RawServerProcess()
        stack.callback(server.stop)
        raw = RawEchoClient(server.target)
        stack.callback(raw.close)
        say("starting the raw blocking-TCP echo server (the floor)")
        tcp_server = RawTcpServerProcess()
        stack.callback(tcp_server.stop)
        say("loading the benchmark enclave over the remote backend, default transport")
        remote = RemoteBench(image_path, transport=DEFAULT_TRANSPORT)
        stack.callback(remote.close)
        say("loading it again over the gRPC transport")
        remote_grpc = RemoteBench(image_path, transport=GRPC_TRANSPORT)
        stack.callback(remote_grpc.close)
        sides = Sides(raw, RawTcpClient(tcp_server.port), remote, remote_grpc)
        rows = _measure(settings, sides, stack, say)
        if "encryption" in settings.groups:
            say("loading it again without attestation and record encryption (for the comparison only)")
            plain = RemoteBench(image_path, attestation=False, transport=DEFAULT_TRANSPORT)
            stack.callback(plain.close)
            rows += _measure_encryption(settings, raw, remote, plain, say)
    return BenchResult(settings, rows, started, time.perf_counter() - began, environment())


def _rounds(settings: BenchSettings, say: Progress, what: str, warm_up: Callable[[], None],
            measure_round: Callable[[int], None]) -> None:
    say(what)
    warm_up()
    for index in range(settings.repeat):
        gc.collect()
        measure_round(index)


def _fresh(count: int, unit: str = LATENCY_UNIT) -> list[Series]:
    return [Series(unit) for _ in range(count)]


def _measure(settings: BenchSettings, sides: Sides, stack: contextlib.ExitStack, say: Progress) -> list[Row]:
    rows = _measure_calls(settings, sides, say) if "calls" in settings.groups else []
    smallest = min(settings.sizes)
    if "nested" in settings.groups:
        rows += _measure_nested(settings, sides, smallest, say)
    if "threads" in settings.groups:
        gang = stack.enter_context(Gang(settings.threads, "asylo-bench-thread"))
        rows.append(_measure_threads(settings, sides, gang, smallest, say))
    if "bulk" in settings.groups:
        rows += _measure_bulk(settings, sides, say)
    return rows


def _measure_calls(settings: BenchSettings, sides: Sides, say: Progress) -> list[Row]:
    rows: list[Row] = []
    raw, tcp = sides.raw, sides.tcp
    for size, calls in zip(settings.sizes, settings.calls, strict=True):
        base, sync, floor, mine, via_grpc = _fresh(5)
        warm = max(1, calls // 10)

        def warm_up(size: int = size, warm: int = warm) -> None:
            raw.pingpong_in_loop(size, warm)
            raw.pingpong_sync(size, warm)
            tcp.pingpong(size, warm)
            sides.asylo.echo(size, warm)
            sides.asylo_grpc.echo(size, warm)

        def one_round(index: int, size: int = size, calls: int = calls, base: Series = base, sync: Series = sync,
                      floor: Series = floor, mine: Series = mine, via_grpc: Series = via_grpc) -> None:
            base.add_latencies(raw.pingpong_in_loop(size, calls))
            sync.add_latencies(raw.pingpong_sync(size, calls))
            floor.add_latencies(tcp.pingpong(size, calls))
            for remote in sides.remotes(index):
                (mine if remote is sides.asylo else via_grpc).add_latencies(remote.echo(size, calls))

        _rounds(settings, say, f"empty call, {size_label(size)}", warm_up, one_round)
        smallest = size == min(settings.sizes)
        rows.append(Row(f"empty_call_{size}", f"empty call {size_label(size)}", base, mine, sync,
                        target=CALL_TARGET if smallest else None, raw_tcp=floor, asylo_grpc=via_grpc,
                        tcp_target=CALL_TCP_TARGET if smallest else None))
    return rows


def _measure_nested(settings: BenchSettings, sides: Sides, size: int, say: Progress) -> list[Row]:
    exits, calls = settings.nested_exits, settings.nested_calls
    raw, tcp = sides.raw, sides.tcp
    base, sync, floor = _fresh(3)
    # Per enclave: the entry call without exit calls, with them, and enter_and_run.
    measured = {remote: _fresh(3) for remote in (sides.asylo, sides.asylo_grpc)}

    def warm_up() -> None:
        warm = max(1, calls // 10)
        raw.pingpong_in_loop(size, warm)
        raw.pingpong_sync(size, warm)
        tcp.pingpong(size, warm)
        for remote in (sides.asylo, sides.asylo_grpc):
            remote.nested(size, 0, warm)
            remote.nested(size, exits, warm)
            remote.enter_and_run(size, warm)

    def one_round(index: int) -> None:
        base.add_latencies(raw.pingpong_in_loop(size, calls))
        sync.add_latencies(raw.pingpong_sync(size, calls))
        floor.add_latencies(tcp.pingpong(size, calls))
        for remote in sides.remotes(index):
            without, with_exits, run = measured[remote]
            without.add_latencies(remote.nested(size, 0, calls))
            with_exits.add_latencies(remote.nested(size, exits, calls))
            run.add_latencies(remote.enter_and_run(size, calls))

    _rounds(settings, say, f"entry call with {exits} nested exit calls, {size_label(size)}", warm_up, one_round)

    def per_exit(remote: RemoteBench) -> Series:
        """What one exit call adds: the entry call with them less the one without, per exit call."""
        without, with_exits, _ = measured[remote]
        return Series(LATENCY_UNIT, rounds=[(w - n) / exits for w, n in zip(with_exits.rounds, without.rounds,
                                                                            strict=True)])

    def crossings(series: Series) -> Series:
        """`series` times the crossings of an entry call with its exit calls: one ping-pong each."""
        return Series(LATENCY_UNIT, rounds=[r * (exits + 1) for r in series.rounds],
                      samples=[s * (exits + 1) for s in series.samples])

    label = size_label(size)
    mine, grpc_side = measured[sides.asylo], measured[sides.asylo_grpc]
    return [
        Row("nested_exit_call", f"nested exit call {label} (added per exit)", base, per_exit(sides.asylo), sync,
            EXIT_TARGET, raw_tcp=floor, asylo_grpc=per_exit(sides.asylo_grpc)),
        Row("nested_entry_total", f"entry + {exits} exit calls {label} (total)", crossings(base), mine[1],
            baseline_note=f"{exits + 1} raw ping-pongs (one per crossing)", raw_tcp=crossings(floor),
            asylo_grpc=grpc_side[1], tcp_note=f"{exits + 1} raw TCP ping-pongs"),
        Row("enter_and_run", f"enter_and_run {label} (Run, protobuf)", base, mine[2], sync, raw_tcp=floor,
            asylo_grpc=grpc_side[2]),
    ]


def _measure_threads(settings: BenchSettings, sides: Sides, gang: Gang, size: int, say: Progress) -> Row:
    calls = settings.thread_calls
    raw, tcp = sides.raw, sides.tcp
    base, sync, floor, mine, via_grpc = _fresh(5, CALLS_UNIT)

    def warm_up() -> None:
        warm = max(1, calls // 10)
        raw.streams_in_loop(gang.size, size, warm)
        raw.streams_sync(gang, size, warm)
        tcp.connections(gang, size, warm)
        sides.asylo.threads(gang, size, warm)
        sides.asylo_grpc.threads(gang, size, warm)

    def one_round(index: int) -> None:
        base.add_value(raw.streams_in_loop(gang.size, size, calls))
        sync.add_value(raw.streams_sync(gang, size, calls))
        floor.add_value(tcp.connections(gang, size, calls))
        for remote in sides.remotes(index):
            (mine if remote is sides.asylo else via_grpc).add_value(remote.threads(gang, size, calls))

    _rounds(settings, say, f"{gang.size} threads vs {gang.size} raw streams, {size_label(size)} calls", warm_up,
            one_round)
    return Row("threads", f"{gang.size} threads, {size_label(size)} calls", base, mine, sync, THREADS_TARGET,
               baseline_note=f"{gang.size} raw streams (raw sync: {gang.size} threads, one stream each)",
               raw_tcp=floor, asylo_grpc=via_grpc, tcp_note=f"{gang.size} threads, one connection each")


def _measure_encryption(settings: BenchSettings, raw: RawEchoClient, attested: RemoteBench, plain: RemoteBench,
                        say: Progress) -> list[Row]:
    """What the attested, end-to-end encrypted session costs: the same calls over a session without the handshake
    and the record layer (both on the default transport); and the handshake itself (both sides' work, in this
    process)."""
    rows: list[Row] = []
    for size, calls in ((min(settings.sizes), settings.calls[0]), (max(settings.sizes), settings.calls[-1])):
        without, with_records = Series(LATENCY_UNIT), Series(LATENCY_UNIT)

        def warm_up(size: int = size, calls: int = calls) -> None:
            plain.echo(size, max(1, calls // 10))
            attested.echo(size, max(1, calls // 10))

        def one_round(index: int, size: int = size, calls: int = calls, without: Series = without,
                      with_records: Series = with_records) -> None:
            # Which goes first alternates, so that neither always runs on a machine the other just warmed up.
            sides = [(without, plain), (with_records, attested)]
            for series, bench in sides if index % 2 == 0 else reversed(sides):
                series.add_latencies(bench.echo(size, calls))

        _rounds(settings, say, f"encrypted vs unencrypted session, {size_label(size)}", warm_up, one_round)
        label = size_label(size)
        rows.append(Row(f"encrypted_call_{size}", f"encrypted call {label} (vs no records)", without, with_records,
                        target=ENCRYPTION_TARGET if size == min(settings.sizes) else None,
                        baseline_note="the same call, session without attestation and record encryption"))
    handshakes, pingpongs = Series(LATENCY_UNIT), Series(LATENCY_UNIT)

    def handshake_round(index: int) -> None:
        del index
        handshakes.add_latencies(handshake_times(max(10, settings.calls[0] // 20)))
        pingpongs.add_latencies(raw.pingpong_in_loop(min(settings.sizes), max(10, settings.calls[0] // 20)))

    _rounds(settings, say, "attested handshake", lambda: None, handshake_round)
    rows.append(Row("handshake", "attested handshake (host + enclave CPU)", pingpongs, handshakes,
                    baseline_note="one raw ping-pong, for scale"))
    return rows


def _measure_bulk(settings: BenchSettings, sides: Sides, say: Progress) -> list[Row]:
    size = settings.bulk_size
    mib = size / MiB
    raw, tcp = sides.raw, sides.tcp
    pipelined, collected, floor, mine, via_grpc = _fresh(5, BULK_UNIT)

    def warm_up() -> None:
        warm = min(size, 4 * MiB)
        raw.bulk_pipelined(warm)
        tcp.bulk_collected(warm)
        sides.asylo.bulk(warm)
        sides.asylo_grpc.bulk(warm)

    def one_round(index: int) -> None:
        pipelined.add_value(mib / raw.bulk_pipelined(size))
        collected.add_value(mib / raw.bulk_collected(size))
        floor.add_value(mib / tcp.bulk_collected(size))
        for remote in sides.remotes(index):
            (mine if remote is sides.asylo else via_grpc).add_value(mib / remote.bulk(size))

    label = size_label(size)
    _rounds(settings, say, f"bulk, {label} each way", warm_up, one_round)
    return [
        Row("bulk", f"bulk {label} each way", pipelined, mine, target=BULK_TARGET,
            baseline_note="one raw echo stream, both directions in flight", raw_tcp=floor, asylo_grpc=via_grpc,
            tcp_note="upload, then download, as in the next row (one blocking thread cannot pipeline)"),
        Row("bulk_upload_then_download", f"bulk {label} each way (vs raw upload, then download)", collected, mine,
            target=BULK_COLLECTED_TARGET,
            baseline_note="one raw stream: all sent, then all received back (what one call's semantics allow)",
            raw_tcp=floor, asylo_grpc=via_grpc,
            tcp_note="one connection: all sent, then all received back, in 1 MiB messages"),
    ]
