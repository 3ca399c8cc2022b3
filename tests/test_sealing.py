"""Sealing: seal/unseal in real enclaves, refused across identities, platforms and SVNs; the blob format against
tampering; and the host's sealed-blob store, which only ever holds sealed bytes."""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import asylo
from asylo.host.sealed_store import SealedBlobStore, check_sealed_name
from asylo.identity import EnclaveIdentity, SealPolicy, SimPlatform, SimPlatformKey
from asylo.image import build_image, generate_signing_key, load_image, write_image
from asylo.primitives import selectors
from asylo.proto.enclave_pb2 import EnclaveConfig
from asylo.trusted import HostCalls, TrustedApplication, TrustedRuntime, entry_point
from asylo.trusted.sealing import (
    MAGIC,
    MAX_SEAL_DATA_SIZE,
    NONCE_SIZE,
    SALT_SIZE,
    TAG_SIZE,
    _blob_key,
    parse_header,
    seal,
    unseal,
)
from tests.conftest import ENCLAVES

#: Every test here runs over both session transports (see conftest's `transport`).
pytestmark = pytest.mark.usefixtures("transport")

SEALING = ENCLAVES / "sealing"
SECRET = b"the data owner's secret: 0123456789"

Loader = Callable[..., asylo.EnclaveClient]


# -- images and enclaves ------------------------------------------------------------------------------------------

def variant(tmp_path: Path, label: str, *, svn: int | None = None, product_id: int | None = None,
            debug: bool = False, code_change: bool = False) -> Path:
    """A copy of the sealing enclave's sources with its manifest or code changed (so another identity)."""
    target = tmp_path / f"src-{label}"
    shutil.copytree(SEALING, target, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = target / "enclave.toml"
    text = manifest.read_text()
    if svn is not None:
        text = text.replace("svn = 2", f"svn = {svn}")
    if product_id is not None:
        text = text.replace("product_id = 9", f"product_id = {product_id}")
    if debug:
        text += "debug = true\n"
    manifest.write_text(text)
    if code_change:
        with (target / "app.py").open("a") as app:
            app.write(f"\n# build {label}: same behaviour, another measurement\n")
    return target


@pytest.fixture(scope="module")
def sealing_build(signing_key: Ed25519PrivateKey) -> bytes:
    """The sealing enclave's image file content (SVN 2, product id 9), signed with the session's key."""
    return build_image(SEALING, signing_key)


@pytest.fixture(scope="module")
def sealing_image(sealing_build: bytes) -> asylo.VerifiedImage:
    return load_image(sealing_build)


@pytest.fixture
def load(manager: asylo.EnclaveManager, tmp_path: Path, backend: str) -> Loader:
    """Load a sealing enclave from image bytes (or a source directory, built with `key`) on `backend`."""
    count = 0

    def load_enclave(image: bytes | Path, *, key: Ed25519PrivateKey | None = None,
                     exit_calls: asylo.ExitCallRegistry | None = None, platform_state: Path | None = None,
                     debug: bool = False) -> asylo.EnclaveClient:
        nonlocal count
        count += 1
        data = build_image(image, key or generate_signing_key()) if isinstance(image, Path) else image
        registry = exit_calls or asylo.ExitCallRegistry()
        name = f"sealing-{count}"
        if backend == "sim":
            sim = asylo.SimLoadConfig(load_image(data), debug=debug, platform_state=platform_state)
            return manager.load_enclave(asylo.EnclaveLoadConfig(name, sim=sim, exit_calls=registry))
        assert platform_state is None, "remote enclaves run on the proxy's platform"
        path = tmp_path / f"{name}.aimg"
        write_image(path, data)
        remote = asylo.RemoteLoadConfig(path, debug=debug)
        return manager.load_enclave(asylo.EnclaveLoadConfig(name, remote=remote, exit_calls=registry))

    return load_enclave


def seal_in(client: asylo.EnclaveClient, data: bytes, policy: SealPolicy = SealPolicy.MEASUREMENT,
            aad: bytes = b"") -> bytes:
    return client.call("seal", data, policy.value.encode(), aad)


def unseal_in(client: asylo.EnclaveClient, blob: bytes, aad: bytes = b"") -> bytes:
    return client.call("unseal", blob, aad)


# -- in real enclaves -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["sim", "remote"])
@pytest.mark.parametrize("policy", list(SealPolicy))
def test_seal_and_unseal_in_an_enclave(load: Loader, sealing_build: bytes, sealing_image: asylo.VerifiedImage,
                                       policy: SealPolicy) -> None:
    client = load(sealing_build)
    blob = seal_in(client, SECRET, policy, b"label")
    assert SECRET not in blob
    assert blob.startswith(MAGIC)
    assert unseal_in(client, blob, b"label") == SECRET
    assert seal_in(client, SECRET, policy, b"label") != blob  # a fresh salt and nonce every time
    header, _ = parse_header(blob)
    assert header.policy is policy
    assert header.svn == sealing_image.manifest.svn == 2
    assert header.binding[:32] == (sealing_image.measurement if policy is SealPolicy.MEASUREMENT
                                   else sealing_image.signer)
    assert unseal_in(client, seal_in(client, b"")) == b""


def test_sealed_data_survives_a_restart(load: Loader, sealing_build: bytes,
                                        manager: asylo.EnclaveManager) -> None:
    first = load(sealing_build)
    blob = seal_in(first, SECRET)
    manager.destroy_enclave(first)
    assert unseal_in(load(sealing_build), blob) == SECRET


def test_measurement_blob_is_refused_by_another_measurement(load: Loader, sealing_build: bytes,
                                                            sealing_image: asylo.VerifiedImage,
                                                            signing_key: Ed25519PrivateKey, tmp_path: Path) -> None:
    blob = seal_in(load(sealing_build), SECRET, SealPolicy.MEASUREMENT)
    other = load(variant(tmp_path, "other-code", code_change=True), key=signing_key)
    with pytest.raises(asylo.PermissionDeniedError, match=f"measurement {sealing_image.measurement.hex()}"):
        unseal_in(other, blob)


def test_signer_blob_is_read_by_the_signers_other_builds_only(load: Loader, sealing_build: bytes,
                                                              signing_key: Ed25519PrivateKey,
                                                              tmp_path: Path) -> None:
    blob = seal_in(load(sealing_build), SECRET, SealPolicy.SIGNER, b"aad")
    same_signer = load(variant(tmp_path, "next-build", code_change=True), key=signing_key)
    assert unseal_in(same_signer, blob, b"aad") == SECRET
    # The same sources (so the same measurement) signed by someone else: not the signer's enclave.
    other_signer = load(SEALING, key=generate_signing_key())
    with pytest.raises(asylo.PermissionDeniedError, match=f"this enclave is signer {other_signer.signer.hex()}"):
        unseal_in(other_signer, blob, b"aad")
    other_product = load(variant(tmp_path, "other-product", product_id=10), key=signing_key)
    with pytest.raises(asylo.PermissionDeniedError, match="product_id 9"):
        unseal_in(other_product, blob, b"aad")
    debug_build = load(variant(tmp_path, "debug", debug=True), key=signing_key, debug=True)
    with pytest.raises(asylo.PermissionDeniedError, match="debug"):
        unseal_in(debug_build, blob, b"aad")


def test_a_higher_svns_blob_is_refused_and_a_lower_ones_read(load: Loader, sealing_build: bytes,
                                                             signing_key: Ed25519PrivateKey,
                                                             tmp_path: Path) -> None:
    current = load(sealing_build)  # SVN 2
    newer = load(variant(tmp_path, "svn3", svn=3), key=signing_key)
    from_newer = seal_in(newer, SECRET, SealPolicy.SIGNER)
    with pytest.raises(asylo.PermissionDeniedError, match=r"SVN 3, this enclave is SVN 2.*rollback"):
        unseal_in(current, from_newer)
    assert unseal_in(newer, seal_in(current, SECRET, SealPolicy.SIGNER)) == SECRET  # an upgrade reads old data


def test_another_platform_cannot_unseal(load: Loader, sealing_build: bytes, tmp_path: Path) -> None:
    blob = seal_in(load(sealing_build), SECRET, SealPolicy.SIGNER)
    elsewhere = load(sealing_build, platform_state=tmp_path / "another-machine")
    with pytest.raises(asylo.DataLossError, match="does not authenticate"):
        unseal_in(elsewhere, blob)
    assert unseal_in(elsewhere, seal_in(elsewhere, SECRET)) == SECRET


def test_tampered_blobs_wrong_aad_and_garbage_are_refused_in_the_enclave(load: Loader,
                                                                         sealing_build: bytes) -> None:
    client = load(sealing_build)
    blob = seal_in(client, SECRET, SealPolicy.SIGNER, b"aad")
    with pytest.raises(asylo.DataLossError, match="does not authenticate"):
        unseal_in(client, blob, b"other aad")
    with pytest.raises(asylo.DataLossError, match="does not authenticate"):
        unseal_in(client, blob)
    for offset in range(len(blob)):  # every byte: header, salt, nonce, ciphertext, tag
        tampered = bytearray(blob)
        tampered[offset] ^= 0x01
        with pytest.raises((asylo.DataLossError, asylo.PermissionDeniedError)):
            unseal_in(client, bytes(tampered), b"aad")
    for garbage in (b"", b"ASLD", blob[:-1], blob[: len(blob) - len(SECRET) - TAG_SIZE], os.urandom(200),
                    b"\x00" * 10_000):
        with pytest.raises(asylo.DataLossError):
            unseal_in(client, garbage, b"aad")
    with pytest.raises(asylo.DataLossError, match="over the limit"):
        unseal_in(client, MAGIC + b"\x00" * selectors.MAX_SEALED_BLOB_SIZE, b"aad")
    assert unseal_in(client, blob, b"aad") == SECRET  # the enclave is still fine


def test_seal_bounds_in_the_enclave(load: Loader, sealing_build: bytes) -> None:
    client = load(sealing_build)
    largest = os.urandom(MAX_SEAL_DATA_SIZE)
    blob = seal_in(client, largest, SealPolicy.SIGNER)
    assert len(blob) <= selectors.MAX_SEALED_BLOB_SIZE
    assert unseal_in(client, blob) == largest
    with pytest.raises(asylo.InvalidArgumentError, match="over the limit"):
        seal_in(client, largest + b"x")


class NoPlatformApp(TrustedApplication):
    @entry_point("seal")
    def seal_entry(self, data: bytes) -> bytes:
        return self.seal(data)

    @entry_point("unseal")
    def unseal_entry(self, blob: bytes) -> bytes:
        return self.unseal(blob)


class NoHost:
    def exit_call(self, selector: int, extents: Sequence[bytes]) -> list[bytes]:
        raise AssertionError("no host call expected")


def test_an_enclave_without_a_platform_cannot_seal() -> None:
    runtime = TrustedRuntime(NoPlatformApp, NoHost(), None)
    runtime.enter(selectors.ENTRY_INITIALIZE, [EnclaveConfig().SerializeToString()])
    for name in (b"seal", b"unseal"):
        with pytest.raises(asylo.FailedPreconditionError, match="sealing needs a platform"):
            runtime.enter(selectors.ENTRY_CALL_NAMED, [name, b"data"])


# -- the blob format, directly -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def platform(sealing_image: asylo.VerifiedImage) -> SimPlatform:
    return SimPlatformKey.generate().platform(EnclaveIdentity.from_image(sealing_image))


def test_every_header_field_is_authenticated(platform: SimPlatform) -> None:
    blob = seal(platform, SECRET, SealPolicy.MEASUREMENT)
    header, size = parse_header(blob)
    # Lower the SVN field: not a PERMISSION_DENIED (the checks pass), but the header no longer authenticates.
    svn_at = size - NONCE_SIZE - SALT_SIZE - 4
    lowered = blob[:svn_at] + (header.svn - 1).to_bytes(4, "big") + blob[svn_at + 4:]
    with pytest.raises(asylo.DataLossError, match="does not authenticate"):
        unseal(platform, lowered)
    for old_or_unknown in (1, 3):  # version 1 derived SIGNER keys without the SVN
        with pytest.raises(asylo.DataLossError, match=f"version {old_or_unknown} is not supported"):
            unseal(platform, blob[:4] + old_or_unknown.to_bytes(2, "big") + blob[6:])
    with pytest.raises(asylo.DataLossError, match="unknown policy code 9"):
        unseal(platform, blob[:6] + b"\x09" + blob[7:])
    # A header rewritten to name another enclave is refused before any decryption.
    other = blob[:size - NONCE_SIZE - SALT_SIZE - 4 - 32] + bytes(32) + blob[svn_at:]
    with pytest.raises(asylo.PermissionDeniedError, match=r"sealed \(measurement policy\) for measurement 0000"):
        unseal(platform, other)
    assert unseal(platform, blob) == SECRET


def platforms_at_svns(sealing_image: asylo.VerifiedImage, *svns: int) -> list[SimPlatform]:
    """The sealing enclave at each SVN (another build each, as a new SVN is), on one platform."""
    key, identity = SimPlatformKey.generate(), EnclaveIdentity.from_image(sealing_image)
    return [key.platform(dataclasses.replace(identity, svn=svn, measurement=bytes([svn]) * 32)) for svn in svns]


def test_an_older_enclave_cannot_get_a_newer_blobs_key_at_all(sealing_image: asylo.VerifiedImage) -> None:
    old, new = platforms_at_svns(sealing_image, 1, 2)
    blob = seal(new, SECRET, SealPolicy.SIGNER)
    header, size = parse_header(blob)
    assert header.svn == 2
    # Asking the platform directly for the blob's key is refused: rollback protection is in the key derivation.
    with pytest.raises(asylo.PermissionDeniedError, match="SVN 2 is not available to this enclave \\(SVN 1\\)"):
        old.sealing_key(SealPolicy.SIGNER, old.identity, svn=2)
    # An old runtime that skips the SVN check and uses every key it can get, with the blob's salt, reads nothing.
    for svn in (0, 1):
        assert old.sealing_key(SealPolicy.SIGNER, old.identity, svn=svn) != new.sealing_key(SealPolicy.SIGNER,
                                                                                             new.identity)
        key = _blob_key(old, dataclasses.replace(header, svn=svn))
        with pytest.raises(InvalidTag):
            AESGCM(key).decrypt(header.nonce, blob[size:], blob[:size])
    with pytest.raises(asylo.PermissionDeniedError, match="rollback refused"):
        unseal(old, blob)
    # Nor does rewriting the header's SVN down to the old enclave's help: that blob's key is another.
    svn_at = size - NONCE_SIZE - SALT_SIZE - 4
    with pytest.raises(asylo.DataLossError, match="does not authenticate"):
        unseal(old, blob[:svn_at] + (1).to_bytes(4, "big") + blob[svn_at + 4:])
    assert unseal(new, blob) == SECRET


def test_an_upgraded_enclave_reads_what_older_versions_sealed(sealing_image: asylo.VerifiedImage) -> None:
    v0, v1, v2 = platforms_at_svns(sealing_image, 0, 1, 2)
    for older in (v0, v1):
        blob = seal(older, SECRET, SealPolicy.SIGNER, aad=b"a")
        assert unseal(v2, blob, aad=b"a") == SECRET
        assert unseal(older, blob, aad=b"a") == SECRET
    assert unseal(v1, seal(v0, SECRET, SealPolicy.SIGNER)) == SECRET


class PlatformProbeApp(TrustedApplication):
    @entry_point
    def probe(self) -> bytes:
        assert self.platform is not None
        return " ".join(sorted(name for name in dir(self.platform) if not name.startswith("_"))).encode()

    @entry_point
    def reach_root(self) -> bytes:
        # What enclave A would do to read enclave B's MEASUREMENT blobs: make B's platform from the root key.
        assert self.platform is not None
        other = dataclasses.replace(self.platform.identity, measurement=bytes(32))
        key: bytes = self.platform.key.platform(other).sealing_key(SealPolicy.MEASUREMENT, other)
        return key


def test_the_platform_enclave_code_sees_has_no_way_to_the_root(platform: SimPlatform) -> None:
    runtime = TrustedRuntime(PlatformProbeApp, NoHost(), platform)
    runtime.enter(selectors.ENTRY_INITIALIZE, [EnclaveConfig().SerializeToString()])
    assert not hasattr(runtime.platform, "key")
    public = runtime.enter(selectors.ENTRY_CALL_NAMED, [b"probe"])
    assert public == [b"evidence identity kind sealing_key"]
    with pytest.raises(AttributeError, match="key"):
        runtime.enter(selectors.ENTRY_CALL_NAMED, [b"reach_root"])


def test_blobs_of_another_platform_kind_are_refused(platform: SimPlatform) -> None:
    blob = seal(platform, SECRET)
    renamed = blob[:8] + b"tdx" + blob[11:]  # the kind is "sim" at offset 8
    with pytest.raises(asylo.PermissionDeniedError, match="sealed on platform 'tdx'"):
        unseal(platform, renamed)


def test_seal_checks_its_arguments(platform: SimPlatform) -> None:
    with pytest.raises(asylo.InvalidArgumentError, match="SealPolicy"):
        seal(platform, SECRET, "measurement")  # type: ignore[arg-type]
    with pytest.raises(asylo.InvalidArgumentError, match="must be bytes"):
        seal(platform, "text")  # type: ignore[arg-type]
    with pytest.raises(asylo.InvalidArgumentError, match=r"aad .* over the limit"):
        seal(platform, SECRET, aad=bytes(64 * 1024 + 1))
    assert unseal(platform, seal(platform, memoryview(SECRET), aad=bytearray(b"a")), aad=b"a") == SECRET


# -- the host's store ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["", "a/b", "/etc/passwd", "..", "a..b", "../x", ".hidden", "-flag", "a\0b",
                                  "line\nbreak", "tab\t", "é", "a b", "x" * 129, "a\\b"])
def test_store_refuses_names_that_are_not_one_plain_file_name(tmp_path: Path, name: str) -> None:
    store = SealedBlobStore(tmp_path / "store")
    with pytest.raises(asylo.InvalidArgumentError, match="sealed blob name"):
        store.store(name, MAGIC + b"blob")
    with pytest.raises(asylo.InvalidArgumentError, match="sealed blob name"):
        store.load(name)
    assert list((tmp_path / "store").iterdir()) == []


@pytest.mark.parametrize("name", ["key", "quickstart-key", "a.b_c-1", "_", "9", "x" * 128])
def test_store_keeps_blobs_private_and_atomic(tmp_path: Path, name: str) -> None:
    directory = tmp_path / "new" / "store"
    store = SealedBlobStore(directory)
    assert check_sealed_name(name) == name
    assert store.load(name) is None
    store.store(name, b"first")
    store.store(name, b"second")
    assert store.load(name) == b"second"
    assert [p.name for p in directory.iterdir()] == [f"{name}.sealed"]  # no temporary file left behind
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / f"{name}.sealed").stat().st_mode) == 0o600


def test_store_bounds_sizes_both_ways(tmp_path: Path) -> None:
    store = SealedBlobStore(tmp_path / "store")
    store.store("largest", bytes(selectors.MAX_SEALED_BLOB_SIZE))
    with pytest.raises(asylo.InvalidArgumentError, match="over the limit"):
        store.store("too-large", bytes(selectors.MAX_SEALED_BLOB_SIZE + 1))
    assert not (tmp_path / "store" / "too-large.sealed").exists()
    (tmp_path / "store" / "grown.sealed").write_bytes(bytes(selectors.MAX_SEALED_BLOB_SIZE + 1))
    with pytest.raises(asylo.DataLossError, match="larger than a sealed blob"):
        store.load("grown")


def test_store_follows_no_planted_symlink_and_refuses_a_shared_directory(tmp_path: Path) -> None:
    store = SealedBlobStore(tmp_path / "store")
    outside = tmp_path / "outside"
    outside.write_bytes(b"not the store's")
    (tmp_path / "store" / "planted.sealed").symlink_to(outside)
    with pytest.raises(asylo.FailedPreconditionError, match=r"planted.sealed"):
        store.load("planted")
    store.store("planted", b"blob")  # replaces the link itself
    assert outside.read_bytes() == b"not the store's"
    assert store.load("planted") == b"blob"
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(asylo.FailedPreconditionError, match="nobody else can write"):
        SealedBlobStore(shared)


@pytest.mark.parametrize("backend", ["sim", "remote"])
def test_enclave_keeps_sealed_blobs_on_the_host(load: Loader, sealing_build: bytes,
                                                tmp_path: Path, manager: asylo.EnclaveManager) -> None:
    keys = tmp_path / "keys"
    registry = asylo.ExitCallRegistry(key_store=keys)
    client = load(sealing_build, exit_calls=registry)
    client.call("store", b"db-key", SECRET, b"measurement")
    stored = (keys / "db-key.sealed").read_bytes()
    assert SECRET not in stored  # the host only ever holds sealed bytes
    assert stored.startswith(MAGIC)
    assert stat.S_IMODE((keys / "db-key.sealed").stat().st_mode) == 0o600
    assert client.call("load", b"db-key") == SECRET
    manager.destroy_enclave(client)

    # A new enclave, a new registry on the same directory: the blob outlived both.
    again = load(sealing_build, exit_calls=asylo.ExitCallRegistry(key_store=SealedBlobStore(keys)))
    assert again.call("load", b"db-key") == SECRET
    with pytest.raises(asylo.NotFoundError, match="no blob named 'absent'"):
        again.call("load", b"absent")
    # The host hands back another name's blob: the name is sealed in as aad, so the enclave notices.
    shutil.copyfile(keys / "db-key.sealed", keys / "other.sealed")
    with pytest.raises(asylo.DataLossError, match="does not authenticate"):
        again.call("load", b"other")
    (keys / "db-key.sealed").write_bytes(b"garbage from the host")
    with pytest.raises(asylo.DataLossError):
        again.call("load", b"db-key")
    with pytest.raises(asylo.InvalidArgumentError, match="sealed blob name"):
        again.call("store", b"../escape", SECRET, b"measurement")
    assert not (tmp_path / "escape.sealed").exists()


def test_plaintext_never_leaves_the_enclave_for_the_store(load: Loader, sealing_build: bytes,
                                                          tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    client = load(sealing_build, exit_calls=asylo.ExitCallRegistry(key_store=keys))
    with pytest.raises(asylo.InvalidArgumentError, match="must be a blob made by seal"):
        client.call("store_unsealed", b"oops", SECRET)
    assert list(keys.iterdir()) == []


def test_without_a_key_store_the_enclave_is_told_clearly(load: Loader, sealing_build: bytes) -> None:
    client = load(sealing_build)
    with pytest.raises(asylo.FailedPreconditionError, match=r"no sealed-blob store.*key_store=DIR"):
        client.call("store", b"k", SECRET, b"measurement")
    with pytest.raises(asylo.FailedPreconditionError, match="no sealed-blob store"):
        client.call("load", b"k")


class HostileHost:
    """A host whose answers to load_sealed are whatever a test says; it records what it was sent."""

    def __init__(self, answer: list[bytes]) -> None:
        self.answer = answer
        self.calls: list[tuple[int, list[bytes]]] = []

    def exit_call(self, selector: int, extents: Sequence[bytes]) -> list[bytes]:
        self.calls.append((selector, list(extents)))
        return self.answer


@pytest.mark.parametrize("answer, message", [([b"a", b"b"], "2 extents"),
                                             ([bytes(selectors.MAX_SEALED_BLOB_SIZE + 1)], "over the sealed-blob")])
def test_host_calls_refuse_malformed_answers(answer: list[bytes], message: str) -> None:
    with pytest.raises(asylo.DataLossError, match=message):
        HostCalls(HostileHost(answer)).load_sealed("key")


def test_host_calls_check_what_they_send(platform: SimPlatform) -> None:
    host = HostileHost([])
    calls = HostCalls(host)
    assert calls.load_sealed("key") is None
    blob = seal(platform, SECRET)
    calls.store_sealed("key", blob)
    assert host.calls == [(selectors.EXIT_LOAD_SEALED, [b"key"]), (selectors.EXIT_STORE_SEALED, [b"key", blob])]
    for bad_name in ("", "x" * 129, "\ud800"):
        with pytest.raises(asylo.InvalidArgumentError, match="sealed blob name"):
            calls.store_sealed(bad_name, blob)
    with pytest.raises(asylo.InvalidArgumentError, match="must be a blob made by seal"):
        calls.store_sealed("key", SECRET)
    assert len(host.calls) == 2  # nothing refused reached the host
