"""The demo channel end to end: real ffmpeg footage, a real loopback HLS server, real streamlink."""

from __future__ import annotations

import io
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest
from streamlink import Streamlink
from streamlink.exceptions import PluginError

from stream2dataset.demo import SMALL_LAYOUT, LiveHLSServer, build_demo_hls, carphone_path

SEGMENT_SECONDS = 1  # short segments keep the live tests quick
SEGMENTS = 8  # the footage loops after this many media sequences


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "small"
    return build_demo_hls(out, SMALL_LAYOUT, seconds=SEGMENTS, segment_seconds=SEGMENT_SECONDS)


@pytest.fixture
def server():
    with LiveHLSServer(window=5) as srv:
        yield srv


def _session() -> Streamlink:
    session = Streamlink()
    session.set_option("hls-live-edge", 2)
    session.set_option("stream-timeout", 10)
    return session


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, b""


def _media_sequence(playlist: bytes) -> int:
    return int(re.search(rb"#EXT-X-MEDIA-SEQUENCE:(\d+)", playlist).group(1))


def _read(fd, seconds: float) -> bytes:
    """Read for `seconds` or until the stream ends."""
    data, deadline = bytearray(), time.monotonic() + seconds
    while time.monotonic() < deadline and (chunk := fd.read(65536)):
        data += chunk
    return bytes(data)


def test_footage_is_cached_vod_with_facecam_at_box(footage: Path) -> None:
    playlist = (footage / "index.m3u8").read_text()
    assert playlist.count("#EXTINF:1.0") == SEGMENTS and "#EXT-X-ENDLIST" in playlist
    marker = footage / "layout.json"
    mtime = marker.stat().st_mtime_ns
    build_demo_hls(footage, SMALL_LAYOUT, seconds=SEGMENTS, segment_seconds=SEGMENT_SECONDS)
    assert marker.stat().st_mtime_ns == mtime  # cached: not rebuilt
    assert not list(footage.parent.glob(".small.*"))  # no temp dir left behind

    box = SMALL_LAYOUT.facecam
    with av.open(str(footage / "seg000.ts")) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    with av.open(str(carphone_path())) as container:
        face = next(container.decode(video=0)).reformat(box.w, box.h, "rgb24").to_ndarray()
    assert frame.shape == (SMALL_LAYOUT.height, SMALL_LAYOUT.width, 3)

    def diff(dx: int, dy: int) -> float:
        x, y = box.x + dx, box.y + dy
        return float(np.abs(frame[y : y + box.h, x : x + box.w] - face).mean())

    assert diff(0, 0) < 10  # the first face frame sits exactly in the box (lossy encode aside)
    assert min(diff(-4, 0), diff(4, 0), diff(0, -4), diff(0, 4)) > 15  # ... not a few pixels off
    assert diff(-box.w, 0) > 60  # and the background outside the box is something else


@pytest.mark.slow  # ~6 s on the 2-core machine
def test_live_playlist_slides_loops_and_obeys_states(server: LiveHLSServer, footage: Path) -> None:
    url = server.add_stream("chan", footage)
    seg = url.replace("live.m3u8", "{}.ts")
    status, first = _get(url)
    assert status == 200 and _media_sequence(first) == 0 and first.count(b"#EXTINF") == 5
    assert b"#EXT-X-ENDLIST" not in first
    assert _get(seg.format(4))[0] == 200 and _get(seg.format(5))[0] == 404  # not produced yet
    assert _get(server.url("nope"))[0] == 404

    time.sleep(4.2 * SEGMENT_SECONDS)  # past the loop point at media sequence 8
    status, later = _get(url)
    assert _media_sequence(later) == 4
    assert b"#EXT-X-DISCONTINUITY\n#EXTINF:1.000000,\n8.ts" in later
    assert _get(seg.format(8))[0] == 200

    server.set_state("chan", "ended")
    status, ended = _get(url)
    assert b"#EXT-X-ENDLIST" in ended
    time.sleep(1.2 * SEGMENT_SECONDS)
    assert _get(url)[1] == ended  # stopped growing

    server.set_state("chan", "offline")
    assert _get(url)[0] == 404
    server.set_state("chan", "error")
    assert _get(url)[0] == 500 and _get(seg.format(8))[0] == 500

    server.set_state("chan", "live")  # a new broadcast: footage restarts at the next loop point
    status, resumed = _get(url)
    assert status == 200 and _media_sequence(resumed) == 16 and b"#EXT-X-ENDLIST" not in resumed
    assert b"#EXT-X-DISCONTINUITY-SEQUENCE:2" in resumed
    stats = server.stats("chan")
    assert stats.playlist_requests == 7 and stats.served == {4, 8}


@pytest.mark.slow  # ~8 s on the 2-core machine
def test_streamlink_records_live_stream(server: LiveHLSServer, footage: Path) -> None:
    url = server.add_stream("chan", footage)
    streams = _session().streams("hls://" + url)
    fd = streams["live"].open()
    try:
        head = _read(fd, 2)
        served_early = server.stats("chan").served
        data = head + _read(fd, 4)
        served = server.stats("chan").served
        assert head and len(data) > len(head)
        assert 3 <= min(served) <= 5  # live edge 2 of the window 0..4 (a slow start may see 1..5)
        assert max(served) > max(served_early) and max(served) >= SEGMENTS  # crossed the loop
        assert served == set(range(3, max(served) + 1))  # nothing skipped

        with av.open(io.BytesIO(data), format="mpegts") as container:
            frames = [(f.width, f.height) for f in container.decode(video=0)]
        assert set(frames) == {(SMALL_LAYOUT.width, SMALL_LAYOUT.height)}
        assert len(frames) >= 4 * SMALL_LAYOUT.fps * SEGMENT_SECONDS

        server.set_state("chan", "ended")  # streamlink drains and returns b'' at the next reload
        started = time.monotonic()
        _read(fd, 30)
        assert time.monotonic() - started < 3 * SEGMENT_SECONDS
    finally:
        fd.close()


@pytest.mark.slow  # ~6 s on the 2-core machine
def test_streamlink_reader_ends_quietly_when_stream_goes_offline(
    server: LiveHLSServer, footage: Path
) -> None:
    fd = _session().streams("hls://" + server.add_stream("chan", footage))["live"].open()
    try:
        assert _read(fd, 1)
        server.set_state("chan", "offline")
        started = time.monotonic()
        _read(fd, 30)  # no exception: b'' after streamlink's queue deadline, max(5 s, 3 x target)
        assert 3 < time.monotonic() - started < 8
    finally:
        fd.close()


def test_streamlink_open_fails_when_offline_or_erroring(
    server: LiveHLSServer, footage: Path
) -> None:
    server.add_stream("off", footage)
    server.set_state("off", "offline")
    with pytest.raises(PluginError, match="404 Client Error"):
        _session().streams("hls://" + server.url("off"))

    server.add_stream("err", footage)
    server.set_state("err", "error")
    with pytest.raises(PluginError, match="500 Server Error"):
        _session().streams("hls://" + server.url("err"))
    assert _get(server.url("err").replace("live.m3u8", "3.ts"))[0] == 500
    stats = server.stats("err")
    assert (stats.playlist_requests, stats.segment_requests, stats.served) == (1, 1, set())
