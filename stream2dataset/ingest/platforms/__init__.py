"""Platform adapters and the registry that matches a channel's source to one of them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Adapter, Resolved, ThumbnailItem, VideoItem, slug
from .file import FileAdapter
from .hls import HLSAdapter
from .twitch import TwitchAdapter
from .youtube import YouTubeAdapter

if TYPE_CHECKING:
    from ...config import Channel, RecordingSettings

__all__ = [
    "ADAPTERS", "Adapter", "FileAdapter", "HLSAdapter", "Resolved", "ThumbnailItem", "TwitchAdapter",
    "VideoItem", "YouTubeAdapter", "adapter_for", "resolve_channel", "slug",
]

# Order matters when no platform is given: specific platforms before the catch-all HLS adapter.
ADAPTERS: dict[str, type[Adapter]] = {
    "twitch": TwitchAdapter,
    "youtube": YouTubeAdapter,
    "file": FileAdapter,
    "hls": HLSAdapter,
}


def resolve_channel(channel: Channel) -> dict[str, Any]:
    """Fill in platform, canonical source, name and mode; ValueError says what to fix."""
    if channel.platform:
        resolved = ADAPTERS[channel.platform].match(channel.source)
        if resolved is None:
            raise ValueError(f"source {channel.source!r} is not a {channel.platform} channel or URL")
        platform = channel.platform
    else:
        for platform, cls in ADAPTERS.items():
            if (resolved := cls.match(channel.source)) is not None:
                break
        else:
            raise ValueError(
                f"no platform matches source {channel.source!r}; use a Twitch or YouTube URL, an "
                "http(s) .m3u8 URL, or a local path, or set `platform:`")
    modes = ADAPTERS[platform].modes
    mode = channel.mode or resolved.mode
    if mode not in modes:
        raise ValueError(f"mode {mode!r} is not supported by {platform}; allowed: {', '.join(modes)}")
    return {"platform": platform, "source": resolved.source, "name": channel.name or resolved.name, "mode": mode}


def adapter_for(channel: Channel, settings: RecordingSettings) -> Adapter:
    assert channel.platform is not None, "channels are resolved when the config is validated"
    return ADAPTERS[channel.platform](channel, settings)
