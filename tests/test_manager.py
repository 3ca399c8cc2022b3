"""EnclaveManager and load configurations: names, singletons, images, debug enclaves."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import asylo
from asylo.cli.quickstart import demo_proto
from asylo.image import build_image, write_image
from asylo.proto import status_pb2
from asylo.status import StatusCode
from tests.conftest import ENCLAVES, QUICKSTART

Load = Callable[..., asylo.EnclaveClient]


def test_duplicate_name_refused(load_primitives: Load) -> None:
    load_primitives("twice")
    with pytest.raises(asylo.AlreadyExistsError, match="'twice' is already loaded"):
        load_primitives("twice")


def test_get_client(manager: asylo.EnclaveManager, load_primitives: Load) -> None:
    client = load_primitives("found")
    assert manager.get_client("found") is client
    assert manager.loaded_enclaves() == ["found"]
    with pytest.raises(asylo.NotFoundError, match="no enclave named 'missing'"):
        manager.get_client("missing")


@pytest.mark.parametrize("name", ["", "has space", "a/b", "x" * 129, "nul\0"])
def test_bad_enclave_names(primitives_image: asylo.VerifiedImage, name: str) -> None:
    with pytest.raises(ValueError, match="enclave names are"):
        asylo.EnclaveLoadConfig(name, sim=asylo.SimLoadConfig(primitives_image))


def test_backend_required() -> None:
    with pytest.raises(ValueError, match="give exactly one backend"):
        asylo.EnclaveLoadConfig("nothing")


def test_singleton_and_configure() -> None:
    first = asylo.EnclaveManager.instance()
    assert asylo.EnclaveManager.instance() is first
    with pytest.raises(asylo.FailedPreconditionError, match=r"before EnclaveManager\.instance"):
        asylo.EnclaveManager.configure(asylo.EnclaveManagerOptions())


def test_load_from_image_file(manager: asylo.EnclaveManager, tmp_path: Path, signing_key: Ed25519PrivateKey) -> None:
    path = tmp_path / "primitives.aimg"
    write_image(path, build_image(ENCLAVES / "primitives", signing_key))
    client = manager.load_enclave(asylo.EnclaveLoadConfig("from-file", sim=asylo.SimLoadConfig(path)))
    assert client.call("echo", b"file") == b"file"
    assert client.measurement == asylo.load_image(path).measurement


def test_tampered_image_file_refused_at_load(manager: asylo.EnclaveManager, tmp_path: Path,
                                             signing_key: Ed25519PrivateKey) -> None:
    path = tmp_path / "primitives.aimg"
    data = bytearray(build_image(ENCLAVES / "primitives", signing_key))
    index = data.index(b"ORIGIN = \"image\"")
    data[index + len("ORIGIN = \"")] = ord("I")  # one byte of one source file
    path.write_bytes(bytes(data))
    with pytest.raises(asylo.PermissionDeniedError, match="measurement mismatch"):
        manager.load_enclave(asylo.EnclaveLoadConfig("tampered", sim=asylo.SimLoadConfig(path)))
    assert manager.loaded_enclaves() == []


def test_debug_enclave_needs_debug(manager: asylo.EnclaveManager, quickstart_image: asylo.VerifiedImage) -> None:
    assert quickstart_image.manifest.debug
    with pytest.raises(asylo.FailedPreconditionError, match="debug enclave; load it with debug=True"):
        manager.load_enclave(asylo.EnclaveLoadConfig("demo", sim=asylo.SimLoadConfig(quickstart_image)))
    assert manager.loaded_enclaves() == []
    manager.load_enclave(asylo.EnclaveLoadConfig("demo", sim=asylo.SimLoadConfig(quickstart_image, debug=True)))


def test_entry_point_must_be_a_trusted_application(manager: asylo.EnclaveManager, tmp_path: Path,
                                                   signing_key: Ed25519PrivateKey) -> None:
    source = tmp_path / "not_an_app"
    shutil.copytree(ENCLAVES / "primitives", source)
    (source / "enclave.toml").write_text('name = "x"\nentry_point = "counter:calls"\n')
    image = asylo.load_image(build_image(source, signing_key))
    with pytest.raises(asylo.InvalidArgumentError, match="is not a TrustedApplication subclass"):
        manager.load_enclave(asylo.EnclaveLoadConfig("bad", sim=asylo.SimLoadConfig(image)))
    (source / "enclave.toml").write_text('name = "x"\nentry_point = "counter:Missing"\n')
    image = asylo.load_image(build_image(source, signing_key))
    with pytest.raises(asylo.InvalidArgumentError, match="has no 'Missing'"):
        manager.load_enclave(asylo.EnclaveLoadConfig("bad", sim=asylo.SimLoadConfig(image)))
    assert manager.loaded_enclaves() == []


def test_enclave_import_error_is_reported(manager: asylo.EnclaveManager, tmp_path: Path,
                                          signing_key: Ed25519PrivateKey) -> None:
    source = tmp_path / "broken"
    shutil.copytree(ENCLAVES / "primitives", source)
    (source / "app.py").write_text("raise RuntimeError('enclave module failed at import')\n")
    image = asylo.load_image(build_image(source, signing_key))
    with pytest.raises(asylo.InternalError, match="failed to load its entry point 'app:PrimitivesTestEnclave': "
                       "RuntimeError: enclave module failed at import"):
        manager.load_enclave(asylo.EnclaveLoadConfig("broken", sim=asylo.SimLoadConfig(image)))
    assert manager.loaded_enclaves() == []
    assert not any(type(finder).__name__ == "_ImageFinder" for finder in sys.meta_path)


def test_status_codes_match_the_proto_enum() -> None:
    assert {code.name: int(code) for code in StatusCode} == dict(status_pb2.StatusCode.items())
    for code in StatusCode:
        if code is not StatusCode.OK:
            error = asylo.Status(code, "m")
            with pytest.raises(asylo.AsyloError) as raised:
                error.raise_for_status()
            assert raised.value.code is code
    assert asylo.Status.from_proto(status_pb2.StatusProto(code=7, message="no")) == asylo.Status(
        StatusCode.PERMISSION_DENIED, "no")


def test_enclave_messages_take_user_extensions(quickstart_image: asylo.VerifiedImage) -> None:
    demo_pb2 = demo_proto()
    message = asylo.EnclaveInput(data=b"plain bytes too")
    message.Extensions[demo_pb2.quickstart_input].value = "extended"
    parsed = asylo.EnclaveInput.FromString(message.SerializeToString())
    assert parsed.Extensions[demo_pb2.quickstart_input].value == "extended"
    assert parsed.data == b"plain bytes too"
    assert QUICKSTART.is_dir()
