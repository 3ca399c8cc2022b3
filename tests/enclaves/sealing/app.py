"""Entry points over the trusted runtime's sealing, for tests: each one does exactly what its name says."""

from __future__ import annotations

from asylo.status import NotFoundError
from asylo.trusted import SealPolicy, TrustedApplication, entry_point


class SealingTestEnclave(TrustedApplication):
    @entry_point("seal")
    def seal_entry(self, data: bytes, policy: bytes, aad: bytes) -> bytes:
        return self.seal(data, SealPolicy(policy.decode()), aad)

    @entry_point("unseal")
    def unseal_entry(self, blob: bytes, aad: bytes) -> bytes:
        return self.unseal(blob, aad)

    @entry_point
    def store(self, name: bytes, data: bytes, policy: bytes) -> None:
        # The name is the aad: a host answering with another name's blob is caught by unseal.
        self.host.store_sealed(name.decode(), self.seal(data, SealPolicy(policy.decode()), aad=name))

    @entry_point
    def load(self, name: bytes) -> bytes:
        blob = self.host.load_sealed(name.decode())
        if blob is None:
            raise NotFoundError(f"the host has no blob named {name.decode()!r}")
        return self.unseal(blob, aad=name)

    @entry_point
    def store_unsealed(self, name: bytes, data: bytes) -> None:
        """A bug on purpose: hands the host plaintext. The runtime must refuse it before it leaves the enclave."""
        self.host.store_sealed(name.decode(), data)
