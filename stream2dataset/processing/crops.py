"""From one sampled frame to the crops the config asks for, or the reason there is none.

Every kind of output has its own test of worth: a face for the face kinds and the facecam, a person
for the person kinds; then size and sharpness for all. A frame that fails is not an error: it is
counted under its reason (datatrove's filters), e.g. a "be right back" screen under `no_face`.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import cv2
import numpy as np

from ..config import ProcessingConfig
from ..transforms import Step, parse_chain, stored_scale
from .detect import Face, align_face, centre_inside
from .facecam import Box, FacecamEstimate
from .person import person_box

FACE_KINDS = ("facecam", "face", "aligned_face")
PERSON_KINDS = ("silhouette", "person", "person_cutout")


@dataclass(frozen=True)
class Crop:
    kind: str
    image: np.ndarray        # RGB, or RGBA when the background was removed
    box: Box                 # in the sampled frame's pixels
    detector: str
    score: float


def sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image: low means blurred."""
    grey = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


@functools.lru_cache(maxsize=8)
def _chain(transforms_json: str) -> list[Step]:
    return parse_chain(json.loads(transforms_json))


def stored_sharpness(image: np.ndarray, cfg: ProcessingConfig) -> float:
    """Sharpness at the size the crop is stored (the transforms' `resize`), where that is smaller.

    The variance of the Laplacian falls as an image is enlarged: at its own size a 700-px crop of a
    good webcam scores below the same picture at 256 px, so an absolute gate at the cut size drops
    big crops that are sharp as stored. A crop the resize enlarges is judged at its own size."""
    h, w = image.shape[:2]
    scale = stored_scale(_chain(json.dumps(cfg.transforms, default=str)), w, h)
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = cv2.resize(np.ascontiguousarray(image[..., :3]), size, interpolation=cv2.INTER_AREA)
    return sharpness(image)


def _clamp(box: tuple[float, float, float, float], w: int, h: int) -> Box:
    x, y, bw, bh = (int(round(v)) for v in box)
    bw, bh = min(bw, w), min(bh, h)
    return max(0, min(x, w - bw)), max(0, min(y, h - bh)), bw, bh


def face_square(face: Box, margin: float, w: int, h: int) -> Box:
    """A square around the face, `margin` face sizes on each side, moved inside the frame."""
    fx, fy, fw, fh = face
    side = max(fw, fh) * (1 + 2 * margin)
    return _clamp((fx + fw / 2 - side / 2, fy + fh / 2 - side / 2, side, side), w, h)


def frame_crops(image: np.ndarray, faces: list[Face], cam: FacecamEstimate, mask: np.ndarray | None,
                cfg: ProcessingConfig, detector: str) -> tuple[list[Crop], list[str]]:
    """The crops of one frame and the reasons for each output kind that made none."""
    h, w = image.shape[:2]
    crops: list[Crop] = []
    drops: list[str] = []
    good = [f for f in faces if f.score >= cfg.min_face_score]
    if cam.kind == "overlay" and cam.box is not None:  # the streamer is in the facecam, not the game
        mine = [f for f in good if centre_inside(f.box, cam.box)]
        outside = bool(good) and not mine
        good = mine
    elif cam.kind == "unknown" and cam.reason != "not_estimated":  # an unknown layout stores no crop
        outside = bool(good)  # of the face kinds: its steady face may be the content's (a cartoon's)
        good = []
    else:
        outside = False
    face = max(good, key=lambda f: f.box[2] * f.box[3]) if good else None

    def add(kind: str, img: np.ndarray, box: Box, det: str, score: float) -> None:
        if min(img.shape[:2]) < cfg.min_crop_px:
            drops.append("too_small")
        elif stored_sharpness(img, cfg) < cfg.min_sharpness:
            drops.append("blurred")
        else:
            crops.append(Crop(kind, img, box, det, score))

    for kind in cfg.outputs:
        if kind in FACE_KINDS:
            if face is None:
                drops.append("facecam_not_found" if cam.kind == "unknown" and cam.reason != "not_estimated" else
                             "face_outside_facecam" if outside else "low_score" if faces else "no_face")
                continue
            if kind == "facecam":
                if cam.kind not in ("overlay", "full_frame") or cam.box is None:
                    drops.append("facecam_not_found")  # never store a guess (a whole frame) as a facecam
                    continue
                if not centre_inside(face.box, cam.box):
                    drops.append("face_outside_facecam")
                    continue
                x, y, bw, bh = cam.box
                add(kind, image[y:y + bh, x:x + bw], cam.box, f"{detector}+facecam", face.score)
            elif kind == "face":
                x, y, bw, bh = face_square(face.box, cfg.face_margin, w, h)
                add(kind, image[y:y + bh, x:x + bw], (x, y, bw, bh), detector, face.score)
            else:
                add(kind, align_face(image, face, cfg.aligned_size), face.box, detector, face.score)
        elif kind in PERSON_KINDS:
            pbox = person_box(mask, cfg.person_threshold, cfg.min_person_area) if mask is not None else None
            if pbox is None:
                drops.append("no_person")
                continue
            x, y, bw, bh = pbox
            region = image[y:y + bh, x:x + bw]
            alpha = ((mask[y:y + bh, x:x + bw] >= cfg.person_threshold) * 255).astype(np.uint8)
            score = float(mask[y:y + bh, x:x + bw][alpha > 0].mean())
            if kind == "person":
                img = region
            elif kind == "person_cutout":  # the person on a removed (transparent) background
                img = np.dstack([region * (alpha[..., None] > 0), alpha])
            else:  # one-colour silhouette: white person on black, the dance use
                img = np.repeat(alpha[..., None], 3, axis=2)
            if kind != "silhouette":
                add(kind, img, pbox, "selfie_segmentation", score)
            elif min(img.shape[:2]) < cfg.min_crop_px:  # a flat mask has no texture to judge sharpness by
                drops.append("too_small")
            else:
                crops.append(Crop(kind, img, pbox, "selfie_segmentation", score))
        else:  # "frame": the whole sampled frame
            add(kind, image, (0, 0, w, h), "none", 1.0)
    return crops, drops
