"""One `asylo bench` run: start both servers, measure everything in interleaved rounds, clean up, report.

Each round measures the baseline and the project back to back, for every measurement, so a machine that gets busier
or quieter during the run shifts both alike. Latencies are medians over every call of every round; throughputs are
medians over rounds. Every process started here is reaped and the image's temporary directory removed, whatever
happens.
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
from asylo.bench.remote_side import RemoteBench, bench_image
from asylo.bench.report import SCHEMA, Row, targets_met
from asylo.bench.series import BULK_UNIT, CALLS_UNIT, LATENCY_UNIT, Series

KiB = 1 << 10
MiB = 1 << 20

#: The issue's targets, as ratios to the baseline.
CALL_TARGET = 1.25
EXIT_TARGET = 1.25
THREADS_TARGET = 0.8
BULK_TARGET = 0.8
ENCRYPTION_TARGET = 1.05

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
    }


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
        say("loading the benchmark enclave over the remote backend")
        remote = RemoteBench(image_path)
        stack.callback(remote.close)
        rows = _measure(settings, raw, remote, stack, say)
        if "encryption" in settings.groups:
            say("loading it again without attestation and record encryption (for the comparison only)")
            plain = RemoteBench(image_path, attestation=False)
            stack.callback(plain.close)
            rows += _measure_encryption(settings, raw, remote, plain, say)
    return BenchResult(settings, rows, started, time.perf_counter() - began, environment())


def _rounds(settings: BenchSettings, say: Progress, what: str, warm_up: Callable[[], None],
            measure_round: Callable[[], None]) -> None:
    say(what)
    warm_up()
    for _ in range(settings.repeat):
        gc.collect()
        measure_round()


def _measure(settings: BenchSettings, raw: RawEchoClient, remote: RemoteBench, stack: contextlib.ExitStack,
             say: Progress) -> list[Row]:
    rows = _measure_calls(settings, raw, remote, say) if "calls" in settings.groups else []
    smallest = min(settings.sizes)
    if "nested" in settings.groups:
        rows += _measure_nested(settings, raw, remote, smallest, say)
    if "threads" in settings.groups:
        gang = stack.enter_context(Gang(settings.threads, "asylo-bench-thread"))
        rows.append(_measure_threads(settings, raw, remote, gang, smallest, say))
    if "bulk" in settings.groups:
        rows += _measure_bulk(settings, raw, remote, say)
    return rows


def _measure_calls(settings: BenchSettings, raw: RawEchoClient, remote: RemoteBench, say: Progress) -> list[Row]:
    rows: list[Row] = []
    for size, calls in zip(settings.sizes, settings.calls, strict=True):
        base, sync, mine = Series(LATENCY_UNIT), Series(LATENCY_UNIT), Series(LATENCY_UNIT)
        warm = max(1, calls // 10)

        def warm_up(size: int = size, warm: int = warm) -> None:
            raw.pingpong_in_loop(size, warm)
            raw.pingpong_sync(size, warm)
            remote.echo(size, warm)

        def one_round(size: int = size, calls: int = calls, base: Series = base, sync: Series = sync,
                      mine: Series = mine) -> None:
            base.add_latencies(raw.pingpong_in_loop(size, calls))
            sync.add_latencies(raw.pingpong_sync(size, calls))
            mine.add_latencies(remote.echo(size, calls))

        _rounds(settings, say, f"empty call, {size_label(size)}", warm_up, one_round)
        rows.append(Row(f"empty_call_{size}", f"empty call {size_label(size)}", base, mine, sync, CALL_TARGET))
    return rows


def _measure_nested(settings: BenchSettings, raw: RawEchoClient, remote: RemoteBench, size: int,
                    say: Progress) -> list[Row]:
    exits, calls = settings.nested_exits, settings.nested_calls
    base, sync = Series(LATENCY_UNIT), Series(LATENCY_UNIT)
    without, with_exits, run = Series(LATENCY_UNIT), Series(LATENCY_UNIT), Series(LATENCY_UNIT)

    def warm_up() -> None:
        warm = max(1, calls // 10)
        raw.pingpong_in_loop(size, warm)
        raw.pingpong_sync(size, warm)
        remote.nested(size, 0, warm)
        remote.nested(size, exits, warm)
        remote.enter_and_run(size, warm)

    def one_round() -> None:
        base.add_latencies(raw.pingpong_in_loop(size, calls))
        sync.add_latencies(raw.pingpong_sync(size, calls))
        without.add_latencies(remote.nested(size, 0, calls))
        with_exits.add_latencies(remote.nested(size, exits, calls))
        run.add_latencies(remote.enter_and_run(size, calls))

    _rounds(settings, say, f"entry call with {exits} nested exit calls, {size_label(size)}", warm_up, one_round)
    # What one exit call adds: the difference between the entry call with and without them, per exit call.
    per_exit = Series(LATENCY_UNIT, rounds=[(w - n) / exits for w, n in zip(with_exits.rounds, without.rounds,
                                                                                strict=True)])
    total_base = Series(LATENCY_UNIT, rounds=[r * (exits + 1) for r in base.rounds],
                        samples=[s * (exits + 1) for s in base.samples])
    label = size_label(size)
    return [
        Row("nested_exit_call", f"nested exit call {label} (added per exit)", base, per_exit, sync, EXIT_TARGET),
        Row("nested_entry_total", f"entry + {exits} exit calls {label} (total)", total_base, with_exits,
            baseline_note=f"{exits + 1} raw ping-pongs (one per crossing)"),
        Row("enter_and_run", f"enter_and_run {label} (Run, protobuf)", base, run, sync),
    ]


def _measure_threads(settings: BenchSettings, raw: RawEchoClient, remote: RemoteBench, gang: Gang, size: int,
                     say: Progress) -> Row:
    calls = settings.thread_calls
    base, sync, mine = Series(CALLS_UNIT), Series(CALLS_UNIT), Series(CALLS_UNIT)

    def warm_up() -> None:
        warm = max(1, calls // 10)
        raw.streams_in_loop(gang.size, size, warm)
        raw.streams_sync(gang, size, warm)
        remote.threads(gang, size, warm)

    def one_round() -> None:
        base.add_value(raw.streams_in_loop(gang.size, size, calls))
        sync.add_value(raw.streams_sync(gang, size, calls))
        mine.add_value(remote.threads(gang, size, calls))

    _rounds(settings, say, f"{gang.size} threads vs {gang.size} raw streams, {size_label(size)} calls", warm_up,
            one_round)
    return Row("threads", f"{gang.size} threads, {size_label(size)} calls", base, mine, sync, THREADS_TARGET,
               baseline_note=f"{gang.size} raw streams (raw sync: {gang.size} threads, one stream each)")


def _measure_encryption(settings: BenchSettings, raw: RawEchoClient, attested: RemoteBench, plain: RemoteBench,
                        say: Progress) -> list[Row]:
    """What the attested, end-to-end encrypted session costs: the same calls over a session without the handshake
    and the record layer; and the handshake itself (both sides' work, in this process)."""
    rows: list[Row] = []
    for size, calls in ((min(settings.sizes), settings.calls[0]), (max(settings.sizes), settings.calls[-1])):
        without, with_records = Series(LATENCY_UNIT), Series(LATENCY_UNIT)

        def warm_up(size: int = size, calls: int = calls) -> None:
            plain.echo(size, max(1, calls // 10))
            attested.echo(size, max(1, calls // 10))

        def one_round(size: int = size, calls: int = calls, without: Series = without,
                      with_records: Series = with_records) -> None:
            # Which goes first alternates, so that neither always runs on a machine the other just warmed up.
            sides = [(without, plain), (with_records, attested)]
            for series, bench in sides if len(without.rounds) % 2 == 0 else reversed(sides):
                series.add_latencies(bench.echo(size, calls))

        _rounds(settings, say, f"encrypted vs unencrypted session, {size_label(size)}", warm_up, one_round)
        label = size_label(size)
        rows.append(Row(f"encrypted_call_{size}", f"encrypted call {label} (vs no records)", without, with_records,
                        target=ENCRYPTION_TARGET if size == min(settings.sizes) else None,
                        baseline_note="the same call, session without attestation and record encryption"))
    handshakes, pingpongs = Series(LATENCY_UNIT), Series(LATENCY_UNIT)

    def handshake_round() -> None:
        handshakes.add_latencies(handshake_times(max(10, settings.calls[0] // 20)))
        pingpongs.add_latencies(raw.pingpong_in_loop(min(settings.sizes), max(10, settings.calls[0] // 20)))

    _rounds(settings, say, "attested handshake", lambda: None, handshake_round)
    rows.append(Row("handshake", "attested handshake (host + enclave CPU)", pingpongs, handshakes,
                    baseline_note="one raw ping-pong, for scale"))
    return rows


def _measure_bulk(settings: BenchSettings, raw: RawEchoClient, remote: RemoteBench, say: Progress) -> list[Row]:
    size = settings.bulk_size
    mib = size / MiB
    pipelined, collected, mine = Series(BULK_UNIT), Series(BULK_UNIT), Series(BULK_UNIT)

    def warm_up() -> None:
        raw.bulk_pipelined(min(size, 4 * MiB))
        remote.bulk(min(size, 4 * MiB))

    def one_round() -> None:
        pipelined.add_value(mib / raw.bulk_pipelined(size))
        collected.add_value(mib / raw.bulk_collected(size))
        mine.add_value(mib / remote.bulk(size))

    label = size_label(size)
    _rounds(settings, say, f"bulk, {label} each way", warm_up, one_round)
    return [
        Row("bulk", f"bulk {label} each way", pipelined, mine, target=BULK_TARGET,
            baseline_note="one raw echo stream, both directions in flight"),
        Row("bulk_upload_then_download", f"bulk {label} each way (vs raw upload, then download)", collected, mine,
            baseline_note="one raw stream: all sent, then all received back (what one call's semantics allow)"),
    ]
