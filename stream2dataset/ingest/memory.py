"""What a channel's recorder has committed, remembered across reconnects and restarts.

A live source replays media a recorder already has: streamlink starts each connection three
segments behind the live edge, and a stalled playlist serves the same segments again and again.
So every committed video keyframe leaves a mark (its PTS and a hash of its bytes, plus the HLS
media sequence it came in when known), and the segmenter skips a GOP whose keyframe is marked.
The media sequence keeps apart identical footage that really was broadcast twice (a looped
rerun: new sequence numbers) from a replay (the same ones).

The memory lives in `manifests/committed/<channel>.json`, written atomically after each commit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..names import CHANNEL_NAME
from ..layout import Storage, atomic_write_bytes

MAX_MARKS = 4096  # GOPs remembered (~2 h of 2-s GOPs): replays come from the last minutes
MAX_HASHES = 512  # segment sha256s remembered


@dataclass(frozen=True)
class Mark:
    """One video keyframe: `key` is "<pts>:<hash of its bytes>"; `sequence` its HLS segment."""

    key: str
    sequence: int | None = None


def memory_path(storage: Storage, channel: str) -> Path:
    if not CHANNEL_NAME.match(channel):
        raise ValueError(f"channel name {channel!r} is not folder-safe")
    return storage.committed_path(channel)


class CommitMemory:
    """Marks and hashes of the committed media of one channel; `save` after each change."""

    def __init__(self, path: Path | None = None):
        self.path = path  # None: kept in memory only
        self.marks: dict[str, int | None] = {}  # key -> media sequence (None: unknown); insertion-ordered
        self.hashes: dict[str, int | None] = {}  # segment sha256 -> media sequence of its end
        self.media_sequence: int | None = None  # of the newest committed media, when known
        self.pts: int | None = None  # of the newest committed keyframe

    @classmethod
    def load(cls, storage: Storage, channel: str) -> CommitMemory:
        path = memory_path(storage, channel)
        storage.pull(path.relative_to(storage.root).as_posix())  # a recorder that moved node
        memory = cls(path)
        try:
            data = json.loads(path.read_text())
            memory.marks = {k: s for k, s in data["marks"]}
            memory.hashes = {h: s for h, s in data["hashes"]}
            memory.media_sequence, memory.pts = data["media_sequence"], data["pts"]
        except (OSError, ValueError, TypeError, KeyError):  # none yet, or unreadable: start empty
            return cls(path)  # (the memory only saves recording things again)
        return memory

    def seen(self, mark: Mark) -> bool:
        """Whether this keyframe is committed already: the same PTS and bytes, and the same media
        sequence unless either side does not know it (a segment salvaged after a crash)."""
        return _same(self.marks, mark.key, mark.sequence)

    def has_hash(self, sha256: str, media_sequence: int | None) -> bool:
        """Whether a file of these very bytes is committed, by the same rule as `seen`."""
        return _same(self.hashes, sha256, media_sequence)

    def add(self, marks: Iterable[Mark], sha256: str | None, media_sequence: int | None = None) -> None:
        if media_sequence is not None:
            # Fresh numbered media: a connection replays what it resumes from before anything new,
            # so a salvaged keyframe still unnumbered was never replayed and never will be. Kept, it
            # would match any later broadcast of the same bytes (a looped clip) under any number.
            self.marks = {k: s for k, s in self.marks.items() if s is not None}
            self.hashes = {h: s for h, s in self.hashes.items() if s is not None}
        for m in marks:
            self.marks.pop(m.key, None)  # re-insert: the newest stay when trimming
            self.marks[m.key] = m.sequence
            self.pts = int(m.key.split(":", 1)[0])
        if sha256:
            self.hashes.pop(sha256, None)
            self.hashes[sha256] = media_sequence
        if media_sequence is not None:
            self.media_sequence = media_sequence
        for table, cap in ((self.marks, MAX_MARKS), (self.hashes, MAX_HASHES)):
            for key in list(table)[: max(0, len(table) - cap)]:
                del table[key]
        self.save()

    def save(self) -> None:
        if self.path is None:
            return
        data = {"version": 1, "media_sequence": self.media_sequence, "pts": self.pts,
                "marks": [[k, s] for k, s in self.marks.items()], "hashes": [[h, s] for h, s in self.hashes.items()]}
        atomic_write_bytes(self.path, json.dumps(data, separators=(",", ":")).encode())


def _same(table: dict[str, int | None], key: str, sequence: int | None) -> bool:
    if key not in table:
        return False
    known = table[key]
    if known is None and sequence is not None:
        # Salvaged after a crash, then replayed by the restarted recorder: from now on it has
        # this number, so the same footage broadcast again later (a loop) is not taken for it.
        table[key] = sequence
        return True
    return known is None or sequence is None or known == sequence
