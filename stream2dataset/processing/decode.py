"""Sample frames from a video file for the dataset (PyAV, one decode pass, no temp files).

Decode is the processing bottleneck (DESIGN.md, "Measured anchors"), so this module spends as
little as possible beyond it: frames that are not sampled are never converted to RGB, sampled
frames are scaled and converted in one swscale call (a full-size RGB frame is never made), and
`keyframes_only` tells the decoder to skip every non-key frame instead of decoding and dropping it.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from ..errors import CorruptMedia
from ..media import media_errors

__all__ = ["MEDIA_ERRORS", "SampledFrame", "open_video", "sample_frames", "video_info", "scaled_size"]

# What bad media raises inside PyAV: FFmpeg errors subclass these builtins (EOFError for EOF).
MEDIA_ERRORS = media_errors()
_EPS = 1e-6  # seconds: pts * time_base lands a hair before a tick in floating point


@dataclass(frozen=True)
class SampledFrame:
    frame_index: int  # index among the source's frames in presentation order (see sample_frames)
    pts_s: float  # seconds from the stream's start
    image: np.ndarray  # H x W x 3 uint8 RGB


def scaled_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(w, h) with the longest side <= max_side, aspect kept, both even; unchanged if it fits."""
    if max_side is None or max(width, height) <= max_side:
        return width, height
    if max_side < 2:
        raise ValueError("max_side must be >= 2")
    scale = max_side / max(width, height)
    even = lambda x: max(2, int(x * scale) // 2 * 2)  # noqa: E731 - floor keeps it <= max_side
    return even(width), even(height)


def open_video(path: str | Path) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """The container and its first video stream; CorruptMedia if it does not open or has none."""
    try:
        container = av.open(str(path))
    except MEDIA_ERRORS as e:
        raise CorruptMedia(f"unreadable container: {e}") from None
    if not container.streams.video:
        container.close()
        raise CorruptMedia("no video stream")
    return container, container.streams.video[0]


def _rate(stream: av.video.stream.VideoStream) -> float | None:
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else None


def video_info(path: str | Path) -> dict:
    """Container-level facts, read from headers only (no decoding).

    Returns duration_s, fps, width, height, frames (the container's count, else duration x fps:
    an estimate), has_audio. Raises CorruptMedia if the file does not open or has no video.
    """
    container, v = open_video(path)
    with container:
        fps = _rate(v)
        if v.duration is not None:
            duration = float(v.duration * v.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        frames = v.frames or (round(duration * fps) if fps else 0)
        return {"duration_s": duration, "fps": fps, "width": v.codec_context.width,
                "height": v.codec_context.height, "frames": int(frames),
                "has_audio": bool(container.streams.audio)}


def sample_frames(path: str | Path, fps: float | None = 1.0, keyframes_only: bool = False,
                  max_side: int | None = None, start_s: float = 0.0,
                  end_s: float | None = None, threads: int = 0) -> Iterator[SampledFrame]:
    """Yield frames of `path`'s first video stream, sampled at `fps`, as RGB arrays.

    - `fps`: one frame per 1/fps seconds: the first frame at or after each tick k/fps
      (k = 0, 1, ...; by pts) in the window. None: every decoded frame.
    - `keyframes_only`: the decoder skips non-key frames entirely (~10x cheaper); `fps` then
      samples among keyframes.
    - With `fps`, a non-reference frame (no other frame is decoded from it: most B-frames) that
      lies before the next tick is not decoded at all: it could not be sampled (39% less decode
      CPU on x264's default B-frames at 30 fps sampled at 1 fps; the same frames come out).
    - `max_side`: scale so the longest side is <= max_side (even dimensions), inside the
      conversion to RGB.
    - `start_s` / `end_s`: seconds from the stream start; frames with start_s <= pts < end_s.
    - `threads`: FFmpeg decode threads; 0 lets FFmpeg choose (frame + slice threads).

    `pts_s` counts from the stream's first timestamp. `frame_index` is exact (counted) when every
    frame from the stream start is decoded (fps None); after a seek (start_s > 0), when frames are
    skipped (fps) or with keyframes_only it is estimated as round(pts_s x average frame rate),
    which equals the count for constant-rate video.

    Errors (the contract callers rely on): a file that does not open or has no video stream
    raises CorruptMedia here, before any iteration. A demux or decode error, a damaged packet or a
    damaged frame mid-file ends the iteration: the good frames before it have been yielded, then
    CorruptMedia is raised with the reason and "N good frames" (N counts decoded frames, sampled
    or not), so the caller can keep what it got and quarantine the file.
    """
    if fps is not None and fps <= 0:
        raise ValueError("fps must be > 0 or None")
    container, v = open_video(path)  # eager, so a bad file fails at the call, not at the first next()
    # MPEG-TS has no index: a cut-off file demuxes "fine" and its partial last frame may even
    # decode; a size that is not whole 188-byte TS packets is the cheap sign (as ingest.probe).
    ragged = container.format.name == "mpegts" and os.path.getsize(path) % 188 != 0
    if threads != 1:  # frame + slice threads: lower latency, ~20% more CPU per frame (bench)
        v.thread_type = "AUTO"
        v.codec_context.thread_count = threads
    return _sample(container, v, fps, keyframes_only, max_side, start_s, end_s, ragged)


def _seek_before(container: av.container.InputContainer, v: av.video.stream.VideoStream, start_s: float) -> None:
    """Seek to a keyframe at or before `start_s`.

    MPEG-TS has no index: FFmpeg's seek can land on the keyframe after the target (measured: a
    window meant to start at 60 s began at 62 s, losing 2 frames a minute). So read packets to the
    first keyframe (cheap: no decoding) and step further back until it is not past `start_s`."""
    base, back = v.start_time or 0, 0.0
    while True:
        target = base + int((start_s - back) / v.time_base)
        if target <= base:  # even a seek to the first timestamp can land past the first keyframe;
            container.seek(min(0, base), stream=v, backward=True, any_frame=False)  # one before it cannot
            return
        container.seek(target, stream=v, backward=True, any_frame=False)
        key = next((p for p in container.demux(v) if p.pts is not None and p.is_keyframe), None)
        if key is not None and (key.pts - base) * v.time_base <= start_s + _EPS:
            container.seek(target, stream=v, backward=True, any_frame=False)
            return
        back = max(1.0, back * 2)


def _sample(container: av.container.InputContainer, v: av.video.stream.VideoStream,
            fps: float | None, keyframes_only: bool, max_side: int | None, start_s: float,
            end_s: float | None, ragged: bool) -> Iterator[SampledFrame]:
    with container:
        ctx = v.codec_context
        if keyframes_only:
            ctx.skip_frame = "NONKEY"  # the decoder drops non-key packets before decoding them
        if start_s > 0:  # to the keyframe at or before start_s; earlier frames are dropped
            _seek_before(container, v, start_s)
        pick = _Picker(v, fps, max_side, start_s, end_s,
                       exact_index=not keyframes_only and start_s <= 0 and fps is None)
        skipping = fps is not None and not keyframes_only
        problems: list[str] = []  # why the packets stopped early, if they did
        reason = None
        # The trailing None drains the decoder: frame threads and B-frames hold frames back.
        for packet in itertools.chain(_whole_packets(container, v, problems, ragged), [None]):
            if skipping and packet is not None and packet.pts is not None:
                # Before the next tick a frame is never sampled; next_tick only grows, so this holds.
                skip = "NONREF" if pick.seconds(packet.pts) < pick.next_tick - _EPS else "DEFAULT"
                if ctx.skip_frame != skip:
                    ctx.skip_frame = skip
            try:
                pending = _decode(ctx, packet)
            except _Broken as b:
                reason, pending = b.reason, b.frames
            except MEDIA_ERRORS as e:
                reason = f"decode error: {e}"
                try:  # keep the good frames the decoder still holds
                    pending = _decode(ctx, None)
                except (_Broken, *MEDIA_ERRORS):
                    pending = []
            for frame in pending:
                if pick.past_end(frame):
                    return
                if (sample := pick.take(frame)) is not None:
                    yield sample
            if reason is not None:
                break
        reason = reason or (problems[0] if problems else None)
        if reason is None and not pick.good:
            reason = "no frame decoded"
        if reason is not None:
            raise CorruptMedia(f"{reason} after {pick.good} good frames")


class _Picker:
    """Chooses the sampled frames among the decoded ones; converts only those to RGB."""

    def __init__(self, v: av.video.stream.VideoStream, fps: float | None, max_side: int | None,
                 start_s: float, end_s: float | None, exact_index: bool):
        self.tb, self.t0, self.rate = v.time_base, v.start_time or 0, _rate(v)
        self.fps, self.start_s, self.end_s, self.exact_index = fps, start_s, end_s, exact_index
        w, h = v.codec_context.width, v.codec_context.height
        out_w, out_h = scaled_size(w, h, max_side)
        self.size = {} if (out_w, out_h) == (w, h) else {"width": out_w, "height": out_h}
        self.good = 0  # frames decoded cleanly (sampled or not)
        # Ticks sit at k/fps from the stream start, not from start_s, so a file sampled in
        # pieces (start_s/end_s windows) gives the same frames as one pass over it.
        self.next_tick = math.ceil(start_s * fps - _EPS) / fps if fps else start_s

    def seconds(self, pts: int) -> float:
        return float((pts - self.t0) * self.tb)

    def _seconds(self, frame: av.VideoFrame) -> float:
        return self.seconds(frame.pts)

    def past_end(self, frame: av.VideoFrame) -> bool:
        return (self.end_s is not None and frame.pts is not None
                and self._seconds(frame) >= self.end_s - _EPS)

    def take(self, frame: av.VideoFrame) -> SampledFrame | None:
        self.good += 1
        if frame.pts is None:
            return None  # cannot be placed in time
        pts_s = self._seconds(frame)
        if pts_s < self.start_s - _EPS or (self.fps and pts_s < self.next_tick - _EPS):
            return None
        if self.fps:  # the next tick strictly after this frame
            self.next_tick = (math.floor(pts_s * self.fps + _EPS) + 1) / self.fps
        index = self.good - 1
        if not self.exact_index and self.rate:
            index = round(pts_s * self.rate)
        # One swscale pass: scale + yuv->rgb; only sampled frames pay for it.
        image = frame.to_ndarray(format="rgb24", interpolation="AREA", **self.size)
        return SampledFrame(index, pts_s, image)


def _decode(ctx: av.CodecContext, packet: av.Packet | None) -> list[av.VideoFrame]:
    """Decode one packet (None drains); a damaged frame raises _Broken with the good ones."""
    frames = ctx.decode(packet)
    for i, frame in enumerate(frames):
        if frame.is_corrupt:  # e.g. the cut-off last frame of a truncated TS file
            raise _Broken("damaged frame", frames[:i])
    return frames


def _whole_packets(container: av.container.InputContainer, v: av.video.stream.VideoStream,
                   problems: list[str], ragged: bool) -> Iterator[av.Packet]:
    """`v`'s packets, stopping before a damaged one; each is held until the next one arrives,
    so that in a cut-off (`ragged`) MPEG-TS file the last, partial packet can be dropped."""
    held = None
    packets = container.demux(v)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except MEDIA_ERRORS as e:
            problems.append(f"demux error: {e}")
            break
        if packet.size == 0:
            continue  # the demuxer's end-of-stream marker: the caller drains once, with None
        if packet.is_corrupt:
            problems.append("damaged packet")
            break
        if held is not None:
            yield held
        held = packet
    if ragged and not problems:
        problems.append("truncated: the last MPEG-TS packet is cut off")
    elif held is not None:
        yield held


class _Broken(Exception):
    """A damaged frame came out of the decoder; `frames` are the good ones before it."""

    def __init__(self, reason: str, frames: list[av.VideoFrame]):
        super().__init__(reason)
        self.reason, self.frames = reason, frames
