"""`stream2dataset sample`: images, interpolations and video from a run's newest checkpoint (EMA
weights), with the two checks a user needs before trusting them: memorisation (diffusion) and
fluency (temporal)."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from ..config import TrainingConfig
from ..dataset.preview import tile
from ..dataset.snapshots import open_snapshot
from ..errors import UserError
from ..layout import Storage, atomic_write_bytes
from ..processing.hashing import hamming, phash64
from .data import decode_image
from .fluency import continuations_report
from .memorisation import nearest_training_frames, write_memorisation_sheet
from .runs import load_state, pull_run, read_run_info
from .tasks import TASKS
from .temporal import fit_temperature, generate
from .tensors import to_uint8, to_unit
from .video import write_mp4


def _load(storage: Storage, run: str, kind: str):
    """(run folder, run info, training config, EMA network in eval mode, checkpoint step)."""

    folder = pull_run(storage, run, newest_state=True)
    info = read_run_info(folder)
    if info["kind"] != kind:
        raise UserError(f"run {run!r} trained the {info['kind']} model: use `sample {info['kind']}`")
    state = load_state(folder)
    cfg = TrainingConfig.model_validate(state["config"])
    net = TASKS[kind](cfg, info["snapshot"]["channels"]).model
    net.load_state_dict(state["ema"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return folder, info, cfg, net.to(device).eval(), state["step"]


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def sample_diffusion(storage: Storage, run: str, *, n: int = 64, out: Path | None = None, seed: int = 0,
                     steps: int | None = None, interpolate: bool = False, memorisation: bool = True,
                     seconds: float = 6.0, fps: float = 8.0, face_quality: bool = True) -> dict:
    from .diffusion import ddim_sample, interpolation_latents  # deferred on purpose: diffusers, only here

    folder, info, cfg, unet, step = _load(storage, run, "diffusion")
    s, device = cfg.diffusion, next(unet.parameters()).device
    classes = len(info["snapshot"]["channels"]) if s.condition_on_channel else 0
    labels = torch.arange(n, device=device) % classes if classes else None
    gen = torch.Generator(device=device).manual_seed(seed)
    images = to_uint8(ddim_sample(unet, s, n, generator=gen, labels=labels, steps=steps))
    stamp = _stamp()
    grid = tile(list(images), out or folder / f"sample-{stamp}.png", columns=math.ceil(math.sqrt(n)),
                width=max(64, s.resolution), pad=2)
    result = {"step": step, "grid": grid, "images": images}
    if interpolate:

        frames = max(2, round(seconds * fps))
        latents = interpolation_latents(s, frames, torch.Generator().manual_seed(seed), keyframes=3).to(device)
        walk = to_uint8(ddim_sample(unet, s, frames, generator=gen, latents=latents, steps=steps,
                                    labels=torch.zeros(frames, dtype=torch.long, device=device) if classes else None))
        video = (out.with_suffix(".mp4") if out else folder / f"interpolate-{stamp}.mp4")
        result.update(video=write_mp4(video, walk, fps), video_frames=frames)
    if face_quality:  # identity embeddings of samples against real crops; logged in the run's folder
        from .morph import face_quality as quality, log_face_quality

        fq = quality(storage, info["snapshot"]["name"], images, s.resolution)
        if fq is not None:
            log_face_quality(folder, step, fq)
        result["face_quality"] = fq
    if memorisation:
        result.update(memorisation_check(storage, info["snapshot"]["name"], images,
                                         (out.with_name(out.stem + "-memorisation.png") if out
                                          else folder / f"memorisation-{stamp}.png")))
    return result


def memorisation_check(storage: Storage, snapshot: str, images: np.ndarray, sheet: Path, candidates: int = 8) -> dict:
    """Nearest training frames of each sample: the stored pHashes narrow every training frame down
    to a few candidates per sample (cheap for millions of frames), whose pixels then decide."""

    con = open_snapshot(storage, snapshot)
    try:
        ids, hashes = zip(*con.execute("SELECT frame_id, phash FROM frames").fetchall())
        hashes = np.array(hashes, np.uint64)
        picked: set[int] = set()
        for h in phash64(images):
            dist = hamming(hashes, h)
            picked.update(np.argsort(dist, kind="stable")[:candidates].tolist())
        chosen = [ids[i] for i in sorted(picked)]
        rows = con.execute("SELECT frame_id, image FROM frames WHERE frame_id IN (SELECT unnest(?))", [chosen]).fetchall()
    finally:
        con.close()
    size = images.shape[1]
    train_ids = [r[0] for r in rows]
    train = np.stack([decode_image(r[1], size) for r in rows])
    results = nearest_training_frames(images, train, train_ids, k_phash=candidates)
    return {"memorisation": results, "memorisation_sheet": write_memorisation_sheet(images, train, results, sheet)}


def sample_temporal(storage: Storage, run: str, *, seconds: float = 10.0, fps: float = 8.0, seed_clip: str | None = None,
                    out: Path | None = None, seed: int = 0, real_clips: int = 32, n: int = 1,
                    temperature: float | None = None) -> dict:
    """n continuations of one seed clip (MP4s; with n > 1 named -1..-n), their fluency against real
    clips and their diversity. `temperature` scales the sampled steps' spread (default: the run's
    `temporal.temperature`; 0: the mean step, the same video every time)."""

    if n < 1:
        raise UserError(f"--n {n}: write at least one video")
    if temperature is not None and temperature < 0:
        raise UserError(f"--temperature {temperature:g}: use 0 (the mean step) or more (1: as trained)")
    folder, info, cfg, model, step = _load(storage, run, "temporal")
    s = cfg.temporal
    con = open_snapshot(storage, info["snapshot"]["name"])
    try:
        clips = con.execute("SELECT clip_id, frames FROM clips ORDER BY clip_id").fetchall()
        # Two halves by the clip id's hash: the speed is fitted on one and reported against the other.
        fit = [c for c in clips if _half(c[0]) == 0]
        real = [c for c in clips if _half(c[0]) == 1][:real_clips] or clips[:real_clips]
        if seed_clip:
            chosen = con.execute("SELECT clip_id, frames FROM clips WHERE clip_id = ?", [seed_clip]).fetchall()
            if not chosen:
                raise UserError(f"--seed-clip {seed_clip!r}: no such clip in snapshot {info['snapshot']['name']!r}")
        else:
            chosen = [real[np.random.default_rng(seed).integers(len(real))]]
    finally:
        con.close()
    clip_id, encoded = chosen[0]
    seed_len = max(2, s.context // 2)
    device = next(model.parameters()).device

    def seed_of(frames: list) -> torch.Tensor:
        seed = np.stack([decode_image(f, s.resolution) for f in frames[:seed_len]])
        return to_unit(torch.from_numpy(seed).permute(0, 3, 1, 2).to(device))

    x = seed_of(encoded)
    total = max(seed_len + 1, round(seconds * fps))
    fitted = None
    if temperature is None and s.match_speed and fit:
        fitted = _fitted_temperature(folder, step, model, [seed_of(c) for _, c in fit[:8]],
                                     [np.stack([decode_image(f, s.resolution) for f in c]) for _, c in fit],
                                     total, seed_len)
    temperature = (fitted or s.temperature) if temperature is None else temperature
    gen = torch.Generator(device=device).manual_seed(seed)
    stamp, base = _stamp(), out or folder / "video.mp4"
    videos, paths = [], []
    for k in range(n):
        frames = to_uint8(generate(model, x, total, generator=gen, temperature=temperature))
        name = out if n == 1 and out else base.with_name(f"{base.stem}{'' if out else '-' + stamp}"
                                                        f"{f'-{k + 1}' if n > 1 else ''}.mp4")
        videos.append(frames)
        paths.append(write_mp4(name, frames, fps))
    reference = [np.stack([decode_image(f, s.resolution) for f in clip]) for _, clip in real]
    return {"step": step, "video": paths[0], "videos": paths, "frames": total, "seed_clip": clip_id,
            "temperature": temperature, "temperature_fitted": fitted is not None,
            "fluency": continuations_report(videos, reference, skip=seed_len)}


def _half(clip_id: str) -> int:
    return hashlib.sha256(clip_id.encode()).digest()[0] & 1


def _fitted_temperature(folder: Path, step: int, model, seeds: list[torch.Tensor], clips: list[np.ndarray],
                        total: int, skip: int) -> float:
    """The run's speed-matched temperature at this checkpoint (fitted once, kept in the run's folder)."""
    cache = folder / "temperature.json"
    try:
        saved = json.loads(cache.read_text())
        if saved.get("step") == step:
            return float(saved["temperature"])
    except (OSError, ValueError, KeyError):
        pass
    temperature, speed = fit_temperature(model, seeds, clips, total, skip)
    atomic_write_bytes(cache, json.dumps({"step": step, "temperature": temperature, "speed": speed}).encode())
    return temperature
