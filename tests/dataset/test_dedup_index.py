"""Incremental dedup: rounds against the persisted index give the full pass's links, cost what is new,
survive a kill, ignore rewritten shards, and feed snapshots."""

import json
import shutil
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stream2dataset.dataset.dedup_index import DedupIndex
from stream2dataset.dataset.dedup_pass import dedup_dataset
from stream2dataset.dataset.schema import FRAME_SCHEMA, frame_id
from stream2dataset.dataset.shards import read_shard, write_shards
from stream2dataset.dataset.snapshots import create_snapshot, open_snapshot
from stream2dataset.layout import GLOBS, Storage

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


class History:
    """Frames written as shards round by round, and the canonical order they must be linked in."""

    def __init__(self, storage: Storage, seed: int = 0):
        self.storage, self.rng = storage, np.random.default_rng(seed)
        self.frames: list[dict] = []  # frame_id, kind, phash, timestamp, round, in_segment_dup
        self.batches = 0

    def add(self, n: int, round_no: int, copies: float = 0.4, late: bool = False, kinds=("facecam", "silhouette"),
            channel: str = "alice") -> list[str]:
        """n frames in one shard: `copies` of them near-copies (0-6 bits off) of earlier frames of their
        kind (this round's too); `late` ones carry timestamps older than everything before."""
        rows = []
        sources = {k: [f["phash"] for f in self.frames if f["kind"] == k and not f["in_segment_dup"]] for k in kinds}
        for i in range(n):
            kind = kinds[i % len(kinds)]
            code = int(self.rng.integers(0, 2**63)) * 2 + int(self.rng.integers(0, 2))
            if sources[kind] and self.rng.random() < copies:
                code = sources[kind][int(self.rng.integers(len(sources[kind])))]
                for bit in self.rng.choice(64, int(self.rng.integers(0, 7)), replace=False):
                    code ^= 1 << int(bit)
            ts = T0 + timedelta(seconds=(-1000 * round_no if late else 1000 * round_no) + int(self.rng.integers(0, 900)))
            rows.append({"frame_id": frame_id(f"seg{self.batches}", i, kind), "kind": kind, "phash": code,
                         "timestamp": ts, "round": round_no, "in_segment_dup": self.rng.random() < 0.05})
            if not rows[-1]["in_segment_dup"]:
                sources[kind].append(code)
        self.write(rows, f"b{self.batches:04d}", channel)
        self.batches += 1
        self.frames += rows
        return [r["frame_id"] for r in rows]

    def write(self, rows: list[dict], stem: str, channel: str = "alice") -> None:
        n = len(rows)
        cols = {"frame_id": [r["frame_id"] for r in rows], "channel": [channel] * n, "kind": [r["kind"] for r in rows],
                "phash": [r["phash"] for r in rows], "timestamp": [r["timestamp"] for r in rows],
                "dup_of": ["in-segment" if r["in_segment_dup"] else None for r in rows]}
        table = pa.table({f.name: pa.array(cols[f.name], f.type) if f.name in cols else pa.nulls(n, f.type)
                          for f in FRAME_SCHEMA})
        write_shards(self.storage.shard_dir("frames", channel, "2026-11-01"), stem, FRAME_SCHEMA, [table])

    def reference(self, radius: int) -> dict[str, tuple[str, int]]:
        """frame_id -> (dup_of, distance) by the definition: per kind, in (round, timestamp, frame_id)
        order, each frame against the kept frames before it."""
        links = {}
        order = sorted((f for f in self.frames if not f["in_segment_dup"]),
                       key=lambda f: (f["kind"], f["round"], f["timestamp"], f["frame_id"]))
        kept_codes, kept_kinds = np.empty(len(order), np.uint64), np.empty(len(order), np.int64)
        kept_ids, kind_no = [], {}
        for f in order:
            n, k = len(kept_ids), kind_no.setdefault(f["kind"], len(kind_no))
            dist = np.bitwise_count(kept_codes[:n] ^ np.uint64(f["phash"]))
            hit = np.flatnonzero((dist <= radius) & (kept_kinds[:n] == k))
            if len(hit):
                links[f["frame_id"]] = (kept_ids[hit[0]], int(dist[hit[0]]))
            else:
                kept_codes[n], kept_kinds[n] = f["phash"], k
                kept_ids.append(f["frame_id"])
        return links


def live_links(storage: Storage) -> dict[str, tuple[str, int]]:
    rows = [r for p in storage.dups_links for r in pq.read_table(p).to_pylist()]
    links = {r["frame_id"]: (r["dup_of"], r["distance"]) for r in rows}
    assert len(links) == len(rows), "a frame is linked twice"
    return links


@pytest.mark.parametrize("late", [False, True])
def test_rounds_give_the_full_pass_links(tmp_path, late):
    storage = Storage(tmp_path / "data")
    history = History(storage)
    history.add(300, 0)
    assert dedup_dataset(storage, radius=4)["mode"] == "rebuild"  # no index yet: the full pass, round 0
    for round_no in range(1, 7):
        history.add(120, round_no, late=late and round_no % 2 == 1)
        if round_no == 3:
            history.add(60, round_no, channel="bob")  # two shards in one round
        report = dedup_dataset(storage, radius=4)
        assert report["mode"] == "incremental" and report["round"] == round_no
        assert live_links(storage) == history.reference(4)
    assert len(live_links(storage)) > 200  # many links, across rounds and within them
    assert len(DedupIndex.open(storage).state["runs"]) <= 3  # small runs were merged

    # `dedup --rebuild` on a copy (the rounds kept in the index) gives the same links and one run.
    copy = Storage(tmp_path / "copy")
    shutil.copytree(storage.root, copy.root)
    report = dedup_dataset(copy, radius=4, rebuild=True)
    assert report["mode"] == "rebuild" and report["runs"] == 1
    assert live_links(copy) == live_links(storage)
    # Without the index every frame is round 0: frames in timestamp order, the same links only when
    # no frame came late.
    shutil.rmtree(copy.root / "dataset" / "_dedup")
    dedup_dataset(copy, radius=4)
    assert (live_links(copy) == live_links(storage)) == (not late)


@pytest.mark.parametrize("radius", [1, 4])
def test_a_round_reads_what_its_new_frames_need_not_the_history(tmp_path, radius):
    """The index rows a round reads (band buckets and id matches) stay near-flat while the history
    grows 20 times: for random codes only the band collisions grow, by n / 2**21 per probe."""
    read = {}
    for history_size in (1000, 20000):
        storage = Storage(tmp_path / str(history_size))
        history = History(storage, seed=1)
        history.add(history_size, 0, copies=0.0, kinds=("facecam",))
        dedup_dataset(storage, radius=radius)
        history.add(200, 1, copies=0.5, kinds=("facecam",))
        report = dedup_dataset(storage, radius=radius)
        assert report["frames"] == sum(not f["in_segment_dup"] for f in history.frames if f["round"] == 1)
        assert live_links(storage) == history.reference(radius)
        read[history_size] = report["index_rows_read"]
    assert 0 < read[20000] <= 2 * read[1000] and read[20000] < 20000 / 20
    if radius == 1:  # 2 bands of 32 bits: no random collisions, only the copies' own buckets
        assert read[20000] <= 2 * 200


def test_a_killed_round_is_replayed_without_duplicate_links(tmp_path):
    storage = Storage(tmp_path / "data")
    history = History(storage, seed=2)
    history.add(200, 0)
    dedup_dataset(storage, radius=4)
    history.add(100, 1)
    published = (storage.root / "dataset" / "_dedup" / "index.json").read_bytes()

    class Killed(Exception):
        pass

    def kill():
        raise Killed

    with pytest.raises(Killed):
        dedup_dataset(storage, radius=4, before_publish=kill)
    assert (storage.root / "dataset" / "_dedup" / "index.json").read_bytes() == published  # not published
    assert not list(storage.root.rglob(".*.tmp"))  # every file written whole, or not at all
    history.add(50, 1)  # more shards arrive before the replay: the same round takes them too
    report = dedup_dataset(storage, radius=4)
    assert report["round"] == 1 and report["frames"] == sum(not f["in_segment_dup"] for f in history.frames[200:])
    assert live_links(storage) == history.reference(4)  # the killed round's files replaced, none twice
    runs = json.loads((storage.root / "dataset" / "_dedup" / "index.json").read_text())["runs"]
    assert sorted(p.name for p in storage.dups_links) == sorted(r["links"] for r in runs)
    names = {p.name for p in (storage.root / "dataset" / "_dedup" / "runs").iterdir()}
    assert names == {f"{r['name']}.{part}.arrow" for r in runs for part in ("ids", "bands")}
    again = dedup_dataset(storage, radius=4)  # a re-run finds nothing new
    assert again["frames"] == 0 and live_links(storage) == history.reference(4)


def test_rewritten_shards_bring_no_new_frames(tmp_path):
    """Compaction rewrites small shards as `compact-*.parquet` with the same rows: the index knows
    their frames by frame_id, whatever the file is called."""
    storage = Storage(tmp_path / "data")
    history = History(storage, seed=3)
    for round_no in range(3):
        history.add(80, round_no)
        dedup_dataset(storage, radius=4)
    before = live_links(storage)
    shards = sorted(storage.root.glob(GLOBS["frames"]))
    merged = pa.concat_tables([read_shard(p) for p in shards])
    write_shards(shards[0].parent, "compact-0001", FRAME_SCHEMA, [merged])
    for p in shards:
        p.unlink()
    report = dedup_dataset(storage, radius=4)
    assert report["frames"] == 0 and report["index_rows_read"] >= merged.num_rows * 0.9  # looked up by id
    assert live_links(storage) == before
    assert set(DedupIndex.open(storage).state["shards"]) == {"dataset/frames/channel=alice/date=2026-11-01/"
                                                              "compact-0001-0000.parquet"}
    history.add(40, 3)  # and a genuinely new shard after it is linked as usual
    assert dedup_dataset(storage, radius=4)["frames"] > 0
    assert live_links(storage) == history.reference(4)


def test_snapshots_pin_every_links_file_and_radius_changes_rebuild(tmp_path):
    storage = Storage(tmp_path / "data")
    history = History(storage, seed=4)
    history.add(150, 0, kinds=("facecam",))
    dedup_dataset(storage, radius=4)
    history.add(100, 1, kinds=("facecam",))
    history.add(30, 1, kinds=("facecam",))
    dedup_dataset(storage, radius=4)
    assert len(storage.dups_links) == 2  # a big run and the round's: two links files
    create_snapshot(storage, "v1")
    links = history.reference(4)
    in_segment = sum(f["in_segment_dup"] for f in history.frames)
    with open_snapshot(storage, "v1") as con:
        assert con.execute("SELECT count(*) FROM frames").fetchall() == [(len(history.frames) - in_segment - len(links),)]

    report = dedup_dataset(storage, radius=2)  # another radius: the index is rebuilt for it
    assert report["mode"] == "rebuild" and live_links(storage) == history.reference(2)
    history.add(60, 2, kinds=("facecam",))
    assert dedup_dataset(storage, radius=2)["mode"] == "incremental"
    assert live_links(storage) == history.reference(2)


def test_rounds_on_an_object_store_root_continue_on_another_node(tmp_path, s3):
    """The index lives in the store: a node with an empty working copy pulls it and goes on."""
    first = Storage(tmp_path / "node1", f"{s3}/data")
    history = History(first, seed=5)
    history.add(120, 0)
    dedup_dataset(first, radius=4)
    history.add(60, 1)
    dedup_dataset(first, radius=4)
    second = Storage(tmp_path / "node2", f"{s3}/data")
    history.storage = second
    history.add(60, 2)
    report = dedup_dataset(second, radius=4)
    assert report["mode"] == "incremental" and report["round"] == 2 and report["frames"] > 0
    assert live_links(second) == history.reference(4)
    assert dedup_dataset(first, radius=4)["frames"] == 0  # the first node pulls round 2: nothing new
    assert live_links(first) == history.reference(4)
