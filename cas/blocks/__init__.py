"""Block backends behind one interface (``base.BlockStore``) and their factory."""

from __future__ import annotations

from ..errors import ConfigError
from .base import BlockStat, BlockStore


def open_blockstore(settings) -> BlockStore:
    """The BlockStore that ``settings.blocks`` names: ``local`` (DIR/blocks) or ``s3://bucket/prefix``."""
    url = settings.blocks.url
    if url == "local":
        from .local import LocalBlockStore

        return LocalBlockStore(settings.blocks_dir)
    if url.startswith("s3://"):
        from .s3 import S3BlockStore

        return S3BlockStore.from_settings(settings.blocks)
    if url == "memory":
        from .memory import MemoryBlockStore

        return MemoryBlockStore()
    raise ConfigError(f"unknown block backend {url!r}: use local or s3://BUCKET[/PREFIX]")


__all__ = ["BlockStat", "BlockStore", "open_blockstore"]
