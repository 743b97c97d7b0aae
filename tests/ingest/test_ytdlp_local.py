"""The yt-dlp wrappers against a real loopback HTTP server: an RSS feed of two mp4s with thumbnails.

yt-dlp's generic extractor turns RSS into a playlist (`_extract_rss`): each item's enclosure is a
video, its <guid> the video id, its <itunes:image> the thumbnail. That stands in for a channel.
"""

from __future__ import annotations

import io
import subprocess
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import pytest

from stream2dataset.config import RecordingSettings
from stream2dataset.errors import StreamError
from stream2dataset.ingest.platforms import _ytdlp

FMT = RecordingSettings().video_format
ITEMS = [  # guid, title, file stem, pubDate
    ("clip-one", "First clip", "one", "Mon, 02 Jun 2025 10:00:00 +0000"),
    ("clip-two", "Second clip", "two", "Tue, 03 Jun 2025 12:30:00 +0000"),
]
TYPES = {".mp4": "video/mp4", ".jpg": "image/jpeg", ".xml": "application/rss+xml"}


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def feed(base: str, items: list[tuple[str, str, str, str]]) -> bytes:
    body = "".join(
        f"<item><title>{title}</title><guid isPermaLink=\"false\">{guid}</guid><pubDate>{date}</pubDate>"
        f"<link>{base}/v/{stem}.mp4</link><enclosure url=\"{base}/v/{stem}.mp4\" type=\"video/mp4\"/>"
        f"<itunes:image href=\"{base}/t/{stem}.jpg\"/></item>"
        for guid, title, stem, date in items)
    return (f'<?xml version="1.0" encoding="UTF-8"?><rss version="2.0" '
            f'xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd"><channel><title>Local channel</title>'
            f"<link>{base}/</link><description>test feed</description>{body}</channel></rss>").encode()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.requests[self.path] += 1
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", TYPES[Path(self.path).suffix])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """(base URL, server): /feed.xml, /broken.xml, /v/{one,two}.mp4, /t/{one,two}.jpg."""
    d = tmp_path_factory.mktemp("site")
    for pattern, freq, stem in [("testsrc", 440, "one"), ("testsrc2", 660, "two")]:
        ffmpeg("-f", "lavfi", "-i", f"{pattern}=size=128x96:rate=15", "-f", "lavfi", "-i", f"sine=frequency={freq}",
               "-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
               "-movflags", "+faststart", str(d / f"{stem}.mp4"))
        ffmpeg("-f", "lavfi", "-i", f"{pattern}=size=160x120", "-frames:v", "1", str(d / f"{stem}.jpg"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    base = f"http://127.0.0.1:{server.server_port}"
    server.requests = Counter()
    server.files = {f"/{kind}/{stem}.{ext}": (d / f"{stem}.{ext}").read_bytes()
                    for kind, ext in [("v", "mp4"), ("t", "jpg")] for stem in ("one", "two")}
    server.files["/feed.xml"] = feed(base, ITEMS)
    # A feed whose middle item's video is gone: the others must still come through.
    server.files["/broken.xml"] = feed(base, [ITEMS[0], ("clip-gone", "Gone", "gone", ITEMS[0][3]), ITEMS[1]])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield base, server
    server.shutdown()


def video_requests(server) -> int:
    return sum(n for path, n in server.requests.items() if path.startswith("/v/"))


def decode(path_or_bytes) -> tuple[int, int, bool]:
    """(video frames decoded, width, has audio) with PyAV."""
    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    with av.open(src) as container:
        frames = list(container.decode(video=0))
        return len(frames), frames[0].width, bool(container.streams.audio)


def test_fetch_videos_downloads_each_then_skips_archived(site, tmp_path):
    base, server = site
    archive: set[str] = set()
    before = video_requests(server)
    it = _ytdlp.fetch_videos(f"{base}/feed.xml", tmp_path, archive, FMT)
    first = next(it)
    assert server.requests["/v/two.mp4"] == 0  # yielded as soon as its own file was complete
    items = [first, *it]

    assert [(i.source_id, i.title) for i in items] == [("clip-one", "First clip"), ("clip-two", "Second clip")]
    assert [i.archive_id for i in items] == ["generic clip-one", "generic clip-two"]
    assert items[0].published == datetime(2025, 6, 2, 10, 0, tzinfo=timezone.utc)
    for item in items:
        assert item.path == tmp_path / f"{item.source_id}.mp4"
        frames, width, has_audio = decode(item.path)
        assert frames >= 25 and width == 128 and has_audio
    assert archive == set()  # the caller's archive is the recorder's: never written by yt-dlp
    assert not list(tmp_path.glob("*.part"))

    fetched = video_requests(server)
    assert fetched > before
    again = list(_ytdlp.fetch_videos(f"{base}/feed.xml", tmp_path / "again", {i.archive_id for i in items}, FMT))
    assert again == []
    assert video_requests(server) == fetched  # archived entries are skipped before any request

    partial = list(_ytdlp.fetch_videos(f"{base}/feed.xml", tmp_path / "partial", {"generic clip-one"}, FMT))
    assert [i.source_id for i in partial] == ["clip-two"]


def test_one_broken_video_does_not_stop_the_rest(site, tmp_path, caplog):
    base, _ = site
    items = list(_ytdlp.fetch_videos(f"{base}/broken.xml", tmp_path, set(), FMT))
    assert [i.source_id for i in items] == ["clip-one", "clip-two"]
    assert any("skipping" in r.getMessage() and "404" in r.getMessage() for r in caplog.records)


def test_direct_mp4_url_is_a_single_video(site, tmp_path):
    base, server = site
    (item,) = _ytdlp.fetch_videos(f"{base}/v/one.mp4", tmp_path, set(), FMT)
    assert (item.source_id, item.archive_id) == ("one", "generic one")
    assert item.path.read_bytes() == server.files["/v/one.mp4"]
    assert list(_ytdlp.fetch_videos(f"{base}/v/one.mp4", tmp_path / "b", {"generic one"}, FMT)) == []


def test_fetch_thumbnails(site):
    base, server = site
    before = video_requests(server)
    thumbs = list(_ytdlp.fetch_thumbnails(f"{base}/feed.xml", set()))
    assert [(t.source_id, t.title) for t in thumbs] == [("clip-one", "First clip"), ("clip-two", "Second clip")]
    for thumb, stem in zip(thumbs, ["one", "two"]):
        assert thumb.url == f"{base}/t/{stem}.jpg"
        assert thumb.image == server.files[f"/t/{stem}.jpg"] and thumb.image[:2] == b"\xff\xd8"
        assert decode(thumb.image)[:2] == (1, 160)
    assert thumbs[1].published == datetime(2025, 6, 3, 12, 30, tzinfo=timezone.utc)
    assert video_requests(server) == before  # listing thumbnails touches no video

    assert [t.source_id for t in _ytdlp.fetch_thumbnails(f"{base}/feed.xml", {"clip-one"})] == ["clip-two"]


@pytest.mark.parametrize("fetch", [
    lambda url, tmp: list(_ytdlp.fetch_videos(url, tmp, set(), FMT)),
    lambda url, tmp: list(_ytdlp.fetch_thumbnails(url, set())),
])
def test_missing_url_is_a_stream_error(site, tmp_path, fetch):
    base, _ = site
    with pytest.raises(StreamError, match="404") as err:
        fetch(f"{base}/missing.xml", tmp_path)
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{base}/missing.xml: ")


@pytest.mark.parametrize("mode", ["videos", "thumbnails"])
def test_youtube_channel_modes_through_the_recorder(site, tmp_path, monkeypatch, mode):
    """A YouTube channel in videos/thumbnails mode, end to end through the recorder and storage.

    Only the YouTube URL is swapped for the loopback feed (no internet here); the recorder,
    adapter, yt-dlp, archive and writers are the real ones.
    """
    from stream2dataset.config import load_config
    from stream2dataset.dataset import read_frame_column
    from stream2dataset.dataset.manifest import read_segments
    from stream2dataset.ingest import ChannelRecorder
    from stream2dataset.ingest.platforms import YouTubeAdapter
    from stream2dataset.layout import Storage

    from ..conftest import write_config

    base, server = site
    monkeypatch.setattr(YouTubeAdapter, "_url", lambda self, live: f"{base}/feed.xml")
    cfg_path = write_config(tmp_path, [{"source": "@somechannel", "platform": "youtube", "mode": mode}],
                            poll_interval_s=60)
    storage = Storage(load_config(cfg_path).storage.root)

    def run_once():
        rec = ChannelRecorder(load_config(cfg_path), "somechannel")
        for _ in range(200):
            if rec.status()["state"] == "idle":
                break
            time.sleep(0.1)
        return rec.stop()

    run_once()
    if mode == "videos":
        rows = read_segments(storage).to_pylist()
        assert sorted((r["source_id"], r["title"]) for r in rows) == [("clip-one", "First clip"),
                                                                      ("clip-two", "Second clip")]
        assert all(decode(storage.root / r["path"])[0] > 0 for r in rows)
        assert len(storage.archive_path("somechannel").read_text().split()) == 4  # "generic <id>" x2
    else:
        ids = read_frame_column(storage, "source_id", "somechannel", "thumbnail")
        titles = read_frame_column(storage, "title", "somechannel", "thumbnail")
        images = read_frame_column(storage, "image", "somechannel", "thumbnail")
        assert sorted(ids) == ["clip-one", "clip-two"] and sorted(titles) == ["First clip", "Second clip"]
        assert sorted(images) == sorted([server.files["/t/one.jpg"], server.files["/t/two.jpg"]])
    before = dict(server.requests)
    again = run_once()  # a re-run fetches nothing twice and adds no rows
    assert again["segments"] == 2 and again["bytes"] > 0  # it still reports what the channel has
    fetched = [p for p in server.requests if p.startswith(("/v/", "/t/")) and server.requests[p] != before.get(p)]
    assert fetched == []
    assert read_segments(storage).num_rows == (2 if mode == "videos" else 0)
    assert len(read_frame_column(storage, "source_id", "somechannel", "thumbnail")) == (0 if mode == "videos" else 2)


def test_a_failing_channel_url_backs_off(site, tmp_path, monkeypatch):
    from stream2dataset.config import load_config
    from stream2dataset.ingest import ChannelRecorder
    from stream2dataset.ingest.platforms import YouTubeAdapter

    from ..conftest import wait_for, write_config

    base, _ = site
    monkeypatch.setattr(YouTubeAdapter, "_url", lambda self, live: f"{base}/no-such-feed.xml")
    cfg_path = write_config(tmp_path, [{"source": "@gone", "platform": "youtube", "mode": "thumbnails"}],
                            backoff_initial_s=0.2, backoff_max_s=0.4)
    rec = ChannelRecorder(load_config(cfg_path), "gone")
    seen = set()
    wait_for(lambda: seen.add(rec.status()["detail"]) or "retry in 0.4s" in seen, 15, interval=0.02,
             what="backoff doubling")
    st = rec.stop()
    assert "retry in 0.2s" in seen and "404" in st["last_error"]
