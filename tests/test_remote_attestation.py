"""Attestation end to end: real proxies, real evidence from the test run's simulated platform.

The host's expectation decides which enclaves it talks to (by default the exact image it holds; with a signer
expectation, any build of that signer); a refused enclave gets nothing of the host's — the capture relay shows that
after the hello, not one byte of the enclave config or of a call went out.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import asylo
from asylo.identity import IdentityExpectation, MeasurementIs, SignerIs, SimPlatformKey
from asylo.image import build_image, generate_signing_key, load_image, write_image
from asylo.remote.provision import ProvisionedProxy
from tests.capture_relay import CaptureRelay
from tests.conftest import ENCLAVES

#: Every test here runs over both session transports (see conftest's `transport`).
pytestmark = pytest.mark.usefixtures("transport")

MARKER = b"CONFIG-MARKER-the-host-keeps-this-to-itself"


class ProxyFor(asylo.RemoteProvision):
    """Local provisioning of a fixed image (whatever the host asks for), optionally through a capture relay and
    without vouching for the local platform."""

    def __init__(self, image: Path, *, relay: bool = False, vouch: bool = True) -> None:
        self._image = image
        self._relay = relay
        self._vouch = vouch
        self.relays: list[CaptureRelay] = []

    def provision(self, image_path: Path, *, transport: str | None = None) -> ProvisionedProxy:
        proxy = asylo.LocalProvision().provision(self._image)
        target = proxy.target
        release = proxy.release
        if self._relay:
            relay = CaptureRelay(int(target.rsplit(":", 1)[1]))
            self.relays.append(relay)
            target = f"127.0.0.1:{relay.port}"

            def release() -> None:
                proxy.release()
                relay.close()

        return ProvisionedProxy(target, proxy.token, proxy.credentials, release, proxy.pid,
                                proxy.trusted_platforms if self._vouch else (), proxy.transport)


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory, signing_key: Ed25519PrivateKey) -> Iterator[dict[str, Path]]:
    """Two builds of the primitives enclave by the test signer (A and B) and one by a stranger."""
    root = tmp_path_factory.mktemp("builds")
    source = root / "source-b"
    shutil.copytree(ENCLAVES / "primitives", source, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "build.txt").write_text("build B")
    paths = {"A": root / "a.aimg", "B": root / "b.aimg", "stranger": root / "stranger.aimg"}
    write_image(paths["A"], build_image(ENCLAVES / "primitives", signing_key))
    write_image(paths["B"], build_image(source, signing_key))
    write_image(paths["stranger"], build_image(ENCLAVES / "primitives", generate_signing_key()))
    yield paths


def load(manager: asylo.EnclaveManager, image: Path, provision: asylo.RemoteProvision,
         expectation: IdentityExpectation | None = None, trusted: tuple[str, ...] = ()) -> asylo.EnclaveClient:
    proxy = asylo.RemoteProxyClientConfig(provision, trusted_platforms=trusted)
    return manager.load_enclave(asylo.EnclaveLoadConfig(
        "primitives", remote=asylo.RemoteLoadConfig(image, proxy=proxy, expectation=expectation),
        config=asylo.EnclaveConfig(data=MARKER)))


def test_the_host_gets_the_image_it_holds(manager: asylo.EnclaveManager, builds: dict[str, Path]) -> None:
    client = load(manager, builds["A"], ProxyFor(builds["A"]))
    assert client.measurement == load_image(builds["A"]).measurement
    assert client.call("echo", b"hi") == b"hi"


def test_a_signer_expectation_admits_another_build_of_the_signer(manager: asylo.EnclaveManager,
                                                                  builds: dict[str, Path]) -> None:
    a, b = load_image(builds["A"]), load_image(builds["B"])
    assert a.measurement != b.measurement
    expectation = SignerIs(a.signer, a.manifest.product_id, allow_debug=a.manifest.debug)
    client = load(manager, builds["A"], ProxyFor(builds["B"]), expectation)
    assert client.measurement == b.measurement
    assert client.call("echo", b"from B") == b"from B"


def test_without_an_expectation_another_build_is_refused(manager: asylo.EnclaveManager,
                                                         builds: dict[str, Path]) -> None:
    with pytest.raises(asylo.FailedPreconditionError, match="measurement"):
        load(manager, builds["A"], ProxyFor(builds["B"]))
    assert manager.loaded_enclaves() == []


def test_a_stranger_signed_build_is_refused_by_a_signer_expectation(manager: asylo.EnclaveManager,
                                                                    builds: dict[str, Path]) -> None:
    a = load_image(builds["A"])
    expectation = SignerIs(a.signer, a.manifest.product_id, allow_debug=True)
    with pytest.raises(asylo.AttestationError, match="signer"):
        load(manager, builds["A"], ProxyFor(builds["stranger"]), expectation)


def test_a_refused_enclave_gets_nothing_after_the_hello(manager: asylo.EnclaveManager,
                                                        builds: dict[str, Path]) -> None:
    provision = ProxyFor(builds["A"], relay=True)
    with pytest.raises(asylo.AttestationError, match="measurement"):
        load(manager, builds["A"], provision, MeasurementIs(b"\x77" * 32, allow_debug=True))
    [relay] = provision.relays
    assert relay.to_proxy and relay.to_host, "the relay saw no traffic: the test would prove nothing"
    assert MARKER not in relay.to_proxy
    # The control: accepted, the same config does go out (encrypted, so not as plain bytes either).
    accepted = ProxyFor(builds["A"], relay=True)
    client = load(manager, builds["A"], accepted)
    manager.destroy_enclave(client)
    assert len(accepted.relays[0].to_proxy) > len(relay.to_proxy)
    assert MARKER not in accepted.relays[0].to_proxy


def test_an_untrusted_platform_is_refused_naming_its_fingerprint(manager: asylo.EnclaveManager,
                                                                 builds: dict[str, Path], local_platform: str
                                                                 ) -> None:
    other = SimPlatformKey.generate().fingerprint
    with pytest.raises(asylo.AttestationError, match=local_platform):
        load(manager, builds["A"], ProxyFor(builds["A"], vouch=False), trusted=(other,))
    with pytest.raises(asylo.AttestationError, match="no trusted platform"):
        load(manager, builds["A"], ProxyFor(builds["A"], vouch=False))
    client = load(manager, builds["A"], ProxyFor(builds["A"], vouch=False), trusted=(local_platform,))
    assert client.call("echo", b"trusted now") == b"trusted now"
