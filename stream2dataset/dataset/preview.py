"""Contact sheets: one image that shows what a set of videos holds, for people to look at."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np

from ..layout import atomic_output


def first_frame(path: Path, width: int) -> np.ndarray:
    """The first decodable frame of a video, scaled to `width`, as RGB."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frame = next(container.decode(stream))
        height = round(frame.height * width / frame.width / 2) * 2
        return frame.reformat(width=width, height=height, format="rgb24").to_ndarray()


def tile(images: list[np.ndarray], out: Path, columns: int = 4, width: int = 320, pad: int = 4) -> Path:
    """Tile RGB images (scaled to `width`) into one PNG grid, row by row (atomic write)."""
    if not images:
        raise ValueError("no images to show")
    tiles = []
    for im in images:  # OpenCV, not PyAV: training nodes write sample grids and need no PyAV
        height = max(2, round(im.shape[0] * width / im.shape[1] / 2) * 2)
        shrink = width < im.shape[1]
        tiles.append(cv2.resize(np.ascontiguousarray(im[..., :3]), (width, height),
                                interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC))
    h = max(t.shape[0] for t in tiles)
    rows = -(-len(tiles) // columns)
    sheet = np.full((rows * (h + pad) + pad, columns * (width + pad) + pad, 3), 24, np.uint8)
    for i, t in enumerate(tiles):
        y, x = pad + (i // columns) * (h + pad), pad + (i % columns) * (width + pad)
        sheet[y:y + t.shape[0], x:x + width] = t
    ok, png = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"{out}: the sheet did not encode as PNG")
    with atomic_output(out) as tmp:
        Path(tmp).write_bytes(png.tobytes())
    return out


def contact_sheet(paths: list[Path], out: Path, columns: int = 4, width: int = 320, pad: int = 4) -> Path:
    """The first frame of each video, tiled into a PNG grid."""
    if not paths:
        raise ValueError("no videos to show")
    return tile([first_frame(p, width) for p in paths], out, columns, width, pad)


def crops_sheet(rows: list[dict], out: Path, per_kind: int = 8, width: int = 160) -> Path:
    """Kept crops from frame rows, one line per kind: what the dataset holds, at a glance."""
    import av

    images: list[np.ndarray] = []
    for kind in sorted({r["kind"] for r in rows}):
        kept = [r for r in rows if r["kind"] == kind and r["dup_of"] is None][:per_kind]
        for r in kept:
            with av.open(io.BytesIO(r["image"])) as c:
                images.append(next(c.decode(video=0)).to_ndarray(format="rgb24"))
        images += [np.full((width, width, 3), 24, np.uint8)] * (per_kind - len(kept))  # keep kinds on their own line
    return tile(images, out, columns=per_kind, width=width)
