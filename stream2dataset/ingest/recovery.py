"""Crash recovery: turn what a killed recorder left in its channel folder into data or quarantine.

Two things can be left: a `.part` cut off mid-write (trimmed to its last whole packet and committed
as `salvaged`, or quarantined if nothing in it decodes), and a finished file that was renamed into
place but killed before its manifest row was written (verified and committed). Re-running finds
nothing more to do, so recovery can run at every start.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from ..dataset import manifest
from ..errors import CorruptMedia
from ..media import VIDEO_EXTS
from ..layout import PART_SUFFIX, Storage
from .segments import MediaInfo, probe, salvage


# commit(path, start, end, info, status) writes the segment's manifest row.
Commit = Callable[[Path, datetime, datetime, MediaInfo, str], None]


def stamp_time(stem: str) -> datetime | None:
    """The start time encoded in a live segment's name (`20261123T103512.123Z`)."""
    try:
        return datetime.strptime(stem, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def recover_channel(storage: Storage, platform: str, channel: str, commit: Commit) -> int:
    """Fix a channel folder after a crash; returns how many files were committed or quarantined."""
    base = storage.channel_dir(platform, channel)
    if not base.exists():
        return 0
    fixed = 0
    for part in sorted(base.glob(f"*/*{PART_SUFFIX}")):
        final = part.with_name(part.name.removesuffix(PART_SUFFIX))
        info = salvage(part, final)
        if info is None:
            storage.quarantine(part, "unfinished segment with nothing decodable (recorder killed)")
        else:
            part.unlink(missing_ok=True)
            start = stamp_time(final.stem) or datetime.now(timezone.utc)
            commit(final, start, start + timedelta(seconds=info.duration_s), info, "salvaged")
        fixed += 1
    for path in sorted(base.glob("*/*")):
        if path.suffix not in VIDEO_EXTS or path.name.startswith("."):
            continue
        if manifest.has_segment(storage, channel, storage.segment_id(platform, channel, path.stem)):
            continue
        try:
            info = probe(path)
        except CorruptMedia as err:
            storage.quarantine(path, str(err))
        else:
            start = stamp_time(path.stem) or datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
            commit(path, start, start + timedelta(seconds=info.duration_s), info, "ok")
        fixed += 1
    return fixed
