"""private_key_jwt for the emulator: registered client keys, and RFC 7523 checks of the
assertions signed with them (PyJWT and cryptography, imported on first use)."""

from __future__ import annotations

import threading
import time
from typing import Any

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# private_key_jwt: clock skew allowed, and the longest-lived assertion accepted
ASSERTION_LEEWAY_SECONDS = 30
ASSERTION_MAX_LIFETIME_SECONDS = 300


def rsa_public_key(pem: bytes) -> tuple[Any, str | None]:
    """(RSA public key, certificate SHA-1 thumbprint as base64url or None) from a PEM."""
    import base64
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    kid: str | None = None
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        key: Any = serialization.load_pem_public_key(pem)
    else:
        key = cert.public_key()
        der = cert.public_bytes(serialization.Encoding.DER)
        digest = hashlib.sha1(der, usedforsecurity=False).digest()  # x5t is SHA-1 by definition
        kid = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA certificate or public key")
    return key, kid


class AssertionChecker:
    """Client keys by client id, and the ``jti`` values already accepted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, tuple[Any, str | None]] = {}  # id -> (key, x5t)
        self._jtis: dict[tuple[str, str], float] = {}  # (client id, jti) -> forget after

    def register(self, client_id: str, pem: bytes | str) -> None:
        """Accept assertions from ``client_id`` signed by the key of ``pem``.

        Raises:
            ValueError: ``pem`` holds neither an RSA certificate nor an RSA public key.
        """
        key, kid = rsa_public_key(pem.encode() if isinstance(pem, str) else pem)
        with self._lock:
            self._keys[client_id] = (key, kid)

    def problem(self, client_id: str, form: dict[str, str], audiences: list[str]) -> str | None:
        """Why the assertion in ``form`` is refused, or None when it is accepted (and its
        ``jti`` is then spent). The reason never quotes the JWT."""
        import jwt

        with self._lock:
            registered = self._keys.get(client_id)
        if registered is None:
            return "no certificate registered for this client"
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            return "client_assertion_type is not jwt-bearer"
        key, kid = registered
        assertion = form.get("client_assertion", "")
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.InvalidTokenError:
            return "not a JWT"
        if header.get("alg") != "RS256":
            return "alg is not RS256"
        if kid is not None and header.get("kid", kid) != kid:
            return "kid names another certificate"
        try:
            claims = jwt.decode(
                assertion, key, algorithms=["RS256"], audience=audiences, issuer=client_id,
                leeway=ASSERTION_LEEWAY_SECONDS,
                options={"require": ["iss", "sub", "aud", "exp", "nbf", "iat", "jti"]},
            )
        except jwt.InvalidTokenError as exc:
            return f"{type(exc).__name__}: {exc}"
        now, jti = time.time(), claims["jti"]
        if claims["sub"] != client_id:
            return "sub is not the client id"
        if not isinstance(claims["aud"], str):
            return "aud is not the token URL alone"
        if float(claims["iat"]) > now + ASSERTION_LEEWAY_SECONDS:
            return "iat is in the future"
        if float(claims["exp"]) - float(claims["iat"]) > ASSERTION_MAX_LIFETIME_SECONDS:
            return f"lives longer than {ASSERTION_MAX_LIFETIME_SECONDS}s"
        if not isinstance(jti, str) or not jti:
            return "jti is empty"
        with self._lock:
            # Remembered until the assertion could no longer pass the exp check anyway.
            for seen, until in list(self._jtis.items()):
                if until < now:
                    del self._jtis[seen]
            if (client_id, jti) in self._jtis:
                return "jti replayed"
            self._jtis[(client_id, jti)] = float(claims["exp"]) + ASSERTION_LEEWAY_SECONDS
        return None
