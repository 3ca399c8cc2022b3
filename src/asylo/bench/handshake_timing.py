"""The attested handshake's cost: a host and an enclave session doing hello and welcome with a real simulated
platform (key shares, evidence, verification, key derivation), in one process, so that the number is the
handshake's and not a network's or a process start's."""

from __future__ import annotations

import time

from asylo.identity import EnclaveIdentity, EvidenceVerifier, MeasurementIs, SimPlatformKey
from asylo.proto import enclave_pb2
from asylo.session import Role, Session, WelcomeReceived
from asylo.session.handshake import EnclaveHandshake, HostHandshake
from asylo.status import InternalError

_IDENTITY = EnclaveIdentity(measurement=b"\x01" * 32, signer=b"\x02" * 32, product_id=1, svn=1, debug=False,
                            platform="sim")
_LOAD_CONFIG = enclave_pb2.EnclaveLoadConfig(name="bench", measurement=_IDENTITY.measurement)


def handshake_times(count: int) -> list[int]:
    """Nanoseconds of `count` complete handshakes, hello to a verified welcome, both sides' work."""
    key = SimPlatformKey.generate()
    attest = key.platform(_IDENTITY).evidence
    verifier = EvidenceVerifier([key.fingerprint])
    expectation = MeasurementIs(_IDENTITY.measurement)

    def verify(evidence: bytes, report_data: bytes) -> EnclaveIdentity:
        return verifier.verify(evidence, report_data=report_data, expectation=expectation)

    times = []
    for _ in range(count):
        began = time.perf_counter_ns()
        host = Session(Role.HOST, handshake=HostHandshake(verify))
        enclave = Session(Role.ENCLAVE, handshake=EnclaveHandshake(attest))
        enclave.receive(host.send_hello(b"benchmark token!", _LOAD_CONFIG))
        events = host.receive(enclave.send_welcome(_IDENTITY.measurement, _IDENTITY.signer, "bench"))
        times.append(time.perf_counter_ns() - began)
        if not (len(events) == 1 and isinstance(events[0], WelcomeReceived) and host.encrypted):
            raise InternalError(f"the benchmark handshake failed: {events}")
    return times
