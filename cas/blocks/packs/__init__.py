"""Packs: blocks and manifests in large self-describing pack files or objects (DESIGN §8).

``format.py`` (the bytes of a pack), ``files.py`` (where packs live: local files, memory; S3 in
``s3files.py``), ``store.py`` (``PackedBlockStore``: the BlockStore over packs and the index's
location table).
"""
