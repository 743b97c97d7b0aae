"""Morphs between two real faces, and the face-quality figure of a diffusion run.

`sample diffusion --morph A B`: each face (a frame id, or an image file detected and cropped as the
snapshot's frames were) is inverted into the model's noise space by deterministic DDIM run
backwards (x0 -> x_T along the same timesteps sampling takes), the two noises are walked by slerp
and every step decoded. The MP4 opens on the real aligned photo of A, cross-fades into the model's
reconstruction of A, morphs, and cross-fades out of the reconstruction of B onto the photo of B, so
it starts and ends on the two real faces. The inversion's reconstruction error (decode(invert(x))
against x, RMS grey levels) says how faithfully the model holds each face.

The face-quality figure is the Fréchet distance between identity embeddings (dlib ResNet,
processing/identity.py) of generated samples and of the snapshot's real face crops at the model's
resolution: the FID formula, on a feature space made for faces.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import torch

from ..config import Config, DiffusionSettings
from ..dataset.snapshots import open_snapshot
from ..errors import UserError
from ..layout import Storage, atomic_write_bytes
from ..processing.crops import face_square
from ..processing.detect import FaceDetector, align_face
from ..processing.identity import EMBEDDED_KINDS, FaceEmbedder, frechet_distance
from ..processing.lookalike import decode_crop, read_image
from ..transforms import apply_chain, chain_specs_from_text, parse_chain
from .tensors import to_uint8, to_unit

FRAME_ID = re.compile(r"^[0-9a-f]{24}$")
DISPLAY = 256        # the video's side: the real photos at this size, model frames scaled up to it
FADE_S, HOLD_S = 1.0, 0.5


def _ddim(s: DiffusionSettings, steps: int | None):
    from diffusers import DDIMScheduler

    from .diffusion import build_scheduler

    sched = DDIMScheduler.from_config(build_scheduler(s).config, timestep_spacing="trailing")
    sched.set_timesteps(steps or s.sample_steps)
    return sched


@torch.no_grad()
def ddim_invert(unet, s: DiffusionSettings, images: torch.Tensor, steps: int | None = None,
                labels: torch.Tensor | None = None, refine: int = 4) -> torch.Tensor:
    """Noise latents [n, 3, H, W] that deterministic DDIM (ddim_sample with clip=False, same
    `steps`) decodes back to `images` (in [-1, 1]). Each step x_{t'} -> x_t re-noises the predicted
    x0 with the predicted noise. The decoder predicts that noise at x_t, unknown until x_t is: the
    usual inversion takes it at x_{t'} instead, and then `refine` fixed-point passes take it at the
    x_t found so far (measured on a tiny CPU model of carphone, 20 steps: RMSE 53 grey levels with
    none, see bench/RESULTS.md for the refined figure)."""
    sched = _ddim(s, steps)
    alphas = sched.alphas_cumprod
    device, dtype = unet.device, unet.dtype
    x = images.to(device, torch.float32)
    a_prev = torch.tensor(float(sched.final_alpha_cumprod))
    was = unet.training
    unet.eval()
    try:
        for t in reversed(sched.timesteps):  # ascending: from the cleanest level to pure noise
            a_t = alphas[int(t)]
            def up(eps: torch.Tensor) -> torch.Tensor:
                return a_t.sqrt() * (x - (1 - a_prev).sqrt() * eps) / a_prev.sqrt() + (1 - a_t).sqrt() * eps

            x_t = up(unet(x.to(dtype), t.to(device), class_labels=labels).sample.float())
            for _ in range(refine):
                x_t = up(unet(x_t.to(dtype), t.to(device), class_labels=labels).sample.float())
            x, a_prev = x_t, a_t
    finally:
        unet.train(was)
    return x.cpu()


def _snapshot_look(storage: Storage, snapshot: str) -> tuple[str, list]:
    """The snapshot's main crop kind and the transform chain its frames went through."""
    con = open_snapshot(storage, snapshot)
    try:
        kind, transforms = con.execute("SELECT kind, any_value(transforms) FROM frames GROUP BY kind "
                                       "ORDER BY count(*) DESC, kind LIMIT 1").fetchall()[0]
    finally:
        con.close()
    return kind, parse_chain(chain_specs_from_text(", ".join(transforms))) if transforms else []


def load_face(storage: Storage, cfg: Config, token: str, kind: str, steps: list,
              detector: FaceDetector | None = None) -> tuple[np.ndarray, str]:
    """(RGB crop as the dataset stores it, its label) for a frame id or an image file."""
    if Path(token).is_file():
        image = read_image(Path(token))
        faces = (detector or FaceDetector(min_score=0.5)).detect(image)
        if not faces:
            raise UserError(f"--morph {token}: no face found in the image; use a photo with a frontal face")
        face = max(faces, key=lambda f: f.box[2] * f.box[3])
        if kind == "face":
            x, y, w, h = face_square(face.box, cfg.processing.face_margin, image.shape[1], image.shape[0])
            crop = image[y:y + h, x:x + w]
        elif kind == "aligned_face":
            crop = align_face(image, face, cfg.processing.aligned_size)
        else:  # facecam or whole frames: the photo as a whole
            crop = image
        return apply_chain(steps, crop[None])[0][..., :3] if steps else crop, Path(token).name
    if FRAME_ID.match(token):
        from ..dataset.catalog import open_catalog

        with open_catalog(storage.pull_dataset()) as con:
            rows = con.execute("SELECT image FROM frames_all WHERE frame_id = ?", [token]).fetchall()
        if rows:
            return decode_crop(rows[0][0])[..., :3], token
    raise UserError(f"--morph {token!r}: neither an image file nor a frame id of the dataset "
                    "(`stream2dataset sql \"SELECT frame_id FROM frames\"` lists them)")


def _square(img: np.ndarray, side: int) -> np.ndarray:
    h, w = img.shape[:2]
    if h != w:  # centre-crop: the model's frames are square
        s = min(h, w)
        img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return cv2.resize(np.ascontiguousarray(img), (side, side),
                      interpolation=cv2.INTER_AREA if img.shape[0] > side else cv2.INTER_CUBIC)


def morph_video(storage: Storage, cfg: Config, run: str, a: str, b: str, *, frames: int = 48, fps: float = 12.0,
                steps: int | None = None, out: Path | None = None) -> dict:
    """Invert faces `a` and `b`, walk between them and write the MP4 (see the module's docstring)."""
    from .diffusion import ddim_sample, slerp
    from .sample import _load, _stamp
    from .video import write_mp4

    if frames < 2:
        raise UserError(f"--frames {frames}: a morph needs at least 2 frames")
    folder, info, tcfg, unet, step = _load(storage, run, "diffusion")
    s, device = tcfg.diffusion, next(unet.parameters()).device
    kind, chain = _snapshot_look(storage, info["snapshot"]["name"])
    detector = None if all(not Path(t).is_file() for t in (a, b)) else FaceDetector(min_score=0.5)
    (img_a, name_a), (img_b, name_b) = (load_face(storage, cfg, t, kind, chain, detector) for t in (a, b))
    real = np.stack([_square(img_a, s.resolution), _square(img_b, s.resolution)])
    x = to_unit(torch.from_numpy(real).permute(0, 3, 1, 2).float())
    labels = torch.zeros(2, dtype=torch.long, device=device) if s.condition_on_channel else None
    z = ddim_invert(unet, s, x, steps, labels)
    ends = to_uint8(ddim_sample(unet, s, 2, generator=None, latents=z, steps=steps, labels=labels, clip=False))
    rmse = [float(np.sqrt(np.mean((ends[i].astype(np.float64) - real[i]) ** 2))) for i in range(2)]
    walk = torch.stack([slerp(z[0], z[1], float(t)) for t in np.linspace(0, 1, frames)])
    walk_labels = torch.zeros(frames, dtype=torch.long, device=device) if s.condition_on_channel else None
    decoded = to_uint8(ddim_sample(unet, s, frames, generator=None, latents=walk, steps=steps, labels=walk_labels,
                                   clip=False))
    big = np.stack([_square(f, DISPLAY) for f in decoded])
    photo_a, photo_b = _square(img_a, DISPLAY), _square(img_b, DISPLAY)
    fade, hold = max(2, round(FADE_S * fps)), max(1, round(HOLD_S * fps))

    def crossfade(p: np.ndarray, q: np.ndarray) -> list[np.ndarray]:
        return [np.round((1 - u) * p + u * q).astype(np.uint8) for u in np.linspace(0, 1, fade)[1:-1]]

    video = ([photo_a] * hold + crossfade(photo_a, big[0]) + list(big) + crossfade(big[-1], photo_b)
             + [photo_b] * hold)
    path = out or folder / f"morph-{_stamp()}.mp4"
    write_mp4(path, np.stack(video), fps)
    return {"step": step, "video": path, "video_frames": len(video), "morph_frames": frames, "kind": kind,
            "faces": [name_a, name_b], "inversion_rmse": rmse}


def face_quality(storage: Storage, snapshot: str, generated: np.ndarray, resolution: int, real_max: int = 128,
                 embedder: FaceEmbedder | None = None) -> dict | None:
    """Fréchet distance between identity embeddings of `generated` (uint8 NHWC) and of up to
    `real_max` of the snapshot's face crops seen at the same `resolution`; None when the snapshot
    holds no aligned_face or face crops (no face geometry to embed)."""
    from .data import decode_image

    con = open_snapshot(storage, snapshot)
    try:
        counts = dict(con.execute("SELECT kind, count(*) FROM frames GROUP BY kind").fetchall())
        kind = max((k for k in EMBEDDED_KINDS if counts.get(k)), key=lambda k: counts[k], default=None)
        if kind is None or len(generated) < 2:
            return None
        rows = con.execute("SELECT image FROM frames WHERE kind = ? ORDER BY hash(frame_id) LIMIT ?",
                           [kind, real_max]).fetchall()
    finally:
        con.close()
    if len(rows) < 2:
        return None
    embedder = embedder or FaceEmbedder()
    real = [decode_image(r[0], resolution) for r in rows]
    fake = embedder.embed(list(generated), kind)
    ref = embedder.embed(real, kind)
    return {"frechet": frechet_distance(fake, ref), "generated": len(fake), "real": len(ref), "kind": kind,
            "model": embedder.model}


def log_face_quality(folder: Path, step: int, result: dict) -> None:
    """Append the figure to the run's `face_quality.jsonl` (one line per `sample diffusion`)."""
    path = folder / "face_quality.jsonl"
    line = json.dumps({"time": datetime.now(timezone.utc).isoformat(), "step": step, **result})
    body = (path.read_text() if path.exists() else "") + line + "\n"
    atomic_write_bytes(path, body.encode(), sync=False)
