"""Clips for the temporal model: runs of consecutive frames of one crop at a fixed rate.

The temporal model learns fluent motion, so a clip must be what a viewer saw: `length` frames with
no gap between them (no dropped frames, no scene cut) and enough movement to learn from (a frozen
stream or a paused game is a slideshow). Every dropped run is counted by reason (DESIGN.md).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import cv2
import numpy as np

from ..dataset.clips import clip_id
from .decode import SampledFrame
from ..transforms import Step, apply_chain

__all__ = ["Clip", "cut_clips", "encode_frames", "motion_energy"]

GAP_FACTOR = 1.5  # neighbours further apart than 1.5 sampling periods are not consecutive
MOTION_WIDTH = 64  # motion is measured on frames this wide: cheap, and sensor noise averages out


@dataclass(frozen=True)
class Clip:
    start_index: int  # index of the first frame in the sampled sequence given to cut_clips
    pts_s: tuple[float, ...]  # each frame's presentation time, seconds from the stream start
    frames: np.ndarray  # (N, H, W, C) uint8, RGB or RGBA, after the transform chain
    motion: float  # motion_energy(frames)


def _small_grey(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    if w > MOTION_WIDTH:  # never upscale: that would only interpolate
        image = cv2.resize(image, (MOTION_WIDTH, max(1, round(h * MOTION_WIDTH / w))),
                           interpolation=cv2.INTER_AREA)
    code = cv2.COLOR_RGBA2GRAY if image.shape[-1] == 4 else cv2.COLOR_RGB2GRAY
    return cv2.cvtColor(image, code).astype(np.int16)


def motion_energy(frames: np.ndarray | Sequence[np.ndarray]) -> float:
    """Mean absolute grey-level difference between consecutive frames (0-255); 0 for < 2 frames."""
    if len(frames) < 2:
        return 0.0
    grey = [_small_grey(f) for f in frames]
    return float(np.mean([np.abs(b - a).mean() for a, b in zip(grey, grey[1:])]))


def _crop(frame: SampledFrame, box: tuple[int, int, int, int] | None) -> np.ndarray:
    if box is None:
        return frame.image
    x, y, w, h = box
    height, width = frame.image.shape[:2]
    if x < 0 or y < 0 or w < 1 or h < 1 or x + w > width or y + h > height:
        raise ValueError(f"clip box (x, y, w, h) = {tuple(box)} does not fit the {width}x{height} frame")
    return frame.image[y:y + h, x:x + w]


def cut_clips(frames: Sequence[SampledFrame], box: tuple[int, int, int, int] | None, *, length: int,
              min_motion: float, steps: list[Step], fps: float) -> tuple[list[Clip], Counter]:
    """Split `frames` (sampled at `fps`, in pts order) into non-overlapping clips of `length` frames.

    Each frame is cropped to `box` (x, y, w, h in the frames' pixels; None = whole frame) and each
    clip's crops go through the transform chain as one batch. Dropped runs, counted per run:
    "gap" (a partial run cut off by a pts step > 1.5/fps, or a step backwards), "short" (the
    trailing partial run), "static" (a full clip with motion_energy < min_motion).
    """
    if length < 1 or fps <= 0:
        raise ValueError("length must be >= 1 and fps > 0")
    max_step = GAP_FACTOR / fps
    clips: list[Clip] = []
    drops: Counter = Counter()
    run: list[int] = []  # indices into `frames` of the run being collected
    for i, frame in enumerate(frames):
        if run and not 0 < frame.pts_s - frames[run[-1]].pts_s <= max_step:
            drops["gap"] += 1  # `run` is never full here: full runs are emitted below
            run = []
        run.append(i)
        if len(run) < length:
            continue
        # All crops of one video have one size, so the chain runs once per clip, not per frame.
        batch = apply_chain(steps, np.stack([_crop(frames[j], box) for j in run]))
        motion = motion_energy(batch)
        if motion < min_motion:
            drops["static"] += 1
        else:
            clips.append(Clip(run[0], tuple(frames[j].pts_s for j in run), batch, motion))
        run = []
    if run:
        drops["short"] += 1
    return clips, drops


_EXT = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}


def encode_frames(frames: np.ndarray | Sequence[np.ndarray], fmt: str = "png",
                  quality: int | None = None) -> list[bytes]:
    """Encode RGB/RGBA frames one image each. PNG is lossless; `quality` (1-100) is for
    jpeg (default 95) and webp (default: lossless)."""
    if fmt not in _EXT:
        raise ValueError(f"image format {fmt!r} is not one of {', '.join(_EXT)}")
    params = {"png": [cv2.IMWRITE_PNG_COMPRESSION, 3],  # fast level: the bytes differ little
              "jpeg": [cv2.IMWRITE_JPEG_QUALITY, quality or 95],
              "webp": [cv2.IMWRITE_WEBP_QUALITY, quality or 101]}[fmt]  # > 100 = lossless WebP
    out = []
    for image in frames:
        channels = image.shape[-1] if image.ndim == 3 else 1
        if channels == 4 and fmt == "jpeg":
            raise ValueError("jpeg has no alpha channel: use png or webp for RGBA frames")
        code = {3: cv2.COLOR_RGB2BGR, 4: cv2.COLOR_RGBA2BGRA}.get(channels)
        ok, buf = cv2.imencode(_EXT[fmt], cv2.cvtColor(image, code) if code is not None else image, params)
        if not ok:
            raise ValueError(f"cv2 could not encode a {image.shape} frame as {fmt}")
        out.append(buf.tobytes())
    return out


def clip_row(clip: Clip, *, channel: str, platform: str, segment_id: str, segment_start: datetime,
             kind: str, fps: float, box: Sequence[int] | None, transforms: list[str],
             config_hash: str, image_format: str = "png") -> dict:
    """A clips row; `segment_start` (UTC) + the first frame's pts gives the clip's start time."""
    n, h, w = clip.frames.shape[:3]
    return {
        "clip_id": clip_id(segment_id, clip.start_index, kind), "channel": channel,
        "platform": platform, "segment_id": segment_id, "kind": kind,
        "start": segment_start + timedelta(seconds=clip.pts_s[0]), "fps": fps, "frame_count": n,
        "width": w, "height": h, "frames": encode_frames(clip.frames, image_format),
        "image_format": image_format, "crop_box": list(box) if box is not None else None,
        "motion": clip.motion, "transforms": transforms, "config_hash": config_hash,
    }
