"""Faces: mediapipe's BlazeFace models over the whole frame and over tiles, or a Haar fallback.

A facecam face in a 1280x720 frame is too small for the short-range model run on the whole frame
(DESIGN.md, "Small faces"), so `FaceDetector` runs both models on the whole frame (padded to a
square) and the short-range model on square tiles where facecams sit (the 4 corners and the
centre), maps every box back to frame pixels and merges duplicates with NMS.
"""

from __future__ import annotations

import os
import tempfile
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Sequence

import cv2
import numpy as np

from .models import model_path

# mediapipe's 6 face keypoints, in the Tasks API's order (subject's right eye first: on the image
# it is the left one of the two).
KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear")
NMS_IOU = 0.3
TILE_FRACTION = 0.6  # square tiles 60% of the frame's short side: the corners overlap the centre
MIN_TILED_SIDE = 256  # below this a tile would be smaller than the model's 128 px input anyway
# Zoomed-in tiles make the short-range model see faces in textures: on 200 frames of testsrc2 its
# false positives scored up to 0.72, while the facecam face scored 0.86-0.97 in tiles.
TILE_MIN_SCORE = 0.8
HAAR_SMALL_SIDE = 288
SHORT_SIDE, FULL_SIDE = 256, 384  # whole-frame views: twice the models' 128 / 192 px inputs
EDGE_PX = 2  # a tile box this close to an inner tile edge is a cut-off face: another view has it

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Face:
    """One face in source pixels: box (x, y, w, h), score, keypoints ((x, y) in KEYPOINTS order)."""

    box: Box
    score: float
    keypoints: tuple[tuple[float, float], ...] = ()


def _mediapipe():
    # Importing mediapipe writes a matplotlib cache: keep it out of a possibly read-only home.
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(tempfile.gettempdir(), "s2d-matplotlib"))
    import mediapipe as mp

    return mp


def mp_image(image_rgb: np.ndarray) -> Any:
    """A mediapipe Image over a contiguous HxWx3 uint8 RGB array."""
    mp = _mediapipe()
    data = np.ascontiguousarray(image_rgb, dtype=np.uint8)
    return mp.Image(image_format=mp.ImageFormat.SRGB, data=data)


_open_tasks: list[weakref.finalize] = []


def _closing(owner: object, task: Any) -> Any:
    """Close mediapipe `task` when `owner` is collected, or at exit.

    mediapipe's own __del__ fails at interpreter exit (its worker thread pool is already shut
    down by then, and later its module globals are gone), printing tracebacks. So close tasks
    from a threading exit hook, which runs before thread pools shut down; close() is idempotent.
    """
    if not _open_tasks:
        threading._register_atexit(_close_all)  # private, but the only hook early enough
    fin = weakref.finalize(owner, task.close)
    fin.atexit = False
    _open_tasks[:] = [f for f in _open_tasks if f.alive] + [fin]
    return task


def _close_all() -> None:
    for fin in _open_tasks:
        fin()


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def centre_inside(inner: Sequence[float], outer: Sequence[float]) -> bool:
    """True when the centre of box `inner` lies in box `outer` (both x, y, w, h)."""
    cx, cy = inner[0] + inner[2] / 2, inner[1] + inner[3] / 2
    return outer[0] <= cx < outer[0] + outer[2] and outer[1] <= cy < outer[1] + outer[3]


def nms(faces: Iterable[Face], threshold: float = NMS_IOU) -> list[Face]:
    """Keep the highest-scoring face of every group overlapping by IoU > threshold."""
    kept: list[Face] = []
    for face in sorted(faces, key=lambda f: f.score, reverse=True):
        if all(iou(face.box, k.box) <= threshold for k in kept):
            kept.append(face)
    return kept


def tiles(width: int, height: int) -> list[Box]:
    """Square tiles at the 4 corners and the centre, where facecams sit; they overlap."""
    t = round(min(width, height) * TILE_FRACTION)
    corners = [(x, y, t, t) for y in (0, height - t) for x in (0, width - t)]
    return corners + [((width - t) // 2, (height - t) // 2, t, t)]


def _square(image: np.ndarray, side: int) -> tuple[np.ndarray, tuple[int, int], float]:
    """The frame shrunk to fit `side` and zero-padded at the bottom/right into a square.

    The Tasks FaceDetector stretches its input to the model's square tensor (measured: a face in
    a 600x144 strip comes back with a box twice too big), so non-square views must be padded.
    Shrinking first keeps the pad cheap; the model's input is 128 or 192 px anyway."""
    h, w = image.shape[:2]
    scale = min(1.0, side / max(h, w))
    if scale < 1.0:
        image = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    out = np.zeros((max(image.shape[:2]),) * 2 + (3,), np.uint8)
    out[: image.shape[0], : image.shape[1]] = image
    return out, (0, 0), scale


class FaceDetector:
    """A processing stage: `detect(image)` for one frame, `__call__(batch)` for a Ray Data batch."""

    def __init__(
        self,
        min_score: float = 0.5,
        method: Literal["mediapipe", "haar"] = "mediapipe",
        tiles: bool = True,
        tile_min_score: float = TILE_MIN_SCORE,
    ):
        self.min_score = min_score
        self.tile_min_score = max(min_score, tile_min_score)
        self.method = method
        self.tiles = tiles
        if method == "mediapipe":
            self._short = self._load("face_detection_short_range.tflite")
            self._full = self._load("face_detection_full_range_sparse.tflite")
        elif method == "haar":
            path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
            self._haar = cv2.CascadeClassifier(path)
            if self._haar.empty():
                raise RuntimeError(f"OpenCV could not load its Haar cascade {path}")
        else:
            raise ValueError(f"unknown face detection method {method!r}: mediapipe or haar")

    def _load(self, name: str) -> Any:
        from mediapipe.tasks.python import vision
        from mediapipe.tasks.python.core.base_options import BaseOptions

        _mediapipe()
        options = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_path=str(model_path(name))),
            running_mode=vision.RunningMode.IMAGE,
            min_detection_confidence=self.min_score,
            min_suppression_threshold=NMS_IOU,
        )
        return _closing(self, vision.FaceDetector.create_from_options(options))

    # one frame ---------------------------------------------------------------------------
    def detect(self, image_rgb: np.ndarray) -> list[Face]:
        """Faces in one HxWx3 uint8 RGB frame, best first, duplicates merged."""
        if self.method == "haar":
            return self._detect_haar(image_rgb)
        h, w = image_rgb.shape[:2]
        faces = self._run(self._short, *_square(image_rgb, SHORT_SIDE))
        faces += self._run(self._full, *_square(image_rgb, FULL_SIDE))
        if self.tiles and min(w, h) >= MIN_TILED_SIDE:
            for x, y, t, _ in tiles(w, h):
                view = image_rgb[y : y + t, x : x + t]
                found = self._run(self._short, view, (x, y), 1.0)
                faces += [
                    f for f in found
                    if f.score >= self.tile_min_score and not _cut_by_tile(f.box, (x, y, t, t), (w, h))
                ]  # fmt: skip
        return [f for f in nms(faces) if f.score >= self.min_score]

    def detect_in(self, image_rgb: np.ndarray, region: Box) -> list[Face]:
        """Faces inside `region` of the frame (the facecam), looked at on their own.

        A 200 px facecam in a 720p frame leaves its face ~20 px in every whole-frame or tiled
        view; on its own the region fills the model's input and the face is found (bench:
        faces found in a 200x164 facecam went from ~80% to ~100% of frames)."""
        if self.method == "haar":
            x, y, w, h = region
            return [Face((f.box[0] + x, f.box[1] + y, f.box[2], f.box[3]), f.score)
                    for f in self._detect_haar(image_rgb[y : y + h, x : x + w])]
        x, y, w, h = region
        view, _, scale = _square(image_rgb[y : y + h, x : x + w], SHORT_SIDE)
        faces = self._run(self._short, view, (x, y), scale)
        return [f for f in nms(faces) if f.score >= self.min_score]

    def _run(self, task: Any, view: np.ndarray, origin: tuple[int, int], scale: float) -> list[Face]:
        """Detect in `view`, a square piece of the frame at `origin` resized by `scale`."""
        x0, y0 = origin
        side = view.shape[1]
        out = []
        for det in task.detect(mp_image(view)).detections:
            bb = det.bounding_box
            box = (bb.origin_x, bb.origin_y, bb.width, bb.height)
            box = tuple(round(v / scale) for v in box)
            box = (box[0] + x0, box[1] + y0, box[2], box[3])
            kps = tuple((x0 + k.x * side / scale, y0 + k.y * side / scale) for k in det.keypoints)
            out.append(Face(box, float(det.categories[0].score), kps))
        return out

    def _detect_haar(self, image_rgb: np.ndarray) -> list[Face]:
        gray = cv2.equalizeHist(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY))
        # Tiny frames (carphone's 176x144) lose faces to the cascade's 24 px window: double them
        # and search finer scales; big frames keep OpenCV's usual 1.1 step (a 720p frame costs
        # ~0.2 s even so). Measured on carphone: 60% of frames plain, 77% with both.
        up = 2.0 if min(gray.shape) < HAAR_SMALL_SIDE else 1.0
        if up > 1:
            gray = cv2.resize(gray, None, fx=up, fy=up, interpolation=cv2.INTER_LINEAR)
        step = 1.05 if up > 1 else 1.1
        boxes, neighbours = self._haar.detectMultiScale2(
            gray, scaleFactor=step, minNeighbors=3, minSize=(24, 24)
        )
        # Haar has no calibrated score: agreeing windows / 6, capped, so 3 (OpenCV's minimum
        # here) score 0.5 and 6 or more score 1.0.
        faces = [
            Face(tuple(round(int(v) / up) for v in b), min(1.0, int(n) / 6), ())
            for b, n in zip(boxes, neighbours)
        ]
        return [f for f in nms(faces) if f.score >= self.min_score]

    # a Ray Data batch ----------------------------------------------------------------------
    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Add per-image `face_boxes` (k x 4 int32), `face_scores` (k float32) and
        `face_keypoints` (k x 6 x 2 float32) as object arrays: plain numpy that Ray Data carries."""
        found = [self.detect(np.asarray(img)) for img in batch["image"]]
        batch["face_boxes"] = _objects(
            np.array([f.box for f in faces], np.int32).reshape(-1, 4) for faces in found
        )
        batch["face_scores"] = _objects(
            np.array([f.score for f in faces], np.float32) for faces in found
        )
        batch["face_keypoints"] = _objects(
            np.array([f.keypoints for f in faces if len(f.keypoints) == 6], np.float32).reshape(
                -1, 6, 2
            )
            for faces in found
        )
        return batch


def _cut_by_tile(box: Box, tile: Box, frame: tuple[int, int]) -> bool:
    """True when `box` touches an edge of `tile` that is not an edge of the frame."""
    x, y, w, h = box
    tx, ty, tw, th = tile
    fw, fh = frame
    return (
        (tx > 0 and x <= tx + EDGE_PX)
        or (ty > 0 and y <= ty + EDGE_PX)
        or (tx + tw < fw and x + w >= tx + tw - EDGE_PX)
        or (ty + th < fh and y + h >= ty + th - EDGE_PX)
    )


def _objects(items: Iterable[np.ndarray]) -> np.ndarray:
    items = list(items)
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


# alignment --------------------------------------------------------------------------------
EYE_Y = 0.40  # eyes at 40% of the height ...
EYE_X = (0.35, 0.65)  # ... and 35% / 65% of the width: the inter-ocular distance is 0.3 * size


def eye_targets(size: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """Where align_face puts the image-left eye (the subject's right) and the image-right eye."""
    return (EYE_X[0] * size, EYE_Y * size), (EYE_X[1] * size, EYE_Y * size)


def _eyes(face: Face) -> tuple[np.ndarray, np.ndarray]:
    if len(face.keypoints) >= 2:
        return np.array(face.keypoints[0], np.float32), np.array(face.keypoints[1], np.float32)
    x, y, w, h = face.box  # no keypoints (Haar): typical eye positions inside a face box
    return np.array([x + 0.3 * w, y + 0.38 * h], np.float32), np.array(
        [x + 0.7 * w, y + 0.38 * h], np.float32
    )


def align_face(image: np.ndarray, face: Face, size: int = 256) -> np.ndarray:
    """A size x size crop with the eyes level, at `eye_targets(size)` (a similarity transform)."""
    src_a, src_b = _eyes(face)
    dst_a, dst_b = (np.array(p, np.float32) for p in eye_targets(size))
    # getAffineTransform needs 3 points: the third is the eye vector turned 90 degrees, which
    # makes the map a rotation + uniform scale + shift (no shear).
    turn = np.array([[0, -1], [1, 0]], np.float32)
    src = np.stack([src_a, src_b, src_a + turn @ (src_b - src_a)])
    dst = np.stack([dst_a, dst_b, dst_a + turn @ (dst_b - dst_a)])
    matrix = cv2.getAffineTransform(src, dst)
    return cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
