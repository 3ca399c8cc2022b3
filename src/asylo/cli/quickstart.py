"""`asylo quickstart`: Asylo's quickstart demo — encrypt a message inside an enclave.

The driver (this module) plays the part of Asylo's demo_driver.cc: it loads the quickstart enclave, hands it the
message in the `quickstart_input` extension of EnclaveInput, prints what the enclave sends back through its
"encrypted_message" host call, and destroys the enclave. Without `--image` it builds the enclave from its sources
first, in a temporary directory that is removed afterwards, signed with a throwaway key — or, with `--key-store DIR`,
with a signing key kept in DIR, so that every run builds the same enclave (same measurement, same signer) and can
unseal the key that an earlier run sealed into DIR.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import asylo
from asylo.cli.platform_options import platform_options
from asylo.cli.provision_command import connection_options, server_provision
from asylo.host.sealed_store import SealedBlobStore
from asylo.identity import AllOf, IdentityExpectation, MeasurementIs, SealPolicy, parse_fingerprint
from asylo.identity.machine import PlatformOptions
from asylo.identity.verify import LAUNCH_VALUES, expect_launch
from asylo.image import (
    ImageError,
    build_image,
    generate_signing_key,
    load_image,
    load_signing_key,
    save_signing_key,
    write_image,
)
from asylo.remote.devca import create_dev_ca
from asylo.remote.provision import ProxyTls
from asylo.remote.transports import TRANSPORT_ENV, TRANSPORTS, Transport, check_transport
from asylo.status import AsyloError, InvalidArgumentError

ENCLAVE_NAME = "demo_enclave"
#: The signing key kept in the key store directory, so that the default image is the same enclave on every run.
SIGNER_FILENAME = "quickstart-signer.pem"


def quickstart_enclave_dir() -> Path:
    """Where the quickstart enclave's sources are: inside the installed package, or in a source checkout."""
    packaged = Path(asylo.__file__).parent / "_examples" / "quickstart" / "enclave"
    checkout = Path(asylo.__file__).resolve().parents[2] / "examples" / "quickstart" / "enclave"
    for candidate in (checkout, packaged):  # a checkout's sources are the ones being edited: they win
        if (candidate / "enclave.toml").is_file():
            return candidate
    raise click.ClickException(f"the quickstart enclave's sources are missing (looked in {packaged} and {checkout})")


def demo_proto() -> ModuleType:
    """The quickstart's demo_pb2 (the host needs the same extension the enclave reads), loaded from its sources."""
    path = quickstart_enclave_dir() / "demo_pb2.py"
    spec = importlib.util.spec_from_file_location("asylo_quickstart_demo_pb2", path)
    if spec is None or spec.loader is None:
        raise click.ClickException(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class QuickstartResult:
    #: The ciphertext (nonce || AES-256-GCM), hex: what the enclave encrypted, or what it was asked to decrypt.
    encrypted_hex: str
    measurement: bytes
    #: What the enclave decrypted (run_quickstart_decrypt only).
    decrypted: str | None = None


def backend_config(backend: str, image_path: Path, *, tls_dir: Path | None = None,
                   provision: asylo.RemoteProvision | None = None, trusted_platforms: tuple[str, ...] = (),
                   platform: PlatformOptions | None = None, launch: IdentityExpectation | None = None,
                   transport: Transport | None = None) -> asylo.SimLoadConfig | asylo.RemoteLoadConfig:
    """The load config for `backend`: "remote" (a proxy process) or "sim" (in-process).

    Remote proxies come from `provision` (default: local provisioning, on `platform`). With `tls_dir`, local
    provisioning uses mutual TLS with a development CA made there. `trusted_platforms`: fingerprints of the sim
    platforms whose evidence the host believes besides those the provisioning vouches for (a provision server's
    machine needs one). `launch`: on a hardware platform, the launch expectation (its reference values); the
    enclave must then be that launch *and* run exactly this image. `transport`: "direct" or "grpc" (None: the
    provisioning's).
    """
    if backend == "sim":
        return asylo.SimLoadConfig(image_path, debug=True)
    provision = provision or asylo.LocalProvision(platform=platform)
    if tls_dir is not None:
        ca = create_dev_ca(tls_dir)
        provision = asylo.LocalProvision(
            tls=ProxyTls(ca.server_cert, ca.server_key, client_ca_file=ca.ca_cert),
            credentials=asylo.ClientCredentials.tls(ca.ca_cert, cert_file=ca.client_cert, key_file=ca.client_key),
            platform=platform)
    proxy = asylo.RemoteProxyClientConfig(provision, trusted_platforms=trusted_platforms, transport=transport)
    expectation = None
    if launch is not None:
        expectation = AllOf(launch, MeasurementIs(load_image(image_path).measurement, allow_debug=True))
    return asylo.RemoteLoadConfig(image_path, proxy=proxy, debug=True, expectation=expectation)


def quickstart_signer(key_store: Path) -> Ed25519PrivateKey:
    """The signing key kept in `key_store` (made, mode 0600, on first use): a stable signer, and so a stable image."""
    path = SealedBlobStore(key_store).directory / SIGNER_FILENAME
    if not path.exists():
        with contextlib.suppress(ImageError):  # refused if another run made it a moment ago: use that one
            save_signing_key(generate_signing_key(), path)
    return load_signing_key(path)


def _key_policy(demo_pb2: ModuleType, seal_policy: SealPolicy) -> int:
    policy: int = (demo_pb2.QuickstartConfig.SEALED_SIGNER if seal_policy is SealPolicy.SIGNER
                   else demo_pb2.QuickstartConfig.SEALED_MEASUREMENT)
    return policy


@contextlib.contextmanager
def _quickstart_enclave(backend: asylo.SimLoadConfig | asylo.RemoteLoadConfig, exit_calls: asylo.ExitCallRegistry,
                        manager: asylo.EnclaveManager | None,
                        seal_policy: SealPolicy) -> Iterator[tuple[asylo.EnclaveClient, ModuleType]]:
    """The quickstart enclave, loaded (with a sealed key if `exit_calls` has a key store) and destroyed after."""
    demo_pb2 = demo_proto()
    manager = manager or asylo.EnclaveManager.instance()
    enclave_config = asylo.EnclaveConfig()
    if exit_calls.key_store is not None:
        enclave_config.Extensions[demo_pb2.quickstart_config].key_policy = _key_policy(demo_pb2, seal_policy)
    if isinstance(backend, asylo.SimLoadConfig):
        config = asylo.EnclaveLoadConfig(ENCLAVE_NAME, sim=backend, exit_calls=exit_calls, config=enclave_config)
    else:
        config = asylo.EnclaveLoadConfig(ENCLAVE_NAME, remote=backend, exit_calls=exit_calls, config=enclave_config)
    client = manager.load_enclave(config)
    try:
        yield client, demo_pb2
    finally:
        manager.destroy_enclave(client)


def run_quickstart(message: str, backend: asylo.SimLoadConfig | asylo.RemoteLoadConfig, *,
                   manager: asylo.EnclaveManager | None = None, echo: bool = True,
                   key_store: Path | SealedBlobStore | None = None,
                   seal_policy: SealPolicy = SealPolicy.MEASUREMENT) -> QuickstartResult:
    """Load the quickstart enclave, encrypt `message` in it, destroy it. Prints Asylo's lines when `echo`.

    With `key_store` the enclave's key is the one sealed in that directory (made and sealed under `seal_policy` on
    first use); without it, a fresh key that dies with the enclave.
    """
    received: list[str] = []
    exit_calls = asylo.ExitCallRegistry(key_store=key_store)

    @exit_calls.register("encrypted_message")
    def encrypted_message(ciphertext_hex: bytes) -> None:
        # Host-call input is the enclave's output: printable hex, or it is refused.
        text = ciphertext_hex.decode("ascii")
        bytes.fromhex(text)
        received.append(text)
        if echo:
            click.echo("Encrypted message:")
            click.echo(text)

    with _quickstart_enclave(backend, exit_calls, manager, seal_policy) as (client, demo_pb2):
        returned = _ask_demo(client, demo_pb2, message, demo_pb2.Demo.ENCRYPT)
        measurement = client.measurement
    if received != [returned]:
        raise click.ClickException("the enclave's host call and its output disagree")
    return QuickstartResult(returned, measurement)


def _ask_demo(client: asylo.EnclaveClient, demo_pb2: ModuleType, value: str, action: int) -> str:
    """One run of the demo enclave: `action` (Demo.ENCRYPT or DECRYPT) on `value`; what it answered."""
    enclave_input = asylo.EnclaveInput()
    demo = enclave_input.Extensions[demo_pb2.quickstart_input]
    demo.value = value
    demo.action = action
    output = client.enter_and_run(enclave_input)
    answer: str = output.Extensions[demo_pb2.quickstart_output].value
    return answer


def run_quickstart_decrypt(ciphertext_hex: str, backend: asylo.SimLoadConfig | asylo.RemoteLoadConfig, *,
                           key_store: Path | SealedBlobStore, manager: asylo.EnclaveManager | None = None,
                           echo: bool = True, seal_policy: SealPolicy = SealPolicy.MEASUREMENT) -> QuickstartResult:
    """Load the quickstart enclave with the key sealed in `key_store`, decrypt `ciphertext_hex` (what an earlier
    run printed) in it, destroy it. Prints "Decrypted message:" and the plaintext when `echo`.

    Only the enclave the key was sealed for can do it: another measurement (or, for a key sealed under the SIGNER
    policy, another signer or product) fails to load with PERMISSION_DENIED.
    """
    exit_calls = asylo.ExitCallRegistry(key_store=key_store)
    with _quickstart_enclave(backend, exit_calls, manager, seal_policy) as (client, demo_pb2):
        plaintext = _ask_demo(client, demo_pb2, ciphertext_hex, demo_pb2.Demo.DECRYPT)
        measurement = client.measurement
    if echo:
        click.echo("Decrypted message:")
        click.echo(plaintext)
    return QuickstartResult(ciphertext_hex, measurement, plaintext)


def _ciphertext_hex(value: str | None) -> str | None:
    if value is None:
        return None
    text = value.strip().lower()
    try:
        if not bytes.fromhex(text):
            raise ValueError("empty")
    except ValueError:
        raise click.BadParameter("not hex: give the hex string an earlier run printed after 'Encrypted message:'",
                                 param_hint="--decrypt") from None
    return text


def _launch_expectation(value: str | None) -> IdentityExpectation | None:
    """`KIND=HEX[,NAME=HEX...]`: the first value is the launch's main measurement (LAUNCH_VALUES)."""
    if value is None:
        return None
    kind, separator, rest = value.partition("=")
    try:
        if not separator or not rest:
            raise InvalidArgumentError(f"takes KIND=HEX[,NAME=HEX...], got {value!r}")
        values: dict[str, bytes] = {}
        for index, item in enumerate(rest.split(",")):
            name, has_name, digits = item.rpartition("=")
            if index == 0 and not has_name:
                name = LAUNCH_VALUES[kind][0][0] if kind in LAUNCH_VALUES else "measurement"
            elif not has_name or not name:
                raise InvalidArgumentError(f"takes KIND=HEX[,NAME=HEX...], got {item!r} after the first value")
            try:
                values[name.strip()] = bytes.fromhex(digits)
            except ValueError:
                raise InvalidArgumentError(f"not hex digits for {kind} {name}") from None
        return expect_launch(kind, values)
    except InvalidArgumentError as exc:
        raise click.BadParameter(exc.message, param_hint="--expect-launch") from None


def _trusted_platforms(values: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return tuple(parse_fingerprint(value) for value in values)
    except InvalidArgumentError as exc:
        raise click.BadParameter(exc.message, param_hint="--trust-platform") from None


@click.command()
@click.option("--message", "-m", help="The message to encrypt inside the enclave.")
@click.option("--decrypt", "decrypt_hex", metavar="HEX",
              help="Decrypt HEX (what an earlier run printed) instead of encrypting. Needs --key-store: only the key "
                   "that run sealed can decrypt it.")
@click.option("--key-store", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Keep the enclave's key sealed in DIR (created, mode 0700): the first run makes the key and "
                   "stores it sealed, later runs unseal it. Without --image the image is built with a signing key "
                   f"kept in DIR ({SIGNER_FILENAME}), so every run is the same enclave. Default: a fresh key per "
                   "run.")
@click.option("--seal-policy", type=click.Choice(["measurement", "signer"]),
              help="With --key-store, who may unseal a new key: measurement (default): this exact build of the "
                   "enclave; signer: any build by the same signer with the same product id and an equal or higher "
                   "SVN.")
@click.option("--backend", type=click.Choice(["remote", "sim"]), default="remote", show_default=True,
              help="Where the enclave runs. remote: in a proxy process reached over gRPC, started for you on "
                   "loopback (local provisioning). sim: in this process (development; no isolation).")
@click.option("--tls", is_flag=True,
              help="remote only: connect with mutual TLS, using a development CA made for this run.")
@click.option("--image", "image_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A built quickstart image (asylo build). Default: build one from the bundled sources with a "
                   "throwaway key (with --key-store: with the key kept there).")
@click.option("--provision-server", metavar="HOST:PORT",
              help="remote only: get the proxy from this provision server (`asylo provision-server`) instead of "
                   "starting one here. Needs --image signed by a signer the server trusts; --upload sends it; "
                   "and --trust-platform for the server machine's platform.")
@click.option("--upload", is_flag=True, help="With --provision-server: upload --image if the server lacks it.")
@click.option("--trust-platform", "trust_platforms", multiple=True, metavar="FINGERPRINT",
              help="remote only: believe enclave evidence from the platform with this fingerprint: a simulated "
                   "platform's key (`asylo platform show` on that machine prints it) or an enrolled TPM's AK "
                   "(`asylo platform enroll`); repeatable. Local proxies on this machine's own simulated platform "
                   "are trusted without it.")
@click.option("--expect-launch", metavar="KIND=HEX[,NAME=HEX...]",
              help="remote only: the enclave must run on this hardware launch (hex values as `asylo platform show` "
                   "on that machine prints them, better computed from the VM or enclave image): "
                   "snp=MEASUREMENT; tdx=MRTD,rtmr1=HEX,rtmr2=HEX; nitro=PCR0 (or pcr1=HEX,pcr2=HEX, pcr8=HEX); "
                   "tpm=pcr0=HEX,pcr7=HEX,... (the boot state; a TPM is trusted by --trust-platform). Debug "
                   "launches and (TDX) a TCB status other than UpToDate are refused. SNP, TDX and Nitro need this "
                   "instead of --trust-platform.")
@click.option("--transport", type=click.Choice(TRANSPORTS), default=None, envvar=TRANSPORT_ENV, show_envvar=True,
              help="remote only: how the session travels: 'direct' (a TCP/TLS stream; the default for local "
                   "proxies) or 'grpc' (one gRPC stream). Default: what the provisioning serves.")
@connection_options
@platform_options
def quickstart(message: str | None, decrypt_hex: str | None, key_store: Path | None, seal_policy: str | None,
               backend: str, tls: bool, image_path: Path | None, provision_server: str | None, upload: bool,
               trust_platforms: tuple[str, ...], expect_launch: str | None, transport: str | None,
               ca_file: Path | None, client_cert: Path | None, client_key: Path | None, token_file: Path | None,
               platform: PlatformOptions) -> None:
    """Encrypt a message inside the quickstart enclave (Asylo's quickstart demo).

    The enclave generates an AES-256-GCM key that never leaves it, encrypts MESSAGE, and sends the ciphertext back
    through a host call; this command prints it:

    \b
        Encrypted message:
        <nonce and ciphertext, hex>

    With --key-store DIR the key outlives the run, sealed (encrypted for this enclave's identity) in DIR, and a
    later run decrypts what an earlier one encrypted:

    \b
        asylo quickstart --key-store keys --message "Asylo Rocks"
        asylo quickstart --key-store keys --decrypt <the hex above>
        Decrypted message:
        Asylo Rocks

    By default the enclave runs remotely: a proxy process started on loopback (local provisioning), reached over
    one TCP stream (--transport grpc: one gRPC stream), reaped when the demo ends. With --provision-server the
    proxy runs on another machine, started there by its provision server.
    """
    if (message is None) == (decrypt_hex is None):
        raise click.UsageError("give --message TEXT to encrypt, or --decrypt HEX (with --key-store DIR) to decrypt")
    if message is not None and not message:
        raise click.UsageError("--message must not be empty")
    if decrypt_hex is not None and key_store is None:
        raise click.UsageError("--decrypt needs --key-store DIR: without it the enclave has a fresh key, which "
                               "cannot decrypt what an earlier run encrypted")
    if seal_policy is not None and key_store is None:
        raise click.UsageError("--seal-policy goes with --key-store")
    ciphertext_hex = _ciphertext_hex(decrypt_hex)
    if tls and backend != "remote":
        raise click.UsageError("--tls applies to --backend remote only")
    if trust_platforms and backend != "remote":
        raise click.UsageError("--trust-platform applies to --backend remote only (sim runs on this machine's "
                               "platform)")
    trusted = _trusted_platforms(trust_platforms)
    launch = _launch_expectation(expect_launch)
    if launch is not None and backend != "remote":
        raise click.UsageError("--expect-launch applies to --backend remote only")
    if platform != PlatformOptions() and (backend != "remote" or provision_server is not None):
        raise click.UsageError("--platform and its options choose the platform of the proxies started here: they "
                               "go with --backend remote and no --provision-server (a provision server's operator "
                               "chooses its platform)")
    connection = (ca_file, client_cert, client_key, token_file)
    if provision_server is None and (upload or any(option is not None for option in connection)):
        raise click.UsageError("--upload, --ca, --client-cert, --client-key and --token-file go with "
                               "--provision-server")
    if provision_server is not None and (backend != "remote" or tls or image_path is None):
        raise click.UsageError("--provision-server needs --backend remote, no --tls (give --ca and, for mutual "
                               "TLS, --client-cert/--client-key), and --image: a quickstart image signed by a "
                               "signer the server trusts (asylo keygen, then asylo build)")
    policy = SealPolicy.SIGNER if seal_policy == "signer" else SealPolicy.MEASUREMENT
    if policy is SealPolicy.SIGNER and key_store is not None and image_path is None:
        # A demo convenience with a real weakness, said out loud: whoever holds the key store holds the signing key
        # too, and can build an enclave of that signer that unseals the key.
        click.echo(f"warning: the signing key is kept in {key_store} next to the sealed key; under the signer "
                   f"policy anyone with that directory can build an enclave that unseals it. Build the image with "
                   f"a key kept elsewhere (asylo build) and pass --image.", err=True)
    try:
        store = None if key_store is None else SealedBlobStore(key_store)
        provision = None if provision_server is None else server_provision(provision_server, *connection,
                                                                           upload=upload)
        with tempfile.TemporaryDirectory(prefix="asylo-quickstart-") as tmp:
            if image_path is None:
                image_path = Path(tmp) / "demo_enclave.aimg"
                signer = generate_signing_key() if key_store is None else quickstart_signer(key_store)
                write_image(image_path, build_image(quickstart_enclave_dir(), signer))
            tls_dir = Path(tmp) / "dev-ca" if tls else None
            config = backend_config(backend, image_path, tls_dir=tls_dir, provision=provision,
                                    trusted_platforms=trusted, platform=platform, launch=launch,
                                    transport=None if transport is None or backend != "remote"
                                    else check_transport(transport))
            if ciphertext_hex is not None:
                assert store is not None
                run_quickstart_decrypt(ciphertext_hex, config, key_store=store, seal_policy=policy)
            else:
                assert message is not None
                run_quickstart(message, config, key_store=store, seal_policy=policy)
    except AsyloError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
