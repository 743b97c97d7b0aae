"""The facecam: the rectangle of a streamer's webcam overlay, estimated once per window.

A face box alone is not the facecam: streamers put a webcam window (often framed) in a corner of
the game, and the dataset wants that whole window. Three cues find it:

- the streamer's face, chosen by consistency over the window (a track of detections that stays
  put in most sampled frames), not by size per frame: mediapipe also fires on cartoon faces in
  the game or video content (DESIGN.md), and those come and go or move;
- the overlay's straight borders: edges that stay put while the content moves, counted at two
  contrast levels (a pale webcam backdrop against a pale road makes a faint but steady step);
- the boundary where the temporal statistics change: the webcam's content is independent of the
  game's, so along a true side the activity (mean frame-to-frame change) differs across it; and
  where no edge shows (a dark webcam corner over a dark UI panel), a side is where the camera's
  motion (its sensor noise at least) stops at graphics that never move (`motion_stops`: the
  fallback when edges close no rectangle).

Candidate lines are the columns/rows around the face that are edges along most of the face's span
(plus the frame's own borders); the facecam starts as the smallest rectangle around the face whose
four sides are continuous edges (a rounded corner's arc not counted when nothing else closes),
and a side moves out to a further closing line when the activity steps across that line and not
across the nearer one (a near-still webcam picture's own lines), and the whole rectangle moves out
to a closed one around it when the ring between them is as active as the inside (one webcam of
two people, the still one's picture closing a box around the other). A side does not grow over a
strip whose colours are the content's beyond it; a second steady face beside the box brings in a
closed rectangle holding both (two people in one webcam); the chosen box loses any static strip
along a side (a UI bar run on to the frame's border, a thick border's flat colour) down to where
the webcam's motion starts. Rectangles are also searched without a face, from seeds on a grid:
an overlay whose face the detector missed still has its borders (the window then looks for the
face inside it). It is scored (`confidence`), and the
window's layout is `overlay`, `full_frame` (an all-webcam stream, positively recognised: no
overlay rectangle anywhere, and one big steady face; the window then looks closer for a small
webcam's face, `window.py`) or `unknown` (no face, or no rectangle one
can trust): an unknown layout stores no facecam crop (`facecam_not_found`).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import Literal, Sequence

import cv2
import numpy as np

from .detect import centre_inside

Box = tuple[int, int, int, int]  # x, y, w, h in source pixels

EDGE_LEVEL = 14          # grey-level step (max over RGB) that counts as an edge
FAINT_LEVEL = 5          # a faint step counts when it is there in nearly every frame ...
FAINT_SHARE = 0.85       # ... in this share of the frames
SIDE_CONTINUITY = 0.8    # fraction of a side's length that must be edge
CANDIDATES = 12          # lines considered per side, nearest to the face first
MIN_CAM_OVER_FACE = 1.3  # a facecam is wider and taller than the face by at least this
TRACK_MIN_PRESENCE = 0.3  # a streamer's face is in at least this share of the sampled frames
FULL_FRAME_FACE = 0.15   # an all-webcam face is at least this share of the frame's width
#                          (tune: webcams 0.19-0.38, faces inside a facecam 0.09-0.14)
FULL_FRAME_AREA = 0.9    # an "overlay" this big is the whole frame (a source's black bar)
FULL_FRAME_SCORE = 0.75  # an all-webcam face scores this (cartoon faces in content: 0.5-0.65)
MIN_CONFIDENCE = 0.5     # below this an overlay is not trusted: the layout is unknown
CORNER_SKIP = 0.12       # share of each side's ends not counted when no rectangle closes (rounded corners)
GROW_MAX = 0.5          # a side moves out by at most this share of the box ...
GROW_CONTINUITY = 0.6   # ... to a line this continuous (the step backs it) ...
GROW_SAME = 0.25         # ... over a strip whose activity is like the inside's ...
GROW_STEP = 0.07         # ... when the activity step across the new line is this much bigger ...
GROW_COLOURS = 0.1       # ... unless the strip's colours are the content's beyond it, by this much
SEED_PX = 32             # the face-free overlay search: small seeds on a grid ...
SEED_STEP = (120, 80)    # ... spaced so that any facecam >= 160x120 holds one whole seed
SEED_CANDIDATES = 8      # lines per side from a seed (a face's search takes CANDIDATES)
STRONGER_BY = 0.1        # the smallest rectangle loses to one around it whose sides are this much
STRONGER_AREA = 2.5      # more continuous, up to this many times its area
SEED_CONFIDENCE = 0.8    # a rectangle the face's own search did not close must be surer
LOOK_INTO = 3            # rectangles with no face in them that the window looks into for one
MIN_OVERLAY = (140, 100)  # the smallest rectangle the face-free search calls an overlay
GROW_STRONG = 0.9        # a closed rectangle this continuous around a closed one may be the webcam's
STATIC_ACT = 0.25        # a band this still is static graphics (a UI panel; codec noise on it is ~0) ...
ACTIVE_ACT = 0.8         # ... and a webcam's band this active (a camera's sensor noise alone moves it):
#                          where one meets the other is a side even with no visible edge (a dark
#                          webcam corner over a dark UI)
DUO_PRESENCE = 0.6       # a second steady face beside the box (two people in one webcam) ...
DUO_SPAN = 5.0           # ... no further from the first than this many face sizes ...
DUO_AREA = 4.0           # ... is in the webcam when a closed rectangle this much bigger holds both
DUO_SIZE = 0.4           # ... and the two faces' widths are within this ratio (one sits further back)
TRIM_MAX = 0.4           # a side moves in past a static strip (a UI bar, a thick border's flat colour)
CUT_SHARE = 0.5          # a scene cut: this share of the frame's blocks changes at once between two samples ...
CUT_LEVEL = 25           # ... and a face region that changes by this much (grey levels) at the cut ...
CUT_JUMP = 4.0           # ... and this many times more than between its other samples is of the scene
DEFOCUS_DETAIL = 0.042   # a face keeping less than this share of its contrast at 1 px is out of focus ...
DEFOCUS_REL = 0.95       # ... when it also keeps less of it than the big face does (a film's depth of field)
TRIM_CORE = 4            # ... at least this many lines still, once the codec's bleed is left out ...
#                          up to this share of the box, where the webcam's motion starts
FLAT_STD = 4.0           # a border's flat colour: grey levels this close (codec noise)
UI_ACT = 0.1             # drawn graphics: only codec noise moves them


@dataclass(frozen=True)
class FacecamEstimate:
    kind: Literal["overlay", "full_frame", "unknown"]
    box: Box | None          # the facecam (the whole frame for full_frame); None when unknown
    face: Box | None         # the streamer's face: the median box of its track
    continuity: float        # the weakest side's edge fraction (1.0 for frame borders)
    faces_found: float       # fraction of frames with the streamer's face
    confidence: float = 0.0  # how sure the layout is, 0..1
    reason: str = ""         # why the layout is unknown
    candidate: Box | None = None  # an overlay rectangle found with no face track in it (look there)
    candidates: tuple[Box, ...] = ()  # the strongest few such rectangles, strongest first


@dataclass(frozen=True)
class Track:
    """One face followed over the window: its median box, share of frames, mean score."""

    box: Box
    presence: float
    score: float
    boxes: tuple[Box, ...]


def face_tracks(faces: Sequence[Sequence], n_frames: int) -> list[Track]:
    """Detections linked across frames (near the same place, of a similar size), most consistent
    first: presence x mean score. A streamer's face stays in the webcam; a cartoon face in the
    content comes and goes, and does not outvote it by being bigger in some frames."""
    dets = [(i, getattr(f, "box", f), float(getattr(f, "score", 1.0))) for i, fs in enumerate(faces) for f in fs]
    dets.sort(key=lambda d: -d[2])
    groups: list[list[tuple[int, Box, float]]] = []
    for i, box, score in dets:
        for g in groups:
            ax, ay, aw, ah = g[0][1]
            if i in {d[0] for d in g}:
                continue
            dx = abs(box[0] + box[2] / 2 - ax - aw / 2)
            dy = abs(box[1] + box[3] / 2 - ay - ah / 2)
            if max(dx, dy) <= 0.6 * max(aw, box[2]) and 0.5 <= box[2] / max(aw, 1) <= 2.0:
                g.append((i, box, score))
                break
        else:
            groups.append([(i, box, score)])
    tracks = []
    for g in groups:
        med = np.median(np.asarray([d[1] for d in g], np.float64), axis=0)
        tracks.append(Track(tuple(int(round(v)) for v in med), len(g) / max(n_frames, 1),  # type: ignore[arg-type]
                            float(np.mean([d[2] for d in g])), tuple(d[1] for d in g)))
    return sorted(tracks, key=lambda t: -t.presence * t.score)


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
    faint_x = np.zeros((h, w - 1), np.uint8)
    faint_y = np.zeros((h - 1, w), np.uint8)
    for f in frames:
        gx = _channel_max(cv2.absdiff(f[:, 1:], f[:, :-1]))
        gy = _channel_max(cv2.absdiff(f[1:], f[:-1]))
        count_x += gx >= EDGE_LEVEL
        count_y += gy >= EDGE_LEVEL
        faint_x += gx >= FAINT_LEVEL
        faint_y += gy >= FAINT_LEVEL
    half = (len(frames) + 1) // 2
    most = max(half, int(np.ceil(FAINT_SHARE * len(frames))))
    vx = np.zeros((h, w), bool)
    vy = np.zeros((h, w), bool)
    vx[:, 1:] = (count_x >= half) | (faint_x >= most)
    vy[1:, :] = (count_y >= half) | (faint_y >= most)
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


def _candidates(loose: np.ndarray, exact: np.ndarray, positions: np.ndarray, boundary: int,
                limit: int = CANDIDATES) -> list[int]:
    """Lines that are edges along the face's span, nearest first, one per run of neighbours.

    `loose` is the widened profile (a line qualifies), `exact` the raw one (where in its run of
    neighbouring columns the line really is).
    """
    pos = np.asarray(positions, np.int64)
    sel = pos[loose[pos] >= SIDE_CONTINUITY] if pos.size else pos
    if not sel.size:
        return [boundary]
    runs = np.split(sel, np.flatnonzero(np.abs(np.diff(sel)) != 1) + 1)[:limit]
    return [int(r[np.argmax(exact[r])]) for r in runs] + [boundary]


def activity(frames: Sequence[np.ndarray]) -> np.ndarray:
    """Each pixel's mean grey-level change between consecutive sampled frames (float32)."""
    grey = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
    acc = np.zeros(grey[0].shape, np.float32)
    for a, b in zip(grey, grey[1:]):
        acc += cv2.absdiff(a, b)
    return acc / max(len(grey) - 1, 1)


def motion_stops(act: np.ndarray, band: int = 6, gap: int = 3, along: int = 9) -> tuple[np.ndarray, ...]:
    """Where a webcam's motion stops at static graphics, per side kind: maps (left, right, top,
    bottom) whose [y, x] is True when a box's left side at column x (etc.) has an active band just
    inside and a static band just outside (each band `band` px, `gap` px off the line, smoothed
    over `along` px along it)."""
    h, w = act.shape
    across_x = cv2.blur(act, (band, along))  # mean over `band` columns x `along` rows, centred
    across_y = cv2.blur(act, (along, band))
    off = gap + band // 2
    left_of = np.zeros_like(act)   # the band left of column x
    right_of = np.zeros_like(act)  # the band right of column x
    left_of[:, off:] = across_x[:, :w - off]
    right_of[:, :w - off] = across_x[:, off:]
    above = np.zeros_like(act)
    below = np.zeros_like(act)
    above[off:, :] = across_y[:h - off, :]
    below[:h - off, :] = across_y[off:, :]

    def stops(inside: np.ndarray, outside: np.ndarray) -> np.ndarray:
        return (inside >= ACTIVE_ACT) & (outside <= STATIC_ACT)
    return stops(right_of, left_of), stops(left_of, right_of), stops(below, above), stops(above, below)


def _side_contrast(act: np.ndarray, box: Box, band: int = 6, gap: int = 3) -> float:
    """The weakest side's activity step: |inside - outside| / (inside + outside + 1), over a
    band just inside and just outside each side that is not the frame's own border."""
    h, w = act.shape
    x, y, bw, bh = box
    steps = []
    for inner, outer in (
        (act[y:y + bh, x + gap:x + gap + band], act[y:y + bh, max(0, x - gap - band):max(0, x - gap)]),
        (act[y:y + bh, x + bw - gap - band:x + bw - gap], act[y:y + bh, x + bw + gap:x + bw + gap + band]),
        (act[y + gap:y + gap + band, x:x + bw], act[max(0, y - gap - band):max(0, y - gap), x:x + bw]),
        (act[y + bh - gap - band:y + bh - gap, x:x + bw], act[y + bh + gap:y + bh + gap + band, x:x + bw]),
    ):
        if inner.size and outer.size:
            a, b = float(inner.mean()), float(outer.mean())
            steps.append(abs(a - b) / (a + b + 1.0))
    return min(steps) if steps else 0.0


def _rectangle(maps: tuple[np.ndarray, ...], face: Box, act: np.ndarray | None = None,
               limit: int = CANDIDATES, skip: float = 0.0, grow: bool = True,
               min_size: tuple[int, int] = (0, 0), use_stops: bool = False,
               picture: np.ndarray | None = None) -> tuple[Box, float] | None:
    """A rectangle around `face` whose four sides are continuous persistent edges: the smallest,
    and with `act` (the activity map) its sides moved out where the activity steps (`_grow`)."""
    vx, vy, exact_x, exact_y, cx, cy, stops, c_stops = maps
    h, w = vx.shape
    fx, fy, fw, fh = face
    fx0, fy0, fx1, fy1 = max(fx, 0), max(fy, 0), min(fx + fw, w), min(fy + fh, h)
    if fx1 <= fx0 or fy1 <= fy0:
        return None
    # Lines that are edges (or where the motion stops) along the face's own span: the overlay's
    # borders must cross it.
    # (where in a run of neighbouring lines the line is: judged over a span half a face longer
    # each way, as a border runs on past the face and the picture's own lines beside it do not)
    ey0, ey1, ex0, ex1 = max(0, fy0 - fh // 2), min(h, fy1 + fh // 2), max(0, fx0 - fw // 2), min(w, fx1 + fw // 2)
    col, col_exact = vx[fy0:fy1].mean(axis=0), exact_x[ey0:ey1].mean(axis=0)
    row, row_exact = vy[:, fx0:fx1].mean(axis=1), exact_y[:, ex0:ex1].mean(axis=1)
    if use_stops:  # the fallback when edges alone close nothing: sides where the motion stops count
        sl, sr, st, sb = c_stops
        col_l, col_r = stops[0][fy0:fy1].mean(axis=0), stops[1][fy0:fy1].mean(axis=0)
        row_t, row_b = stops[2][:, fx0:fx1].mean(axis=1), stops[3][:, fx0:fx1].mean(axis=1)
    else:
        col_l = col_r = np.zeros_like(col)
        row_t = row_b = np.zeros_like(row)
        sl = sr = st = sb = None
    lefts = _candidates(np.maximum(col, col_l), np.maximum(col_exact, col_l), np.arange(fx0 - 1, 0, -1), 0, limit)
    rights = _candidates(np.maximum(col, col_r), np.maximum(col_exact, col_r), np.arange(fx1 + 1, w), w, limit)
    tops = _candidates(np.maximum(row, row_t), np.maximum(row_exact, row_t), np.arange(fy0 - 1, 0, -1), 0, limit)
    bottoms = _candidates(np.maximum(row, row_b), np.maximum(row_exact, row_b), np.arange(fy1 + 1, h), h, limit)

    def vertical(x: int, y0: int, y1: int) -> float:
        m = int(skip * (y1 - y0))  # a rounded corner's arc is not the side's
        if x in (0, w):
            return 1.0
        best = max((c[y1 - m, x] - c[y0 + m, x]) for c in (cx, sl, sr) if c is not None)
        return best / (y1 - y0 - 2 * m)

    def horizontal(y: int, x0: int, x1: int) -> float:
        m = int(skip * (x1 - x0))
        if y in (0, h):
            return 1.0
        best = max((c[y, x1 - m] - c[y, x0 + m]) for c in (cy, st, sb) if c is not None)
        return best / (x1 - x0 - 2 * m)

    # Every left x right x top x bottom at once (numpy): a seed's search looks at up to 13^4.
    L, R, T, B = (np.asarray(v, np.int64) for v in (lefts, rights, tops, bottoms))
    x0, x1 = L[:, None, None, None], R[None, :, None, None]
    y0, y1 = T[None, None, :, None], B[None, None, None, :]
    bw, bh = x1 - x0, y1 - y0

    def sides(c: np.ndarray, stop: np.ndarray, at: np.ndarray, lo: np.ndarray, hi: np.ndarray, n: int,
              vertical: bool) -> np.ndarray:
        m = np.floor(skip * (hi - lo)).astype(np.int64)
        a = np.minimum(at, c.shape[1] - 1 if vertical else c.shape[0] - 1)
        got = np.max([(k[hi - m, a] - k[lo + m, a]) if vertical else (k[a, hi - m] - k[a, lo + m])
                      for k in (c, stop) if k is not None], axis=0)
        return np.where((at == 0) | (at == n), 1.0, got / (hi - lo - 2 * m))

    weakest_all = np.minimum(np.minimum(sides(cx, sl, x0, y0, y1, w, True), sides(cx, sr, x1, y0, y1, w, True)),
                             np.minimum(sides(cy, st, y0, x0, x1, h, False), sides(cy, sb, y1, x0, x1, h, False)))
    ok = (bw >= max(MIN_CAM_OVER_FACE * fw, min_size[0])) & (bh >= max(MIN_CAM_OVER_FACE * fh, min_size[1])) \
        & (weakest_all >= SIDE_CONTINUITY)
    if not ok.any():
        return None
    # The smallest closed rectangle whose sides are about as continuous as the best one's: a
    # picture's own faint inner lines (a window frame in the footage) close a smaller rectangle
    # than the webcam's border, but more weakly (the border runs unbroken).
    # Only rectangles near the smallest's size and on no frame border it is not on compete (the
    # frame's own borders count as unbroken).
    area = np.where(ok, bw * bh, np.iinfo(np.int64).max)
    i, j, k, m = np.unravel_index(int(np.argmin(area)), ok.shape)  # ties: the first, nearest lines first
    rivals = ok & (area <= STRONGER_AREA * area[i, j, k, m]) \
        & ((x0 > 0) | (L[i] == 0)) & ((x1 < w) | (R[j] == w)) & ((y0 > 0) | (T[k] == 0)) & ((y1 < h) | (B[m] == h))
    bar = weakest_all[rivals].max() - STRONGER_BY

    def corners(a: int, b: int, c: int, d: int) -> tuple[int, int, int, int]:
        return int(L[a]), int(T[c]), int(R[b]), int(B[d])
    if weakest_all[i, j, k, m] < bar and act is not None:
        a2 = np.where(rivals & (weakest_all >= bar), area, np.iinfo(np.int64).max)
        i2, j2, k2, m2 = np.unravel_index(int(np.argmin(a2)), ok.shape)
        # ... when the ring it adds is the webcam's own content (as active as the inside), not a
        # thick border's flat colour (whose inner line may be the weaker one)
        if _same_activity(act, corners(i, j, k, m), corners(i2, j2, k2, m2)):
            i, j, k, m = i2, j2, k2, m2
    if act is not None:
        # A strong rectangle around a strong one, the ring between them as active as the inside:
        # one webcam picture with a steady line of its own (a still half beside a second person,
        # a photo's frame); moved out ring by ring, the smallest first.
        first = corners(i, j, k, m)
        for _ in range(3):
            bigger = rivals & (weakest_all >= max(GROW_STRONG, weakest_all[i, j, k, m] - STRONGER_BY)) \
                & (area > area[i, j, k, m])
            if not bigger.any():
                break
            inner = corners(i, j, k, m)
            for flat in np.argsort(np.where(bigger, area, np.iinfo(np.int64).max), axis=None)[:32]:
                if not bigger.flat[flat]:
                    break
                i2, j2, k2, m2 = np.unravel_index(int(flat), ok.shape)
                outer = corners(i2, j2, k2, m2)
                if _same_activity(act, inner, outer) and _same_activity(act, first, outer):
                    i, j, k, m = i2, j2, k2, m2
                    break
            else:
                break
    box = (int(L[i]), int(T[k]), int(R[j] - L[i]), int(B[m] - T[k]))
    weakest = float(weakest_all[i, j, k, m])
    if act is not None and grow:
        box, weakest = _grow(box, weakest, act, (lefts, rights, tops, bottoms), vertical, horizontal, (w, h), picture)
    return box, weakest


def _same_activity(act: np.ndarray, inner: tuple[int, int, int, int], outer: tuple[int, int, int, int]) -> bool:
    """Whether the ring between two rectangles (x0, y0, x1, y1) is as active as the inner one."""
    def total(r):
        return float(act[r[1]:r[3], r[0]:r[2]].sum()), (r[2] - r[0]) * (r[3] - r[1])
    (si, ai), (so, ao) = total(inner), total(outer)
    if ao <= ai:
        return False
    a, b = si / max(ai, 1), (so - si) / (ao - ai)
    return abs(a - b) / (a + b + 1.0) <= GROW_SAME


def _line_step(act: np.ndarray, axis: int, at: int, lo: int, hi: int, inside_after: bool,
               band: int = 6, gap: int = 3) -> float:
    """The activity step across a line (a column `at` for axis 1, a row for axis 0) over lo..hi:
    |inside - outside| / (inside + outside + 1), over bands just either side of it."""
    n = act.shape[axis]
    after = (max(0, min(n, at + gap)), max(0, min(n, at + gap + band)))
    before = (max(0, at - gap - band), max(0, at - gap))
    if after[1] <= after[0] or before[1] <= before[0]:
        return 1.0  # the frame's own border
    pick = (lambda a, b: act[lo:hi, a:b]) if axis == 1 else (lambda a, b: act[a:b, lo:hi])
    inner, outer = (pick(*after), pick(*before)) if inside_after else (pick(*before), pick(*after))
    if not inner.size or not outer.size:
        return 0.0
    a, b = float(inner.mean()), float(outer.mean())
    return abs(a - b) / (a + b + 1.0)


def _colours(image: np.ndarray) -> np.ndarray:
    """A normalised colour histogram (8 levels a channel)."""
    hist = cv2.calcHist([np.ascontiguousarray(image)], [0, 1, 2], None, [8, 8, 8], [0, 256] * 3).ravel()
    return hist / max(float(hist.sum()), 1.0)


def _outside_colours(picture: np.ndarray, side: int, a: int, b: int, new: int, lo: int, hi: int) -> bool:
    """Whether the strip a side would gain (columns or rows a..b) has the colours of what lies
    beyond its new line more than of the box just inside its old one: then it is the content's
    own (a lamppost's line in the street scene around a still photo), not the webcam's."""
    width = b - a
    vertical = side < 2
    n = picture.shape[1] if vertical else picture.shape[0]
    if side in (0, 2):  # growing left/up: beyond is before `new`, the inside is after b
        beyond, inside = (max(0, new - width), new), (b, min(n, b + width))
    else:
        beyond, inside = (new, min(n, new + width)), (max(0, a - width), a)

    def cut(r: tuple[int, int]) -> np.ndarray:
        return picture[lo:hi, r[0]:r[1]] if vertical else picture[r[0]:r[1], lo:hi]
    if beyond[1] - beyond[0] < 4 or inside[1] - inside[0] < 4:
        return False
    strip = _colours(cut((a, b)))
    like_beyond = float(np.minimum(strip, _colours(cut(beyond))).sum())
    like_inside = float(np.minimum(strip, _colours(cut(inside))).sum())
    return like_beyond > like_inside + GROW_COLOURS


def _grow(box: Box, weakest: float, act: np.ndarray, lines, vertical, horizontal, size,
          picture: np.ndarray | None = None) -> tuple[Box, float]:
    """Move a side out to the next line that still closes the rectangle when the activity step
    across the new line is clearly bigger than across the old one: a steady line inside a
    near-still webcam picture (a photo's edge) has the same activity on both of its sides, the
    webcam's true border separates two independent sources (the brief's temporal-statistics cue)."""
    w, h = size
    x0, y0, bw, bh = box
    x1, y1 = x0 + bw, y0 + bh
    lefts, rights, tops, bottoms = lines
    for side in range(4):
        if side == 0:
            options, cur = sorted((l for l in lefts if l < x0), reverse=True), x0
        elif side == 1:
            options, cur = sorted(r for r in rights if r > x1), x1
        elif side == 2:
            options, cur = sorted((t for t in tops if t < y0), reverse=True), y0
        else:
            options, cur = sorted(b for b in bottoms if b > y1), y1
        axis = 1 if side < 2 else 0
        lo, hi = (y0, y1) if axis == 1 else (x0, x1)
        here = _line_step(act, axis, cur, lo, hi, inside_after=side in (0, 2))
        limit = GROW_MAX * (bw if axis == 1 else bh)
        inner = float((act[y0:y1, x0:x1]).mean())
        best = None
        for new in [o for o in options if o not in (0, w, h)][:3]:  # a frame border has no step to measure
            if abs(new - cur) > limit:
                break
            nx0, nx1, ny0, ny1 = (new if side == 0 else x0), (new if side == 1 else x1), \
                (new if side == 2 else y0), (new if side == 3 else y1)
            k = min(vertical(nx0, ny0, ny1), vertical(nx1, ny0, ny1),
                    horizontal(ny0, nx0, nx1), horizontal(ny1, nx0, nx1))
            if k < GROW_CONTINUITY:
                continue
            there = _line_step(act, axis, new, lo, hi, inside_after=side in (0, 2))
            # the strip gained must be the webcam's own content (a border's flat colour is not)
            a, b = sorted((cur, new))
            strip = float((act[lo:hi, a:b] if axis == 1 else act[a:b, lo:hi]).mean())
            # (a strip more active than the inside passes when its colours are not the content's:
            # a near-still photo's own edges move with its drift)
            same = (inner - strip if picture is not None else abs(strip - inner)) / (strip + inner + 1.0) <= GROW_SAME
            if same and there >= here + GROW_STEP and (best is None or there > best[0]) \
                    and (picture is None or not _outside_colours(picture, side, a, b, new, lo, hi)):
                best = (there, nx0, nx1, ny0, ny1, k)
        if best:
            _, x0, x1, y0, y1, k = best
            weakest = min(weakest, k)
            bw, bh = x1 - x0, y1 - y0
    return (x0, y0, x1 - x0, y1 - y0), weakest


def _trim_static(box: Box, act: np.ndarray, picture: np.ndarray) -> Box:
    """Move each side in past a static strip to where the webcam's motion starts: a side that no
    edge closed runs on to the frame's border over a still UI, a thick border's flat colour
    (whose inner line the picture's dark edge hid) is no part of the webcam. A strip is static
    when its lines, bar 2 px of codec bleed at each end, average at most STATIC_ACT; the side
    moves to the first line as active as a camera (ACTIVE_ACT, and 0.3 of the band after it).
    Only a side on the frame's border, a strip of one flat colour (a border) or one as still as
    drawn graphics (UI_ACT): a webcam's own picture may hold still strips too (an animated
    scene's dark wall: 0.2 on average, a UI's text and panels 0.05)."""
    x, y, bw, bh = box
    H, W = act.shape
    for side in range(4):
        on_border = (side == 0 and x == 0) or (side == 1 and x + bw == W) or (side == 2 and y == 0) \
            or (side == 3 and y + bh == H)
        span = bh if side < 2 else bw
        depth = int(TRIM_MAX * (bw if side < 2 else bh))
        if depth < TRIM_CORE + 6:
            continue
        if side == 0:
            p = act[y:y + bh, x:x + depth].mean(axis=0)
        elif side == 1:
            p = act[y:y + bh, x + bw - depth:x + bw].mean(axis=0)[::-1]
        elif side == 2:
            p = act[y:y + depth, x:x + bw].mean(axis=1)
        else:
            p = act[y + bh - depth:y + bh, x:x + bw].mean(axis=1)[::-1]
        if span <= 0 or p.size < depth:
            continue
        band = np.convolve(p, np.ones(8) / 8, mode="full")[7:]  # mean of p[q:q+8]
        q = next((q for q in range(TRIM_CORE + 4, depth - 8)
                  if p[q] >= max(ACTIVE_ACT, 0.3 * band[q]) and band[q] >= ACTIVE_ACT), None)
        still = float(p[2:q - 2].mean()) if q is not None else STATIC_ACT + 1
        if still > STATIC_ACT:
            continue
        core = (picture[y:y + bh, x + 2:x + q - 2] if side == 0 else picture[y:y + bh, x + bw - q + 2:x + bw - 2]
                if side == 1 else picture[y + 2:y + q - 2, x:x + bw] if side == 2
                else picture[y + bh - q + 2:y + bh - 2, x:x + bw])
        if not on_border and still > UI_ACT and float(core.reshape(-1, 3).std(axis=0).max()) > FLAT_STD:
            continue
        if side == 0:
            x, bw = x + q, bw - q
        elif side == 1:
            bw -= q
        elif side == 2:
            y, bh = y + q, bh - q
        else:
            bh -= q
    return x, y, bw, bh


def overlay_rectangles(maps: tuple[np.ndarray, ...], act: np.ndarray | None = None) -> list[tuple[Box, float]]:
    """Closed rectangles of persistent edges anywhere in the frame, found without a face: from
    small seeds on a grid. An overlay whose face the detector misses (a small or near-still
    webcam) still has its borders; a stream with one is not an all-webcam stream."""
    h, w = maps[0].shape
    found: dict[Box, float] = {}
    for cy in range(SEED_PX // 2 + 16, h - SEED_PX // 2, SEED_STEP[1]):
        for cx in range(SEED_PX // 2 + 24, w - SEED_PX // 2, SEED_STEP[0]):
            seed = (cx - SEED_PX // 2, cy - SEED_PX // 2, SEED_PX, SEED_PX)
            for skip in (0.0, CORNER_SKIP):
                got = _rectangle(maps, seed, act, limit=SEED_CANDIDATES, skip=skip, grow=False, min_size=MIN_OVERLAY)
                if got is None:
                    continue
                box, weakest = got
                if box[2] >= MIN_OVERLAY[0] and box[3] >= MIN_OVERLAY[1] and box[2] * box[3] < FULL_FRAME_AREA * w * h:
                    found[box] = max(weakest, found.get(box, 0.0))
                    break
    return sorted(found.items(), key=lambda kv: -kv[1])


def _confidence(act: np.ndarray, box: Box, weakest: float, presence: float) -> float:
    # continuity 0.8 -> 0, 1.0 -> 1; the activity step backs a side that is faint
    return min(1.0, 0.5 * (weakest - SIDE_CONTINUITY) / (1 - SIDE_CONTINUITY) + 0.5
               + 0.5 * min(1.0, 3 * _side_contrast(act, box))) * min(1.0, presence / 0.6)


def _both_people(best: tuple, tracks: list[Track], maps: tuple, act: np.ndarray, size: tuple[int, int],
                 picture: np.ndarray | None = None) -> tuple:
    """One webcam of two people: a second steady face just beside the box (the near-still
    person's own picture lines closed a box around the other) is in the webcam when a closed
    rectangle holds both faces, on no frame border the box was not on, within DUO_AREA times
    its area, and as sure."""
    _, conf, t, box, weakest = best
    w, h = size
    x, y, bw, bh = box
    for t2 in tracks[:4]:
        if t2 is t or t2.presence < DUO_PRESENCE or t2.score < FULL_FRAME_SCORE or centre_inside(t2.box, box) \
                or not DUO_SIZE <= t2.box[2] / max(t.box[2], 1) <= 1 / DUO_SIZE:
            continue
        ux0, uy0 = min(t.box[0], t2.box[0]), min(t.box[1], t2.box[1])
        ux1, uy1 = max(t.box[0] + t.box[2], t2.box[0] + t2.box[2]), max(t.box[1] + t.box[3], t2.box[1] + t2.box[3])
        if ux1 - ux0 > DUO_SPAN * max(t.box[2], t2.box[2]) or uy1 - uy0 > DUO_SPAN * max(t.box[3], t2.box[3]):
            continue  # too far apart for one webcam
        found = _rectangle(maps, (ux0, uy0, ux1 - ux0, uy1 - uy0), act, picture=picture)
        if found is None:
            continue
        (nx, ny, nw, nh), k = found
        new_border = (nx == 0 < x) or (ny == 0 < y) or (nx + nw == w > x + bw) or (ny + nh == h > y + bh)
        if new_border or nw * nh > DUO_AREA * bw * bh or not centre_inside(box, found[0]):
            continue
        c2 = _confidence(act, found[0], k, min(t.presence, t2.presence))
        if c2 >= max(MIN_CONFIDENCE, conf - 0.1):
            return (c2 * t.score, c2, t, found[0], k)
    return best


def _cut_with_scene(frames: Sequence[np.ndarray], box: Box) -> bool:
    """Whether a face's region changes with the whole frame at a scene cut: a film's second
    character does, a webcam's face does not (the webcam's picture goes on through the content's
    cuts). A still second face otherwise looks like a small webcam's beside an all-webcam stream's."""
    h, w = frames[0].shape[:2]
    small = [cv2.resize(cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY), (160, 90),
                        interpolation=cv2.INTER_AREA).astype(np.float32) for f in frames]
    diffs = [np.abs(b - a) for a, b in zip(small, small[1:])]
    if len(diffs) < 3:
        return False
    x0, y0 = min(159, max(0, box[0] * 160 // w)), min(89, max(0, box[1] * 90 // h))
    x1, y1 = max(x0 + 1, min(160, (box[0] + box[2]) * 160 // w)), max(y0 + 1, min(90, (box[1] + box[3]) * 90 // h))
    region = np.array([d[y0:y1, x0:x1].mean() for d in diffs])
    for p, d in enumerate(diffs):
        if (cv2.resize(d, (16, 9), interpolation=cv2.INTER_AREA) > 20).mean() >= CUT_SHARE:
            rest = float(np.median(np.delete(region, p)))
            if region[p] >= CUT_LEVEL and region[p] >= CUT_JUMP * max(rest, 1.0):
                return True
    return False


def fine_detail(frames: Sequence[np.ndarray], box: Box) -> float:
    """The share of a region's contrast at the finest scale (1 px), median over the frames: a face
    in focus keeps its fine detail (a webcam's face is its camera's subject, and an overlay's is
    scaled down), a film's background character out of focus has little."""
    h, w = frames[0].shape[:2]
    x0, y0 = max(0, box[0]), max(0, box[1])
    x1, y1 = min(w, box[0] + box[2]), min(h, box[1] + box[3])
    if x1 - x0 < 8 or y1 - y0 < 8:
        return 1.0
    shares = []
    for f in frames:
        g = cv2.cvtColor(np.ascontiguousarray(f[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY).astype(np.float32)
        shares.append(float((g - cv2.GaussianBlur(g, (0, 0), 1.0)).std() / (g.std() + 1e-3)))
    return float(np.median(shares))


def _out_of_focus(frames: Sequence[np.ndarray], face: Box, top: Box) -> bool:
    """Whether a second face is a film's character behind the big one: blurred, and more than the
    big face is (a small webcam's face beside a content face keeps more fine detail, not less)."""
    detail = fine_detail(frames, face)
    return detail < DEFOCUS_DETAIL and detail < DEFOCUS_REL * fine_detail(frames, top)


def estimate_facecam(frames: Sequence[np.ndarray], faces: Sequence[Sequence]) -> FacecamEstimate:
    """The window's layout from sampled RGB frames and their detected faces (`Face`s or boxes)."""
    n = len(frames)
    h, w = frames[0].shape[:2]
    tracks = [t for t in face_tracks(faces, n) if t.presence >= TRACK_MIN_PRESENCE]
    exact_x, exact_y = static_edges(frames)
    vx, vy = _widen(exact_x, 1), _widen(exact_y, 0)
    cx = np.concatenate([np.zeros((1, w)), np.cumsum(vx, axis=0)])  # prefix sums: O(1) side fractions
    cy = np.concatenate([np.zeros((h, 1)), np.cumsum(vy, axis=1)], axis=1)
    act = activity(frames)
    picture = frames[n // 2]
    maps = (vx, vy, exact_x, exact_y, cx, cy, None, None)
    with_stops: list = []

    def stop_maps() -> tuple:  # only when edges close nothing: ~0.1 s a window
        if not with_stops:
            stops = motion_stops(act)
            zero_row, zero_col = np.zeros((1, w), np.int32), np.zeros((h, 1), np.int32)
            c_stops = tuple(np.concatenate([zero_row, np.cumsum(m, axis=0, dtype=np.int32)]) for m in stops[:2]) \
                + tuple(np.concatenate([zero_col, np.cumsum(m, axis=1, dtype=np.int32)], axis=1) for m in stops[2:])
            with_stops.append(maps[:6] + (stops, c_stops))
        return with_stops[0]
    if not tracks:
        rects = overlay_rectangles(maps, act)
        return FacecamEstimate("unknown", None, None, 0.0, 0.0, 0.0, "no_face_track", rects[0][0] if rects else None,
                               tuple(b for b, _ in rects[:LOOK_INTO]))
    scored = []
    for t in tracks[:3]:
        found = _rectangle(maps, t.box, act, picture=picture)
        if found is None or found[0] == (0, 0, w, h):
            found = _rectangle(maps, t.box, act, skip=CORNER_SKIP, picture=picture)
        if found is None or found[0] == (0, 0, w, h):
            found = _rectangle(stop_maps(), t.box, act, skip=CORNER_SKIP, use_stops=True, picture=picture)
            if found is not None and found[0][2] * found[0][3] >= FULL_FRAME_AREA * w * h:
                found = None  # motion that stops at a source's own black bar is no overlay
        if found is None or found[0] == (0, 0, w, h):
            continue
        box, weakest = found
        conf = _confidence(act, box, weakest, t.presence)
        scored.append((conf * t.score, conf, t, box, weakest))
    top = tracks[0]
    best = max(scored, key=lambda s: s[0]) if scored else None
    if best and best[1] >= MIN_CONFIDENCE and best[3][2] * best[3][3] < FULL_FRAME_AREA * w * h:
        best = _both_people(best, tracks, maps, act, (w, h), picture)
    if best and best[1] >= MIN_CONFIDENCE and best[3][2] * best[3][3] < FULL_FRAME_AREA * w * h:
        _, conf, t, box, weakest = best
        return FacecamEstimate("overlay", _trim_static(box, act, picture), t.box, weakest, t.presence, round(conf, 3))
    # All webcam only when positively recognised: no overlay rectangle anywhere (a webcam whose
    # face the detector missed still has its borders, and then the steady face is the content's,
    # e.g. a cartoon's), and one big steady face that no other steady face rivals.
    rects = overlay_rectangles(maps, act)
    for t in tracks[:3]:  # the face's own search missed a border that a seed's closed
        holding = [(b, k) for b, k in rects if centre_inside(t.box, b)
                   and b[2] >= MIN_CAM_OVER_FACE * t.box[2] and b[3] >= MIN_CAM_OVER_FACE * t.box[3]]
        if holding:
            box, weakest = min(holding, key=lambda r: r[0][2] * r[0][3])
            conf = _confidence(act, box, weakest, t.presence)
            if conf >= SEED_CONFIDENCE:
                return FacecamEstimate("overlay", _trim_static(box, act, picture), t.box, weakest, t.presence,
                                       round(conf, 3))
    if rects:
        return FacecamEstimate("unknown", None, None, 0.0, top.presence, 0.0, "overlay_without_face", rects[0][0],
                               tuple(b for b, _ in rects[:LOOK_INTO]))
    if best and best[1] >= MIN_CONFIDENCE:  # a source's own black bar makes a frame-sized "overlay"
        _, conf, t, box, weakest = best
        return FacecamEstimate("full_frame", (0, 0, w, h), t.box, 1.0, t.presence, round(conf, 3))
    rivals = [t for t in tracks[1:] if t.presence >= 0.5 and t.box[2] < 0.6 * top.box[2]
              and not _cut_with_scene(frames, t.box) and not _out_of_focus(frames, t.box, top.box)]
    if top.box[2] >= FULL_FRAME_FACE * w and top.score >= FULL_FRAME_SCORE and top.presence >= 0.5 and not rivals:
        return FacecamEstimate("full_frame", (0, 0, w, h), top.box, 1.0, top.presence,
                               round(min(1.0, top.presence / 0.6), 3))
    return FacecamEstimate("unknown", None, top.box, 0.0, top.presence, 0.0, "no_rectangle")
