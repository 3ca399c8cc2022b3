"""pyasylo: enclave applications in Python, modelled on Google Asylo.

The untrusted side loads an enclave and calls it:

    import asylo
    manager = asylo.EnclaveManager.instance()
    client = manager.load_enclave(asylo.EnclaveLoadConfig("demo", sim=asylo.SimLoadConfig("demo.aimg")))
    output = client.enter_and_run(asylo.EnclaveInput(data=b"..."))
    manager.destroy_enclave(client)

`remote=asylo.RemoteLoadConfig("demo.aimg")` instead of `sim=...` runs the enclave in a proxy process reached
over gRPC (local provisioning by default). The trusted side (the enclave's code) subclasses
`asylo.trusted.TrustedApplication`.
"""

from asylo.host.client import EnclaveClient
from asylo.host.config import EnclaveLoadConfig, SimLoadConfig
from asylo.host.exit_calls import ExitCallRegistry
from asylo.host.manager import EnclaveManager, EnclaveManagerOptions
from asylo.image import ImageError, Manifest, VerifiedImage, load_image
from asylo.primitives.extents import MessageReader, MessageWriter
from asylo.proto.enclave_pb2 import EnclaveConfig, EnclaveFinal, EnclaveInput, EnclaveOutput
from asylo.remote import (
    ClientCredentials,
    DirectProvision,
    LocalProvision,
    RemoteLoadConfig,
    RemoteProvision,
    RemoteProxyClientConfig,
    ServerCredentials,
)
from asylo.status import (
    AbortedError,
    AlreadyExistsError,
    AsyloError,
    AttestationError,
    CancelledError,
    DataLossError,
    DeadlineExceededError,
    EnclaveUnavailable,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    PermissionDeniedError,
    ResourceExhaustedError,
    Status,
    StatusCode,
    UnauthenticatedError,
    UnimplementedError,
    UnknownError,
)

__version__ = "0.1.0"

__all__ = [
    "AbortedError",
    "AlreadyExistsError",
    "AsyloError",
    "AttestationError",
    "CancelledError",
    "ClientCredentials",
    "DirectProvision",
    "DataLossError",
    "DeadlineExceededError",
    "EnclaveClient",
    "EnclaveConfig",
    "EnclaveFinal",
    "EnclaveInput",
    "EnclaveLoadConfig",
    "EnclaveManager",
    "EnclaveManagerOptions",
    "EnclaveOutput",
    "EnclaveUnavailable",
    "ExitCallRegistry",
    "FailedPreconditionError",
    "ImageError",
    "InternalError",
    "InvalidArgumentError",
    "LocalProvision",
    "Manifest",
    "MessageReader",
    "MessageWriter",
    "NotFoundError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "RemoteLoadConfig",
    "RemoteProvision",
    "RemoteProxyClientConfig",
    "ResourceExhaustedError",
    "ServerCredentials",
    "SimLoadConfig",
    "Status",
    "StatusCode",
    "UnauthenticatedError",
    "UnimplementedError",
    "UnknownError",
    "VerifiedImage",
    "load_image",
]
