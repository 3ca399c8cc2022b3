"""The raw echo service's names, shared by its server process and its client (which must not import the server)."""

SERVICE = "asylo.bench.RawEcho"
ECHO = "Echo"
COLLECT = "Collect"
ECHO_METHOD = f"/{SERVICE}/{ECHO}"
COLLECT_METHOD = f"/{SERVICE}/{COLLECT}"
#: The line the server prints on standard output once it listens: the prefix, then the port.
READY_PREFIX = "ASYLO-BENCH-RAW-READY port="
