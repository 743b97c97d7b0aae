"""Compaction: the manifest's closed periods and small shards merged, the same rows seen before,
during (at every step, and after a kill) and after; snapshots kept whole until `snapshot rm`."""

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pyarrow.parquet as pq
import pytest

from stream2dataset.dataset import FRAME_SCHEMA, commit_segments
from stream2dataset.dataset.writer import stage_rows
from stream2dataset.dataset.catalog import query
from stream2dataset.dataset.compaction import (FANOUT, TIER_BASE, Busy, ShardWatch, _tier, begin, compact,
                                               compaction_lock, plan_compaction, publish, recover_compactions,
                                               write_outputs)
from stream2dataset.dataset.live import parquet_files
from stream2dataset.dataset.manifest import (has_segment, manifest_files, pending_segments, read_segments,
                                             write_segment)
from stream2dataset.dataset.snapshots import create_snapshot, load_snapshot, open_snapshot, remove_snapshot
from stream2dataset.layout import COMPACT, RETIRED, Storage

from .test_writer import T0, frame_rows, stage_segments

H0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
NOW = (H0 + timedelta(hours=3, minutes=30)).timestamp()  # 12:30 on 2026-03-02: the day is still open


def manifest_row(storage: Storage, channel: str, start: datetime, raw: bool) -> dict:
    key = start.strftime("%Y%m%dT%H%M%S.000Z")
    path = storage.segment_path("twitch", channel, start, key)
    if raw:  # a raw file still there and no done marker: processing has not finished it
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"ts")
    return {"segment_id": storage.segment_id("twitch", channel, key), "channel": channel, "platform": "twitch",
            "source": f"https://twitch.tv/{channel}", "source_id": None, "title": None,
            "path": path.relative_to(storage.root).as_posix(), "start": start, "end": start + timedelta(minutes=10),
            "duration_s": 600.0, "bytes": 1000, "video_codec": "h264", "width": 1280, "height": 720, "fps": 30.0,
            "audio_codec": "aac", "sha256": "0" * 64, "status": "ok", "config_hash": "abc",
            "recorded_at": start + timedelta(minutes=10)}


@pytest.fixture
def storage(tmp_path):
    (tmp_path / "stream2dataset.yaml").write_text("storage:\n  root: root\ndataset:\n  shard_target_mb: 0.05\n")
    storage = Storage(tmp_path / "root")
    commit_segments(storage, stage_segments(storage, segments=6, windows=3, rows=10, image_bytes=200),
                    target_mb=0.002)  # many small shards
    for channel in ("alice", "bob"):
        for i in range(24):  # 10-minute segments over four hours: 09:00 to 12:50
            start = H0 + timedelta(minutes=10 * i)
            path = write_segment(storage, manifest_row(storage, channel, start, raw=(channel == "bob" and i == 3)))
            os.utime(path, (start.timestamp() + 700,) * 2)  # written as the segment ended
    return storage


def view(storage: Storage) -> dict:
    """What every reader sees: SQL counts and ids, the manifest's rows, pending work."""
    counts = {t: query(storage.root, f"SELECT count(*), count(DISTINCT {key}) FROM {t}")[0].to_pylist()[0]
              for t, key in (("segments", "segment_id"), ("frames_all", "frame_id"), ("drops", "segment_id"))}
    drops = query(storage.root, "SELECT sum(count) AS n FROM drops")[0].to_pylist()[0]["n"]
    content = query(storage.root, "SELECT md5(string_agg(frame_id || phash || md5(image) || timestamp, ',' "
                                  "ORDER BY frame_id)) AS h FROM frames_all")[0].to_pylist()[0]["h"]
    return {"sql": counts, "drops": drops, "content": content, "manifest": sorted(read_segments(storage)["segment_id"].to_pylist()),
            "pending": [s["segment_id"] for s in pending_segments(storage)]}


def files(storage: Storage) -> dict[str, int]:
    return {p.relative_to(storage.root).as_posix(): p.stat().st_mtime_ns
            for p in storage.root.rglob("*") if p.is_file() and ".cache" not in p.parts and p.name != "catalog.duckdb"}


def test_readers_see_the_same_rows_in_fewer_files(storage):
    for i in range(18, 24):  # alice's segments of 12:00-12:50 are processed
        storage.done_marker(f"twitch.alice.20260302T12{(i - 18) * 10:02d}00.000Z").write_text("{}")
    before = view(storage)
    assert len(before["manifest"]) == 48 and before["pending"] == ["twitch.bob.20260302T093000.000Z"]
    shards_before = len(list(storage.table_dir("frames").rglob("*.parquet")))
    done = compact(storage, target_mb=0.05, now=NOW)
    assert view(storage) == before
    periods = sorted(p.relative_to(storage.segments_manifest).as_posix() for p in manifest_files(storage.root)
                     if "_periods" in p.parts)
    # One file of the day per channel; bob's holds the unprocessed segment, so it is marked open
    # and the search for pending work still reads it.
    assert [p.split(".")[0] for p in periods] == ["alice/_periods/2026-03-02", "bob/_periods/2026-03-02"]
    assert [p for p in periods if p.endswith(".open.parquet")] == [periods[1]]
    # Left as they were: unprocessed segments committed within the hour (11:20-11:50 for alice,
    # whose processed ones went at once; 11:20-12:50 for bob).
    assert len(manifest_files(storage.root)) == 2 + 4 + 10
    assert has_segment(storage, "alice", "twitch.alice.20260302T090000.000Z")
    assert not has_segment(storage, "alice", "twitch.alice.20260302T090000.001Z")
    frames_after = sorted(storage.table_dir("frames").rglob("*.parquet"))
    assert len(frames_after) < shards_before and all(p.name.startswith("compact-") for p in frames_after)
    assert all(pq.read_schema(p).remove_metadata() == FRAME_SCHEMA.remove_metadata() for p in frames_after)
    assert not list((storage.root / COMPACT).glob("*.json"))
    assert any(g["table"] == "frames" for g in done)

    # The next day: the day's file goes into the month's, with the segments left.
    compact(storage, target_mb=0.05, now=(H0 + timedelta(days=1)).timestamp())
    assert view(storage) == before
    assert sorted(p.relative_to(storage.segments_manifest).as_posix().split(".")[0]
                  for p in manifest_files(storage.root)) == ["alice/_periods/2026-03", "bob/_periods/2026-03"]
    assert compact(storage, target_mb=0.05, now=(H0 + timedelta(days=1)).timestamp()) == []  # nothing left due


def test_dry_run_changes_nothing(storage, cli):
    before = files(storage)
    out = cli(storage.root, "compact", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "would merge" in out.stdout and "dry run: nothing changed" in out.stdout
    assert files(storage) == before
    out = cli(storage.root, "compact")
    assert out.returncode == 0 and "merged" in out.stdout
    assert files(storage) != before
    assert cli(storage.root, "compact").stdout.strip() == "nothing to compact"


def test_a_snapshot_survives_compaction_until_removed(storage, cli):
    first = create_snapshot(storage, "v1")
    create_snapshot(storage, "v2", where="channel = 'alice'")
    count = open_snapshot(storage, "v1").execute("SELECT count(*) FROM frames_all").fetchall()
    compact(storage, target_mb=0.05, now=NOW)
    load_snapshot(storage, "v1")  # every pinned file there, sha256 checked
    assert open_snapshot(storage, "v1").execute("SELECT count(*) FROM frames_all").fetchall() == count
    retired = sorted(p.relative_to(storage.root / RETIRED).as_posix() for p in (storage.root / RETIRED).rglob("*.parquet"))
    assert retired == sorted(e["path"] for e in first["files"]["frames"] + first["files"]["clips"])
    assert query(storage.root, "SELECT count(*) AS n FROM frames_all")[0].to_pylist() == [{"n": count[0][0]}]

    out = cli(storage.root, "snapshot", "rm", "v1")
    assert out.returncode == 0 and "freed" in out.stdout, out.stderr
    pinned_by_v2 = {e["path"] for e in load_snapshot(storage, "v2")["files"]["frames"]}
    left = {p.relative_to(storage.root / RETIRED).as_posix() for p in (storage.root / RETIRED).rglob("*.parquet")}
    assert left == pinned_by_v2 and left  # v2 pins alice's files: they stay
    assert open_snapshot(storage, "v2").execute("SELECT count(DISTINCT channel) FROM frames").fetchall() == [(1,)]
    assert remove_snapshot(storage, "v2") and not list((storage.root / RETIRED).rglob("*.parquet"))
    assert not (storage.snapshots_dir / "v1.json").exists()


def test_every_step_and_its_recovery_show_the_same_rows(storage):
    before = view(storage)
    for stop in ("begin", "write", "publish"):
        with compaction_lock(storage):
            groups = plan_compaction(storage, 0.05, NOW)
            assert groups
            intent = begin(storage, groups)
            assert view(storage) == before, "after the intent"
            if stop in ("write", "publish"):
                write_outputs(storage, intent, 0.05)
                assert view(storage) == before, "new files written, not published"
            if stop == "publish":
                publish(storage, intent)
                assert view(storage) == before, "published, old files still there"
        # killed here: the next compaction (or commit round) recovers first
        assert recover_compactions(storage) == 1
        assert view(storage) == before and not list((storage.root / COMPACT).glob("*.json"))
        shards = sorted(storage.table_dir("frames").rglob("*.parquet"))
        if stop == "publish":  # rolled forward
            assert all(p.name.startswith("compact-") for p in shards)
        else:  # rolled back: no compact- file is left
            assert not any(p.name.startswith("compact-") for p in shards)


@pytest.mark.slow  # ~5 s on the 2-core machine: five child processes
def test_killed_compactions_lose_and_double_no_row(storage, tmp_path):
    """SIGKILL a compacting process at random moments, then recover: the same rows every time."""
    before = view(storage)
    pristine = tmp_path / "pristine"
    shutil.copytree(storage.root, pristine)

    def start() -> subprocess.Popen:
        code = ("import sys; from stream2dataset.layout import Storage; "
                "from stream2dataset.dataset.compaction import compact; print('ready', flush=True); "
                f"compact(Storage({str(storage.root)!r}), 0.05, now={NOW})")
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"  # the imports are done: the kill lands in the work
        return proc

    proc = start()
    t0 = time.monotonic()
    proc.wait()
    took = time.monotonic() - t0  # the compaction alone
    assert view(storage) == before
    rng, interrupted = random.Random(3), 0
    for trial in range(4):
        shutil.rmtree(storage.root)
        shutil.copytree(pristine, storage.root)
        proc = start()
        time.sleep(rng.uniform(0, took))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        interrupted += bool(list((storage.root / COMPACT).glob("*.json")))
        assert view(storage) == before, f"trial {trial}: right after the kill"
        recover_compactions(storage)
        assert view(storage) == before and not list((storage.root / COMPACT).glob("*.json")), f"trial {trial}"
    assert interrupted >= 1, "the kills should land mid-compaction"


def test_cli_errors_are_one_line(storage, cli):
    out = cli(storage.root, "snapshot", "rm", "nope")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "no snapshot named 'nope'" in out.stderr
    with compaction_lock(storage):  # another compaction at work
        out = cli(storage.root, "compact")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "in progress" in out.stderr
    with pytest.raises(Busy):
        with compaction_lock(storage):
            compact(storage, wait=False)
    (storage.root.parent / "stream2dataset.yaml").write_text("storage:\n  root: nowhere\n")
    out = cli(storage.root, "compact", "--dry-run")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "storage root not found" in out.stderr


def test_readers_list_again_when_a_compaction_retires_a_file_they_listed(storage, monkeypatch):
    """The service compacts while `process`, the UI and the recorders read the manifest: a file
    listed a moment before may be gone by the read (its rows now in the period file)."""
    from stream2dataset.dataset import manifest

    for i in range(18, 24):
        storage.done_marker(f"twitch.alice.20260302T12{(i - 18) * 10:02d}00.000Z").write_text("{}")
    before = (sorted(read_segments(storage)["segment_id"].to_pylist()), pending_segments(storage))
    listing = manifest.manifest_files
    raced = []

    def compacted_after_listing(*args, **kwargs):
        files = listing(*args, **kwargs)
        if not raced:  # the first listing's files are retired before the reader opens them
            raced.append(compact(storage, target_mb=0.05, now=NOW))
        return files

    monkeypatch.setattr(manifest, "manifest_files", compacted_after_listing)
    assert sorted(read_segments(storage)["segment_id"].to_pylist()) == before[0]
    assert raced and raced[0]  # the compaction did retire files between the listing and the read
    raced.clear()
    assert pending_segments(storage) == before[1]
    raced.clear()
    assert has_segment(storage, "alice", "twitch.alice.20260302T090000.000Z")


def test_an_open_day_keeps_tens_of_shards_and_a_round_looks_only_where_it_wrote(tmp_path):
    """A service commits a small shard per channel every few seconds: the open day's folder is
    merged by size tiers (FANOUT at a time), so it never holds one file per commit, and a round
    that passes the folders it wrote to (ShardWatch) looks at no other."""
    storage = Storage(tmp_path / "root")
    now = (T0 + timedelta(seconds=60)).timestamp()  # the rows are of 2026-03-01, whose day is still open (grace)
    watch = ShardWatch(sweep_s=3600)
    assert watch.folders(now) is None  # the first round sweeps every folder
    assert watch.folders(now) is None  # still due: no compaction finished (one found the lock held)
    counts, rows = [], 0
    for r in range(3 * FANOUT):
        sid = f"twitch.bob.seg{r:03d}"
        stage_rows(storage, "frames", sid, f"{sid}.w0000", frame_rows(sid, "bob", 2, 100, seed=r), T0.timestamp())
        markers = {sid: {"segment_id": sid, "error": ""}}
        shards = commit_segments(storage, markers, target_mb=64)
        rows += 2
        watch.wrote({p.parent.relative_to(storage.root).as_posix() for p in shards})
        folders = watch.folders(now)
        compact(storage, target_mb=64, now=now, folders=folders)
        watch.compacted(folders, now)
        counts.append(len(parquet_files(storage.shard_dir("frames", "bob", "2026-03-01"))))
    assert max(counts) <= FANOUT and counts[-1] < FANOUT  # without tiers: 48 files by the end
    assert query(storage.root, "SELECT count(*) FROM frames_all")[0].to_pylist()[0]["count_star()"] == rows
    # A round that wrote nowhere plans no shard, though small ones wait in the open day.
    assert [g for g in plan_compaction(storage, 64, now=now, folders=[]) if g["table"] != "segments"] == []
    # The day's end: a sweep (or a round that wrote there) merges the rest into one shard.
    later = (T0 + timedelta(hours=2)).timestamp()
    assert watch.folders(later) is None
    compact(storage, target_mb=64, now=later, folders=None)
    assert len(parquet_files(storage.shard_dir("frames", "bob", "2026-03-01"))) == 1
    assert query(storage.root, "SELECT count(*) FROM frames_all")[0].to_pylist()[0]["count_star()"] == rows


def test_a_tiers_merge_lands_in_a_higher_tier():
    """FANOUT shards of one size tier merge into a shard of a higher tier, so no merge's output is
    merged again at its own tier (16 x 1 MB = 16 MB had stayed in the 1-16 MB tier and was
    rewritten with each new batch in a 30-minute load run)."""
    for tier in range(1, 4):
        low, high = TIER_BASE * FANOUT ** (tier - 1), TIER_BASE * FANOUT ** tier - 1
        assert _tier(low) == _tier(high) == tier
        assert _tier(FANOUT * low) > tier
    assert _tier(TIER_BASE - 1) == 0
