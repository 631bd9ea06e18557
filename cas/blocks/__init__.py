"""Block backends behind one interface (``base.BlockStore``) and their factory."""

from __future__ import annotations

from ..errors import ConfigError
from .base import BlockStat, BlockStore
from .layers import BlockStoreLayer, CountingBlockStore, RetryingBlockStore, counted, innermost, layered


def open_blockstore(settings) -> BlockStore:
    """The BlockStore that ``settings.blocks`` names — ``local`` (DIR/blocks) or ``s3://bucket/prefix``
    — with its layers (``layers.py``): counted; a remote backend's transient failures retried."""
    url = settings.blocks.url
    if url == "local":
        from .local import LocalBlockStore

        return layered(LocalBlockStore(settings.blocks_dir))
    if url.startswith("s3://"):
        from .s3 import S3BlockStore

        return S3BlockStore.from_settings(settings.blocks)
    if url == "memory":
        from .memory import MemoryBlockStore

        return layered(MemoryBlockStore())
    raise ConfigError(f"unknown block backend {url!r}: use local or s3://BUCKET[/PREFIX]")


__all__ = ["BlockStat", "BlockStore", "BlockStoreLayer", "CountingBlockStore", "RetryingBlockStore", "counted", "innermost", "layered",
           "open_blockstore"]
