"""Local video files or folders of them (videos mode): the offline way to feed the pipeline."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import ClassVar, Iterator

from ...errors import StreamError
from .base import Adapter, Resolved, VideoItem, slug
from .hls import OTHER_PLATFORM_HOSTS

VIDEO_EXTENSIONS = frozenset({".mp4", ".mkv", ".webm", ".mov", ".ts", ".m4v", ".avi", ".flv"})
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_CHUNK = 1 << 20


class FileAdapter(Adapter):
    platform: ClassVar[str] = "file"
    modes: ClassVar[tuple[str, ...]] = ("videos",)

    @classmethod
    def match(cls, source: str) -> Resolved | None:
        parts = Path(source).parts
        if _SCHEME_RE.match(source) or ".." in parts:
            return None
        if parts and OTHER_PLATFORM_HOSTS.search(parts[0]):  # "twitch.tv/videos/1": a URL, not a folder
            return None
        looks_like_path = (source.startswith(("/", "./", "~")) or "/" in source
                           or Path(source).suffix.lower() in VIDEO_EXTENSIONS)
        if not looks_like_path:
            return None
        path = Path(source).expanduser().resolve()
        is_file = path.is_file() or path.suffix.lower() in VIDEO_EXTENSIONS
        return Resolved(source=str(path), name=slug(path.stem if is_file else path.name), mode="videos")

    def fetch_videos(self, staging: Path, archive: set[str]) -> Iterator[VideoItem]:
        root = Path(self.channel.source)
        if not root.exists():
            raise StreamError(f"{root}: no such file or folder")
        files = [root] if root.is_file() else sorted(
            p for p in root.rglob("*")
            if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file() and not p.name.startswith("."))
        staging.mkdir(parents=True, exist_ok=True)
        done: set[str] = set()  # identical files under two names are fetched once
        for src in files:
            source_id = file_id(src)
            archive_id = f"file {source_id}"
            if archive_id in archive or source_id in done:
                continue
            done.add(source_id)
            dest = staging / f"{source_id}{src.suffix.lower()}"
            _link_or_copy(src, dest)
            mtime = datetime.fromtimestamp(src.stat().st_mtime, timezone.utc)
            yield VideoItem(path=dest, source_id=source_id, archive_id=archive_id, title=src.name, published=mtime)


def file_id(path: Path) -> str:
    """First 16 hex digits of the file's sha256: the same bytes get the same id under any name."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()[:16]


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
