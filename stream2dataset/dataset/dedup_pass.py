"""The dedup pass: near-duplicate links across segments and channels, stored beside the shards.

Canonical order. Per frame kind (a facecam crop is never a duplicate of a silhouette), frames are
ordered by (round, timestamp, frame_id): the round is the dedup round that first saw the frame,
so frames that arrive later never change the links of frames linked before (a late recording
with older timestamps links to what is already there, it does not take its place). A frame is
kept unless an earlier kept frame lies within the radius; then it links to the earliest one
(`dedup.find_duplicates`). Links, not deletions: `frames_all` keeps every row and the `frames` view
leaves the linked ones out.

Rounds (`dedup_dataset`, the default): the frames of shards the index has not read, less those it
already holds (by frame_id: a compacted shard brings no new frames), are looked up in the index
(`dedup_index`) and linked among themselves; they become one new run with its links file
`dataset/dups/links-<run>-0000.parquet`, and small runs merge. The cost follows the new frames, not
the history. Rebuild (`rebuild=True`, or no index yet, or another radius): the full pass over every
shard in the same order (rounds kept from the index), which replaces the index with one run.

A round writes its files under new names, then publishes `_dedup/index.json` (temp + rename); a
killed round is run again, under the same names, by the next call, and files the index does not
name are removed, so a re-run never links a frame twice.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..layout import GLOBS, TABLES, Storage
from .dedup import find_duplicates, find_duplicates_ray
from .dedup_index import ROUND_SHIFT, DedupIndex, Run, band_plan, build_run, merge_runs
from .schema import DUP_SCHEMA
from .live import live_files
from .shards import read_shard

COLUMNS = ["frame_id", "timestamp", "kind", "phash", "dup_of"]
_MAX_RUNS = 12


def shard_files(storage: Storage) -> dict[str, list[int]]:
    """Every frame shard (key under the root) with its [bytes, mtime_ns], after a pull."""
    storage.pull(TABLES["frames"], mirror=True)
    out = {}
    for path in live_files(storage.root, GLOBS["frames"]):  # not a compaction's unpublished files
        st = path.stat()
        out[path.relative_to(storage.root).as_posix()] = [st.st_size, st.st_mtime_ns]
    return out


def frame_hashes(storage: Storage, rels: list[str]) -> pa.Table:
    """frame_id, timestamp, kind, phash of these shards' frames that are not already a duplicate
    within their segment."""
    tables = [read_shard(storage.root / rel, columns=COLUMNS) for rel in rels]
    if not tables:
        return pa.table({c: pa.array([], t) for c, t in
                         [("frame_id", pa.string()), ("timestamp", pa.timestamp("ms", tz="UTC")),
                          ("kind", pa.string()), ("phash", pa.uint64())]})
    table = pa.concat_tables(tables)
    table = table.filter(pc.and_(pc.is_null(table["dup_of"]), pc.is_valid(table["phash"])))
    return table.drop_columns(["dup_of"])


def _links(frame_ids: np.ndarray, targets: np.ndarray, dist: np.ndarray) -> pa.Table:
    linked = np.flatnonzero(dist >= 0)
    return pa.table({"frame_id": pa.array(frame_ids[linked], pa.string()),
                     "dup_of": pa.array(targets[linked], pa.string()),
                     "distance": pa.array(dist[linked], pa.int8())}, schema=DUP_SCHEMA)


def _greedy(kinds: np.ndarray, codes: np.ndarray, radius: int, find) -> tuple[np.ndarray, np.ndarray]:
    """find_duplicates per kind over frames sorted by kind: (dup_of position or -1, distance)."""
    dup_of, dist = np.full(len(codes), -1), np.full(len(codes), -1, np.int8)
    bounds = np.flatnonzero(np.r_[True, kinds[1:] != kinds[:-1], True]) if len(kinds) else np.array([0])
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        d, x = find(codes[lo:hi], radius)
        dup_of[lo:hi] = np.where(d >= 0, d + lo, -1)
        dist[lo:hi] = x
    return dup_of, dist


def dedup_dataset(storage: Storage, radius: int, use_ray: bool = False, rebuild: bool = False,
                  before_publish: Callable[[], None] | None = None) -> dict:
    """Link the frames no round has seen yet (or all of them, with `rebuild`); returns a small
    report. `use_ray` spreads a full pass over the cluster (a round is small). `before_publish` runs
    once the new files are written, before the index names them (tests stop there, as a kill would)."""
    t0 = time.perf_counter()
    index = DedupIndex.open(storage)
    files = shard_files(storage)
    publish = before_publish or (lambda: None)
    if rebuild or not index.exists or index.state["radius"] != radius:
        find = find_duplicates_ray if use_ray else find_duplicates
        report = _full_pass(storage, index, files, radius, find, publish)
    else:
        report = _round(storage, index, files, radius, publish)
    return {**report, "radius": radius, "seconds": round(time.perf_counter() - t0, 3),
            "path": str(storage.table_dir("dups")), "runs": len(index.state["runs"]), "round": index.state["round"]}


def _round(storage: Storage, index: DedupIndex, files: dict, radius: int, before_publish) -> dict:
    seen = index.state["shards"]
    table = frame_hashes(storage, [rel for rel, st in files.items() if seen.get(rel) != st])
    known, read = index.members(table["frame_id"])
    table = table.filter(pa.array(~known)).sort_by([("kind", "ascending"), ("timestamp", "ascending"),
                                                    ("frame_id", "ascending")])
    report = {"mode": "incremental", "frames": table.num_rows, "linked": 0, "index_rows_read": read}
    index.state["shards"] = files
    if not table.num_rows:  # nothing new (or only rewritten shards): remember the files read
        if files != seen:
            index.publish()
        return report
    round_no = index.state["round"] + 1
    ids = table["frame_id"].to_numpy(zero_copy_only=False)
    names = table["kind"].to_numpy(zero_copy_only=False)
    codes = table["phash"].to_numpy()
    kinds = index.kind_codes(names)
    # Every indexed frame comes before this round's: a frame with a kept indexed neighbour links to
    # the earliest one; the others are decided among themselves, in order.
    targets, dist, n = index.earliest_kept(codes, kinds, radius)
    report["index_rows_read"] += n
    rest = np.flatnonzero(dist < 0)
    dup_of, rest_dist = _greedy(names[rest], codes[rest], radius, find_duplicates)
    linked = dup_of >= 0
    targets[rest[linked]] = ids[rest[dup_of[linked]]]
    dist[rest[linked]] = rest_dist[linked]
    seq = (np.int64(round_no) << np.int64(ROUND_SHIFT)) + np.arange(len(ids), dtype=np.int64)
    links = _links(ids, targets, dist)
    name = f"r{round_no:07d}-{round_no:07d}-g{index.state['gen'] + 1}"
    run = index.write_run(name, build_run(table["frame_id"], codes, kinds, seq, dist < 0, band_plan(radius)[0]), links)
    index.state["runs"].append(run)
    index.state["round"] = round_no
    _merge_small_runs(storage, index, radius)
    before_publish()
    index.publish()
    report["linked"] = links.num_rows
    return report


def _merge_small_runs(storage: Storage, index: DedupIndex, radius: int) -> None:
    """Merge the newest two runs while the older is not larger (a binary counter: O(log n) runs, and
    each frame is rewritten O(log n) times), or while there are too many."""
    runs = index.state["runs"]
    while len(runs) >= 2 and (runs[-2]["frames"] <= runs[-1]["frames"] or len(runs) > _MAX_RUNS):
        older, newer = runs[-2], runs[-1]
        folder = index.runs_dir
        tables = merge_runs([Run(folder, older["name"]), Run(folder, newer["name"])], band_plan(radius)[0])
        links = pa.concat_tables([read_shard(storage.table_dir("dups") / r["links"]) for r in (older, newer)])
        first, last = older["name"].split("-")[0], newer["name"].split("-")[1]
        runs[-2:] = [index.write_run(f"{first}-{last}-g{index.state['gen'] + 1}", tables, links)]


def _full_pass(storage: Storage, index: DedupIndex, files: dict, radius: int, find, before_publish) -> dict:
    """Every shard's frames in canonical order, from scratch; the index becomes one run."""
    table = frame_hashes(storage, list(files))
    # Rounds from the index; frames it lacks are this pass's round (0 for a new index).
    known = [run.ids.select(["frame_id", "seq"]) for run in index.runs]
    round_no = index.state["round"] + 1 if index.runs else 0
    if known:
        table = table.join(pa.concat_tables(known), "frame_id", join_type="left outer")
    else:
        table = table.append_column("seq", pa.nulls(table.num_rows, pa.int64()))
    rounds = pc.fill_null(pc.shift_right(table["seq"], ROUND_SHIFT), round_no)
    table = table.drop_columns(["seq"]).append_column("round", rounds)
    table = table.sort_by([("kind", "ascending"), ("round", "ascending"), ("timestamp", "ascending"),
                           ("frame_id", "ascending")])
    ids = table["frame_id"].to_numpy(zero_copy_only=False)
    names = table["kind"].to_numpy(zero_copy_only=False)
    codes = table["phash"].to_numpy()
    dup_of, dist = _greedy(names, codes, radius, find)
    targets = np.full(len(ids), None, object)
    targets[dup_of >= 0] = ids[dup_of[dup_of >= 0]]
    links = _links(ids, targets, dist)
    fresh = bool(pc.any(pc.equal(rounds, round_no)).as_py())
    last_round = round_no if fresh else max(index.state["round"], 0)
    index.state.update(radius=radius, kinds=[], runs=[], shards=files, round=last_round)
    kinds = index.kind_codes(names)
    rounds_np = table["round"].to_numpy().astype(np.int64)
    seq = (rounds_np << np.int64(ROUND_SHIFT)) + np.arange(len(ids), dtype=np.int64)
    name = f"r0000000-{last_round:07d}-g{index.state['gen'] + 1}"
    index.state["runs"] = [index.write_run(name, build_run(table["frame_id"], codes, kinds, seq, dup_of < 0,
                                                           band_plan(radius)[0]), links)]
    before_publish()
    index.publish()
    return {"mode": "rebuild", "frames": len(ids), "linked": links.num_rows, "index_rows_read": 0}
