"""Named calls, the layer above selectors on both sides: an entry point or a host handler called by name.

The call's first extent is the name, the rest its bytes arguments; the answer is one extent. The enclave's runtime
and the host's exit-call registry both serve them, so the rules live here once.
"""

from __future__ import annotations

from asylo.status import AsyloError

#: Longest name, in UTF-8 bytes: names are identifiers, not payloads.
MAX_CALL_NAME = 256


def call_name_bytes(name: str) -> bytes | None:
    """`name` as it travels, or None if it is not a usable name (empty, or longer than MAX_CALL_NAME bytes)."""
    encoded = name.encode("utf-8")
    return encoded if 0 < len(encoded) <= MAX_CALL_NAME else None


def named_call_result(result: object, what: str, error: type[AsyloError]) -> list[bytes]:
    """The one extent a named call answers with: its bytes (b"" for None); `error` for anything else."""
    if result is None:
        return [b""]
    if not isinstance(result, bytes | bytearray | memoryview):
        raise error(f"{what} must return bytes or None, it returned {type(result).__name__}")
    return [bytes(result)]
