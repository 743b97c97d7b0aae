"""The live MPEG-TS byte stream as PyAV reads it: byte offsets, and one program layout at a time.

PyAV fixes a container's streams when it opens it. When the stream's program changes mid-stream
(another encoder after a restart: new PIDs, another track count), libavformat adds streams PyAV
does not know, and `demux` raises IndexError or silently drops their packets. So this reader
watches the PAT and PMT tables (CRC-checked, so garbage cannot fake them) as bytes pass, and at a
new layout it ends the current container with EOF exactly where the new program begins; the
segmenter then opens a fresh container on the same reader, which goes on from there. Nothing of
either program is lost or read twice.
"""

from __future__ import annotations

import io
import re
from functools import lru_cache
from typing import BinaryIO

TS_PACKET = 188
_PAT = re.compile(rb"\x47[\x40\x60]\x00")  # sync, payload-unit-start, PID 0
_TAIL = TS_PACKET - 1  # bytes held back: the start of a table packet not fully read yet
_PAT_BEFORE_PMT = 8 * TS_PACKET  # a PAT this close before a new PMT belongs to the new program


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i << 24
        for _ in range(8):
            c = ((c << 1) ^ 0x04C11DB7) if c & 0x80000000 else c << 1
        table.append(c & 0xFFFFFFFF)
    return table


_CRC = _crc_table()


def _crc32_mpeg(data: bytes) -> int:
    """CRC-32/MPEG-2; a section followed by its own CRC gives 0."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC[((crc >> 24) ^ b) & 0xFF]
    return crc


def psi_section(packet: bytes | bytearray | memoryview) -> bytes | None:
    """The table section starting in one TS packet, if it is whole and its CRC checks."""
    afc = (packet[3] >> 4) & 3
    if not afc & 1:
        return None  # no payload
    p = 4 + (1 + packet[4] if afc & 2 else 0)
    if p >= TS_PACKET:
        return None
    p += 1 + packet[p]  # pointer field
    if p + 3 > TS_PACKET:
        return None
    end = p + 3 + (((packet[p + 1] & 0x0F) << 8) | packet[p + 2])
    if end > TS_PACKET or end - p < 12:
        return None  # sections spanning several packets are left to the demuxer
    section = bytes(packet[p:end])
    return section if _crc32_mpeg(section) == 0 else None


def pmt_pid(pat: bytes) -> int | None:
    """The PMT PID of the first program a PAT section lists."""
    if pat[0] != 0x00:
        return None
    for i in range(8, len(pat) - 4 - 3, 4):
        if (pat[i] << 8) | pat[i + 1]:  # program 0 is the network PID
            return ((pat[i + 2] & 0x1F) << 8) | pat[i + 3]
    return None


def pmt_streams(pmt: bytes) -> tuple[tuple[int, int], ...] | None:
    """(stream type, PID) of each elementary stream a PMT section lists, sorted."""
    if pmt[0] != 0x02:
        return None
    i = 12 + (((pmt[10] & 0x0F) << 8) | pmt[11])
    out = []
    while i + 5 <= len(pmt) - 4:
        out.append((pmt[i], ((pmt[i + 1] & 0x1F) << 8) | pmt[i + 2]))
        i += 5 + (((pmt[i + 3] & 0x0F) << 8) | pmt[i + 4])
    return tuple(sorted(out))


@lru_cache(maxsize=64)
def _pmt_pattern(pid: int) -> re.Pattern:
    """Sync, payload-unit-start (with or without priority), the PMT's PID."""
    hi, lo = pid >> 8, pid & 0xFF
    return re.compile(b"\\x47[" + re.escape(bytes([0x40 | hi])) + re.escape(bytes([0x60 | hi])) + b"]"
                      + re.escape(bytes([lo])))


class TransportReader(io.RawIOBase):
    """A readable for `av.open` over a live stream (`read(n)`), split at program changes.

    `offset` counts the bytes handed out; `base` is the offset where the current container's bytes
    began, so a packet's place in the whole stream is `base + packet.pos`. `error` keeps what the
    underlying stream raised (a network error, unlike bad data inside the stream).
    """

    def __init__(self, stream: BinaryIO, chunk: int = 1 << 16):
        self._stream = stream
        self._chunk = chunk
        self._buf = bytearray()  # read, not handed out yet; starts at `offset`
        self._scanned = 0  # bytes of _buf searched for tables
        self._eof = False
        self.offset = 0
        self.base = 0
        self.error: BaseException | None = None
        self.changes = 0  # program layouts after the first
        self._pmt_pid: int | None = None
        self._layout: tuple | None = None  # (PMT PID, streams) of the container being read
        self._last_pat: tuple[int, bytes] | None = None  # offset and bytes of the newest PAT packet
        self._cut: int | None = None  # offset where the next layout starts: EOF for this container
        self._prefix = b""  # a PAT already handed out, given again to the next container

    # ------------------------------------------------------------------ io.RawIOBase
    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while True:
            limit = len(self._buf) if self._eof else len(self._buf) - _TAIL
            if self._cut is not None:
                limit = min(limit, self._cut - self.offset)
            if limit > 0 or self._cut is not None or (self._eof and not self._buf):
                break
            self._fill()
        n = max(0, min(len(buffer), limit))
        buffer[:n] = self._buf[:n]
        del self._buf[:n]
        self._scanned = max(0, self._scanned - n)
        self.offset += n
        return n  # 0: end of stream, or of this program

    # ------------------------------------------------------------------ program changes
    @property
    def at_change(self) -> bool:
        """The current container has read up to a new program layout."""
        return self._cut is not None and self.offset >= self._cut

    def next_program(self) -> None:
        """Let the next container read from where the new layout begins."""
        assert self.at_change
        self._cut = None
        if self._prefix:  # the new program's PAT went out already: the next container needs it
            self._buf[:0] = self._prefix
            self._scanned += len(self._prefix)
            self.offset -= len(self._prefix)
            self._prefix = b""
        self.base = self.offset
        self._scan()

    def restart_here(self) -> None:
        """A fresh container from the current position (after the demuxer gave up on this one)."""
        self.base = self.offset

    # ------------------------------------------------------------------ internals
    def _fill(self) -> None:
        try:
            data = self._stream.read(self._chunk)
        except BaseException as e:
            self.error = e
            raise
        if not data:
            self._eof = True
        self._buf += data
        self._scan()

    def _scan(self) -> None:
        """Look for PAT and PMT packets in the new bytes; a changed layout sets the cut."""
        end = len(self._buf) if self._eof else len(self._buf) - _TAIL
        pos = self._scanned
        while self._cut is None and pos < end:
            pmt = _pmt_pattern(self._pmt_pid) if self._pmt_pid is not None else None
            hits = [m.start() for m in (_PAT.search(self._buf, pos, end), pmt and pmt.search(self._buf, pos, end)) if m]
            if not hits:
                break
            at = min(hits)
            pos = at + 1
            if at + TS_PACKET > len(self._buf):
                pos = at  # not whole yet: look again when more bytes came
                break
            packet = memoryview(self._buf)[at:at + TS_PACKET]
            section = psi_section(packet)
            if section is None:
                continue
            if section[0] == 0x00:
                self._pmt_pid = pmt_pid(section) or self._pmt_pid
                self._last_pat = (self.offset + at, bytes(packet))
            elif section[0] == 0x02 and (streams := pmt_streams(section)) is not None:
                self._note_layout((self._pmt_pid, streams), self.offset + at)
            pos = at + TS_PACKET
        self._scanned = max(self._scanned, min(pos, end))

    def _note_layout(self, layout: tuple, at: int) -> None:
        if self._layout is None:
            self._layout = layout
            return
        if layout == self._layout:
            return
        self._layout = layout
        self.changes += 1
        pat_at, pat = self._last_pat if self._last_pat else (at, b"")
        if self.offset <= pat_at and at - pat_at <= _PAT_BEFORE_PMT:
            self._cut = pat_at  # the new program's PAT, not handed out yet: start there
        else:  # the old container had the PAT (or there was none just before): cut at the PMT
            self._cut, self._prefix = at, pat
