"""What keeps a store recoverable from its backend alone (DESIGN §8, docs/design.md "Metadata log").

- ``identity.py``: the store id in the index and in the backend's ``store.json``, checked at every
  open (and by GC before it deletes).
- ``objects.py``: how a meta object (a log segment, a snapshot part) is encoded and checked.
- ``records.py``: the records of the metadata log and of snapshots, and ``apply`` (replay one into
  an index write txn).
"""
