"""A loopback HTTP server that replays pre-encoded HLS segments as endless live streams.

Serving costs ~no CPU (segments are read once into memory, nothing is encoded), so a benchmark can
run many channels at once. Each stream's live edge follows the wall clock since it was added, loops
over the source segments with a discontinuity at every loop, and can be switched to offline, error
or ended at any moment to exercise a recorder's failure handling.
"""

from __future__ import annotations

import bisect
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal

from .footage import PLAYLIST

State = Literal["live", "offline", "error", "ended"]
STATES: tuple[State, ...] = ("live", "offline", "error", "ended")
_NAME = re.compile(r"[A-Za-z0-9_-]+")


@dataclass
class StreamStats:
    """What clients asked of one stream."""

    playlist_requests: int = 0
    segment_requests: int = 0
    served: set[int] = field(default_factory=set)  # media sequence numbers answered with 200


class _Source:
    """A VOD playlist's segments, held in memory, on a timeline that loops forever."""

    def __init__(self, segments_dir: Path) -> None:
        self.target = 0
        self.durations: list[float] = []
        self.data: list[bytes] = []
        for line in (segments_dir / PLAYLIST).read_text().splitlines():
            if line.startswith("#EXT-X-TARGETDURATION:"):
                self.target = int(line.split(":", 1)[1])
            elif line.startswith("#EXTINF:"):
                self.durations.append(float(line[8:].split(",", 1)[0]))
            elif line and not line.startswith("#"):
                self.data.append((segments_dir / line).read_bytes())
        if not self.data or len(self.data) != len(self.durations):
            raise ValueError(f"{segments_dir / PLAYLIST} lists no usable segments")
        self.ends = [sum(self.durations[: i + 1]) for i in range(len(self.durations))]
        self.cycle = self.ends[-1]

    def end_time(self, j: int) -> float:
        """When segment j (counted from a loop start) is complete."""
        loops, i = divmod(j, len(self.data))
        return loops * self.cycle + self.ends[i]

    def done_by(self, t: float) -> int:
        """How many segments, from a loop start, are complete at time t."""
        loops, rem = divmod(t + 1e-6, self.cycle)  # epsilon: a segment ending exactly at t counts
        return int(loops) * len(self.data) + bisect.bisect_right(self.ends, rem)


class _Stream:
    """One channel's clock and state; every epoch of being live starts at a loop point."""

    def __init__(self, source: _Source, window: int, now: float) -> None:
        self.source, self.window = source, window
        self.state: State = "live"
        self.base, self.t0 = 0, now
        self.frozen = 0  # segments produced when the stream left "live"
        self.past: list[range] = []  # media sequences of earlier epochs
        self.stats = StreamStats()

    def produced(self, now: float) -> int:
        """Media sequence numbers below this exist; a fresh epoch starts with a full window."""
        if self.state != "live":
            return self.frozen
        preroll = self.source.end_time(self.window - 1)
        return self.base + self.source.done_by(now - self.t0 + preroll)

    def set_state(self, state: State, now: float) -> None:
        if state == self.state:
            return
        if self.state == "live":
            self.frozen = self.produced(now)
            self.past.append(range(self.base, self.frozen))
        if state == "live":  # a new broadcast: footage restarts at the next loop point
            n = len(self.source.data)
            self.base, self.t0 = -(-self.frozen // n) * n, now
        self.state = state

    def playlist(self, now: float) -> str:
        end = self.produced(now)
        first, n = end - self.window, len(self.source.data)
        lines = [
            "#EXTM3U",
            "#EXT-X-VERSION:3",
            f"#EXT-X-TARGETDURATION:{self.source.target}",
            f"#EXT-X-MEDIA-SEQUENCE:{first}",
            f"#EXT-X-DISCONTINUITY-SEQUENCE:{first // n}",  # loop points at or before `first`
        ]
        for seq in range(first, end):
            if seq % n == 0 and seq != first:
                lines.append("#EXT-X-DISCONTINUITY")
            lines += [f"#EXTINF:{self.source.durations[seq % n]:.6f},", f"{seq}.ts"]
        if self.state == "ended":
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"

    def segment(self, seq: int, now: float) -> bytes | None:
        """A segment still in or just behind the window (as a CDN keeps them briefly), else None."""
        end = self.produced(now)
        spans = self.past + ([range(self.base, end)] if self.state == "live" else [])
        if end - 2 * self.window <= seq < end and any(seq in r for r in spans):
            return self.source.data[seq % len(self.source.data)]
        return None


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        status, ctype, body = self.server.owner._respond(self.path.split("?", 1)[0])
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base's name
        """Quiet: tests and benchmarks would drown in access lines."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: LiveHLSServer

    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client that hung up mid-response is normal for live streams
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class LiveHLSServer:
    """Serve directories of VOD segments as live HLS on 127.0.0.1; thread-safe controls."""

    def __init__(self, port: int = 0, window: int = 5) -> None:
        self.window = window
        self._lock = threading.Lock()
        self._streams: dict[str, _Stream] = {}
        self._sources: dict[Path, _Source] = {}  # streams of one footage share its bytes
        self._httpd = _Server(("127.0.0.1", port), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(  # a short poll makes close() quick
            target=self._httpd.serve_forever, args=(0.1,), name="live-hls", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}/live.m3u8"

    def add_stream(self, name: str, segments_dir: Path) -> str:
        """Start a live stream of the footage in `segments_dir`, its clock starting now; its URL."""
        if not _NAME.fullmatch(name):
            raise ValueError(f"stream name {name!r} must match {_NAME.pattern}")
        key = Path(segments_dir).resolve()
        with self._lock:
            if name in self._streams:
                raise ValueError(f"stream {name!r} already exists")
            if key not in self._sources:
                self._sources[key] = _Source(key)
            self._streams[name] = _Stream(self._sources[key], self.window, time.monotonic())
        return self.url(name)

    def set_state(self, name: str, state: State) -> None:
        """live | offline (playlist 404) | error (HTTP 500) | ended (ENDLIST, stops growing)."""
        if state not in STATES:
            raise ValueError(f"state {state!r} is not one of {STATES}")
        with self._lock:
            self._streams[name].set_state(state, time.monotonic())

    def stats(self, name: str) -> StreamStats:
        """A copy of the stream's request counters."""
        with self._lock:
            s = self._streams[name].stats
            return StreamStats(s.playlist_requests, s.segment_requests, set(s.served))

    def _respond(self, path: str) -> tuple[int, str, bytes]:
        name, _, leaf = path.strip("/").partition("/")
        with self._lock:
            stream = self._streams.get(name)
            if stream is None:
                return 404, "text/plain", b"no such stream\n"
            now = time.monotonic()
            if leaf == "live.m3u8":
                stream.stats.playlist_requests += 1
                if stream.state == "error":
                    return 500, "text/plain", b"injected error\n"
                if stream.state == "offline":
                    return 404, "text/plain", b"offline\n"
                return 200, "application/vnd.apple.mpegurl", stream.playlist(now).encode()
            seq = leaf.removesuffix(".ts")
            if not (leaf.endswith(".ts") and seq.isdigit()):
                return 404, "text/plain", b"not found\n"
            stream.stats.segment_requests += 1
            if stream.state == "error":
                return 500, "text/plain", b"injected error\n"
            data = stream.segment(int(seq), now)
            if data is None:
                return 404, "text/plain", b"segment not available\n"
            stream.stats.served.add(int(seq))
            return 200, "video/mp2t", data

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> LiveHLSServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
