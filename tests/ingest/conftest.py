"""Footage for the fault tests: the streamer layout long enough not to loop, and another encoder's."""

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from stream2dataset.demo import SMALL_LAYOUT, build_demo_hls
from stream2dataset.demo.footage import Layout

from ..conftest import CACHE
from .faulty_hls import FaultyOrigin


@pytest.fixture(scope="session")
def long_footage() -> Path:
    """The streamer layout (real carphone face), 1-s HLS segments, 20 s: a scenario never loops."""
    return build_demo_hls(CACHE / "test-footage-20s", SMALL_LAYOUT, seconds=20, segment_seconds=1)


@pytest.fixture(scope="session")
def other_encoder() -> Path:
    """Other footage (mandelbrot background, same facecam) as another encoder writes it: video
    only (a track fewer) on other PIDs, 1-s segments, 8 s, timestamps from the same origin."""
    out = CACHE / "test-footage-other-encoder"
    if (out / "done").exists():
        return out
    layout = Layout(SMALL_LAYOUT.width, SMALL_LAYOUT.height, SMALL_LAYOUT.fps, SMALL_LAYOUT.facecam,
                    background="mandelbrot")
    src = build_demo_hls(CACHE / "test-footage-mandelbrot", layout, seconds=8, segment_seconds=1)
    tmp = Path(tempfile.mkdtemp(prefix=".other.", dir=CACHE))
    try:
        for seg in sorted(src.glob("seg*.ts")):
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-copyts", "-i", str(seg), "-map", "0:v", "-c", "copy",
                            "-muxdelay", "0", "-muxpreload", "0", "-mpegts_start_pid", "0x200",
                            "-mpegts_pmt_start_pid", "0x1100", str(tmp / seg.name)], check=True)
        shutil.copy(src / "index.m3u8", tmp / "index.m3u8")
        (tmp / "done").write_text("")
        tmp.chmod(0o755)
        try:
            tmp.rename(out)
        except OSError:  # built by a concurrent run meanwhile
            if not (out / "done").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def segment_files(footage: Path) -> list[Path]:
    return sorted(footage.glob("seg*.ts"))


@pytest.fixture
def origin(long_footage):
    """A misbehaving live origin (faulty_hls.py) serving `long_footage`."""
    server = FaultyOrigin(long_footage)
    yield server
    server.close()
