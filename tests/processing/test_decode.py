"""sample_frames / video_info on real media made with ffmpeg (tiny clips, module-scoped)."""

import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from ..conftest import CACHE

from stream2dataset.demo.footage import Box, Layout, build_demo_hls
from stream2dataset.errors import CorruptMedia
from stream2dataset.processing.decode import SampledFrame, sample_frames, scaled_size, video_info

# Keyframes exactly every 2 s: -sc_threshold 0 stops x264 adding one at each colour change.
_GOP_2S = ["-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-keyint_min", "50",
           "-sc_threshold", "0", "-pix_fmt", "yuv420p"]


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def grey(k: int) -> int:
    """The RGB grey level of second k in the steps clip."""
    return 20 + 20 * k


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("decode")


@pytest.fixture(scope="module")
def steps(media) -> Path:
    """10 s, 320x240, 25 fps; second k is flat grey `grey(k)`; keyframes every 2 s."""
    path = media / "steps.mp4"
    ffmpeg("-f", "lavfi", "-i", "nullsrc=s=320x240:r=25:d=10,format=gray,geq=lum='20+20*floor(T)'",
           *_GOP_2S, str(path))
    return path


@pytest.fixture(scope="module")
def hd(media) -> Path:
    """4 s of 1280x720 30 fps testsrc2, a keyframe a second: for the keyframes-only cost."""
    path = media / "hd.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=1280x720:r=30:d=4", "-c:v", "libx264", "-preset",
           "ultrafast", "-g", "30", "-pix_fmt", "yuv420p", str(path))
    return path


def pts_list(frames: list[SampledFrame]) -> list[float]:
    return [round(f.pts_s, 3) for f in frames]


def test_one_fps_samples_each_second_with_its_content(steps):
    frames = list(sample_frames(steps, fps=1))
    assert pts_list(frames) == [float(k) for k in range(10)]
    assert [f.frame_index for f in frames] == [25 * k for k in range(10)]
    for k, f in enumerate(frames):
        assert f.image.shape == (240, 320, 3) and f.image.dtype == np.uint8
        assert abs(f.image.mean() - grey(k)) < 3, k  # flat frames: H.264 keeps them near exact


def test_every_frame(steps):
    frames = list(sample_frames(steps, fps=None))
    assert len(frames) == 250
    assert [f.frame_index for f in frames] == list(range(250))
    assert np.allclose([f.pts_s for f in frames], np.arange(250) / 25)


def test_faster_sampling_picks_first_frame_at_or_after_each_tick(steps):
    frames = list(sample_frames(steps, fps=3, end_s=1.0))
    assert pts_list(frames) == [0.0, 0.36, 0.68]  # ticks 0, 1/3, 2/3 on a 1/25 s grid


def test_keyframes_only(steps):
    frames = list(sample_frames(steps, fps=None, keyframes_only=True))
    assert pts_list(frames) == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert [f.frame_index for f in frames] == [0, 50, 100, 150, 200]
    for f in frames:
        assert abs(f.image.mean() - grey(round(f.pts_s))) < 3


def test_keyframes_only_is_cheaper(hd):
    def timed(**kw) -> tuple[float, int]:
        t = time.perf_counter()
        n = sum(1 for _ in sample_frames(hd, fps=None, max_side=64, **kw))
        return time.perf_counter() - t, n

    timed(keyframes_only=True)  # warm the page cache
    full, n_full = timed()
    key, n_key = timed(keyframes_only=True)
    assert (n_full, n_key) == (120, 4)
    print(f"\n1280x720: full decode {full * 1e3:.0f} ms, keyframes only {key * 1e3:.0f} ms, "
          f"{full / key:.1f}x cheaper")
    assert key < full


def test_max_side_downscales_inside_decode(steps):
    frames = list(sample_frames(steps, fps=1, max_side=160))
    assert len(frames) == 10 and all(f.image.shape == (120, 160, 3) for f in frames)
    assert abs(frames[3].image.mean() - grey(3)) < 3


def test_scaled_size():
    assert scaled_size(1280, 720, 256) == (256, 144)
    assert scaled_size(1920, 1080, 100) == (100, 56)  # even, never over max_side
    assert scaled_size(320, 240, None) == (320, 240) == scaled_size(320, 240, 999)


def test_window_ticks_stay_on_the_whole_file_grid(steps):
    whole = pts_list(list(sample_frames(steps, fps=1)))
    parts = pts_list(list(sample_frames(steps, fps=1, end_s=4.5)))
    parts += pts_list(list(sample_frames(steps, fps=1, start_s=4.5)))
    assert parts == whole
    late = list(sample_frames(steps, fps=1, start_s=4.5, end_s=7))
    assert pts_list(late) == [5.0, 6.0] and [f.frame_index for f in late] == [125, 150]


def test_windows_of_a_recorded_stream_lose_no_frame(media):
    """A recorded HLS stream (MPEG-TS, audio + video) has no index: FFmpeg's seek lands past the
    keyframe it was asked for, even for the first timestamp, and a window then decoded nothing."""
    hls = build_demo_hls(CACHE / "facecam" / "0-0-640-360", Layout(640, 360, 30, Box(0, 0, 640, 360)),
                         seconds=4, segment_seconds=2)
    ts = media / "recorded.ts"
    ffmpeg("-i", "concat:" + "|".join(str(p) for p in sorted(hls.glob("seg*.ts"))), "-c", "copy", str(ts))
    whole = pts_list(list(sample_frames(ts, fps=2)))
    parts = []
    for start in range(4):  # windows on and between the keyframes (every 2 s)
        parts += pts_list(list(sample_frames(ts, fps=2, start_s=start, end_s=start + 1)))
    assert len(whole) == 8 and parts == whole


def test_video_info(steps, media):
    info = video_info(steps)
    assert info == {"duration_s": pytest.approx(10.0), "fps": 25.0, "width": 320, "height": 240,
                    "frames": 250, "has_audio": False}


@pytest.mark.parametrize("container", ["ts", "mp4"])
def test_truncated_file_yields_good_frames_then_raises(steps, media, container):
    whole = media / f"whole_{container}.{container}"
    extra = ["-movflags", "+faststart"] if container == "mp4" else []  # moov first: still opens
    ffmpeg("-i", str(steps), "-c", "copy", *extra, str(whole))
    data = whole.read_bytes()
    cut = media / f"cut.{container}"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    got = []
    with pytest.raises(CorruptMedia) as err:
        for f in sample_frames(cut, fps=None):
            got.append(f)
    good = int(re.search(r"after (\d+) good frames", str(err.value)).group(1))
    assert good == len(got) and 50 <= good < 250, str(err.value)
    assert [f.frame_index for f in got] == list(range(good))  # the good ones, in order


def test_garbage_raises_at_once(media):
    junk = media / "junk.mp4"
    # Seeded: about 1 in 100 random blobs happens to probe as some raw format.
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(CorruptMedia, match="unreadable"):
        sample_frames(junk)  # at the call, before iterating
    with pytest.raises(CorruptMedia):
        video_info(junk)


def test_audio_only_has_no_video_stream(media):
    path = media / "tone.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", str(path))
    with pytest.raises(CorruptMedia, match="no video stream"):
        sample_frames(path)


def test_skipping_frames_before_each_tick_keeps_the_samples_a_full_decode_picks(media):
    """Real footage with x264's default B-frames: at 1 fps the non-reference frames before each
    tick are skipped by the decoder, and every sampled frame is the one a full decode picks."""
    from stream2dataset.demo.footage import carphone_path

    clip = media / "carphone-bframes.mp4"
    ffmpeg("-i", str(carphone_path()), "-c:v", "libx264", "-preset", "fast", "-bf", "3",
           "-pix_fmt", "yuv420p", "-an", str(clip))
    every = list(sample_frames(clip, fps=None, threads=1))
    sampled = list(sample_frames(clip, fps=3, threads=1))
    expected, tick = [], 0.0
    for f in every:  # the first frame at or after each tick k/3
        if f.pts_s >= tick - 1e-6:
            expected.append(f)
            tick = (int(f.pts_s * 3 + 1e-6) + 1) / 3
    assert pts_list(sampled) == pts_list(expected) and len(sampled) >= 10
    assert all(np.array_equal(a.image, b.image) for a, b in zip(sampled, expected))
    assert [a.frame_index for a in sampled] == [b.frame_index for b in expected]  # constant rate

    import av  # the clip does have B-frames for the decoder to skip
    with av.open(str(clip)) as c:
        types = [int(fr.pict_type) for fr in c.decode(video=0)]
    assert types.count(3) > len(types) // 3, types  # AV_PICTURE_TYPE_B
