"""Near-duplicate frames across a whole dataset, by the Hamming distance of their 64-bit pHashes.

Semantics. The caller passes the hashes h[0..n-1] in canonical order (index 0 is the earliest
frame) and a radius r; frames i and j are *neighbours* when popcount(h[i] ^ h[j]) <= r. Frames
are decided in order, as a greedy pass would:

- frame i is *kept* when none of its earlier neighbours is kept;
- otherwise it is a duplicate, and `dup_of[i]` is its earliest kept earlier neighbour.

`dup_of[i] = -1` for a kept frame, and `distance[i]` is popcount(h[i] ^ h[dup_of[i]]) (-1 when
kept), so every link is within the radius: slow drift (a pan) keeps a frame every r bits instead
of chaining onto its first frame, as the in-segment pass (processing.hashing) does. This is the
one answer for the input, whatever the chunking, the Ray tasks or the index parameters (the index
only proposes candidates; each is checked exactly). Results are links, never deletions. Frame i's
result depends on h[0..i] only, so appending frames never changes earlier links; kept frames are
pairwise further apart than r, so running again on them keeps them all.

Index (Manku et al., "Detecting near-duplicates for web crawling"): the 64 bits are split into B
blocks; r differing bits touch at most r blocks, so two neighbours agree on some B - r blocks.
One table per choice of B - r blocks (C(B, r) tables) buckets codes by those blocks; candidates
share a bucket and are verified by popcount. B is chosen so keys have a few more bits than
log2(n): buckets stay near-empty and the cost per code stays flat as n grows. Tables are sorted in
cache-sized slices, which also bounds the memory beyond the O(n) input and output.

Large groups: exact duplicates are collapsed first (a static scene gives thousands of identical
codes). Near-identical codes (a static scene with noisy hashes) fill buckets too, and all pairs
of a bucket would cost its size squared; but a code only needs its earlier *kept* neighbours, and
duplicates never matter. So a first pass checks each code against the earlier codes of its
buckets, in a large bucket against its first few only (the scene's first frame is one of them),
and records how far each check reached; the codes it leaves undecided (or whose earliest kept
neighbour is not certain) are checked again against the codes not known to be duplicates, with
more codes per bucket each time, until every code is decided.
"""

from __future__ import annotations

import functools
import math
from itertools import combinations, groupby

import numpy as np

__all__ = ["find_duplicates", "find_duplicates_ray"]

_SLICE = 1 << 16         # most codes per sorted slice (512 KiB): cache-sized, so the cost per code stays flat
_KEY_MARGIN = 3.5        # key bits beyond log2(codes): < 1/11 random candidates per code and table
_MAX_TABLES = 5000
_LEADERS = 4             # codes checked per large bucket and code in the first pass; x16 in each next one
_KEPT, _DUP = 1, 2
_ALL = (1 << 64) - 1
_NONE = np.iinfo(np.int64).max


def _check(hashes, radius: int) -> np.ndarray:
    h = np.asarray(hashes)
    if h.ndim != 1 or h.dtype.kind not in "iu" or h.dtype.itemsize != 8:
        raise ValueError(f"expected a 1-D array of 64-bit hashes, got {h.dtype} {h.shape}")
    if not 0 <= radius <= 64:
        raise ValueError(f"radius must be in 0..64, got {radius}")
    if len(h) >= 1 << 32:
        raise ValueError("at most 2**32 - 1 hashes per call")
    return h.view(np.uint64)


# ---- the plan: blocks, tables, slices ----

def _blocks(n_blocks: int) -> list[tuple[int, int]]:
    """(shift, width) of each block, most significant first; widths differ by at most one bit."""
    base, extra = divmod(64, n_blocks)
    widths = [base + (b < extra) for b in range(n_blocks)]
    ends = np.cumsum(widths)
    return [(64 - int(e), w) for e, w in zip(ends, widths)]


def _key_bits(b: int, radius: int) -> int:
    return sum(sorted(w for _, w in _blocks(b))[:b - radius]) if b > radius else 0


def _n_blocks(radius: int, n: int) -> int:
    """The fewest blocks whose narrowest key has log2(n) + margin bits: the fewest tables that keep
    buckets near-empty. B = r is one table with an empty key (all pairs): the cheapest for tiny n."""
    def cost(b: int) -> float:       # in pair checks; a table costs ~8 per code to build and sort
        return math.comb(b, radius) * (8 * n + n * n / 2 ** (_key_bits(b, radius) + 1))
    want = math.log2(max(n, 2)) + _KEY_MARGIN
    usable = [b for b in range(radius + 1, 65) if math.comb(b, radius) <= _MAX_TABLES]
    b = next((b for b in usable if _key_bits(b, radius) >= want), None)
    if b is None:                    # large radius: no key is long enough, take the cheapest
        b = min(usable, key=cost)
    return radius if cost(radius) <= cost(b) else b


def _plan(radius: int, n: int, n_blocks: int | None) -> tuple[list[tuple[int, int]], list[tuple[tuple, list]]]:
    """Blocks and tables; tables grouped by their leading blocks, which cut the codes into slices
    (a table's candidates share its key, so they share a slice)."""
    b = _n_blocks(radius, n) if n_blocks is None else n_blocks
    if not radius <= b <= 64 or math.comb(b, radius) > _MAX_TABLES:
        raise ValueError(f"n_blocks must be in {radius}..64 with C(n_blocks, {radius}) <= {_MAX_TABLES}, got {b}")
    tables = list(combinations(range(b), b - radius))
    lead = max(1, math.ceil((_slice_bits(n) - 1) / (64 // b)))   # slices may be twice the target
    return _blocks(b), [(prefix, list(ts)) for prefix, ts in groupby(tables, key=lambda t: t[:lead])]


def _key(codes: np.ndarray, blocks: list[tuple[int, int]]) -> tuple[np.ndarray, int]:
    """The bits of the given blocks, concatenated (at most 64 bits), and their count."""
    key, bits = None, 0
    for shift, width in blocks:
        part = (codes >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        key = part if key is None else (key << np.uint64(width)) | part
        bits += width
    return (np.zeros(len(codes), np.uint64) if key is None else key), bits


def _slice_bits(n: int) -> int:
    return min(16, max(0, math.ceil(math.log2(max(n, 1) / _SLICE))))


def _split(codes: np.ndarray, blocks: list[tuple[int, int]], part_bits: int) -> list[tuple]:
    """(codes, positions) cut into 2**part_bits pieces by the top bits of the blocks' key, in
    order within a piece (a stable radix sort)."""
    key, bits = _key(codes, blocks)
    used = min(part_bits, bits)
    part = ((key >> np.uint64(bits - used)) << np.uint64(part_bits - used)).astype(np.uint16)
    order = np.argsort(part, kind="stable")
    grouped = codes[order]
    ends = np.cumsum(np.bincount(part, minlength=1 << part_bits))
    order = order.astype(np.uint32)           # fewer bytes to move: n < 2**32
    return [(grouped[lo:hi], order[lo:hi]) for lo, hi in zip(np.r_[0, ends[:-1]], ends)]


def _slices(codes: np.ndarray, blocks: list[tuple[int, int]], chunk: int = 1 << 20):
    """Cache-sized slices of codes with equal top key bits, with their positions: each chunk is
    split in cache, then the pieces of a slice are joined (one random permutation of the whole
    array costs several times more)."""
    part_bits = _slice_bits(len(codes))
    pieces = [_split(codes[i:i + chunk], blocks, part_bits) for i in range(0, len(codes), chunk)]
    for p in range(1 << part_bits):
        c = np.concatenate([x[p][0] for x in pieces]) if pieces else codes[:0]
        if len(c):
            yield c, np.concatenate([x[p][1] + np.intp(i * chunk) for i, x in enumerate(pieces)])


# ---- one table on one slice ----

@functools.lru_cache(maxsize=4096)
def _rotation(mask: int, low_bits: int) -> int | None:
    """A left rotation that moves every bit of `mask` out of the low `low_bits` bits, if any."""
    for rot in range(64):
        if not ((mask << rot) | (mask >> (64 - rot))) & ((1 << low_bits) - 1) & _ALL:
            return rot
    return None


def _sort_values(codes: np.ndarray, blocks: list[tuple[int, int]], pos_bits: int) -> np.ndarray:
    """Per code, its table key in the high bits and its position in the low `pos_bits` bits, so
    one sort of plain uint64 groups equal keys, in position order."""
    pos = np.arange(len(codes), dtype=np.uint64)
    mask = sum(((1 << w) - 1) << s for s, w in blocks)
    rot = _rotation(mask, pos_bits)
    if rot is not None:   # cheap: rotate the code and mask off the other blocks (still one-to-one on keys)
        v = codes if rot == 0 else (codes << np.uint64(rot)) | (codes >> np.uint64(64 - rot))
        return (v & np.uint64(((mask << rot) | (mask >> (64 - rot))) & _ALL)) | pos
    # Else the key's bits packed together; a key too long to fit loses low bits: more candidates only.
    key, bits = _key(codes, blocks)
    drop = max(0, bits + pos_bits - 64)
    return ((key >> np.uint64(drop)) << np.uint64(pos_bits)) | pos


def _table_pass(codes: np.ndarray, query: np.ndarray | None, blocks, radius: int, leaders: int):
    """One table on one slice of codes in frame order. Each query code (all when `query` is None)
    is checked against the codes before it in its bucket; in a bucket of more than 4 * leaders
    codes, against the first `leaders` only. Returns the positions (a, b) of the neighbour pairs
    found (a earlier), and (query, first unchecked code) where a check stopped short."""
    n = len(codes)
    pos_bits = max(1, (n - 1).bit_length())
    s = np.sort(_sort_values(codes, blocks, pos_bits))
    low = np.uint64((1 << pos_bits) - 1)
    j = np.flatnonzero((s[1:] ^ s[:-1]) < np.uint64(1 << pos_bits)) + 1   # codes after another of their bucket
    run = np.ones(len(j), bool)                         # j is in runs, one per bucket
    run[1:] = j[1:] != j[:-1] + 1
    start = np.maximum.accumulate(np.where(run, j - 1, 0))
    last = np.ones(len(j), bool)
    last[:-1] = run[1:]
    end = j[last][np.cumsum(run) - 1]
    pj = (s[j] & low).astype(np.intp)
    if query is not None:
        keep = query[pj]
        j, start, end, pj = j[keep], start[keep], end[keep], pj[keep]
    rank = j - start                                    # earlier codes in the bucket
    # Small buckets are checked in full; large ones (a static scene) against their first codes only.
    limit = np.where(end - start < 4 * leaders, rank, np.minimum(rank, leaders))
    cut = rank > limit
    truncated = (pj[cut], (s[start[cut] + leaders] & low).astype(np.intp))
    found_a, found_b = [], []
    for t in range(int(limit.max(initial=0))):
        live = limit > t
        start, limit, pj = start[live], limit[live], pj[live]
        pi = (s[start + t] & low).astype(np.intp)
        near = np.bitwise_count(codes[pi] ^ codes[pj]) <= radius
        found_a.append(pi[near])
        found_b.append(pj[near])
    return found_a, found_b, truncated


def _distinct(x: np.ndarray) -> np.ndarray:
    x = np.sort(x)      # np.unique is many times slower here (numpy 2.4)
    return x[np.r_[True, x[1:] != x[:-1]]] if len(x) else x


def _group_pass(codes, ids, query, blocks, prefix: tuple, tables: list, radius: int, leaders: int):
    """The tables of one group (all lead with the blocks `prefix`) over codes in frame order, named
    by `ids` (their first frames). Returns the neighbour pairs found, as distinct `lo << 32 | hi`
    ids, and (ids, horizon): for each query, the earliest code it was not checked against."""
    pblocks = [blocks[b] for b in prefix]
    if not query.all():     # only codes that share the tables' leading blocks with a query can be in its buckets
        key, bits = _key(codes, pblocks)
        key >>= np.uint64(max(0, bits - 20))
        wanted = np.zeros(1 << min(bits, 20), bool)
        wanted[key[query]] = True
        keep = wanted[key]
        codes, ids, query = codes[keep], ids[keep], query[keep]
    every = query.all()
    edges, h_ids, h_at = [np.empty(0, np.uint64)], [np.empty(0, np.uint64)], [np.empty(0, np.uint64)]
    for c, pos in _slices(codes, pblocks):
        for t in tables:
            found_a, found_b, (tq, tat) = _table_pass(c, None if every else query[pos], [blocks[x] for x in t],
                                                      radius, leaders)
            edges += [(ids[pos[a]] << np.uint64(32)) | ids[pos[b]] for a, b in zip(found_a, found_b)]
            h_ids.append(ids[pos[tq]])
            h_at.append(ids[pos[tat]])
    return _distinct(np.concatenate(edges)), np.concatenate(h_ids), np.concatenate(h_at)


# ---- exact duplicates, decisions, links ----

def _collapse(h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct codes in order of first appearance, their first frames, and for each
    frame the first frame of its code. Sorted per slice of the top bits, to stay in the cache."""
    rep = np.empty(len(h), np.intp)
    is_first = np.zeros(len(h), bool)
    for c, frames in _slices(h, [(0, 64)]):
        o = np.argsort(c)
        c, frames = c[o], frames[o]
        starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
        first = np.minimum.reduceat(frames, starts)
        rep[frames] = np.repeat(first, np.diff(np.r_[starts, len(c)]))
        is_first[first] = True
    first = np.flatnonzero(is_first)
    return h[first], first, rep


def _decide(state: np.ndarray, lo: np.ndarray, hi: np.ndarray, horizon: np.ndarray) -> None:
    """Settle, in place, what the neighbour pairs found so far (lo earlier) allow, per code (indexed
    by its first frame; 0 undecided): a kept earlier neighbour makes a duplicate; a code is kept when
    its check was complete (no horizon) and all its earlier neighbours are duplicates."""
    earlier = np.zeros(len(state), bool)
    earlier[hi] = True
    state[(state == 0) & ~earlier & (horizon == _NONE)] = _KEPT
    pending = np.zeros(len(state), bool)
    e = np.flatnonzero(state[hi] == 0)
    # Rounds settle most codes; each settles at least the earliest undecided code whose check was
    # complete.
    while e.size:
        before = e.size
        state[hi[e[state[lo[e]] == _KEPT]]] = _DUP
        e = e[state[hi[e]] == 0]
        open_hi = hi[e]
        pending[open_hi] = horizon[open_hi] == _NONE
        pending[open_hi[state[lo[e]] != _DUP]] = False
        state[open_hi[pending[open_hi]]] = _KEPT
        pending[open_hi] = False
        e = e[state[hi[e]] == 0]
        if e.size > before // 2:
            break
    # Long chains (a slow drift) settle a few codes per round: finish in frame order instead. A code
    # reached undecided has no kept earlier neighbour (it would be marked), so it is kept when its
    # check was complete and its earlier neighbours are all duplicates; then its later ones are.
    state[hi[e[state[lo[e]] == _KEPT]]] = _DUP
    e = e[(state[hi[e]] == 0) & (horizon[hi[e]] == _NONE)]
    order = np.argsort(hi[e], kind="stable")
    lo_e, hi_e = lo[e][order], hi[e][order]
    todo = _distinct(hi_e)
    rows = zip(todo.tolist(), np.searchsorted(hi_e, todo).tolist(), np.searchsorted(hi_e, todo, "right").tolist(),
               np.searchsorted(lo, todo).tolist(), np.searchsorted(lo, todo, "right").tolist())
    for u, a, b, c, d in rows:      # lo is sorted: the pairs are sorted `lo << 32 | hi`
        if not state[u] and state[lo_e[a:b]].min() == _DUP:
            state[u] = _KEPT
            state[hi[c:d]] = _DUP


def _solve(h: np.ndarray, radius: int, n_blocks: int | None, run_pass) -> tuple[np.ndarray, np.ndarray]:
    """The passes of the module docstring, then dup_of and distance per frame. `run_pass(codes,
    ids, query, radius, blocks, groups, leaders)` returns (edges, horizon ids, horizon values)."""
    n = len(h)
    codes, iid, rep = _collapse(h)
    ids = iid.view(np.uint64)           # codes are named by their first frame
    link = np.arange(n)
    if radius and len(codes) > 1:
        blocks, groups = _plan(radius, len(codes), n_blocks)
        edges = np.empty(0, np.uint64)
        state = np.zeros(n, np.int8)
        horizon = np.full(n, _NONE, np.int64)
        member, query, leaders = None, np.ones(len(codes), bool), _LEADERS
        while True:
            sub = (codes, ids, query) if member is None else (codes[member], ids[member], query[member])
            new, h_ids, h_at = run_pass(*sub, radius, blocks, groups, leaders)
            edges = _distinct(np.concatenate([edges, new]))
            horizon[iid[query]] = _NONE
            np.minimum.at(horizon, h_ids.astype(np.intp), h_at.astype(np.int64))
            lo, hi = (edges >> np.uint64(32)).astype(np.intp), (edges & np.uint64(0xFFFFFFFF)).astype(np.intp)
            _decide(state, lo, hi, horizon)
            # Each code links to its earliest kept neighbour (itself if kept); that is exact when
            # its check reached past it. Codes whose check stopped short of a decision or of an
            # exact link go to the next pass, against every code not known to be a duplicate.
            link = np.arange(n)
            to_kept = state[lo] == _KEPT
            np.minimum.at(link, hi[to_kept], lo[to_kept])
            s, hz = state[iid], horizon[iid]
            query = ((s == 0) & (hz != _NONE)) | ((s == _DUP) & (link[iid] >= hz))
            if not query.any():
                break
            member, leaders = (s != _DUP) | query, leaders * 16
    dup_of = link[rep]
    dup_of[dup_of == np.arange(n)] = -1
    dist = np.full(n, -1, np.int8)
    dups = np.flatnonzero(dup_of >= 0)
    dist[dups] = np.bitwise_count(h[dups] ^ h[dup_of[dups]])
    return dup_of, dist


# ---- public API ----

def _local_pass(codes, ids, query, radius, blocks, groups, leaders):
    out = [_group_pass(codes, ids, query, blocks, prefix, tables, radius, leaders) for prefix, tables in groups]
    return tuple(np.concatenate(x) for x in zip(*out))


def find_duplicates(hashes: np.ndarray, radius: int, *, n_blocks: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(dup_of int64, distance int8) per hash, as the module docstring defines them.

    `hashes`: 64-bit pHashes (uint64, or int64 holding the same bits) in canonical order, earliest
    first. `n_blocks`: the index's block count B (radius..64; by default chosen from the radius
    and the number of distinct codes); any value gives the same result, only the speed changes.
    """
    return _solve(_check(hashes, radius), radius, n_blocks, _local_pass)


def _map(chunk: tuple, blocks, prefix: tuple, part_bits: int):
    """Ray map step: a chunk of (codes, ids, query) cut into 2**part_bits key ranges of a table group."""
    codes, ids, query = chunk
    out = [(c, ids[pos], query[pos]) for c, pos in _split(codes, [blocks[b] for b in prefix], part_bits)]
    return out if len(out) > 1 else out[0]     # Ray stores a single return value as it is


def _reduce(radius: int, blocks, prefix: tuple, tables: list, leaders: int, *pieces):
    """Ray reduce step: one key range of one table group, from every chunk's piece."""
    codes, ids, query = (np.concatenate([p[k] for p in pieces]) for k in range(3))
    return _group_pass(codes, ids, query, blocks, prefix, tables, radius, leaders)


def find_duplicates_ray(hashes: np.ndarray, radius: int, *, n_blocks: int | None = None,
                        chunk: int = 1 << 22, task_codes: int = 1 << 22) -> tuple[np.ndarray, np.ndarray]:
    """`find_duplicates` with the tables spread over Ray tasks: the same result.

    In each pass the distinct codes go to the object store in chunks of `chunk`; for one table
    group at a time, map tasks cut each chunk into key ranges, and one reduce task per key range
    runs the group's tables on it and returns the neighbour pairs it found as packed uint64 arrays.
    A task holds about `task_codes` codes, the object store about two copies of the codes; the
    driver holds the input and the links (~50 bytes per hash).
    """
    import ray

    map_task, reduce_task = ray.remote(_map), ray.remote(_reduce)

    def ray_pass(codes, ids, query, radius, blocks, groups, leaders):
        part_bits = min(16, max(0, math.ceil(math.log2(max(len(codes), 1) / task_codes))))
        chunks = [ray.put((codes[i:i + chunk], ids[i:i + chunk], query[i:i + chunk])) for i in range(0, len(codes), chunk)]
        split = map_task.options(num_returns=1 << part_bits)
        out = []
        for prefix, tables in groups:
            pieces = [split.remote(c, blocks, prefix, part_bits) for c in chunks]
            pieces = [p if isinstance(p, list) else [p] for p in pieces]
            out += ray.get([reduce_task.remote(radius, blocks, prefix, tables, leaders, *[p[q] for p in pieces])
                            for q in range(1 << part_bits)])
        return tuple(np.concatenate(x) for x in zip(*out))

    return _solve(_check(hashes, radius), radius, n_blocks, ray_pass)
