"""The errors the image package raises.

Two classes, so callers can tell "this is not a well-formed image (or manifest, or key)" from "this image is
well-formed but not what its signer signed":

- `ImageError` (INVALID_ARGUMENT): malformed input of any kind: a manifest, a source tree, a key file or an
  image file that breaks a rule. The message names the rule and the path or key that broke it.
- `ImageVerificationError` (PERMISSION_DENIED): the signature does not verify or the content does not match
  the measurement. It is also a `PermissionDeniedError`, so code that catches by status code after the error
  has crossed a process boundary (where it is rebuilt from its code) and code that catches it locally agree.
"""

from __future__ import annotations

from asylo.status import InvalidArgumentError, PermissionDeniedError, StatusCode


class ImageError(InvalidArgumentError):
    """A manifest, source tree, signing key or image file is malformed; the message says what and where."""


class ImageVerificationError(ImageError, PermissionDeniedError):
    """An image's signature or measurement does not check out: it was changed after signing, or forged."""

    code = StatusCode.PERMISSION_DENIED
