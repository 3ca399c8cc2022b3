"""Who is calling: a provision server's clients authenticate with a mutual-TLS certificate or a bearer token.

Every session belongs to the client that asked for it, so every RPC first turns its credentials into a `ClientId`.
Two ways are offered because operators have either a PKI (mutual TLS: the client certificate's fingerprint is the
identity, its common name the display name) or not (bearer tokens: a file of `name token` lines, handed out by the
operator; the token travels in the `authorization: Bearer ...` metadata, which is only allowed over TLS or loopback).
A token is kept in memory as its SHA-256 only and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.x509.oid import NameOID

from asylo._files import read_bounded
from asylo.remote.provision_api import certificate_sha256, peer_certificate
from asylo.status import InvalidArgumentError, UnauthenticatedError

#: A token file is a short list of lines; the bound keeps a wrong path from being read whole.
_MAX_TOKEN_FILE_SIZE = 1 << 20
#: Bearer tokens shorter than this are guessable.
MIN_TOKEN_LENGTH = 16
_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
_BEARER = "bearer "


@dataclass(frozen=True)
class ClientId:
    """An authenticated client: `key` decides ownership (unique per certificate or token), `name` is for people.

    `certificate_sha256` is set when the certificate is the identity (mutual TLS, no bearer token): the proxies
    provisioned for this client then serve that certificate only. A bearer-token client's proxies are bound by their
    one-time token alone, since the token, not a certificate, is what the client proved.
    """

    key: str
    name: str
    certificate_sha256: bytes | None = None

    def __str__(self) -> str:
        return self.name


#: The identity of every caller of a server started with `--allow-anonymous` (loopback development only).
ANONYMOUS = ClientId("anonymous", "anonymous")


def load_client_tokens(path: str | os.PathLike[str]) -> dict[bytes, ClientId]:
    """Read a bearer-token file: one `name token` pair per line; blank lines and `#` comments are ignored.

    Names are 1-64 of `A-Za-z0-9._@-`; tokens at least MIN_TOKEN_LENGTH printable characters; both unique.
    Returns SHA-256(token) -> ClientId. Errors name the file and line.
    """
    file, data = read_bounded(path, _MAX_TOKEN_FILE_SIZE, "client token file", InvalidArgumentError)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgumentError(f"{file}: a client token file must be UTF-8 text") from None
    tokens: dict[bytes, ClientId] = {}
    names: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 2:
            raise InvalidArgumentError(f"{file}:{number}: expected 'name token'")
        name, token = fields
        if not _NAME.fullmatch(name):
            raise InvalidArgumentError(f"{file}:{number}: a client name is 1-64 of A-Z a-z 0-9 . _ @ -")
        if len(token) < MIN_TOKEN_LENGTH or not token.isprintable():
            raise InvalidArgumentError(f"{file}:{number}: a token needs at least {MIN_TOKEN_LENGTH} printable "
                                       f"characters")
        digest = hashlib.sha256(token.encode("utf-8")).digest()
        if name in names or digest in tokens:
            raise InvalidArgumentError(f"{file}:{number}: duplicate client name or token")
        names.add(name)
        tokens[digest] = ClientId(f"token:{name}", name)
    if not tokens:
        raise InvalidArgumentError(f"{file}: no client tokens in the file")
    return tokens


class ClientAuthenticator:
    """Decides who an RPC comes from, or refuses it with UNAUTHENTICATED.

    `tokens` (from `load_client_tokens`) enables bearer tokens; `mutual_tls` says the server requires client
    certificates (gRPC has already checked them against the client CA); `allow_anonymous` lets every caller in as
    ANONYMOUS, for a server on loopback during development.
    """

    def __init__(self, *, tokens: dict[bytes, ClientId] | None = None, mutual_tls: bool = False,
                 allow_anonymous: bool = False) -> None:
        if not (tokens or mutual_tls or allow_anonymous):
            raise InvalidArgumentError("a provision server needs client authentication: client tokens, a client "
                                       "CA (mutual TLS), or, on loopback only, anonymous access")
        self._tokens = dict(tokens or {})
        self._mutual_tls = mutual_tls
        self._allow_anonymous = allow_anonymous

    def authenticate(self, context: Any) -> ClientId:
        """The client of the RPC `context` (a grpc.aio ServicerContext)."""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                return self._from_token(value)
        if self._mutual_tls:
            certificate = _peer_certificate(context)
            if certificate is not None:
                return certificate
        if self._allow_anonymous:
            return ANONYMOUS
        raise UnauthenticatedError("no client credentials: present a client certificate (mutual TLS) or an "
                                   "'authorization: Bearer <token>' header")

    def _from_token(self, value: str | bytes) -> ClientId:
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        if not text.lower().startswith(_BEARER):
            raise UnauthenticatedError("the authorization header must be 'Bearer <token>'")
        digest = hashlib.sha256(text[len(_BEARER):].strip().encode("utf-8")).digest()
        # Look at every entry, so the time taken does not say how close a guess came.
        found: ClientId | None = None
        for known, client in self._tokens.items():
            if hmac.compare_digest(known, digest):
                found = client
        if found is None:
            raise UnauthenticatedError("unknown bearer token")
        return found


def _peer_certificate(context: Any) -> ClientId | None:
    certificate = peer_certificate(context.auth_context())
    if certificate is None:
        return None
    fingerprint = certificate_sha256(certificate)
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(names[0].value) if names else fingerprint.hex()[:16]
    return ClientId(f"cert:{fingerprint.hex()}", common_name, fingerprint)


def token_file_is_private(path: Path) -> bool:
    """True if no one but the owner can read `path` (a token file others can read gives their tokens away)."""
    return path.stat().st_mode & 0o077 == 0
