"""The attested handshake and the record layer of the session core, with a real simulated platform, no I/O.

The host accepts only a welcome whose evidence a trusted platform signed, for the identity it expects, over this
session's transcript; from then on every frame is a record, and an altered, replayed, reordered or dropped record
ends the session. Nothing the host could send (a call) is possible before verification succeeds.
"""

from __future__ import annotations

import pytest

from asylo.identity import (
    EnclaveIdentity,
    EvidenceVerifier,
    IdentityExpectation,
    MeasurementIs,
    SignerIs,
    SimPlatformKey,
)
from asylo.primitives.matching import Call, Result
from asylo.proto import enclave_pb2, session_pb2
from asylo.session import Role, Session, SessionEnded, SessionLimits, SessionState, WelcomeReceived
from asylo.session.handshake import EnclaveHandshake, HostHandshake
from asylo.status import EnclaveUnavailable, FailedPreconditionError, Status, StatusCode

IDENTITY = EnclaveIdentity(measurement=b"\x11" * 32, signer=b"\x22" * 32, product_id=7, svn=3, debug=False,
                           platform="sim")
LOAD_CONFIG = enclave_pb2.EnclaveLoadConfig(name="demo", measurement=IDENTITY.measurement)
SMALL = SessionLimits(max_frame_size=4096, max_message_size=65536, max_reassembly_bytes=131072)


@pytest.fixture(scope="module")
def platform_key() -> SimPlatformKey:
    return SimPlatformKey.generate()


def host_session(trusted: SimPlatformKey, expectation: IdentityExpectation | None = None,
                 limits: SessionLimits | None = None) -> Session:
    verifier = EvidenceVerifier([trusted.fingerprint])
    expected = expectation or MeasurementIs(IDENTITY.measurement)

    def verify(evidence: bytes, report_data: bytes) -> EnclaveIdentity:
        return verifier.verify(evidence, report_data=report_data, expectation=expected)

    return Session(Role.HOST, limits, handshake=HostHandshake(verify))


def enclave_session(key: SimPlatformKey, identity: EnclaveIdentity = IDENTITY,
                    limits: SessionLimits | None = None) -> Session:
    return Session(Role.ENCLAVE, limits, handshake=EnclaveHandshake(key.platform(identity).evidence))


def connect(host: Session, enclave: Session) -> list[object]:
    enclave.receive(host.send_hello(b"token" * 4, LOAD_CONFIG))
    return list(host.receive(enclave.send_welcome(IDENTITY.measurement, IDENTITY.signer, "demo")))


def sealed(sender: Session, frames: list[bytes]) -> list[bytes]:
    return [sender.seal(frame) for frame in frames]


def test_attested_session_carries_calls_as_records(platform_key: SimPlatformKey) -> None:
    host, enclave = host_session(platform_key), enclave_session(platform_key)
    [welcome] = connect(host, enclave)
    assert isinstance(welcome, WelcomeReceived) and welcome.identity == IDENTITY
    assert host.encrypted and enclave.encrypted
    call = host.send_call(Call(1, 5, 300, [b"secret payload"]))
    records = sealed(host, call)
    assert all(b"secret payload" not in record for record in records)
    assert enclave.receive(records[0]) == [Call(1, 5, 300, [b"secret payload"])]
    answer = sealed(enclave, enclave.send_result(Result(1, 5, Status(), [b"secret answer"])))
    assert host.receive(answer[0]) == [Result(1, 5, Status(), [b"secret answer"])]


def test_large_messages_travel_as_sealed_fragments(platform_key: SimPlatformKey) -> None:
    host, enclave = host_session(platform_key, limits=SMALL), enclave_session(platform_key, limits=SMALL)
    connect(host, enclave)
    payload = bytes(range(256)) * 100
    events: list[object] = []
    for record in sealed(host, host.send_call(Call(1, 1, 300, [payload]))):
        assert len(record) <= SMALL.max_frame_size + 16
        events += enclave.receive(record)
    assert events == [Call(1, 1, 300, [payload])]


@pytest.mark.parametrize("attack", ["flip", "replay", "reorder", "drop", "plaintext", "truncate"])
def test_a_tampered_stream_ends_the_session(platform_key: SimPlatformKey, attack: str) -> None:
    host, enclave = host_session(platform_key), enclave_session(platform_key)
    connect(host, enclave)
    first = host.seal(host.send_call(Call(1, 1, 300, [b"one"]))[0])
    plain_second = host.send_call(Call(2, 2, 300, [b"two"]))[0]
    second = host.seal(plain_second)
    stream = {
        "flip": [first[:-1] + bytes([first[-1] ^ 1])],
        "replay": [first, first],
        "reorder": [second, first],
        "drop": [second],
        "plaintext": [plain_second],
        "truncate": [first[:10]],
    }[attack]
    events: list[object] = []
    for record in stream:
        events += enclave.receive(record)
    ended = [event for event in events if isinstance(event, SessionEnded)]
    assert ended and ended[0].status.code is StatusCode.DATA_LOSS, events
    assert enclave.state is SessionState.ERROR
    assert enclave.receive(second) == []  # an ended session takes nothing more


def expect_refusal(host: Session, enclave: Session, reason: str) -> None:
    events = connect(host, enclave)
    assert len(events) == 1 and isinstance(events[0], SessionEnded), events
    assert events[0].status.code is StatusCode.UNAUTHENTICATED
    assert reason in events[0].status.message
    assert not host.is_open and not host.encrypted
    with pytest.raises(EnclaveUnavailable, match="attestation failed"):  # nothing can be sent after a refused welcome
        host.send_call(Call(1, 1, 300, [b"user data"]))


def test_wrong_measurement_is_refused_before_any_call(platform_key: SimPlatformKey) -> None:
    host = host_session(platform_key, MeasurementIs(b"\x99" * 32))
    expect_refusal(host, enclave_session(platform_key), "measurement")


@pytest.mark.parametrize(("expectation", "reason"), [
    (SignerIs(b"\x33" * 32, 7), "signer"),
    (SignerIs(IDENTITY.signer, 8), "product"),
    (SignerIs(IDENTITY.signer, 7, min_svn=4), "svn"),
])
def test_wrong_signer_product_or_svn_is_refused(platform_key: SimPlatformKey, expectation: IdentityExpectation,
                                                reason: str) -> None:
    expect_refusal(host_session(platform_key, expectation), enclave_session(platform_key), reason)


def test_a_debug_enclave_is_refused_unless_allowed(platform_key: SimPlatformKey) -> None:
    debug = EnclaveIdentity(IDENTITY.measurement, IDENTITY.signer, 7, 3, True, "sim")
    expect_refusal(host_session(platform_key), enclave_session(platform_key, debug), "debug")
    allowed = host_session(platform_key, MeasurementIs(IDENTITY.measurement, allow_debug=True))
    [welcome] = connect(allowed, enclave_session(platform_key, debug))
    assert isinstance(welcome, WelcomeReceived) and welcome.identity == debug


def test_evidence_from_an_untrusted_platform_is_refused(platform_key: SimPlatformKey) -> None:
    stranger = SimPlatformKey.generate()
    expect_refusal(host_session(platform_key), enclave_session(stranger), stranger.fingerprint)


def test_evidence_replayed_from_an_earlier_session_is_refused(platform_key: SimPlatformKey) -> None:
    earlier_host, earlier_enclave = host_session(platform_key), enclave_session(platform_key)
    earlier_enclave.receive(earlier_host.send_hello(b"token" * 4, LOAD_CONFIG))
    recorded_welcome = earlier_enclave.send_welcome(IDENTITY.measurement, IDENTITY.signer, "demo")
    host = host_session(platform_key)
    host.send_hello(b"token" * 4, LOAD_CONFIG)
    [ended] = host.receive(recorded_welcome)
    assert isinstance(ended, SessionEnded) and ended.status.code is StatusCode.UNAUTHENTICATED
    assert "report data" in ended.status.message


def test_a_proxy_that_does_not_attest_is_refused(platform_key: SimPlatformKey) -> None:
    host = host_session(platform_key)
    expect_refusal(host, Session(Role.ENCLAVE), "did not attest")


def test_a_malformed_offer_ends_the_enclave_session(platform_key: SimPlatformKey) -> None:
    enclave = enclave_session(platform_key)
    hello = session_pb2.Frame(hello=session_pb2.Hello(version=1, token=b"t" * 20, load_config=LOAD_CONFIG,
                                                      handshake=b"\x0a\x03abc")).SerializeToString()
    [ended] = enclave.receive(hello)
    assert isinstance(ended, SessionEnded) and ended.status.code is StatusCode.INVALID_ARGUMENT
    with pytest.raises(FailedPreconditionError):
        enclave.send_welcome(IDENTITY.measurement, IDENTITY.signer, "demo")


def _rewrite(frame_bytes: bytes, change: str) -> bytes:
    frame = session_pb2.Frame.FromString(frame_bytes)
    if change == "hello name":
        frame.hello.load_config.name = "other"
    elif change == "hello frame size":
        frame.hello.max_frame_size = 4096
    elif change == "hello token":
        frame.hello.token = b"another token 123"
    elif change == "welcome measurement":
        frame.welcome.measurement = b"\x99" * 32
    elif change == "welcome name":
        frame.welcome.enclave_name = "impostor"
    elif change == "welcome limits":
        frame.welcome.max_message_size = 4096
        frame.welcome.max_frame_size = 4096
    return frame.SerializeToString()


@pytest.mark.parametrize("change", ["hello name", "hello frame size", "hello token", "welcome measurement",
                                    "welcome name", "welcome limits"])
def test_a_man_in_the_middle_cannot_rewrite_hello_or_welcome(platform_key: SimPlatformKey, change: str) -> None:
    host, enclave = host_session(platform_key), enclave_session(platform_key)
    hello = host.send_hello(b"token" * 4, LOAD_CONFIG)
    if change.startswith("hello"):
        hello = _rewrite(hello, change)
    [received] = enclave.receive(hello)
    assert not isinstance(received, SessionEnded)
    welcome = enclave.send_welcome(IDENTITY.measurement, IDENTITY.signer, "demo")
    if change.startswith("welcome"):
        welcome = _rewrite(welcome, change)
    [ended] = host.receive(welcome)
    assert isinstance(ended, SessionEnded) and ended.status.code is StatusCode.UNAUTHENTICATED, ended
    assert "report data" in ended.status.message
    assert not host.is_open
