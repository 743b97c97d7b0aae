"""YouTube channels, videos and playlists: live through streamlink, videos/thumbnails through yt-dlp."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, ClassVar, Iterator

from ...errors import ConfigError
from ... import sources
from . import _ytdlp
from ._streamlink import new_session, open_best
from .base import Adapter, ThumbnailItem, VideoItem

class YouTubeAdapter(Adapter):
    platform: ClassVar[str] = "youtube"
    modes: ClassVar[tuple[str, ...]] = sources.MODES["youtube"]

    match = staticmethod(sources.match_youtube)

    def _url(self, live: bool) -> str:
        p = sources.parse_youtube(self.channel.source)
        assert p is not None, "the source was matched when the config was validated"
        if p.kind != "channel":
            if live and p.kind == "playlist":
                raise ConfigError(f"channel {self.channel.name!r}: a playlist has no live stream; use mode: videos")
            return self.channel.source
        if live:
            return f"{sources.WWW}/{p.ident}/live"
        # A bare channel is its uploads tab; /streams is the past live streams.
        return f"{sources.WWW}/{p.ident}/{'streams' if p.tab == 'streams' else 'videos'}"

    def open_live(self, resume: int | None = None) -> BinaryIO | None:

        return open_best(new_session(self.settings), self._url(live=True), self.settings.quality, resume=resume)

    def fetch_videos(self, staging: Path, archive: set[str]) -> Iterator[VideoItem]:
        return _ytdlp.fetch_videos(self._url(live=False), staging, archive, self.settings.video_format)

    def fetch_thumbnails(self, seen: set[str]) -> Iterator[ThumbnailItem]:
        return _ytdlp.fetch_thumbnails(self._url(live=False), seen)

