"""Local video files or folders of them (videos mode): the offline way to feed the pipeline."""

from __future__ import annotations

import logging
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import ClassVar, Iterator

from ... import sources
from ...errors import StreamError
from ...media import content_id, find_videos
from .base import Adapter, VideoItem

log = logging.getLogger(__name__)


class FileAdapter(Adapter):
    platform: ClassVar[str] = "file"
    modes: ClassVar[tuple[str, ...]] = sources.MODES["file"]

    match = staticmethod(sources.match_file)

    def fetch_videos(self, staging: Path, archive: set[str]) -> Iterator[VideoItem]:
        root = Path(self.channel.source)
        if not root.exists():
            raise StreamError(f"{root}: no such file or folder")
        skipped: list[tuple[str, str]] = []
        files = find_videos(root, skipped)  # the walk `process PATH` makes
        for path, why in skipped:
            log.warning("%s: %s is not read: %s", self.channel.name, path, why)
        staging.mkdir(parents=True, exist_ok=True)
        done: set[str] = set()  # identical files under two names are fetched once
        for src in files:
            source_id = content_id(src)
            archive_id = f"file {source_id}"
            if archive_id in archive or source_id in done:
                continue
            done.add(source_id)
            dest = staging / f"{source_id}{src.suffix.lower()}"
            _link_or_copy(src, dest)
            mtime = datetime.fromtimestamp(src.stat().st_mtime, timezone.utc)
            yield VideoItem(path=dest, source_id=source_id, archive_id=archive_id, title=src.name, published=mtime)


def _link_or_copy(src: Path, dest: Path) -> None:
    """Hardlink (free, same filesystem); else copy under a temp name and rename (atomic)."""
    dest.unlink(missing_ok=True)  # left over from an attempt that crashed before commit
    try:
        os.link(src, dest)
        return
    except OSError:  # another filesystem (EXDEV), or links not allowed there
        pass
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
