"""YouTube channels, videos and playlists: live through streamlink, videos/thumbnails through yt-dlp."""

from __future__ import annotations

import re
from pathlib import Path
from typing import BinaryIO, ClassVar, Iterator, NamedTuple
from urllib.parse import parse_qs, urlsplit

from ...errors import ConfigError
from .base import Adapter, Resolved, ThumbnailItem, VideoItem, slug

_HOST_RE = re.compile(r"^(?:www\.|m\.|music\.)?youtube\.com$")
_VIDEO_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
_HANDLE = re.compile(r"^@[A-Za-z0-9_.-]{3,30}$")
_CHANNEL_ID = re.compile(r"^UC[A-Za-z0-9_-]{22}$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
_PLAYLIST_ID = re.compile(r"^[A-Za-z0-9_-]{2,64}$")
_TABS = ("live", "videos", "streams")  # channel tabs we keep; "featured" etc. mean the channel
WWW = "https://www.youtube.com"


class _Parsed(NamedTuple):
    kind: str  # "channel" | "video" | "live" (a /live/ID video) | "playlist"
    ident: str  # "@handle", "channel/UC..", "c/name", "user/name", a video id, a playlist id
    tab: str = ""


class YouTubeAdapter(Adapter):
    platform: ClassVar[str] = "youtube"
    modes: ClassVar[tuple[str, ...]] = ("videos", "live", "thumbnails")

    @classmethod
    def match(cls, source: str) -> Resolved | None:
        p = _parse(source)
        if p is None:
            return None
        if p.kind == "channel":
            url = f"{WWW}/{p.ident}" + (f"/{p.tab}" if p.tab else "")
            name = p.ident.split("/")[-1].lstrip("@")
        elif p.kind == "playlist":
            url, name = f"{WWW}/playlist?list={p.ident}", p.ident
        elif p.kind == "live":
            url, name = f"{WWW}/live/{p.ident}", p.ident
        else:
            url, name = f"{WWW}/watch?v={p.ident}", p.ident
        mode = "live" if p.tab == "live" or p.kind == "live" else "videos"
        return Resolved(source=url, name=slug(name), mode=mode)

    def _url(self, live: bool) -> str:
        p = _parse(self.channel.source)
        assert p is not None, "the source was matched when the config was validated"
        if p.kind != "channel":
            if live and p.kind == "playlist":
                raise ConfigError(f"channel {self.channel.name!r}: a playlist has no live stream; use mode: videos")
            return self.channel.source
        if live:
            return f"{WWW}/{p.ident}/live"
        # A bare channel is its uploads tab; /streams is the past live streams.
        return f"{WWW}/{p.ident}/{'streams' if p.tab == 'streams' else 'videos'}"

    def open_live(self, resume: int | None = None) -> BinaryIO | None:
        from ._streamlink import new_session, open_best

        return open_best(new_session(self.settings), self._url(live=True), self.settings.quality, resume=resume)

    def fetch_videos(self, staging: Path, archive: set[str]) -> Iterator[VideoItem]:
        from . import _ytdlp

        return _ytdlp.fetch_videos(self._url(live=False), staging, archive, self.settings.video_format)

    def fetch_thumbnails(self, seen: set[str]) -> Iterator[ThumbnailItem]:
        from . import _ytdlp

        return _ytdlp.fetch_thumbnails(self._url(live=False), seen)


def _parse(source: str) -> _Parsed | None:
    if _HANDLE.match(source):
        return _Parsed("channel", source)
    url = source if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", source) else f"https://{source}"
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme.lower() not in ("http", "https"):
        return None
    segs = [s for s in parts.path.split("/") if s]
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    if host == "youtu.be":
        return _Parsed("video", segs[0]) if len(segs) == 1 and _VIDEO_ID.match(segs[0]) else None
    if not _HOST_RE.match(host) or not segs:
        return None
    if segs == ["watch"]:  # a list= next to v= is the player's queue: the video is what was meant
        return _Parsed("video", query["v"]) if _VIDEO_ID.match(query.get("v", "")) else None
    if segs == ["playlist"]:
        return _Parsed("playlist", query["list"]) if _PLAYLIST_ID.match(query.get("list", "")) else None
    if len(segs) == 2 and segs[0] in ("live", "shorts") and _VIDEO_ID.match(segs[1]):
        return _Parsed("live" if segs[0] == "live" else "video", segs[1])
    if _HANDLE.match(segs[0]):
        ident, rest = segs[0], segs[1:]
    elif len(segs) >= 2 and (segs[0] == "channel" and _CHANNEL_ID.match(segs[1])
                             or segs[0] in ("c", "user") and _NAME.match(segs[1])):
        ident, rest = f"{segs[0]}/{segs[1]}", segs[2:]
    else:
        return None
    if len(rest) > 1 or (rest and rest[0] not in (*_TABS, "featured")):
        return None
    return _Parsed("channel", ident, rest[0] if rest and rest[0] in _TABS else "")
