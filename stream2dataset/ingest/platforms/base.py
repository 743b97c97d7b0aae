"""What every platform adapter provides (streamlink's plugin pattern: a URL matcher + a class).

An adapter turns a channel entry into either a live byte stream (MPEG-TS, for the segmenter) or
finished items (downloaded videos, thumbnail images). Only adapters know streamlink and yt-dlp.
"""

from __future__ import annotations

from abc import ABC
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, ClassVar, Iterator

from ...sources import Resolved

if TYPE_CHECKING:
    from ...config import Channel, RecordingSettings


@dataclass(frozen=True)
class VideoItem:
    """A finished video file the adapter fetched into a staging folder; the recorder commits it."""

    path: Path
    source_id: str  # the platform's id for the video (YouTube video id, file content hash)
    archive_id: str  # yt-dlp download-archive line ("youtube <id>"); recorded only after commit
    title: str | None = None
    published: datetime | None = None


@dataclass(frozen=True)
class ThumbnailItem:
    """One video's thumbnail image (encoded bytes as served: JPEG/WebP/PNG)."""

    source_id: str
    title: str | None
    image: bytes
    url: str
    published: datetime | None = None


class Adapter(ABC):
    """Base class. Subclasses set `platform`, `modes`, and implement `match` plus their modes."""

    platform: ClassVar[str]
    modes: ClassVar[tuple[str, ...]]  # the first is the default

    def __init__(self, channel: Channel, settings: RecordingSettings):
        self.channel = channel
        self.settings = settings

    @classmethod
    def match(cls, source: str) -> Resolved | None:
        """Resolve a source string (URL, name, @handle, path) or return None if not ours."""
        raise NotImplementedError

    def open_live(self, resume: int | None = None) -> BinaryIO | None:
        """Open the live stream as MPEG-TS bytes (`read(n)`, `close()`); None when offline.

        `resume`: the HLS media sequence of the last committed media, to start there if the
        playlist still has it. The stream may offer `sequence_at(offset)`, the media sequence a
        byte came from, and `finished`, true once the source closed its playlist. Raises
        StreamError for network or platform errors (the recorder backs off).
        """
        raise NotImplementedError(f"{self.platform} has no live mode")

    def fetch_videos(self, staging: Path, archive: set[str]) -> Iterator[VideoItem]:
        """Fetch videos whose archive id is not in `archive` into `staging`, one at a time.

        The recorder owns the archive: it appends an item's `archive_id` only after committing
        the video, so a crash between download and commit re-fetches instead of losing it.
        """
        raise NotImplementedError(f"{self.platform} has no videos mode")

    def fetch_thumbnails(self, seen: set[str]) -> Iterator[ThumbnailItem]:
        """Yield thumbnails of videos whose id is not in `seen` (thumbnails mode)."""
        raise NotImplementedError(f"{self.platform} has no thumbnails mode")

