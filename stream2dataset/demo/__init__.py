"""The embedded demo channel: streamer-layout footage made of real face video, served as live HLS
on loopback. The demo, the tests and the benchmarks record it instead of the internet."""

from .footage import (
    DEFAULT_LAYOUT,
    FACECAM_BOX,
    SMALL_LAYOUT,
    Box,
    Layout,
    build_demo_hls,
    carphone_path,
)
from .live_hls import LiveHLSServer, State, StreamStats

__all__ = [
    "DEFAULT_LAYOUT",
    "FACECAM_BOX",
    "SMALL_LAYOUT",
    "Box",
    "Layout",
    "LiveHLSServer",
    "State",
    "StreamStats",
    "build_demo_hls",
    "carphone_path",
]
