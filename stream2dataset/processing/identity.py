"""Face identity: dlib's ResNet face-recognition model, 128-d embeddings of face crops.

The weights ship in the PyPI package `face-recognition-models` (dlib's own `.dat` files), run by
the prebuilt `dlib-bin`: nothing is downloaded at run time, and both files are sha256-checked (as
the mediapipe models are, models.py). dlib's model wants its own 150x150 face chip: the 5-point
shape predictor finds the eye corners and the nose inside the crop, and `get_face_chip` aligns
them as the network was trained; two photos of one person lie within ~0.6 (Euclidean) of each
other, of two people beyond it (dlib's figure: 99.38% on LFW).

Crops come with a known geometry (crops.py): `aligned_face` has the eyes at fixed points and
`face` is a square around the detector's face box, so the face's rectangle inside the crop is
known and no second detector runs.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import cv2
import numpy as np

from ..dataset.schema import EMBEDDING_DIM
from ..errors import UserError
from ..media import sha256_file
from .detect import EYE_X, EYE_Y

MODEL = "dlib_resnet_v1"
EMBEDDED_KINDS = ("aligned_face", "face")  # the crops whose face rectangle is known
FIX = "install them: pip install dlib-bin==20.0.1.post1 face-recognition-models==0.3.0 (or ./run setup)"
# file in face_recognition_models/models/ -> sha256 of the bytes face-recognition-models 0.3.0 ships
FILES = {
    "dlib_face_recognition_resnet_model_v1.dat": "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
    "shape_predictor_5_face_landmarks.dat": "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
}
CHIP = 150        # dlib's input: a 150x150 chip ...
CHIP_PADDING = 0.25  # ... with its default padding around the landmarks
WORK_SIDE = 200   # crops are scaled to this side before the landmarks are found
_checked: set[Path] = set()
_lock = threading.Lock()


def model_file(name: str) -> Path:
    """The verified path of a dlib model file of `face-recognition-models`; a UserError naming the fix."""
    # Found, not imported: its __init__ imports pkg_resources, which setuptools >= 81 no longer has.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.origin:
        raise UserError(f"the face identity model (package face-recognition-models) is not installed: {FIX}")
    path = Path(spec.origin).parent / "models" / name
    with _lock:
        if path in _checked:
            return path
        if not path.is_file():
            raise UserError(f"model file {path} is missing: {FIX}")
        if sha256_file(path) != FILES[name]:
            raise UserError(f"model file {path} is damaged (sha256 mismatch): reinstall it: "
                            "pip install --force-reinstall face-recognition-models==0.3.0")
        _checked.add(path)
    return path


def _dlib():
    try:
        import dlib
    except ImportError:
        raise UserError(f"dlib is not installed: {FIX}") from None
    return dlib


def face_rect(kind: str, side: int, margin: float = 0.5) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the face inside a square crop of `kind` and `side` pixels,
    as dlib's face detector would box it (what its shape predictor was trained from)."""
    # Measured: dlib's HOG detector on aligned crops of carphone and astronaut boxed (0.14-0.18,
    # 0.14-0.25)-(0.79-0.86, 0.79-0.87) of the side, and on `face` crops (margin 0.5) the middle
    # half, raised by ~0.04 of the side.
    if kind == "aligned_face":  # eyes at EYE_X, EYE_Y: dlib's box spans ~2.2 eye distances
        eye = (EYE_X[1] - EYE_X[0]) * side
        cx, cy = side / 2, EYE_Y * side + 0.4 * eye
        half = 1.1 * eye
    elif kind == "face":  # a square of the face box plus `margin` face sizes on each side
        half = side / (1 + 2 * margin) / 2
        cx, cy = side / 2, side / 2 - 0.15 * half
    else:
        raise ValueError(f"no known face geometry in a {kind!r} crop; embed one of {', '.join(EMBEDDED_KINDS)}")
    return round(cx - half), round(cy - half), round(cx + half), round(cy + half)


class FaceEmbedder:
    """128-d identity embeddings of face crops (a processing stage: loads its models once)."""

    model = MODEL
    dim = EMBEDDING_DIM

    def __init__(self) -> None:
        dlib = _dlib()
        self._dlib = dlib
        self._shape = dlib.shape_predictor(str(model_file("shape_predictor_5_face_landmarks.dat")))
        self._net = dlib.face_recognition_model_v1(str(model_file("dlib_face_recognition_resnet_model_v1.dat")))

    def chip(self, crop: np.ndarray, kind: str, margin: float = 0.5) -> np.ndarray:
        """dlib's aligned 150x150 chip of the face in an RGB(A) or grey crop of `kind`."""
        img = np.ascontiguousarray(crop[..., :3] if crop.ndim == 3 else np.repeat(crop[..., None], 3, axis=2),
                                   dtype=np.uint8)
        if img.shape[0] != img.shape[1]:  # crops are square; a padded resize keeps it in the middle
            side = max(img.shape[:2])
            pad = np.zeros((side, side, 3), np.uint8)
            y, x = (side - img.shape[0]) // 2, (side - img.shape[1]) // 2
            pad[y:y + img.shape[0], x:x + img.shape[1]] = img
            img = pad
        if img.shape[0] != WORK_SIDE:
            img = cv2.resize(img, (WORK_SIDE, WORK_SIDE),
                             interpolation=cv2.INTER_AREA if img.shape[0] > WORK_SIDE else cv2.INTER_CUBIC)
        rect = self._dlib.rectangle(*face_rect(kind, WORK_SIDE, margin))
        shape = self._shape(img, rect)
        return np.asarray(self._dlib.get_face_chip(img, shape, size=CHIP, padding=CHIP_PADDING))

    def embed(self, crops: list[np.ndarray], kind: str | list[str], margin: float = 0.5) -> np.ndarray:
        """[len(crops), 128] float32 embeddings (unit-free; compare by Euclidean distance)."""
        if not len(crops):
            return np.zeros((0, self.dim), np.float32)
        kinds = [kind] * len(crops) if isinstance(kind, str) else list(kind)
        chips = [self.chip(c, k, margin) for c, k in zip(crops, kinds)]
        vectors = self._net.compute_face_descriptor(chips)
        return np.array([list(v) for v in vectors], np.float32).reshape(-1, self.dim)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of embeddings (rows): |mu_a - mu_b|^2 +
    tr(S_a + S_b - 2 (S_a S_b)^1/2), the FID formula on identity embeddings. The cross term is
    computed through the symmetric S_a^1/2 S_b S_a^1/2, whose eigenvalues are real and >= 0."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError("a Fréchet distance needs at least 2 embeddings on each side")
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(sa)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root_a @ sb @ root_a)
    return float(mu @ mu + np.trace(sa) + np.trace(sb) - 2 * np.sqrt(np.clip(cross, 0, None)).sum())
