"""cas init: create a store and fix its chunker and codec parameters."""

from __future__ import annotations

from ..store import Store


def register(sub):
    p = sub.add_parser("init", help="create a store (chunker and compression are fixed from then on)")
    p.add_argument("--chunk-avg", default=None, help="average chunk size (default 64K; min/max are 1/4 and 4x)")
    p.add_argument("--compression", default=None, help="zstd:LEVEL (default zstd:3) or none")
    return p


def run(args, settings) -> int:
    with Store.open_store(settings) as store:
        c = store.settings.chunker
        print(f"store at {settings.data_dir}: chunks avg {c.avg} min {c.min} max {c.max}, "
              f"compression {store.settings.codec.compression}, blocks {store.settings.blocks.url}, "
              f"index {settings.index_where}")
    return 0
