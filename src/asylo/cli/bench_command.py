"""`asylo bench`: what the remote backend costs, measured against a raw grpc.aio stream and a raw blocking-TCP echo
on this machine."""

from __future__ import annotations

from pathlib import Path

import click

from asylo.bench import GROUPS, BenchSettings, format_table, run_bench, write_json
from asylo.bench.provision_bench import run_provision_bench
from asylo.status import AsyloError


@click.command("bench")
@click.option("--quick", is_flag=True, help="Tiny counts: a few seconds, to check that everything runs.")
@click.option("--repeat", type=click.IntRange(min=1), default=None,
              help="Rounds of every measurement (default: 5, or 1 with --quick; --provision: 20, or 3).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              default=Path("bench-results.json"), show_default=True, help="Where to write the results as JSON.")
@click.option("--only", "groups", type=click.Choice(GROUPS), multiple=True,
              help="Measure only this group (repeat the option for several): calls (64 B, 64 KiB, 1 MiB), nested "
                   "(exit calls), threads, bulk, encryption (encrypted vs unencrypted, and the handshake). Default: "
                   "all.")
@click.option("--check", is_flag=True, help="Exit with status 1 if any target is missed.")
@click.option("--provision", is_flag=True,
              help="Measure provisioning instead: provision-to-first-call through a provision server, cold (a proxy "
                   "started per request) against warm (--warm 1). Target: warm median <= 50 ms.")
def bench(quick: bool, repeat: int | None, json_path: Path, groups: tuple[str, ...], check: bool,
          provision: bool) -> None:
    """Measure remote calls against a raw grpc.aio bidi-stream echo (the baseline) and a raw blocking-TCP echo (the
    floor), on loopback, over both of the project's transports (default and gRPC).

    Client and servers run in separate processes: the two baselines' echo servers, and the proxies that local
    provisioning starts for the benchmark enclave (built from the sources shipped with asylo, signed with a
    throwaway key; loaded twice, once per transport). Measured: empty calls at 64 B, 64 KiB and 1 MiB; an entry call
    making 3 nested exit calls; calls/s from 16 host threads against 16 raw streams; 64 MiB each way. Prints medians
    with their ratios to the baseline (ratio) and to the floor (vs tcp) and the targets (empty 64 B call <= 0.6x a
    raw ping-pong and <= 2.5x a raw TCP one, each nested exit call <= 0.6x, 16-thread throughput >= 1x, bulk >= 1x
    the raw upload-then-download and >= 0.8x the pipelined echo, encrypted 64 B call <= 1.1x an unencrypted one),
    and writes every round to the JSON file. Takes a few minutes; --quick takes seconds, and --only measures some
    of it (bulk alone: a few seconds).
    """
    if provision:
        if groups:
            raise click.UsageError("--only selects among the call measurements; --provision measures provisioning")
        _bench_provision(3 if quick else repeat or 20, json_path, check)
        return
    settings = (BenchSettings.quick() if quick else BenchSettings()).with_repeat(repeat).with_groups(groups)
    try:
        result = run_bench(settings, progress=lambda message: click.echo(f"... {message}", err=True))
    except AsyloError as exc:
        raise click.ClickException(f"the benchmark failed: {exc}") from exc
    click.echo(f"asylo bench: loopback, client and servers in separate processes; {settings.repeat} round(s); "
               f"latency = median over all calls, throughput = median over rounds; ratio = asylo / raw aio "
               f"(in-loop); vs tcp = asylo / raw tcp (blocking sockets); asylo = the default transport")
    click.echo(format_table(result.rows))
    targets = [row for row in result.rows if row.met is not None]
    met = sum(1 for row in targets if row.met)
    path = write_json(json_path, result.to_json())
    click.echo(f"targets met: {met}/{len(targets)}; took {result.seconds:.0f} s; results written to {path}")
    if check and not result.targets_met:
        raise SystemExit(1)


def _bench_provision(rounds: int, json_path: Path, check: bool) -> None:
    try:
        result = run_provision_bench(rounds, progress=lambda message: click.echo(f"... {message}", err=True))
    except AsyloError as exc:
        raise click.ClickException(f"the benchmark failed: {exc}") from exc
    click.echo(f"asylo bench --provision: loopback, two provision servers (cold, --warm 1), {rounds} interleaved "
               f"rounds each; load_enclave through the server + the first entry call")
    click.echo(result.table())
    path = write_json(json_path, result.to_json())
    click.echo(f"target {'met' if result.target_met else 'MISSED'}; results written to {path}")
    if check and not result.target_met:
        raise SystemExit(1)
