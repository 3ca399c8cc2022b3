"""Load configurations: which enclave to load, under which name, with which backend.

As in Asylo, `EnclaveLoadConfig` names the enclave and carries one backend-specific config:

    EnclaveLoadConfig("demo", sim=SimLoadConfig(image="demo.aimg", debug=True))
    EnclaveLoadConfig("demo", remote=RemoteLoadConfig(image="demo.aimg", debug=True,
                                                      proxy=RemoteProxyClientConfig.defaults_with_provision(...)))

Each backend config knows how to open its enclave (`open`), which is the seam where new backends plug in.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from asylo.backends.base import LoadedEnclave
from asylo.backends.sim import SimEnclave
from asylo.host.exit_calls import ExitCallRegistry
from asylo.identity import EnclaveIdentity, SimPlatformKey
from asylo.image import VerifiedImage, load_image
from asylo.primitives.matching import DEFAULT_MAX_THREADS, Handler
from asylo.proto.enclave_pb2 import EnclaveConfig
from asylo.remote.config import RemoteLoadConfig

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,128}")

ImageSource = str | os.PathLike[str] | VerifiedImage


def _image(source: ImageSource) -> VerifiedImage:
    return source if isinstance(source, VerifiedImage) else load_image(source)


@dataclass(frozen=True)
class SimLoadConfig:
    """Load the enclave in this process (the `sim` backend): development and tests, no isolation.

    `image` is an image file (or an already verified image); `debug` must be set to load a debug enclave. The
    enclave runs on this machine's SIMULATED platform, the same one a local proxy uses, so what an enclave seals
    here a remote run of the same enclave on this machine can unseal, and the other way round.
    """

    image: ImageSource
    debug: bool = False
    #: Host threads the enclave serves at once, each on its own worker thread.
    max_threads: int = DEFAULT_MAX_THREADS
    #: The simulated platform's state directory (its key, created on first use); None: the default,
    #: $ASYLO_SIM_PLATFORM_DIR or ~/.local/state/asylo/sim-platform (`asylo platform show` prints it).
    platform_state: str | os.PathLike[str] | None = None

    def open(self, name: str, exit_handler: Handler) -> LoadedEnclave:
        image = _image(self.image)
        state = None if self.platform_state is None else Path(self.platform_state)
        platform = SimPlatformKey.load_or_create(state).platform(EnclaveIdentity.from_image(image))
        return SimEnclave(name, image, exit_handler, debug=self.debug, max_threads=self.max_threads,
                          platform=platform)


@dataclass(frozen=True)
class EnclaveLoadConfig:
    """Everything `EnclaveManager.load_enclave` needs: a name, a backend config, what to pass to initialize."""

    name: str
    sim: SimLoadConfig | None = None
    remote: RemoteLoadConfig | None = None
    #: Given to TrustedApplication.initialize; its `name` is set to the enclave's name.
    config: EnclaveConfig | None = None
    #: Handlers for the enclave's host calls; a new registry (built-ins only) if not given.
    exit_calls: ExitCallRegistry = field(default_factory=ExitCallRegistry)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ValueError(f"enclave names are 1..128 characters of A-Z a-z 0-9 _ . -, got {self.name!r}")
        if (self.sim is None) == (self.remote is None):
            raise ValueError(f"enclave {self.name!r}: give exactly one backend: sim=SimLoadConfig(image=...) or "
                             f"remote=RemoteLoadConfig(image=...)")

    def backend(self) -> SimLoadConfig | RemoteLoadConfig:
        backend = self.sim or self.remote
        assert backend is not None
        return backend

    def enclave_config(self) -> EnclaveConfig:
        """The EnclaveConfig given to initialize: the user's, with `name` set."""
        config = EnclaveConfig()
        if self.config is not None:
            config.CopyFrom(self.config)
        config.name = self.name
        return config
