"""render() on a real clip with audio, inline and on a local Ray (2 CPUs)."""

import subprocess
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from stream2dataset.processing.render import render

FRAMES = 75  # 3 s at 25 fps; each frame's number is drawn in its bottom half (see src)


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def number(frame: np.ndarray) -> int:
    """The frame number drawn into a source frame: two flat greys, 30 + 12 x digit, base 16.
    Big grey steps: they survive two H.264 generations; chroma would be quantised coarsely."""
    h, w = frame.shape[:2]
    bottom = frame[-h // 4:]
    lo, hi = (round((float(part.mean()) - 30) / 12) for part in (bottom[:, : w // 4], bottom[:, -w // 4:]))
    return lo + 16 * hi


# frame_fns live at module level: Ray pickles them into its workers.
def invert(frame: np.ndarray) -> np.ndarray:
    return 255 - frame


def halve(frame: np.ndarray) -> np.ndarray:
    return frame[::2, ::2]


def fail_at_40(frame: np.ndarray) -> np.ndarray:
    if number(frame) >= 40:
        raise RuntimeError("frame_fn failed on frame 40")
    return frame


def slow_even_chunks(frame: np.ndarray) -> np.ndarray:
    if (number(frame) // 5) % 2 == 0:  # chunks of 5: even chunks finish after the odd ones
        time.sleep(0.04)
    return frame


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    from stream2dataset.cluster import ray_env_defaults

    if ray.is_initialized():  # a session-wide Ray from conftest: use it, leave it running
        yield ray
        return
    ray_env_defaults()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("render")


@pytest.fixture(scope="module")
def src(media) -> Path:
    """3 s, 320x240, 25 fps, a 440 Hz AAC tone. Top half: colour gradients; bottom half: the
    frame number N as two flat greys, left 30 + 12 x (N mod 16), right 30 + 12 x (N div 16)."""
    path = media / "src.mp4"
    top = "lt(Y,H/2)"
    grey = "if(lt(X,W/2),30+12*mod(N,16),30+12*floor(N/16))"
    pattern = ":".join(f"{c}='if({top},{ramp},{grey})'"
                       for c, ramp in [("r", "255*X/W"), ("g", "255*Y/H"), ("b", "255-255*X/W")])
    ffmpeg("-f", "lavfi", "-i", f"nullsrc=s=320x240:r=25:d=3,geq={pattern}",
           "-f", "lavfi", "-i", "sine=frequency=440:duration=3",
           "-c:v", "libx264", "-preset", "ultrafast", "-crf", "10", "-pix_fmt", "yuv420p", "-g", "25",
           "-c:a", "aac", "-shortest", str(path))
    return path


@pytest.fixture(scope="module")
def inverted(src, media, ray_cluster) -> dict[str, tuple[Path, dict]]:
    out = {}
    for mode, parallel in [("ray", True), ("inline", False)]:
        dst = media / f"inverted_{mode}.mp4"
        out[mode] = dst, render(src, dst, invert, chunk_frames=16, parallel=parallel)
        print(f"\nrender {mode}: {out[mode][1]}")
    return out


def frames_of(path: Path) -> tuple[list[Fraction], np.ndarray]:
    """Every video frame's pts in seconds (exact) and the RGB frames."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        pts, images = [], []
        for f in c.decode(v):
            pts.append(f.pts * v.time_base)
            images.append(f.to_ndarray(format="rgb24"))
    return pts, np.stack(images)


def audio_packets(path: Path) -> list[tuple[int, bytes]]:
    with av.open(str(path)) as c:
        return [(p.pts, bytes(p)) for p in c.demux(c.streams.audio[0]) if p.size]


@pytest.mark.parametrize("mode", ["ray", "inline"])
def test_same_frames_same_pts_inverted(src, inverted, mode):
    dst, info = inverted[mode]
    assert info["frames"] == FRAMES and info["audio"] == "copied" and info["video_fps"] == 25.0
    src_pts, src_frames = frames_of(src)
    out_pts, out_frames = frames_of(dst)
    assert len(src_pts) == FRAMES
    assert out_pts == src_pts
    for i in (0, 1, 39, 40, 74):
        err = np.abs(out_frames[i].astype(int) - (255 - src_frames[i].astype(int))).mean()
        assert err < 3, (i, err)
    assert [number(255 - f) for f in out_frames] == list(range(FRAMES))  # in order


@pytest.mark.parametrize("mode", ["ray", "inline"])
def test_audio_is_copied_byte_for_byte(src, inverted, mode):
    assert audio_packets(inverted[mode][0]) == audio_packets(src)


def test_ray_and_inline_give_identical_frames(inverted):
    assert np.array_equal(frames_of(inverted["ray"][0])[1], frames_of(inverted["inline"][0])[1])


def test_output_format(inverted):
    with av.open(str(inverted["ray"][0])) as c:
        v = c.streams.video[0]
        assert (v.codec_context.name, v.codec_context.pix_fmt) == ("h264", "yuv420p")
    head = inverted["ray"][0].read_bytes()[:4096]
    assert head.find(b"moov") < head.find(b"mdat") or b"mdat" not in head  # +faststart


def test_resize(src, media, ray_cluster):
    dst = media / "half.mp4"
    info = render(src, dst, halve, chunk_frames=32)
    pts, frames = frames_of(dst)
    assert info["frames"] == FRAMES and frames.shape == (FRAMES, 120, 160, 3)
    assert pts == frames_of(src)[0]


@pytest.mark.parametrize("parallel", [True, False])
def test_failing_frame_fn_leaves_nothing(src, tmp_path, ray_cluster, parallel):
    dst = tmp_path / "out" / "broken.mp4"
    with pytest.raises(Exception, match="failed on frame 40"):
        render(src, dst, fail_at_40, chunk_frames=8, parallel=parallel)
    assert list(dst.parent.iterdir()) == []  # no dst, no hidden temp file


def test_order_holds_when_tasks_finish_out_of_order(src, media, ray_cluster):
    dst = media / "ordered.mp4"
    info = render(src, dst, slow_even_chunks, chunk_frames=5)
    _, frames = frames_of(dst)
    assert info["frames"] == FRAMES
    assert [number(f) for f in frames] == list(range(FRAMES))


def test_audio_the_mp4_cannot_hold_is_encoded_to_aac(src, media):
    mulaw = media / "mulaw.mov"  # G.711 mu-law: fine in MOV, not in MP4
    ffmpeg("-i", str(src), "-c:v", "copy", "-c:a", "pcm_mulaw", str(mulaw))
    dst = media / "from_mulaw.mp4"
    info = render(mulaw, dst, invert, parallel=False)
    assert info["audio"] == "aac" and info["frames"] == FRAMES
    with av.open(str(dst)) as c:
        a = c.streams.audio[0]
        assert a.codec_context.name == "aac"
        samples = sum(f.samples for f in c.decode(a))
    assert abs(samples / a.codec_context.sample_rate - 3.0) < 0.1


def test_mpegts_source_keeps_its_late_start_exactly(src, media):
    """Raw segments are MPEG-TS starting ~1.4 s in, on a 1/90000 clock: the MP4 keeps every pts."""
    ts = media / "src.ts"
    ffmpeg("-i", str(src), "-c", "copy", str(ts))
    dst = media / "from_ts.mp4"
    info = render(ts, dst, invert, parallel=False)
    src_pts = frames_of(ts)[0]
    assert src_pts[0] > 1 and info["audio"] == "copied"
    assert frames_of(dst)[0] == src_pts


@pytest.mark.parametrize("bad_fn, message", [
    (lambda f: f.astype(np.float32), "uint8"),
    (lambda f: np.ascontiguousarray(f[:-1]), "even"),
])
def test_bad_frame_fn_output_is_refused(src, tmp_path, bad_fn, message):
    dst = tmp_path / "bad.mp4"
    with pytest.raises(ValueError, match=message):
        render(src, dst, bad_fn, parallel=False)
    assert list(tmp_path.iterdir()) == []
