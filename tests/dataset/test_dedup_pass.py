"""The dedup pass over committed shards: links across segments, earliest kept, idempotent."""

from datetime import timedelta

import pyarrow.parquet as pq

from stream2dataset.dataset import commit_segments, stage_rows
from stream2dataset.dataset.catalog import open_catalog
from stream2dataset.dataset.dedup_pass import dedup_dataset
from stream2dataset.layout import Storage

from .test_writer import T0, frame_rows

BASE = 0x0F0F_1234_5678_9ABC


def make(storage: Storage, sid: str, channel: str, hashes: list[int], offset_s: int, kind: str = "facecam",
         dup_of: dict[int, str] | None = None) -> list[str]:
    rows = frame_rows(sid, channel, len(hashes), 50, seed=len(sid))
    for i, (row, h) in enumerate(zip(rows, hashes)):
        row.update(phash=h, kind=kind, timestamp=T0 + timedelta(seconds=offset_s + i),
                   dup_of=(dup_of or {}).get(i))
    stage_rows(storage, "frames", sid, f"{sid}.w0000", rows, T0.timestamp())
    commit_segments(storage, {sid: {}})
    return [r["frame_id"] for r in rows]


def test_links_across_segments_and_channels_earliest_kept(tmp_path):
    storage = Storage(tmp_path)
    a = make(storage, "twitch.alice.s1", "alice", [BASE, BASE ^ 0xFFFF_0000_0000_0000], 0)
    # 3 bits from a[0] (a duplicate), another channel; one far code; one in-segment duplicate.
    b = make(storage, "twitch.bob.s1", "bob", [BASE ^ 0b10101, 0x1111_2222_3333_4444, BASE], 100,
             dup_of={2: "marked-in-segment"})
    # Same code as a[0] but another kind: never linked.
    c = make(storage, "twitch.alice.s2", "alice", [BASE], 200, kind="silhouette")
    report = dedup_dataset(storage, radius=4)
    assert report["frames"] == 5 and report["linked"] == 1 and report["mode"] == "rebuild"  # no index yet
    [path] = storage.dups_links
    links = pq.read_table(path).to_pylist()
    assert links == [{"frame_id": b[0], "dup_of": a[0], "distance": 3}]
    first = path.read_bytes()
    again = dedup_dataset(storage, radius=4)  # idempotent: nothing new, the same file
    assert again["mode"] == "incremental" and again["frames"] == 0
    assert storage.dups_links == [path] and path.read_bytes() == first

    con = open_catalog(storage.root)
    kept = {r[0] for r in con.execute("SELECT frame_id FROM frames").fetchall()}
    assert b[0] not in kept and b[2] not in kept and {a[0], a[1], b[1], c[0]} <= kept
    assert con.execute("SELECT dup_of FROM frames_all WHERE frame_id = ?", [b[0]]).fetchall() == [(a[0],)]
    assert con.execute("SELECT count(*) FROM frames_all").fetchall() == [(6,)]  # links, not deletions


def test_radius_zero_and_an_empty_dataset(tmp_path):
    storage = Storage(tmp_path)
    assert dedup_dataset(storage, radius=4)["linked"] == 0 and len(storage.dups_links) == 1
    make(storage, "twitch.alice.s1", "alice", [BASE, BASE ^ 1, BASE], 0)
    report = dedup_dataset(storage, radius=0)
    assert report["linked"] == 1  # only the exact copy
    assert dedup_dataset(storage, radius=1)["linked"] == 2


def test_dedup_and_snapshot_commands(tmp_path, cli):
    (tmp_path / "stream2dataset.yaml").write_text("storage:\n  root: data\ndataset:\n  dedup_radius: 4\n")
    storage = Storage(tmp_path / "data")
    make(storage, "twitch.alice.s1", "alice", [BASE, BASE ^ 0b111, 0x1111_2222_3333_4444], 0)

    def run(*args) -> tuple[int, str]:
        done = cli(storage.root, *args)
        return done.returncode, done.stdout + done.stderr

    code, out = run("dedup")
    assert code == 0 and "3 frames (full pass), 1 linked" in out
    make(storage, "twitch.alice.s2", "alice", [BASE ^ 0b1], 100)
    code, out = run("dedup")
    assert code == 0 and "1 frames (round 1, new), 1 linked" in out
    code, out = run("dedup", "--rebuild")
    assert code == 0 and "4 frames (full pass), 2 linked" in out
    code, out = run("snapshot", "v1", "--where", "kind = 'facecam'")
    assert code == 0 and "snapshot v1: 2 frames where kind = 'facecam'" in out
    code, out = run("snapshot", "v1")
    assert code == 2 and "exists" in out and "Traceback" not in out
    code, out = run("snapshot", "bad/name")
    assert code == 2 and "snapshot name" in out
    code, out = run("snapshots")
    assert code == 0 and "v1" in out and "kind = 'facecam'" in out
