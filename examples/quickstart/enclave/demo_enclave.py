"""The quickstart enclave: encrypts the host's message with a key that never leaves the enclave.

Asylo's demo, in Python. `initialize` generates an AES-256-GCM key inside the enclave; `run` encrypts the message in
the `quickstart_input` extension and sends the result back to the host through a host call ("encrypted_message"),
as Asylo's remote quickstart does, and also returns it in `quickstart_output`. `decrypt` reverses it, so a round trip
shows that only this enclave instance can read what it encrypted.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from asylo.proto.enclave_pb2 import EnclaveConfig, EnclaveFinal, EnclaveInput, EnclaveOutput
from asylo.status import InvalidArgumentError
from asylo.trusted import TrustedApplication, entry_point

from . import demo_pb2

_NONCE_SIZE = 12
_AAD = b"pyasylo quickstart"


class DemoEnclave(TrustedApplication):
    def initialize(self, config: EnclaveConfig) -> None:
        self._cipher = AESGCM(AESGCM.generate_key(bit_length=256))

    def run(self, enclave_input: EnclaveInput) -> EnclaveOutput:
        if not enclave_input.HasExtension(demo_pb2.quickstart_input):
            raise InvalidArgumentError("expected a quickstart_input extension")
        demo = enclave_input.Extensions[demo_pb2.quickstart_input]
        output = EnclaveOutput()
        if demo.action == demo_pb2.Demo.DECRYPT:
            plaintext = self.decrypt(bytes.fromhex(demo.value)).decode("utf-8")
            output.Extensions[demo_pb2.quickstart_output].value = plaintext
            return output
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
