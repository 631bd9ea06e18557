"""Block backends behind one interface (``base.BlockStore``) and their factory."""

from __future__ import annotations

from ..errors import ConfigError
from .base import BlockStat, BlockStore
from .layers import (
    BlockStoreLayer,
    CountingBlockStore,
    RetryingBlockStore,
    counted,
    innermost,
    layered,
    packs_of,
)


def open_packfiles(settings):
    """The ``PackFiles`` that ``settings.blocks`` names: ``local`` (DIR/blocks), ``memory`` or
    ``s3://bucket/prefix``."""
    url = settings.blocks.url
    if url == "local":
        from .packs.files import LocalPackFiles

        return LocalPackFiles(settings.blocks_dir)
    if url == "memory":
        from .packs.files import MemoryPackFiles

        return MemoryPackFiles()
    if url.startswith("s3://"):
        from .packs.s3files import S3PackFiles

        return S3PackFiles.from_settings(settings.blocks)
    raise ConfigError(f"unknown block backend {url!r}: use local or s3://BUCKET[/PREFIX]")


def packed(files, index, settings) -> CountingBlockStore:
    """A BlockStore over ``files`` (a ``PackFiles``; a ``BlockStore`` is used as it is), counted."""
    if isinstance(files, BlockStore):
        return counted(files)
    from .packs.store import PackedBlockStore

    return CountingBlockStore(PackedBlockStore(files, index, target_size=settings.blocks.pack_size,
                                               lease=settings.gc.pin_lease))


__all__ = ["BlockStat", "BlockStore", "BlockStoreLayer", "CountingBlockStore", "RetryingBlockStore", "counted",
           "innermost", "layered", "open_packfiles", "packed", "packs_of"]
