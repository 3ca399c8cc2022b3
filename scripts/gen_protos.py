"""Regenerate the protobuf code that the repository commits, or check that it is current.

    python scripts/gen_protos.py          # rewrite the generated files
    python scripts/gen_protos.py --check  # exit 1 and name the stale files (CI runs this)

The compiler is grpcio-tools, pinned in the `dev` extra, so that a fresh run gives the same bytes as the committed
code. Generated: `*_pb2.py` and `*_pb2.pyi` beside each `.proto` of the package and of the examples.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
# (include root, proto files relative to it). Example protos import the package's, so both roots are on the path.
SOURCES: list[tuple[Path, list[str]]] = [
    (ROOT / "src", ["asylo/proto/status.proto", "asylo/proto/enclave.proto", "asylo/proto/image.proto",
              "asylo/proto/session.proto", "asylo/proto/provision.proto",
              "asylo/proto/identity.proto"]),
    (ROOT / "examples/quickstart/enclave", ["demo.proto"]),
]
INCLUDES = [ROOT / "src", ROOT / "examples/quickstart/enclave", Path(protoc.__file__).parent / "_proto"]


def generate(out_root: Path) -> list[Path]:
    """Compile every source into `out_root`, mirroring the source tree; return the generated paths (relative)."""
    generated: list[Path] = []
    for include_root, protos in SOURCES:
        rel_root = include_root.relative_to(ROOT)
        out = out_root / rel_root
        out.mkdir(parents=True, exist_ok=True)
        args = ["protoc", *(f"-I{inc}" for inc in INCLUDES), f"--python_out={out}", f"--pyi_out={out}", *protos]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {protos}")
        for proto in protos:
            stem = proto.removesuffix(".proto")
            generated += [rel_root / f"{stem}_pb2.py", rel_root / f"{stem}_pb2.pyi"]
    return generated


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 if stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generated = generate(Path(tmp))
        stale = [
            rel for rel in generated
            if not (ROOT / rel).exists() or not filecmp.cmp(Path(tmp) / rel, ROOT / rel, shallow=False)
        ]
        if args.check:
            for rel in stale:
                print(f"stale generated file: {rel} (run: python scripts/gen_protos.py)", file=sys.stderr)
            return 1 if stale else 0
        for rel in stale:
            shutil.copyfile(Path(tmp) / rel, ROOT / rel)
            print(f"wrote {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
