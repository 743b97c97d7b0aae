"""The writer: staged rows committed as size-bounded shards, killed at any moment and resumed."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stream2dataset.dataset import (FRAME_SCHEMA, SCHEMA_VERSION, commit_segments, frame_id,
                                    read_shard, recover_commits, stage_rows, write_shards)
from stream2dataset.dataset.schema import SCHEMA_KEY
from stream2dataset.errors import UserError
from stream2dataset.layout import Storage

T0 = datetime(2026, 3, 1, 23, 59, 30, tzinfo=timezone.utc)  # segments run past midnight


def frame_rows(segment_id: str, channel: str, n: int, image_bytes: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{
        "frame_id": frame_id(segment_id, i, "facecam"), "channel": channel, "platform": "twitch",
        "segment_id": segment_id, "timestamp": T0 + timedelta(seconds=i), "frame_index": i, "kind": "facecam",
        "width": 64, "height": 64, "image": rng.integers(0, 256, image_bytes, dtype=np.uint8).tobytes(),
        "image_format": "png", "crop_box": [0, 0, 64, 64], "detector": "mediapipe", "score": 0.9,
        "phash": int(rng.integers(0, 2**63)), "transforms": ["resize"], "config_hash": "abc",
    } for i in range(n)]


def stage_segments(storage: Storage, segments: int = 12, windows: int = 3, rows: int = 40,
                   image_bytes: int = 4000) -> dict[str, dict]:
    markers = {}
    for s in range(segments):
        sid = f"twitch.{'alice' if s % 2 else 'bob'}.seg{s:03d}"
        for w in range(windows):
            part = frame_rows(sid, sid.split(".")[1], rows, image_bytes, seed=s * 100 + w)
            for r in part:
                r["frame_index"] += w * rows
                r["frame_id"] = frame_id(sid, r["frame_index"], "facecam")
            stage_rows(storage, "frames", sid, f"{sid}.w{w:04d}", part, T0.timestamp())
        stage_rows(storage, "drops", sid, f"{sid}.w0000", [{
            "segment_id": sid, "channel": sid.split(".")[1], "platform": "twitch", "timestamp": T0,
            "reason": "no_face", "count": s}], T0.timestamp())
        markers[sid] = {"segment_id": sid, "error": ""}
    return markers


def committed_ids(storage: Storage) -> list[str]:
    ids = []
    for path in sorted(storage.table_dir("frames").rglob("*.parquet")):
        ids += read_shard(path, columns=["frame_id"])["frame_id"].to_pylist()
    return ids


def test_shards_are_bounded_grouped_and_formatted(tmp_path):
    storage = Storage(tmp_path)
    markers = stage_segments(storage)
    paths = commit_segments(storage, markers, target_mb=0.2, row_group_rows=50)
    frames = [p for p in paths if "/frames/" in str(p)]
    assert len(frames) > 4 and all(p.stat().st_size < 0.2 * 2**20 + 8 * 4000 + 65536 for p in frames)
    assert {p.parent.relative_to(storage.table_dir("frames")).as_posix() for p in frames} == \
        {"channel=alice/date=2026-03-01", "channel=bob/date=2026-03-01"}  # the segment's start date
    ids = committed_ids(storage)
    assert len(ids) == len(set(ids)) == 12 * 3 * 40
    meta = pq.ParquetFile(frames[0]).metadata
    assert meta.metadata[SCHEMA_KEY] == str(SCHEMA_VERSION).encode()
    assert max(meta.row_group(i).num_rows for i in range(meta.num_row_groups)) <= 50
    chunks = {meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i).compression
              for i in range(meta.num_columns)}
    assert chunks["image"] == "UNCOMPRESSED" and chunks["frame_id"] == "ZSTD"
    assert all(storage.done_marker(s).exists() for s in markers)
    assert not any(storage.stage_dir(s).exists() for s in markers)
    drops = list((storage.root / "dataset" / "drops").rglob("*.parquet"))
    assert sum(read_shard(p)["count"].to_pylist()[0] for p in drops) >= 0 and drops
    assert sum(pq.read_metadata(p).num_rows for p in drops) == 12


def test_shards_stream_rows_out_and_a_failure_publishes_nothing(tmp_path):
    """A 256-MB compaction merge read its inputs one at a time but held every row until the shard
    was full (the Supervisor's memory followed the biggest merge). Rows now go to the open shard a
    row group at a time: Arrow holds about one input table while 40 MB pass through one shard,
    the row groups are those of the whole shard sliced from its start, and a failure part-way
    leaves neither a shard nor a temp file."""
    def tables(fail_at: int | None = None):
        for k in range(40):  # 40 x 1 MB, one shard (target 256 MB)
            if k == fail_at:
                raise RuntimeError("input gone")
            peak.append(pa.total_allocated_bytes())
            yield pa.Table.from_pylist(frame_rows(f"s{k}", "c", 100, 10_000, seed=k), schema=FRAME_SCHEMA)

    peak: list[int] = []
    [path] = write_shards(tmp_path, "merge", FRAME_SCHEMA, tables(), row_group_rows=128)
    assert max(peak) < 8 * 2**20, max(peak)  # was 40 MB: every row until the shard closed
    meta = pq.ParquetFile(path).metadata
    assert meta.num_rows == 4000
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [128] * 31 + [32]
    assert read_shard(path)["frame_id"].to_pylist() == [r["frame_id"] for k in range(40)
                                                        for r in frame_rows(f"s{k}", "c", 100, 1, seed=k)]
    with pytest.raises(RuntimeError, match="input gone"):
        write_shards(tmp_path / "failed", "merge", FRAME_SCHEMA, tables(fail_at=20), row_group_rows=128)
    assert list((tmp_path / "failed").iterdir()) == []


def test_a_newer_schema_version_is_refused_with_the_fix(tmp_path):
    [path] = write_shards(tmp_path, "x", FRAME_SCHEMA, [pa.Table.from_pylist(frame_rows("s", "c", 2, 10, 0),
                                                                             schema=FRAME_SCHEMA)])
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({SCHEMA_KEY: b"99"}), path)
    with pytest.raises(UserError, match=r"schema version 99.*upgrade stream2dataset"):
        read_shard(path)


COMMIT = """
import sys
from stream2dataset.dataset import commit_segments
from stream2dataset.layout import Storage
import json
import os
commit_segments(Storage(sys.argv[1]), json.loads(open(sys.argv[2]).read()), target_mb=0.05, row_group_rows=20)
"""


def run_commit(root: Path, markers_file: Path, kill_after: float | None = None) -> float:
    """Run a commit in its own process (SIGKILLed after `kill_after` s); returns its wall time."""
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", COMMIT, str(root), str(markers_file)])
    if kill_after is None:
        assert proc.wait(120) == 0
    else:
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    return time.monotonic() - t0


@pytest.mark.slow  # ~7 s on the 2-core machine
def test_killed_commits_resume_to_exactly_the_undisturbed_rows(tmp_path):
    """SIGKILL the committing process at random moments, several times over, then resume."""
    template = tmp_path / "template"
    markers = stage_segments(Storage(template), segments=24)
    markers_file = tmp_path / "markers.json"
    markers_file.write_text(json.dumps(markers))

    undisturbed = tmp_path / "undisturbed"
    shutil.copytree(template, undisturbed)
    total = run_commit(undisturbed, markers_file)
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", "import stream2dataset.dataset"], check=True)
    started = time.monotonic() - t0  # the kills land between the imports and the end
    expected = sorted(committed_ids(Storage(undisturbed)))
    assert len(expected) == len(set(expected)) == 24 * 3 * 40

    rng = random.Random(7)
    interrupted = 0
    for trial in range(4):
        root = tmp_path / f"killed{trial}"
        shutil.copytree(template, root)
        for _ in range(3):  # kill it again while it recovers
            run_commit(root, markers_file, kill_after=rng.uniform(started, total))
            interrupted += any((root / "dataset" / "_commits").glob("*.json"))
            for path in Storage(root).table_dir("frames").rglob("*.parquet"):
                pq.read_metadata(path)  # whatever a reader can see is a whole shard
        run_commit(root, markers_file)
        got = sorted(committed_ids(Storage(root)))
        assert got == expected, f"trial {trial}: {len(got)} rows, {len(set(got))} distinct"
        shards = sorted(p.relative_to(root) for p in (root / "dataset").rglob("*.parquet")
                        if "_staging" not in p.parts)
        assert shards == sorted(p.relative_to(undisturbed) for p in (undisturbed / "dataset").rglob("*.parquet")
                                if "_staging" not in p.parts)
        assert all(Storage(root).done_marker(s).exists() for s in markers)
        assert not list((root / "dataset").rglob(".*.parquet.*.tmp")), "a killed shard's temp file is swept"
    assert interrupted >= 3, "the kills should land mid-commit"


def test_recover_replays_a_left_intent(tmp_path):
    storage = Storage(tmp_path)
    markers = stage_segments(storage, segments=2)
    # As if killed right after the intent: nothing written yet.
    intent = storage.root / "dataset" / "_commits" / "deadbeef.json"
    intent.parent.mkdir(parents=True)
    intent.write_text(json.dumps({"batch": "deadbeef", "markers": markers}))
    paths = recover_commits(storage)
    assert paths and all(p.name.startswith("deadbeef-") for p in paths)
    assert not intent.exists() and len(committed_ids(storage)) == 2 * 3 * 40
    assert commit_segments(storage, markers) == []  # done: nothing twice


def test_the_next_commit_sweeps_the_temp_files_a_killed_commit_left(tmp_path):
    """Issue 13, item 11: a commit killed while writing a shard leaves `.<shard>.<random>.tmp`."""
    storage = Storage(tmp_path)
    markers = stage_segments(storage, segments=2)
    batch = "deadbeef00000000"
    intent = storage.root / "dataset" / "_commits" / f"{batch}.json"
    intent.parent.mkdir(parents=True)
    intent.write_text(json.dumps({"batch": batch, "markers": markers}))  # killed after its intent...
    folder = storage.table_dir("frames") / "channel=bob" / "date=2026-03-01"
    folder.mkdir(parents=True)
    killed = folder / f".{batch}-0000.parquet.k1ll3d.tmp"  # ...half way through its first shard
    killed.write_bytes(b"PAR1" + bytes(1000))
    old = folder / ".thumbnails-0123456789abcdef-0000.parquet.0ld0ld.tmp"  # another writer's, long dead
    old.write_bytes(b"PAR1")
    os.utime(old, (time.time() - 2 * 3600,) * 2)
    live = folder / ".thumbnails-fedcba9876543210-0000.parquet.l1v3l1.tmp"  # a recorder writing it now
    live.write_bytes(b"PAR1")
    (intent.parent / f".{batch}.json.k1ll3d.tmp").write_bytes(b"{")  # an intent cut short, long ago
    os.utime(intent.parent / f".{batch}.json.k1ll3d.tmp", (time.time() - 2 * 3600,) * 2)

    more = stage_segments(Storage(tmp_path / "other"), segments=3)  # the next commit: one new segment
    new = {k: v for k, v in more.items() if k.endswith("002")}
    shutil.copytree(tmp_path / "other" / "dataset" / "_staging", storage.root / "dataset" / "_staging",
                    dirs_exist_ok=True)
    commit_segments(storage, new)
    assert not killed.exists() and not old.exists() and live.exists()
    assert not list(intent.parent.glob(".*.tmp"))
    ids = committed_ids(storage)
    assert len(ids) == len(set(ids)) == 3 * 3 * 40
