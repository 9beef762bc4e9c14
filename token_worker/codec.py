"""How the token JSON is stored: as it is, or encrypted (:mod:`token_worker.crypto`)."""

from __future__ import annotations

from typing import Protocol

from .exceptions import StoreError

__all__ = ["PlainCodec", "TokenCodec"]


class TokenCodec(Protocol):
    """Turns the token JSON into what is stored, and back (encryption at rest hooks here)."""

    def encode(self, profile: str, plaintext: str) -> str: ...

    def decode(self, profile: str, stored: str) -> str: ...


class PlainCodec:
    """Stores the JSON as it is."""

    def encode(self, profile: str, plaintext: str) -> str:
        return plaintext

    def decode(self, profile: str, stored: str) -> str:
        if stored.startswith("enc:"):
            raise StoreError("the token is encrypted and this process has no encryption keys")
        return stored
