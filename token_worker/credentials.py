"""Client credentials for certificate (private_key_jwt) clients.

Builds the RFC 7523 client assertion with PyJWT and reads the Stitch-issued PEM
with cryptography; both come with the ``crypto`` extra and are imported only
when a certificate client is configured.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .exceptions import ConfigError

__all__ = [
    "ASSERTION_LIFETIME_SECONDS",
    "ASSERTION_TYPE",
    "CERT_WARN_DAYS",
    "Certificate",
    "build_assertion",
    "certificate_problems",
    "load_certificate",
]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# short enough that a captured assertion is soon useless, long enough for clock skew
ASSERTION_LIFETIME_SECONDS = 120
CERT_WARN_DAYS = 30
_EXTRA = "certificate clients need the crypto extra: pip install 'token_worker[crypto]'"


@dataclass(frozen=True, slots=True, repr=False)
class Certificate:
    """A private key (never shown) and, when the PEM has one, its certificate."""

    private_key: Any
    not_after: dt.datetime | None
    kid: str | None

    def __repr__(self) -> str:
        return f"Certificate(kid={self.kid!r}, not_after={self.not_after!r})"


def load_certificate(path: str, where: str = "certificate_file") -> Certificate:
    """Read the RSA private key and the optional certificate from one PEM file.

    Raises:
        ConfigError: unreadable file, no RSA key, or the crypto extra is missing.
    """
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError:
        raise ConfigError([f"{where}: {_EXTRA}"]) from None
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([f"{where}: cannot read {path} ({exc.strerror})"]) from None
    key = None
    start = data.find(b"-----BEGIN")
    while start != -1:
        end = data.find(b"-----END", start)
        end = data.find(b"-----", end + 8) + 5 if end != -1 else len(data)
        block = data[start:end]
        if b"PRIVATE KEY" in block.split(b"\n", 1)[0]:
            try:
                key = serialization.load_pem_private_key(block, password=None)
            except (ValueError, TypeError):
                raise ConfigError([f"{where}: {path} holds a private key that cannot be "
                                   f"loaded (encrypted or corrupt)"]) from None
        start = data.find(b"-----BEGIN", end)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError([f"{where}: {path} holds no RSA private key"])
    not_after: dt.datetime | None = None
    kid: str | None = None
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError:
        cert = None
    if cert is not None:
        not_after = cert.not_valid_after_utc
        # the SHA-1 thumbprint (x5t) is how Stitch and most servers name a certificate
        der = cert.public_bytes(serialization.Encoding.DER)
        kid = base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode()  # noqa: S324
    return Certificate(private_key=key, not_after=not_after, kid=kid)


def certificate_problems(name: str, path: str) -> tuple[list[str], list[str]]:
    """(problems, warnings) for one certificate client: unreadable/expired, expiring soon."""
    where = f"clients.{name}.certificate_file"
    try:
        cert = load_certificate(path, where)
    except ConfigError as exc:
        return exc.problems, []
    if cert.not_after is None:
        return [], [f"{where}: {path} has no certificate; expiry cannot be checked"]
    left = cert.not_after - dt.datetime.now(dt.UTC)
    if left.total_seconds() <= 0:
        return [f"{where}: certificate expired on {cert.not_after:%Y-%m-%d %H:%M} UTC"], []
    if left.days < CERT_WARN_DAYS:
        return [], [f"{where}: certificate expires in {left.days} days "
                    f"({cert.not_after:%Y-%m-%d} UTC)"]
    return [], []


def build_assertion(client_id: str, audience: str, cert: Certificate) -> str:
    """A fresh single-use RS256 client assertion (RFC 7523 section 2.2)."""
    import jwt

    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "jti": f"{uuid.uuid4()}.{secrets.token_hex(8)}",
        "iat": now,
        "nbf": now,
        "exp": now + ASSERTION_LIFETIME_SECONDS,
    }
    headers = {"kid": cert.kid} if cert.kid else None
    return jwt.encode(claims, cert.private_key, algorithm="RS256", headers=headers)
