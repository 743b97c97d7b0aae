"""One channel's recorder: a loop of poll → record → commit, with backoff and a disk guard.

`ChannelRecorder` is a plain class (the `record` command runs it in the foreground); the service
runs it as a named Ray actor that Ray restarts when it dies. A restart calls `__init__` again,
which first recovers what the dead incarnation left: unfinished `.part` files are trimmed to their
last whole packet and committed, or quarantined; committed files missing their manifest row get
one. So no completed segment is ever lost or written twice.

Media is never recorded twice either: the channel's `CommitMemory` (memory.py) outlives
connections and restarts, a reconnect resumes at the last committed media sequence, and what the
source replays is skipped. A connection that brought only replayed media is a stalled source:
state `stalled`, with backoff. Errors of the media path back off; they never end the recorder.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path


from .. import metrics
from ..config import Config
from ..dataset import manifest, read_frame_column, thumbnail_row, write_frames
from ..errors import CorruptMedia, StreamError
from ..layout import PART_SUFFIX, Storage
from .memory import CommitMemory, Mark
from .platforms import adapter_for
from .recovery import recover_channel
from ..media import sha256_file
from .segments import MEDIA_ERRORS, CutSegment, MediaInfo, Segmenter, keyframe_marks, probe

log = logging.getLogger(__name__)

THUMBNAIL_BATCH = 64


def _now() -> datetime:
    return datetime.now(timezone.utc)


class ChannelRecorder:
    """Records one channel until `stop()`; `status()` is safe to call from any thread."""

    DISK_CHECK_S = 5.0  # how often the disk guard looks at free space while recording

    def __init__(self, config: Config, channel_name: str, start: bool = True):
        self.config = config
        self.channel = config.channel(channel_name)
        self.settings = self.channel.settings(config.recording)
        self.storage = Storage.of(config)
        self.config_hash = self.storage.save_config(config)
        self.adapter = adapter_for(self.channel, self.settings)
        self._stop = threading.Event()
        self._finish = threading.Event()  # disk guard: finish the open segment, then pause
        self._stream = None
        self._segmenter: Segmenter | None = None
        self._lock = threading.Lock()
        self._state = {"state": "starting", "since": _now(), "detail": "", "last_error": ""}
        self._totals = self._manifest_totals()
        self._recorded = 0  # segments committed by this recorder (the totals count all of them)
        self._replayed = 0  # GOPs skipped because they were committed before
        live = self.channel.mode == "live"
        self.memory = CommitMemory.load(self.storage, self.channel.name) if live else None
        self.recovered = self.recover()
        self._recorded = 0  # what recovery committed was recorded by an earlier run
        self._thread = threading.Thread(target=self._run, name=f"rec-{channel_name}", daemon=True)
        if start:
            self._thread.start()

    # ------------------------------------------------------------------ public surface
    def status(self) -> dict:
        with self._lock:
            st = dict(self._state)
        open_bytes = self._open_bytes()
        return {
            "channel": self.channel.name, "platform": self.channel.platform, "mode": self.channel.mode,
            **st, "since": st["since"].isoformat(timespec="seconds"),
            "segments": self._totals["segments"], "bytes": self._totals["bytes"] + open_bytes, "open_bytes": open_bytes,
            "recorded": self._recorded, "replayed": self._replayed + (seg.replayed if (seg := self._segmenter) else 0),
            "recovered": self.recovered, "config_hash": self.config_hash,
        }

    def _open_bytes(self) -> int:
        """Bytes of the segment being written (committed ones are in the totals already)."""
        seg = self._segmenter
        current = seg.current_path if seg else None
        try:
            return os.stat(f"{current}{PART_SUFFIX}").st_size if current else 0
        except OSError:  # committed or discarded between the two lines
            return 0

    def stop(self, timeout: float = 60.0) -> dict:
        """Finish the open segment and stop; returns the final status."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout / 2)
            stream = self._stream
            if self._thread.is_alive() and stream is not None:
                stream.close()  # a read blocked on a silent server: closing it unblocks the segmenter
            self._thread.join(timeout / 2)
        self._set("stopped")
        return self.status()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the recording loop ends (a finished file channel, or stop); True if it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def cpu_seconds(self) -> float:
        return time.process_time()

    # ------------------------------------------------------------------ loop
    def _set(self, state: str, detail: str = "", error: str | None = None) -> None:
        with self._lock:
            if state != self._state["state"] or detail != self._state["detail"]:
                self._state.update(state=state, since=_now(), detail=detail)
            if error is not None:
                self._state["last_error"] = error
        if error:
            metrics.record("s2d_recorder_errors", 1, channel=self.channel.name)
        log.info("%s: %s %s", self.channel.name, state, detail or error or "")

    def _sleep(self, seconds: float) -> bool:
        """Wait, waking early on stop; True if we should go on."""
        return not self._stop.wait(seconds)

    def _disk_ok(self) -> bool:
        free = self.storage.free_gb()
        if free < self.settings.min_free_gb:
            self._set("paused", f"disk: {free:.1f} GB free < floor {self.settings.min_free_gb:g} GB")
            return False
        return True

    def _run(self) -> None:
        try:
            {"live": self._run_live, "videos": self._run_videos, "thumbnails": self._run_thumbnails}[self.channel.mode]()
        except Exception as err:  # a bug: keep it visible in status, Ray restarts on process death only
            log.exception("%s: recorder crashed", self.channel.name)
            self._set("failed", error=f"{type(err).__name__}: {err}")
            raise

    def _poll_wait(self) -> bool:
        s = self.settings
        return self._sleep(s.poll_interval_s * (1 - s.poll_jitter * random.random()))

    def _run_live(self) -> None:
        s = self.settings
        backoff = s.backoff_initial_s
        guard = threading.Thread(target=self._guard_disk, daemon=True)
        guard.start()
        while not self._stop.is_set():
            if not self._disk_ok():
                self._poll_wait()
                continue
            self._finish.clear()
            self._set("connecting")
            try:
                stream = self.adapter.open_live(resume=self.memory.media_sequence)
            except StreamError as err:
                self._set("backoff", f"retry in {backoff:g}s", error=str(err))
                if self._sleep(backoff):
                    backoff = min(backoff * 2, s.backoff_max_s)
                continue
            if stream is None:
                self._set("offline", f"next check within {s.poll_interval_s:g}s")
                self._poll_wait()
                continue
            before = self._recorded
            outcome, error, replayed = self._record(stream)
            if self._recorded > before:
                backoff = s.backoff_initial_s  # the stream worked: start the backoff over
            if outcome in ("stopped", "finished"):
                continue
            wait = backoff
            if self._recorded == before and replayed and not getattr(stream, "finished", False):
                # Only media committed before came (a playlist that stopped advancing): no new
                # segments, and no hammering the origin either; but a stall may end any moment and
                # the playlist forgets fast, so it is checked at least as often as an offline channel.
                wait = min(backoff, s.poll_interval_s)
                self._set("stalled", f"no new media, only {replayed} GOP(s) already recorded; retry in {wait:g}s",
                          error=error)
            else:
                detail = {"ended": "stream ended", "dropped": "stream dropped"}.get(outcome, "recorder error")
                self._set("backoff", f"{detail}; retry in {wait:g}s", error=error)
            if self._sleep(wait):
                backoff = min(backoff * 2, s.backoff_max_s)

    def _record(self, stream) -> tuple[str, str | None, int]:
        """One connection: (outcome, error, GOPs skipped as already recorded)."""
        self._stream = stream
        segmenter = self._segmenter = Segmenter(self._segment_path, self.settings.segment_seconds,
                                                self._commit_cut, self._quarantine, memory=self.memory)
        self._set("recording")
        try:
            return segmenter.run(stream, self._stop, self._finish), None, segmenter.replayed
        except StreamError as err:
            return "dropped", str(err), segmenter.replayed
        except Exception as err:  # a bug on the media path: its traceback goes to the log, the recorder goes on
            log.exception("%s: recording failed", self.channel.name)
            return "error", f"{type(err).__name__}: {err}", segmenter.replayed
        finally:
            self._replayed += segmenter.replayed
            self._stream, self._segmenter = None, None
            stream.close()

    def _guard_disk(self) -> None:
        while not self._stop.wait(self.DISK_CHECK_S):
            if self.storage.free_gb() < self.settings.min_free_gb:
                self._finish.set()

    def _segment_path(self, start: datetime) -> Path:
        path = self.storage.segment_path(self.channel.platform, self.channel.name, start)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    # ------------------------------------------------------------------ commits
    def _commit(self, path: Path, start: datetime, end: datetime, info: MediaInfo, status: str,
                source_id: str | None = None, title: str | None = None, nbytes: int | None = None,
                sha256: str | None = None, marks: tuple[Mark, ...] | None = None,
                media_sequence: int | None = None) -> None:
        seg_id = self.storage.segment_id(self.channel.platform, self.channel.name, path.stem)
        sha256 = sha256 or sha256_file(path)
        if self.memory is not None:
            # Remembered before the row is written: a crash in between leaves a file that recovery
            # commits, never media that a restart records again.
            self.memory.add(self._marks_of(path) if marks is None else marks, sha256, media_sequence)
        row = manifest.segment_row(
            segment_id=seg_id, channel=self.channel.name, platform=self.channel.platform,
            source=self.channel.source, path=path, storage=self.storage, start=start, end=end, info=info,
            nbytes=nbytes if nbytes is not None else path.stat().st_size, sha256=sha256,
            status=status, config_hash=self.config_hash, source_id=source_id, title=title)
        manifest.write_segment(self.storage, row)
        self._totals["segments"] += 1
        self._totals["bytes"] += row["bytes"]
        self._recorded += 1
        metrics.record("s2d_segments_recorded", 1, channel=self.channel.name)
        metrics.record("s2d_bytes_recorded", row["bytes"], channel=self.channel.name)

    @staticmethod
    def _marks_of(path: Path) -> list[Mark]:
        """Keyframe marks of a file committed by recovery (it probed fine, so it demuxes)."""
        try:
            return keyframe_marks(path)
        except MEDIA_ERRORS:
            return []

    def _commit_cut(self, cut: CutSegment) -> None:
        self._commit(cut.path, cut.start, cut.end, cut.info, cut.status, nbytes=cut.bytes, sha256=cut.sha256,
                     marks=cut.marks, media_sequence=cut.media_sequence)

    def _quarantine(self, path: Path, reason: str) -> None:
        dest = self.storage.quarantine(path, reason)
        with self._lock:
            self._state["last_error"] = f"quarantined {dest.name}: {reason}"
        metrics.record("s2d_recorder_errors", 1, channel=self.channel.name)

    def _manifest_totals(self) -> dict:
        """What this channel has stored so far (thumbnails count as its items in that mode)."""
        if self.channel.mode == "thumbnails":  # bytes on disk: cheaper than reading every image
            shards = (self.storage.table_dir("frames") / f"channel={self.channel.name}").rglob("thumbnails-*.parquet")
            return {"segments": len(read_frame_column(self.storage, "frame_id", self.channel.name, "thumbnail")),
                    "bytes": sum(p.stat().st_size for p in shards)}
        table = manifest.read_segments(self.storage, self.channel.name)
        return {"segments": table.num_rows, "bytes": int(sum(table["bytes"].to_pylist() or [0]))}

    # ------------------------------------------------------------------ crash recovery
    def recover(self) -> int:
        """Commit or quarantine what a killed recorder left behind; returns how many were fixed."""
        fixed = recover_channel(self.storage, self.channel.platform, self.channel.name, self._commit)
        if fixed:
            log.warning("%s: recovered %d unfinished segment(s)", self.channel.name, fixed)
        return fixed

    # ------------------------------------------------------------------ videos and thumbnails
    def _load_archive(self) -> set[str]:
        path = self.storage.archive_path(self.channel.name)
        self.storage.pull(path.relative_to(self.storage.root).as_posix())  # a recorder that moved node
        return set(path.read_text().split("\n")) - {""} if path.exists() else set()

    def _append_archive(self, archive_id: str) -> None:
        path = self.storage.archive_path(self.channel.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(archive_id + "\n")
        self.storage.push(path)

    def _fetch_loop(self, fetch_once, repeat: bool = True) -> None:
        """Videos and thumbnails modes: fetch what is new, then wait; errors back off."""
        s = self.settings
        backoff = s.backoff_initial_s
        while not self._stop.is_set():
            if not self._disk_ok():
                self._poll_wait()
                continue
            self._set("fetching")
            try:
                fetch_once()
            except StreamError as err:
                self._set("backoff", f"retry in {backoff:g}s", error=str(err))
                if self._sleep(backoff):
                    backoff = min(backoff * 2, s.backoff_max_s)
                continue
            backoff = s.backoff_initial_s
            if not repeat:
                self._set("done", "all files ingested")
                return
            self._set("idle", f"next check within {s.poll_interval_s:g}s")
            self._poll_wait()

    def _run_videos(self) -> None:
        staging = self.storage.downloads_dir(self.channel.platform, self.channel.name)
        staging.mkdir(parents=True, exist_ok=True)

        def fetch_once() -> None:
            for item in self.adapter.fetch_videos(staging, self._load_archive()):
                self._commit_video(item)
                if self._stop.is_set() or not self._disk_ok():
                    return

        # A folder does not grow by itself: a file channel ends when done (`up` again for new files).
        self._fetch_loop(fetch_once, repeat=self.channel.platform != "file")

    def _commit_video(self, item) -> None:
        try:
            info = probe(item.path)
        except CorruptMedia as err:
            self.storage.quarantine(item.path, f"{item.source_id}: {err}")
        else:
            start = item.published or _now()
            dest = self.storage.segment_path(self.channel.platform, self.channel.name, start,
                                             key=item.source_id, ext=item.path.suffix.lower())
            dest.parent.mkdir(parents=True, exist_ok=True)
            item.path.replace(dest)
            self._commit(dest, start, start + timedelta(seconds=info.duration_s), info, "ok",
                         source_id=item.source_id, title=item.title)
        self._append_archive(item.archive_id)  # after the commit: a crash before it re-fetches

    def _run_thumbnails(self) -> None:
        def fetch_once() -> None:
            seen = set(read_frame_column(self.storage, "source_id", self.channel.name, "thumbnail"))
            batch: list[dict] = []
            try:
                for item in self.adapter.fetch_thumbnails(seen):
                    seg_id = self.storage.segment_id(self.channel.platform, self.channel.name, item.source_id)
                    row = thumbnail_row(item, channel=self.channel.name, platform=self.channel.platform,
                                        segment_id=seg_id, config_hash=self.config_hash)
                    if row is not None:
                        batch.append(row)
                    if len(batch) >= THUMBNAIL_BATCH:
                        self._flush_thumbnails(batch)
                    if self._stop.is_set():
                        return
            finally:
                self._flush_thumbnails(batch)  # what was fetched before an error or a stop is kept

        self._fetch_loop(fetch_once)

    def _flush_thumbnails(self, batch: list[dict]) -> None:
        if batch:
            write_frames(self.storage, batch, prefix="thumbnails")
            self._totals["segments"] += len(batch)
            self._recorded += len(batch)
            self._totals["bytes"] += sum(len(r["image"]) for r in batch)
            batch.clear()
