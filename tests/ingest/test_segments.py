"""The segmenter on real MPEG-TS made by the ffmpeg CLI: cuts, discontinuities, stop/finish, salvage."""

from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
import subprocess
import threading
import time
from pathlib import Path

import av
import pytest

from stream2dataset.errors import CorruptMedia, StreamError
from stream2dataset.ingest import segments
from stream2dataset.ingest.segments import CutSegment, Segmenter, probe, salvage
from stream2dataset.media import sha256_file

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg CLI")

FPS = 30  # -g 30: a keyframe every second


def _encode(dest: Path, seconds: float, *extra: str, fmt: str = "mpegts", freq: int = 440) -> Path:
    """A test clip: H.264 (with B-frames) + AAC, one GOP per second."""
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate={FPS}",
         "-f", "lavfi", "-i", f"sine=frequency={freq}:sample_rate=48000",
         "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-g", str(FPS),
         "-pix_fmt", "yuv420p", "-c:a", "aac", *extra, "-f", fmt, str(dest)],
        check=True, capture_output=True)
    return dest


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    m = {
        "src": _encode(d / "src.ts", 10),
        "second": _encode(d / "second.ts", 4, freq=880),  # timestamps restart: a backward jump
        "later": _encode(d / "later.ts", 4, "-output_ts_offset", "100"),  # a forward jump
        "mp4": _encode(d / "clip.mp4", 2, fmt="mp4"),
    }
    for name, a, b in (("restart", "src", "second"), ("jump", "src", "later")):
        m[name] = d / f"{name}.ts"
        m[name].write_bytes(m[a].read_bytes() + m[b].read_bytes())
    return m


def video_payloads(path: Path) -> list[bytes]:
    """The bytes of each video packet from the first keyframe on, in file order."""
    out: list[bytes] = []
    with av.open(str(path)) as c:
        for pkt in c.demux(c.streams.video[0]):
            if pkt.size and (out or pkt.is_keyframe):
                out.append(bytes(pkt))
    return out


class Recorder:
    """A Segmenter writing <n>.ts files into one folder, collecting what it reports."""

    def __init__(self, folder: Path, seconds: float, **kw):
        self.folder, self.cut, self.corrupt, self.n = folder, [], [], 0
        self.seg = Segmenter(self.path_for, seconds, self.cut.append,
                             on_corrupt=lambda p, why: self.corrupt.append((p, why)), **kw)

    def path_for(self, start) -> Path:
        self.n += 1
        return self.folder / "2026-01-01" / f"{self.n:03d}.ts"

    def leftovers(self) -> list[Path]:
        return [p for p in self.folder.rglob("*") if p.name.endswith(".part") or p.name.startswith(".")]


class SlowReader:
    """A live-ish stream: small reads with a pause, optionally failing or blocking after `limit` bytes."""

    def __init__(self, path: Path, chunk: int = 8192, pause: float = 0.0, limit: int | None = None,
                 then: str = "eof"):
        self.f = open(path, "rb")
        self.chunk, self.pause, self.limit, self.then = chunk, pause, limit, then
        self.served = 0
        self.closed = threading.Event()

    def read(self, n: int) -> bytes:
        if self.closed.is_set():
            raise ValueError("read of closed stream")
        if self.limit is not None and self.served >= self.limit:
            if self.then == "raise":
                raise OSError("connection reset by peer")
            if self.then == "block":  # like a socket with no data: only close() ends it
                self.closed.wait()
                raise ValueError("read of closed stream")
            return b""
        if self.pause:
            time.sleep(self.pause)
        want = min(n, self.chunk) if self.limit is None else min(n, self.chunk, self.limit - self.served)
        data = self.f.read(want)
        self.served += len(data)
        return data

    def close(self) -> None:
        self.closed.set()
        self.f.close()


def assert_committed(rec: Recorder) -> None:
    """Every reported segment is a whole, decodable file as reported; nothing half-written remains."""
    assert rec.leftovers() == []
    for seg in rec.cut:
        assert isinstance(seg, CutSegment)
        assert seg.path.exists() and not seg.path.name.endswith(".part")
        assert seg.bytes == seg.path.stat().st_size
        assert seg.sha256 == sha256_file(seg.path)
        assert probe(seg.path) == seg.info
        assert seg.start <= seg.end and seg.start.tzinfo is not None
    assert rec.seg.current_path is None
    assert rec.seg.segments == len(rec.cut)
    assert rec.seg.bytes_written == sum(s.bytes for s in rec.cut)


# segmenting ----------------------------------------------------------------------------------

def test_cuts_a_file_into_fixed_length_segments_without_loss(media, tmp_path):
    rec = Recorder(tmp_path, 3)
    with open(media["src"], "rb") as f:
        assert rec.seg.run(f, threading.Event()) == "ended"
    assert_committed(rec)
    src = probe(media["src"])
    assert 3 <= len(rec.cut) <= 4
    durations = [s.info.duration_s for s in rec.cut]
    assert all(abs(d - 3) <= 1 / FPS for d in durations[:-1])  # cut on the keyframe at 3 s
    assert 0 < durations[-1] <= 3 + 1
    assert abs(sum(durations) - src.duration_s) <= 1.0  # within one GOP
    assert [s.info.video_codec for s in rec.cut] == ["h264"] * len(rec.cut)
    assert {(s.info.width, s.info.height, s.info.audio_codec) for s in rec.cut} == {(320, 240, "aac")}
    starts = [s.start for s in rec.cut]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    # Remuxed, not re-encoded: the video packets are the source's, none lost or duplicated.
    expected = video_payloads(media["src"])
    assert sum(s.info.packets for s in rec.cut) == len(expected)
    assert [p for s in rec.cut for p in video_payloads(s.path)] == expected


def test_every_segment_decodes_fully(media, tmp_path):
    rec = Recorder(tmp_path, 3)
    with open(media["src"], "rb") as f:
        rec.seg.run(f, threading.Event())
    for seg in rec.cut:
        with av.open(str(seg.path)) as c:
            frames = sum(1 for _ in c.decode(video=0))
        assert frames == seg.info.packets


@pytest.mark.parametrize("name, second", [("restart", "second"), ("jump", "later")])
def test_a_timestamp_discontinuity_cuts_the_segment(media, tmp_path, name, second):
    rec = Recorder(tmp_path, 100)  # longer than the input: only the discontinuity cuts
    with open(media[name], "rb") as f:
        assert rec.seg.run(f, threading.Event()) == "ended"
    assert_committed(rec)
    durations = [s.info.duration_s for s in rec.cut]
    assert len(durations) == 2, durations
    assert durations == pytest.approx([10, 4], abs=0.1)  # no file spans the jump
    assert [s.info.packets for s in rec.cut] == [10 * FPS, 4 * FPS]


def test_stop_from_another_thread_commits_the_open_segment(media, tmp_path):
    rec = Recorder(tmp_path, 60)
    reader = SlowReader(media["src"], chunk=4096, pause=0.02)  # ~200 KB/s: the file lasts ~6 s
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    t0 = time.monotonic()
    assert rec.seg.run(reader, stop) == "stopped"
    assert time.monotonic() - t0 < 2.5
    assert_committed(rec)
    assert len(rec.cut) == 1 and 0 < rec.cut[0].info.packets < 10 * FPS


def test_closing_a_blocked_stream_after_stop_is_a_clean_stop(media, tmp_path):
    rec = Recorder(tmp_path, 60)
    reader = SlowReader(media["src"], limit=os.path.getsize(media["src"]) // 2, then="block")
    stop = threading.Event()

    def stop_and_close():
        stop.set()
        reader.close()  # what the recorder does when read() would block forever

    threading.Timer(1.0, stop_and_close).start()
    assert rec.seg.run(reader, stop) == "stopped"
    assert_committed(rec)
    assert len(rec.cut) == 1 and rec.cut[0].info.duration_s > 2


def test_finish_waits_for_the_next_cut_point(media, tmp_path):
    finish = threading.Event()
    rec = Recorder(tmp_path, 3)
    rec.seg.on_segment = lambda seg: (rec.cut.append(seg), finish.set())
    reader = SlowReader(media["src"])
    assert rec.seg.run(reader, threading.Event(), finish) == "finished"
    assert_committed(rec)
    assert len(rec.cut) == 1 and rec.cut[0].info.duration_s == pytest.approx(3, abs=1 / FPS)
    assert reader.served < os.path.getsize(media["src"])  # it did not read on to the end


def test_finish_set_midway_still_ends_on_a_full_segment(media, tmp_path):
    finish = threading.Event()
    rec = Recorder(tmp_path, 3)
    reader = SlowReader(media["src"], chunk=4096, pause=0.02)
    threading.Timer(0.5, finish.set).start()
    assert rec.seg.run(reader, threading.Event(), finish) == "finished"
    assert_committed(rec)
    assert rec.cut and all(s.info.duration_s == pytest.approx(3, abs=1 / FPS) for s in rec.cut)


def test_a_read_error_commits_the_open_segment_then_raises(media, tmp_path):
    rec = Recorder(tmp_path, 3)
    reader = SlowReader(media["src"], limit=int(os.path.getsize(media["src"]) * 0.6), then="raise")
    with pytest.raises(StreamError, match="stream dropped: .*connection reset"):
        rec.seg.run(reader, threading.Event())
    assert_committed(rec)
    assert len(rec.cut) == 2  # 0-3 s whole, then what was open when the read failed
    assert rec.cut[0].info.duration_s == pytest.approx(3, abs=1 / FPS)
    assert 1 < rec.cut[1].info.duration_s < 4


@pytest.mark.parametrize("data", [b"", os.urandom(300_000)], ids=["empty", "garbage"])
def test_an_unreadable_stream_is_a_stream_error(tmp_path, data):
    rec = Recorder(tmp_path, 3)
    with pytest.raises(StreamError, match="stream dropped"):
        rec.seg.run(io.BytesIO(data), threading.Event())
    assert rec.cut == [] and rec.leftovers() == []


def test_a_segment_that_fails_its_probe_goes_to_on_corrupt(media, tmp_path, monkeypatch):
    def failing_probe(path):
        raise CorruptMedia("no decodable video frame")

    monkeypatch.setattr(segments, "probe", failing_probe)
    rec = Recorder(tmp_path, 3)
    with open(media["src"], "rb") as f:
        assert rec.seg.run(f, threading.Event()) == "ended"
    assert rec.cut == [] and len(rec.corrupt) == 4
    assert all(p.name.endswith(".ts.part") and why == "no decodable video frame" for p, why in rec.corrupt)
    assert rec.leftovers() == []  # the callback did not move them, so the parts were deleted


# probe -------------------------------------------------------------------------------------------

def test_probe_reports_the_media(media):
    info = probe(media["src"])
    assert (info.video_codec, info.width, info.height, info.audio_codec) == ("h264", 320, 240, "aac")
    assert info.fps == pytest.approx(FPS) and info.duration_s == pytest.approx(10, abs=0.05)
    assert info.packets == 10 * FPS
    assert probe(media["mp4"]).packets == 2 * FPS


def test_probe_rejects_bad_files_with_a_reason(media, tmp_path):
    data = media["src"].read_bytes()
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[: len(data) // 2 + 97])  # ends inside a TS packet
    with pytest.raises(CorruptMedia, match="truncated"):
        probe(cut)
    mp4 = media["mp4"].read_bytes()
    (tmp_path / "cut.mp4").write_bytes(mp4[: len(mp4) // 2])
    with pytest.raises(CorruptMedia, match="unreadable container"):
        probe(tmp_path / "cut.mp4")
    # seeded: now and then os.urandom's bytes parse as a container with no video stream (a flaky run)
    (tmp_path / "garbage.ts").write_bytes(random.Random(0).randbytes(50_000))
    with pytest.raises(CorruptMedia, match="unreadable container"):
        probe(tmp_path / "garbage.ts")
    audio = tmp_path / "audio.ts"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(media["src"]), "-vn", "-c", "copy", str(audio)], check=True)
    with pytest.raises(CorruptMedia, match="no video stream"):
        probe(audio)


# salvage ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", [0.37, 0.71, "mid-packet"])
def test_salvage_recovers_the_whole_packets_of_a_cut_off_part(media, tmp_path, where):
    data = media["src"].read_bytes()
    size = len(data) // 2 + 97 if where == "mid-packet" else int(len(data) * where)
    part = tmp_path / "x.ts.part"
    part.write_bytes(data[:size])
    dest = tmp_path / "out" / "x.ts"
    info = salvage(part, dest)
    assert info is not None and dest.exists()
    assert 0 < info.packets < 10 * FPS
    assert probe(dest) == info
    assert video_payloads(dest) == video_payloads(media["src"])[: info.packets]  # a clean prefix
    assert [p.name for p in dest.parent.iterdir()] == ["x.ts"]


@pytest.mark.parametrize("content", ["random", "headers-only", "empty"])
def test_salvage_returns_none_when_nothing_decodes(media, tmp_path, content):
    part = tmp_path / "x.ts.part"
    part.write_bytes({"random": os.urandom(200_000), "headers-only": media["src"].read_bytes()[:188 * 3],
                      "empty": b""}[content])
    dest = tmp_path / "out" / "x.ts"
    assert salvage(part, dest) is None
    assert not dest.exists()
    assert not dest.parent.exists() or list(dest.parent.iterdir()) == []


def test_salvage_of_a_missing_file_is_none(tmp_path):
    assert salvage(tmp_path / "nope.ts.part", tmp_path / "nope.ts") is None


def test_sha256_file(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"x" * 3_000_000)
    assert sha256_file(p) == hashlib.sha256(b"x" * 3_000_000).hexdigest()
