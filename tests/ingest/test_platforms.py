"""Platform adapters: URL matching through the config, the file adapter, streamlink on loopback.

Everything is offline: HLS and the Twitch API are served on 127.0.0.1 (Twitch through a local
TLS-intercepting proxy that requests trusts via REQUESTS_CA_BUNDLE), media is made with ffmpeg.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import socket
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import ValidationError

from stream2dataset.config import Channel, RecordingSettings
from stream2dataset.errors import ConfigError, StreamError
from stream2dataset.ingest.platforms import ADAPTERS, FileAdapter, HLSAdapter, adapter_for

YT = "https://www.youtube.com"
UC = "UCBJycsmduvYEL83R_U4JriQ"
PL = "PLFgquLnL59alCl_2TQvOiD5Vgm1hCaGSI"

# source -> (platform, name, default mode, canonical source)
CASES = {
    "shroud": ("twitch", "shroud", "live", "https://www.twitch.tv/shroud"),
    "Lirik_": ("twitch", "lirik", "live", "https://www.twitch.tv/lirik_"),
    "twitch.tv/Shroud": ("twitch", "shroud", "live", "https://www.twitch.tv/shroud"),
    "https://www.twitch.tv/shroud/": ("twitch", "shroud", "live", "https://www.twitch.tv/shroud"),
    "https://m.twitch.tv/pokimane": ("twitch", "pokimane", "live", "https://www.twitch.tv/pokimane"),
    "http://twitch.tv/xQc?sr=a": ("twitch", "xqc", "live", "https://www.twitch.tv/xqc"),
    "@LinusTechTips": ("youtube", "linustechtips", "videos", f"{YT}/@LinusTechTips"),
    "youtube.com/@mkbhd": ("youtube", "mkbhd", "videos", f"{YT}/@mkbhd"),
    "https://www.youtube.com/@mkbhd/live": ("youtube", "mkbhd", "live", f"{YT}/@mkbhd/live"),
    "https://www.youtube.com/@mkbhd/videos": ("youtube", "mkbhd", "videos", f"{YT}/@mkbhd/videos"),
    "https://m.youtube.com/@NASA/streams": ("youtube", "nasa", "videos", f"{YT}/@NASA/streams"),
    "https://www.youtube.com/@NASA/featured": ("youtube", "nasa", "videos", f"{YT}/@NASA"),
    f"https://www.youtube.com/channel/{UC}": ("youtube", UC.lower(), "videos", f"{YT}/channel/{UC}"),
    f"https://www.youtube.com/channel/{UC}/live": ("youtube", UC.lower(), "live", f"{YT}/channel/{UC}/live"),
    "https://www.youtube.com/c/LinusTechTips": ("youtube", "linustechtips", "videos", f"{YT}/c/LinusTechTips"),
    "https://www.youtube.com/user/Google/videos": ("youtube", "google", "videos", f"{YT}/user/Google/videos"),
    "https://www.youtube.com/watch?v=dQw4w9WgXcQ": ("youtube", "dqw4w9wgxcq", "videos", f"{YT}/watch?v=dQw4w9WgXcQ"),
    "https://music.youtube.com/watch?v=dQw4w9WgXcQ": ("youtube", "dqw4w9wgxcq", "videos", f"{YT}/watch?v=dQw4w9WgXcQ"),
    "https://youtu.be/dQw4w9WgXcQ?si=abc": ("youtube", "dqw4w9wgxcq", "videos", f"{YT}/watch?v=dQw4w9WgXcQ"),
    "https://www.youtube.com/live/jfKfPfyJRdk?si=x": ("youtube", "jfkfpfyjrdk", "live", f"{YT}/live/jfKfPfyJRdk"),
    "https://www.youtube.com/shorts/aqz-KE-bpKQ": ("youtube", "aqz-ke-bpkq", "videos", f"{YT}/watch?v=aqz-KE-bpKQ"),
    f"https://www.youtube.com/playlist?list={PL}": ("youtube", PL.lower(), "videos", f"{YT}/playlist?list={PL}"),
    "http://127.0.0.1:8000/demo/live.m3u8": ("hls", "demo", "live", "http://127.0.0.1:8000/demo/live.m3u8"),
    "hls://example.com/streams/cam1/index.m3u8": ("hls", "cam1", "live", "https://example.com/streams/cam1/index.m3u8"),
    "https://cdn.example.com/master.m3u8?token=x": ("hls", "cdn-example-com", "live", "https://cdn.example.com/master.m3u8?token=x"),
}


@pytest.mark.parametrize("source", list(CASES))
def test_source_resolves(source):
    platform, name, mode, canonical = CASES[source]
    ch = Channel(source=source)
    assert (ch.platform, ch.name, ch.mode, ch.source) == (platform, name, mode, canonical)
    # The canonical source is stable: the resolved config (as dumped) validates to the same channel.
    again = Channel(source=ch.source, platform=ch.platform)
    assert (again.source, again.name, again.mode) == (canonical, name, mode)


@pytest.mark.parametrize("source", [
    "https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=42s",
    f"https://www.youtube.com/watch?list={PL}&v=dQw4w9WgXcQ&index=2",
])
def test_youtube_matcher_keeps_only_the_video_id(source):
    # Called directly: the config currently refuses '&' in any source (a shell metacharacter).
    resolved = ADAPTERS["youtube"].match(source)
    assert resolved is not None
    assert (resolved.source, resolved.name) == (f"{YT}/watch?v=dQw4w9WgXcQ", "dqw4w9wgxcq")


def test_explicit_name_and_mode_win():
    ch = Channel(source="@LinusTechTips", name="ltt", mode="thumbnails")
    assert (ch.platform, ch.name, ch.mode) == ("youtube", "ltt", "thumbnails")


@pytest.mark.parametrize("source", [
    "twitch.tv/videos/123", "https://www.twitch.tv/videos/2286531234", "https://www.twitch.tv/directory",
    "https://www.twitch.tv/shroud/clip/FunnyClip-abc", "https://clips.twitch.tv/FunnyClip-abc",
    "https://www.twitch.tv/shroud/videos", "ab", "https://example.com/shroud",
])
def test_twitch_rejects_non_channels(source):
    with pytest.raises(ValidationError, match="not a twitch channel"):
        Channel(source=source, platform="twitch")


@pytest.mark.parametrize("source", [
    "https://www.youtube.com/feed/trending", "https://www.youtube.com/@mkbhd/community",
    "https://www.youtube.com/watch?v=short", "https://youtu.be/", "https://www.youtube.com/channel/notanid",
])
def test_youtube_rejects_other_pages(source):
    with pytest.raises(ValidationError, match="not a youtube channel"):
        Channel(source=source, platform="youtube")


@pytest.mark.parametrize("source, message", [
    ("https://www.twitch.tv/videos/123", "no platform matches"),  # not silently taken as HLS
    ("twitch.tv/videos/123", "no platform matches"),  # nor as a relative folder
    ("www.youtube.com/feed/trending", "no platform matches"),
    ("ftp://example.com/stream.m3u8", "no platform matches"),
    ("rtmp://example.com/live", "no platform matches"),
    ("../../etc/passwd", "traversal"),
    ("videos/../../etc", "traversal"),
    ("shroud; rm -rf /", "not allowed"),
    ("$(reboot)", "not allowed"),
])
def test_bad_sources_are_refused(source, message):
    with pytest.raises(ValidationError, match=message):
        Channel(source=source)


def test_matchers_refuse_what_they_cannot_use():
    assert FileAdapter.match("../../etc/passwd") is None
    assert FileAdapter.match("https://example.com/a.mp4") is None
    assert HLSAdapter.match("ftp://example.com/a.m3u8") is None
    assert HLSAdapter.match("https://youtu.be/dQw4w9WgXcQ") is None
    # hls:// forces the HLS plugin even on such a host, and keeps the prefix to stay stable.
    forced = HLSAdapter.match("hls://https://www.youtube.com/x/live.m3u8")
    assert forced is not None and forced.source == "hls://https://www.youtube.com/x/live.m3u8"
    assert HLSAdapter.match(forced.source) == forced


@pytest.mark.parametrize("source, platform, mode", [
    ("http://127.0.0.1:8000/demo/live.m3u8", None, "thumbnails"),
    ("shroud", None, "videos"),
    ("./clips", "file", "live"),
])
def test_unsupported_mode_is_an_error(source, platform, mode):
    with pytest.raises(ValidationError, match=f"mode '{mode}' is not supported"):
        Channel(source=source, platform=platform, mode=mode)


def test_file_sources(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "My.Clips").mkdir()
    cases = {
        str(tmp_path / "My.Clips"): ("my-clips", tmp_path / "My.Clips"),
        "./My.Clips/": ("my-clips", tmp_path / "My.Clips"),
        "talk.MP4": ("talk", tmp_path / "talk.MP4"),
        "sub/dir": ("dir", tmp_path / "sub" / "dir"),
    }
    for source, (name, path) in cases.items():
        ch = Channel(source=source)
        assert (ch.platform, ch.name, ch.mode, ch.source) == ("file", name, "videos", str(path)), source
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Channel(source="~/My.Clips").source == str(tmp_path / "My.Clips")


def test_config_import_does_not_load_streamlink_or_ytdlp():
    code = ("import sys; from stream2dataset.config import Channel; Channel(source='shroud'); "
            "Channel(source='@x_y'); print('streamlink' in sys.modules, 'yt_dlp' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_youtube_urls_per_mode():
    def url(source, live):
        ch = Channel(source=source)
        return adapter_for(ch, RecordingSettings())._url(live=live)

    assert url("@mkbhd", live=True) == f"{YT}/@mkbhd/live"
    assert url("https://www.youtube.com/@mkbhd/live", live=False) == f"{YT}/@mkbhd/videos"
    assert url(f"https://www.youtube.com/channel/{UC}/streams", live=False) == f"{YT}/channel/{UC}/streams"
    assert url("https://youtu.be/dQw4w9WgXcQ", live=True) == f"{YT}/watch?v=dQw4w9WgXcQ"
    with pytest.raises(ConfigError, match="playlist has no live"):
        url(f"https://www.youtube.com/playlist?list={PL}", live=True)


# --- file adapter -------------------------------------------------------------------------------

def make_mp4(path: Path, pattern: str = "testsrc", freq: int = 440) -> Path:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"{pattern}=size=96x64:rate=10",
         "-f", "lavfi", "-i", f"sine=frequency={freq}", "-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-shortest", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    make_mp4(folder / "b.mp4", "testsrc2", 660)
    (folder / "nested").mkdir()
    make_mp4(folder / "nested" / "a.MP4", "testsrc", 440)
    (folder / "notes.txt").write_text("not a video")
    return folder


def file_adapter(source: Path):
    return adapter_for(Channel(source=str(source)), RecordingSettings())


def test_file_adapter_fetches_hardlinks_and_skips_archived(clips, tmp_path):
    staging = tmp_path / "staging"
    items = list(file_adapter(clips).fetch_videos(staging, set()))
    assert [i.title for i in items] == ["b.mp4", "a.MP4"]  # sorted by path: b.mp4 < nested/a.MP4
    for item, src in zip(items, [clips / "b.mp4", clips / "nested" / "a.MP4"]):
        assert item.source_id == hashlib.sha256(src.read_bytes()).hexdigest()[:16]
        assert item.archive_id == f"file {item.source_id}"
        assert item.path == staging / f"{item.source_id}.mp4"
        assert item.path.stat().st_ino == src.stat().st_ino  # a hardlink, not a copy
        assert item.published is not None and item.published.tzinfo is not None

    again = list(file_adapter(clips).fetch_videos(staging, {items[0].archive_id}))
    assert [i.source_id for i in again] == [items[1].source_id]
    assert list(file_adapter(clips).fetch_videos(staging, {i.archive_id for i in items})) == []


def test_file_adapter_single_file_and_duplicates(clips, tmp_path):
    (tmp_path / "copy.mp4").write_bytes((clips / "b.mp4").read_bytes())
    (tmp_path / "orig.mp4").write_bytes((clips / "b.mp4").read_bytes())
    items = list(file_adapter(tmp_path).fetch_videos(tmp_path / "staging", set()))
    assert len(items) == 1  # the same bytes under two names are one video

    single = list(file_adapter(clips / "b.mp4").fetch_videos(tmp_path / "s2", set()))
    assert [i.source_id for i in single] == [items[0].source_id]
    assert single[0].path.read_bytes() == (clips / "b.mp4").read_bytes()


def test_file_adapter_missing_path_is_a_stream_error(tmp_path):
    with pytest.raises(StreamError, match="no such file"):
        list(file_adapter(tmp_path / "gone").fetch_videos(tmp_path / "staging", set()))


# --- hls adapter: streamlink against a loopback server ------------------------------------------

class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/error/"):
            self.send_error(503, "injected error")
        else:
            super().do_GET()


def serve(directory: Path, handler=_Quiet) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def hls_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("hls")
    (root / "demo").mkdir()
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=96x64:rate=10",
         "-t", "3", "-c:v", "libx264", "-g", "10", "-f", "hls", "-hls_time", "1", "-hls_playlist_type", "vod",
         str(root / "demo" / "live.m3u8")], check=True)
    server = serve(root)
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def hls_adapter(url: str, quality: str = "720p,best"):
    return adapter_for(Channel(source=url), RecordingSettings(quality=quality, stream_timeout_s=5))


def test_hls_open_live_reads_mpegts(hls_server):
    fd = hls_adapter(f"{hls_server}/demo/live.m3u8").open_live()
    try:
        data = b"".join(iter(lambda: fd.read(1 << 16), b""))  # a VOD playlist ends: read to EOF
    finally:
        fd.close()
    assert len(data) > 10_000 and data[0] == 0x47 and data[188] == 0x47  # MPEG-TS sync bytes


def test_hls_quality_fallback_and_errors(hls_server):
    fd = hls_adapter(f"{hls_server}/demo/live.m3u8", quality="1080p60, worst").open_live()
    fd.close()
    with pytest.raises(StreamError, match=r"qualities '1080p' is offered \(available: live, worst, best\)"):
        hls_adapter(f"{hls_server}/demo/live.m3u8", quality="1080p").open_live()
    # No playlist (404) is an offline channel; a server error is an error, on one line.
    assert hls_adapter(f"{hls_server}/demo/missing.m3u8").open_live() is None
    with pytest.raises(StreamError, match="503 Server Error") as err:
        hls_adapter(f"{hls_server}/error/live.m3u8").open_live()
    assert "\n" not in str(err.value)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(StreamError, match="Connection refused"):
        hls_adapter(f"http://127.0.0.1:{port}/x/live.m3u8").open_live()


# --- twitch adapter: the real plugin against a local stand-in for gql.twitch.tv ----------------

TOKEN = "s3cr3t0authT0kenV4lue9z"


class _TwitchProxy(BaseHTTPRequestHandler):
    """An HTTPS proxy that answers CONNECT itself, as gql.twitch.tv, with a canned reply."""

    def log_message(self, *args):
        pass

    def do_CONNECT(self):
        self.send_response(200, "Connection established")
        self.end_headers()
        with self.server.tls.wrap_socket(self.connection, server_side=True) as tls:
            f = tls.makefile("rb")
            lines = []
            while (line := f.readline()) not in (b"\r\n", b""):
                lines.append(line.decode().strip())
            headers = dict(line.split(": ", 1) for line in lines[1:])
            f.read(int(headers.get("Content-Length", 0)))
            self.server.seen.append((lines[0], headers))
            status, body = self.server.reply
            tls.sendall(f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                        f"Connection: close\r\n\r\n".encode() + body)
        self.close_connection = True


@pytest.fixture
def twitch_api(tmp_path, monkeypatch):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=gql.twitch.tv", "-addext", "subjectAltName=DNS:gql.twitch.tv",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TwitchProxy)
    server.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.tls.load_cert_chain(cert, key)
    server.seen, server.reply = [], ("200 OK", b'{"data": {"streamPlaybackAccessToken": null}}')
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    monkeypatch.setenv("TWITCH_OAUTH_TOKEN", TOKEN)
    yield server
    server.shutdown()


def test_twitch_offline_sends_token_and_never_leaks_it(twitch_api, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="streamlink")
    adapter = adapter_for(Channel(source="shroud"), RecordingSettings())

    # An empty access token is how Twitch says "offline": streams() returns {} and we return None.
    assert adapter.open_live() is None
    request_line, headers = twitch_api.seen[-1]
    assert request_line.startswith("POST /gql")
    assert headers["Authorization"] == f"OAuth {TOKEN}"  # sent to Twitch, and nowhere else:

    twitch_api.reply = ("500 Internal Server Error", b'{"error": "boom"}')
    with pytest.raises(StreamError) as err:
        adapter.open_live()
    assert "500" in str(err.value)
    texts = [repr(adapter), str(adapter), repr(vars(adapter)), str(err.value), repr(err.value),
             str(err.value.__cause__), caplog.text, json.dumps([r.getMessage() for r in caplog.records])]
    assert caplog.records  # DEBUG logging was captured
    for text in texts:
        assert TOKEN not in text


def test_twitch_without_token_sends_no_authorization(twitch_api, monkeypatch):
    monkeypatch.delenv("TWITCH_OAUTH_TOKEN")
    assert adapter_for(Channel(source="shroud"), RecordingSettings()).open_live() is None
    assert "Authorization" not in twitch_api.seen[-1][1]


def test_all_adapters_are_registered():
    assert set(ADAPTERS) == {"twitch", "youtube", "hls", "file"}
    for name, cls in ADAPTERS.items():
        assert cls.platform == name and cls.modes
