"""Near-duplicate links across a dataset: equal to a brute-force greedy pass, whatever the index."""

import numpy as np
import pytest

from stream2dataset.dataset import dedup
from stream2dataset.dataset.dedup import find_duplicates, find_duplicates_ray


def reference(h: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """The module's definition, literally: frames in order; a frame within `radius` of an earlier
    kept frame links to the earliest such frame, else it is kept."""
    h = np.asarray(h, np.uint64)
    dup_of, dist, kept = np.full(len(h), -1, np.int64), np.full(len(h), -1, np.int8), []
    for i, code in enumerate(h):
        d = np.bitwise_count(h[kept] ^ code) if kept else np.empty(0, np.uint8)
        hit = np.flatnonzero(d <= radius)
        if hit.size:
            dup_of[i], dist[i] = kept[hit[0]], d[hit[0]]
        else:
            kept.append(i)
    return dup_of, dist


def flip(rng, code, k: int) -> np.uint64:
    for b in rng.choice(64, k, replace=False):
        code ^= np.uint64(1) << np.uint64(b)
    return code


def frames(n: int, radius: int, seed: int = 0) -> np.ndarray:
    """Random codes mixed with copies of earlier codes at 0..radius+2 flipped bits, slow drifts
    (1-2 bits per frame), static scenes with noisy hashes (dense clusters) and exact repeats."""
    rng = np.random.default_rng(seed)
    scenes = rng.integers(0, 2**64, 3, dtype=np.uint64)
    h = rng.integers(0, 2**64, n, dtype=np.uint64)
    for i in range(1, n):
        u = rng.random()
        if u < 0.25:
            h[i] = flip(rng, h[rng.integers(0, i)], int(rng.integers(0, radius + 3)))
        elif u < 0.35:
            h[i] = flip(rng, h[i - 1], int(rng.integers(1, 3)))
        elif u < 0.5:
            h[i] = flip(rng, scenes[rng.integers(0, 3)], int(rng.integers(0, 3)))
        elif u < 0.55:
            h[i] = h[rng.integers(0, i)]
    return h


def assert_same(got, want):
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert got[0].dtype == np.int64 and got[1].dtype == np.int8


@pytest.mark.parametrize("radius, n_blocks", [(0, None), (1, None), (1, 5), (4, None), (4, 4), (4, 5), (4, 8),
                                              (10, None), (10, 10), (10, 12), (16, None), (16, 18)])
def test_equals_brute_force(radius, n_blocks):
    h = frames(2500, radius, seed=radius)
    assert_same(find_duplicates(h, radius, n_blocks=n_blocks), reference(h, radius))


def test_every_pass_and_slice_path_equals_brute_force(monkeypatch):
    # One code per bucket checked at first and tiny slices: most codes need further passes.
    monkeypatch.setattr(dedup, "_LEADERS", 1)
    monkeypatch.setattr(dedup, "_SLICE", 64)
    for radius in (2, 4, 7):
        h = frames(2000, radius, seed=10 + radius)
        assert_same(find_duplicates(h, radius), reference(h, radius))


def test_dense_static_scenes_and_long_drift():
    rng = np.random.default_rng(3)
    scenes = rng.integers(0, 2**64, 4, dtype=np.uint64)
    noisy = np.array([flip(rng, scenes[rng.integers(0, 4)], int(rng.integers(0, 4))) for _ in range(20000)])
    drift = np.bitwise_xor.accumulate(np.uint64(1) << rng.integers(0, 64, 5000).astype(np.uint64))
    for h in (noisy, drift, np.r_[drift[:2000], noisy[:8000]]):
        want = reference(h, 4)
        assert_same(find_duplicates(h, 4), want)
        assert want[1].max() <= 4            # every link is within the radius, even along a drift


def test_links_are_earliest_kept_and_within_radius():
    h = np.array([0b0, 0b1, 0b111, 0b1111111, 0b11, 0b1111111], np.uint64)
    dup_of, dist = find_duplicates(h, 2)
    # Frames 1 and 4 are within 2 bits of frame 0 (4 is also within 1 bit of frame 2, which is
    # later); 2 is 3 bits from 0 and 3 is 4 bits from 2: both kept; 5 repeats 3.
    assert dup_of.tolist() == [-1, 0, -1, -1, 0, 3]
    assert dist.tolist() == [-1, 1, -1, -1, 2, 0]


def test_exact_duplicate_groups_link_to_first_occurrence():
    rng = np.random.default_rng(4)
    static = rng.integers(0, 2**64, 5, dtype=np.uint64)
    which = rng.integers(0, 5, 300_000)
    h = static[which]
    h[::7] = rng.integers(0, 2**64, len(h[::7]), dtype=np.uint64)      # unrelated frames between
    dup_of, dist = find_duplicates(h, 4)
    first = {}
    for i, code in enumerate(h[:2000].tolist()):
        first.setdefault(code, i)
        assert dup_of[i] == (-1 if first[code] == i else first[code])
    assert (dist[dup_of >= 0] == 0).all()


def test_deterministic_idempotent_and_prefix_stable():
    h = frames(3000, 4, seed=5)
    dup_of, dist = find_duplicates(h, 4)
    assert_same(find_duplicates(h.copy(), 4), (dup_of, dist))
    assert_same(find_duplicates(h.view(np.int64), 4), (dup_of, dist))   # Parquet's int64 pHash bits
    kept = np.flatnonzero(dup_of < 0)
    assert (find_duplicates(h[kept], 4)[0] == -1).all()                 # kept frames stay kept
    assert_same(find_duplicates(h[:1234], 4), (dup_of[:1234], dist[:1234]))  # appending changes nothing before


def test_empty_single_and_bad_input():
    for h in (np.empty(0, np.uint64), np.array([7], np.uint64)):
        dup_of, dist = find_duplicates(h, 4)
        assert dup_of.tolist() == [-1] * len(h) and dist.tolist() == [-1] * len(h)
    assert find_duplicates(np.array([5, 5], np.uint64), 0)[0].tolist() == [-1, 0]
    with pytest.raises(ValueError):
        find_duplicates(np.zeros(3, np.float64), 4)
    with pytest.raises(ValueError):
        find_duplicates(np.zeros((2, 2), np.uint64), 4)
    with pytest.raises(ValueError):
        find_duplicates(np.zeros(3, np.uint64), 65)
    with pytest.raises(ValueError):
        find_duplicates(np.arange(3, dtype=np.uint64), 4, n_blocks=3)


def test_ray_equals_local(ray_local):
    h = np.r_[frames(3000, 4, seed=6), frames(3000, 4, seed=7)]
    want = find_duplicates(h, 4)
    # several map chunks and key ranges per table group, and passes beyond the first
    assert_same(find_duplicates_ray(h, 4, chunk=2500, task_codes=2000), want)
    assert_same(find_duplicates_ray(h, 4, n_blocks=6, chunk=5000, task_codes=100_000), want)
    assert_same(find_duplicates_ray(np.empty(0, np.uint64), 4), (np.empty(0, np.int64), np.empty(0, np.int8)))
