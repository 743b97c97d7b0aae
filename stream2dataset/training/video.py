"""MP4 in and out for samples: H.264 that any browser or player opens."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from ..layout import atomic_output


def write_mp4(path: str | Path, frames: np.ndarray, fps: float | Fraction, crf: int = 18) -> Path:
    """Write uint8 [T,H,W,3] RGB frames as H.264 yuv420p MP4, atomically; returns the path.

    yuv420p (what players expect) needs even sizes: odd ones get one edge row/column repeated.
    """
    import av

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
        raise ValueError(f"expected uint8 frames [T,H,W,3], got {frames.dtype} {frames.shape}")
    h, w = frames.shape[1:3]
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    path = Path(path)
    with atomic_output(path) as tmp:  # temp name ends in .tmp: name the container format
        with av.open(str(tmp), "w", format="mp4") as out:
            stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(100_000))
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf)}
            for image in frames:
                out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            out.mux(stream.encode())  # flush the encoder's delayed frames
    return path


def read_frames(path: str | Path) -> np.ndarray:
    """All frames of a video's first stream as uint8 [T,H,W,3] RGB."""
    import av

    with av.open(str(path)) as video:
        return np.stack([f.to_ndarray(format="rgb24") for f in video.decode(video=0)])
