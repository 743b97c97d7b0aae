"""Any HLS playlist over http(s): `hls://URL` or a plain http(s) URL (the catch-all adapter)."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import BinaryIO, ClassVar
from urllib.parse import urlsplit

from .base import Adapter, Resolved, slug

# Playlist and folder names that say nothing about the channel ("/demo/live.m3u8" is "demo").
_GENERIC = frozenset({
    "live", "index", "playlist", "master", "main", "stream", "streams", "chunklist", "media",
    "hls", "video", "manifest", "prog_index", "mono", "out", "tracks-v1a1",
})
# Hosts with adapters of their own: a URL of theirs that their matcher refused (a Twitch VOD,
# a YouTube page we don't know) is a mistake, not an HLS playlist. `hls://` still forces it.
OTHER_PLATFORM_HOSTS = re.compile(r"(^|\.)(twitch\.tv|youtube\.com|youtu\.be)$", re.I)


class HLSAdapter(Adapter):
    platform: ClassVar[str] = "hls"
    modes: ClassVar[tuple[str, ...]] = ("live",)

    @classmethod
    def match(cls, source: str) -> Resolved | None:
        forced = source.lower().startswith("hls://")
        url = source[len("hls://"):] if forced else source
        if forced and not re.match(r"^https?://", url, re.I):
            url = "https://" + url  # streamlink's own default scheme for hls://host/path
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            return None
        if OTHER_PLATFORM_HOSTS.search(parts.hostname):
            if not forced:
                return None
            url = "hls://" + url  # keep the prefix, so the canonical source matches here again
        return Resolved(source=url, name=_name(parts.path, parts.hostname), mode="live")

    def open_live(self, resume: int | None = None) -> BinaryIO | None:
        from ._streamlink import new_session, open_best

        # The hls:// prefix makes streamlink use its HLS plugin whatever the URL looks like.
        url = self.channel.source
        url = url if url.startswith("hls://") else f"hls://{url}"
        # A playlist that is not there (yet) is how an HLS origin says "offline" (nginx-rtmp, the
        # demo server); other HTTP errors are errors.
        return open_best(new_session(self.settings), url, self.settings.quality, offline_status=(404, 410),
                         resume=resume)


def _name(path: str, host: str) -> str:
    for part in reversed([p for p in path.split("/") if p]):
        stem = PurePosixPath(part).stem if "." in part else part
        if stem and stem.lower() not in _GENERIC:
            return slug(stem)
    return slug(host)
