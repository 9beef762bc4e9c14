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
import stat
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
    "certificate_not_after",
    "certificate_problems",
    "load_certificate",
    "permission_warning",
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
        raise ConfigError([f"{where}: file cannot be read "
                           f"({exc.strerror or type(exc).__name__})"]) from None
    key = None
    start = data.find(b"-----BEGIN")
    while start != -1:
        end = data.find(b"-----END", start)
        close = data.find(b"-----", end + 8) if end != -1 else -1
        # a truncated block runs to the end of the file (and must not loop forever)
        end = close + 5 if close != -1 else len(data)
        block = data[start:end]
        if b"PRIVATE KEY" in block.split(b"\n", 1)[0]:
            try:
                key = serialization.load_pem_private_key(block, password=None)
            except (ValueError, TypeError):
                raise ConfigError([f"{where}: the file holds a private key that cannot be "
                                   f"loaded (encrypted or corrupt)"]) from None
        start = data.find(b"-----BEGIN", end)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError([f"{where}: the file holds no RSA private key"])
    not_after: dt.datetime | None = None
    kid: str | None = None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if certs:
        leaf = _leaf(certs, key)
        if leaf is None:
            raise ConfigError([f"{where}: no certificate in the file matches its private key"])
        not_after = leaf.not_valid_after_utc
        # the SHA-1 thumbprint (x5t) is how Stitch and most servers name a certificate;
        # SHA-1 is the definition of x5t here, not a security decision
        der = leaf.public_bytes(serialization.Encoding.DER)
        digest = hashlib.sha1(der, usedforsecurity=False).digest()
        kid = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return Certificate(private_key=key, not_after=not_after, kid=kid)


def _leaf(certs: list[Any], key: Any) -> Any:
    """The certificate of ``key``, wherever the chain puts it (a CA may come first)."""
    mine = key.public_key()
    return next((c for c in certs if c.public_key() == mine), None)


def certificate_not_after(path: str) -> dt.datetime | None:
    """The expiry of the certificate of the file's private key; None when unknown here.

    Degrades to None on hosts without the file or the crypto extra, and when no
    certificate in the file matches its key (a CA's expiry would mislead). A file with
    one certificate and no key reports that certificate.
    """
    try:
        return load_certificate(path).not_after
    except ConfigError:
        pass
    try:  # no key in the file: a lone certificate is still unambiguous
        from cryptography import x509

        data = Path(path).read_bytes()
        certs = [] if b"PRIVATE KEY" in data else x509.load_pem_x509_certificates(data)
    except (ImportError, OSError, ValueError):
        return None
    return certs[0].not_valid_after_utc if len(certs) == 1 else None


def permission_warning(path: str, where: str) -> str | None:
    """A warning when a file holding a credential is readable by group or others."""
    try:
        mode = Path(path).stat().st_mode
    except OSError:
        return None  # unreadable files are reported as problems elsewhere
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (f"{where}: the file is accessible by group or others "
                f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it")
    return None


def certificate_problems(name: str, path: str) -> tuple[list[str], list[str]]:
    """(problems, warnings) for one certificate client: unreadable/expired, expiring soon."""
    where = f"clients.{name}.certificate_file"
    try:
        cert = load_certificate(path, where)
    except ConfigError as exc:
        return exc.problems, []
    warnings = [w for w in [permission_warning(path, where)] if w]
    if cert.not_after is None:
        return [], [f"{where}: the file has no certificate; expiry cannot be checked", *warnings]
    left = cert.not_after - dt.datetime.now(dt.UTC)
    if left.total_seconds() <= 0:
        return [f"{where}: certificate expired on {cert.not_after:%Y-%m-%d %H:%M} UTC"], warnings
    if left.days < CERT_WARN_DAYS:
        warnings.insert(0, f"{where}: certificate expires in {left.days} days "
                           f"({cert.not_after:%Y-%m-%d} UTC)")
    return [], warnings


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
