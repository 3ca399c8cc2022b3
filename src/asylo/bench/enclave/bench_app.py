"""The benchmark enclave: the cheapest entry points there are, so a measurement times the boundary, not the work.

Raw selectors (no name lookup, no argument packing): 300 echoes its extents; 301 makes `count` exit calls to host
selector 400 with the payload, one after the other, then returns the payload.
"""

from __future__ import annotations

from asylo.proto.enclave_pb2 import EnclaveInput, EnclaveOutput
from asylo.status import InvalidArgumentError
from asylo.trusted import TrustedApplication, entry_selector

ECHO = 300
NESTED = 301
HOST_ECHO = 400
#: More nested exit calls than a benchmark needs: a bound on what a (hostile) host can make this enclave do per call.
_MAX_NESTED = 1024


class BenchEnclave(TrustedApplication):
    def run(self, enclave_input: EnclaveInput) -> EnclaveOutput:
        return EnclaveOutput(data=enclave_input.data)

    @entry_selector(ECHO)
    def echo(self, extents: list[bytes]) -> list[bytes]:
        return extents

    @entry_selector(NESTED)
    def nested(self, extents: list[bytes]) -> list[bytes]:
        if len(extents) != 2 or len(extents[0]) != 4:
            raise InvalidArgumentError("nested takes a 4-byte count and a payload")
        count = int.from_bytes(extents[0], "little")
        if count > _MAX_NESTED:
            raise InvalidArgumentError(f"at most {_MAX_NESTED} nested exit calls")
        payload = extents[1]
        for _ in range(count):
            self.host.exit_call(HOST_ECHO, [payload])
        return [payload]
