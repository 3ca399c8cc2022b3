"""Bounds on what an image may hold.

Both sides enforce them: `build` refuses to make an image that `load_image` would refuse, and `load_image`
checks them before it parses anything, so a hostile image file costs a bounded amount of memory and time.
Other modules read them as `limits.NAME` at call time (not `from ... import`) so that tests can lower them.
"""

from __future__ import annotations

# An enclave is Python sources plus small data files; thousands of files means a virtualenv or a data set was
# bundled by mistake. The bound also caps the per-file work a hostile image can cause.
MAX_FILES = 4096

# The whole image file (header and body) is held in memory, and on the remote path it travels in one message,
# so its size has a hard upper bound. 64 MiB is far above any source tree and far below what hurts a server.
MAX_IMAGE_SIZE = 64 * 1024 * 1024
