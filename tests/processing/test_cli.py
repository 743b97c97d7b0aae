"""The processing commands as an operator runs them."""

import os
import shutil
import subprocess
import sys

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from stream2dataset.demo.footage import carphone_path

from ..conftest import write_config


def run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "stream2dataset", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "COLUMNS": "200", "S2D_STATE_DIR": str(cwd / "state")})


@pytest.mark.slow  # ~25 s on the 2-core machine
def test_process_command_on_a_folder(tmp_path):
    write_config(tmp_path, [], processing={"outputs": ["face"], "sample_fps": 2, "min_crop_px": 32})
    videos = tmp_path / "clips"
    videos.mkdir()
    shutil.copy(carphone_path(), videos / "carphone.mp4")
    done = run("process", str(videos), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "kept" in done.stdout and "processed into" in done.stdout
    assert "(in this process)" in done.stdout  # a small job with no Ray running: no Ray started for it
    shards = list((tmp_path / "data" / "dataset" / "frames" / "channel=clips").rglob("*.parquet"))
    assert shards
    on_ray = tmp_path / "on-ray"  # the same job on Ray gives the same rows
    on_ray.mkdir()
    write_config(on_ray, [], processing={"outputs": ["face"], "sample_fps": 2, "min_crop_px": 32})
    done = run("process", str(videos), "--ray", cwd=on_ray)
    assert done.returncode == 0 and "(in this process)" not in done.stdout, done.stderr[-2000:]

    def ids(root):
        return sorted(i for p in (root / "data" / "dataset" / "frames").rglob("*.parquet")
                      for i in pq.read_table(p, columns=["frame_id"])["frame_id"].to_pylist())

    assert ids(tmp_path) == ids(on_ray) and ids(tmp_path)
    missing = run("process", str(tmp_path / "nope"), cwd=tmp_path)
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr


def test_render_command_keeps_audio_and_every_frame(tmp_path):
    src = tmp_path / "in.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(carphone_path()), "-f", "lavfi", "-i", "sine=d=4",
                    "-shortest", "-c:v", "copy", "-c:a", "aac", str(src)], check=True)
    done = run("render", str(src), str(tmp_path / "out.mp4"), "--inline",
               "--transforms", "silhouette, one_color(color=[255,200,0])", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    with av.open(str(src)) as a, av.open(str(tmp_path / "out.mp4")) as b:
        assert b.streams.video[0].frames == a.streams.video[0].frames
        assert b.streams.audio and b.streams.audio[0].codec_context.name == "aac"
        frame = next(b.decode(video=0)).to_ndarray(format="rgb24").reshape(-1, 3)
    colours = frame[(frame.sum(axis=1) > 150)]
    assert len(colours) and np.abs(colours.mean(axis=0) - [255, 200, 0]).max() < 40  # the one colour
    bad = run("render", str(src), str(tmp_path / "x.mp4"), "--transforms", "resize(size=64, mode=fit)", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --transforms: step 0 (resize): mode")
    assert not (tmp_path / "x.mp4").exists()
