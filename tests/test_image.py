"""Enclave images: manifest, measurement, signing, file format, build and verification.

Everything runs on real files in tmp_path with keys generated at test time. Hostile images are made by editing
the protobuf body of a good image, or, where a check after the signature is under test, by signing a hand-made
image with a real key (a signer that is buggy or malicious must still be refused).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import stat
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from asylo.image import (
    FORMAT_VERSION,
    MAGIC,
    ImageError,
    ImageVerificationError,
    Manifest,
    VerifiedImage,
    build_image,
    build_image_from,
    collect_files,
    compute_measurement,
    encode_manifest,
    generate_signing_key,
    limits,
    load_image,
    load_manifest,
    load_signing_key,
    public_key_bytes,
    save_signing_key,
    signer_id,
    write_image,
)
from asylo.image.format import HEADER_SIZE, encode_image
from asylo.image.measurement import measure_in_order
from asylo.image.signing import sign_measurement
from asylo.proto import image_pb2
from asylo.status import InvalidArgumentError, PermissionDeniedError, StatusCode

MANIFEST_TOML = """\
name = "demo_enclave"
entry_point = "demo_enclave:DemoEnclave"
product_id = 1
svn = 1
debug = true
"""

FILES = {
    "demo_enclave.py": b"class DemoEnclave:\n    pass\n",
    "helpers/__init__.py": b"",
    "helpers/util.py": b"ANSWER = 42\n",
}


def make_enclave(root: Path, files: dict[str, bytes] | None = None, manifest: str = MANIFEST_TOML) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "enclave.toml").write_text(manifest, encoding="utf-8")
    for path, content in (FILES if files is None else files).items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return root


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return generate_signing_key()


@pytest.fixture(scope="module")
def other_key() -> Ed25519PrivateKey:
    return generate_signing_key()


@pytest.fixture
def enclave_dir(tmp_path: Path) -> Path:
    return make_enclave(tmp_path / "demo")


@pytest.fixture
def image_bytes(enclave_dir: Path, key: Ed25519PrivateKey) -> bytes:
    return build_image(enclave_dir, key)


def body(data: bytes) -> image_pb2.EnclaveImage:
    return image_pb2.EnclaveImage.FromString(data[HEADER_SIZE:])


def forge(
    key: Ed25519PrivateKey, files: list[tuple[str, bytes]], manifest: Manifest | None = None
) -> bytes:
    """A correctly measured and signed image with exactly these files, in this order: no build-time checks."""
    manifest = manifest or Manifest(name="demo_enclave", entry_point="demo_enclave:DemoEnclave")
    measurement = measure_in_order(manifest, files)
    image = image_pb2.EnclaveImage(
        manifest=manifest.to_proto(),
        files=[image_pb2.EnclaveImageFile(path=p, content=c) for p, c in files],
        measurement=measurement,
        signer_public_key=public_key_bytes(key),
        signature=sign_measurement(key, measurement, manifest),
    )
    return encode_image(image)


# --- build, load, reproducibility ---------------------------------------------------------------------------


def test_build_then_load_gives_back_manifest_and_files(
    enclave_dir: Path, image_bytes: bytes, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    path = tmp_path / "demo.img"
    write_image(path, image_bytes)
    image = load_image(path)
    assert image.manifest == Manifest(
        "demo_enclave", "demo_enclave:DemoEnclave", product_id=1, svn=1, debug=True
    )
    assert dict(image.files) == FILES
    assert list(image.files) == sorted(FILES)
    assert image.signer_public_key == public_key_bytes(key)
    assert image.signer == hashlib.sha256(public_key_bytes(key)).digest() == signer_id(public_key_bytes(key))
    assert image.signer_hex == image.signer.hex() and len(image.signer_hex) == 64
    assert image.measurement == compute_measurement(image.manifest, FILES)
    assert image.measurement_hex == image.measurement.hex()
    assert VerifiedImage.from_bytes(image_bytes) == image == load_image(str(path))
    assert load_image(bytearray(image_bytes)) == image == load_image(memoryview(image_bytes))
    with pytest.raises(TypeError):
        image.files["evil.py"] = b""  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        image.measurement = b""  # type: ignore[misc]


def test_build_is_byte_for_byte_reproducible(
    enclave_dir: Path, image_bytes: bytes, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    # Same contents, created in a different order, at a different time, with different modes: same bytes.
    copy = tmp_path / "copy"
    make_enclave(copy, dict(reversed(list(FILES.items()))))
    (copy / "helpers" / "util.py").chmod(0o600)
    assert build_image(enclave_dir, key) == image_bytes == build_image(copy, key)
    first, second = tmp_path / "a.img", tmp_path / "b.img"
    write_image(first, image_bytes)
    write_image(second, build_image(copy, load_signing_key_roundtrip(key, tmp_path)))
    assert first.read_bytes() == second.read_bytes()


def load_signing_key_roundtrip(key: Ed25519PrivateKey, tmp_path: Path) -> Ed25519PrivateKey:
    save_signing_key(key, tmp_path / "k.pem")
    return load_signing_key(tmp_path / "k.pem")


def test_different_key_changes_signer_and_bytes_but_not_measurement(
    enclave_dir: Path, image_bytes: bytes, other_key: Ed25519PrivateKey
) -> None:
    other = build_image(enclave_dir, other_key)
    assert other != image_bytes
    first, second = load_image(image_bytes), load_image(other)
    assert first.signer != second.signer
    assert first.measurement == second.measurement


def test_build_skips_bytecode_dotfiles_and_the_manifest(enclave_dir: Path, key: Ed25519PrivateKey) -> None:
    (enclave_dir / "__pycache__").mkdir()
    (enclave_dir / "__pycache__" / "demo_enclave.cpython-311.pyc").write_bytes(b"\0")
    (enclave_dir / "helpers" / "__pycache__").mkdir()
    (enclave_dir / "helpers" / "__pycache__" / "util.cpython-311.pyc").write_bytes(b"\0")
    (enclave_dir / "stray.pyc").write_bytes(b"\0")
    (enclave_dir / ".git").mkdir()
    (enclave_dir / ".git" / "HEAD").write_bytes(b"ref")
    (enclave_dir / ".swp").write_bytes(b"x")
    (enclave_dir / "helpers" / "enclave.toml").write_bytes(b"# not the manifest, so it is content\n")
    image = load_image(build_image(enclave_dir, key))
    assert sorted(image.files) == sorted([*FILES, "helpers/enclave.toml"])


def test_files_are_sorted_by_utf8_bytes(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    # UTF-8 byte order (= code point order) is the rule; UTF-16 order, as in Java or JS, would put U+1F600
    # before U+FFFD, and ASCII case order puts "Z" before "a".
    files = {"demo_enclave.py": b"", "\ufffd.txt": b"a", "\U0001f600.txt": b"b", "Z.txt": b"c", "a.txt": b"d"}
    make_enclave(tmp_path / "e", files)
    image = load_image(build_image(tmp_path / "e", key))
    assert list(image.files) == sorted(files, key=lambda p: p.encode("utf-8"))


def test_entry_point_may_be_a_package(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    manifest = MANIFEST_TOML.replace("demo_enclave:DemoEnclave", "pkg.sub:App")
    files = {"pkg/__init__.py": b"", "pkg/sub/__init__.py": b"class App: ...\n"}
    make_enclave(tmp_path / "e", files, manifest)
    assert load_image(build_image(tmp_path / "e", key)).manifest.entry_module_paths == (
        "pkg/sub.py", "pkg/sub/__init__.py",
    )


def test_write_image_is_atomic_and_leaves_no_temporary_files(tmp_path: Path, image_bytes: bytes) -> None:
    out = tmp_path / "out"
    out.mkdir()
    write_image(out / "demo.img", b"old")
    write_image(out / "demo.img", image_bytes)
    assert [p.name for p in out.iterdir()] == ["demo.img"]
    assert (out / "demo.img").read_bytes() == image_bytes


# --- measurement --------------------------------------------------------------------------------------------


def test_measurement_is_the_documented_encoding() -> None:
    # Pins the byte layout: anyone may re-implement it from the module docstring and get the same digest.
    manifest = Manifest(name="n", entry_point="m:C", product_id=7, svn=9, debug=True)
    files = {"b.py": b"BB", "a.py": b"A"}
    expected = hashlib.sha256(
        b"pyasylo-measurement-v1\0"
        + struct.pack(">I", 1) + b"n" + struct.pack(">I", 3) + b"m:C"
        + struct.pack(">IIB", 7, 9, 1)
        + struct.pack(">I", 2)
        + struct.pack(">I", 4) + b"a.py" + struct.pack(">Q", 1) + b"A"
        + struct.pack(">I", 4) + b"b.py" + struct.pack(">Q", 2) + b"BB"
    ).digest()
    assert compute_measurement(manifest, files) == expected
    assert encode_manifest(manifest) == b"\0\0\0\x01n\0\0\0\x03m:C\0\0\0\x07\0\0\0\x09\x01"


BASE_MANIFEST = Manifest(name="demo", entry_point="demo:App", product_id=1, svn=2, debug=False)
BASE_FILES = {"demo.py": b"class App: ...\n", "lib/util.py": b"x = 1\n"}

CHANGES: dict[str, tuple[Manifest, dict[str, bytes]]] = {
    "file content": (BASE_MANIFEST, {**BASE_FILES, "lib/util.py": b"x = 2\n"}),
    "one byte appended": (BASE_MANIFEST, {**BASE_FILES, "lib/util.py": b"x = 1\n\0"}),
    "path": (BASE_MANIFEST, {"demo.py": BASE_FILES["demo.py"], "lib/utils.py": BASE_FILES["lib/util.py"]}),
    "file added": (BASE_MANIFEST, {**BASE_FILES, "lib/__init__.py": b""}),
    "file removed": (BASE_MANIFEST, {"demo.py": BASE_FILES["demo.py"]}),
    # Moving a byte from a path into its content must not collide (length prefixes).
    "byte moved from path to content": (
        BASE_MANIFEST, {"demo.py": b"class App: ...\n", "lib/util.p": b"yx = 1\n"}
    ),
    "name": (dataclasses.replace(BASE_MANIFEST, name="demo2"), BASE_FILES),
    "entry_point": (dataclasses.replace(BASE_MANIFEST, entry_point="demo:App2"), BASE_FILES),
    "product_id": (dataclasses.replace(BASE_MANIFEST, product_id=2), BASE_FILES),
    "svn": (dataclasses.replace(BASE_MANIFEST, svn=3), BASE_FILES),
    "debug": (dataclasses.replace(BASE_MANIFEST, debug=True), BASE_FILES),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_measurement_changes_with_any_field_path_or_content(change: str) -> None:
    manifest, files = CHANGES[change]
    assert compute_measurement(manifest, files) != compute_measurement(BASE_MANIFEST, BASE_FILES)


def test_measurement_does_not_depend_on_insertion_order() -> None:
    reordered = dict(reversed(list(BASE_FILES.items())))
    assert compute_measurement(BASE_MANIFEST, reordered) == compute_measurement(BASE_MANIFEST, BASE_FILES)


# --- tampering: every change after signing is refused, and the error names it -------------------------------


def reencode(data: bytes, edit: Callable[[image_pb2.EnclaveImage], object]) -> bytes:
    image = body(data)
    edit(image)
    return encode_image(image)


def test_changed_file_content_is_a_measurement_mismatch(image_bytes: bytes) -> None:
    def flip_a_byte(image: image_pb2.EnclaveImage) -> None:
        content = bytearray(image.files[0].content)
        content[0] ^= 1
        image.files[0].content = bytes(content)

    with pytest.raises(ImageVerificationError) as info:
        load_image(reencode(image_bytes, flip_a_byte))
    assert info.value.message.startswith("measurement mismatch: image content was changed")
    assert info.value.code == StatusCode.PERMISSION_DENIED
    assert isinstance(info.value, PermissionDeniedError) and isinstance(info.value, InvalidArgumentError)


@pytest.mark.parametrize(
    "edit",
    [
        lambda image: image.files.add(path="evil.py", content=b"import os"),
        lambda image: image.files.pop(),
        lambda image: setattr(image.files[1], "path", "helpers/__init__.pz"),
    ],
    ids=["file added", "file removed", "file renamed"],
)
def test_changed_file_set_is_a_measurement_mismatch(
    image_bytes: bytes, edit: Callable[[image_pb2.EnclaveImage], object]
) -> None:
    with pytest.raises(ImageVerificationError, match="measurement mismatch"):
        load_image(reencode(image_bytes, edit))


@pytest.mark.parametrize(
    "edit",
    [
        lambda image: setattr(image.manifest, "svn", 2),
        lambda image: setattr(image.manifest, "product_id", 0),
        lambda image: setattr(image.manifest, "debug", False),
        lambda image: setattr(image.manifest, "name", "other_enclave"),
        lambda image: setattr(image.manifest, "entry_point", "helpers.util:DemoEnclave"),
        lambda image: setattr(image, "measurement", bytes(32)),
    ],
    ids=["svn", "product_id", "debug", "name", "entry_point", "measurement"],
)
def test_changed_manifest_or_measurement_breaks_the_signature(
    image_bytes: bytes, edit: Callable[[image_pb2.EnclaveImage], object]
) -> None:
    with pytest.raises(ImageVerificationError, match="signature does not verify"):
        load_image(reencode(image_bytes, edit))


def test_signature_by_another_key_under_the_original_public_key_is_refused(
    image_bytes: bytes, other_key: Ed25519PrivateKey
) -> None:
    def resign(image: image_pb2.EnclaveImage) -> None:
        image.signature = sign_measurement(other_key, image.measurement, Manifest.from_proto(image.manifest))

    with pytest.raises(ImageVerificationError, match="signature does not verify"):
        load_image(reencode(image_bytes, resign))


def test_swapped_public_key_is_refused(image_bytes: bytes, other_key: Ed25519PrivateKey) -> None:
    with pytest.raises(ImageVerificationError, match="signature does not verify"):
        load_image(
            reencode(image_bytes, lambda i: setattr(i, "signer_public_key", public_key_bytes(other_key)))
        )


def test_consistent_re_signing_yields_a_different_signer(
    image_bytes: bytes, other_key: Ed25519PrivateKey
) -> None:
    # Anyone can re-sign an image with their own key; what stops them is that the signer id changes, and
    # callers decide which signer ids they trust.
    def take_over(image: image_pb2.EnclaveImage) -> None:
        image.signer_public_key = public_key_bytes(other_key)
        image.signature = sign_measurement(other_key, image.measurement, Manifest.from_proto(image.manifest))

    original, resigned = load_image(image_bytes), load_image(reencode(image_bytes, take_over))
    assert resigned.measurement == original.measurement
    assert resigned.signer == signer_id(public_key_bytes(other_key)) != original.signer


@pytest.mark.parametrize("cut", [0, 1, 7, 8, 9, 16])
def test_truncated_inside_the_header_is_refused(image_bytes: bytes, cut: int) -> None:
    with pytest.raises(ImageError, match=f"image truncated: {cut} bytes is shorter than the 17-byte header"):
        load_image(image_bytes[:cut])


@pytest.mark.parametrize("missing", [1, 2, 50, -1])
def test_truncated_body_is_refused(image_bytes: bytes, missing: int) -> None:
    declared = len(image_bytes) - HEADER_SIZE
    kept = HEADER_SIZE if missing == -1 else len(image_bytes) - missing
    with pytest.raises(ImageError, match=f"image truncated: header says {declared} bytes, file has "
                       f"{kept - HEADER_SIZE}$"):
        load_image(image_bytes[:kept])


def test_truncated_file_on_disk_is_refused(image_bytes: bytes, tmp_path: Path) -> None:
    (tmp_path / "cut.img").write_bytes(image_bytes[:-10])
    with pytest.raises(ImageError, match="image truncated"):
        load_image(tmp_path / "cut.img")


def test_trailing_bytes_are_refused(image_bytes: bytes) -> None:
    with pytest.raises(ImageError, match="image has 3 trailing bytes"):
        load_image(image_bytes + b"xyz")


def test_wrong_magic_is_refused(image_bytes: bytes) -> None:
    with pytest.raises(ImageError, match="not an enclave image: bad magic"):
        load_image(b"ASYLOIMX" + image_bytes[8:])
    with pytest.raises(ImageError, match="bad magic"):
        load_image(b"PK\x03\x04")  # a short file that is something else is not "truncated"


def test_wrong_version_is_refused(image_bytes: bytes) -> None:
    assert image_bytes[8] == FORMAT_VERSION
    with pytest.raises(ImageError, match="unsupported image format version 2"):
        load_image(MAGIC + b"\x02" + image_bytes[9:])


def test_body_that_is_not_protobuf_is_refused() -> None:
    garbage = b"\xff\xff\xff"
    with pytest.raises(ImageError, match="image body is not a valid EnclaveImage message"):
        load_image(MAGIC + bytes([FORMAT_VERSION]) + struct.pack(">Q", len(garbage)) + garbage)


def test_unknown_fields_are_refused(image_bytes: bytes) -> None:
    extra = image_bytes[HEADER_SIZE:] + b"\x50\x01"  # field 10, varint 1: valid protobuf, not in the schema
    with pytest.raises(ImageError, match="not canonically encoded"):
        load_image(image_bytes[:9] + struct.pack(">Q", len(extra)) + extra)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda image: image.ClearField("manifest"), "manifest"),
        (lambda image: image.manifest.ClearField("name"), "manifest.name"),
        (lambda image: image.manifest.ClearField("entry_point"), "manifest.entry_point"),
        (lambda image: image.manifest.ClearField("svn"), "manifest.svn"),
        (lambda image: image.ClearField("measurement"), "measurement"),
        (lambda image: image.ClearField("signer_public_key"), "signer_public_key"),
        (lambda image: image.ClearField("signature"), "signature"),
        (lambda image: image.files[0].ClearField("path"), "path"),
        (lambda image: image.files[0].ClearField("content"), "content"),
    ],
)
def test_missing_required_fields_are_named(
    image_bytes: bytes, edit: Callable[[image_pb2.EnclaveImage], object], field: str
) -> None:
    with pytest.raises(ImageError, match=f"missing required field {field}$"):
        load_image(reencode(image_bytes, edit))


@pytest.mark.parametrize(
    ("field", "size"), [("measurement", 32), ("signer_public_key", 32), ("signature", 64)]
)
def test_wrong_size_fields_are_named(image_bytes: bytes, field: str, size: int) -> None:
    with pytest.raises(ImageError, match=f"image field {field} must be {size} bytes, got {size - 1}"):
        load_image(reencode(image_bytes, lambda i: setattr(i, field, getattr(i, field)[:-1])))


ENTRY = ("demo_enclave.py", b"class DemoEnclave: ...\n")


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ([ENTRY, ("../escape.py", b"")], "image path '../escape.py' contains '..'"),
        ([ENTRY, ("a/../../b.py", b"")], "contains '..'"),
        ([("/etc/passwd", b""), ENTRY], "image path '/etc/passwd' is absolute"),
        ([ENTRY, ("nul\0.py", b"")], "contains a NUL character"),
        ([ENTRY, ("dir\\file.py", b"")], "contains a backslash"),
        ([ENTRY, ("a//b.py", b"")], "has an empty component"),
        ([ENTRY, ("trailing/", b"")], "has an empty component"),
        ([ENTRY, ("./x.py", b"")], "contains '.'"),
        ([("", b""), ENTRY], "image path is empty"),
        ([ENTRY, ENTRY], "image path 'demo_enclave.py' is duplicated"),
        ([ENTRY, ("a.py", b"")], "image path 'a.py' is out of order"),
        ([ENTRY, ("x", b""), ("x/y.py", b"")], "image path 'x' is both a file and a directory"),
        ([("other.py", b"")], "entry point module 'demo_enclave' is not in the image"),
    ],
)
def test_signed_images_with_bad_paths_are_refused(
    key: Ed25519PrivateKey, files: list[tuple[str, bytes]], message: str
) -> None:
    # Correctly measured and signed, so only the path rules catch these: no signer is trusted to be sane.
    with pytest.raises(ImageError, match=re.escape(message)):
        load_image(forge(key, files))


def test_path_that_is_not_utf8_is_refused(key: Ed25519PrivateKey) -> None:
    data = forge(key, [ENTRY, ("QQQQ", b"")])
    with pytest.raises(ImageError, match="image file #1 has a path that is not valid UTF-8"):
        load_image(data.replace(b"QQQQ", b"\xff\xfe\xfd\xfc"))


def test_signed_image_with_invalid_manifest_is_refused(image_bytes: bytes) -> None:
    with pytest.raises(ImageError, match="manifest key 'name'"):
        load_image(reencode(image_bytes, lambda i: setattr(i.manifest, "name", "has space")))


def test_image_size_and_file_count_limits_apply_on_load(
    image_bytes: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "demo.img"
    write_image(path, image_bytes)
    monkeypatch.setattr(limits, "MAX_IMAGE_SIZE", len(image_bytes) - 1)
    too_big = f"{path}: image is larger than the limit of {len(image_bytes) - 1}"
    with pytest.raises(ImageError, match=re.escape(too_big)):
        load_image(path)
    with pytest.raises(ImageError, match="over the limit"):
        load_image(image_bytes)
    monkeypatch.setattr(limits, "MAX_IMAGE_SIZE", len(image_bytes))
    monkeypatch.setattr(limits, "MAX_FILES", 2)
    with pytest.raises(ImageError, match="image has 3 files, over the limit of 2"):
        load_image(path)


def test_unreadable_image_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=re.escape(f"{tmp_path / 'nope.img'}: cannot read image")):
        load_image(tmp_path / "nope.img")
    with pytest.raises(ImageError, match="cannot read image"):
        load_image(tmp_path)  # a directory


def test_a_fifo_in_place_of_an_image_is_refused_without_waiting(tmp_path: Path) -> None:
    pipe = tmp_path / "image.aimg"
    os.mkfifo(pipe)  # nobody ever writes to it: opening it for a plain read would wait forever
    with pytest.raises(ImageError, match=r"image\.aimg: cannot read image: not a regular file"):
        load_image(pipe)


def test_an_image_named_through_a_symlink_loads(tmp_path: Path, image_bytes: bytes) -> None:
    real = tmp_path / "real.aimg"
    real.write_bytes(image_bytes)
    (tmp_path / "link.aimg").symlink_to(real)
    assert load_image(tmp_path / "link.aimg").measurement == load_image(real).measurement


# --- manifest -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('entry_point = "m:C"\n', "manifest key 'name': required key is missing"),
        ('name = "n"\n', "manifest key 'entry_point': required key is missing"),
        ('name = "n"\nentry_point = "m:C"\nsnv = 2\n', "manifest key 'snv': unknown key"),
        ('name = "n"\nentry_point = "m:C"\n[extra]\nx = 1\n', "manifest key 'extra': unknown key"),
        (
            'name = "n"\nentry_point = "m:C"\nsvn = -1\n',
            "manifest key 'svn': must be between 0 and 4294967295, got -1",
        ),
        ('name = "n"\nentry_point = "m:C"\nsvn = 4294967296\n', "manifest key 'svn': must be between 0 and"),
        (
            'name = "n"\nentry_point = "m:C"\nproduct_id = "1"\n',
            "manifest key 'product_id': must be an integer, got str",
        ),
        ('name = "n"\nentry_point = "m:C"\nsvn = true\n', "manifest key 'svn': must be an integer, got bool"),
        ('name = "n"\nentry_point = "m:C"\nsvn = 1.0\n', "manifest key 'svn': must be an integer, got float"),
        ('name = "n"\nentry_point = "m:C"\ndebug = 1\n', "manifest key 'debug': must be a boolean"),
        ('name = 5\nentry_point = "m:C"\n', "manifest key 'name': must be a string"),
        ('name = ""\nentry_point = "m:C"\n', "manifest key 'name': must be 1 to 128"),
        (f'name = "{"n" * 129}"\nentry_point = "m:C"\n', "manifest key 'name': must be 1 to 128"),
        ('name = "a/b"\nentry_point = "m:C"\n', "manifest key 'name'"),
        ('name = "n"\nentry_point = "module"\n', "manifest key 'entry_point'"),
        ('name = "n"\nentry_point = "m:"\n', "manifest key 'entry_point'"),
        ('name = "n"\nentry_point = ":C"\n', "manifest key 'entry_point'"),
        ('name = "n"\nentry_point = "a..b:C"\n', "manifest key 'entry_point'"),
        ('name = "n"\nentry_point = "1m:C"\n', "manifest key 'entry_point'"),
        ('name = "n"\nentry_point = "m:C:D"\n', "manifest key 'entry_point'"),
        ('name = "n"\nentry_point = "m/x:C"\n', "manifest key 'entry_point'"),
        ('name = "n"\nentry_point = 3\n', "manifest key 'entry_point': must be a string"),
        ('name = "n"\nentry_point = "m:C"\nname = "again"\n', "manifest is not valid TOML"),
    ],
)
def test_manifest_errors_name_the_key_and_the_file(tmp_path: Path, toml: str, message: str) -> None:
    (tmp_path / "enclave.toml").write_text(toml, encoding="utf-8")
    with pytest.raises(ImageError) as info:
        load_manifest(tmp_path)
    assert info.value.message.startswith(f"{tmp_path / 'enclave.toml'}: ")
    assert message in info.value.message
    assert info.value.code == StatusCode.INVALID_ARGUMENT


def test_manifest_defaults_and_proto_round_trip(tmp_path: Path) -> None:
    (tmp_path / "enclave.toml").write_text('name = "n.1-x_y"\nentry_point = "a.b_c:D"\n', encoding="utf-8")
    manifest = load_manifest(tmp_path)
    assert manifest == Manifest("n.1-x_y", "a.b_c:D", product_id=0, svn=0, debug=False)
    assert (manifest.entry_module, manifest.entry_class) == ("a.b_c", "D")
    full = Manifest("n", "m:C", product_id=2**32 - 1, svn=7, debug=True)
    assert Manifest.from_proto(full.to_proto()) == full


def test_missing_manifest_is_reported(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    with pytest.raises(ImageError, match=r"no enclave\.toml in"):
        build_image(tmp_path, key)


# --- source tree rules and limits ---------------------------------------------------------------------------


def test_file_symlink_is_refused_and_named(enclave_dir: Path, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"outside the tree")
    (enclave_dir / "helpers" / "link.py").symlink_to(tmp_path / "secret")
    link = enclave_dir / "helpers" / "link.py"
    with pytest.raises(ImageError, match=re.escape(f"{link}: symbolic links are not allowed")):
        build_image(enclave_dir, key)


def test_directory_symlink_is_refused(enclave_dir: Path, key: Ed25519PrivateKey) -> None:
    (enclave_dir / "loop").symlink_to(enclave_dir, target_is_directory=True)
    with pytest.raises(ImageError, match="loop: symbolic links are not allowed"):
        build_image(enclave_dir, key)


def test_special_files_are_refused(enclave_dir: Path, key: Ed25519PrivateKey) -> None:
    os.mkfifo(enclave_dir / "pipe")
    with pytest.raises(ImageError, match="pipe: not a regular file"):
        build_image(enclave_dir, key)


def test_names_load_would_refuse_are_refused_at_build(enclave_dir: Path, key: Ed25519PrivateKey) -> None:
    (enclave_dir / "back\\slash.py").write_bytes(b"")
    with pytest.raises(ImageError, match="contains a backslash"):
        build_image(enclave_dir, key)


def test_file_count_limit(enclave_dir: Path, key: Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_FILES", len(FILES))
    build_image(enclave_dir, key)
    (enclave_dir / "one_more.py").write_bytes(b"")
    with pytest.raises(ImageError, match=f"more than {len(FILES)} files"):
        build_image(enclave_dir, key)
    assert len(FILES) == limits.MAX_FILES


def test_default_limits() -> None:
    assert limits.MAX_FILES == 4096
    assert limits.MAX_IMAGE_SIZE == 64 * 1024 * 1024


def test_size_limit(tmp_path: Path, key: Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_IMAGE_SIZE", 1000)
    make_enclave(tmp_path / "big", {"demo_enclave.py": b"", "data.bin": b"x" * 1001})
    with pytest.raises(ImageError, match=r"data\.bin: enclave files exceed the image size limit"):
        build_image(tmp_path / "big", key)
    # Contents fit, but with the header, key and signature the image would not: refused too.
    make_enclave(tmp_path / "almost", {"demo_enclave.py": b"", "data.bin": b"x" * 990})
    with pytest.raises(ImageError, match=r"image would be \d+ bytes, over the limit of 1000"):
        build_image(tmp_path / "almost", key)


def test_entry_point_module_must_exist_at_build(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    make_enclave(tmp_path / "e", {"other.py": b""})
    with pytest.raises(ImageError, match=r"entry point module 'demo_enclave' not found \(expected "
                       r"demo_enclave\.py or demo_enclave/__init__\.py\)"):
        build_image(tmp_path / "e", key)


def test_build_from_memory_applies_the_path_rules(key: Ed25519PrivateKey) -> None:
    manifest = Manifest("demo_enclave", "demo_enclave:DemoEnclave")
    assert load_image(build_image_from(manifest, dict([ENTRY]), key)).files == dict([ENTRY])
    with pytest.raises(ImageError, match=re.escape("contains '..'")):
        build_image_from(manifest, {**dict([ENTRY]), "../x": b""}, key)


def test_collect_files_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="does not exist or is not a directory"):
        collect_files(tmp_path / "nope")


# --- signing keys -------------------------------------------------------------------------------------------


def test_key_file_is_private_and_round_trips(tmp_path: Path) -> None:
    key = generate_signing_key()
    old_umask = os.umask(0)  # even with a permissive umask, nobody else may read the key
    try:
        save_signing_key(key, tmp_path / "key.pem")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "key.pem").stat().st_mode) == 0o600
    assert (tmp_path / "key.pem").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public_key_bytes(load_signing_key(tmp_path / "key.pem")) == public_key_bytes(key)


def test_key_file_is_not_overwritten_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    first, second = generate_signing_key(), generate_signing_key()
    save_signing_key(first, path)
    before = path.read_bytes()
    with pytest.raises(ImageError, match="key file already exists"):
        save_signing_key(second, path)
    assert path.read_bytes() == before
    save_signing_key(second, path, overwrite=True)
    assert public_key_bytes(load_signing_key(path)) == public_key_bytes(second)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["key.pem"]


def test_load_signing_key_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="signing key file not found"):
        load_signing_key(tmp_path / "missing.pem")
    (tmp_path / "junk.pem").write_bytes(b"not a key")
    with pytest.raises(ImageError, match=r"junk\.pem: not an unencrypted PEM private key"):
        load_signing_key(tmp_path / "junk.pem")
    ec_key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ec.pem").write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(ImageError, match=r"ec\.pem: not an Ed25519 key"):
        load_signing_key(tmp_path / "ec.pem")
    (tmp_path / "locked.pem").write_bytes(
        generate_signing_key().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(ImageError, match=r"locked\.pem: not an unencrypted PEM private key"):
        load_signing_key(tmp_path / "locked.pem")


# --- property: any tree builds reproducibly and loads back to the same files --------------------------------

_component = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-é", min_size=1, max_size=8)
_trees = st.dictionaries(
    st.lists(_component, min_size=1, max_size=3).map("/".join),
    st.binary(max_size=64),
    max_size=8,
).filter(
    # A path cannot be both a file and a directory on disk.
    lambda files: not any(other.startswith(path + "/") for path in files for other in files)
)


@settings(max_examples=25, deadline=None)
@given(files=_trees, svn=st.integers(0, 2**32 - 1), debug=st.booleans())
def test_any_tree_builds_reproducibly_and_loads_back(files: dict[str, bytes], svn: int, debug: bool) -> None:
    key = _PROPERTY_KEY
    files = {**files, "main_entry.py": b"class App: ...\n"}
    manifest = f'name = "prop"\nentry_point = "main_entry:App"\nsvn = {svn}\ndebug = {str(debug).lower()}\n'
    with tempfile.TemporaryDirectory() as first, tempfile.TemporaryDirectory() as second:
        make_enclave(Path(first), files, manifest)
        make_enclave(Path(second), dict(reversed(list(files.items()))), manifest)
        data = build_image(first, key)
        assert build_image(second, key) == data
    image = load_image(data)
    assert dict(image.files) == files
    assert list(image.files) == sorted(files, key=lambda p: p.encode("utf-8"))
    assert (image.manifest.svn, image.manifest.debug) == (svn, debug)
    assert image.measurement == compute_measurement(image.manifest, files)


_PROPERTY_KEY = generate_signing_key()
