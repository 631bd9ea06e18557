"""What a folder is: the one set of folder operations that WebDAV and the web API translate.

Keys are flat (S3); folders are read into them here, once, for every front end that shows a
tree (DESIGN §1). S3 itself stays flat and does not use this module.

Rules:

- A folder ``dir`` of a bucket is the prefix ``dir/``. It exists when a key lies below it or
  when its *marker* exists: the key ``dir/`` itself, zero bytes, content type
  ``application/x-directory`` (the convention S3 consoles use). The bucket's root is the
  folder with the prefix ``""``; it has no marker.
- When a key ``x`` and keys below ``x/`` both exist (possible through S3), the file wins:
  ``lookup`` answers the file and ``members`` does not show the folder.
- Listing a folder never shows the folder's own marker.
- A folder keeps existing after its last member leaves (moved or deleted): its marker is
  created then, as a file system would keep the directory. Deleting or moving a folder itself
  removes it, but keeps *its* parent the same way.
- Moving or copying is metadata only (``Store.move`` / ``Store.copy``, key by key; no block is
  read or written). A tree moves key by key: a key that fails is reported in
  ``TreeResult.errors`` and the others go on; a key that vanished meanwhile is skipped. The
  source folder (its marker) is removed only when every key moved, so a half-failed move
  leaves the rest where it was.
- Overwriting happens only when the caller asks (``overwrite=True``). Then an existing
  destination is deleted first, whole (RFC 4918 §9.9.3: a DELETE with Depth: infinity), and the
  source takes its place; a folder is never merged into another. Without it an existing
  destination is ``PreconditionFailed``. WebDAV passes its ``Overwrite`` header (default T);
  the web API passes its optional ``"overwrite"`` field (default false).
- A folder cannot be moved or copied into itself, nor over a destination that contains it
  (that would delete the source): ``MoveIntoItself``.
- After a tree moves or copies into a folder, the destination folder has a marker: the
  source's marker (with its dead properties and time) moves or is copied along, or a new one is
  made when the source had none.
- A bucket that holds only folder markers counts as empty: ``delete_bucket`` removes the
  markers with it.

WebDAV's dead properties of a bucket (kept in kv by the WebDAV front) are not this module's
business; dead properties of folders live on markers and so move with them.

Stateless apart from the Store it wraps; safe to share between threads. Each Store call is
its own transaction: a tree operation is not atomic, which is why errors are collected.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from . import errors
from .store import Listing, ObjectInfo, Store

log = logging.getLogger(__name__)

MARKER_TYPE = "application/x-directory"
PAGE = 1000  # keys per Store.list call
_MAX_PAGES = 1 << 40  # bound of every paging loop (each page advances past the last)


@dataclass(frozen=True)
class Entry:
    """What a path of a bucket names: a file, or a folder.

    ``key`` is the file's key, or the folder's prefix (ending in ``/``, or ``""`` for the
    bucket's root). ``info`` is the file's record, or the folder's marker if it has one.
    """

    bucket: str
    key: str
    folder: bool
    info: ObjectInfo | None = None

    @property
    def path(self) -> str:
        """The key without the trailing slash of a folder (``""`` for the bucket's root)."""
        return self.key.rstrip("/") if self.folder else self.key


@dataclass
class TreeResult:
    """What a move, copy or delete did: ``done`` keys, and ``(key, error)`` of those that failed."""

    done: int = 0
    errors: list[tuple[str, errors.CasError]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def parent_prefix(key: str) -> str:
    """The prefix of the folder holding ``key`` (a file's key or a folder's prefix); ``""``: the root."""
    head, sep, _ = key.rstrip("/").rpartition("/")
    return head + "/" if sep else ""


def _prefix(path: str) -> str:
    path = path.strip("/")
    return path + "/" if path else ""


class Namespace:
    """Folders over one Store (see the module docstring for the rules)."""

    def __init__(self, store: Store):
        self.store = store

    # -- what is there ----------------------------------------------------------------------
    def marker(self, bucket: str, prefix: str) -> ObjectInfo | None:
        """The marker of the folder ``prefix`` (ending in ``/``), or None."""
        if not prefix:
            return None
        try:
            return self.store.stat(bucket, prefix)
        except (errors.ObjectNotFound, errors.InvalidName):
            return None

    def file(self, bucket: str, key: str) -> Entry | None:
        """The file ``key``, or None."""
        try:
            return Entry(bucket, key, False, self.store.stat(bucket, key))
        except (errors.ObjectNotFound, errors.InvalidName):
            return None

    def folder(self, bucket: str, path: str) -> Entry | None:
        """The folder ``path`` (with or without a trailing slash; ``""``: the root), or None."""
        prefix = _prefix(path)
        if not prefix:
            self.store.bucket(bucket)  # BucketNotFound if it does not exist
            return Entry(bucket, "", True, None)
        marker = self.marker(bucket, prefix)
        if marker is not None:
            return Entry(bucket, prefix, True, marker)
        page = self.store.list(bucket, prefix=prefix, limit=1)
        if page.entries or page.common_prefixes:
            return Entry(bucket, prefix, True, None)
        return None

    def lookup(self, bucket: str, path: str) -> Entry | None:
        """What ``path`` (no trailing slash) names: the file if there is one, else the folder."""
        path = path.strip("/")
        if path:
            entry = self.file(bucket, path)
            if entry is not None:
                return entry
        return self.folder(bucket, path)

    def iter_tree(self, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
        """Every key under ``prefix`` (no delimiter), in key order, page by page."""
        after = ""
        for _ in range(_MAX_PAGES):
            page = self.store.list(bucket, prefix=prefix, start_after=after, limit=PAGE)
            yield from page.entries
            if not page.truncated or not page.entries:
                return
            after = page.next_start_after or page.entries[-1].key

    def list_dir(self, bucket: str, prefix: str, *, delimiter: str = "/", start_after: str = "",
                 limit: int = PAGE) -> Listing:
        """One page of the folder ``prefix``, without the folder's own marker."""
        page = self.store.list(bucket, prefix=prefix, delimiter=delimiter, start_after=start_after, limit=limit)
        if prefix and any(e.key == prefix for e in page.entries):
            page = Listing([e for e in page.entries if e.key != prefix], page.common_prefixes,
                           page.truncated, page.next_start_after)
        return page

    def members(self, bucket: str, prefix: str) -> Iterator[tuple[str, ObjectInfo | None]]:
        """(name, ObjectInfo, or None for a folder) of each direct member; a file wins a tie."""
        after = ""
        for _ in range(_MAX_PAGES):
            page = self.store.list(bucket, prefix=prefix, delimiter="/", start_after=after, limit=PAGE)
            files = {}
            for info in page.entries:
                name = info.key[len(prefix):]
                if name and not name.endswith("/"):
                    files[name] = info
            yield from files.items()
            for cp in page.common_prefixes:
                name = cp[len(prefix):-1]
                if name and name not in files and self.file(bucket, prefix + name) is None:
                    yield name, None  # (a file of that name may sit on another page: looked up)
            if not page.truncated:
                return
            last = [info.key for info in page.entries] + list(page.common_prefixes)
            nxt = page.next_start_after or (max(last) if last else "")
            if not nxt or nxt <= after:
                return
            after = nxt

    # -- making and keeping folders -----------------------------------------------------------
    def make_folder(self, bucket: str, path: str, *, user: str = "", mtime: float | None = None,
                    props: Mapping[str, str] | None = None, exclusive: bool = False) -> ObjectInfo:
        """Write the marker of the folder ``path``; with ``exclusive``, ``PreconditionFailed`` if it exists."""
        prefix = _prefix(path)
        if not prefix:
            raise errors.InvalidName("a folder needs a name")
        return self.store.put(bucket, prefix, b"", user=user, content_type=MARKER_TYPE, mtime=mtime,
                              props=dict(props) if props else None,
                              if_none_match="*" if exclusive else None)

    def keep_parent(self, bucket: str, key: str, *, user: str = "") -> None:
        """After ``key`` (a file or a folder) left, keep the folder that held it, as a marker."""
        prefix = parent_prefix(key)
        if not prefix:
            return  # the bucket itself
        page = self.store.list(bucket, prefix=prefix, limit=1)
        if not page.entries and not page.common_prefixes:
            self.store.put(bucket, prefix, b"", user=user, content_type=MARKER_TYPE)

    # -- deleting -----------------------------------------------------------------------------
    def delete(self, bucket: str, key: str, *, user: str = "") -> None:
        """Delete one key (a file, or a folder's marker alone) and keep its parent folder."""
        self.store.delete(bucket, key, user=user)
        self.keep_parent(bucket, key, user=user)

    def delete_tree(self, bucket: str, prefix: str, *, user: str = "", keep_parent: bool = True) -> TreeResult:
        """Delete every key under ``prefix`` (``""``: the whole bucket's content, not the bucket).

        The folder's parent is kept (unless ``keep_parent`` is off: the tree is about to be
        replaced) when every key went.
        """
        result = TreeResult()
        for info in list(self.iter_tree(bucket, prefix)):
            try:
                self.store.delete(bucket, info.key, user=user)
                result.done += 1
            except errors.ObjectNotFound:
                pass  # deleted by someone else meanwhile: the outcome is the same
            except errors.CasError as exc:
                result.errors.append((info.key, exc))
        if result.ok and prefix and keep_parent:
            self.keep_parent(bucket, prefix, user=user)
        return result

    def is_empty(self, bucket: str) -> bool:
        """True when the bucket holds nothing but folder markers."""
        return all(_is_marker(info) for info in self.iter_tree(bucket, ""))

    def delete_bucket(self, bucket: str, *, user: str = "", recursive: bool = False) -> TreeResult:
        """Delete a bucket. One holding only folder markers counts as empty: they go with it.

        With ``recursive`` everything in it goes first; keys that could not be deleted are
        reported and the bucket stays. Without it, ``BucketNotEmpty`` unless only markers are
        left (and nothing else is deleted: a file that arrives meanwhile makes the final
        ``Store.delete_bucket`` refuse).
        """
        if recursive:
            result = self.delete_tree(bucket, "", user=user)
            if not result.ok:
                return result
        else:
            if not self.is_empty(bucket):
                raise errors.BucketNotEmpty(f"bucket {bucket!r} is not empty")
            result = TreeResult()
            for info in list(self.iter_tree(bucket, "")):
                if _is_marker(info):
                    result = _merge(result, self._delete_one(bucket, info.key, user))
            if not result.ok:
                raise result.errors[0][1]
        self.store.delete_bucket(bucket, user=user)
        return result

    # -- moving and copying -------------------------------------------------------------------
    def move(self, src: Entry, dst_bucket: str, dst_path: str, *, user: str = "",
             overwrite: bool = False) -> TreeResult:
        """Move a file or a folder to ``dst_path`` of ``dst_bucket`` (see the rules above).

        Moving a folder to ``""`` moves its content into the bucket's root. The source bucket of
        a bucket's root that moved stays (empty) for the caller to delete.
        """
        return self._transfer(src, dst_bucket, dst_path, user=user, overwrite=overwrite, move=True)

    def copy(self, src: Entry, dst_bucket: str, dst_path: str, *, user: str = "", overwrite: bool = False,
             depth_infinity: bool = True) -> TreeResult:
        """Copy a file or a folder; without ``depth_infinity`` a folder is copied without its members."""
        return self._transfer(src, dst_bucket, dst_path, user=user, overwrite=overwrite, move=False,
                              depth_infinity=depth_infinity)

    def _transfer(self, src: Entry, dst_bucket: str, dst_path: str, *, user: str, overwrite: bool,
                  move: bool, depth_infinity: bool = True) -> TreeResult:
        dst_path = dst_path.strip("/")
        dst_key = _prefix(dst_path) if src.folder else dst_path
        if src.folder and dst_bucket == src.bucket and dst_key.startswith(src.key):
            raise errors.MoveIntoItself(f"cannot move or copy {src.key or 'the bucket'!r} into itself")
        if not src.folder and (dst_bucket, dst_key) == (src.bucket, src.key):
            return TreeResult(1)  # onto itself: nothing to do
        if not src.folder and not dst_path:
            raise errors.InvalidName("a file needs a name below its bucket")
        dest = self.lookup(dst_bucket, dst_path)
        if dest is not None:
            if not overwrite:
                raise errors.PreconditionFailed(f"{dst_bucket}/{dst_path} exists and overwrite is off")
            if dest.folder and dst_bucket == src.bucket and src.key.startswith(dest.key):
                raise errors.MoveIntoItself("the destination contains the source: replacing it would delete it")
            replaced = self.delete_tree(dst_bucket, dest.key, user=user, keep_parent=False) if dest.folder \
                else self._delete_one(dst_bucket, dest.key, user)
            if not replaced.ok:
                return replaced
        if not src.folder:
            self._one(src.bucket, src.key, dst_bucket, dst_key, user=user, overwrite=overwrite, move=move)
            if move:
                self.keep_parent(src.bucket, src.key, user=user)
            return TreeResult(1)
        return self._tree(src, dst_bucket, dst_key, user=user, overwrite=overwrite, move=move,
                          depth_infinity=depth_infinity)

    def _tree(self, src: Entry, dst_bucket: str, dst_prefix: str, *, user: str, overwrite: bool,
              move: bool, depth_infinity: bool) -> TreeResult:
        result = TreeResult()
        if depth_infinity:
            # pages are separate reads, and the destination is never below the source (refused
            # above), so moving keys while paging through the source is safe
            for info in self.iter_tree(src.bucket, src.key):
                if info.key == src.key:
                    continue  # the source's own marker goes last, below
                new_key = dst_prefix + info.key[len(src.key):]
                try:
                    self._one(src.bucket, info.key, dst_bucket, new_key, user=user, overwrite=overwrite, move=move)
                    result.done += 1
                except errors.ObjectNotFound:
                    pass  # gone meanwhile: nothing to move
                except errors.CasError as exc:
                    result.errors.append((info.key, exc))
        marker = self.marker(src.bucket, src.key)
        if dst_prefix:  # the destination folder, with the source marker's properties and time
            if marker is not None:
                self._one(src.bucket, src.key, dst_bucket, dst_prefix, user=user, overwrite=True,
                          move=move and result.ok)
                result.done += 1
            else:
                self.make_folder(dst_bucket, dst_prefix, user=user)
        elif marker is not None and move and result.ok:
            self.store.delete(src.bucket, src.key, user=user)  # into a bucket's root: no marker there
            result.done += 1
        if move and result.ok and src.key:
            self.keep_parent(src.bucket, src.key, user=user)
        return result

    def _one(self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str, *, user: str,
             overwrite: bool, move: bool) -> ObjectInfo:
        if move:
            return self.store.move(src_bucket, src_key, dst_bucket, dst_key, user=user, overwrite=overwrite)
        return self.store.copy(src_bucket, src_key, dst_bucket, dst_key, user=user,
                               if_none_match=None if overwrite else "*")

    def _delete_one(self, bucket: str, key: str, user: str) -> TreeResult:
        try:
            self.store.delete(bucket, key, user=user)
        except errors.ObjectNotFound:
            return TreeResult()
        except errors.CasError as exc:
            return TreeResult(0, [(key, exc)])
        return TreeResult(1)


def _merge(a: TreeResult, b: TreeResult) -> TreeResult:
    return TreeResult(a.done + b.done, a.errors + b.errors)


def _is_marker(info: ObjectInfo) -> bool:
    return info.key.endswith("/") and info.size == 0
