"""Benchmark: near-duplicate links across a dataset (`find_duplicates`) at growing sizes.

Targets (issue 4): 1M hashes in under a minute on 2 cores; 10x more hashes cost at most 12x the
time; every planted near-duplicate found; links equal to a brute-force reference.

Data (`--data`): `planted` (default): random 64-bit codes, then `--planted` of the frames (10%)
overwritten by a copy of a random earlier frame with up to `--radius` random bits flipped (copies
of copies included). Stress shapes: `scenes`: every frame is one of 200 scene codes with 0-3 random
bits flipped (static scenes with noisy hashes: dense clusters of distinct codes); `drift`: a random
walk, one bit flipped per frame (long chains). Each size runs in a fresh process, so its peak RSS
is its own; time is the best of `--repeat` runs (CPU seconds are steadier than wall seconds on a
shared machine; both are shown).

Checks, from the output alone:
- planted: a planted copy whose source frame is kept must link to a kept frame at or before
  its source (the source is a kept neighbour, and links go to the earliest one);
- exact: the first `--prefix` frames equal a brute-force greedy pass over them (a frame's link
  depends on earlier frames only), and `--samples` frames across the whole run (half of them
  planted copies) equal a linear scan over all kept frames before them.

    .venv/bin/python bench/dedup.py --sizes 100000,1000000,10000000 --radius 4
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from stream2dataset.dataset import dedup


def planted(n: int, radius: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random codes; `fraction` of the frames copy an earlier frame with up to `radius` bits flipped."""
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**64, n, dtype=np.uint64)
    dst = np.sort(rng.choice(np.arange(1, n), int(n * fraction), replace=False))
    src = (rng.random(len(dst)) * dst).astype(np.int64)
    flips = np.zeros(len(dst), np.uint64)
    k = rng.integers(0, radius + 1, len(dst))
    for j in range(radius):        # k random bits (a repeated bit cancels: at most k apart)
        flips ^= np.where(j < k, np.uint64(1) << rng.integers(0, 64, len(dst)).astype(np.uint64), np.uint64(0))
    while True:                    # copies of copies: repeat until every copy sees its final source
        new = h[src] ^ flips
        if np.array_equal(new, h[dst]):
            return h, src, dst
        h[dst] = new


def stress(n: int, shape: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    one_bit = np.uint64(1) << rng.integers(0, 64, (3, n)).astype(np.uint64)
    if shape == "drift":
        return np.bitwise_xor.accumulate(one_bit[0])
    h = rng.integers(0, 2**64, 200, dtype=np.uint64)[rng.integers(0, 200, n)]
    for bits in one_bit:           # 0-3 flips (a repeated bit cancels)
        h ^= np.where(rng.random(n) < 0.5, bits, np.uint64(0))
    return h


def reference(h: np.ndarray, radius: int) -> np.ndarray:
    """dup_of by the definition: frames in order, each against the kept frames before it."""
    dup_of, kept = np.full(len(h), -1), np.empty(len(h), np.uint64)
    kept_at, n_kept = np.empty(len(h), np.int64), 0
    for i, code in enumerate(h):
        hit = np.flatnonzero(np.bitwise_count(kept[:n_kept] ^ code) <= radius)
        if hit.size:
            dup_of[i] = kept_at[hit[0]]
        else:
            kept[n_kept], kept_at[n_kept] = code, i
            n_kept += 1
    return dup_of


def child(n: int, args) -> dict:
    """One size, in this (fresh) process."""
    if args.data == "planted":
        h, src, dst = planted(n, args.radius, args.planted, args.seed)
    else:
        h, src, dst = stress(n, args.data, args.seed), np.empty(0, np.int64), np.empty(0, np.int64)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu, wall = [], []
    for _ in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        dup_of, dist = dedup.find_duplicates(h, args.radius)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    n_codes = int(np.count_nonzero(np.diff(np.sort(h)))) + 1
    b = dedup._n_blocks(args.radius, n_codes)
    # planted copies whose source is kept link to a kept frame at or before the source
    src_kept = dup_of[src] < 0
    found = (dup_of[dst[src_kept]] >= 0) & (dup_of[dst[src_kept]] <= src[src_kept])
    # exactness: a prefix by brute force, and samples by a linear scan over earlier kept frames
    m = min(n, args.prefix)
    prefix_ok = bool(np.array_equal(reference(h[:m], args.radius), dup_of[:m]))
    rng = np.random.default_rng(args.seed + 1)
    sample = np.r_[rng.choice(n, args.samples // 2), rng.choice(dst if len(dst) else n, args.samples - args.samples // 2)]
    kept_idx = np.flatnonzero(dup_of < 0)
    kept_codes = h[kept_idx]
    sample_ok = 0
    for i in sample:
        before = np.searchsorted(kept_idx, i)
        d = np.bitwise_count(kept_codes[:before] ^ h[i])
        hit = np.flatnonzero(d <= args.radius)
        want = (kept_idx[hit[0]], d[hit[0]]) if hit.size else (-1, -1)
        sample_ok += (dup_of[i], dist[i]) == want
    return {"n": n, "codes": n_codes, "blocks": b, "tables": math.comb(b, args.radius),
            "cpu": min(cpu), "wall": min(wall), "peak_mb": peak / 1024, "input_mb": rss_before / 1024,
            "dups": int((dup_of >= 0).sum()), "max_dist": int(dist.max(initial=-1)),
            "planted": int(src_kept.sum()), "planted_found": int(found.sum()),
            "prefix": m, "prefix_ok": prefix_ok, "samples": len(sample), "samples_ok": int(sample_ok)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000,10000000")
    ap.add_argument("--radius", type=int, default=4)
    ap.add_argument("--data", choices=["planted", "scenes", "drift"], default="planted")
    ap.add_argument("--planted", type=float, default=0.1, help="fraction of frames that are near-copies")
    ap.add_argument("--repeat", type=int, default=3, help="runs per size (the best counts)")
    ap.add_argument("--prefix", type=int, default=20000, help="frames checked against brute force")
    ap.add_argument("--samples", type=int, default=100, help="frames checked by a linear scan")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args)))
        return

    console = Console(width=max(Console().width, 160))
    data = f"{args.planted:.0%} planted near-copies" if args.data == "planted" else f"{args.data} data"
    console.print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}, "
                  f"radius {args.radius}, {data}")
    table = Table("hashes", "distinct", "B / tables", "CPU s", "wall s", "peak RSS MB (before)", "CPU growth",
                  "duplicates", "planted found", "exact: prefix, samples")
    prev = None
    for n in (int(s) for s in args.sizes.split(",")):
        out = subprocess.run([sys.executable, __file__, "--child", str(n), *sys.argv[1:]],
                             check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        growth = f"{r['cpu'] / prev['cpu']:.1f}x for {n / prev['n']:.0f}x" if prev else ""
        table.add_row(f"{n:,}", f"{r['codes']:,}", f"{r['blocks']} / {r['tables']}", f"{r['cpu']:.2f}",
                      f"{r['wall']:.2f}", f"{r['peak_mb']:.0f} ({r['input_mb']:.0f})", growth,
                      f"{r['dups']:,}, max {r['max_dist']} bits",
                      f"{r['planted_found']:,}/{r['planted']:,} = {r['planted_found'] / max(r['planted'], 1):.0%}"
                      if r["planted"] else "-",
                      f"{'ok' if r['prefix_ok'] else 'DIFFERS'} {r['prefix']:,}, {r['samples_ok']}/{r['samples']}")
        prev = r
    console.print(table)


if __name__ == "__main__":
    main()
