"""Memorisation check: is a generated image a copy of a training frame?

pHash ranks the training set cheaply (one XOR+popcount per frame); pixel distance then decides
among the few nearest, since pHash alone also matches frames that merely share a layout.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..processing.hashing import hamming, phash64
from ..layout import atomic_write_bytes

# Same radius as the dataset's near-duplicate rule (dedup_distance / dedup_radius default 4).
COPY_PHASH = 4
# RMSE in grey levels (0..255). On carphone at 32-64 px, re-quantising a frame (+-2 levels of
# noise) costs ~1.4, while the next frame 1/30 s later is ~3.5 away (median) and one 1/6 s later
# ~8; frames sampled 1 s apart (the dataset's default) are 15+ apart. 6 names near-exact copies
# and stays below any two distinct training samples.
COPY_RMSE = 6.0


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    """RMSE of RGB images in grey levels, `b` resized (area-averaged) to `a`'s size."""
    if b.shape[:2] != a.shape[:2]:
        b = cv2.resize(b, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_AREA)
    d = a[..., :3].astype(np.float32) - b[..., :3].astype(np.float32)
    return float(np.sqrt(np.mean(d * d)))


def nearest_training_frames(generated: np.ndarray, train_images: np.ndarray, train_ids: list[str],
                            k_phash: int = 8, train_hashes: np.ndarray | None = None) -> list[dict]:
    """For each generated NHWC uint8 image, its nearest training frame: the k_phash nearest by
    pHash, then the nearest of those by pixel RMSE. `train_hashes` (the dataset's `phash`
    column) skips re-hashing the training frames.

    Returns one dict per image: index, train_id, train_index, phash_distance, pixel_rmse, copy.
    """
    if len(train_images) == 0 or len(train_images) != len(train_ids):
        raise ValueError(f"{len(train_images)} training images for {len(train_ids)} ids")
    th = phash64(train_images) if train_hashes is None else np.asarray(train_hashes, np.uint64)
    results = []
    for i, (img, h) in enumerate(zip(generated, phash64(generated))):
        dist = hamming(h, th)
        # stable sort: ties keep dataset order, so reruns name the same frame
        candidates = np.argsort(dist, kind="stable")[:max(k_phash, 1)]
        rmse = [_rmse(img, train_images[j]) for j in candidates]
        best = int(candidates[int(np.argmin(rmse))])
        d, r = int(dist[best]), float(min(rmse))
        results.append({"index": i, "train_id": train_ids[best], "train_index": best,
                        "phash_distance": d, "pixel_rmse": r,
                        "copy": d <= COPY_PHASH and r < COPY_RMSE})
    return results


def _tile(img: np.ndarray, size: int) -> np.ndarray:
    # nearest-neighbour: small samples stay crisp pixels instead of a blur
    return cv2.resize(np.ascontiguousarray(img[..., :3]), (size, size), interpolation=cv2.INTER_NEAREST)


def write_memorisation_sheet(generated: np.ndarray, train_images: np.ndarray, results: list[dict],
                             path: Path, tile: int = 128, label: int = 20) -> Path:
    """A PNG with one row per result: generated | nearest training frame, distances below;
    copies framed and labelled in red. Size: len(results) * (tile + label) by 2 * tile."""
    if not results:
        raise ValueError("no results to show")
    red, grey = (255, 40, 40), (220, 220, 220)  # RGB: the sheet is converted to BGR once, at the end
    sheet = np.full((len(results) * (tile + label), 2 * tile, 3), 24, np.uint8)
    for row, r in enumerate(results):
        y = row * (tile + label)
        sheet[y:y + tile, :tile] = _tile(generated[r["index"]], tile)
        sheet[y:y + tile, tile:] = _tile(train_images[r["train_index"]], tile)
        colour = red if r["copy"] else grey
        if r["copy"]:
            cv2.rectangle(sheet, (0, y), (2 * tile - 1, y + tile - 1), colour, 2)
        text = f"#{r['index']} ph {r['phash_distance']} rmse {r['pixel_rmse']:.1f}" + (" COPY" if r["copy"] else "")
        cv2.putText(sheet, text, (3, y + tile + label - 6), cv2.FONT_HERSHEY_SIMPLEX,
                    0.35 * tile / 128, colour, 1, cv2.LINE_AA)
    ok, png = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    atomic_write_bytes(Path(path), png.tobytes())
    return Path(path)


def memorisation_table(results: list[dict]) -> str:
    """The results as a plain-text table, with a last line counting the copies."""
    lines = [f"{'sample':>6}  {'nearest train id':<24} {'phash':>5} {'rmse':>6}  copy"]
    for r in results:
        lines.append(f"{r['index']:>6}  {str(r['train_id'])[:24]:<24} {r['phash_distance']:>5} "
                     f"{r['pixel_rmse']:>6.1f}  {'COPY' if r['copy'] else '-'}")
    copies = sum(r["copy"] for r in results)
    lines.append(f"{copies} of {len(results)} samples copy a training frame "
                 f"(pHash <= {COPY_PHASH} and RMSE < {COPY_RMSE:g} grey levels)")
    return "\n".join(lines)
