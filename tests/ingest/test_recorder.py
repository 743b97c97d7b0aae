"""The channel recorder on a real live HLS server on loopback, through streamlink and PyAV."""

import itertools
import shutil
import subprocess

import pytest

from stream2dataset.config import load_config
from stream2dataset.dataset.manifest import read_segments
from stream2dataset.ingest import ChannelRecorder
from stream2dataset.ingest.segments import probe
from stream2dataset.layout import Storage

from ..conftest import wait_for, write_config


LOOP_S = 8  # the `footage` fixture's length: the live HLS server loops it


def recorder_for(tmp_path, url, start=True, **recording):
    cfg = load_config(write_config(tmp_path, [{"source": url, "name": "cam"}], **recording))
    return ChannelRecorder(cfg, "cam", start=start), Storage(cfg.storage.root)


def assert_manifest_sound(storage):
    rows = read_segments(storage).to_pylist()
    ids = [r["segment_id"] for r in rows]
    assert len(ids) == len(set(ids)), "duplicate segment rows"
    for r in rows:
        info = probe(storage.root / r["path"])  # a segment in the manifest always decodes
        assert info.width == 640 and r["width"] == 640 and r["duration_s"] > 0
    assert not list((storage.root / "raw").rglob("*.part")), "a .part was left visible in raw/"
    on_disk = {str(p.relative_to(storage.root)) for p in (storage.root / "raw").rglob("*.ts")}
    assert on_disk == {r["path"] for r in rows}, "files and manifest disagree"
    return rows


@pytest.mark.slow  # ~6 s on the 2-core machine
def test_records_fixed_length_segments_from_live_hls(tmp_path, hls, footage):
    url = hls.add_stream("cam", footage)
    rec, storage = recorder_for(tmp_path, url)
    wait_for(lambda: rec.status()["segments"] >= 3, 30, what="3 segments")
    final = rec.stop()
    assert final["state"] == "stopped"
    rows = assert_manifest_sound(storage)
    assert len(rows) >= 3 and final["segments"] == len(rows)
    durations = [r["duration_s"] for r in rows]
    # Segments are 2 s, except where the source cut them: the last by stop, and any that ends at one
    # of the server's loop points (it replays the 8 s footage with a discontinuity, which ends the
    # segment). Segments tile the stream, so such short ones end a whole number of loops apart.
    kept = durations[:-1]
    assert all(d <= 4.1 for d in kept) and any(d >= 1.9 for d in kept), durations
    ends = list(itertools.accumulate(durations))[:-1]
    short_ends = [end for d, end in zip(kept, ends) if d < 1.9]
    apart = [end - short_ends[0] for end in short_ends]
    assert all(abs(t - LOOP_S * round(t / LOOP_S)) <= 0.3 for t in apart), (durations, short_ends)
    assert [r["start"] for r in rows] == sorted(r["start"] for r in rows)
    assert {r["video_codec"] for r in rows} == {"h264"} and {r["audio_codec"] for r in rows} == {"aac"}
    assert all(r["config_hash"] == rec.config_hash for r in rows)
    assert (storage.root / "configs" / f"{rec.config_hash}.yaml").exists()  # config saved beside its output


def test_offline_channel_is_polled_and_going_live_is_noticed(tmp_path, hls, footage):
    url = hls.add_stream("cam", footage)
    hls.set_state("cam", "offline")
    rec, storage = recorder_for(tmp_path, url, poll_interval_s=1.0)
    wait_for(lambda: rec.status()["state"] == "offline", 15, what="offline state")
    polls = hls.stats("cam").playlist_requests
    wait_for(lambda: hls.stats("cam").playlist_requests >= polls + 2, 5, what="two more polls")
    hls.set_state("cam", "live")
    wait_for(lambda: rec.status()["state"] == "recording", 5, what="recording within a poll interval")
    wait_for(lambda: rec.status()["segments"] >= 1, 20, what="a segment")
    rec.stop()
    assert_manifest_sound(storage)


def test_server_errors_mean_backoff_not_a_crash(tmp_path, hls, footage):
    url = hls.add_stream("cam", footage)
    hls.set_state("cam", "error")
    rec, storage = recorder_for(tmp_path, url, backoff_initial_s=0.2, backoff_max_s=0.8)
    wait_for(lambda: rec.status()["state"] == "backoff", 15, what="backoff")
    st = rec.status()
    assert "500" in st["last_error"]
    seen = set()
    wait_for(lambda: seen.add(rec.status()["detail"]) or "retry in 0.8s" in seen, 10, interval=0.02,
             what="backoff doubling to its cap")
    assert {"retry in 0.2s", "retry in 0.4s", "retry in 0.8s"} <= seen
    hls.set_state("cam", "live")
    wait_for(lambda: rec.status()["segments"] >= 1, 30, what="recovery after errors")
    rec.stop()
    assert_manifest_sound(storage)


def test_stream_that_ends_and_comes_back(tmp_path, hls, footage):
    url = hls.add_stream("cam", footage)
    rec, storage = recorder_for(tmp_path, url)
    wait_for(lambda: rec.status()["segments"] >= 1, 30, what="a segment")
    hls.set_state("cam", "ended")
    wait_for(lambda: "stream ended" in rec.status()["detail"], 30, what="ended state")
    n = rec.status()["segments"]
    hls.set_state("cam", "live")
    wait_for(lambda: rec.status()["segments"] >= n + 1, 30, what="recording again")
    rec.stop()
    assert_manifest_sound(storage)


def test_disk_floor_finishes_segment_then_pauses(tmp_path, hls, footage, monkeypatch):
    monkeypatch.setattr(ChannelRecorder, "DISK_CHECK_S", 0.2)
    url = hls.add_stream("cam", footage)
    rec, storage = recorder_for(tmp_path, url, segment_seconds=4)
    wait_for(lambda: rec.status()["state"] == "recording" and rec.status()["bytes"] > 0, 30, what="recording")
    rec.settings = rec.settings.model_copy(update={"min_free_gb": 1e9})  # the floor is now above the free space
    wait_for(lambda: rec.status()["state"] == "paused", 15, what="paused")
    st = rec.status()
    assert st["detail"].startswith("disk:") and "floor 1e+09 GB" in st["detail"]
    assert st["segments"] >= 1  # the open segment was finished, not dropped
    rec.stop()
    assert_manifest_sound(storage)


def test_recovery_salvages_a_killed_part_and_quarantines_garbage(tmp_path, hls, footage):
    url = hls.add_stream("cam", footage)
    rec, storage = recorder_for(tmp_path, url)
    wait_for(lambda: rec.status()["segments"] >= 2, 30, what="2 segments")
    rec.stop()
    rows = read_segments(storage).to_pylist()
    src = storage.root / rows[0]["path"]
    day = src.parent
    # What a killed recorder leaves: a segment cut off mid-write, and one that never got a byte of video.
    data = src.read_bytes()
    (day / "20990101T000000.000Z.ts.part").write_bytes(data[: int(len(data) * 0.6)])
    (day / "20990101T000100.000Z.ts.part").write_bytes(b"\x47" + b"\x00" * 5000)
    # And a finished file that was renamed into place but never got its manifest row.
    shutil.copy(src, day / "20990101T000200.000Z.ts")
    rec2, _ = recorder_for(tmp_path, url, start=False)
    assert rec2.recovered == 3
    after = {r["segment_id"]: r for r in read_segments(storage).to_pylist()}
    salvaged = after["hls.cam.20990101T000000.000Z"]
    assert salvaged["status"] == "salvaged" and 0 < salvaged["duration_s"] < rows[0]["duration_s"]
    assert after["hls.cam.20990101T000200.000Z"]["status"] == "ok"
    assert "hls.cam.20990101T000100.000Z" not in after
    reasons = list((storage.root / "quarantine").rglob("*.reason.json"))
    assert len(reasons) == 1 and "nothing decodable" in reasons[0].read_text()
    assert_manifest_sound(storage)
    assert ChannelRecorder(load_config(tmp_path / "stream2dataset.yaml"), "cam", start=False).recovered == 0


def test_file_channel_ingests_videos_once_and_quarantines_corrupt(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(2):
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate=25:d={1 + i}",
                        "-c:v", "libx264", "-preset", "ultrafast", str(videos / f"dance{i}.mp4")], check=True)
    (videos / "broken.mp4").write_bytes(b"not a video at all" * 100)
    cfg_path = write_config(tmp_path, [{"source": str(videos), "name": "dances"}])
    rec = ChannelRecorder(load_config(cfg_path), "dances")
    assert rec.wait(60)
    storage = Storage(load_config(cfg_path).storage.root)
    rows = read_segments(storage).to_pylist()
    assert sorted(r["title"] for r in rows) == ["dance0.mp4", "dance1.mp4"]
    assert [round(r["duration_s"]) for r in sorted(rows, key=lambda r: r["title"])] == [1, 2]
    assert len(list((storage.root / "quarantine").rglob("*.reason.json"))) == 1
    again = ChannelRecorder(load_config(cfg_path), "dances")
    assert again.wait(60)
    assert read_segments(storage).num_rows == 2  # the archive keeps a re-run from adding duplicates
