"""Which platform a channel's source is, without loading any adapter (streamlink's split).

A source string (URL, login, @handle, path) resolves here to a platform, a canonical source, a
default name and mode: what config validation needs. The adapters (`ingest/platforms/`, which wrap
streamlink and yt-dlp) are loaded only when a recorder opens the channel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, NamedTuple
from urllib.parse import parse_qs, urlsplit

from .media import VIDEO_EXTS
from .names import slug

__all__ = ["MODES", "PLATFORMS", "Resolved", "match_source", "resolve_source"]


@dataclass(frozen=True)
class Resolved:
    """What a matcher makes of a source: the canonical source and a default name and mode."""

    source: str
    name: str
    mode: str


# Twitch: live channels ---------------------------------------------------------------------------

_LOGIN = r"[A-Za-z0-9_]{3,25}"
_BARE_RE = re.compile(rf"^(?P<login>{_LOGIN})$")
# A channel page only: twitch.tv/<login>, optional trailing slash or query. Longer paths
# (/videos/123, /<login>/clip/x, /<login>/videos) are not channels and don't match.
_URL_RE = re.compile(rf"^(?:https?://)?(?:www\.|m\.)?twitch\.tv/(?P<login>{_LOGIN})/?(?:\?[^#]*)?$", re.I)
# First path components that are Twitch pages, not logins.
_RESERVED = frozenset({
    "directory", "videos", "settings", "search", "downloads", "jobs", "store", "subscriptions",
    "inventory", "wallet", "drops", "prime", "turbo", "login", "signup", "logout", "following",
    "friends", "messages", "payments", "clips", "moderator", "popout", "embed", "broadcast",
})



def match_twitch(source: str) -> Resolved | None:
    m = _BARE_RE.match(source) or _URL_RE.match(source)
    if not m or m["login"].lower() in _RESERVED:
        return None
    login = m["login"].lower()
    return Resolved(source=f"https://www.twitch.tv/{login}", name=slug(login), mode="live")


# YouTube: channels, videos, playlists ------------------------------------------------------------

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



class YouTubeSource(NamedTuple):
    kind: str  # "channel" | "video" | "live" (a /live/ID video) | "playlist"
    ident: str  # "@handle", "channel/UC..", "c/name", "user/name", a video id, a playlist id
    tab: str = ""


def match_youtube(source: str) -> Resolved | None:
    p = parse_youtube(source)
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


def parse_youtube(source: str) -> YouTubeSource | None:
    if _HANDLE.match(source):
        return YouTubeSource("channel", source)
    url = source if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", source) else f"https://{source}"
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme.lower() not in ("http", "https"):
        return None
    segs = [s for s in parts.path.split("/") if s]
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    if host == "youtu.be":
        return YouTubeSource("video", segs[0]) if len(segs) == 1 and _VIDEO_ID.match(segs[0]) else None
    if not _HOST_RE.match(host) or not segs:
        return None
    if segs == ["watch"]:  # a list= next to v= is the player's queue: the video is what was meant
        return YouTubeSource("video", query["v"]) if _VIDEO_ID.match(query.get("v", "")) else None
    if segs == ["playlist"]:
        return YouTubeSource("playlist", query["list"]) if _PLAYLIST_ID.match(query.get("list", "")) else None
    if len(segs) == 2 and segs[0] in ("live", "shorts") and _VIDEO_ID.match(segs[1]):
        return YouTubeSource("live" if segs[0] == "live" else "video", segs[1])
    if _HANDLE.match(segs[0]):
        ident, rest = segs[0], segs[1:]
    elif len(segs) >= 2 and (segs[0] == "channel" and _CHANNEL_ID.match(segs[1])
                             or segs[0] in ("c", "user") and _NAME.match(segs[1])):
        ident, rest = f"{segs[0]}/{segs[1]}", segs[2:]
    else:
        return None
    if len(rest) > 1 or (rest and rest[0] not in (*_TABS, "featured")):
        return None
    return YouTubeSource("channel", ident, rest[0] if rest and rest[0] in _TABS else "")


# Local files and folders ---------------------------------------------------------------------------

_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def match_file(source: str) -> Resolved | None:
    parts = Path(source).parts
    if _SCHEME_RE.match(source) or ".." in parts:
        return None
    if parts and OTHER_PLATFORM_HOSTS.search(parts[0]):  # "twitch.tv/videos/1": a URL, not a folder
        return None
    looks_like_path = (source.startswith(("/", "./", "~")) or "/" in source
                       or Path(source).suffix.lower() in VIDEO_EXTS)
    if not looks_like_path:
        return None
    path = Path(source).expanduser().resolve()
    is_file = path.is_file() or path.suffix.lower() in VIDEO_EXTS
    return Resolved(source=str(path), name=slug(path.stem if is_file else path.name), mode="videos")


# Any HLS playlist over http(s): the catch-all --------------------------------------------------------

# Playlist and folder names that say nothing about the channel ("/demo/live.m3u8" is "demo").
_GENERIC = frozenset({
    "live", "index", "playlist", "master", "main", "stream", "streams", "chunklist", "media",
    "hls", "video", "manifest", "prog_index", "mono", "out", "tracks-v1a1",
})
# Hosts with adapters of their own: a URL of theirs that their matcher refused (a Twitch VOD,
# a YouTube page we don't know) is a mistake, not an HLS playlist. `hls://` still forces it.
OTHER_PLATFORM_HOSTS = re.compile(r"(^|\.)(twitch\.tv|youtube\.com|youtu\.be)$", re.I)



def match_hls(source: str) -> Resolved | None:
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


def _name(path: str, host: str) -> str:
    for part in reversed([p for p in path.split("/") if p]):
        stem = PurePosixPath(part).stem if "." in part else part
        if stem and stem.lower() not in _GENERIC:
            return slug(stem)
    return slug(host)


# The registry ------------------------------------------------------------------------------------

# Order matters when no platform is given: specific platforms before the catch-all HLS matcher.
PLATFORMS: dict[str, Callable[[str], Resolved | None]] = {
    "twitch": match_twitch, "youtube": match_youtube, "file": match_file, "hls": match_hls,
}
MODES: dict[str, tuple[str, ...]] = {  # the first is the default
    "twitch": ("live",), "youtube": ("videos", "live", "thumbnails"), "file": ("videos",), "hls": ("live",),
}


def match_source(platform: str, source: str) -> Resolved | None:
    return PLATFORMS[platform](source)


def resolve_source(source: str, platform: str | None = None, name: str | None = None,
                   mode: str | None = None) -> dict[str, str]:
    """Fill in platform, canonical source, name and mode; ValueError says what to fix."""
    if platform:
        resolved = PLATFORMS[platform](source)
        if resolved is None:
            raise ValueError(f"source {source!r} is not a {platform} channel or URL")
    else:
        for platform, match in PLATFORMS.items():
            if (resolved := match(source)) is not None:
                break
        else:
            raise ValueError(
                f"no platform matches source {source!r}; use a Twitch or YouTube URL, an "
                "http(s) .m3u8 URL, or a local path, or set `platform:`")
    mode = mode or resolved.mode
    if mode not in MODES[platform]:
        raise ValueError(f"mode {mode!r} is not supported by {platform}; allowed: {', '.join(MODES[platform])}")
    return {"platform": platform, "source": resolved.source, "name": name or resolved.name, "mode": mode}
