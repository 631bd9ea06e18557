"""What keeps a store recoverable from its backend alone (DESIGN §8, docs/design.md "Metadata log").

- ``identity.py``: the store id in the index and in the backend's ``store.json``, checked at every
  open (and by GC before it deletes).
- ``objects.py``: how a meta object (a log segment, a snapshot part) is encoded and checked.
- ``records.py``: the records of the metadata log and of snapshots, and ``apply`` (replay one into
  an index write txn).
- ``log.py``: ``LoggedIndex``, the Store's index: every durable-name change appends its record in
  the same write txn.
- ``shipper.py``: ``MetaShipper``, which ships the records to the backend as log segments, writes
  compacted snapshots, deletes what they cover, and applies journal retention.
- ``recover.py``: ``cas recover``, the index rebuilt from packs, snapshot and log.
"""
