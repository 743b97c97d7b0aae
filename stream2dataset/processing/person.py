"""Person masks: mediapipe's selfie segmentation (Tasks API ImageSegmenter) and their boxes."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from .detect import Box, _closing, _mediapipe, mp_image
from .models import model_path

MIN_PERSON_FRACTION = 0.01  # a component smaller than 1% of the frame is noise, not a person


class PersonSegmenter:
    """A processing stage: `mask(image)` is the person confidence at source size."""

    def __init__(self) -> None:
        _mediapipe()  # sets MPLCONFIGDIR before mediapipe is imported
        from mediapipe.tasks.python import vision
        from mediapipe.tasks.python.core.base_options import BaseOptions

        options = vision.ImageSegmenterOptions(
            base_options=BaseOptions(model_asset_path=str(model_path("selfie_segmentation.tflite"))),
            running_mode=vision.RunningMode.IMAGE,
            output_confidence_masks=True,
            output_category_mask=False,
        )
        self._task: Any = _closing(self, vision.ImageSegmenter.create_from_options(options))

    def mask(self, image_rgb: np.ndarray) -> np.ndarray:
        """HxW float32 confidence in [0, 1] that a pixel belongs to a person."""
        result = self._task.segment(mp_image(image_rgb))
        # The selfie model has one output channel (person); copy it out of mediapipe's buffer.
        conf = np.array(result.confidence_masks[0].numpy_view(), dtype=np.float32)
        conf = conf.reshape(conf.shape[:2])
        if conf.shape != image_rgb.shape[:2]:
            conf = cv2.resize(conf, (image_rgb.shape[1], image_rgb.shape[0]))
        return np.clip(conf, 0.0, 1.0)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Add per-image `person_box` ([x, y, w, h] int32, or [-1] * 4 when there is none)."""
        boxes = [person_box(self.mask(np.asarray(img))) for img in batch["image"]]
        batch["person_box"] = np.array([b if b else (-1, -1, -1, -1) for b in boxes], np.int32)
        return batch


def person_box(
    mask: np.ndarray, threshold: float = 0.5, min_fraction: float = MIN_PERSON_FRACTION
) -> Box | None:
    """The box of the largest connected region above `threshold`; None when it is too small."""
    binary = (mask > threshold).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count < 2:  # label 0 is the background
        return None
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h, area = (int(v) for v in stats[best])
    if area < min_fraction * mask.shape[0] * mask.shape[1]:
        return None
    return (x, y, w, h)
