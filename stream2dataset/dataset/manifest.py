"""The segments manifest: one small Parquet file per committed segment (DESIGN.md `segments` row).

A file per segment, named by its id, makes a commit atomic and a re-commit idempotent: writing the
same segment twice replaces one file, so the manifest never holds a duplicate row.

Compaction (compaction.py) merges them into one file per channel and day, and a closed day's into
one per month, `<channel>/_periods/<period>.<id>.parquet`; readers list both kinds (`manifest_files`). A period
file named `….open.parquet` may hold segments processing has not finished; the others hold only
settled ones (processed, or their raw file gone), so the search for pending work skips them.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..layout import DONE, MANIFEST, PERIODS, RAW, Storage, atomic_output
from .live import hidden, parquet_files, visible

_TS = pa.timestamp("ms", tz="UTC")

SEGMENT_SCHEMA = pa.schema([
    ("segment_id", pa.string()),
    ("channel", pa.string()),
    ("platform", pa.string()),
    ("source", pa.string()),          # canonical channel URL or path; never holds a secret
    ("source_id", pa.string()),       # platform id of a fetched video (null for live segments)
    ("title", pa.string()),
    ("path", pa.string()),            # relative to the storage root
    ("start", _TS),
    ("end", _TS),
    ("duration_s", pa.float64()),
    ("bytes", pa.int64()),
    ("video_codec", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("fps", pa.float32()),
    ("audio_codec", pa.string()),
    ("sha256", pa.string()),
    ("status", pa.string()),          # ok | salvaged (its whole packets kept, after a crash or damage)
    ("config_hash", pa.string()),
    ("recorded_at", _TS),
])


def _row_path(storage: Storage, channel: str, segment_id: str) -> Path:
    return storage.segments_manifest / channel / f"{segment_id}.parquet"


def write_segment(storage: Storage, row: dict) -> Path:
    """Commit one segment row (atomic; rewriting the same id replaces it). In an object store the
    segment's file goes up first: the row is the commit."""
    storage.push(storage.root / row["path"])
    table = pa.Table.from_pylist([row], schema=SEGMENT_SCHEMA)
    path = _row_path(storage, row["channel"], row["segment_id"])
    with atomic_output(path) as tmp:
        pq.write_table(table, tmp)
    return path


OPEN = ".open.parquet"  # a period file that may hold segments not yet processed


def manifest_files(root: Path, channel: str | None = None, pending_only: bool = False) -> list[Path]:
    """The manifest files readers see now: per-segment files, then period files (`pending_only`:
    only those that may hold unprocessed segments), less what a compaction in progress hides."""
    base = Path(root) / MANIFEST
    if channel:
        folders = [base / channel]
    else:
        try:
            folders = sorted(d for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
        except FileNotFoundError:
            folders = []
    files: list[Path] = []
    for folder in folders:
        files += parquet_files(folder)
        files += [p for p in parquet_files(folder / PERIODS) if not pending_only or p.name.endswith(OPEN)]
    return visible(files, hidden(root))


def period_of(path: Path) -> str | None:
    """`2026-11-03` or `2026-11` for a period file; None for a per-segment file."""
    return path.name.split(".", 1)[0] if path.parent.name == PERIODS else None


def has_segment(storage: Storage, channel: str, segment_id: str) -> bool:
    if _row_path(storage, channel, segment_id).exists():
        return True
    table = _read_listed(lambda: [p for p in manifest_files(storage.root, channel) if period_of(p)], ["segment_id"])
    return segment_id in set(table["segment_id"].to_pylist())


def _read(files: list[Path], columns: list[str] | None = None) -> pa.Table:
    import pyarrow.dataset as pads  # here: it imports pandas (~0.15 s), which `sql` never needs

    return pads.dataset([str(p) for p in files], schema=SEGMENT_SCHEMA, format="parquet").to_table(columns=columns)


LISTING_TRIES = 5


def _read_listed(listing, columns: list[str] | None = None) -> pa.Table:
    """The rows of the files `listing()` names now. A compaction may retire a listed file before
    it is read (its rows are already in the file that replaced it): then list again."""
    for _ in range(LISTING_TRIES - 1):
        try:
            return _read(listing(), columns)
        except FileNotFoundError:
            continue
    return _read(listing(), columns)


def read_segments(storage: Storage, channel: str | None = None) -> pa.Table:
    """All committed segment rows (of one channel), sorted by channel and start."""
    base = storage.segments_manifest / channel if channel else storage.segments_manifest
    storage.pull(base.relative_to(storage.root).as_posix(), mirror=True)
    table = _read_listed(lambda: manifest_files(storage.root, channel))
    return table.sort_by([("channel", "ascending"), ("start", "ascending")])


def read_segment_files(paths: list[Path]) -> list[dict]:
    """The rows of these manifest files (the service reads only the files it has not seen)."""
    if not paths:
        return []
    import pyarrow.dataset as pads

    try:
        return pads.dataset([str(p) for p in paths], schema=SEGMENT_SCHEMA, format="parquet").to_table().to_pylist()
    except FileNotFoundError:  # one went meanwhile (compacted into another file, which is read then)
        return [row for p in paths if p.exists() for row in read_segment_files([p])]


def segment_row(*, segment_id: str, channel: str, platform: str, source: str, path: Path, storage: Storage,
                start: datetime, end: datetime, info, nbytes: int, sha256: str, status: str,
                config_hash: str, source_id: str | None = None, title: str | None = None) -> dict:
    """Build a manifest row from a verified file's MediaInfo."""
    return {
        "segment_id": segment_id, "channel": channel, "platform": platform, "source": source,
        "source_id": source_id, "title": title, "path": str(Path(path).resolve().relative_to(storage.root)),
        "start": start, "end": end, "duration_s": info.duration_s, "bytes": nbytes,
        "video_codec": info.video_codec, "width": info.width, "height": info.height, "fps": info.fps,
        "audio_codec": info.audio_codec, "sha256": sha256, "status": status, "config_hash": config_hash,
        "recorded_at": datetime.now(tz=start.tzinfo),
    }


def pending_segments(storage: Storage) -> list[dict]:
    """Committed segments that processing has not finished (whose file is still there).

    `key` is the file's place under the root: each processing actor finds it in its own node's
    copy of an object-store root. Rows carry their manifest's duration and width: planning needs
    no file then. Period files of settled segments are not read (see the module's note)."""
    storage.pull(DONE)
    storage.pull(storage.segments_manifest.relative_to(storage.root).as_posix(), mirror=True)
    raw = storage.files(RAW) if storage.remote else None  # one listing, not a request per segment
    table = _read_listed(lambda: manifest_files(storage.root, pending_only=True))
    out, seen = [], set()
    table = table.sort_by([("channel", "ascending"), ("start", "ascending")])
    for row in table.to_pylist():
        if row["segment_id"] in seen:  # a segment rewritten after its period was compacted
            continue
        seen.add(row["segment_id"])
        path = storage.root / row["path"]
        there = row["path"] in raw if raw is not None else path.exists()
        if there and not storage.done_marker(row["segment_id"]).exists():
            out.append({"segment_id": row["segment_id"], "channel": row["channel"], "platform": row["platform"],
                        "path": str(path), "key": row["path"], "start_ts": row["start"].timestamp(),
                        "source_id": row["source_id"] or "", "duration_s": row["duration_s"], "width": row["width"]})
    return out
