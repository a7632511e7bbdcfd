"""Encryption of personal data and secrets at rest: AES-256-GCM with key ids, and key rotation.

A sealed value is one string, ``enc1:<key id>:<base64url(nonce || ciphertext+tag)>``,
so a database dump shows neither the CPR number nor the webhook secret, and
every value names the key that opens it. The keyring holds the current key
(new values) and older ones (still readable); ``reseal`` rewrites every value
under an older key with the current one, after which the old key can go.
The key id is authenticated too (associated data): a value cannot be passed
off as sealed under another key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pymongo.asynchronous.database import AsyncDatabase

log = logging.getLogger(__name__)

PREFIX = "enc1"
NONCE_BYTES = 12

# The local stack's key: public, so refused outside static-token (development) mode.
DEV_KEY_ID = "dev"
DEV_KEY = base64.b64encode(hashlib.sha256(b"orgdir-development-key, public: never for real data").digest()).decode()


class SealError(ValueError):
    """A key is malformed, missing or does not open a value."""


def decode_key(kid: str, value: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SealError(f"encryption key {kid!r} is not base64") from exc
    if len(raw) != 32:
        raise SealError(f"encryption key {kid!r} must be 32 bytes (base64 of 32 random bytes), not {len(raw)}")
    if ":" in kid or not kid:
        raise SealError(f"encryption key id {kid!r} must be non-empty and hold no ':'")
    return raw


def new_key() -> str:
    """A fresh key for ``ORGDIR_ENCRYPTION_KEYS`` (base64 of 32 random bytes)."""
    return base64.b64encode(os.urandom(32)).decode()


class Keyring:
    """The current key seals; every configured key opens."""

    def __init__(self, keys: Mapping[str, str], current: str) -> None:
        if not keys:
            raise SealError("no encryption key configured")
        if current not in keys:
            raise SealError(f"the current encryption key id {current!r} is not among the keys {sorted(keys)}")
        self._aead = {kid: AESGCM(decode_key(kid, value)) for kid, value in keys.items()}
        self.current = current

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._aead)

    def seal(self, plaintext: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        ct = self._aead[self.current].encrypt(nonce, plaintext.encode(), self._aad(self.current))
        return f"{PREFIX}:{self.current}:{base64.urlsafe_b64encode(nonce + ct).decode().rstrip('=')}"

    def open(self, sealed: str) -> str:
        kid, blob = split(sealed)
        aead = self._aead.get(kid)
        if aead is None:
            raise SealError(f"no key {kid!r} to open a stored value (configured: {self.key_ids})")
        raw = base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4))
        try:
            return aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], self._aad(kid)).decode()
        except InvalidTag as exc:
            raise SealError(f"a value sealed under key {kid!r} does not open with the configured key") from exc

    def open_optional(self, sealed: str | None) -> str | None:
        return None if sealed is None else self.open(sealed)

    def reseal(self, sealed: str) -> str | None:
        """The value sealed under the current key, or None when it already is."""
        kid, _ = split(sealed)
        return None if kid == self.current else self.seal(self.open(sealed))

    @staticmethod
    def _aad(kid: str) -> bytes:
        return f"{PREFIX}:{kid}".encode()


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX + ":")


def split(sealed: str) -> tuple[str, str]:
    parts = sealed.split(":", 2)
    if len(parts) != 3 or parts[0] != PREFIX:
        raise SealError("not a sealed value")
    return parts[1], parts[2]


def key_id_of(sealed: str) -> str:
    return split(sealed)[0]


def _resealed(value: Any, keyring: Keyring, plain: frozenset[str], key: str | None = None) -> tuple[Any, int]:
    """``value`` with every sealed string under an old key sealed again, and every plaintext string
    under a key named in ``plain`` (data stored before sealing existed) sealed; and how many changed."""
    if is_sealed(value):
        new = keyring.reseal(value)
        return (value, 0) if new is None else (new, 1)
    if isinstance(value, str) and value and key in plain:
        return keyring.seal(value), 1
    if isinstance(value, dict):
        out, n = {}, 0
        for k, v in value.items():
            out[k], m = _resealed(v, keyring, plain, k)
            n += m
        return out, n
    if isinstance(value, list):
        items, n = [], 0
        for v in value:
            new_v, m = _resealed(v, keyring, plain, key)
            items.append(new_v)
            n += m
        return items, n
    return value, 0


async def reseal_collection(
    db: AsyncDatabase[Any], collection: str, keyring: Keyring, plaintext_fields: Iterable[str] = ()
) -> tuple[int, int]:
    """Seal every value of ``collection`` under an older key with the current one; (documents, values).

    Plaintext strings under a key in ``plaintext_fields`` (at any depth: ``state.cpr`` and every
    history snapshot's) are sealed too: the migration of data written before sealing existed.

    Each document is rewritten with a conditional update (its ``version`` when
    it has one, else the fields as read), so a concurrent write is never
    overwritten: the document is read again and resealed. History snapshots
    (``registrations``) are values like any other.
    """
    col = db[collection]
    plain = frozenset(plaintext_fields)
    docs = values = 0
    async for doc in col.find({}, {"outbox": 0}):
        for _ in range(10):
            changed: dict[str, Any] = {}
            count = 0
            for field, value in doc.items():
                if field == "_id":
                    continue
                new, n = _resealed(value, keyring, plain, field)
                if n:
                    changed[field] = new
                    count += n
            if not changed:
                break
            guard: dict[str, Any] = {"_id": doc["_id"]}
            if "version" in doc:
                guard["version"] = doc["version"]
            else:
                guard.update({f: doc[f] for f in changed})
            res = await col.update_one(guard, {"$set": changed})
            if res.matched_count == 1:
                docs += 1
                values += count
                break
            fresh = await col.find_one({"_id": doc["_id"]}, {"outbox": 0})
            if fresh is None:
                break
            doc = fresh
        else:
            raise RuntimeError(f"{collection}/{doc['_id']} kept changing during key rotation; run it again")
        if docs and docs % 1000 == 0:
            log.info("resealing", extra={"collection": collection, "documents": docs})
    log.info("resealed", extra={"collection": collection, "documents": docs, "values": values})
    return docs, values
