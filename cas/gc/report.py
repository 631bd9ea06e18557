"""What GC and verify runs report, and how it reads: the reports as data, and their one-line summaries.

``GcReport`` (what ``collect`` did, or in a dry run would do), ``VerifyReport`` with its
``Finding``s (what ``verify`` found), ``to_dict`` for ``--json`` and ``/metrics``, and the
human forms of sizes and durations the summaries use. No logic of the runs lives here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class GcReport:
    """What one run did (or, in a dry run, would do). Sizes are stored (encoded) bytes."""

    delete: bool
    min_age: float
    snapshot_seq: int = 0
    marked_manifests: int = 0
    marked_blocks: int = 0
    mark_memory: int = 0
    blocks_seen: int = 0
    condemned: int = 0
    condemned_bytes: int = 0
    resurrected: int = 0
    deleted: int = 0
    deleted_bytes: int = 0
    pending: int = 0
    pending_bytes: int = 0
    orphans: int = 0
    orphan_bytes: int = 0
    orphans_kept: int = 0
    temp_files: int = 0
    temp_bytes: int = 0
    manifests_deleted: int = 0
    uploads_expired: int = 0
    dead_writers: int = 0
    abandoned_packs: int = 0
    dead_pins: int = 0
    refs_trimmed: int = 0
    packs_retired: int = 0
    packs_deleted: int = 0
    pack_bytes_freed: int = 0
    packs_repacked: int = 0
    repacked_entries: int = 0
    repacked_bytes: int = 0
    repack_skipped: int = 0
    packs_unreadable: int = 0
    unknown_packs: int = 0
    pack_uploads_aborted: int = 0
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def freed_blocks(self) -> int:
        return self.deleted + self.orphans

    @property
    def freed_bytes(self) -> int:
        return self.deleted_bytes + self.orphan_bytes + self.temp_bytes

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dry_run"] = not self.delete
        d["freed_blocks"] = self.freed_blocks
        d["freed_bytes"] = self.freed_bytes
        return d

    def summary(self) -> str:
        """One line that leads with both phases: what is condemned now and what is deleted now."""
        would = "" if self.delete else "would "
        cond, dele, free = ("condemned", "deleted", "freed") if self.delete else ("condemn", "delete", "free")
        return (f"gc{'' if self.delete else ' (dry run)'}: {would}{cond} {self.condemned} blocks "
                f"({human_size(self.condemned_bytes)}), {would}{dele} {self.deleted} blocks "
                f"({human_size(self.deleted_bytes)}); {self.pending} condemned blocks "
                f"({human_size(self.pending_bytes)}) "
                f"{'wait' if self.delete else 'would wait'} out the {human_duration(self.min_age)} grace; "
                f"{would}{free} {self.freed_blocks} blocks "
                f"({human_size(self.freed_bytes)}: {self.deleted} unreferenced, "
                f"{self.orphans} orphans, {self.temp_files} temp files); "
                f"{self.manifests_deleted} manifests, {self.uploads_expired} expired uploads, "
                f"{self.dead_writers} dead writers; packs: {would}repack {self.packs_repacked} "
                f"({human_size(self.repacked_bytes)} live copied), {would}delete {self.packs_deleted} "
                f"({human_size(self.pack_bytes_freed)}); {self.marked_blocks} blocks in use; {self.seconds:.1f}s"
                + (" (interrupted)" if self.interrupted else ""))


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def human_duration(seconds: float) -> str:
    if seconds and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


@dataclass
class Finding:
    """One thing wrong. ``block`` is a full hex id; ``objects`` the names (bucket/key) it affects."""

    kind: str
    block: str = ""
    objects: tuple[str, ...] = ()
    detail: str = ""
    repaired: bool = False
    pack: str = ""  # the pack (hex id) a pack-level finding, or a block's location, is about

    def to_dict(self) -> dict:
        return asdict(self) | {"objects": list(self.objects)}

    def __str__(self) -> str:
        what = f" block {self.block[:12]}" if self.block else ""
        if self.pack and not self.block:
            what = f" pack {self.pack}"
        names = ""
        if self.objects:
            shown = ", ".join(self.objects[:5])
            names = f" used by {shown}" + (f" and {len(self.objects) - 5} more" if len(self.objects) > 5 else "")
        fixed = " [repaired]" if self.repaired else ""
        return f"{self.kind}:{what}{names}: {self.detail}{fixed}"


@dataclass
class VerifyReport:
    deep: bool
    findings: list[Finding] = field(default_factory=list)
    objects: int = 0
    parts: int = 0
    manifests: int = 0
    manifests_unreferenced: int = 0
    blocks: int = 0
    blocks_referenced: int = 0
    blocks_unreferenced: int = 0
    blocks_condemned: int = 0
    blocks_deleting: int = 0
    blocks_damaged: int = 0
    marked_damaged: int = 0
    orphans: int = 0
    temp_files: int = 0
    bytes_read: int = 0
    # packs (stores over packs; DESIGN §8): rows by state, footers read, locations seen
    packs: int = 0
    packs_checked: int = 0
    packs_open: int = 0
    packs_abandoned: int = 0
    packs_retired: int = 0
    pack_bytes: int = 0
    pack_bytes_read: int = 0
    locations: int = 0
    manifests_not_in_packs: int = 0
    damaged_objects: list[str] = field(default_factory=list)
    repaired: int = 0
    mark_memory: int = 0
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict:
        d = asdict(self)
        d["findings"] = [f.to_dict() for f in self.findings]
        d["clean"] = self.clean
        return d

    def summary(self) -> str:
        state = "clean" if self.clean else f"{len(self.findings)} findings"
        if self.repaired:
            state += f", {self.repaired} repaired"
        if self.damaged_objects:
            state += f", {len(self.damaged_objects)} damaged objects"
        return (f"verify{' --deep' if self.deep else ''}: {state}; {self.objects} objects, {self.parts} upload parts, "
                f"{self.manifests} manifests, {self.blocks} blocks ({self.blocks_unreferenced} unreferenced, "
                f"{self.blocks_condemned} condemned, {self.blocks_damaged} damaged), {self.orphans} orphans"
                + (f", {self.packs} packs ({human_size(self.pack_bytes)}; {self.packs_open} open, "
                   f"{self.packs_abandoned} abandoned, {self.packs_retired} retired)" if self.packs else "")
                + (f", {self.bytes_read} bytes re-hashed" if self.deep else "") + f"; {self.seconds:.1f}s")
