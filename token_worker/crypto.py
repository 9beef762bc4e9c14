"""Encryption at rest for token values: AES-256-GCM with rotating keys.

Key list format (env var or file): ``kid:base64key[,kid:base64key...]``; the
first key encrypts, every listed key decrypts, so a rotation is: add the new key
second, deploy, move it first, deploy, drop the old one after one token lifetime.
The profile name is bound as associated data: a ciphertext copied to another
profile's key fails to decrypt. Needs the ``crypto`` extra.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from typing import TYPE_CHECKING

from .exceptions import ConfigError, StoreError

if TYPE_CHECKING:
    from .codec import TokenCodec
    from .config import Config

__all__ = ["AesGcmCodec", "codec_for", "codec_from", "generate_key", "parse_keys"]

_PREFIX = "enc:v1:"
_KID = re.compile(r"[A-Za-z0-9_.-]{1,32}")


def generate_key(kid: str) -> str:
    """A fresh ``kid:base64key`` entry for the key list."""
    return f"{kid}:{base64.b64encode(os.urandom(32)).decode()}"


def parse_keys(spec: str, where: str = "redis.encryption_keys") -> list[tuple[str, bytes]]:
    """Parse the key list. Raises ConfigError naming the entry, never the key."""
    keys: list[tuple[str, bytes]] = []
    for i, entry in enumerate(e.strip() for e in spec.replace("\n", ",").split(",")):
        if not entry:
            continue
        kid, _, b64 = entry.partition(":")
        try:
            key = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if not _KID.fullmatch(kid) or len(key) != 32:
            raise ConfigError([f"{where}: entry {i + 1} is not 'kid:base64 of 32 bytes'"])
        if any(kid == seen for seen, _ in keys):
            # two keys under one id: which one decrypts would be a guess
            raise ConfigError([f"{where}: entry {i + 1} repeats the key id of an earlier entry"])
        keys.append((kid, key))
    if not keys:
        raise ConfigError([f"{where}: no keys listed"])
    return keys


class AesGcmCodec:
    """Encrypts with the first key, decrypts with whichever key id the value names."""

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError:
            raise ConfigError(["redis.encryption_keys: encryption at rest needs the crypto "
                               "extra: pip install 'token_worker[crypto]'"]) from None
        self._aead = {kid: AESGCM(key) for kid, key in keys}
        self._current = keys[0][0]

    def __repr__(self) -> str:
        return f"AesGcmCodec(kids={list(self._aead)!r})"

    def encode(self, profile: str, plaintext: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead[self._current].encrypt(nonce, plaintext.encode(), profile.encode())
        return f"{_PREFIX}{self._current}:{base64.b64encode(nonce + sealed).decode()}"

    def decode(self, profile: str, stored: str) -> str:
        from cryptography.exceptions import InvalidTag

        if not stored.startswith(_PREFIX):
            raise StoreError("token is not encrypted but encryption is configured")
        kid, _, b64 = stored[len(_PREFIX):].partition(":")
        aead = self._aead.get(kid)
        if aead is None:
            raise StoreError(f"token is encrypted with key {kid!r}, which this process lacks")
        try:
            raw = base64.b64decode(b64)
            return aead.decrypt(raw[:12], raw[12:], profile.encode()).decode()
        except (InvalidTag, ValueError, binascii.Error):
            raise StoreError(f"token failed to decrypt with key {kid!r} "
                             f"(tampered, or moved from another profile)") from None


def codec_for(config: Config) -> TokenCodec | None:
    """The codec the config asks for, or None (plain JSON)."""
    return codec_from(config.redis.read_encryption_keys())


def codec_from(spec: str | None) -> TokenCodec | None:
    """The codec for a key list (as :func:`parse_keys` reads it), or None (plain JSON)."""
    return AesGcmCodec(parse_keys(spec)) if spec else None
