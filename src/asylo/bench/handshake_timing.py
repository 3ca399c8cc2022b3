"""The attested handshake's cost: both sides' work (key shares, evidence, verification, key derivation) timed in
one process, so that the number is the handshake's and not a network's or a process start's."""

from __future__ import annotations

import time

from asylo.identity import EnclaveIdentity, EvidenceVerifier, MeasurementIs, SimPlatformKey
from asylo.session.handshake import EnclaveHandshake, HostHandshake

_IDENTITY = EnclaveIdentity(measurement=b"\x01" * 32, signer=b"\x02" * 32, product_id=1, svn=1, debug=False,
                            platform="sim")


def handshake_times(count: int) -> list[int]:
    """Nanoseconds of `count` complete handshakes: offer, evidence and answer, verification, both sides' keys."""
    key = SimPlatformKey.generate()
    enclave = EnclaveHandshake(key.platform(_IDENTITY).evidence)
    verifier = EvidenceVerifier([key.fingerprint])
    expectation = MeasurementIs(_IDENTITY.measurement)

    def verify(evidence: bytes, report_data: bytes) -> EnclaveIdentity:
        return verifier.verify(evidence, report_data=report_data, expectation=expectation)

    times = []
    for _ in range(count):
        began = time.perf_counter_ns()
        host = HostHandshake(verify)
        answer, _records = enclave.answer(host.offer())
        host.finish(answer)
        times.append(time.perf_counter_ns() - began)
    return times
