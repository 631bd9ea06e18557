"""Block ids: 32-byte BLAKE3-256 digests of uncompressed chunks.

This module is the only place outside the codec that knows how an id is made.
"""

from __future__ import annotations

import blake3

ID_LEN = 32


def block_id(data: bytes | memoryview) -> bytes:
    """The id of a chunk: BLAKE3-256 of its uncompressed bytes."""
    return blake3.blake3(data).digest()


def short(block_id_: bytes) -> str:
    """The 12 hex digits logs show of an id."""
    return block_id_.hex()[:12]
