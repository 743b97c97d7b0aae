"""Contact sheets tile each video's first frame into one PNG."""

import subprocess

import av
import numpy as np

from stream2dataset.dataset.preview import contact_sheet


def test_contact_sheet_tiles_first_frames(tmp_path):
    paths = []
    for i, color in enumerate(["red", "blue", "lime"]):
        p = tmp_path / f"{i}.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"color=c={color}:s=320x180:d=1",
                        "-c:v", "libx264", "-pix_fmt", "yuv420p", str(p)], check=True)
        paths.append(p)
    out = contact_sheet(paths, tmp_path / "sheet.png", columns=2, width=160, pad=4)
    with av.open(str(out)) as c:
        img = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert img.shape == (2 * (90 + 4) + 4, 2 * (160 + 4) + 4, 3)
    centre = lambda r, c: img[4 + r * 94 + 45, 4 + c * 164 + 80].astype(int)  # noqa: E731
    assert centre(0, 0)[0] > 200 and centre(0, 0)[2] < 60   # red first
    assert centre(0, 1)[2] > 200 and centre(0, 1)[0] < 60   # then blue
    assert centre(1, 0)[1] > 200                            # then lime, on the second row
    assert np.all(img[4 + 94 + 45, 4 + 164 + 80] == 24)     # the empty fourth cell is background
