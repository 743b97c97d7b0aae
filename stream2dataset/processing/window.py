"""One window of one segment, end to end: sample → detect → facecam → crop → transform → hash → rows.

`WindowProcessor` is a Ray Data stage (DESIGN.md: a callable class over a batch dict; models load
once per actor in `__init__`). It writes its rows itself and returns only a summary, so images
never travel through Ray's object store, and a window whose marker exists is skipped: re-running
after a crash redoes only unfinished windows and never duplicates rows.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from ..cluster import node_id
from ..config import ProcessingConfig, StorageConfig
from ..dataset import frame_id, stage_rows
from ..errors import CorruptMedia
from ..layout import RAW, Storage, atomic_write_bytes
from .clips import clip_row, cut_clips, encode_frames
from .crops import FACE_KINDS, PERSON_KINDS, Crop, frame_crops
from .decode import SampledFrame, sample_frames
from .detect import Face, FaceDetector, centre_inside, iou, nms
from .facecam import Box, FacecamEstimate, estimate_facecam
from .hashing import mark_near_duplicates, phash64
from .identity import EMBEDDED_KINDS, FaceEmbedder
from .person import PersonSegmenter, person_box
from ..transforms import apply_chain, chain_names, parse_chain

NO_FACECAM = FacecamEstimate("unknown", None, None, 0.0, 0.0, 0.0, "not_estimated")
FACECAM_FRAMES = 12
LOOK_SIDE = 300 / 720    # before a window is called all-webcam, regions this share of the short side
#                          are looked into: a 160-px webcam's ~35-px face is found in a 240-300 px
#                          region at 720p (scores 0.8-0.96), not in 360 px or in the detector's tiles
LOOK_FRAMES = 6          # ... in this many of the window's sampled frames,
LOOK_SCAN = 2            # ... every region in the first two of them (~0.1 s a window)
LOOK_SCORE = 0.75        # zoomed in, the model sees faces in textures (scores 0.5-0.69 on the tune
#                          split's all-webcam streams, 136-260 px); a small webcam's face scores 0.8+
LOOK_FACE = 0.5          # ... and is small: at most this share of the region's side
PRIOR_IOU = 0.9          # a channel's last overlay is kept when the window's own estimate closes this near it


def faces_in_facecam(detector: FaceDetector, images: list[np.ndarray], faces: list[list[Face]],
                     cam: FacecamEstimate, keep_score: float = 0.75) -> list[list[Face]]:
    """Once the facecam is known, look inside it again wherever the whole-frame views missed its
    face or scored it below `keep_score` (the crops' `min_face_score`): in a small facecam the
    face is too few pixels for them. Still missed, look at the streamer's face's own
    neighbourhood, three faces wide, where the face fills more of the model's input."""
    if cam.kind != "overlay":
        return faces
    # the streamer's own face, not any face in the facecam: in a webcam of two people the one
    # further back may score high while the near one, whose face the crop wants, scores low
    where = _around(cam.face, 2.0) if cam.face is not None else cam.box

    def kept(fs: list[Face]) -> bool:
        return any(centre_inside(f.box, cam.box) and centre_inside(f.box, where) and f.score >= keep_score for f in fs)
    out = []
    for img, fs in zip(images, faces):
        if not kept(fs):
            fs = nms(fs + detector.detect_in(img, cam.box))
            if cam.face is not None and not kept(fs):
                near = _clip(_around(cam.face, 3.0), cam.box)
                if near[2] >= 32 and near[3] >= 32:
                    fs = nms(fs + detector.detect_in(img, near))
        out.append(fs)
    return out


def _around(box: Box, k: float) -> Box:
    x, y, w, h = box
    side = k * max(w, h)
    return int(x + w / 2 - side / 2), int(y + h / 2 - side / 2), int(side), int(side)


def _clip(box: Box, to: Box) -> Box:
    x0, y0 = max(box[0], to[0]), max(box[1], to[1])
    x1, y1 = min(box[0] + box[2], to[0] + to[2]), min(box[1] + box[3], to[1] + to[3])
    return x0, y0, max(0, x1 - x0), max(0, y1 - y0)


def _spread(n: int, k: int) -> list[int]:
    """At most k indices of n, evenly spread, first and last included."""
    return [int(i) for i in np.unique(np.linspace(0, n - 1, min(n, k)).astype(int))]


def look_regions(width: int, height: int) -> list[Box]:
    """Overlapping squares over the whole frame, LOOK_SIDE of its short side, each overlapping the
    next by a third: a small webcam's face lies wholly inside at least one."""
    side = max(32, round(min(width, height) * LOOK_SIDE))
    step = max(1, side * 2 // 3)

    def starts(length: int) -> list[int]:
        return sorted(set(range(0, max(1, length - side), step)) | {max(0, length - side)})
    return [(x, y, side, side) for y in starts(height) for x in starts(width)]


def _look_for_small_webcam(detector: FaceDetector, images: list[np.ndarray], found: dict[int, list[Face]],
                           cam: FacecamEstimate) -> tuple[FacecamEstimate, dict[int, list[Face]]]:
    """An all-webcam call is checked before it is trusted: a small webcam (a 160-px overlay with
    a faint or shadow-only frame) has a face too few pixels for the whole-frame views and borders
    no rectangle closes, and then the content's big face (a film's close-up) looks like an
    all-webcam stream's. Looked at in small regions, that face is found; the window is then
    estimated again on those frames, and whatever it finds (the overlay around the small face,
    or an unknown layout because a steady face rivals the big one) replaces the all-webcam call."""
    keys = list(found)
    probe = [keys[i] for i in _spread(len(keys), LOOK_FRAMES)]

    def small_faces(i: int, regions: list[Box]) -> list[tuple[Box, Face]]:
        return [(r, f) for r in regions for f in detector.detect_in(images[i], r)
                if f.score >= LOOK_SCORE and max(f.box[2], f.box[3]) <= LOOK_FACE * r[2]]

    # Every region in the first LOOK_SCAN frames; the rest only where those found a small face
    # (a webcam's face stays put): a third of the cost when, as in a real all-webcam stream, none is.
    h, w = images[0].shape[:2]
    first = {i: small_faces(i, look_regions(w, h)) for i in probe[:LOOK_SCAN]}
    hit = sorted({r for got in first.values() for r, _ in got})
    if not hit:
        return cam, found  # nothing small anywhere: the all-webcam call stands
    small = {i: [f for _, f in (first[i] if i in first else small_faces(i, hit))] for i in probe}
    looked = {i: nms(found[i] + small[i]) for i in probe}
    again = estimate_facecam([images[i] for i in probe], list(looked.values()))
    if again.kind == "full_frame":
        return cam, found
    if again.kind == "overlay":
        return again, looked
    return dataclasses.replace(again, reason=f"small_face_{again.reason}"), looked


def _look_beside(detector: FaceDetector, images: list[np.ndarray], found: dict[int, list[Face]],
                 cam: FacecamEstimate) -> tuple[FacecamEstimate, dict[int, list[Face]]]:
    """A webcam of two people found as a box around one: the second person, often further back,
    is too small for the whole-frame views, and the near-still one's picture lines closed a box
    around the other. Looked at in the box's neighbourhood (twice and three times its size), the
    second face is found; the window is estimated again with it (the estimator's two-people rule
    then closes the rectangle around both), and the new box is taken only when it holds the old.
    Two frames first: a box with no face beside it (nearly every window) costs four looks."""
    h, w = images[0].shape[:2]
    x, y, bw, bh = cam.box
    near = [_clip((x - bw // 2, y - bh // 4, 2 * bw, bh * 3 // 2), (0, 0, w, h)),
            _clip((x - bw, y - bh // 2, 3 * bw, 2 * bh), (0, 0, w, h))]

    def beside(i: int) -> list[Face]:
        return [f for r in near for f in detector.detect_in(images[i], r) if not centre_inside(f.box, cam.box)]

    keys = list(found)
    first = {i: beside(i) for i in (keys[0], keys[-1])}
    if not all(first.values()):
        return cam, found
    looked = {i: nms(found[i] + (first[i] if i in first else beside(i))) for i in keys}
    again = estimate_facecam([images[i] for i in keys], list(looked.values()))
    if again.kind != "overlay" or not centre_inside(cam.box, again.box) \
            or again.box[2] * again.box[3] <= bw * bh:
        return cam, found
    return again, looked


def faces_and_facecam(detector: FaceDetector, images: list[np.ndarray], want_facecam: bool = True,
                      lap=lambda stage: None, keep_score: float = 0.75,
                      prior: FacecamEstimate | None = None) -> tuple[list[list[Face]], FacecamEstimate]:
    """Faces per frame, and the window's facecam.

    The full multi-view search (whole frame + tiles, ~30 ms a 720p frame) runs on a dozen
    frames spread over the window: enough to find the facecam's steady borders. Once an overlay
    is found, the other frames are searched only inside it, which is where the streamer is.
    `prior` is the overlay the channel's previous window found: the frames are first searched
    only inside it (one model run a frame, not seven), and it is kept when the window's own
    estimate from those faces and the frames' edges closes the same rectangle; otherwise (the
    webcam moved, a full-camera scene, a break screen) the full search runs."""
    if not images:
        return [], NO_FACECAM
    if not want_facecam:
        faces = [detector.detect(img) for img in images]
        lap("detect")
        return faces, NO_FACECAM
    if prior is not None and prior.kind == "overlay":
        found = {i: detector.detect_in(images[i], prior.box) for i in _spread(len(images), FACECAM_FRAMES)}
        lap("detect")
        cam = estimate_facecam([images[i] for i in found], list(found.values()))
        if cam.kind == "overlay" and iou(cam.box, prior.box) >= PRIOR_IOU:
            lap("facecam")
            return _overlay_faces(detector, images, found, cam, keep_score, lap), cam
    found = {i: detector.detect(images[i]) for i in _spread(len(images), FACECAM_FRAMES)}
    lap("detect")
    picked = [images[i] for i in found]
    cam = estimate_facecam(picked, list(found.values()))
    for box in (cam.candidates or ((cam.candidate,) if cam.candidate is not None else ())) \
            if cam.kind == "unknown" else ():
        # An overlay's borders closed with no face track in them: look inside on its own (a
        # small or near-still webcam's face is too few pixels in the whole-frame views); the
        # strongest few such rectangles, until one holds the streamer.
        looked = {i: nms(found[i] + detector.detect_in(img, box)) for i, img in zip(list(found), picked)}
        again = estimate_facecam(picked, list(looked.values()))
        if again.kind == "overlay":
            cam, found = again, looked
            break
    if cam.kind == "full_frame":
        cam, found = _look_for_small_webcam(detector, images, found, cam)
    elif cam.kind == "overlay":
        cam, found = _look_beside(detector, images, found, cam)
    lap("facecam")
    if cam.kind == "overlay":
        return _overlay_faces(detector, images, found, cam, keep_score, lap), cam
    faces = [found[i] if i in found else detector.detect(img) for i, img in enumerate(images)]
    lap("detect")
    return faces, cam


def _overlay_faces(detector: FaceDetector, images: list[np.ndarray], found: dict[int, list[Face]],
                   cam: FacecamEstimate, keep_score: float, lap) -> list[list[Face]]:
    """Every frame's faces once the overlay is known: searched inside it."""
    faces = [found.get(i) or detector.detect_in(img, cam.box) for i, img in enumerate(images)]
    faces = faces_in_facecam(detector, images, faces, cam, keep_score)
    # a face bigger than the facecam, centred in it, is the content's behind the webcam (a
    # cartoon's close-up), not the streamer's: the crops would take it as the largest face
    faces = [[f for f in fs if not (centre_inside(f.box, cam.box) and (f.box[2] > cam.box[2] or f.box[3] > cam.box[3]))]
             for fs in faces]
    lap("detect")
    return faces


def window_id(segment_id: str, index: int) -> str:
    return f"{segment_id}.w{index:04d}"


def _drop_orphan_copies(raw: Path) -> None:
    """Delete the private segment copies (`.<stem>.<pid><ext>`) of actors that are gone: one whose
    segment's last window ran elsewhere keeps its copy until it moves on or exits."""
    for path in raw.glob("*/*/*/.*") if raw.exists() else ():
        pid = path.stem.rpartition(".")[2]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            path.unlink(missing_ok=True)


class WindowProcessor:
    def __init__(self, processing: ProcessingConfig, storage: StorageConfig, config_hash: str):

        self.cfg = processing
        self.storage = Storage.of(storage)
        self._fetched: Path | None = None  # a segment copied here from the store, to drop when done
        if self.storage.remote:
            _drop_orphan_copies(self.storage.root / RAW)
        self.config_hash = config_hash
        self.layouts: dict[str, FacecamEstimate] = {}  # channel -> the overlay its last window found
        self.steps = parse_chain(processing.transforms)
        self.transform_names = chain_names(self.steps)
        self.detector_name = "mediapipe" if processing.detector == "mediapipe" else "haar"
        # Detect a little below the keep threshold, so near misses are counted as `low_score`.
        self.detector = FaceDetector(min_score=min(0.5, processing.min_face_score), method=processing.detector) \
            if any(k in FACE_KINDS for k in processing.outputs) else None
        self.segmenter = PersonSegmenter() if any(k in PERSON_KINDS for k in processing.outputs) else None
        self.embedder = FaceEmbedder() if processing.embeddings and any(k in EMBEDDED_KINDS for k in processing.outputs) \
            else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        windows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        summaries = [self.process(w) for w in windows]
        return {key: [s[key] for s in summaries] for key in summaries[0]}

    def process(self, win: dict) -> dict:
        wid = window_id(win["segment_id"], int(win["window"]))
        marker = self.storage.stage_dir(win["segment_id"]) / f"{wid}.done"
        if self.storage.exists(marker):  # finished by an earlier run (maybe on another node)
            return {"window_id": wid, "skipped": True, **json.loads(self.storage.fetch(marker).read_text())}
        timings: Counter = Counter()
        drops: Counter = Counter()
        clock = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[stage] += now - clock
            clock = now

        frames, error = [], ""
        source = self._local_file(win)  # the frame pass and the clip pass read this node's copy
        try:
            frames.extend(sample_frames(source, self.cfg.sample_fps, self.cfg.keyframes_only,
                                        self.cfg.max_side, float(win["start_s"]), float(win["end_s"]),
                                        self.cfg.decode_threads))
        except CorruptMedia as err:  # keep the good frames; the pipeline quarantines the file
            error = str(err)
        lap("decode")
        faces, cam = self._faces_and_facecam([f.image for f in frames], lap, win["channel"])
        masks = [self.segmenter.mask(f.image) for f in frames] if self.segmenter else [None] * len(frames)
        lap("person")
        crops: list[tuple[int, Crop]] = []
        for i, (frame, fs, mask) in enumerate(zip(frames, faces, masks)):
            made, reasons = frame_crops(frame.image, fs, cam, mask, self.cfg, self.detector_name)
            crops += [(i, c) for c in made]
            drops.update(reasons)
        lap("crop")
        images = [apply_chain(self.steps, c.image[None])[0] for _, c in crops]
        lap("transform")
        hashes = phash64(np.stack(images)) if images and len({im.shape for im in images}) == 1 else \
            np.array([phash64(im[None])[0] for im in images], dtype=np.uint64)
        lap("hash")
        rows = self._rows(win, frames, crops, images, hashes, cam)
        lap("encode")
        stage_rows(self.storage, "frames", win["segment_id"], wid, rows, float(win["start_ts"]))
        lap("write")
        if self.embedder is not None:  # after the frames: their rows name the partition the embeddings join
            stage_rows(self.storage, "embeddings", win["segment_id"], wid, self._embeddings(crops, rows),
                       float(win["start_ts"]))
            lap("embed")
        clips = self._clips(win, source, wid, cam, drops) if self.cfg.clips.enabled and frames else 0
        lap("clips")
        start = datetime.fromtimestamp(float(win["start_ts"]), timezone.utc)
        stage_rows(self.storage, "drops", win["segment_id"], wid, [
            {"segment_id": win["segment_id"], "channel": win["channel"], "platform": win["platform"],
             "timestamp": start, "reason": reason, "count": n} for reason, n in sorted(drops.items())
        ], float(win["start_ts"]))
        summary = {
            "window_id": wid, "skipped": False, "segment_id": win["segment_id"], "frames": len(frames),
            "kept": sum(r["dup_of"] is None for r in rows), "duplicates": sum(r["dup_of"] is not None for r in rows),
            "clips": clips, "drops": json.dumps(dict(drops)), "error": error, "facecam": cam.kind,
            "facecam_confidence": float(cam.confidence),
            "facecam_box": json.dumps(cam.box), "seconds": json.dumps({k: round(v, 4) for k, v in timings.items()}),
            "node": node_id(),  # the report shows how work spread
        }
        if not error:  # a broken window is redone next time, after the file is dealt with
            atomic_write_bytes(marker, json.dumps({k: v for k, v in summary.items() if k != "skipped"}).encode())
        if self._fetched is not None and float(win["end_s"]) >= 1e9:  # the segment's last window
            self._fetched.unlink(missing_ok=True)
            self._fetched = None
        return summary

    def _local_file(self, win: dict) -> str:
        """The segment's file on this node. From an object-store root, a segment recorded on
        another node is downloaded to a hidden name of this actor's own (no other process deletes
        it under us), kept for the segment's next window, dropped after its last one."""
        if not win.get("key"):
            return win["path"]  # an operator's own file (`process PATH`)
        path = self.storage.root / win["key"]
        if not self.storage.remote or path.exists():
            return str(path)
        own = path.with_name(f".{path.stem}.{os.getpid()}{path.suffix}")
        if self._fetched not in (None, own):
            self._fetched.unlink(missing_ok=True)
        if not own.exists():
            self.storage.remote.download(win["key"], dest=own)
        self._fetched = own
        return str(own)

    def _faces_and_facecam(self, images: list[np.ndarray], lap, channel: str) -> tuple[list[list[Face]], FacecamEstimate]:
        if not self.detector or not images:
            return [[] for _ in images], NO_FACECAM
        faces, cam = faces_and_facecam(self.detector, images, "facecam" in self.cfg.outputs, lap,
                                       self.cfg.min_face_score, self.layouts.get(channel))
        if cam.kind == "overlay":  # the next window of this channel starts from it
            self.layouts[channel] = cam
        else:
            self.layouts.pop(channel, None)
        return faces, cam

    def _clips(self, win: dict, source: str, wid: str, cam: FacecamEstimate, drops: Counter) -> int:
        """Runs of consecutive frames of the facecam (or the whole frame) for the temporal model,
        decoded from `source`, the segment's file on this node (`_local_file`)."""
        c = self.cfg.clips
        try:
            frames = list(sample_frames(source, c.fps, False, self.cfg.max_side,
                                        float(win["start_s"]), float(win["end_s"]), self.cfg.decode_threads))
        except CorruptMedia:
            return 0  # the frame pass has already recorded why; clips need unbroken runs anyway
        if "silhouette" in self.cfg.outputs and cam.box is None:
            kind, frames, box = "silhouette", *self._silhouettes(frames)
        else:
            kind, box = ("facecam", cam.box) if cam.box is not None else ("frame", None)
        clips, reasons = cut_clips(frames, box, length=c.length, min_motion=c.min_motion, steps=self.steps, fps=c.fps)
        drops.update({f"clip_{reason}": n for reason, n in reasons.items()})
        scale = float(win["width"]) / frames[0].image.shape[1] if frames else 1.0
        source_box = [int(round(v * scale)) for v in box] if box else None
        rows = [clip_row(clip, channel=win["channel"], platform=win["platform"], segment_id=win["segment_id"],
                         segment_start=datetime.fromtimestamp(float(win["start_ts"]), timezone.utc), kind=kind,
                         fps=c.fps, box=source_box, transforms=self.transform_names, config_hash=self.config_hash,
                         image_format=self.cfg.image_format) for clip in clips]
        stage_rows(self.storage, "clips", win["segment_id"], wid, rows, float(win["start_ts"]))
        return len(rows)

    def _embeddings(self, crops: list[tuple[int, Crop]], rows: list[dict]) -> list[dict]:
        """Identity embeddings of the face crops, from the crop as cut (before the transforms, which
        may recolour it), one row per frame row of an embedded kind."""
        picked = [(c, r) for (_, c), r in zip(crops, rows) if c.kind in EMBEDDED_KINDS]
        vectors = self.embedder.embed([c.image for c, _ in picked], [c.kind for c, _ in picked], self.cfg.face_margin)
        return [{"frame_id": r["frame_id"], "model": self.embedder.model, "vector": v.tolist()}
                for (_, r), v in zip(picked, vectors)]

    def _silhouettes(self, frames: list[SampledFrame]) -> tuple[list[SampledFrame], Box | None]:
        """Person masks as white-on-black frames, and the box around the person in all of them."""
        masks = [self.segmenter.mask(f.image) >= self.cfg.person_threshold for f in frames]
        union = np.any(masks, axis=0) if masks else None
        box = person_box(union.astype(np.float32), 0.5, self.cfg.min_person_area) if union is not None else None
        sil = [SampledFrame(f.frame_index, f.pts_s, np.repeat((m * 255).astype(np.uint8)[..., None], 3, axis=2))
               for f, m in zip(frames, masks)]
        return sil, box

    def _rows(self, win: dict, frames: list, crops: list[tuple[int, Crop]], images: list[np.ndarray],
              hashes: np.ndarray, cam: FacecamEstimate = NO_FACECAM) -> list[dict]:
        scale = float(win["width"]) / frames[0].image.shape[1] if frames else 1.0  # back to source pixels
        start = datetime.fromtimestamp(float(win["start_ts"]), timezone.utc)
        rows: list[dict] = []
        kept_by_kind: dict[str, list[int]] = {}
        for (i, crop), image, h in zip(crops, images, hashes):
            kept_by_kind.setdefault(crop.kind, []).append(len(rows))
            f = frames[i]
            rows.append({
                "frame_id": frame_id(win["segment_id"], f.frame_index, crop.kind), "channel": win["channel"],
                "platform": win["platform"], "segment_id": win["segment_id"], "source_id": win["source_id"] or None,
                "timestamp": start + timedelta(seconds=f.pts_s), "frame_index": f.frame_index, "kind": crop.kind,
                "width": image.shape[1], "height": image.shape[0], "image": encode_frames([image], self.cfg.image_format)[0],
                "image_format": self.cfg.image_format, "crop_box": [int(round(v * scale)) for v in crop.box],
                "detector": crop.detector, "score": crop.score, "phash": int(h), "dup_of": None,
                "transforms": self.transform_names, "config_hash": self.config_hash,
                # the window's layout (overlay | full_frame | unknown) and how sure it is, for SQL
                "layout": cam.kind, "layout_confidence": float(cam.confidence),
            })
        # Near-duplicates within the window, per kind, in time order: point at the kept frame.
        for indices in kept_by_kind.values():
            marks = mark_near_duplicates(hashes[indices], self.cfg.dedup_distance)
            for j, kept in zip(indices, marks):
                if kept is not None:
                    rows[j]["dup_of"] = rows[indices[kept]]["frame_id"]
        return rows

