"""Re-render a video frame by frame with a transform applied, keeping its audio.

One pass over the source: the driver demuxes video and audio, decodes video to RGB in chunks,
hands each chunk to `frame_fn` (inline, or as a Ray task), and encodes the results strictly in
source order with the source's own timestamps, so the output has the same frames at the same
pts. Audio packets are copied untouched (or re-encoded to AAC if MP4 cannot carry the codec) and
interleaved by time with the video. The file appears only when complete (`atomic_output`).

Only chunks of decoded frames travel through Ray's object store, never files, and a bounded
window of chunks is in flight, so memory stays flat whatever the video's length.
"""

from __future__ import annotations

import os
import time
from collections import deque
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import av
import numpy as np

from ..cluster import ray_env_defaults
from ..errors import CorruptMedia, UserError
from ..layout import atomic_output
from ..transforms import apply_chain, chain_specs_from_text, parse_chain
from .decode import MEDIA_ERRORS, open_video
from .person import PersonSegmenter

__all__ = ["check_output", "render"]

FrameFn = Callable[[np.ndarray], np.ndarray]
Chunk = tuple[list[np.ndarray], list[int]]  # RGB frames and their source pts
_STORE_SHARE = 0.5  # of Ray's object store, for chunks in flight (inputs and results)
_BT709 = 1  # AVCOL_SPC_BT709; anything else is treated as BT.601 (SMPTE 170M = 6)


def check_output(src: str | Path, dst: str | Path, protected: Iterable[Path] = ()) -> None:
    """Refuse an output that would replace the input (the same path, a hard link or a symlink to
    it) or land inside one of the `protected` folders (the storage root's raw/ and dataset/)."""
    src, dst = Path(src), Path(dst)
    target = dst.resolve()  # symlinks followed, also a dangling one
    if target == src.resolve() or (dst.exists() and src.exists() and os.path.samefile(src, dst)):
        raise UserError(f"{dst}: that is the input video itself (or a link to it); write the output to another file")
    if target.is_dir():
        raise UserError(f"{dst}: is a folder; give the output a file name, e.g. {dst / (src.stem + '-render.mp4')}")
    for folder in protected:
        if target.is_relative_to(folder.resolve()):
            raise UserError(f"{dst}: inside the storage root's {folder.name}/ folder, which stream2dataset owns; "
                            "write the output elsewhere")


def render(src: str | Path, dst: str | Path, frame_fn: FrameFn, *, chunk_frames: int = 256,
           parallel: bool = True, crf: int = 18, preset: str = "veryfast") -> dict:
    """Write `dst` (H.264 yuv420p MP4, +faststart): every frame of `src` passed through `frame_fn`.

    `frame_fn` maps one H x W x 3 uint8 RGB frame (read-only: copy before writing to it) to an
    RGB uint8 frame of one fixed size (even width and height) for all frames. Same frame count and
    timestamps as the source; the first audio stream is copied, or AAC-encoded when MP4 cannot
    hold its codec. `parallel` runs `frame_fn` in Ray tasks of `chunk_frames` frames (starting
    a local Ray if none is initialised; the caller shuts it down); the output is the same.

    Returns {"frames", "seconds" (wall), "fps" (frames rendered per wall second), "video_fps"
    (the source's rate), "audio": "copied" | "aac" | "none"}. Raises CorruptMedia if `src` does
    not open or decode, and whatever `frame_fn` raises; `dst` is then left untouched.
    """
    if chunk_frames < 1:
        raise ValueError("chunk_frames must be >= 1")
    check_output(src, dst)
    started = time.perf_counter()
    inp, v = open_video(src)
    with inp:
        a = inp.streams.audio[0] if inp.streams.audio else None
        run = _RayRunner(frame_fn) if parallel else _InlineRunner(frame_fn)
        with atomic_output(Path(dst)) as tmp:
            with av.open(str(tmp), "w", format="mp4", options=_mp4_options(v)) as out:
                writer = _Writer(out, v, a, crf, preset)
                chunks = _decode_chunks(inp, v, a, chunk_frames, writer.audio)
                for images, pts in run.ordered(chunks):
                    writer.video(images, pts)
                writer.close()
    rate = v.average_rate or v.guessed_rate
    seconds = time.perf_counter() - started
    return {"frames": writer.frames, "seconds": seconds, "fps": writer.frames / seconds,
            "video_fps": float(rate) if rate else None, "audio": writer.audio_mode}


def _mp4_options(v: av.video.stream.VideoStream) -> dict[str, str]:
    # The movie timescale (default 1/1000 s) places a stream that starts after 0 through an edit
    # list: in the source's own timescale the first pts, and with it every pts, stays exact.
    return {"movflags": "+faststart", "movie_timescale": str(v.time_base.denominator)}


def _decode_chunks(inp: av.container.InputContainer, v: av.video.stream.VideoStream,
                   a: av.audio.stream.AudioStream | None, chunk_frames: int,
                   on_audio: Callable[[av.Packet], None]) -> Iterator[Chunk]:
    """Yield (RGB frames, their source pts) in presentation order; audio goes to on_audio.

    Chunks are lists, not stacked arrays: stacking copies every frame once more for nothing.
    """
    v.thread_type = "AUTO"
    ctx = v.codec_context
    step = int(1 / (v.average_rate * v.time_base)) if v.average_rate else 1
    images: list[np.ndarray] = []
    pts: list[int] = []
    try:
        for packet in inp.demux(*([v, a] if a is not None else [v])):
            if packet.stream is not v:
                if packet.size:
                    on_audio(packet)
                continue
            for frame in ctx.decode(packet if packet.size else None):
                # A frame without pts (raw streams) takes the next slot after the previous one.
                pts.append(frame.pts if frame.pts is not None else (pts[-1] + step if pts else 0))
                images.append(frame.to_ndarray(format="rgb24"))
                if len(images) == chunk_frames:
                    yield images, pts
                    images, pts = [], []
    except MEDIA_ERRORS as e:
        raise CorruptMedia(f"decode error: {e}") from None
    if images:
        yield images, pts


def _apply(frame_fn: FrameFn, chunk: list[np.ndarray]) -> list[np.ndarray]:
    """frame_fn over a chunk, checking each result is an RGB uint8 frame of one size."""
    results = []
    for frame in chunk:
        img = np.asarray(frame_fn(frame))
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"frame_fn must return HxWx3 uint8 RGB, got {img.dtype} {img.shape}")
        if results and img.shape != results[0].shape:
            raise ValueError(f"frame_fn changed output size: {results[0].shape} then {img.shape}")
        results.append(img)
    return results


class _InlineRunner:
    def __init__(self, frame_fn: FrameFn):
        self.frame_fn = frame_fn

    def ordered(self, chunks: Iterable[Chunk]) -> Iterator[Chunk]:
        for images, pts in chunks:
            for image in images:
                image.flags.writeable = False  # as on Ray, where inputs are read-only shared memory
            yield _apply(self.frame_fn, images), pts


class _RayRunner:
    """Run chunks as Ray tasks; yield results in submission order through a bounded window."""

    def __init__(self, frame_fn: FrameFn):
        import ray


        if not ray.is_initialized():
            ray_env_defaults()
            ray.init(include_dashboard=False)
        self.ray = ray
        self.fn_ref = ray.put(frame_fn)  # pickled once, not once per task
        self.task = ray.remote(_apply)
        resources = ray.cluster_resources()
        self.cpus = max(1, int(resources.get("CPU", 1)))
        self.store_bytes = resources.get("object_store_memory", 2 << 30)

    def ordered(self, chunks: Iterable[Chunk]) -> Iterator[Chunk]:
        ray = self.ray
        window: deque[tuple[Any, list[int]]] = deque()
        limit = 0
        try:
            for images, pts in chunks:
                if not limit:  # 2 x CPUs keeps workers busy; the store bounds big chunks
                    chunk_bytes = sum(i.nbytes for i in images)
                    fits = int(self.store_bytes * _STORE_SHARE / (2 * chunk_bytes))
                    limit = max(2, min(2 * self.cpus, fits))
                window.append((self.task.remote(self.fn_ref, ray.put(images)), pts))
                del images  # the object store holds it now; keep the driver's memory flat
                if len(window) >= limit:
                    ref, pts = window.popleft()
                    yield ray.get(ref), pts  # waits on the oldest: later ones may finish first
            while window:
                ref, pts = window.popleft()
                yield ray.get(ref), pts
        finally:
            for ref, _ in window:  # an error or an abandoned render: stop the rest
                ray.cancel(ref)


class _Writer:
    """Encode transformed frames with the source's pts; interleave audio packets by time."""

    def __init__(self, out: av.container.OutputContainer, v: av.video.stream.VideoStream,
                 a: av.audio.stream.AudioStream | None, crf: int, preset: str):
        self.out, self.v, self.a, self.crf, self.preset = out, v, a, crf, preset
        self.vs: av.video.stream.VideoStream | None = None  # added at the first frame: its size
        self.as_: av.stream.Stream | None = None
        self.audio_mode = "none" if a is None else ("copied" if self._can_copy(a) else "aac")
        self.decoder = None if self.audio_mode != "aac" else a.codec_context
        self.queue: deque[av.Packet] = deque()  # audio waiting for the video to catch up
        self._pending_aac: list[av.AudioFrame] = []  # decoded before the output streams exist
        self.video_time = Fraction(-1)  # seconds of the last video packet muxed
        self.frames = 0
        self.shape: tuple[int, ...] | None = None

    def _can_copy(self, a: av.audio.stream.AudioStream) -> bool:
        return a.codec_context is not None and a.codec_context.name in self.out.supported_codecs

    def _open(self, height: int, width: int) -> None:
        if height % 2 or width % 2:
            raise ValueError(f"yuv420p needs even frame sizes; frame_fn gave {width}x{height}")
        vs = self.out.add_stream("libx264", rate=self.v.average_rate or self.v.guessed_rate or 25)
        cc = vs.codec_context
        cc.width, cc.height, cc.pix_fmt = width, height, "yuv420p"
        cc.time_base = vs.time_base = self.v.time_base  # the source's pts go through unchanged
        bt709 = self.v.codec_context.colorspace == _BT709
        self.colorspace = "ITU709" if bt709 else "ITU601"
        cc.colorspace, cc.color_range = (_BT709 if bt709 else 6), 1  # tag what we convert with
        cc.options = {"crf": str(self.crf), "preset": self.preset}
        self.vs = vs
        if self.a is not None:
            if self.audio_mode == "copied":
                self.as_ = self.out.add_stream_from_template(self.a, opaque=True)
            else:
                self.as_ = self.out.add_stream("aac", rate=self.a.codec_context.sample_rate)
                self.as_.codec_context.layout = self.a.codec_context.layout
        self.shape = (height, width, 3)

    def video(self, images: list[np.ndarray], pts: list[int]) -> None:
        if self.vs is None:
            self._open(*images[0].shape[:2])
        if images[0].shape != self.shape:
            raise ValueError(f"frame_fn changed output size: {self.shape} then {images[0].shape}")
        for img, p in zip(images, pts):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame = frame.reformat(format="yuv420p", dst_colorspace=self.colorspace)
            frame.pts, frame.time_base = p, self.v.time_base
            self._mux_video(self.vs.encode(frame))
            self.frames += 1

    def audio(self, packet: av.Packet) -> None:
        if self.decoder is None:
            self.queue.append(packet)
        else:
            for frame in self.decoder.decode(packet):
                if self.vs is None:
                    self._pending_aac.append(frame)
                else:
                    self.queue.extend(self.as_.encode(frame))
        self._flush_audio()

    def _mux_video(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            self.out.mux(packet)
            if packet.dts is not None:
                self.video_time = packet.dts * packet.time_base
        self._flush_audio()

    def _flush_audio(self, everything: bool = False) -> None:
        if self.vs is None:
            return  # streams not added yet: the header cannot be written
        if self.decoder is not None and self._pending_aac:
            for frame in self._pending_aac:
                self.queue.extend(self.as_.encode(frame))
            self._pending_aac = []
        while self.queue and (everything or self._time(self.queue[0]) <= self.video_time):
            packet = self.queue.popleft()
            packet.stream = self.as_
            self.out.mux(packet)

    @staticmethod
    def _time(packet: av.Packet) -> Fraction:
        ts = packet.dts if packet.dts is not None else packet.pts
        return Fraction(-1) if ts is None else ts * packet.time_base

    def close(self) -> None:
        if self.vs is None:
            raise CorruptMedia("no video frames decoded")
        self._mux_video(self.vs.encode(None))
        if self.decoder is not None:
            for frame in self.decoder.decode(None):
                self.queue.extend(self.as_.encode(frame))
            self.queue.extend(self.as_.encode(None))
        self._flush_audio(everything=True)


PERSON_STEPS = ("silhouette", "person_cutout")


class FrameChain:
    """A picklable `frame_fn` for `render`: optional person segmentation, then a transform chain.

    `silhouette` (white person on black) or `person_cutout` (person on a removed background) may
    lead the chain; the segmenter loads lazily, once per worker process. RGBA results are laid
    over black, since video has no alpha.
    """

    def __init__(self, text: str, person_threshold: float = 0.5):

        specs = chain_specs_from_text(text)
        self.person = specs.pop(0) if specs and specs[0] in PERSON_STEPS else None
        self.steps = parse_chain(specs)  # raises ValueError naming the step and parameter
        self.threshold = person_threshold
        self._segmenter = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_segmenter": None}  # mediapipe objects don't pickle: reload there

    def __call__(self, frame: np.ndarray) -> np.ndarray:

        image = frame
        if self.person:
            if self._segmenter is None:

                self._segmenter = PersonSegmenter()
            alpha = ((self._segmenter.mask(frame) >= self.threshold) * 255).astype(np.uint8)
            image = np.repeat(alpha[..., None], 3, axis=2) if self.person == "silhouette" else \
                np.dstack([frame * (alpha[..., None] > 0), alpha])
        out = apply_chain(self.steps, image[None])[0]
        if out.shape[2] == 4:
            out = (out[..., :3] * (out[..., 3:] / 255.0)).astype(np.uint8)
        h, w = out.shape[:2]
        return np.ascontiguousarray(out[: h - h % 2, : w - w % 2])  # H.264 yuv420p needs even sides
