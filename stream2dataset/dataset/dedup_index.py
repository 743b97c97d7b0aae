"""The persisted dedup index: the frames already linked, so a round links only its new frames.

`dataset/_dedup/` holds runs (an LSM): each run is two Arrow IPC files, written once, never changed:

- `<run>.ids.arrow`: one row per frame the dedup pass has seen (kept or linked), sorted by a 64-bit
  key of its frame_id: is a frame already indexed? (a compacted shard's frames are, whatever the
  file is called). Columns: key, frame_id, seq, phash, kind, kept.
- `<run>.bands.arrow`: m rows per *kept* frame, one per band of its pHash, sorted by
  kind | band | band bits. Only kept frames are link targets, so duplicates never fill buckets.

Look-ups (multi-index hashing, Norouzi et al.): the 64 bits are cut into m bands; two codes within
r bits differ in some band by at most r // m bits, so a query probes, per band, its own value and
every value within r // m bits, and checks the candidates exactly. A probe is a binary search in a
memory-mapped, sorted column: it touches ~log2(n) pages, so a round reads its probes' buckets, not
the index (Parquet would decode whole row groups per look-up; IPC files map as they are).

`seq` orders frames canonically: round << 40 | position in the round, the round's frames sorted by
(kind, timestamp, frame_id). The earliest kept neighbour is the one with the smallest seq.
`index.json` names the live runs, their links files, the rounds done and the shards read; it is
written last (temp + rename): files it does not name are leftovers of a killed round, and removed.
"""

from __future__ import annotations

import hashlib
import json
import math
from itertools import combinations
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..layout import DEDUP, TABLES, Storage, atomic_output, atomic_write_bytes
from .dedup import _blocks

ROUND_SHIFT = 40              # seq = round << ROUND_SHIFT | position within the round
_DESIGN_FRAMES = 1e8          # the index size the band count is chosen for
_MAX_BANDS = 8
_PROBE_BUDGET = 1 << 22       # probes built at once (memory)

IDS_SCHEMA = pa.schema([("key", pa.uint64()), ("frame_id", pa.string()), ("seq", pa.int64()),
                        ("phash", pa.uint64()), ("kind", pa.uint8()), ("kept", pa.bool_())])
BANDS_SCHEMA = pa.schema([("key", pa.uint64()), ("phash", pa.uint64()), ("seq", pa.int64()),
                          ("row", pa.uint32())])


# ---- keys ----

def band_plan(radius: int) -> tuple[list[tuple[int, int]], int]:
    """(shift, width) of each band and the bits probed per band: the band count whose probes and
    random candidates (at _DESIGN_FRAMES kept frames) cost least. Radius 4: 3 bands, 1 bit each."""
    def cost(m: int) -> float:
        bands, flips = _blocks(m), radius // m
        probes = sum(math.comb(w, i) for _, w in bands for i in range(flips + 1))
        return probes * (math.log2(_DESIGN_FRAMES) + _DESIGN_FRAMES / 2 ** min(w for _, w in bands))
    m = min(range(2, max(2, min(_MAX_BANDS, radius + 1)) + 1), key=cost)
    return _blocks(m), radius // m


def _band_values(codes: np.ndarray, kinds: np.ndarray, bands) -> np.ndarray:
    """(n, m) keys: kind << 56 | band << 52 | the band's bits."""
    out = np.empty((len(codes), len(bands)), np.uint64)
    head = kinds.astype(np.uint64) << np.uint64(56)
    for b, (shift, width) in enumerate(bands):
        out[:, b] = head | np.uint64(b << 52) | ((codes >> np.uint64(shift)) & np.uint64((1 << width) - 1))
    return out


def _probes(codes: np.ndarray, kinds: np.ndarray, bands, flips: int) -> tuple[np.ndarray, np.ndarray]:
    """Every probe key of every query, sorted (binary searches go faster in order), and its query."""
    own = _band_values(codes, kinds, bands)
    keys, owners = [], []
    for b, (_, width) in enumerate(bands):
        masks = np.array([sum(1 << i for i in c) for k in range(flips + 1) for c in combinations(range(width), k)],
                         np.uint64)
        keys.append((own[:, b:b + 1] ^ masks).ravel())
        owners.append(np.repeat(np.arange(len(codes)), len(masks)))
    keys, owners = np.concatenate(keys), np.concatenate(owners)
    order = np.argsort(keys, kind="stable")
    return keys[order], owners[order]


_HEX = np.full(256, 255, np.uint8)
_HEX[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint8)


def id_keys(frame_ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A 64-bit key per frame_id: the first 16 hex digits of a `schema.frame_id` (a sha256), else
    a blake2b hash. Keys may collide; look-ups compare the frame_id strings as well."""
    ids = _array(frame_ids).cast(pa.string())
    n = len(ids)
    if n == 0:
        return np.empty(0, np.uint64)
    offsets = np.frombuffer(ids.buffers()[1], np.int32)[ids.offset:ids.offset + n + 1]
    data = np.frombuffer(ids.buffers()[2] or b"\0", np.uint8)
    starts = offsets[:-1].astype(np.int64)
    hexed = np.diff(offsets) == 24
    keys = np.zeros(n, np.uint64)
    for j in range(16):
        nibble = _HEX[data[np.minimum(starts + j, len(data) - 1)]]
        hexed &= nibble < 16
        keys = (keys << np.uint64(4)) | nibble.astype(np.uint64)
    for i in np.flatnonzero(~hexed):
        keys[i] = int.from_bytes(hashlib.blake2b(ids[i].as_py().encode(), digest_size=8).digest(), "big")
    return keys


def _ranges(sorted_keys: np.ndarray, needles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For sorted needles: (needle index, row) of every row whose key equals a needle."""
    lo = np.searchsorted(sorted_keys, needles, "left")
    hit = np.flatnonzero(lo < len(sorted_keys))
    hit = hit[sorted_keys[lo[hit]] == needles[hit]]
    lo = lo[hit]
    counts = np.searchsorted(sorted_keys, needles[hit], "right") - lo
    owner = np.repeat(hit, counts)
    rows = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(lo, counts)
    return owner, rows


def _array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _np(column: pa.ChunkedArray) -> np.ndarray:
    """A column as numpy, without a copy when it is one chunk (a memory-mapped run)."""
    if column.num_chunks == 1:
        return column.chunk(0).to_numpy(zero_copy_only=False)
    return column.to_numpy()


# ---- runs ----

class Run:
    """One run, memory-mapped."""

    def __init__(self, folder: Path, name: str):
        self.name = name
        self.ids = pa.ipc.open_file(pa.memory_map(str(folder / f"{name}.ids.arrow"))).read_all()
        self.bands = pa.ipc.open_file(pa.memory_map(str(folder / f"{name}.bands.arrow"))).read_all()
        self.id_key, self.band_key = _np(self.ids["key"]), _np(self.bands["key"])
        self.band_phash, self.band_seq = _np(self.bands["phash"]), _np(self.bands["seq"])
        self.band_row = _np(self.bands["row"])

    def members(self, keys: np.ndarray, frame_ids: pa.Array) -> tuple[np.ndarray, int]:
        """Which of these (key-sorted) frames this run holds, and the index rows read."""
        owner, rows = _ranges(self.id_key, keys)
        same = np.asarray(pc.equal(self.ids["frame_id"].take(rows), frame_ids.take(owner)), bool)
        found = np.zeros(len(keys), bool)
        found[owner[same]] = True
        return found, len(rows)

    def neighbours(self, probes: np.ndarray, owners: np.ndarray, codes: np.ndarray, radius: int):
        """(query, seq, ids row, distance) of every kept frame within `radius` of a query."""
        owner, rows = _ranges(self.band_key, probes)
        q = owners[owner]
        dist = np.bitwise_count(self.band_phash[rows] ^ codes[q])
        near = dist <= radius
        rows = rows[near]
        return q[near], self.band_seq[rows], self.band_row[rows], dist[near], len(owner)


def build_run(frame_ids: pa.Array, phash: np.ndarray, kinds: np.ndarray, seq: np.ndarray, kept: np.ndarray,
              bands) -> tuple[pa.Table, pa.Table]:
    """The two tables of a run over these frames."""
    frame_ids = _array(frame_ids)
    keys = id_keys(frame_ids)
    order = np.argsort(keys, kind="stable")
    ids = pa.table([keys[order], frame_ids.take(order), seq[order], phash[order],
                    kinds[order].astype(np.uint8), kept[order]], schema=IDS_SCHEMA)
    rows = np.flatnonzero(kept[order]).astype(np.uint32)
    m = len(bands)
    values = _band_values(phash[order][rows], kinds[order][rows], bands).ravel()
    by_key = np.argsort(values, kind="stable")
    band_table = pa.table([values[by_key], np.repeat(phash[order][rows], m)[by_key],
                           np.repeat(seq[order][rows], m)[by_key], np.repeat(rows, m)[by_key]], schema=BANDS_SCHEMA)
    return ids, band_table


def merge_runs(runs: list[Run], bands) -> tuple[pa.Table, pa.Table]:
    ids = pa.concat_tables([r.ids for r in runs])
    return build_run(ids["frame_id"], _np(ids["phash"]), _np(ids["kind"]), _np(ids["seq"]), _np(ids["kept"]), bands)


def _write_ipc(path: Path, table: pa.Table) -> None:
    with atomic_output(path) as tmp, pa.OSFile(str(tmp), "wb") as sink:
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table.combine_chunks())


# ---- the index: its manifest and runs ----

class DedupIndex:
    """The published state (`index.json`) and its runs. `state` keys: radius, round, gen, kinds,
    runs (name, frames, links), shards (path -> [bytes, mtime_ns] of every frame shard read)."""

    def __init__(self, storage: Storage, state: dict | None):
        self.storage = storage
        self.folder = storage.root / DEDUP
        self.state = state or {"version": 1, "radius": None, "round": -1, "gen": 0, "kinds": [], "runs": [],
                               "shards": {}}
        self.runs = [Run(self.runs_dir, r["name"]) for r in self.state["runs"]]

    @property
    def runs_dir(self) -> Path:
        return self.folder / "runs"

    @property
    def exists(self) -> bool:
        return self.state["radius"] is not None

    @classmethod
    def open(cls, storage: Storage) -> DedupIndex:
        storage.pull(DEDUP, TABLES["dups"], mirror=True)  # merges read the runs' links files
        path = storage.root / DEDUP / "index.json"
        index = cls(storage, json.loads(path.read_text()) if path.exists() else None)
        index.remove_unlisted()
        return index

    def kind_codes(self, kinds: np.ndarray) -> np.ndarray:
        """A small code per kind name; new kinds are added to the state (published with it)."""
        names = self.state["kinds"]
        for k in sorted(set(kinds.tolist()) - set(names)):
            names.append(k)
        if len(names) > 256:
            raise ValueError("the dedup index holds at most 256 frame kinds")
        lookup = {k: i for i, k in enumerate(names)}
        return np.array([lookup[k] for k in kinds.tolist()], np.uint8)

    def members(self, frame_ids: pa.Array) -> tuple[np.ndarray, int]:
        """Which frames the index already holds (by frame_id), and the index rows read."""
        frame_ids = _array(frame_ids)
        keys = id_keys(frame_ids)
        order = np.argsort(keys, kind="stable")
        found, read = np.zeros(len(keys), bool), 0
        for run in self.runs:
            hit, n = run.members(keys[order], frame_ids.take(order))
            found[order[hit]] = True
            read += n
        return found, read

    def earliest_kept(self, codes: np.ndarray, kinds: np.ndarray, radius: int):
        """Per query: the earliest kept indexed frame within `radius` (its frame_id, or None) and the
        distance (-1), plus the index rows read."""
        bands, flips = band_plan(radius)
        best_seq = np.full(len(codes), np.iinfo(np.int64).max)
        best_run, best_row = np.full(len(codes), -1), np.zeros(len(codes), np.int64)
        best_dist = np.full(len(codes), -1, np.int8)
        per_probe = sum(math.comb(w, i) for _, w in bands for i in range(flips + 1))
        step = max(1, _PROBE_BUDGET // per_probe)
        read = 0
        for lo in range(0, len(codes), step):
            sl = slice(lo, lo + step)
            probes, owners = _probes(codes[sl], kinds[sl], bands, flips)
            for r, run in enumerate(self.runs):
                q, seq, row, dist, n = run.neighbours(probes, owners, codes[sl], radius)
                read += n
                q = q + lo
                better = seq < best_seq[q]
                q, seq, row, dist = q[better], seq[better], row[better], dist[better]
                order = np.lexsort((seq, q))           # per query, its smallest seq first
                first = order[np.r_[True, q[order][1:] != q[order][:-1]]] if len(q) else order
                q, seq, row, dist = q[first], seq[first], row[first], dist[first]
                best_seq[q], best_run[q], best_row[q], best_dist[q] = seq, r, row, dist
        target = np.full(len(codes), None, object)
        for r, run in enumerate(self.runs):
            mine = np.flatnonzero(best_run == r)
            target[mine] = np.asarray(run.ids["frame_id"].take(best_row[mine]), object)
        return target, best_dist, read

    # writing -----------------------------------------------------------------------------
    def write_run(self, name: str, tables: tuple[pa.Table, pa.Table], links: pa.Table) -> dict:
        from .schema import DUP_SCHEMA
        from .shards import write_shards

        ids, band_table = tables
        _write_ipc(self.runs_dir / f"{name}.ids.arrow", ids)
        _write_ipc(self.runs_dir / f"{name}.bands.arrow", band_table)
        path = write_shards(self.storage.table_dir("dups"), f"links-{name}", DUP_SCHEMA, [links.sort_by("frame_id")],
                            target_mb=1e9, empty=True)[0]
        return {"name": name, "frames": ids.num_rows, "links": path.name}

    def publish(self) -> None:
        """Make the state (and so its runs and links) the live one, then remove what it no longer names."""
        self.state["gen"] += 1
        atomic_write_bytes(self.folder / "index.json", json.dumps(self.state, indent=0).encode(), sync=False)
        self.remove_unlisted()

    def remove_unlisted(self) -> None:
        """Delete runs and links files the published state does not name: merged away, or written
        by a round that was killed before it published."""
        if not (self.folder / "index.json").exists():
            return
        live = {f"{DEDUP}/runs/{r['name']}.{part}.arrow" for r in self.state["runs"] for part in ("ids", "bands")}
        live |= {f"{TABLES['dups']}/{r['links']}" for r in self.state["runs"]}
        for rel in sorted(self.storage.files(f"{DEDUP}/runs") | self.storage.files(TABLES["dups"])):
            if rel not in live:
                self.storage.delete(self.storage.root / rel)
