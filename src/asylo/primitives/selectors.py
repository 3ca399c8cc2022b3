"""Selector numbers: which entry point (host -> enclave) or exit point (enclave -> host) a call addresses.

Entry and exit selectors are separate namespaces. Each has the same ranges:

    0   ..  127   reserved for the primitives layer itself
    128 ..  255   reserved for the pyasylo runtime (lifecycle entry points, built-in host calls)
    256 ..        user selectors, free for applications (`@entry_selector(n)`, `ExitCallRegistry.register_selector`)

The lifecycle entry selectors are Asylo's numbers: Initialize 128, Run 129, Finalize 130.
"""

from __future__ import annotations

from typing import Final

RUNTIME_RESERVED_BASE: Final = 128
USER_SELECTOR_BASE: Final = 256
#: Largest selector: selectors travel as unsigned 64-bit integers.
MAX_SELECTOR: Final = 2**64 - 1

# Entry selectors (host -> enclave).
ENTRY_INITIALIZE: Final = 128
ENTRY_RUN: Final = 129
ENTRY_FINALIZE: Final = 130
#: A named entry point: extents are [name, *arguments], the answer is [result].
ENTRY_CALL_NAMED: Final = 131

# Exit selectors (enclave -> host): the built-in host calls.
#: extents [level as 8-byte little-endian int, message]; logged through the host's `logging`.
EXIT_LOG: Final = 128
#: extents [text]; written to the host's standard output.
EXIT_WRITE_STDOUT: Final = 129
#: no extents; answer [nanoseconds since the epoch, 8-byte little-endian]. Untrusted: the host may lie.
EXIT_HOST_TIME: Final = 130
#: a handler the host registered by name: extents [name, *arguments], the answer is [result].
EXIT_CALL_NAMED: Final = 131
#: extents [name (UTF-8), sealed blob]; no answer. The host keeps the blob under `name` in its sealed-blob store
#: (FAILED_PRECONDITION if it has none). Only sealed bytes may be sent: the enclave side checks that they are.
EXIT_STORE_SEALED: Final = 132
#: extents [name (UTF-8)]; answer [] if nothing is stored under `name`, else [sealed blob]. Untrusted: the host may
#: return any bytes (another name's blob, an old one, garbage), so the enclave unseals before it believes them.
EXIT_LOAD_SEALED: Final = 133

#: Largest sealed blob the two calls above carry, and so the largest that `seal` makes: the host stores blobs in
#: files and answers a load in one message, so both sides need one agreed bound (1 MiB: keys, tokens, small
#: records — bulk data belongs in a file encrypted under a sealed key, not in a sealed blob).
MAX_SEALED_BLOB_SIZE: Final = 1 << 20
#: Longest blob name, in characters: a name becomes a file name (`<name>.sealed`) in the host's store.
MAX_SEALED_NAME_LENGTH: Final = 128


def is_user_selector(selector: int) -> bool:
    return USER_SELECTOR_BASE <= selector <= MAX_SELECTOR


def check_user_selector(selector: int) -> int:
    """Return `selector` if applications may use it, else raise ValueError naming the allowed range."""
    if not isinstance(selector, int) or not is_user_selector(selector):
        raise ValueError(
            f"selector {selector!r} is reserved: user selectors are {USER_SELECTOR_BASE}..{MAX_SELECTOR} "
            f"(0..{USER_SELECTOR_BASE - 1} belong to the primitives layer and the runtime)"
        )
    return selector
