"""Platform adapters by name; which platform a source is (its URL matcher) is `stream2dataset.sources`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Adapter, ThumbnailItem, VideoItem
from .file import FileAdapter
from .hls import HLSAdapter
from .twitch import TwitchAdapter
from .youtube import YouTubeAdapter

if TYPE_CHECKING:
    from ...config import Channel, RecordingSettings

__all__ = [
    "ADAPTERS", "Adapter", "FileAdapter", "HLSAdapter", "ThumbnailItem", "TwitchAdapter",
    "VideoItem", "YouTubeAdapter", "adapter_for",
]

ADAPTERS: dict[str, type[Adapter]] = {
    "twitch": TwitchAdapter,
    "youtube": YouTubeAdapter,
    "file": FileAdapter,
    "hls": HLSAdapter,
}


def adapter_for(channel: Channel, settings: RecordingSettings) -> Adapter:
    assert channel.platform is not None, "channels are resolved when the config is validated"
    return ADAPTERS[channel.platform](channel, settings)
