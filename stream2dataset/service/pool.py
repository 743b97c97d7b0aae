"""The service's processing pool: actors that live as long as the service, fed window by window.

A job per round (start actors, load the models, process, tear down) costs more than the work when
segments are short, and rounds queue behind each other; so `up` keeps a pool instead:

- **actors** (`WindowProcessor`, the same stage the batch `process` job runs on Ray Data) load
  their models once, are spread over the nodes, and are restarted by Ray when they die (the windows
  they held go back to the queue; a window that keeps killing its actor fails its segment, which
  is quarantined with the reason instead of looping);
- **a queue** of windows, oldest segment first, is filled from the manifest as recorders commit
  segments (a listing of the manifest's files; only new or rewritten files are read); at most `INFLIGHT`
  windows wait on each actor (backpressure: the rest stay in the queue, not in Ray's object store);
- **the size** follows the backlog: one actor per `WINDOWS_PER_ACTOR` queued windows, within
  `processing.concurrency` (or the cluster's CPUs / `ray.processor_cpus`) and the CPUs free now
  (recorders come first); an actor idle for `IDLE_S` is let go, the last one stays;
- **commits** gather the segments whose windows are all done and commit them together
  (`processing.interval_s` apart at most, or sooner once `COMMIT_SEGMENTS` are ready), in a thread
  of their own so windows keep flowing meanwhile; then dedup, retention and compaction (a bounded
  share of what is due, dataset/compaction.py), as a round did.

Exactly-once is the commit's (dataset.writer): a window's rows are staged under its id and a
window marker skips it when redone; a segment's rows land only through one commit intent.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from pathlib import Path

import ray

from .. import metrics
from ..config import Config
from ..dataset.dedup_pass import dedup_dataset
from ..dataset.compaction import Busy, ShardWatch, compact, recover_if_idle
from ..dataset.manifest import manifest_files, read_segment_files
from ..layout import Storage
from ..processing.pipeline import commit_processed, plan_windows
from ..processing.window import WindowProcessor, window_id
from .retention import prune_raw

log = logging.getLogger(__name__)

INFLIGHT = 2               # windows queued on one actor: it never waits between windows, and no more pile up
WINDOWS_PER_ACTOR = 2      # queued windows that justify one more actor
IDLE_S = 60.0              # an actor with nothing to do this long is let go (the last one stays)
COMMIT_SEGMENTS = 64       # commit at once when this many segments are ready
WINDOW_TRIES = 3           # a window whose actor died this many times fails its segment
START_S = 60.0             # an actor not up this long (no free CPU: a node lost) is given up; a later step tries again
SCAN_S = 1.0               # how often the manifest is listed for new segments


class _Segment:
    """A segment in the pool: its windows, and what came back for them."""

    def __init__(self, seg: dict, windows: list[dict], recorded_at: float):
        self.seg, self.windows, self.recorded_at = seg, windows, recorded_at
        self.summaries: dict[str, dict] = {}
        self.error = ""

    @property
    def complete(self) -> bool:
        return bool(self.error) or len(self.summaries) == len(self.windows)


class ProcessingPool:
    def __init__(self, config: Config):
        self.config = config
        self.storage = Storage.of(config)
        self.config_hash = self.storage.save_config(config)
        self.actors: list[dict] = []                 # {"handle", "inflight", "idle_since", "ready", "started"}
        self.queue: deque[dict] = deque()            # windows not yet given to an actor
        self.inflight: dict[ray.ObjectRef, tuple[dict, dict]] = {}  # ref -> (window, actor)
        self.tries: dict[str, int] = {}
        self.segments: dict[str, _Segment] = {}      # queued or processing, until committed
        self.ready_since: float | None = None
        self.seen: dict[str, int] = {}               # manifest files already read, and their mtime
        self.last_scan = 0.0
        self.watch = ShardWatch()                    # the shard folders compaction looks at: those written to
        self.committer: threading.Thread | None = None
        self.state = {"state": "idle", "since": time.time(), "last": "", "error": "", "backlog": 0,
                      "actors": 0, "queued": 0, "processing": 0, "latency_p95_s": None, "nodes": {}}
        self.latencies: deque[float] = deque(maxlen=500)

    # ------------------------------------------------------------------ the loop's one step
    def step(self) -> None:
        """Collect finished windows, find new segments, size the pool, hand out windows, commit."""
        self._collect()
        if time.monotonic() - self.last_scan >= SCAN_S * (5 if self.storage.remote else 1):  # a store lists slower
            self.last_scan = time.monotonic()
            self._discover()
        self._size()
        self._hand_out()
        self._maybe_commit()
        backlog = len(self.segments)
        self.state.update(backlog=backlog, actors=len(self.actors), queued=len(self.queue),
                          processing=len(self.inflight))
        busy = "running" if self.inflight else "idle"
        if self.state["state"] != busy:
            self.state.update(state=busy, since=time.time())
        metrics.record("s2d_backlog_segments", backlog)
        metrics.record("s2d_pool_actors", len(self.actors))

    def _discover(self) -> None:
        """Queue the windows of committed segments not yet processed, from manifest files not yet read."""
        storage = self.storage
        base = storage.segments_manifest
        storage.pull(base.relative_to(storage.root).as_posix(), mirror=True)
        files = {}
        # Per-segment files and the period files that may hold unprocessed segments (manifest.py):
        # compaction moves rows into these, and settled ones into files no scan needs to read.
        for p in manifest_files(storage.root, pending_only=True):
            try:  # a file is known by its name and version
                files[str(p)] = p.stat().st_mtime_ns
            except FileNotFoundError:  # compacted away meanwhile
                continue
        new = sorted(p for p, version in files.items() if self.seen.get(p) != version)
        rows = read_segment_files([Path(p) for p in new])
        self.seen = files  # read: files compacted away are forgotten, it stays the size of the listing
        fresh = []
        for row in sorted(rows, key=lambda r: r["start"]):  # new rows only: a request or two each in a store
            sid = row["segment_id"]
            path = storage.root / row["path"]
            if sid in self.segments or storage.exists(storage.done_marker(sid)) or not storage.exists(path):
                continue
            fresh.append((row, {"segment_id": sid, "channel": row["channel"], "platform": row["platform"],
                                "path": str(path), "key": row["path"], "start_ts": row["start"].timestamp(),
                                "source_id": row["source_id"] or "", "duration_s": row["duration_s"],
                                "width": row["width"]}))
        windows, failed = plan_windows([seg for _, seg in fresh], self.config.processing.window_s)
        by_segment: dict[str, list[dict]] = {}
        for w in windows:
            by_segment.setdefault(w["segment_id"], []).append(w)
        for row, seg in fresh:
            sid = seg["segment_id"]
            recorded = row["recorded_at"].timestamp() if row.get("recorded_at") else time.time()
            entry = _Segment(seg, by_segment.get(sid, []), recorded)
            entry.error = failed.get(sid, "")
            self.segments[sid] = entry
            if not entry.error:
                self.queue.extend(entry.windows)

    def _size(self) -> None:
        cfg = self.config
        need = cfg.ray.processor_cpus
        waiting = len(self.queue) + len(self.inflight)
        if waiting > len(self.actors) * WINDOWS_PER_ACTOR or not self.actors:  # Ray is asked only then
            most = cfg.processing.concurrency or max(1, int(ray.cluster_resources().get("CPU", 1) / need))
            want = min(most, max(1, math.ceil(waiting / WINDOWS_PER_ACTOR)))
            starting = any(not a["ready"] for a in self.actors)
            if len(self.actors) < want and not starting and ray.available_resources().get("CPU", 0.0) >= need:
                self._start_actor()  # one at a time: the next one is sized with the CPUs this one took
        now = time.monotonic()
        for actor in [a for a in self.actors if not a["ready"]]:
            done, _ = ray.wait([actor["started"]], timeout=0)
            gone = now - actor["idle_since"] > START_S  # no CPU came free for it (a node gone), or no models
            if done:
                try:
                    ray.get(done[0])
                    actor.update(ready=True, idle_since=now)
                except ray.exceptions.RayError:
                    gone = True
            if gone and not actor["ready"]:
                self.actors.remove(actor)
                ray.kill(actor["handle"], no_restart=True)  # windows it held fail and go back to the queue
        for actor in [a for a in self.actors if not a["inflight"]]:
            if len(self.actors) > 1 and not self.queue and now - actor["idle_since"] > IDLE_S:
                self.actors.remove(actor)
                ray.kill(actor["handle"], no_restart=True)

    def _start_actor(self) -> None:
        cfg = self.config
        handle = ray.remote(WindowProcessor).options(
            num_cpus=cfg.ray.processor_cpus, max_restarts=-1, max_task_retries=0,  # retried here: _failed
            scheduling_strategy="SPREAD",
        ).remote(cfg.processing, cfg.storage, self.config_hash)
        self.actors.append({"handle": handle, "inflight": 0, "idle_since": time.monotonic(), "ready": False,
                            "started": handle.__ray_ready__.remote()})

    def _hand_out(self) -> None:
        for actor in sorted((a for a in self.actors if a["ready"]), key=lambda a: a["inflight"]):
            while self.queue and actor["inflight"] < INFLIGHT:
                win = self.queue.popleft()
                self.inflight[actor["handle"].process.remote(win)] = (win, actor)
                actor["inflight"] += 1

    def _collect(self, timeout: float = 0.0) -> None:
        if not self.inflight:
            return
        done, _ = ray.wait(list(self.inflight), num_returns=len(self.inflight), timeout=timeout)
        for ref in done:
            win, actor = self.inflight.pop(ref)
            actor["inflight"] -= 1
            if not actor["inflight"]:
                actor["idle_since"] = time.monotonic()
            entry = self.segments.get(win["segment_id"])
            try:
                summary = ray.get(ref)
            except ray.exceptions.RayError as err:
                self._failed(win, actor, entry, err)
                continue
            if entry is not None:
                entry.summaries[summary["window_id"]] = summary
            if not summary.get("skipped"):  # windows per Ray node: how the work spreads
                node = (summary.get("node") or "")[:8]
                self.state["nodes"][node] = self.state["nodes"].get(node, 0) + 1

    def _failed(self, win: dict, actor: dict, entry: _Segment | None, err: Exception) -> None:
        """A window whose actor died (or is restarting, or raised): back to the queue, on a ready
        actor; a window that failed WINDOW_TRIES times fails its segment (quarantined, not retried
        forever). An actor that is restarting counts no try: a lost node is not the window's fault."""
        wid = window_id(win["segment_id"], int(win["window"]))
        restarting = isinstance(err, ray.exceptions.ActorUnavailableError)
        self.tries[wid] = self.tries.get(wid, 0) + (0 if restarting else 1)
        if actor in self.actors and actor["ready"]:  # hand it nothing until it answers again
            actor.update(ready=False, started=actor["handle"].__ray_ready__.remote(), idle_since=time.monotonic())
        if entry is None or entry.error:
            return
        if self.tries[wid] < WINDOW_TRIES:
            self.queue.appendleft(win)
        else:
            log.warning("window %s failed %d times: %s", wid, self.tries[wid], err)
            entry.error = f"processing failed {WINDOW_TRIES} times: {type(err).__name__}"

    # ------------------------------------------------------------------ commits
    def _maybe_commit(self, force: bool = False) -> None:
        if self.committer is not None and self.committer.is_alive():
            return
        ready = [e for e in self.segments.values() if e.complete]
        if not ready:
            self.ready_since = None
            return
        if self.ready_since is None:
            self.ready_since = time.monotonic()
        due = time.monotonic() - self.ready_since >= self.config.processing.interval_s
        if not (force or due or len(ready) >= COMMIT_SEGMENTS):
            return
        self.ready_since = None
        self.committer = threading.Thread(target=self._commit, args=(ready,), daemon=True)
        self.committer.start()
        if force:
            self.committer.join()

    def _commit(self, ready: list[_Segment]) -> None:
        cfg, storage = self.config, self.storage
        steps: dict[str, float] = {}  # seconds per step of this round: does a round cost more as history grows?
        clock = [time.monotonic()]

        def lap(step: str) -> None:
            now = time.monotonic()
            steps[step] = round(now - clock[0], 3)
            metrics.record("s2d_commit_round_seconds", now - clock[0], step=step)
            clock[0] = now

        try:
            segments = [e.seg for e in ready]
            windows = [w for e in ready for w in e.windows
                       if window_id(w["segment_id"], int(w["window"])) in e.summaries]
            summaries = [s for e in ready for s in e.summaries.values()]
            failed = {e.seg["segment_id"]: e.error for e in ready if e.error}
            report = commit_processed(storage, cfg.dataset, segments, windows, summaries, failed)
            now = time.time()
            for e in ready:
                self.segments.pop(e.seg["segment_id"], None)
                for w in e.windows:
                    self.tries.pop(window_id(w["segment_id"], int(w["window"])), None)
                self.latencies.append(now - e.recorded_at)
                metrics.record("s2d_commit_latency_seconds", now - e.recorded_at)
                metrics.record("s2d_segments_processed", 1, channel=e.seg["channel"])
                metrics.record("s2d_frames_kept", sum(s["kept"] for s in e.summaries.values()),
                               channel=e.seg["channel"])
                if e.error or any(s["error"] for s in e.summaries.values()):
                    metrics.record("s2d_processing_errors", 1, channel=e.seg["channel"])
            for reason, n in report["drops"].items():
                metrics.record("s2d_drops", n, reason=reason)
            lap("commit")  # the commit and its bookkeeping; dedup's lap starts here
            last = f"{report['segments']} segments, {report['kept']} crops kept"
            recover_if_idle(storage)  # a killed compaction's files are settled before dedup reads the shards
            if cfg.dataset.dedup_auto and report.get("shards"):  # new rows: link near-duplicates
                links = dedup_dataset(storage, cfg.dataset.dedup_radius)
                last += f", {links['linked']} cross-segment duplicates"
            lap("dedup")
            if cfg.retention.raw_keep_hours is not None:  # raw files may go once processed
                removed = prune_raw(storage, cfg.retention.raw_keep_hours)
                if removed:
                    log.info("retention: deleted %d processed raw segments", len(removed))
            lap("retention")
            try:  # small files into large ones; bounded, so a round stays short (the rest next round)
                self.watch.wrote(report.get("folders", []))
                folders = self.watch.folders()
                merged = compact(storage, cfg.dataset.shard_target_mb, cfg.dataset.row_group_rows,
                                 max_mb=4 * cfg.dataset.shard_target_mb, max_files=20_000, wait=False,
                                 folders=folders)
                self.watch.compacted(folders)
                if merged:
                    last += f", compacted {sum(len(g['old']) for g in merged)} files"
            except Busy:  # `stream2dataset compact` or a snapshot is at work: next round
                pass
            lap("compact")
            ordered = sorted(self.latencies)
            self.state.update(last=last, error="", committed_at=now, round_s=steps,
                              latency_p95_s=round(ordered[int(0.95 * (len(ordered) - 1))], 2))
        except Exception as err:  # noqa: BLE001 - shown in status; these segments are tried again
            log.exception("commit failed")
            self.state["error"] = f"{type(err).__name__}: {err}"
            for e in ready:  # forget them: the next scan queues them again (their windows are skipped)
                self.segments.pop(e.seg["segment_id"], None)
            self.seen = {}

    # ------------------------------------------------------------------ life cycle
    def status(self) -> dict:
        return {**self.state, "nodes": dict(self.state["nodes"])}

    def drain(self, timeout_s: float) -> None:
        """Finish the windows actors hold (up to `timeout_s`) and commit what is complete."""
        self.queue.clear()
        deadline = time.monotonic() + timeout_s
        while self.inflight and time.monotonic() < deadline:
            self._collect(timeout=0.5)
        if self.committer is not None:
            self.committer.join()
        self._maybe_commit(force=True)

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor["handle"], no_restart=True)
        self.actors.clear()
        self.inflight.clear()


def same_processing(a: Config, b: Config) -> bool:
    """Whether a pool built for `a` may go on with `b` (the actors hold a's processing and storage)."""
    return (a.processing, a.storage, a.dataset, a.ray, a.retention) == (b.processing, b.storage, b.dataset, b.ray,
                                                                        b.retention)

