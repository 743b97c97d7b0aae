"""The facecam: the rectangle of a streamer's webcam overlay, estimated once per segment.

A face box alone is not the facecam: streamers put a webcam window (often framed) in a corner of
the game, and the dataset wants that whole window. Two cues find it:

- the face track: where the face sits over the segment (median of the per-frame boxes);
- the overlay's straight borders: edges that stay put while the content moves. The median over
  time of each pixel's gradient keeps them and drops moving game or webcam content.

Candidate lines are the columns/rows around the face that are edges along most of the face's span
(plus the frame's own borders); the facecam is the smallest rectangle around the face whose four
sides are continuous edges. When that is the whole frame, the stream is all webcam.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import Literal, Sequence

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # x, y, w, h in source pixels

EDGE_LEVEL = 14          # grey-level step (max over RGB) that counts as an edge
SIDE_CONTINUITY = 0.8    # fraction of a side's length that must be edge
CANDIDATES = 6           # lines considered per side, nearest to the face first
MIN_CAM_OVER_FACE = 1.6  # a facecam is wider and taller than the face by at least this


@dataclass(frozen=True)
class FacecamEstimate:
    kind: Literal["overlay", "full_frame", "none"]
    box: Box | None          # the facecam (the whole frame for full_frame)
    face: Box | None         # the median face box of the segment
    continuity: float        # the weakest side's edge fraction (1.0 for frame borders)
    faces_found: float       # fraction of frames with a face


def face_track(face_boxes: Sequence[Sequence[Box]]) -> tuple[Box | None, float]:
    """The median box of each frame's largest face, and the fraction of frames with one."""
    largest = [max(boxes, key=lambda b: b[2] * b[3]) for boxes in face_boxes if len(boxes)]
    if not largest:
        return None, 0.0
    med = np.median(np.asarray(largest, dtype=np.float64), axis=0)
    return tuple(int(round(v)) for v in med), len(largest) / len(face_boxes)  # type: ignore[return-value]


def static_edges(frames: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Boolean maps of edges that persist: vx[y, x] is an edge between columns x-1 and x.

    An edge persists when it is there in at least half the frames (the median over time), counted
    frame by frame with uint8 absdiff: a stack of 12 int16 720p frames cost ~1 s, this ~0.1 s."""
    h, w = frames[0].shape[:2]
    count_x = np.zeros((h, w - 1), np.uint8)
    count_y = np.zeros((h - 1, w), np.uint8)
    for f in frames:
        count_x += _channel_max(cv2.absdiff(f[:, 1:], f[:, :-1])) >= EDGE_LEVEL
        count_y += _channel_max(cv2.absdiff(f[1:], f[:-1])) >= EDGE_LEVEL
    half = (len(frames) + 1) // 2
    vx = np.zeros((h, w), bool)
    vy = np.zeros((h, w), bool)
    vx[:, 1:] = count_x >= half
    vy[1:, :] = count_y >= half
    return vx, vy


def _channel_max(image: np.ndarray) -> np.ndarray:
    # Elementwise over the 3 channel views: numpy's reduce over a length-3 last axis is 13x slower.
    return np.maximum(np.maximum(image[..., 0], image[..., 1]), image[..., 2])


def _widen(edges: np.ndarray, axis: int) -> np.ndarray:
    """A border blurred by scaling or chroma subsampling may sit one pixel off: widen by one."""
    out = edges.copy()
    lo, hi = [slice(None)] * 2, [slice(None)] * 2
    lo[axis], hi[axis] = slice(1, -1), slice(2, None)
    out[tuple(lo)] |= edges[tuple(hi)]
    hi[axis] = slice(None, -2)
    out[tuple(lo)] |= edges[tuple(hi)]
    return out


def _candidates(loose: np.ndarray, exact: np.ndarray, positions: np.ndarray, boundary: int) -> list[int]:
    """Lines that are edges along the face's span, nearest first, one per run of neighbours.

    `loose` is the widened profile (a line qualifies), `exact` the raw one (where in its run of
    neighbouring columns the line really is).
    """
    picked: list[int] = []
    run: list[int] = []
    for p in [int(p) for p in positions] + [-10]:  # a sentinel closes the last run
        if p >= 0 and loose[p] >= SIDE_CONTINUITY and (not run or abs(p - run[-1]) == 1):
            run.append(p)
            continue
        if run:
            picked.append(max(run, key=lambda q: exact[q]))
            run = []
            if len(picked) == CANDIDATES:
                break
        if p >= 0 and loose[p] >= SIDE_CONTINUITY:
            run = [p]
    return picked + [boundary]


def estimate_facecam(frames: Sequence[np.ndarray], face_boxes: Sequence[Sequence[Box]]) -> FacecamEstimate:
    """Estimate the facecam of one segment from sampled RGB frames and their detected faces."""
    face, found = face_track(face_boxes)
    if face is None:
        return FacecamEstimate("none", None, None, 0.0, 0.0)
    h, w = frames[0].shape[:2]
    exact_x, exact_y = static_edges(frames)
    vx, vy = _widen(exact_x, 1), _widen(exact_y, 0)
    fx, fy, fw, fh = face
    fx0, fy0, fx1, fy1 = max(fx, 0), max(fy, 0), min(fx + fw, w), min(fy + fh, h)
    # Lines that are edges along the face's own span: the overlay's borders must cross it.
    col, col_exact = vx[fy0:fy1].mean(axis=0), exact_x[fy0:fy1].mean(axis=0)
    row, row_exact = vy[:, fx0:fx1].mean(axis=1), exact_y[:, fx0:fx1].mean(axis=1)
    lefts = _candidates(col, col_exact, np.arange(fx0 - 1, 0, -1), 0)
    rights = _candidates(col, col_exact, np.arange(fx1 + 1, w), w)
    tops = _candidates(row, row_exact, np.arange(fy0 - 1, 0, -1), 0)
    bottoms = _candidates(row, row_exact, np.arange(fy1 + 1, h), h)
    # Prefix sums make each side's edge fraction O(1).
    cx = np.concatenate([np.zeros((1, w)), np.cumsum(vx, axis=0)])  # along y, per column
    cy = np.concatenate([np.zeros((h, 1)), np.cumsum(vy, axis=1)], axis=1)  # along x, per row

    def vertical(x: int, y0: int, y1: int) -> float:
        return 1.0 if x in (0, w) else (cx[y1, x] - cx[y0, x]) / (y1 - y0)

    def horizontal(y: int, x0: int, x1: int) -> float:
        return 1.0 if y in (0, h) else (cy[y, x1] - cy[y, x0]) / (x1 - x0)

    best: tuple[int, float, Box] | None = None
    for x0, x1, y0, y1 in product(lefts, rights, tops, bottoms):
        bw, bh = x1 - x0, y1 - y0
        if bw < MIN_CAM_OVER_FACE * fw or bh < MIN_CAM_OVER_FACE * fh:
            continue
        weakest = min(vertical(x0, y0, y1), vertical(x1, y0, y1), horizontal(y0, x0, x1), horizontal(y1, x0, x1))
        if weakest >= SIDE_CONTINUITY and (best is None or bw * bh < best[0]):
            best = (bw * bh, weakest, (x0, y0, bw, bh))
    if best is None or best[2] == (0, 0, w, h):
        return FacecamEstimate("full_frame", (0, 0, w, h), face, 1.0, found)
    return FacecamEstimate("overlay", best[2], face, best[1], found)
