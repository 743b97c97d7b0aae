"""Near-duplicate detection: 64-bit perceptual hashes and the in-segment duplicate pass.

Hashes are OpenCV contrib's pHash (`cv2.img_hash`, ~20x cheaper than the `imagehash` package),
packed big-endian into one uint64 per image: OpenCV's hash byte 0 is the most significant byte,
so `f"{h:016x}"` reads as OpenCV's bytes in order. Cross-segment dedup happens later, in dataset/.
"""

from __future__ import annotations

import cv2
import numpy as np


def _phash_op():
    if not hasattr(cv2, "img_hash"):
        raise ImportError("cv2.img_hash is missing: install opencv-contrib-python (not opencv-python), "
                          "and only one cv2 package per environment")
    return cv2.img_hash.PHash.create()


def phash64(batch: np.ndarray) -> np.ndarray:
    """(N,) uint64 pHash of a uint8 (N, H, W, 3|4) RGB(A) batch; alpha is ignored.

    Removed (transparent) pixels are already black (see transforms.chroma_key), so they hash as
    background.
    """
    if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[-1] not in (3, 4):
        raise ValueError(f"expected a uint8 (N, H, W, 3|4) batch, got {batch.dtype} {batch.shape}")
    op = _phash_op()
    if len(batch) == 0:
        return np.empty(0, np.uint64)
    # OpenCV's pHash shrinks to 32x32 and then converts BGR to gray; do the same steps ourselves
    # so our RGB gets the right luma weights (and the colour conversion runs on 32x32 only).
    small = np.stack([cv2.resize(img[..., :3], (32, 32), interpolation=cv2.INTER_LINEAR_EXACT) for img in batch])
    gray = cv2.cvtColor(small.reshape(-1, 32, 3), cv2.COLOR_RGB2GRAY).reshape(-1, 32, 32)
    raw = np.empty((len(batch), 8), np.uint8)
    for i, img in enumerate(gray):
        raw[i] = op.compute(img)[0]
    return raw.view(">u8")[:, 0].astype(np.uint64)


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Bitwise Hamming distance between uint64 hashes (broadcasts, so one-vs-many works)."""
    return np.bitwise_count(np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64)))


def mark_near_duplicates(hashes: np.ndarray, max_distance: int) -> list[int | None]:
    """For a segment's frames in order: None for a kept frame, else the index of the kept frame it
    duplicates (within `max_distance` bits of the latest kept frame).

    Comparing with the kept frame, not the previous frame, stops slow drift (a pan) from chaining
    a whole segment onto its first frame.
    """
    hashes = np.asarray(hashes, np.uint64)
    marks: list[int | None] = []
    kept = -1
    for i, h in enumerate(hashes):
        if kept >= 0 and int(hamming(h, hashes[kept])) <= max_distance:
            marks.append(kept)
        else:
            kept = i
            marks.append(None)
    return marks
