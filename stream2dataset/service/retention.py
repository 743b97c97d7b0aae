"""Retention: delete raw segments some time after processing finished with them.

Processing writes `dataset/_done/<segment-id>` when a segment's rows are committed; only then may
its raw file go. The manifest row stays (with `path` no longer on disk): it is the record that the
segment existed and what it was.
"""

from __future__ import annotations

import time

from ..dataset.manifest import read_segments
from ..layout import DONE, RAW, Storage


def prune_raw(storage: Storage, keep_hours: float, now: float | None = None) -> list[str]:
    """Delete raw files of processed segments whose done marker is older than `keep_hours`."""
    now = time.time() if now is None else now
    removed = []
    storage.pull(DONE)
    present = storage.files(RAW)
    for row in read_segments(storage).select(["segment_id", "path"]).to_pylist():
        marker = storage.done_marker(row["segment_id"])
        if row["path"] in present and marker.exists() and now - marker.stat().st_mtime >= keep_hours * 3600:
            storage.delete(storage.root / row["path"])
            removed.append(row["segment_id"])
    return removed
