"""HLS media sequences through streamlink (imported lazily by `_streamlink` only).

streamlink's HLS reader hands out bytes and forgets where they came from. Subclasses of whatever
reader a plugin uses (HLSStream's, Twitch's) add three things the recorder needs:

- `sequence_at(offset)`: the media sequence number of the segment a byte of the output came from,
  so committed keyframes are remembered by segment and a replay is told from a rerun;
- resuming: a connection starts at the segment of the last committed media when the playlist still
  has it (streamlink would start three segments behind the live edge, dropping the gap);
- media-sequence resets: after an encoder restart the numbers start again low, and streamlink
  8.6.3 (`HLSStreamWorker.valid_segment`: `num >= sequence`) would wait until they pass the old
  ones; a playlist wholly behind by more than its own length is read as a restart instead.
"""

from __future__ import annotations

import bisect
import logging
import threading
from functools import lru_cache
from typing import Iterator

log = logging.getLogger(__name__)

_KEEP = 1024  # segment boundaries remembered: the segmenter asks about recent bytes only


class SequenceMap:
    """Byte offsets of the output where each segment's bytes begin."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._starts: list[int] = []
        self._nums: list[int] = []
        self.written = 0

    def begin(self, num: int) -> None:
        with self._lock:
            self._starts.append(self.written)
            self._nums.append(num)
            if len(self._starts) > 2 * _KEEP:
                del self._starts[:_KEEP], self._nums[:_KEEP]

    def count(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.written += len(chunk)
            yield chunk

    def at(self, offset: int) -> int | None:
        with self._lock:
            i = bisect.bisect_right(self._starts, offset) - 1
            return self._nums[i] if i >= 0 else None


def start_sequence(resume: int | None, first: int, last: int, default: int) -> int:
    """Where a new connection starts: at the last committed segment (its committed keyframes are
    skipped), or, when the playlist no longer has it, at the oldest segment still there."""
    if resume is None:
        return default
    return resume if first <= resume <= last else first


@lru_cache(maxsize=None)
def tracking_reader(base: type) -> type:
    """`base` (an HLSStreamReader class) with media sequences, resuming and restarts."""

    class Worker(base.__worker__):
        def process_segments(self, playlist) -> None:
            segments = playlist.segments
            first, last = segments[0].num, segments[-1].num
            fresh = self.sequence < 0
            restarted = not fresh and last < self.sequence - 1 - len(segments)
            super().process_segments(playlist)
            if restarted:
                log.warning("media sequence went back from %d to %d-%d: the encoder restarted",
                            self.sequence, first, last)
                self.sequence = first
            elif fresh and self.playlist_end is None:
                self.sequence = start_sequence(self.reader.resume, first, last, self.sequence)

    class Writer(base.__writer__):
        def write(self, segment, result, *data) -> None:
            self.reader.sequences.begin(segment.num)
            super().write(segment, result, *data)

        def _write_into_buffer(self, iterator) -> None:
            super()._write_into_buffer(self.reader.sequences.count(iterator))

    class Reader(base):
        __worker__ = Worker
        __writer__ = Writer

        def __init__(self, stream, *args, **kwargs) -> None:
            self.sequences = SequenceMap()
            self.resume: int | None = getattr(stream, "s2d_resume", None)
            super().__init__(stream, *args, **kwargs)

        def sequence_at(self, offset: int) -> int | None:
            return self.sequences.at(offset)

        @property
        def finished(self) -> bool:
            """The playlist was closed (ENDLIST): the broadcast ended, it did not stall."""
            return self.worker.playlist_end is not None

    Reader.__name__ = Reader.__qualname__ = f"Tracking{base.__name__}"
    return Reader


def open_tracked(stream, resume: int | None):
    """Open a streamlink stream; an HLS one through `tracking_reader` (others as they are)."""
    from streamlink.stream.hls import HLSStream

    if isinstance(stream, HLSStream):
        stream.s2d_resume = resume
        stream.__reader__ = tracking_reader(type(stream).__reader__)  # this instance only
    return stream.open()
