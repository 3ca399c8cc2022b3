"""Visible proof: everything that crosses the proxy's gRPC connection during a quickstart run over *plaintext*
gRPC (no TLS) is recorded by a relay in the middle, and neither the message nor the enclave's key is in it.

The control run does the same with attestation (and so record encryption) switched off, and finds the message in
the capture: the capture sees what there is to see, so the first run's empty result means something.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import asylo
from asylo.cli.quickstart import backend_config, run_quickstart
from asylo.identity import EnclaveIdentity, SealPolicy, SimPlatformKey
from asylo.image import build_image, load_image, write_image
from asylo.remote.provision import ProvisionedProxy
from asylo.trusted.sealing import unseal
from tests.capture_relay import CaptureRelay
from tests.conftest import QUICKSTART

#: Every test here runs over both session transports (see conftest's `transport`).
pytestmark = pytest.mark.usefixtures("transport")

MESSAGE = "Asylo Rocks: a message only the enclave may read"
KEY_AAD = b"pyasylo quickstart key\0quickstart-key"


class RelayedProvision(asylo.RemoteProvision):
    """Local provisioning with a recording relay between the host and the proxy."""

    def __init__(self) -> None:
        self._local = asylo.LocalProvision()
        self.relays: list[CaptureRelay] = []

    def provision(self, image_path: Path, *, transport: str | None = None) -> ProvisionedProxy:
        proxy = self._local.provision(image_path)
        relay = CaptureRelay(int(proxy.target.rsplit(":", 1)[1]))
        self.relays.append(relay)

        def release() -> None:
            proxy.release()
            relay.close()

        return ProvisionedProxy(f"127.0.0.1:{relay.port}", proxy.token, proxy.credentials, release, proxy.pid,
                                proxy.trusted_platforms, proxy.transport)


@pytest.fixture
def quickstart_image_file(tmp_path: Path, signing_key: Ed25519PrivateKey) -> Path:
    path = tmp_path / "quickstart.aimg"
    write_image(path, build_image(QUICKSTART, signing_key))
    return path


def run_relayed(image: Path, key_store: Path, *, attestation: bool) -> tuple[bytes, str]:
    provision = RelayedProvision()
    config = backend_config("remote", image, provision=provision)
    assert isinstance(config, asylo.RemoteLoadConfig)
    config = asylo.RemoteLoadConfig(config.image, proxy=asylo.RemoteProxyClientConfig(
        provision, attestation=attestation), debug=config.debug)
    manager = asylo.EnclaveManager()
    try:
        result = run_quickstart(MESSAGE, config, manager=manager, echo=False, key_store=key_store)
    finally:
        manager.shutdown()
    [relay] = provision.relays
    return relay.captured, result.encrypted_hex


def test_the_network_sees_neither_the_message_nor_the_key(quickstart_image_file: Path, tmp_path: Path,
                                                          sim_platform_dir: Path) -> None:
    key_store = tmp_path / "keys"
    captured, ciphertext_hex = run_relayed(quickstart_image_file, key_store, attestation=True)
    assert len(captured) > 1000, "the relay recorded nothing: the proof would prove nothing"

    # The enclave's AES key, recovered the only way there is: unsealed with the platform, for the enclave's identity.
    identity = EnclaveIdentity.from_image(load_image(quickstart_image_file))
    platform = SimPlatformKey.load_or_create(sim_platform_dir).platform(identity)
    key = unseal(platform, (key_store / "quickstart-key.sealed").read_bytes(), KEY_AAD)
    assert len(key) == 32
    ciphertext = bytes.fromhex(ciphertext_hex)

    for secret, what in ((MESSAGE.encode(), "the message"), (key, "the key"), (key.hex().encode(), "the key (hex)"),
                         (ciphertext_hex.encode(), "the enclave's output (hex)"), (ciphertext, "the ciphertext")):
        assert secret not in captured, f"{what} crossed the proxy's connection in the clear"
    # What is visible: the session's plaintext opening (token, load config, evidence), nothing of the calls.
    assert b"quickstart" in captured or b"demo_enclave" in captured


def test_control_without_record_encryption_the_message_is_visible(quickstart_image_file: Path,
                                                                  tmp_path: Path) -> None:
    captured, ciphertext_hex = run_relayed(quickstart_image_file, tmp_path / "keys", attestation=False)
    assert MESSAGE.encode() in captured
    assert ciphertext_hex.encode() in captured


def test_seal_policy_default_is_measurement() -> None:
    # The key recovery above assumes the quickstart's default policy; keep the test honest if that changes.
    assert run_quickstart.__kwdefaults__ is not None
    assert run_quickstart.__kwdefaults__["seal_policy"] is SealPolicy.MEASUREMENT
