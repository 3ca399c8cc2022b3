"""The trusted side: what enclave code imports.

    from asylo.trusted import SealPolicy, TrustedApplication, entry_point

    class Demo(TrustedApplication):
        def initialize(self, config):
            # A secret that outlives the enclave: sealed inside, kept by the host, verified when it comes back.
            blob = self.host.load_sealed("key")
            if blob is None:
                self.key = os.urandom(32)
                self.host.store_sealed("key", self.seal(self.key, SealPolicy.MEASUREMENT, aad=b"key"))
            else:
                self.key = self.unseal(blob, aad=b"key")
        def run(self, enclave_input): ...
        @entry_point
        def decrypt(self, ciphertext: bytes) -> bytes: ...

This package never imports the host side: an enclave sees the host only through `self.host` (host calls), whose
answers it must treat as hostile input.
"""

from asylo.identity import SealPolicy
from asylo.trusted.application import EnclaveAbort, TrustedApplication, entry_point, entry_selector
from asylo.trusted.host_calls import HostCalls
from asylo.trusted.runtime import LifecycleState, TrustedRuntime

__all__ = [
    "EnclaveAbort",
    "HostCalls",
    "LifecycleState",
    "SealPolicy",
    "TrustedApplication",
    "TrustedRuntime",
    "entry_point",
    "entry_selector",
]
