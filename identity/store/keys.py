"""Advisory-lock keys: the same 64-bit hash of a key's text in every process."""

from __future__ import annotations

import hashlib


def key_hash(key: str) -> int:
    """A stable signed 64-bit hash of a lock key (same in every process)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)

