"""Storage layout: paths stay inside the root, writes are atomic, quarantine keeps the reason."""

import json
import os
from datetime import datetime, timezone

import pytest

from stream2dataset.layout import Storage, atomic_output, atomic_write_bytes, utc_stamp

T = datetime(2026, 11, 23, 10, 35, 12, 123456, tzinfo=timezone.utc)


def test_segment_paths_follow_the_layout(tmp_path):
    s = Storage(tmp_path)
    assert s.segment_path("twitch", "shroud", T) == tmp_path / "raw/twitch/shroud/2026-11-23/20261123T103512.123Z.ts"
    assert s.segment_id("twitch", "shroud", utc_stamp(T)) == "twitch.shroud.20261123T103512.123Z"


@pytest.mark.parametrize("platform, channel, key", [
    ("twitch", "../etc", None), ("..", "ok", None), ("twitch", "ok", "../../x"), ("twitch", "a/b", None),
    ("twitch", "ok", "a b"),
])
def test_no_path_escapes_the_root(tmp_path, platform, channel, key):
    with pytest.raises(ValueError):
        Storage(tmp_path).segment_path(platform, channel, T, key=key)


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "a" / "file.bin"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert not target.exists() and os.listdir(target.parent) == []
    atomic_write_bytes(target, b"whole")
    assert target.read_bytes() == b"whole" and os.listdir(target.parent) == ["file.bin"]
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's private 0600


def test_quarantine_moves_file_with_reason(tmp_path):
    s = Storage(tmp_path)
    bad = s.segment_path("hls", "demo", T)
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"garbage")
    dest = s.quarantine(bad, "no video stream")
    assert not bad.exists() and dest.read_bytes() == b"garbage"
    assert dest.is_relative_to(tmp_path / "quarantine" / "raw" / "hls" / "demo")
    reason = json.loads(dest.with_name(dest.name + ".reason.json").read_text())
    assert reason["reason"] == "no video stream"


def test_retention_deletes_only_processed_raw_after_keep_hours(tmp_path):
    from stream2dataset.dataset.manifest import write_segment
    from stream2dataset.service.retention import prune_raw

    s = Storage(tmp_path)
    ids = []
    for i in range(3):
        path = s.segment_path("hls", "demo", T.replace(second=i))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        seg_id = s.segment_id("hls", "demo", path.stem)
        ids.append(seg_id)
        write_segment(s, {"segment_id": seg_id, "channel": "demo", "platform": "hls", "source": "u",
                          "path": str(path.relative_to(tmp_path)), "start": T, "end": T, "duration_s": 1.0,
                          "bytes": 1, "status": "ok", "config_hash": "h", "recorded_at": T})
    for seg_id in ids[:2]:  # two were processed, one hour ago
        marker = s.done_marker(seg_id)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        os.utime(marker, (marker.stat().st_mtime - 3600,) * 2)
    assert prune_raw(s, keep_hours=2) == []
    assert prune_raw(s, keep_hours=0.5) == ids[:2]
    assert [p.name for p in (tmp_path / "raw").rglob("*.ts")] == [f"{ids[2].split('.', 2)[2]}.ts"]
