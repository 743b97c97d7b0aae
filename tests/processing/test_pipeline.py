"""The processing job on a real local Ray: streamer-layout footage in, facecam rows and clips out."""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from stream2dataset.config import parse_config
from stream2dataset.dataset import read_clips
from stream2dataset.demo import SMALL_LAYOUT
from stream2dataset.errors import UserError
from stream2dataset.processing.decode import video_info
from stream2dataset.processing.detect import iou
from stream2dataset.processing.pipeline import file_segments, plan_windows, process
from stream2dataset.layout import Storage

from ..conftest import wait_for


def read_rows(storage):
    rows = []
    for path in sorted(storage.table_dir("frames").rglob("*.parquet")):
        rows += pq.ParquetFile(path).read().to_pylist()
    return rows


@pytest.fixture
def videos(tmp_path, footage):
    """Two 4 s segments of the demo layout, a truncated copy, and a file that is not a video."""
    folder = tmp_path / "compilations"
    folder.mkdir()
    segs = sorted(footage.glob("seg*.ts"))
    for name, part in (("first.ts", segs[:4]), ("second.ts", segs[4:])):
        (folder / name).write_bytes(b"".join(p.read_bytes() for p in part))
    data = (folder / "first.ts").read_bytes()
    (folder / "truncated.ts").write_bytes(data[: int(len(data) * 0.6) // 188 * 188 + 100])
    (folder / "broken.mp4").write_bytes(b"this is not a video" * 50)
    return folder


def config(tmp_path):
    return parse_config({"storage": {"root": str(tmp_path / "data")}, "processing": {
        "outputs": ["facecam", "face"], "sample_fps": 2, "min_crop_px": 32,
        "clips": {"enabled": True, "fps": 8, "length": 8, "min_motion": 0.5}}})


def test_process_files_end_to_end(tmp_path, videos, ray_local):
    cfg = config(tmp_path)
    storage = Storage(cfg.storage.root)
    report = process(cfg, file_segments([videos]))
    assert report["segments"] == 4 and report["kept"] > 0
    assert report["facecams"]["overlay"] >= 3  # first, second and the truncated one's good part
    reasons = {q["reason"] for q in report["quarantined"]}
    assert len(report["quarantined"]) == 2, reasons
    assert any("good frames" in r for r in reasons)  # truncated: its good frames were kept
    assert (videos / "broken.mp4").exists()  # an operator's own file is reported, never moved
    assert len(list((storage.root / "quarantine").rglob("*.reason.json"))) == 2

    rows = read_rows(storage)
    assert len({r["frame_id"] for r in rows}) == len(rows)
    facecams = [r for r in rows if r["kind"] == "facecam"]
    assert facecams and all(iou(r["crop_box"], tuple(SMALL_LAYOUT.facecam)) >= 0.9 for r in facecams)
    for r in rows[:10]:  # stored images are what the chain makes: 256 px, lossless PNG
        with av.open(io.BytesIO(r["image"])) as c:
            frame = next(c.decode(video=0))
        assert (frame.width, frame.height) == (256, 256) and r["image_format"] == "png"
    assert all(r["transforms"] == ["resize(size=256,mode=pad,interpolation=area,pad_color=(0,0,0))"] for r in rows)
    dups = [r for r in rows if r["dup_of"]]
    assert all(d["dup_of"] in {r["frame_id"] for r in rows} for d in dups)

    clips = read_clips(storage).to_pylist()
    assert clips and all(c["frame_count"] == 8 and len(c["frames"]) == 8 and c["motion"] >= 0.5 for c in clips)
    assert all(storage.done_marker(s["segment_id"]).exists() for s in file_segments([videos]))

    again = process(cfg, file_segments([videos]))  # a re-run finds everything done
    assert again["windows"] == 0 and len(read_rows(storage)) == len(rows)


def test_no_free_cpu_for_an_actor_is_a_clear_error_not_a_hang(tmp_path, videos, ray_local):
    cfg = parse_config({"storage": {"root": str(tmp_path / "data")}, "ray": {"processor_cpus": 64}})
    with pytest.raises(UserError, match=r"ray\.processor_cpus = 64 .*lower either, or add a node"):
        process(cfg, file_segments([videos]))
    assert not list(Storage(cfg.storage.root).table_dir("frames").rglob("*.parquet"))


def test_silhouettes_from_a_person_video(tmp_path, ray_local):
    """The dance use: the person mask as a one-colour silhouette, on real footage (carphone)."""
    from stream2dataset.demo.footage import carphone_path

    cfg = parse_config({"storage": {"root": str(tmp_path / "data")}, "processing": {
        "outputs": ["silhouette", "person_cutout"], "sample_fps": 4, "min_crop_px": 32,
        "transforms": [{"resize": {"size": 128}}], "clips": {"enabled": True, "fps": 8, "length": 8}}})
    src = tmp_path / "dance" / "carphone.mp4"
    src.parent.mkdir()
    shutil.copy(carphone_path(), src)
    report = process(cfg, file_segments([src]))
    rows = read_rows(Storage(cfg.storage.root))
    sil = [r for r in rows if r["kind"] == "silhouette"]
    cut = [r for r in rows if r["kind"] == "person_cutout"]
    assert len(sil) >= 0.9 * report["frames"] and len(cut) == len(sil), report
    with av.open(io.BytesIO(sil[0]["image"])) as c:
        img = next(c.decode(video=0)).to_ndarray(format="rgb24")
    # One colour on black: grey, and all but the anti-aliased edge is 0 or 255.
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()
    assert np.isin(img[..., 0], [0, 255]).mean() > 0.9 and (img == 255).any()
    with av.open(io.BytesIO(cut[0]["image"])) as c:
        assert next(c.decode(video=0)).format.name in ("rgba", "rgb48be", "rgba64be")  # transparent background
    clips = read_clips(Storage(cfg.storage.root)).to_pylist()  # the dance use: silhouette sequences
    assert clips and {c["kind"] for c in clips} == {"silhouette"} and all(c["frame_count"] == 8 for c in clips)


def test_windows_cover_the_file_and_a_short_tail_joins_the_last(videos):
    segs = file_segments([videos / "first.ts"])
    duration = video_info(videos / "first.ts")["duration_s"]
    windows, failed = plan_windows(segs, duration / 3.2)  # 3 windows and a 0.2-window tail
    assert not failed
    assert [w["start_s"] for w in windows] == pytest.approx([0, duration / 3.2, 2 * duration / 3.2])
    assert windows[-1]["end_s"] >= 1e9  # the last window runs to the end, tail included
    windows, _ = plan_windows(segs, duration / 1.6)  # more than half a window left: 2 windows
    assert len(windows) == 2


@pytest.mark.slow  # 35-40 s: kill-and-resume runs keep the quick tier under 5 min
def test_a_killed_process_run_resumes_to_the_same_rows(tmp_path, videos):
    """SIGKILL `stream2dataset process` (and its Ray) once some windows are staged, run it again:
    the rows are exactly those of an undisturbed run."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("first.ts", "second.ts"):
        shutil.copy(videos / name, folder / name)

    def run(root: Path, kill_when_staged: int | None = None) -> set[str]:
        cfg = root / "stream2dataset.yaml"
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text(json.dumps({"storage": {"root": "data"}, "processing": {
            "outputs": ["facecam"], "sample_fps": 4, "window_s": 1.0, "min_crop_px": 32, "concurrency": 1}}))
        env = {**os.environ, "COLUMNS": "200", "S2D_STATE_DIR": str(root / "state")}
        proc = subprocess.Popen([sys.executable, "-m", "stream2dataset", "process", str(folder), "--config", str(cfg)],
                                env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if kill_when_staged is not None:
            wait_for(lambda: len(list((root / "data" / "dataset" / "_staging").rglob("*.done"))) >= kill_when_staged
                     or proc.poll() is not None, 120, what="staged windows")
            assert proc.poll() is None, "finished before the kill"
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
            return set()
        assert proc.wait(300) == 0
        return {r["frame_id"] for r in read_rows(Storage(root / "data"))}

    expected = run(tmp_path / "undisturbed")
    assert len(expected) > 20
    run(tmp_path / "killed", kill_when_staged=3)
    staged = list((tmp_path / "killed" / "data" / "dataset" / "_staging").rglob("*.done"))
    assert staged and not list((tmp_path / "killed" / "data" / "dataset" / "frames").rglob("*.parquet"))
    rows = read_rows(Storage(tmp_path / "killed" / "data"))
    assert rows == []
    assert run(tmp_path / "killed") == expected
    rows = read_rows(Storage(tmp_path / "killed" / "data"))
    assert len(rows) == len(expected)  # no duplicates
