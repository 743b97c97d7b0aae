"""A live HLS origin on loopback that misbehaves on demand, for the recorder's fault tests.

It serves real footage segments (1 s each) as a live playlist whose window moves with the wall
clock, and switches at run time between modes:

    normal     as a live origin should
    offline    the playlist and segments answer 404 (an HLS origin's "not live")
    error      they answer 500
    stall      the playlist stops advancing (a stalled packager): the same segments forever
    corrupt    new segments keep their TS headers but carry random payloads (a broken encoder)
    truncated  new segments are cut off mid-packet (a packager that wrote half a file)

and, as one-off events, `restart_encoder` (the media sequence restarts at 0 with other footage,
possibly on other PIDs and tracks) and `switch_footage` (other footage, numbering goes on).
Every segment produced is logged with its footage file, so a test knows what was on the air.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from math import ceil
from pathlib import Path

MODES = ("normal", "offline", "error", "stall", "corrupt", "truncated")


@dataclass(frozen=True)
class Entry:
    epoch: int  # encoder restarts so far
    seq: int  # media sequence number
    source: Path  # the footage segment it carries
    duration: float
    kind: str  # normal | corrupt | truncated
    discontinuity: bool
    data: bytes

    @property
    def name(self) -> str:
        return f"{self.epoch}-{self.seq}.ts"


def garble(data: bytes, seed: int) -> bytes:
    """Keep each TS packet's 4-byte header, randomise its payload."""
    rnd = random.Random(seed)
    out = bytearray(data)
    for i in range(0, len(out) - 187, 188):
        out[i + 4:i + 188] = rnd.randbytes(184)
    return bytes(out)


def _footage(folder: Path) -> list[tuple[Path, float, bytes]]:
    segs, duration = [], None
    for line in (folder / "index.m3u8").read_text().splitlines():
        if line.startswith("#EXTINF:"):
            duration = float(line[8:].split(",", 1)[0])
        elif line and not line.startswith("#"):
            segs.append((folder / line, duration, (folder / line).read_bytes()))
    return segs


class FaultyOrigin:
    """One live channel at `url`; thread-safe controls; `entries` is what was produced."""

    def __init__(self, footage: Path, window: int = 4):
        self.window = window
        self.mode = "normal"
        self.entries: list[Entry] = []  # everything produced, in order
        self.served: list[Entry] = []  # segments answered 200
        self._lock = threading.Lock()
        self._epoch, self._seq, self._pos, self._disc = 0, 0, 0, False
        self._source = _footage(footage)
        for _ in range(window):  # a live origin that has been running: a full window at once
            self._produce()
        self._due = time.monotonic() + self._source[self._pos % len(self._source)][1]
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.origin = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.1,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/cam/live.m3u8"

    # ------------------------------------------------------------------ controls
    def set_mode(self, mode: str) -> None:
        assert mode in MODES, mode
        with self._lock:
            self._advance(time.monotonic())
            if self.mode == "stall":  # producing again from now on, not in a burst
                self._due = time.monotonic() + self._next_duration()
            self.mode = mode

    def restart_encoder(self, footage: Path) -> None:
        """A new encoder: media sequence from 0, a new playlist, `footage` from its start."""
        with self._lock:
            self._epoch, self._seq, self._pos, self._disc = self._epoch + 1, 0, 0, False
            self._source = _footage(footage)
            self._produce()
            self._due = time.monotonic() + self._next_duration()

    def switch_footage(self, footage: Path) -> None:
        """Other footage from the next segment on; the numbering goes on (a discontinuity)."""
        with self._lock:
            self._source, self._pos, self._disc = _footage(footage), 0, True

    def produced(self, epoch: int | None = None) -> list[Entry]:
        with self._lock:
            return [e for e in self.entries if epoch is None or e.epoch == epoch]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    # ------------------------------------------------------------------ the live timeline
    def _next_duration(self) -> float:
        return self._source[self._pos % len(self._source)][1]

    def _produce(self) -> None:
        path, duration, data = self._source[self._pos % len(self._source)]
        kind = self.mode if self.mode in ("corrupt", "truncated") else "normal"
        if kind == "corrupt":
            data = garble(data, self._seq)
        elif kind == "truncated":
            data = data[: int(len(data) * 0.55)]
        loop = self._pos and self._pos % len(self._source) == 0
        self.entries.append(Entry(self._epoch, self._seq, path, duration, kind, self._disc or bool(loop), data))
        self._seq, self._pos, self._disc = self._seq + 1, self._pos + 1, False

    def _advance(self, now: float) -> None:
        if self.mode == "stall":
            return
        while now >= self._due:
            self._produce()
            self._due += self._next_duration()

    def _window(self) -> list[Entry]:
        return [e for e in self.entries if e.epoch == self._epoch][-self.window:]

    def _playlist(self) -> bytes:
        window = self._window()
        lines = ["#EXTM3U", "#EXT-X-VERSION:3",
                 f"#EXT-X-TARGETDURATION:{ceil(max(e.duration for e in window))}",
                 f"#EXT-X-MEDIA-SEQUENCE:{window[0].seq}"]
        for e in window:
            if e.discontinuity:
                lines.append("#EXT-X-DISCONTINUITY")
            lines += [f"#EXTINF:{e.duration:.6f},", e.name]
        return ("\n".join(lines) + "\n").encode()

    def respond(self, leaf: str) -> tuple[int, bytes]:
        """(status, body) for a request of /cam/<leaf>."""
        with self._lock:
            self._advance(time.monotonic())
            if self.mode == "offline":
                return 404, b"offline\n"
            if self.mode == "error":
                return 500, b"injected error\n"
            if leaf == "live.m3u8":
                return 200, self._playlist()
            recent = [e for e in self.entries if e.epoch == self._epoch][-3 * self.window:]
            entry = next((e for e in recent if e.name == leaf), None)
            if entry is None:
                return 404, b"no such segment\n"
            self.served.append(entry)
            return 200, entry.data


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].strip("/")
        channel, _, leaf = path.partition("/")
        status, body = self.server.origin.respond(leaf) if channel == "cam" else (404, b"")
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.apple.mpegurl" if leaf.endswith("m3u8") else "video/mp2t")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except ConnectionError:
            pass  # the client hung up: normal for live streams

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        """Quiet."""
