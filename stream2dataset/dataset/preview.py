"""Contact sheets: one image that shows what a set of videos holds, for people to look at."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from ..storage import atomic_output


def first_frame(path: Path, width: int) -> np.ndarray:
    """The first decodable frame of a video, scaled to `width`, as RGB."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frame = next(container.decode(stream))
        height = round(frame.height * width / frame.width / 2) * 2
        return frame.reformat(width=width, height=height, format="rgb24").to_ndarray()


def contact_sheet(paths: list[Path], out: Path, columns: int = 4, width: int = 320, pad: int = 4) -> Path:
    """Tile the first frame of each video into a PNG grid (atomic write)."""
    if not paths:
        raise ValueError("no videos to show")
    tiles = [first_frame(p, width) for p in paths]
    h = max(t.shape[0] for t in tiles)
    rows = -(-len(tiles) // columns)
    sheet = np.full((rows * (h + pad) + pad, columns * (width + pad) + pad, 3), 24, np.uint8)
    for i, tile in enumerate(tiles):
        y, x = pad + (i // columns) * (h + pad), pad + (i % columns) * (width + pad)
        sheet[y:y + tile.shape[0], x:x + width] = tile
    with atomic_output(out) as tmp:
        with av.open(str(tmp), "w", format="image2", options={"update": "1"}) as c:
            s = c.add_stream("png")
            s.width, s.height, s.pix_fmt = sheet.shape[1], sheet.shape[0], "rgb24"
            for packet in s.encode(av.VideoFrame.from_ndarray(sheet, format="rgb24")):
                c.mux(packet)
            for packet in s.encode():
                c.mux(packet)
    return out
