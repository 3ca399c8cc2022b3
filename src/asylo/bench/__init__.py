"""`asylo bench`: the remote backend's cost, measured against a raw grpc.aio stream and a raw blocking-TCP echo on
the same machine.

    from asylo.bench import BenchSettings, run_bench, format_table
    result = run_bench(BenchSettings.quick())
    print(format_table(result.rows))

Client and servers are separate processes on loopback: the baseline is a bare grpc.aio bidi-stream echo server
(`asylo.bench.raw_server`), the floor a blocking-socket echo of length-prefixed messages (`asylo.bench.raw_tcp_server`),
and the project is the benchmark enclave (`enclave/`, built into a throwaway image each run) in proxy processes
started by local provisioning, one per transport. Modules: `runner` (what is measured, in which order), `raw_client`
and `raw_server` (the baseline), `raw_tcp_wire`, `raw_tcp_client` and `raw_tcp_server` (the floor), `remote_side`
(the project), `gang` (host threads), `series` and `report` (numbers, table, JSON).
"""

from asylo.bench.report import Row, format_table, write_json
from asylo.bench.runner import GROUPS, BenchResult, BenchSettings, run_bench
from asylo.bench.series import Series

__all__ = ["GROUPS", "BenchResult", "BenchSettings", "Row", "Series", "format_table", "run_bench", "write_json"]
