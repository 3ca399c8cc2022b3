"""asylo.identity: identities, expectations and ACLs, the simulated platform, evidence verification, sealing keys."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytest

import asylo
from asylo.identity import (
    DEFAULT_SIM_STATE_ENV,
    MAX_EVIDENCE_SIZE,
    AllOf,
    AnyOf,
    AttestationError,
    EnclaveIdentity,
    EvidenceVerifier,
    MeasurementIs,
    Not,
    PlatformVerifier,
    SealPolicy,
    SignerIs,
    SimPlatformKey,
    default_sim_state_dir,
    expectation_for_image,
    parse_fingerprint,
)
from asylo.identity.sim_state import KEY_FILENAME
from asylo.proto import identity_pb2
from asylo.status import (
    DataLossError,
    FailedPreconditionError,
    InvalidArgumentError,
    PermissionDeniedError,
    UnauthenticatedError,
)

M1, M2, M3 = (hashlib.sha256(b"m%d" % i).digest() for i in range(3))
S1, S2 = (hashlib.sha256(b"s%d" % i).digest() for i in range(2))
REPORT = hashlib.sha512(b"handshake 1").digest()
OTHER_REPORT = hashlib.sha512(b"handshake 2").digest()


def ident(**changes: object) -> EnclaveIdentity:
    base = EnclaveIdentity(measurement=M1, signer=S1, product_id=7, svn=3, debug=False, platform="sim")
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def attestation_error(expectation: object, identity: EnclaveIdentity) -> str:
    assert isinstance(expectation, asylo.identity.IdentityExpectation)
    assert not expectation.matches(identity)
    with pytest.raises(AttestationError) as info:
        expectation.check(identity)
    return info.value.message


def accepts(expectation: object, identity: EnclaveIdentity) -> None:
    assert isinstance(expectation, asylo.identity.IdentityExpectation)
    assert expectation.matches(identity)
    expectation.check(identity)


# --- EnclaveIdentity ----------------------------------------------------------------------------------------------


def test_identity_from_a_real_image(primitives_image: asylo.VerifiedImage) -> None:
    identity = EnclaveIdentity.from_image(primitives_image)
    assert identity.measurement == primitives_image.measurement
    assert identity.signer == primitives_image.signer
    assert identity.signer == hashlib.sha256(primitives_image.signer_public_key).digest()
    assert (identity.product_id, identity.svn, identity.debug) == (7, 3, False)
    assert identity.platform == "sim"
    assert identity.simulated
    assert EnclaveIdentity.from_image(primitives_image, platform="tdx").platform == "tdx"


def test_identity_proto_round_trip() -> None:
    identity = ident(debug=True, svn=2**32 - 1)
    assert EnclaveIdentity.from_proto(identity.to_proto()) == identity
    wire = identity_pb2.EnclaveIdentity.FromString(identity.to_proto().SerializeToString())
    assert EnclaveIdentity.from_proto(wire) == identity


@pytest.mark.parametrize(
    ("field", "value"),
    [("measurement", b"\0" * 31), ("measurement", b""), ("signer", b"\0" * 33), ("platform", ""),
     ("platform", "SIM"), ("platform", "x" * 33)],
)
def test_identity_from_a_malformed_proto(field: str, value: object) -> None:
    proto = ident().to_proto()
    setattr(proto, field, value)
    with pytest.raises(AttestationError, match=f"malformed enclave identity: enclave identity {field}"):
        EnclaveIdentity.from_proto(proto)


@pytest.mark.parametrize(
    ("field", "value"),
    [("measurement", b"m" * 31), ("measurement", "m" * 32), ("signer", b""), ("product_id", -1),
     ("product_id", 2**32), ("svn", True), ("svn", 1.0), ("debug", 1), ("platform", "s im"), ("platform", None)],
)
def test_identity_fields_are_validated(field: str, value: object) -> None:
    with pytest.raises(InvalidArgumentError, match=field):
        ident(**{field: value})


def test_describe_is_one_line_and_says_simulated() -> None:
    text = ident().describe()
    assert "\n" not in text
    assert "SIMULATED" in text
    assert M1.hex() in text and S1.hex() in text
    assert "product_id 7 svn 3" in text
    assert "DEBUG" not in text
    assert ident(debug=True).describe().startswith("DEBUG enclave")
    other = ident(platform="tdx").describe()
    assert "SIMULATED" not in other and "'tdx'" in other


# --- expectations -------------------------------------------------------------------------------------------------


def test_measurement_is() -> None:
    accepts(MeasurementIs(M1), ident())
    message = attestation_error(MeasurementIs(M2), ident())
    assert f"measurement is {M1.hex()}, expected {M2.hex()}" in message
    assert "debug" not in message.split("(enclave:")[0]


def test_measurement_is_rejects_debug_unless_allowed() -> None:
    message = attestation_error(MeasurementIs(M1), ident(debug=True))
    assert "debug enclave" in message and "allow_debug=True" in message
    assert "measurement is" not in message
    accepts(MeasurementIs(M1, allow_debug=True), ident(debug=True))
    both = attestation_error(MeasurementIs(M2), ident(debug=True))
    assert "measurement is" in both and "debug enclave" in both


def test_signer_is() -> None:
    accepts(SignerIs(S1, 7), ident())
    accepts(SignerIs(S1, 7, min_svn=3), ident())
    accepts(SignerIs(S1, 7, min_svn=2), ident(svn=9))
    assert f"signer is {S1.hex()}, expected {S2.hex()}" in attestation_error(SignerIs(S2, 7), ident())
    assert "product_id is 7, expected 8" in attestation_error(SignerIs(S1, 8), ident())
    assert "svn is 3, below the minimum 4" in attestation_error(SignerIs(S1, 7, min_svn=4), ident())
    assert "debug enclave" in attestation_error(SignerIs(S1, 7), ident(debug=True))
    accepts(SignerIs(S1, 7, allow_debug=True), ident(debug=True))


def test_signer_is_names_only_what_did_not_match() -> None:
    message = attestation_error(SignerIs(S1, 8, min_svn=1), ident())
    reason = message.split("(enclave:")[0]
    assert "product_id" in reason
    assert "signer is" not in reason and "svn is" not in reason and "debug" not in reason
    every = attestation_error(SignerIs(S2, 8, min_svn=4), ident(debug=True))
    for part in ("signer is", "product_id is", "svn is", "debug enclave"):
        assert part in every


def test_failed_check_is_an_unauthenticated_error_that_describes_the_enclave() -> None:
    with pytest.raises(UnauthenticatedError) as info:
        MeasurementIs(M2).check(ident())
    assert isinstance(info.value, asylo.AttestationError)
    assert "SIMULATED" in info.value.message


def test_all_of() -> None:
    acl = AllOf(SignerIs(S1, 7), MeasurementIs(M1))
    accepts(acl, ident())
    message = attestation_error(acl, ident(measurement=M2))
    assert f"expected {M1.hex()}" in message and "signer is" not in message
    both = attestation_error(acl, ident(measurement=M2, product_id=1))
    assert "product_id is 1" in both and "measurement is" in both


def test_any_of() -> None:
    acl = AnyOf(MeasurementIs(M2), SignerIs(S2, 7))
    accepts(acl, ident(measurement=M2))
    accepts(acl, ident(signer=S2))
    message = attestation_error(acl, ident())
    assert "none of 2 alternatives matched" in message
    assert "(1) measurement is" in message and "(2) signer is" in message


def test_not() -> None:
    accepts(Not(MeasurementIs(M2)), ident())
    message = attestation_error(Not(MeasurementIs(M1)), ident())
    assert f"matches the excluded measurement {M1.hex()}" in message


def test_deny_list_acl() -> None:
    """Any release of this signer's product from SVN 2 on, except one revoked build."""
    acl = AllOf(SignerIs(S1, 7, min_svn=2), Not(MeasurementIs(M2)))
    accepts(acl, ident(measurement=M1))
    accepts(acl, ident(measurement=M3, svn=5))
    assert "excluded" in attestation_error(acl, ident(measurement=M2))
    assert "svn is 1" in attestation_error(acl, ident(measurement=M3, svn=1))
    assert "debug enclave" in attestation_error(acl, ident(debug=True))
    assert "signer is" in attestation_error(acl, ident(signer=S2))


def test_nested_acl() -> None:
    acl = AnyOf(AllOf(SignerIs(S1, 7), Not(MeasurementIs(M2))), MeasurementIs(M3, allow_debug=True))
    accepts(acl, ident())
    accepts(acl, ident(measurement=M3, debug=True, signer=S2))
    message = attestation_error(acl, ident(measurement=M2))
    assert "(1) it matches the excluded" in message and "(2) measurement is" in message
    assert "not (" in repr(acl)


@pytest.mark.parametrize(
    "build",
    [
        AllOf,
        AnyOf,
        lambda: AllOf(MeasurementIs(M1), "not an expectation"),
        lambda: Not(M1),
        lambda: MeasurementIs(M1[:16]),
        lambda: MeasurementIs(M1.hex()),
        lambda: SignerIs(S1[:31], 7),
        lambda: SignerIs(S1, -1),
        lambda: SignerIs(S1, 7, min_svn=2**32),
        lambda: SignerIs(S1, True),
    ],
)
def test_expectations_are_validated(build: Callable[[], object]) -> None:
    with pytest.raises(InvalidArgumentError):
        build()


def test_expectation_for_image(primitives_image: asylo.VerifiedImage) -> None:
    identity = EnclaveIdentity.from_image(primitives_image)
    accepts(expectation_for_image(primitives_image, allow_debug=False), identity)
    assert "debug enclave" in attestation_error(
        expectation_for_image(primitives_image, allow_debug=False), dataclasses.replace(identity, debug=True)
    )
    accepts(expectation_for_image(primitives_image, allow_debug=True), dataclasses.replace(identity, debug=True))
    assert "measurement is" in attestation_error(
        expectation_for_image(primitives_image, allow_debug=True), dataclasses.replace(identity, measurement=M1)
    )


# --- the simulated platform's key and state directory -------------------------------------------------------------


def test_default_state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(DEFAULT_SIM_STATE_ENV, str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_sim_state_dir() == tmp_path / "explicit"
    monkeypatch.delenv(DEFAULT_SIM_STATE_ENV)
    assert default_sim_state_dir() == tmp_path / "xdg" / "asylo" / "sim-platform"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/is/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_sim_state_dir() == tmp_path / "home" / ".local" / "state" / "asylo" / "sim-platform"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_sim_state_dir() == tmp_path / "home" / ".local" / "state" / "asylo" / "sim-platform"


def test_load_or_create_uses_the_default_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(DEFAULT_SIM_STATE_ENV, str(tmp_path / "sim"))
    key = SimPlatformKey.load_or_create()
    assert key.path == tmp_path / "sim" / KEY_FILENAME
    assert SimPlatformKey.load_or_create(tmp_path / "sim").fingerprint == key.fingerprint


def test_state_dir_and_key_file_modes(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        key = SimPlatformKey.load_or_create(tmp_path / "nested" / "state")
    finally:
        os.umask(old_umask)
    state = tmp_path / "nested" / "state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert key.path == state / KEY_FILENAME
    assert stat.S_IMODE(key.path.stat().st_mode) == 0o600
    text = key.path.read_text()
    assert "SIMULATED" in text and "BEGIN PRIVATE KEY" in text
    assert sorted(p.name for p in state.iterdir()) == [KEY_FILENAME]


def test_two_loads_give_the_same_key(tmp_path: Path) -> None:
    first = SimPlatformKey.load_or_create(tmp_path / "state")
    second = SimPlatformKey.load_or_create(tmp_path / "state")
    assert first.public_key == second.public_key
    assert first.fingerprint == second.fingerprint == hashlib.sha256(first.public_key).hexdigest()
    assert len(first.public_key) == 32
    identity = ident()
    assert first.platform(identity).sealing_key(SealPolicy.SIGNER, identity) == second.platform(identity).sealing_key(
        SealPolicy.SIGNER, identity
    )
    other = SimPlatformKey.load_or_create(tmp_path / "other")
    assert other.fingerprint != first.fingerprint


def test_racing_creators_agree_on_one_key(tmp_path: Path) -> None:
    state = tmp_path / "state"
    barrier = threading.Barrier(8)
    results: list[str] = []
    errors: list[BaseException] = []

    def create() -> None:
        try:
            barrier.wait()
            results.append(SimPlatformKey.load_or_create(state).fingerprint)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(results) == 8 and len(set(results)) == 1
    assert sorted(p.name for p in state.iterdir()) == [KEY_FILENAME]  # no temporary files left


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o620, 0o602])
def test_refuses_a_key_file_others_can_access(tmp_path: Path, mode: int) -> None:
    key = SimPlatformKey.load_or_create(tmp_path / "state")
    assert key.path is not None
    key.path.chmod(mode)
    with pytest.raises(FailedPreconditionError, match=f"mode {mode:04o}.*chmod 600"):
        SimPlatformKey.load_or_create(tmp_path / "state")


def test_refuses_a_state_dir_others_can_write(tmp_path: Path) -> None:
    state = tmp_path / "state"
    SimPlatformKey.load_or_create(state)
    state.chmod(0o770)
    with pytest.raises(FailedPreconditionError, match=r"nobody else can write.*mode 0770.*chmod 700"):
        SimPlatformKey.load_or_create(state)


def test_refuses_a_symlinked_state_dir(tmp_path: Path) -> None:
    real = tmp_path / "real"
    SimPlatformKey.load_or_create(real)
    (tmp_path / "state").symlink_to(real)
    with pytest.raises(FailedPreconditionError, match="not a directory the simulated platform can use: it is a "
                                                      "symbolic link"):
        SimPlatformKey.load_or_create(tmp_path / "state")


def test_refuses_a_symlinked_key_file(tmp_path: Path) -> None:
    real = SimPlatformKey.load_or_create(tmp_path / "real")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    assert real.path is not None
    (state / KEY_FILENAME).symlink_to(real.path)
    with pytest.raises(FailedPreconditionError, match="cannot open"):
        SimPlatformKey.load_or_create(state)


@pytest.mark.parametrize(
    "content", [b"", b"garbage", b"\xff" * 10, b"x" * 10_000], ids=["empty", "text", "binary", "huge"]
)
def test_refuses_a_corrupt_key_file(tmp_path: Path, content: bytes) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    path = state / KEY_FILENAME
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(DataLossError, match="not a simulated platform key file"):
        SimPlatformKey.load_or_create(state)


def test_refuses_a_key_file_missing_the_sealing_root(tmp_path: Path) -> None:
    key = SimPlatformKey.load_or_create(tmp_path / "state")
    assert key.path is not None
    text = key.path.read_text()
    key.path.write_text(text[: text.index("-----BEGIN ASYLO SIM SEALING ROOT")])
    with pytest.raises(DataLossError, match="SEALING ROOT"):
        SimPlatformKey.load_or_create(tmp_path / "state")


def test_key_repr_shows_no_secret(tmp_path: Path) -> None:
    key = SimPlatformKey.load_or_create(tmp_path / "state")
    assert key.path is not None
    secret_lines = [line for line in key.path.read_text().splitlines() if line and not line.startswith(("-", "#"))]
    text = repr(key) + repr(key.platform(ident()))
    assert "SIMULATED" in text and key.fingerprint in text
    assert not any(line in text for line in secret_lines)


# --- evidence -----------------------------------------------------------------------------------------------------


@pytest.fixture
def platform_key(tmp_path: Path) -> SimPlatformKey:
    return SimPlatformKey.load_or_create(tmp_path / "platform")


@pytest.fixture
def verifier(platform_key: SimPlatformKey) -> EvidenceVerifier:
    return EvidenceVerifier([platform_key.fingerprint])


def test_evidence_verifies(platform_key: SimPlatformKey, verifier: EvidenceVerifier) -> None:
    identity = ident()
    evidence = platform_key.platform(identity).evidence(REPORT)
    assert verifier.verify(evidence, report_data=REPORT, expectation=MeasurementIs(M1)) == identity
    assert verifier.verify(memoryview(evidence), report_data=REPORT, expectation=SignerIs(S1, 7)) == identity
    message = identity_pb2.Evidence.FromString(evidence)
    assert message.simulated and message.platform == "sim" and message.version == 1
    assert message.platform_public_key == platform_key.public_key


def test_evidence_from_a_real_image(platform_key: SimPlatformKey, verifier: EvidenceVerifier,
                                    primitives_image: asylo.VerifiedImage) -> None:
    identity = EnclaveIdentity.from_image(primitives_image)
    evidence = platform_key.platform(identity).evidence(REPORT)
    expectation = expectation_for_image(primitives_image, allow_debug=False)
    assert verifier.verify(evidence, report_data=REPORT, expectation=expectation) == identity


def test_fingerprints_are_case_insensitive(platform_key: SimPlatformKey) -> None:
    verifier = EvidenceVerifier([f"  {platform_key.fingerprint.upper()} "])
    evidence = platform_key.platform(ident()).evidence(REPORT)
    assert verifier.verify(evidence, report_data=REPORT, expectation=MeasurementIs(M1)) == ident()


@pytest.mark.parametrize("bad", ["", "abc", "g" * 64, "a" * 63, "a" * 65, "sha256:" + "a" * 64])
def test_bad_fingerprints_are_refused(bad: str) -> None:
    with pytest.raises(InvalidArgumentError, match="fingerprint"):
        EvidenceVerifier([bad])
    with pytest.raises(InvalidArgumentError):
        parse_fingerprint(bad)


def test_a_lone_fingerprint_string_is_refused(platform_key: SimPlatformKey) -> None:
    with pytest.raises(InvalidArgumentError, match="not one string"):
        EvidenceVerifier(platform_key.fingerprint)


def test_untrusted_platform(platform_key: SimPlatformKey, tmp_path: Path) -> None:
    other = SimPlatformKey.load_or_create(tmp_path / "other")
    evidence = platform_key.platform(ident()).evidence(REPORT)
    for verifier in (EvidenceVerifier([other.fingerprint]), EvidenceVerifier([])):
        with pytest.raises(AttestationError) as info:
            verifier.verify(evidence, report_data=REPORT, expectation=MeasurementIs(M1))
        assert f"--trust-platform {platform_key.fingerprint}" in info.value.message
        assert "not trusted" in info.value.message


def altered(evidence: bytes, change: Callable[[identity_pb2.Evidence], None]) -> bytes:
    message = identity_pb2.Evidence.FromString(evidence)
    change(message)
    return message.SerializeToString(deterministic=True)


def set_field(path: str, value: object) -> Callable[[identity_pb2.Evidence], None]:
    def change(message: identity_pb2.Evidence) -> None:
        target: object = message
        *parents, name = path.split(".")
        for parent in parents:
            target = getattr(target, parent)
        setattr(target, name, value)

    return change


ALTERATIONS: dict[str, tuple[Callable[[identity_pb2.Evidence], None], str]] = {
    "version": (set_field("version", 2), "unsupported evidence version 2"),
    "version-0": (set_field("version", 0), "unsupported evidence version 0"),
    "platform": (set_field("platform", "nope"), "no verifier for platform 'nope'"),
    "relabelled as hardware": (set_field("platform", "tdx"), "evidence from platform 'tdx' is marked simulated"),
    "simulated": (set_field("simulated", False), "not marked simulated"),
    "identity.measurement": (set_field("identity.measurement", M2), "signature does not verify"),
    "identity.signer": (set_field("identity.signer", S2), "signature does not verify"),
    "identity.product_id": (set_field("identity.product_id", 8), "signature does not verify"),
    "identity.svn": (set_field("identity.svn", 4), "signature does not verify"),
    "identity.debug": (set_field("identity.debug", True), "signature does not verify"),
    "identity.platform": (set_field("identity.platform", "tdx"), "signature does not verify"),
    "identity-missing": (lambda m: m.ClearField("identity"), "signature does not verify"),
    "report_data": (set_field("report_data", OTHER_REPORT), "signature does not verify"),
    "platform_public_key": (set_field("platform_public_key", b"\1" * 32), "not trusted"),
    "platform_public_key-short": (set_field("platform_public_key", b"\1" * 31), "must be 32 bytes"),
    "signature": (set_field("signature", b"\1" * 64), "signature does not verify"),
    "signature-short": (set_field("signature", b"\1" * 63), "signature must be 64 bytes"),
    # Hardware fields have no place in sim evidence: unsigned bytes riding along are refused, not ignored.
    "quote": (set_field("quote", b"\1" * 64), "sim evidence carries hardware evidence"),
    "certificates": (lambda m: m.certificates.append(b"\1"), "sim evidence carries hardware evidence"),
    "collateral": (set_field("collateral", b"{}"), "sim evidence carries hardware evidence"),
}


@pytest.mark.parametrize("name", ALTERATIONS)
def test_altered_evidence(platform_key: SimPlatformKey, verifier: EvidenceVerifier, name: str) -> None:
    change, reason = ALTERATIONS[name]
    evidence = altered(platform_key.platform(ident()).evidence(REPORT), change)
    with pytest.raises(AttestationError, match=reason):
        verifier.verify(evidence, report_data=REPORT, expectation=MeasurementIs(M1, allow_debug=True))


def test_every_field_of_the_evidence_is_covered_by_an_alteration() -> None:
    covered = {name.split("-")[0] for name in ALTERATIONS}
    fields = {f.name for f in identity_pb2.Evidence.DESCRIPTOR.fields} - {"identity"}
    fields |= {f"identity.{f.name}" for f in identity_pb2.EnclaveIdentity.DESCRIPTOR.fields}
    assert fields <= covered


def test_a_flipped_bit_anywhere_in_the_evidence(platform_key: SimPlatformKey, verifier: EvidenceVerifier) -> None:
    evidence = platform_key.platform(ident()).evidence(REPORT)
    for bit in range(len(evidence) * 8):
        flipped = bytearray(evidence)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(AttestationError):
            verifier.verify(bytes(flipped), report_data=REPORT, expectation=MeasurementIs(M1, allow_debug=True))


def test_evidence_with_an_unknown_field(platform_key: SimPlatformKey, verifier: EvidenceVerifier) -> None:
    evidence = platform_key.platform(ident()).evidence(REPORT) + b"\xa0\x06\x01"  # field 100, varint 1
    with pytest.raises(AttestationError, match="canonically encoded"):
        verifier.verify(evidence, report_data=REPORT, expectation=MeasurementIs(M1))


def test_evidence_for_another_handshake(platform_key: SimPlatformKey, verifier: EvidenceVerifier) -> None:
    """Evidence replayed from an earlier session carries that session's report data."""
    earlier = platform_key.platform(ident()).evidence(OTHER_REPORT)
    with pytest.raises(AttestationError, match="replayed from another session"):
        verifier.verify(earlier, report_data=REPORT, expectation=MeasurementIs(M1))


def test_evidence_of_an_identity_that_does_not_match(platform_key: SimPlatformKey, verifier: EvidenceVerifier) -> None:
    evidence = platform_key.platform(ident(debug=True, svn=1)).evidence(REPORT)
    with pytest.raises(AttestationError, match="svn is 1, below the minimum 2; it is a debug enclave"):
        verifier.verify(evidence, report_data=REPORT, expectation=SignerIs(S1, 7, min_svn=2))


@pytest.mark.parametrize(
    ("evidence", "reason"),
    [
        (b"\xff" * 40, "not a valid Evidence message"),
        (b"", "unsupported evidence version 0"),
        (b"\x08" + b"\xff" * 11, "not a valid Evidence message"),
        (b"\x12\x05sim", "not a valid Evidence message"),
        (b"\x0a" * (MAX_EVIDENCE_SIZE + 1), f"over the limit of {MAX_EVIDENCE_SIZE}"),
        ("text", "must be bytes"),
    ],
    ids=["garbage", "empty", "bad-varint", "truncated", "oversized", "str"],
)
def test_garbage_evidence(verifier: EvidenceVerifier, evidence: bytes, reason: str) -> None:
    with pytest.raises(AttestationError, match=reason):
        verifier.verify(evidence, report_data=REPORT, expectation=MeasurementIs(M1))


def test_oversized_but_otherwise_valid_evidence(platform_key: SimPlatformKey, verifier: EvidenceVerifier) -> None:
    evidence = platform_key.platform(ident()).evidence(REPORT)
    padded = altered(evidence, set_field("platform", "sim"))
    assert padded == evidence
    with pytest.raises(AttestationError, match="over the limit"):
        verifier.verify(evidence + bytes(MAX_EVIDENCE_SIZE), report_data=REPORT, expectation=MeasurementIs(M1))


@pytest.mark.parametrize("report_data", [b"", b"r" * 63, b"r" * 65, "r" * 64])
def test_report_data_must_be_64_bytes(platform_key: SimPlatformKey, verifier: EvidenceVerifier,
                                      report_data: bytes) -> None:
    with pytest.raises(InvalidArgumentError, match="64 bytes"):
        platform_key.platform(ident()).evidence(report_data)
    evidence = platform_key.platform(ident()).evidence(REPORT)
    with pytest.raises(InvalidArgumentError, match="64 bytes"):
        verifier.verify(evidence, report_data=report_data, expectation=MeasurementIs(M1))


def test_verify_needs_an_expectation(platform_key: SimPlatformKey, verifier: EvidenceVerifier) -> None:
    evidence = platform_key.platform(ident()).evidence(REPORT)
    with pytest.raises(InvalidArgumentError, match="IdentityExpectation"):
        verifier.verify(evidence, report_data=REPORT, expectation=None)  # type: ignore[arg-type]


def test_a_sim_platform_runs_only_sim_identities(platform_key: SimPlatformKey) -> None:
    with pytest.raises(InvalidArgumentError, match="'sim'"):
        platform_key.platform(ident(platform="tdx"))


class FakeVerifier(PlatformVerifier):
    """A stand-in for a real TEE's verifier: trusts every `fake` evidence and reports its identity."""

    kind: ClassVar[str] = "fake"

    def __init__(self, platform: str = "fake") -> None:
        self.platform = platform
        self.seen: list[identity_pb2.Evidence] = []

    def authenticate(self, evidence: identity_pb2.Evidence) -> EnclaveIdentity:
        self.seen.append(evidence)
        return dataclasses.replace(EnclaveIdentity.from_proto(evidence.identity), platform=self.platform)


def fake_evidence(report_data: bytes) -> bytes:
    return identity_pb2.Evidence(
        version=1, platform="fake", identity=ident(platform="fake").to_proto(), report_data=report_data
    ).SerializeToString(deterministic=True)


def test_another_platform_plugs_in_as_a_verifier(verifier: EvidenceVerifier) -> None:
    known = "nitro, sgx, sim, snp, tdx, tpm"
    with pytest.raises(AttestationError, match=f"no verifier for platform 'fake' \\(this host verifies: {known}\\)"):
        verifier.verify(fake_evidence(REPORT), report_data=REPORT, expectation=MeasurementIs(M1))
    fake = FakeVerifier()
    extended = EvidenceVerifier([], platform_verifiers=[fake])
    identity = extended.verify(fake_evidence(REPORT), report_data=REPORT, expectation=MeasurementIs(M1))
    assert identity == ident(platform="fake") and len(fake.seen) == 1
    assert "SIMULATED" not in identity.describe()
    # The checks common to every platform still apply to it.
    with pytest.raises(AttestationError, match="replayed"):
        extended.verify(fake_evidence(OTHER_REPORT), report_data=REPORT, expectation=MeasurementIs(M1))
    with pytest.raises(AttestationError, match="measurement is"):
        extended.verify(fake_evidence(REPORT), report_data=REPORT, expectation=MeasurementIs(M2))


def test_a_platform_verifier_must_attest_its_own_platform_kind() -> None:
    liar = EvidenceVerifier([], platform_verifiers=[FakeVerifier(platform="sim")])
    with pytest.raises(AttestationError, match="attests an identity on platform 'sim'"):
        liar.verify(fake_evidence(REPORT), report_data=REPORT, expectation=MeasurementIs(M1))


def test_platform_verifiers_are_type_checked() -> None:
    with pytest.raises(InvalidArgumentError, match="PlatformVerifier"):
        EvidenceVerifier([], platform_verifiers=[object()])  # type: ignore[list-item]


# --- sealing keys -------------------------------------------------------------------------------------------------


def seal_key(key: SimPlatformKey, policy: SealPolicy, identity: EnclaveIdentity) -> bytes:
    return key.platform(identity).sealing_key(policy, identity)


@pytest.mark.parametrize("policy", list(SealPolicy))
def test_sealing_keys_survive_a_reload(tmp_path: Path, policy: SealPolicy) -> None:
    first = seal_key(SimPlatformKey.load_or_create(tmp_path / "state"), policy, ident())
    second = seal_key(SimPlatformKey.load_or_create(tmp_path / "state"), policy, ident())
    assert first == second
    assert len(first) == 32


def test_policies_give_different_keys(platform_key: SimPlatformKey) -> None:
    assert seal_key(platform_key, SealPolicy.MEASUREMENT, ident()) != seal_key(platform_key, SealPolicy.SIGNER, ident())


def test_measurement_policy_binds_the_measurement(platform_key: SimPlatformKey) -> None:
    base = seal_key(platform_key, SealPolicy.MEASUREMENT, ident())
    assert seal_key(platform_key, SealPolicy.MEASUREMENT, ident(measurement=M2)) != base
    # The measurement alone: the same build under another signer's signature is the same code.
    assert seal_key(platform_key, SealPolicy.MEASUREMENT, ident(signer=S2)) == base


def test_signer_policy_survives_an_upgrade(platform_key: SimPlatformKey) -> None:
    base = seal_key(platform_key, SealPolicy.SIGNER, ident())  # SVN 3
    upgrade = ident(measurement=M2, svn=4)
    # Another build of the signer's at the same SVN gets the same key; an upgrade gets the old SVN's key on request.
    assert seal_key(platform_key, SealPolicy.SIGNER, ident(measurement=M2)) == base
    assert platform_key.platform(upgrade).sealing_key(SealPolicy.SIGNER, upgrade, svn=3) == base
    assert seal_key(platform_key, SealPolicy.SIGNER, upgrade) != base  # its own SVN's key is its own
    assert seal_key(platform_key, SealPolicy.MEASUREMENT, upgrade) != seal_key(
        platform_key, SealPolicy.MEASUREMENT, ident()
    )


def test_signer_keys_bind_the_svn_and_a_higher_svns_key_is_refused(platform_key: SimPlatformKey) -> None:
    identity = ident(svn=3)
    platform = platform_key.platform(identity)
    keys = {svn: platform.sealing_key(SealPolicy.SIGNER, identity, svn=svn) for svn in (0, 1, 2, 3)}
    assert len(set(keys.values())) == 4  # one key per SVN
    assert platform.sealing_key(SealPolicy.SIGNER, identity) == keys[3]  # the default: the enclave's own SVN
    for higher in (4, 2**32 - 1):
        with pytest.raises(PermissionDeniedError, match=f"SVN {higher} is not available to this enclave \\(SVN 3"):
            platform.sealing_key(SealPolicy.SIGNER, identity, svn=higher)
    for bad in (-1, 2**32, True, "1", 1.0):
        with pytest.raises(InvalidArgumentError, match="svn must be an integer"):
            platform.sealing_key(SealPolicy.SIGNER, identity, svn=bad)  # type: ignore[arg-type]


def test_measurement_keys_ignore_the_svn_argument(platform_key: SimPlatformKey) -> None:
    platform = platform_key.platform(ident())
    base = platform.sealing_key(SealPolicy.MEASUREMENT, ident())
    assert platform.sealing_key(SealPolicy.MEASUREMENT, ident(), svn=0) == base
    assert platform.sealing_key(SealPolicy.MEASUREMENT, ident(), svn=9) == base


@pytest.mark.parametrize(
    "changes", [{"signer": S2}, {"product_id": 8}, {"debug": True}], ids=["signer", "product_id", "debug"]
)
def test_signer_policy_binds_signer_product_and_debug(platform_key: SimPlatformKey, changes: dict[str, object]) -> None:
    assert seal_key(platform_key, SealPolicy.SIGNER, ident(**changes)) != seal_key(
        platform_key, SealPolicy.SIGNER, ident()
    )


@pytest.mark.parametrize("policy", list(SealPolicy))
def test_another_platform_key_gives_other_sealing_keys(tmp_path: Path, policy: SealPolicy) -> None:
    here = seal_key(SimPlatformKey.load_or_create(tmp_path / "here"), policy, ident())
    there = seal_key(SimPlatformKey.load_or_create(tmp_path / "there"), policy, ident())
    assert here != there


def test_sealing_keys_only_for_the_platforms_own_enclave(platform_key: SimPlatformKey) -> None:
    platform = platform_key.platform(ident())
    with pytest.raises(PermissionDeniedError, match="only for the enclave this platform runs"):
        platform.sealing_key(SealPolicy.SIGNER, ident(measurement=M2))


ENCLAVE_PLATFORM_API = {"evidence", "identity", "kind", "sealing_key"}


def test_the_enclaves_platform_offers_no_way_to_the_root(platform_key: SimPlatformKey) -> None:
    platform = platform_key.platform(ident())
    assert not hasattr(platform, "key")
    assert not hasattr(platform, "platform")
    assert {name for name in dir(platform) if not name.startswith("_")} == ENCLAVE_PLATFORM_API
    for name in ENCLAVE_PLATFORM_API:
        assert not isinstance(getattr(platform, name), SimPlatformKey)
    # Slots only: nothing can be hung on it, and the class cannot be rebuilt without the key it does not give out.
    assert not hasattr(platform, "__dict__")
    with pytest.raises(InvalidArgumentError, match="SimPlatformKey"):
        type(platform)(platform, ident(measurement=M2))  # type: ignore[arg-type]
    with pytest.raises(PermissionDeniedError):
        platform.sealing_key(SealPolicy.MEASUREMENT, ident(measurement=M2))


def test_in_memory_keys_are_independent() -> None:
    a, b = SimPlatformKey.generate(), SimPlatformKey.generate()
    assert a.path is None and a.fingerprint != b.fingerprint
    assert seal_key(a, SealPolicy.SIGNER, ident()) != seal_key(b, SealPolicy.SIGNER, ident())
    evidence = a.platform(ident()).evidence(REPORT)
    assert EvidenceVerifier([a.fingerprint]).verify(evidence, report_data=REPORT, expectation=MeasurementIs(M1))
