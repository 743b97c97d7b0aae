"""Cut a live MPEG-TS byte stream into fixed-length segment files, without re-encoding.

PyAV demuxes the stream and remuxes the video stream and the first audio stream into one MPEG-TS
file per segment. A segment starts on a video keyframe, is written as `<final>.part`, and is
renamed to `<final>` only once it is closed and `probe` says it decodes, so a reader never sees a
half file (DESIGN.md, "Conventions"). A `.part` left by a killed process is recovered by `salvage`.

Live media misbehaves: damaged bytes, timestamp jumps, a new encoder with other PIDs or tracks,
replays of what was recorded already. None of it ends a run: each ends the segment it hits (kept
whole, `salvaged` or quarantined, never deleted) and recording goes on at the next keyframe.

The loop does no decoding and only a few attribute reads per packet: it runs for every channel
around the clock.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Callable

import av

from ..errors import CorruptMedia, StreamError
from ..media import media_errors, sha256_file
from ..layout import PART_SUFFIX, atomic_output
from .memory import CommitMemory, Mark
from .transport import TransportReader

__all__ = ["MEDIA_ERRORS", "MediaInfo", "CutSegment", "Segmenter", "keyframe_marks", "probe", "salvage"]

JUMP_S = 10.0  # a forward dts step larger than this is a discontinuity (HLS loop, ad break)
CUT_SLACK_S = 1e-3  # a keyframe this close to the target length still cuts (29.97 fps rounding)
# Low startup latency: find the streams from ~1 s of data instead of libavformat's 5 s / 5 MB.
_INPUT_OPTIONS = {"probesize": "1000000", "analyzeduration": "1000000"}
_MAX_FED = 300  # no frame after this many packets from a keyframe: not decodable
_MUXERS = {".ts": "mpegts", ".mp4": "mp4", ".mkv": "matroska", ".webm": "webm"}
# What bad media raises inside PyAV: FFmpeg errors subclass these builtins (EOFError for EOF).
MEDIA_ERRORS = media_errors()
MAX_DEMUX_ERRORS = 50  # in a row, without a good packet: the stream is not MPEG-TS any more
_NEXT_PROGRAM = "next program"  # a container ended where a new program begins


@dataclass(frozen=True)
class MediaInfo:
    duration_s: float  # media time covered by the video packets
    video_codec: str | None
    width: int | None
    height: int | None
    fps: float | None
    audio_codec: str | None
    packets: int  # video packets (= frames)


@dataclass(frozen=True)
class CutSegment:
    path: Path  # the final path (already renamed from .part)
    start: datetime  # UTC wall clock when the segment's first packet was read
    end: datetime  # UTC wall clock when it was closed
    info: MediaInfo
    bytes: int
    sha256: str
    status: str = "ok"  # or "salvaged": the whole packets before damage
    marks: tuple[Mark, ...] = ()  # its video keyframes
    media_sequence: int | None = None  # HLS media sequence of its last packet, when known


def _decodes(ctx: av.CodecContext, pkt: av.Packet | None) -> bool:
    """Feed one packet (None drains); whether a frame came out. A damaged packet is no frame."""
    try:
        return bool(ctx.decode(pkt))
    except MEDIA_ERRORS:
        return False


def _decodes_from(ctx: av.CodecContext, packets: list[av.Packet]) -> bool:
    """Whether `packets`, fed to a reset decoder, yield a frame."""
    ctx.flush_buffers()
    return any(_decodes(ctx, pkt) for pkt in [*packets, None])


def probe(path: Path) -> MediaInfo:
    """Verify a file decodes: demux every packet, decode the first frame and one from the last GOP.

    Raises CorruptMedia with a short reason. Cheap: a few decoded frames, whatever the length.
    """
    try:
        container = av.open(str(path))
    except MEDIA_ERRORS as e:
        raise CorruptMedia(f"unreadable container: {e}") from None
    with container:
        if not container.streams.video:
            raise CorruptMedia("no video stream")
        # MPEG-TS has no index or trailer: a cut-off file demuxes "fine", but files we write are
        # whole 188-byte TS packets, so a ragged size is the one cheap sign of truncation.
        size = os.path.getsize(path)
        if container.format.name == "mpegts" and size % 188:
            raise CorruptMedia(f"truncated: {size} bytes is not a whole number of TS packets")
        v = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        ctx = v.codec_context
        ctx.thread_count = 1  # a few frames: a thread pool costs more than it saves
        n = total = 0
        first = last = None  # video pts range, in v.time_base
        frame_ticks = 0  # one frame's duration, when the container says
        head = 0  # 0: no keyframe yet, 1: decoding from the first keyframe, 2: a frame came out
        fed = 0  # packets decoded looking for the first frame; capped so a bad file stays cheap
        gop: list[av.Packet] = []  # packets from the last keyframe on
        corrupt_tail = False
        try:
            for pkt in container.demux():
                if pkt.size == 0:
                    continue  # the demuxer's end-of-stream markers
                total += 1
                corrupt_tail = pkt.is_corrupt  # a short last PES: the file was cut off
                if pkt.stream_index != v.index:
                    continue
                n += 1
                ts = pkt.pts if pkt.pts is not None else pkt.dts
                if ts is not None:
                    first = ts if first is None or ts < first else first
                    last = ts if last is None or ts > last else last
                frame_ticks = pkt.duration or frame_ticks
                if pkt.is_keyframe:
                    gop = []
                    head = head or 1
                if head:
                    gop.append(pkt)
                if head == 1 and fed < _MAX_FED:
                    fed += 1
                    head = 2 if _decodes(ctx, pkt) else 1
        except MEDIA_ERRORS as e:
            raise CorruptMedia(f"truncated at packet {total}: {e}") from None
        if n == 0:
            raise CorruptMedia("no video packets")
        if corrupt_tail:
            raise CorruptMedia(f"truncated at packet {total}: incomplete last packet")
        if head == 0 or (head == 1 and not _decodes(ctx, None)) or not _decodes_from(ctx, gop):
            raise CorruptMedia("no decodable video frame")
        rate = v.average_rate or v.guessed_rate
        fps = float(rate) if rate else None
        if first is None:
            duration = n / fps if fps else 0.0
        else:  # pts span plus the last frame's own duration
            duration = float((last - first + frame_ticks) * v.time_base)
            if not frame_ticks and fps:
                duration += 1 / fps
        return MediaInfo(
            duration_s=duration,
            video_codec=ctx.name,
            width=ctx.width or None,
            height=ctx.height or None,
            fps=fps,
            audio_codec=audio.codec_context.name if audio is not None and audio.codec_context else None,
            packets=n,
        )


def _remux_whole_packets(src: Path, dst: Path, fmt: str) -> int:
    """Copy `src`'s video + first audio packets into `dst` from the first keyframe, keeping only
    packets known to be whole; return how many were written."""
    written = 0
    with av.open(str(src)) as inp:
        if not inp.streams.video:
            return 0
        streams = [inp.streams.video[0], *inp.streams.audio[:1]]
        vi = streams[0].index
        with av.open(str(dst), "w", format=fmt) as out:
            omap = {s.index: out.add_stream_from_template(s, opaque=True) for s in streams}
            held: dict[int, av.Packet] = {}  # each stream's newest packet: whole once another follows
            try:
                for pkt in inp.demux(*streams):
                    if pkt.is_corrupt:
                        break  # a damaged packet: the file was cut here
                    if pkt.size == 0 or pkt.dts is None:
                        continue  # end-of-stream markers, untimed packets
                    i = pkt.stream_index
                    if not held and (i != vi or not pkt.is_keyframe):
                        continue  # decoding starts at a keyframe
                    prev, held[i] = held.get(i), pkt
                    if prev is not None:
                        prev.stream = omap[i]
                        out.mux(prev)
                        written += 1
            except MEDIA_ERRORS:
                pass  # stop at the first demux or mux error; what came before is kept
    return written


def salvage(part: Path, dest: Path) -> MediaInfo | None:
    """Recover an unfinished `.part` left by a killed recorder into `dest`.

    Remuxes its whole packets from the first video keyframe (each stream's last packet may be cut
    off, so it is dropped), then probes the result. Returns its MediaInfo, or None (and no `dest`)
    when nothing decodable remains. Never raises for bad input.
    """
    dest = Path(dest)
    try:
        with atomic_output(dest) as tmp:
            if not _remux_whole_packets(Path(part), tmp, _MUXERS.get(dest.suffix, "mpegts")):
                raise CorruptMedia("no whole packets")
            return probe(tmp)  # raising here keeps `dest` from appearing
    except (CorruptMedia, *MEDIA_ERRORS):
        return None


def keyframe_marks(path: Path) -> list[Mark]:
    """The marks of a file's video keyframes (media sequence unknown): what recovery remembers."""
    with av.open(str(path)) as c:
        if not c.streams.video:
            return []
        return [_mark(pkt, pkt.pts if pkt.pts is not None else pkt.dts, None)
                for pkt in c.demux(c.streams.video[0]) if pkt.size and pkt.is_keyframe]


def _mark(pkt: av.Packet, pts: int, sequence: int | None) -> Mark:
    return Mark(f"{pts}:{hashlib.blake2b(pkt, digest_size=8).hexdigest()}", sequence)


class Segmenter:
    """Cuts one stream into segment files; one instance per channel, `run` once per connection.

    `segments`, `bytes_written`, `replayed`, `faults` and `current_path` are live counters other
    threads may read. With a `memory`, GOPs whose keyframe it has seen are skipped, not recorded
    again.
    """

    def __init__(self, path_for: Callable[[datetime], Path], segment_seconds: float,
                 on_segment: Callable[[CutSegment], None],
                 on_corrupt: Callable[[Path, str], None] | None = None,
                 memory: CommitMemory | None = None):
        if segment_seconds <= 0:
            raise ValueError("segment_seconds must be > 0")
        self.path_for = path_for
        self.segment_seconds = segment_seconds
        self.on_segment = on_segment
        self.on_corrupt = on_corrupt
        self.memory = memory
        self.segments = 0
        self.bytes_written = 0
        self.dropped = 0  # packets the muxer refused (repeated or broken timestamps)
        self.replayed = 0  # GOPs (or whole segments) skipped because they were committed before
        self.faults = 0  # demux/mux errors and program changes survived
        self.current_path: Path | None = None  # final path of the segment being written
        self._out: av.container.OutputContainer | None = None
        self._omap: dict[int, av.stream.Stream] = {}
        self._part: Path | None = None
        self._start: datetime | None = None
        self._marks: list[Mark] = []  # keyframes of the open segment
        self._muxed = 0  # packets written to the open segment
        self._last_pos = -1  # stream offset of the open segment's newest packet
        self._sequence_at: Callable[[int], int | None] | None = None
        self._fresh = False

    def run(self, stream: BinaryIO, stop: threading.Event, finish: threading.Event | None = None) -> str:
        """Record until stopped ("stopped"), the disk guard's `finish` ("finished") or EOF ("ended").

        A read error raises StreamError after committing the open segment. Closing `stream` from
        another thread after setting `stop` unblocks a pending read and counts as a clean stop.
        Bad media never ends the run: it ends the segment it hit, and recording goes on after it.
        `stream.sequence_at(offset)`, when there, gives the HLS media sequence of a byte.
        """
        finish = finish or threading.Event()
        self._fresh = False  # new media came on this connection: no later GOP is a replay
        src = TransportReader(stream)
        self._sequence_at = getattr(stream, "sequence_at", None)
        try:
            while (outcome := self._record(src, stop, finish)) == _NEXT_PROGRAM:
                pass
            return outcome
        finally:
            self._commit()  # after an unexpected error: the open segment is kept, never deleted

    def _record(self, src: TransportReader, stop: threading.Event, finish: threading.Event) -> str:
        try:
            inp = av.open(src, mode="r", format="mpegts", options=_INPUT_OPTIONS)
        except MEDIA_ERRORS as e:
            if stop.is_set():
                return "stopped"
            raise StreamError(f"stream dropped: {e}") from e
        try:
            return self._demux(inp, src, stop, finish)
        finally:
            inp.close()  # the reader stays open: the next program is read from it

    def _demux(self, inp: av.container.InputContainer, src: TransportReader, stop: threading.Event,
               finish: threading.Event) -> str:
        if not inp.streams.video:
            raise StreamError("stream has no video")
        v = inp.streams.video[0]
        streams = [v, *inp.streams.audio[:1]]  # other audio tracks, data and subtitles are dropped
        vi = v.index
        # Thresholds in each stream's own ticks, so the loop compares plain ints.
        jump = {s.index: int(JUMP_S / s.time_base) for s in streams}
        cut = (self.segment_seconds - CUT_SLACK_S) / v.time_base
        last: dict[int, int] = {}  # per stream, the last dts written to the open segment
        seg_start = 0  # pts of the open segment's first keyframe
        errors = 0  # demux errors since the last good packet
        packets = inp.demux(*streams)
        while True:
            try:
                pkt = next(packets)
            except StopIteration:
                break
            except (IndexError, KeyError):
                # Streams PyAV does not know appeared (a program change the reader did not see):
                # a fresh container from here on.
                self._commit()
                self.faults += 1
                src.restart_here()
                return _NEXT_PROGRAM
            except MEDIA_ERRORS as e:
                self._commit()
                if stop.is_set():
                    return "stopped"  # the caller closed the stream to unblock a read
                if src.error is not None or not isinstance(e, av.FFmpegError):
                    raise StreamError(f"stream dropped: {e}") from e
                # Bad bytes inside the stream: the segment they hit ends, the demuxer resyncs.
                self.faults += 1
                errors += 1
                if errors > MAX_DEMUX_ERRORS:
                    raise StreamError(f"stream dropped: {errors} demux errors in a row: {e}") from e
                last = {}
                packets = inp.demux(*streams)
                continue
            errors = 0
            if stop.is_set():
                break
            ts = pkt.dts
            if ts is None:
                ts = pkt.pts
                if ts is None:
                    continue  # end-of-stream markers; packets that cannot be placed in time
            i = pkt.stream_index
            if self._out is not None:
                prev = last.get(i)
                if prev is not None and not prev < ts <= prev + jump[i]:
                    if ts == prev:
                        self.dropped += 1  # a repeated timestamp: the muxer would refuse it
                        continue
                    # A discontinuity: no file may contain a time jump, so cut here and wait
                    # for the next keyframe (this packet may be it).
                    self._commit()
                    if finish.is_set():
                        return "finished"
            if self._out is None and finish.is_set():
                return "finished"  # nothing open to complete
            if i == vi and pkt.is_keyframe:
                pts = ts if pkt.pts is None else pkt.pts
                mark = self._keyframe_mark(pkt, pts, src)
                if self.memory is not None and not self._fresh and self.memory.seen(mark):
                    # Committed before (a reconnect's replay, a stalled playlist): skip this GOP.
                    # A replay only ever leads a connection (HLS resumes forward).
                    self._commit()
                    self.replayed += 1
                    if finish.is_set():
                        return "finished"
                    continue
                # Full length, or a media sequence gone back (an encoder restart): a new segment.
                went_back = self._marks and None not in (mark.sequence, self._marks[-1].sequence) \
                    and mark.sequence < self._marks[-1].sequence
                if self._out is not None and (pts - seg_start >= cut or went_back):
                    self._commit()
                    if finish.is_set():
                        return "finished"
                if self._out is None:
                    self._open(streams)
                    seg_start, last = pts, {}
                self._marks.append(mark)
                self._fresh = True
            elif self._out is None:
                continue  # before the first keyframe: undecodable
            last[i] = ts
            pos = pkt.pos  # read before muxing, which resets it
            pkt.stream = self._omap[i]
            try:
                self._out.mux(pkt)
            except ValueError:
                self.dropped += 1  # timestamps the muxer refuses: lose the packet, not the file
                continue
            except MEDIA_ERRORS:
                self._commit()  # the muxer failed: keep what it wrote, start again at a keyframe
                self.faults += 1
                continue
            self._muxed += 1
            if pos is not None and pos >= 0:
                self._last_pos = src.base + pos
        self._commit()
        if src.at_change and not stop.is_set():
            # A new program (another encoder: new PIDs or track count) starts here: its streams
            # need a container of their own.
            self.faults += 1
            src.next_program()
            return _NEXT_PROGRAM
        return "stopped" if stop.is_set() else "ended"

    def _keyframe_mark(self, pkt: av.Packet, pts: int, src: TransportReader) -> Mark:
        pos = pkt.pos
        seq = self._sequence_at(src.base + pos) if self._sequence_at and pos is not None and pos >= 0 else None
        return _mark(pkt, pts, seq)

    def _open(self, streams: list[av.stream.Stream]) -> None:
        self._start = datetime.now(timezone.utc)
        final = Path(self.path_for(self._start))
        self._part = final.with_name(final.name + PART_SUFFIX)
        self._part.parent.mkdir(parents=True, exist_ok=True)
        # The muxer otherwise holds up to 10 s of interleaving in memory and writes nothing until
        # close: a killed recorder would lose it all. Writing within ~1 s keeps the .part salvageable.
        self._out = av.open(str(self._part), "w", format="mpegts",
                            container_options={"max_interleave_delta": "1000000", "flush_packets": "1"})
        # opaque=True copies the decoder's parameters: no encoder for the codec is needed.
        self._omap = {s.index: self._out.add_stream_from_template(s, opaque=True) for s in streams}
        self._marks, self._muxed, self._last_pos = [], 0, -1
        self.current_path = final

    def _commit(self) -> None:
        """Close the open segment and publish it if it decodes; if not, publish what is whole of it
        (`salvaged`), or hand it to on_corrupt. A segment without a packet is no segment."""
        out, part, final, start, marks = self._out, self._part, self.current_path, self._start, self._marks
        if out is None:
            return
        self._out, self.current_path = None, None
        end = datetime.now(timezone.utc)
        try:
            out.close()
        except MEDIA_ERRORS:
            pass  # the probe below tells what the file holds
        if not self._muxed:
            part.unlink(missing_ok=True)
            return
        status = "ok"
        try:
            info = probe(part)
        except CorruptMedia as e:
            info = salvage(part, final)  # the whole packets before the damage
            if info is None:
                try:
                    if self.on_corrupt is not None:
                        self.on_corrupt(part, str(e))  # the caller quarantines it
                finally:
                    part.unlink(missing_ok=True)
                return
            part.unlink(missing_ok=True)
            status, part = "salvaged", final
            kept = {m.key for m in keyframe_marks(final)}
            marks = [m for m in marks if m.key in kept]
        with open(part, "rb") as f:
            os.fsync(f.fileno())  # durable before it becomes visible
        size, digest = part.stat().st_size, sha256_file(part)
        seq = self._sequence_at(self._last_pos) if self._sequence_at and self._last_pos >= 0 else None
        if self.memory is not None and self.memory.has_hash(digest, seq):
            part.unlink(missing_ok=True)  # these very bytes are committed already
            self.replayed += 1
            return
        if part != final:
            os.replace(part, final)
        self.segments += 1
        self.bytes_written += size
        self.on_segment(CutSegment(final, start, end, info, size, digest, status, tuple(marks), seq))
