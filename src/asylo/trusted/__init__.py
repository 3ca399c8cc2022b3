"""The trusted side: what enclave code imports.

    from asylo.trusted import TrustedApplication, entry_point

    class Demo(TrustedApplication):
        def initialize(self, config): ...
        def run(self, enclave_input): ...
        @entry_point
        def decrypt(self, ciphertext: bytes) -> bytes: ...

This package never imports the host side: an enclave sees the host only through `self.host` (host calls), whose
answers it must treat as hostile input.
"""

from asylo.trusted.application import EnclaveAbort, TrustedApplication, entry_point, entry_selector
from asylo.trusted.host_calls import HostCalls
from asylo.trusted.runtime import LifecycleState, TrustedRuntime

__all__ = [
    "EnclaveAbort",
    "HostCalls",
    "LifecycleState",
    "TrustedApplication",
    "TrustedRuntime",
    "entry_point",
    "entry_selector",
]
