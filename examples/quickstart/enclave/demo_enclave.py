"""The quickstart enclave: encrypts the host's message with a key that never leaves the enclave in the clear.

Asylo's demo, in Python. `initialize` gets an AES-256-GCM key inside the enclave; `run` encrypts the message in
the `quickstart_input` extension and sends the result back to the host through a host call ("encrypted_message"),
as Asylo's remote quickstart does, and also returns it in `quickstart_output`. The DECRYPT action (and the `decrypt`
entry point) reverses it.

By default the key is fresh for every run, as in Asylo. With the `quickstart_config` extension of EnclaveConfig
asking for a sealed key, the key lives in the host's key store, sealed (`self.seal`) for this build of the enclave
or for its signer: a later run, in a new process, unseals it and can decrypt what an earlier run encrypted, while an
enclave with another identity gets a clear refusal. The host only ever holds the sealed blob.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from asylo.proto.enclave_pb2 import EnclaveConfig, EnclaveFinal, EnclaveInput, EnclaveOutput
from asylo.status import DataLossError, InvalidArgumentError, PermissionDeniedError
from asylo.trusted import SealPolicy, TrustedApplication, entry_point

from . import demo_pb2

_NONCE_SIZE = 12
_KEY_SIZE = 32
_AAD = b"pyasylo quickstart"
#: The key's name in the host's key store (the file <key store>/quickstart-key.sealed).
KEY_NAME = "quickstart-key"
# The name is sealed in as additional data: a host that answers with another blob of ours is refused.
_KEY_AAD = b"pyasylo quickstart key\0" + KEY_NAME.encode()
_SEAL_POLICIES = {
    demo_pb2.QuickstartConfig.SEALED_MEASUREMENT: SealPolicy.MEASUREMENT,
    demo_pb2.QuickstartConfig.SEALED_SIGNER: SealPolicy.SIGNER,
}


class DemoEnclave(TrustedApplication):
    def initialize(self, config: EnclaveConfig) -> None:
        key_policy = config.Extensions[demo_pb2.quickstart_config].key_policy
        if key_policy == demo_pb2.QuickstartConfig.EPHEMERAL:
            key = AESGCM.generate_key(bit_length=256)
        elif key_policy in _SEAL_POLICIES:
            key = self._sealed_key(_SEAL_POLICIES[key_policy])
        else:
            raise InvalidArgumentError(f"unknown quickstart key policy {key_policy}")
        self._cipher = AESGCM(key)

    def _sealed_key(self, policy: SealPolicy) -> bytes:
        """The key kept sealed in the host's key store; a new one, stored sealed, if the store has none."""
        blob = self.host.load_sealed(KEY_NAME)
        if blob is None:
            key = AESGCM.generate_key(bit_length=256)
            self.host.store_sealed(KEY_NAME, self.seal(key, policy, aad=_KEY_AAD))
            return key
        try:
            key = self.unseal(blob, aad=_KEY_AAD)
        except (PermissionDeniedError, DataLossError) as exc:
            # Same code, more context: the user sees which stored key this enclave may not (or cannot) read.
            raise type(exc)(f"cannot unseal the quickstart key in the host's key store ({KEY_NAME}): "
                            f"{exc.message}") from None
        if len(key) != _KEY_SIZE:
            raise DataLossError(f"the sealed quickstart key is {len(key)} bytes, not {_KEY_SIZE}")
        return key

    def run(self, enclave_input: EnclaveInput) -> EnclaveOutput:
        if not enclave_input.HasExtension(demo_pb2.quickstart_input):
            raise InvalidArgumentError("expected a quickstart_input extension")
        demo = enclave_input.Extensions[demo_pb2.quickstart_input]
        output = EnclaveOutput()
        if demo.action == demo_pb2.Demo.DECRYPT:
            try:
                ciphertext = bytes.fromhex(demo.value)
            except ValueError:
                raise InvalidArgumentError("the message to decrypt is not hex") from None
            try:
                plaintext = self.decrypt(ciphertext).decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidArgumentError("the decrypted message is not UTF-8 text") from None
            output.Extensions[demo_pb2.quickstart_output].value = plaintext
            return output
        if demo.action != demo_pb2.Demo.ENCRYPT:
            raise InvalidArgumentError(f"unknown quickstart action {demo.action}")
        ciphertext_hex = self.encrypt(demo.value.encode("utf-8")).hex()
        self.host.call("encrypted_message", ciphertext_hex.encode("ascii"))
        output.Extensions[demo_pb2.quickstart_output].value = ciphertext_hex
        return output

    @entry_point
    def encrypt(self, plaintext: bytes) -> bytes:
        """nonce || AES-256-GCM(plaintext)."""
        nonce = os.urandom(_NONCE_SIZE)
        return nonce + self._cipher.encrypt(nonce, plaintext, _AAD)

    @entry_point
    def decrypt(self, message: bytes) -> bytes:
        if len(message) < _NONCE_SIZE + 16:
            raise InvalidArgumentError("ciphertext too short")
        try:
            return self._cipher.decrypt(message[:_NONCE_SIZE], message[_NONCE_SIZE:], _AAD)
        except InvalidTag:
            raise InvalidArgumentError("ciphertext was not made by this enclave, or was changed") from None

    def finalize(self, enclave_final: EnclaveFinal) -> None:
        del self._cipher
