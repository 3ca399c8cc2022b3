"""The provision server's image store: what gets served, what is refused, and that a refusal leaves no trace.

Real signed images (built from the test enclaves with keys made at test time) and real files under tmp_path.
Every failure is checked against a full recursive listing of the state directory (paths, modes, sizes) taken
before the attempt: a refused upload must not leave a partial file, a new entry, or a changed mode behind.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import hashlib
import logging
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from asylo.image import (
    build_image,
    generate_signing_key,
    load_image,
    public_key_bytes,
    save_signing_key,
    signer_id,
    write_image,
)
from asylo.image.format import HEADER_SIZE
from asylo.proto import image_pb2
from asylo.provision_server import store as store_module
from asylo.provision_server.limits import LimitExceededError
from asylo.provision_server.store import (
    ImageStore,
    StoredImage,
    check_image_name,
    load_trusted_signer,
    public_key_pem,
)
from asylo.status import (
    AlreadyExistsError,
    DataLossError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
)
from tests.conftest import ENCLAVES, QUICKSTART

STORE_LOGGER = "asylo.provision_server.store"


def trusted_id(key: Ed25519PrivateKey) -> bytes:
    return signer_id(public_key_bytes(key))


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@pytest.fixture(scope="module")
def untrusted_key() -> Ed25519PrivateKey:
    return generate_signing_key()


@pytest.fixture(scope="module")
def primitives(signing_key: Ed25519PrivateKey) -> bytes:
    return build_image(ENCLAVES / "primitives", signing_key)


@pytest.fixture(scope="module")
def quickstart(signing_key: Ed25519PrivateKey) -> bytes:
    return build_image(QUICKSTART, signing_key)


@pytest.fixture(scope="module")
def untrusted(untrusted_key: Ed25519PrivateKey) -> bytes:
    return build_image(ENCLAVES / "primitives", untrusted_key)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def store(state_dir: Path, signing_key: Ed25519PrivateKey) -> ImageStore:
    return ImageStore(state_dir, trusted_signers=[trusted_id(signing_key)])


def upload(store: ImageStore, name: str, data: bytes, *, size: int | None = None, digest: bytes | None = None,
           chunk: int = 1000) -> StoredImage:
    """Upload `data` in chunks; `size`/`digest` override what the header declares.

    No `with` and no `abort`: a failing `write` or `commit` must clean up by itself.
    """
    transfer = store.begin_upload(name, len(data) if size is None else size,
                                  sha256(data) if digest is None else digest)
    for start in range(0, len(data), chunk):
        transfer.write(data[start:start + chunk])
    return transfer.commit()


def listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under `root` with its full mode (type and permissions) and, for files, its size."""
    entries = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        entries[str(path.relative_to(root))] = (info.st_mode, info.st_size if stat.S_ISREG(info.st_mode) else 0)
    return entries


@contextlib.contextmanager
def leaves_no_trace(root: Path) -> Iterator[None]:
    before = listing(root)
    assert before, "the listing of a store's state directory is never empty (images/ and uploads/)"
    yield
    assert listing(root) == before


def partial_files(state_dir: Path) -> list[Path]:
    return sorted((state_dir / "uploads").iterdir())


def with_flipped_byte(data: bytes, inside: bytes, offset: int = 5) -> bytes:
    """`data` with one bit flipped `offset` bytes into the (unique) occurrence of `inside`."""
    position = data.index(inside) + offset
    assert data.count(inside) == 1
    return data[:position] + bytes([data[position] ^ 1]) + data[position + 1:]


# --- serving images ----------------------------------------------------------------------------------------------


def test_upload_then_find_by_name_and_by_measurement(store: ImageStore, state_dir: Path, primitives: bytes,
                                                     signing_key: Ed25519PrivateKey) -> None:
    stored = upload(store, "primitives", primitives)

    expected = load_image(primitives)
    assert stored == StoredImage("primitives", state_dir / "images" / "primitives.aimg", expected.measurement,
                                 trusted_id(signing_key), len(primitives), sha256(primitives))
    assert stored.path.read_bytes() == primitives
    assert store.find(name="primitives") == stored
    assert store.find(measurement=expected.measurement) == stored
    assert store.images() == [stored]
    assert partial_files(state_dir) == []


def test_images_are_listed_by_name(store: ImageStore, primitives: bytes, quickstart: bytes) -> None:
    upload(store, "zeta", primitives)
    upload(store, "alpha", quickstart)
    upload(store, "mid", primitives)

    assert [image.name for image in store.images()] == ["alpha", "mid", "zeta"]
    # Two names, one image: the answer to a measurement does not depend on upload order.
    assert store.find(measurement=load_image(primitives).measurement).name == "mid"


@pytest.fixture
def odd_umask() -> Iterator[None]:
    """A umask that takes bits from the owner too: the store's modes must be exact whatever the umask."""
    previous = os.umask(0o277)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("odd_umask")
def test_directories_and_image_files_are_private(state_dir: Path, signing_key: Ed25519PrivateKey,
                                                 primitives: bytes) -> None:
    state_dir.mkdir()
    os.chmod(state_dir, 0o700)
    (state_dir / "images").mkdir()
    os.chmod(state_dir / "images", 0o755)  # an existing, too-open directory is tightened, not trusted
    store = ImageStore(state_dir, trusted_signers=[trusted_id(signing_key)])

    assert stat.S_IMODE((state_dir / "images").stat().st_mode) == 0o700
    assert stat.S_IMODE((state_dir / "uploads").stat().st_mode) == 0o700
    with store.begin_upload("primitives", len(primitives), sha256(primitives)) as transfer:
        transfer.write(primitives[:100])
        [partial] = partial_files(state_dir)
        assert stat.S_IMODE(partial.stat().st_mode) == 0o600
        transfer.write(primitives[100:])
        stored = transfer.commit()
    assert stat.S_IMODE(stored.path.stat().st_mode) == 0o600


def test_operator_directory_images_are_served_and_the_directory_is_not_written(
        tmp_path: Path, state_dir: Path, signing_key: Ed25519PrivateKey, primitives: bytes, quickstart: bytes) -> None:
    operator = tmp_path / "operator"
    operator.mkdir()
    write_image(operator / "primitives.aimg", primitives)
    write_image(operator / "quick.start.aimg", quickstart)
    (operator / "README.txt").write_text("not an image, and not named like one")
    before = listing(operator)

    store = ImageStore(state_dir, trusted_signers=[trusted_id(signing_key)], operator_dir=operator)

    assert [image.name for image in store.images()] == ["primitives", "quick.start"]
    found = store.find(name="primitives")
    assert found.path == operator / "primitives.aimg"
    assert found.measurement == load_image(primitives).measurement
    assert store.find(measurement=load_image(quickstart).measurement).name == "quick.start"
    assert listing(operator) == before
    assert listing(state_dir / "images") == {}


def test_operator_image_signed_by_an_untrusted_key_is_skipped_with_a_warning(
        tmp_path: Path, state_dir: Path, signing_key: Ed25519PrivateKey, untrusted_key: Ed25519PrivateKey,
        untrusted: bytes, quickstart: bytes, caplog: pytest.LogCaptureFixture) -> None:
    operator = tmp_path / "operator"
    operator.mkdir()
    write_image(operator / "evil.aimg", untrusted)
    write_image(operator / "good.aimg", quickstart)

    with caplog.at_level(logging.WARNING, logger=STORE_LOGGER):
        store = ImageStore(state_dir, trusted_signers=[trusted_id(signing_key)], operator_dir=operator)

    assert [image.name for image in store.images()] == ["good"]
    with pytest.raises(NotFoundError, match="no image named 'evil'"):
        store.find(name="evil")
    with pytest.raises(NotFoundError, match=f"no image with measurement {load_image(untrusted).measurement_hex}"):
        store.find(measurement=load_image(untrusted).measurement)
    [warning] = [record for record in caplog.records if record.name == STORE_LOGGER]
    assert warning.levelno == logging.WARNING
    message = warning.getMessage()
    assert str(operator / "evil.aimg") in message
    assert trusted_id(untrusted_key).hex() in message and "not a trusted signer" in message


def test_operator_files_that_are_not_servable_images_are_skipped_with_a_reason(
        tmp_path: Path, state_dir: Path, signing_key: Ed25519PrivateKey, primitives: bytes,
        caplog: pytest.LogCaptureFixture) -> None:
    operator = tmp_path / "operator"
    operator.mkdir()
    write_image(operator / "good.aimg", primitives)
    (operator / "garbage.aimg").write_bytes(b"this is not an enclave image")
    write_image(operator / ".hidden.aimg", primitives)
    (operator / "link.aimg").symlink_to(operator / "good.aimg")
    (operator / "dir.aimg").mkdir()
    write_image(operator / "tampered.aimg", with_flipped_byte(primitives, load_image(primitives).files["app.py"]))

    with caplog.at_level(logging.WARNING, logger=STORE_LOGGER):
        store = ImageStore(state_dir, trusted_signers=[trusted_id(signing_key)], operator_dir=operator)

    assert [image.name for image in store.images()] == ["good"]
    messages = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    expected = {
        ".hidden.aimg": "starts with '.'",
        "dir.aimg": "not a regular file",
        "garbage.aimg": "not an enclave image",
        "link.aimg": "symbolic link",
        "tampered.aimg": "measurement mismatch",
    }
    assert len(messages) == len(expected)
    for file_name, reason in expected.items():
        [message] = [message for message in messages if f"{operator / file_name}:" in message]
        assert reason in message


def test_a_missing_operator_directory_is_an_error(tmp_path: Path, state_dir: Path,
                                                  signing_key: Ed25519PrivateKey) -> None:
    with pytest.raises(NotFoundError, match="image directory not found"):
        ImageStore(state_dir, trusted_signers=[trusted_id(signing_key)], operator_dir=tmp_path / "missing")


def test_a_reopened_store_finds_earlier_uploads(store: ImageStore, state_dir: Path, primitives: bytes,
                                                signing_key: Ed25519PrivateKey) -> None:
    stored = upload(store, "primitives", primitives)

    reopened = ImageStore(state_dir, trusted_signers=[trusted_id(signing_key)])

    assert reopened.find(name="primitives") == stored
    assert reopened.find(measurement=stored.measurement) == stored


def test_a_reopened_store_skips_uploads_whose_signer_is_no_longer_trusted(
        store: ImageStore, state_dir: Path, primitives: bytes, untrusted_key: Ed25519PrivateKey,
        caplog: pytest.LogCaptureFixture) -> None:
    upload(store, "primitives", primitives)

    with caplog.at_level(logging.WARNING, logger=STORE_LOGGER):
        reopened = ImageStore(state_dir, trusted_signers=[trusted_id(untrusted_key)])

    assert reopened.images() == []
    assert "not a trusted signer" in caplog.text


def test_the_operator_directory_wins_a_name_clash_with_an_earlier_upload(
        tmp_path: Path, store: ImageStore, state_dir: Path, signing_key: Ed25519PrivateKey, primitives: bytes,
        quickstart: bytes, caplog: pytest.LogCaptureFixture) -> None:
    upload(store, "app", primitives)
    operator = tmp_path / "operator"
    operator.mkdir()
    write_image(operator / "app.aimg", quickstart)

    with caplog.at_level(logging.WARNING, logger=STORE_LOGGER):
        reopened = ImageStore(state_dir, trusted_signers=[trusted_id(signing_key)], operator_dir=operator)

    assert reopened.find(name="app").path == operator / "app.aimg"
    assert "already served from" in caplog.text


def test_partial_uploads_left_by_a_crash_are_removed_at_start_up(state_dir: Path,
                                                                  signing_key: Ed25519PrivateKey) -> None:
    (state_dir / "uploads").mkdir(parents=True)
    (state_dir / "uploads" / "0123.part").write_bytes(b"half an image")

    ImageStore(state_dir, trusted_signers=[trusted_id(signing_key)])

    assert partial_files(state_dir) == []


# --- refused uploads ---------------------------------------------------------------------------------------------


def test_an_upload_by_an_untrusted_signer_is_refused_and_names_the_signer(
        store: ImageStore, state_dir: Path, untrusted: bytes, untrusted_key: Ed25519PrivateKey) -> None:
    with leaves_no_trace(state_dir), pytest.raises(PermissionDeniedError) as info:
        upload(store, "primitives", untrusted)
    assert f"signed by {trusted_id(untrusted_key).hex()}, which is not a trusted signer" in info.value.message
    assert store.images() == []


@pytest.mark.parametrize("field", ["signature", "content"])
def test_a_tampered_upload_with_a_matching_digest_is_refused(store: ImageStore, state_dir: Path, primitives: bytes,
                                                             field: str) -> None:
    original = load_image(primitives)
    if field == "signature":
        inside = image_pb2.EnclaveImage.FromString(primitives[HEADER_SIZE:]).signature
        reason = "signature does not verify"
    else:
        inside = original.files["app.py"]
        reason = "measurement mismatch"
    tampered = with_flipped_byte(primitives, inside)

    # The declared digest is the tampered file's own, so only verification can catch it.
    with leaves_no_trace(state_dir), pytest.raises(PermissionDeniedError, match=reason):
        upload(store, "primitives", tampered)
    assert store.images() == []


def test_bytes_that_are_not_an_image_are_refused(store: ImageStore, state_dir: Path) -> None:
    with leaves_no_trace(state_dir), pytest.raises(PermissionDeniedError, match="not a valid signed image"):
        upload(store, "unsigned", b"#!/bin/sh\nrm -rf /\n" * 100)


BAD_NAMES = ["a/b", "..", "a..b", "x\0y", "", ".hidden", "a" * 200, "a\\b", "line\nbreak", "\udc80", "é" * 127]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_names_are_refused(store: ImageStore, state_dir: Path, primitives: bytes, name: str) -> None:
    with leaves_no_trace(state_dir):
        with pytest.raises(InvalidArgumentError):
            store.begin_upload(name, len(primitives), sha256(primitives))
        with pytest.raises(InvalidArgumentError):
            store.find(name=name)
        with pytest.raises(InvalidArgumentError):
            check_image_name(name)


@pytest.mark.parametrize("name", ["a" * 128, "primitives-v1.2_final", "é" * 100, "has space"])
def test_plain_names_are_accepted(store: ImageStore, primitives: bytes, name: str) -> None:
    check_image_name(name)
    assert upload(store, name, primitives).path.name == f"{name}.aimg"
    assert store.find(name=name).name == name


@pytest.mark.parametrize(("size", "digest", "error"), [
    (0, None, InvalidArgumentError),
    (-1, None, InvalidArgumentError),
    (100, b"short", InvalidArgumentError),
    (100, b"", InvalidArgumentError),
])
def test_bad_headers_are_refused(store: ImageStore, state_dir: Path, size: int, digest: bytes | None,
                                 error: type[Exception]) -> None:
    with leaves_no_trace(state_dir), pytest.raises(error):
        store.begin_upload("name", size, sha256(b"x") if digest is None else digest)


def test_a_size_over_the_limit_is_refused_before_any_byte_is_sent(state_dir: Path, signing_key: Ed25519PrivateKey,
                                                                  primitives: bytes) -> None:
    store = ImageStore(state_dir, trusted_signers=[trusted_id(signing_key)], max_image_size=len(primitives) - 1)
    with leaves_no_trace(state_dir), pytest.raises(LimitExceededError) as info:
        store.begin_upload("primitives", len(primitives), sha256(primitives))
    assert info.value.reason == "image_too_large"
    assert f"{len(primitives)} bytes" in info.value.message
    assert f"limit of {len(primitives) - 1} bytes" in info.value.message


@pytest.mark.parametrize(("declared", "extra", "message"), [
    (-10, b"", "longer than its declared size of"),
    (0, b"x", "over the limit of"),
])
def test_writing_past_the_declared_size_or_the_limit_is_refused(
        state_dir: Path, signing_key: Ed25519PrivateKey, primitives: bytes, declared: int, extra: bytes,
        message: str) -> None:
    store = ImageStore(state_dir, trusted_signers=[trusted_id(signing_key)], max_image_size=len(primitives))
    with leaves_no_trace(state_dir):
        transfer = store.begin_upload("primitives", len(primitives) + declared, sha256(primitives))
        transfer.write(primitives[:100])
        with pytest.raises(ResourceExhaustedError, match=message):
            transfer.write(primitives[100:] + extra)
        # The failure ended the upload: nothing more is accepted.
        with pytest.raises(FailedPreconditionError):
            transfer.write(b"x")
    assert store.images() == []


def test_a_wrong_digest_is_data_loss(store: ImageStore, state_dir: Path, primitives: bytes) -> None:
    with leaves_no_trace(state_dir), pytest.raises(DataLossError, match="SHA-256"):
        upload(store, "primitives", primitives, digest=sha256(b"something else"))
    assert store.images() == []


def test_a_short_upload_is_data_loss(store: ImageStore, state_dir: Path, primitives: bytes) -> None:
    with leaves_no_trace(state_dir), pytest.raises(DataLossError, match=f"of its declared {len(primitives)} bytes"):
        upload(store, "primitives", primitives[:-1], size=len(primitives), digest=sha256(primitives))
    assert store.images() == []


def test_a_name_taken_by_a_different_image_is_refused_and_the_same_bytes_are_fine(
        store: ImageStore, state_dir: Path, primitives: bytes, quickstart: bytes) -> None:
    first = upload(store, "app", primitives)

    with leaves_no_trace(state_dir):
        with pytest.raises(AlreadyExistsError, match="already exists with different content"):
            store.begin_upload("app", len(quickstart), sha256(quickstart))
        assert upload(store, "app", primitives) == first
    assert store.images() == [first]


def test_of_two_uploads_racing_for_one_name_the_second_to_commit_is_refused(
        store: ImageStore, state_dir: Path, primitives: bytes, quickstart: bytes) -> None:
    first = store.begin_upload("app", len(primitives), sha256(primitives))
    second = store.begin_upload("app", len(quickstart), sha256(quickstart))
    first.write(primitives)
    second.write(quickstart)
    stored = first.commit()

    with pytest.raises(AlreadyExistsError):
        second.commit()
    assert partial_files(state_dir) == []
    assert store.images() == [stored]
    assert stored.path.read_bytes() == primitives


def test_a_file_left_under_the_name_but_not_served_is_never_replaced(
        store: ImageStore, state_dir: Path, untrusted: bytes, primitives: bytes) -> None:
    (state_dir / "images" / "app.aimg").write_bytes(untrusted)  # as if its signer had been trusted once
    with leaves_no_trace(state_dir), pytest.raises(AlreadyExistsError, match="not served"):
        upload(store, "app", primitives)
    assert (state_dir / "images" / "app.aimg").read_bytes() == untrusted


def test_too_many_uploads_in_progress_are_refused(state_dir: Path, signing_key: Ed25519PrivateKey,
                                                  primitives: bytes) -> None:
    store = ImageStore(state_dir, trusted_signers=[trusted_id(signing_key)], max_pending_uploads=2)
    first = store.begin_upload("a", len(primitives), sha256(primitives))
    second = store.begin_upload("b", len(primitives), sha256(primitives))

    with leaves_no_trace(state_dir), pytest.raises(LimitExceededError, match="uploads are already in progress") as info:
        store.begin_upload("c", len(primitives), sha256(primitives))
    assert info.value.reason == "pending_uploads"
    first.abort()
    store.begin_upload("c", len(primitives), sha256(primitives)).abort()
    second.abort()


# --- ending uploads ----------------------------------------------------------------------------------------------


def test_abort_removes_the_partial_file_and_is_idempotent(store: ImageStore, state_dir: Path,
                                                           primitives: bytes) -> None:
    with leaves_no_trace(state_dir):
        transfer = store.begin_upload("primitives", len(primitives), sha256(primitives))
        transfer.write(primitives[:500])
        assert len(partial_files(state_dir)) == 1
        transfer.abort()
        transfer.abort()
    with pytest.raises(FailedPreconditionError):
        transfer.commit()


def test_an_exception_inside_the_context_manager_aborts(store: ImageStore, state_dir: Path,
                                                        primitives: bytes) -> None:
    with (leaves_no_trace(state_dir), pytest.raises(RuntimeError, match="client went away"),
          store.begin_upload("primitives", len(primitives), sha256(primitives)) as transfer):
        transfer.write(primitives[:500])
        raise RuntimeError("client went away")
    with pytest.raises(NotFoundError):
        store.find(name="primitives")


def test_an_abandoned_upload_is_cleaned_up_when_dropped(state_dir: Path, signing_key: Ed25519PrivateKey,
                                                        primitives: bytes) -> None:
    store = ImageStore(state_dir, trusted_signers=[trusted_id(signing_key)], max_pending_uploads=1)
    with leaves_no_trace(state_dir):
        transfer = store.begin_upload("primitives", len(primitives), sha256(primitives))
        transfer.write(primitives[:500])
        del transfer
        gc.collect()
    # Its slot is free again.
    assert upload(store, "primitives", primitives).name == "primitives"


def test_concurrent_uploads_with_distinct_names_all_land(store: ImageStore, state_dir: Path, primitives: bytes,
                                                         quickstart: bytes) -> None:
    names = [f"image-{index}" for index in range(8)]
    start = threading.Barrier(len(names))
    results: dict[str, StoredImage] = {}
    errors: list[BaseException] = []

    def run(index: int, name: str) -> None:
        try:
            start.wait()
            results[name] = upload(store, name, (primitives, quickstart)[index % 2], chunk=512)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(index, name)) for index, name in enumerate(names)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert [image.name for image in store.images()] == sorted(names)
    assert sorted(path.name for path in (state_dir / "images").iterdir()) == sorted(f"{n}.aimg" for n in names)
    for index, name in enumerate(names):
        assert results[name].path.read_bytes() == (primitives, quickstart)[index % 2]
    assert partial_files(state_dir) == []


# --- lookups and configuration -----------------------------------------------------------------------------------


def test_find_needs_exactly_one_well_formed_key(store: ImageStore, primitives: bytes) -> None:
    measurement = load_image(primitives).measurement
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        store.find()
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        store.find(name="primitives", measurement=measurement)
    with pytest.raises(InvalidArgumentError, match="32 bytes, got 31"):
        store.find(measurement=measurement[:31])
    with pytest.raises(NotFoundError, match=f"no image with measurement {measurement.hex()}"):
        store.find(measurement=measurement)


@pytest.mark.parametrize(("signers", "options", "message"), [
    ([], {}, "no trusted signers"),
    ([b"\x01" * 31], {}, "32-byte signer id"),
    ([b"\x01" * 32], {"max_image_size": 0}, "image size limit"),
    ([b"\x01" * 32], {"max_image_size": 64 * 1024 * 1024 + 1}, "image size limit"),
    ([b"\x01" * 32], {"max_pending_uploads": 0}, "max_pending_uploads"),
])
def test_bad_configuration_is_refused(state_dir: Path, signers: list[bytes], options: dict[str, int],
                                      message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        ImageStore(state_dir, trusted_signers=signers, **options)  # type: ignore[arg-type]


def test_a_symlink_in_place_of_the_image_directory_is_refused(tmp_path: Path, state_dir: Path,
                                                              signing_key: Ed25519PrivateKey) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    state_dir.mkdir()
    (state_dir / "images").symlink_to(elsewhere)
    with pytest.raises(FailedPreconditionError, match="the image store can use: it is a symbolic link"):
        ImageStore(state_dir, trusted_signers=[trusted_id(signing_key)])
    assert list(elsewhere.iterdir()) == []


def test_a_trusted_signer_is_read_from_a_public_key_file(tmp_path: Path, signing_key: Ed25519PrivateKey) -> None:
    path = tmp_path / "signer.pub.pem"
    path.write_bytes(public_key_pem(signing_key))
    assert path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert load_trusted_signer(path) == trusted_id(signing_key)
    assert public_key_pem(signing_key.public_key()) == public_key_pem(signing_key)


def test_a_private_key_file_is_not_a_trusted_signer(tmp_path: Path, signing_key: Ed25519PrivateKey) -> None:
    path = tmp_path / "signer.pem"
    save_signing_key(signing_key, path)
    with pytest.raises(InvalidArgumentError, match="this is a private key; give the signer's public key"):
        load_trusted_signer(path)


def test_other_files_are_not_trusted_signers(tmp_path: Path) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    (tmp_path / "ec.pem").write_bytes(
        ec_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (tmp_path / "garbage.pem").write_bytes(b"hello")
    with pytest.raises(InvalidArgumentError, match="not an Ed25519 public key"):
        load_trusted_signer(tmp_path / "ec.pem")
    with pytest.raises(InvalidArgumentError, match="not a PEM public key"):
        load_trusted_signer(tmp_path / "garbage.pem")
    with pytest.raises(InvalidArgumentError, match="public key file not found"):
        load_trusted_signer(tmp_path / "missing.pem")


def test_a_failure_after_the_image_got_its_name_takes_the_name_back(
        store: ImageStore, state_dir: Path, primitives: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_fsync(path: Path) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(store_module, "_fsync_directory", failing_fsync)
    with leaves_no_trace(state_dir), pytest.raises(OSError, match="Input/output error"):
        upload(store, "primitives", primitives)
    assert store.images() == []


def test_a_full_disk_is_resource_exhaustion(store: ImageStore, state_dir: Path, primitives: bytes,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)  # where commit makes the upload durable
    with leaves_no_trace(state_dir), pytest.raises(LimitExceededError, match="no space left") as info:
        upload(store, "primitives", primitives)
    assert info.value.reason == "disk_full"


# --- the store's quota and image count ----------------------------------------------------------------------------


def test_the_quota_counts_stored_uploads_and_uploads_in_progress(state_dir: Path, signing_key: Ed25519PrivateKey,
                                                                 primitives: bytes, quickstart: bytes) -> None:
    quota = len(primitives) + len(quickstart) - 1  # room for either image, not both
    store = ImageStore(state_dir, trusted_signers=[trusted_id(signing_key)], max_store_size=quota)
    in_progress = store.begin_upload("first", len(primitives), sha256(primitives))
    with leaves_no_trace(state_dir), pytest.raises(LimitExceededError, match=f"quota of {quota} bytes") as info:
        store.begin_upload("second", len(quickstart), sha256(quickstart))  # the first one's partial counts
    assert info.value.reason == "store_quota"
    in_progress.write(primitives)
    in_progress.commit()
    assert store.uploaded_size == len(primitives)
    with leaves_no_trace(state_dir), pytest.raises(LimitExceededError, match=f"quota of {quota} bytes"):
        upload(store, "second", quickstart)  # and so does the stored image
    # A refused upload, an aborted one: the reservation is given back.
    store.begin_upload("again", len(primitives), sha256(primitives)).abort()
    assert store.uploaded_size == len(primitives)


def test_the_same_bytes_under_another_name_are_a_hard_link(state_dir: Path, signing_key: Ed25519PrivateKey,
                                                           primitives: bytes) -> None:
    store = ImageStore(state_dir, trusted_signers=[trusted_id(signing_key)], max_store_size=2 * len(primitives))
    first = upload(store, "first", primitives)
    second = upload(store, "second", primitives)
    third = upload(store, "third", primitives)  # two copies would not have fit
    assert first.path.stat().st_ino == second.path.stat().st_ino == third.path.stat().st_ino
    assert first.path.stat().st_nlink == 3
    assert store.uploaded_size == len(primitives)
    assert store.find(name="third").measurement == first.measurement
    # A reopened store counts the one file once too, and finds every name.
    reopened = ImageStore(state_dir, trusted_signers=[trusted_id(signing_key)], max_store_size=2 * len(primitives))
    assert reopened.uploaded_size == len(primitives)
    assert [image.name for image in reopened.images()] == ["first", "second", "third"]


def test_the_number_of_uploaded_images_is_limited(tmp_path: Path, state_dir: Path, signing_key: Ed25519PrivateKey,
                                                  primitives: bytes, quickstart: bytes) -> None:
    operator = tmp_path / "operator"
    operator.mkdir()
    (operator / "ops.aimg").write_bytes(quickstart)
    store = ImageStore(state_dir, trusted_signers=[trusted_id(signing_key)], operator_dir=operator, max_images=2)
    upload(store, "a", primitives)
    pending = store.begin_upload("b", len(primitives), sha256(primitives))
    with leaves_no_trace(state_dir), pytest.raises(LimitExceededError, match="limit of 2 uploaded images") as info:
        store.begin_upload("c", len(primitives), sha256(primitives))  # "b" in progress counts
    assert info.value.reason == "image_count"
    pending.abort()
    upload(store, "b", primitives)
    # Names that add no image: one already stored, and the operator's (which do not count either).
    assert upload(store, "a", primitives).name == "a"
    assert upload(store, "ops", quickstart).path.parent == operator
    with pytest.raises(LimitExceededError, match="limit of 2 uploaded images"):
        upload(store, "c", primitives)


def test_a_state_directory_others_can_write_to_is_refused(state_dir: Path, signing_key: Ed25519PrivateKey) -> None:
    state_dir.mkdir()
    state_dir.chmod(0o770)
    with pytest.raises(FailedPreconditionError, match="nobody else can write"):
        ImageStore(state_dir, trusted_signers=[trusted_id(signing_key)])
    assert list(state_dir.iterdir()) == []
