"""The service's processing pool on a real local Ray: segments committed to the manifest are
processed as they come by actors that live as long as the pool, exactly once, even when an actor dies."""

import shutil
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from stream2dataset.config import parse_config
from stream2dataset.dataset import manifest
from stream2dataset.dataset.compaction import compaction_lock
from stream2dataset.ingest.segments import probe
from stream2dataset.layout import Storage
from stream2dataset.media import sha256_file
from stream2dataset.service.pool import ProcessingPool

START = datetime(2026, 12, 4, 10, tzinfo=timezone.utc)


def config(root: Path, concurrency: int = 2):
    return parse_config({"storage": {"root": str(root)},
                         "processing": {"outputs": ["facecam"], "sample_fps": 2, "min_crop_px": 32,
                                        "interval_s": 0.5, "concurrency": concurrency}})


def commit(storage: Storage, videos: list[Path], first: int = 0) -> list[str]:
    """What a recorder does: the file under raw/, then its manifest row."""
    ids = []
    for i, video in enumerate(videos, start=first):
        t = START + timedelta(seconds=i)
        path = storage.segment_path("hls", "cam", t)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(video, path)
        info = probe(path)
        sid = storage.segment_id("hls", "cam", path.stem)
        manifest.write_segment(storage, manifest.segment_row(
            segment_id=sid, channel="cam", platform="hls", source="test", path=path, storage=storage, start=t,
            end=t + timedelta(seconds=info.duration_s), info=info, nbytes=path.stat().st_size,
            sha256=sha256_file(path), status="ok", config_hash="test"))
        ids.append(sid)
    return ids


def run_until(pool: ProcessingPool, done, timeout: float = 120, during=lambda: None) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"pool did not finish: {pool.status()}"
        pool.step()
        during()
        time.sleep(0.05)


def frame_ids(storage: Storage) -> list[str]:
    with compaction_lock(storage):  # the pool's commits compact shards in the background
        return [i for p in sorted((storage.root / "dataset" / "frames").rglob("*.parquet"))
                for i in pq.read_table(p, columns=["frame_id"])["frame_id"].to_pylist()]


def all_done(pool: ProcessingPool, ids: list[str]):
    """Every segment committed and the round after it (dedup, status) finished."""
    return lambda: (all(pool.storage.done_marker(s).exists() for s in ids) and pool.status()["backlog"] == 0
                    and not (pool.committer and pool.committer.is_alive()))


@pytest.mark.slow  # ~15 s on the 2-core machine
def test_pool_processes_segments_as_they_come_with_the_same_actors(tmp_path, footage, ray_local):
    cfg = config(tmp_path / "data")
    storage = Storage.of(cfg)
    videos = sorted(footage.glob("*.ts"))
    pool = ProcessingPool(cfg)
    try:
        first = commit(storage, videos[:4])
        run_until(pool, all_done(pool, first))
        actors = {a["handle"]._actor_id for a in pool.actors}
        assert pool.status()["backlog"] == 0 and "crops kept" in pool.status()["last"]
        later = commit(storage, videos[4:], first=4)  # a recorder commits more while the pool runs
        run_until(pool, all_done(pool, later))
        assert {a["handle"]._actor_id for a in pool.actors} <= actors, "new actors for the second batch"
        ids = frame_ids(storage)
        assert len(ids) == len(set(ids)) and len(ids) >= 2 * len(videos)  # every segment's crops, once
        assert pool.status()["latency_p95_s"] is not None
        steps = pool.status()["round_s"]  # the last round's cost by step, for an operator to watch over time
        assert set(steps) >= {"commit", "dedup", "compact"} and all(s >= 0 for s in steps.values())
    finally:
        pool.shutdown()


@pytest.mark.slow  # ~25 s on the 2-core machine
def test_a_killed_pool_actor_is_restarted_and_no_row_is_lost_or_doubled(tmp_path, footage, ray_local):
    videos = sorted(footage.glob("*.ts"))
    reference = config(tmp_path / "ref")
    pool = ProcessingPool(reference)
    try:
        ids = commit(Storage.of(reference), videos)
        run_until(pool, all_done(pool, ids))
    finally:
        pool.shutdown()
    expected = sorted(frame_ids(Storage.of(reference)))

    cfg = config(tmp_path / "data")
    storage = Storage.of(cfg)
    pool = ProcessingPool(cfg)
    killed = []

    def kill_once() -> None:  # an actor dies with windows in hand
        busy = [a for a in pool.actors if a["inflight"]]
        if busy and not killed:
            ray_local.kill(busy[0]["handle"], no_restart=False)
            killed.append(busy[0])

    try:
        ids = commit(storage, videos)
        run_until(pool, all_done(pool, ids), during=kill_once)
    finally:
        pool.shutdown()
    assert killed
    assert sorted(frame_ids(storage)) == expected


@pytest.mark.slow  # ~15 s on the 2-core machine
def test_the_pool_finds_segments_compacted_before_they_were_processed(tmp_path, footage, ray_local):
    """Segments whose manifest files went into a period file (the service was down an hour) are
    still found: the period file is marked open, and the pool reads those."""
    import os

    from stream2dataset.dataset.compaction import compact

    cfg = config(tmp_path / "data")
    storage = Storage.of(cfg)
    ids = commit(storage, sorted(footage.glob("*.ts"))[:3])
    old = time.time() - 3 * 3600
    for path in manifest.manifest_files(storage.root):
        os.utime(path, (old, old))
    assert compact(storage)
    files = manifest.manifest_files(storage.root)
    assert len(files) == 1 and files[0].name.endswith(".open.parquet")
    pool = ProcessingPool(cfg)
    try:
        run_until(pool, all_done(pool, ids))
        ids_after = frame_ids(storage)
        assert len(ids_after) == len(set(ids_after)) >= 3  # every segment's crops, once (compacted or not)
    finally:
        pool.shutdown()
