"""The processing job on Ray Data: segments → windows → WindowProcessor actors → rows + report.

Segments come from the manifest (those without a completion marker) or from local files
(`stream2dataset process PATH...`). Long videos are cut into windows of `window_s`, so memory
stays flat however long the input and the work spreads over the cluster. A segment gets its
marker `dataset/_done/<segment-id>` when its staged rows are committed as shards
(`dataset.writer`); a video that fails to decode keeps its good frames and is quarantined with
the reason.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from ..config import Config, DatasetConfig
from ..dataset import commit_segments, recover_commits
from ..errors import CorruptMedia, UserError
from ..media import content_id, find_videos
from ..names import slug
from ..layout import DONE, Storage
from .decode import video_info
from .window import WindowProcessor, window_id


def file_segments(paths: list[Path], skipped: list[tuple[str, str]] | None = None) -> list[dict]:
    """Local videos as segments of a `file` channel named after their folder; ids from content.
    What is not a readable video file is listed in `skipped` (path, reason) and left out."""
    skipped = [] if skipped is None else skipped
    out: dict[str, dict] = {}
    for root in paths:
        root = Path(os.path.realpath(Path(root).expanduser()))  # never raises, even on a link loop
        if not root.exists():
            raise UserError(f"{root}: no such file or folder")
        channel = slug(root.name if root.is_dir() else root.parent.name)
        for f in find_videos(root, skipped):
            try:
                seg_id = f"file.{channel}.{content_id(f)}"
                start = f.stat().st_mtime
            except OSError as err:  # gone or unreadable since the walk
                skipped.append((str(f), err.strerror or str(err)))
                continue
            out.setdefault(seg_id, {"segment_id": seg_id, "channel": channel, "platform": "file", "path": str(f),
                                    "key": "", "start_ts": start, "source_id": f.name, "duration_s": None,
                                    "width": None})  # the same content twice (a link) is one segment
    return list(out.values())


def plan_windows(segments: list[dict], window_s: float) -> tuple[list[dict], dict[str, str]]:
    """Windows of every segment; segments that cannot even be opened come back as failures.
    A segment from the manifest is planned from its row (its file was probed when recorded)."""
    windows, failed = [], {}
    for seg in segments:
        try:
            info = video_info(seg["path"]) if seg.get("duration_s") is None else seg
        except CorruptMedia as err:
            failed[seg["segment_id"]] = str(err)
            continue
        # A tail under half a window joins the last one: a sliver past the last frame would
        # decode nothing, and windows stay under 1.5x window_s.
        count = max(1, math.floor((info["duration_s"] or 0) / window_s + 0.5))
        for k in range(count):
            end = (k + 1) * window_s if k < count - 1 else 1e9  # the last window runs to the end
            windows.append({**seg, "window": k, "start_s": k * window_s, "end_s": end, "width": info["width"]})
    return windows, failed


# A job this small runs in the calling process when no Ray is there to join: a local Ray's own
# start-up (GCS, raylet, agents, a worker per actor loading the models) costs more CPU than the work.
INLINE_MAX_WINDOWS = 16


def plan(config: Config, segments: list[dict]) -> tuple[Storage, list[dict], list[dict], dict[str, str]]:
    """The storage (with a killed run's commit replayed), the segments still to do, their windows and
    the segments that cannot be opened."""
    storage = Storage.of(config)
    storage.pull(DONE)
    recover_commits(storage, config.dataset.shard_target_mb, config.dataset.row_group_rows)  # a killed run's batch
    segments = [s for s in segments if not storage.done_marker(s["segment_id"]).exists()]  # re-runs add nothing
    windows, failed = plan_windows(segments, config.processing.window_s)
    return storage, segments, windows, failed


def process_inline(config: Config, segments: list[dict], on_window=lambda summary: None) -> dict:
    """The same job in this process, window after window, with one WindowProcessor (no Ray)."""
    storage, segments, windows, failed = plan(config, segments)
    summaries = []
    if windows:
        processor = WindowProcessor(config.processing, config.storage, storage.save_config(config))
        for w in windows:
            summaries.append(processor.process(w))
            on_window(summaries[-1])
    return commit_processed(storage, config.dataset, segments, windows, summaries, failed)


def process(config: Config, segments: list[dict], concurrency: int | None = None) -> dict:
    """Run the processing job on the connected (or a new local) Ray; returns the report."""
    import ray

    storage, segments, windows, failed = plan(config, segments)
    config_hash = storage.save_config(config)
    summaries: list[dict] = []
    if windows:
        need = config.ray.processor_cpus
        free = ray.available_resources().get("CPU", 0.0)
        if free < need:  # else the job waits for an actor forever, silently
            raise UserError(f"processing: {free:g} Ray CPUs free, an actor needs ray.processor_cpus = {need:g} "
                            "(recorders reserve ray.recorder_cpus each): lower either, or add a node")
        actors = concurrency or config.processing.concurrency or max(1, int(ray.cluster_resources().get("CPU", 1) / need))
        ds = ray.data.from_items(windows).map_batches(
            # Ray Data spreads the actors over the nodes (its default scheduling; every node's decoders are used).
            WindowProcessor, batch_size=1, num_cpus=need,
            # Grows up to `actors` as CPUs allow: recorders may hold some of them.
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=min(actors, len(windows))),
            fn_constructor_kwargs={"processing": config.processing, "storage": config.storage,
                                   "config_hash": config_hash})
        summaries = ds.take_all()
    return commit_processed(storage, config.dataset, segments, windows, summaries, failed)


def commit_processed(storage: Storage, dataset: DatasetConfig, segments: list[dict], windows: list[dict],
                     summaries: list[dict], failed: dict[str, str]) -> dict:
    """Commit these segments' staged rows (quarantining the broken ones) and report on their windows."""
    by_id = {s["window_id"]: s for s in summaries}
    report = {"segments": len(segments), "windows": len(windows), "frames": 0, "kept": 0, "duplicates": 0,
              "drops": Counter(), "seconds": Counter(), "quarantined": [], "facecams": Counter(), "nodes": Counter()}
    errors = dict(failed)
    for w in windows:
        s = by_id[window_id(w["segment_id"], w["window"])]
        report["frames"] += s["frames"]
        report["kept"] += s["kept"]
        report["duplicates"] += s["duplicates"]
        report["drops"].update(json.loads(s["drops"]))
        report["seconds"].update(json.loads(s["seconds"]))
        report["facecams"][s["facecam"]] += 1
        report["nodes"][s.get("node", "")] += 1  # windows per Ray node (markers of older runs have none)
        if s["error"]:
            errors.setdefault(w["segment_id"], s["error"])
    broken = [seg for seg in segments if seg["segment_id"] in errors]
    report["quarantined"] = [{"segment_id": s["segment_id"], "reason": errors[s["segment_id"]]} for s in broken]

    def quarantine() -> None:  # good frames are kept; the file goes where it can't be retried forever
        for seg in broken:
            if storage.exists(Path(seg["path"])):
                storage.quarantine(Path(seg["path"]), errors[seg["segment_id"]], move=seg["platform"] != "file")

    now = datetime.now(timezone.utc).isoformat()
    markers = {s["segment_id"]: {"segment_id": s["segment_id"], "at": now, "error": errors.get(s["segment_id"], "")}
               for s in segments}
    shards = commit_segments(storage, markers, dataset.shard_target_mb, dataset.row_group_rows, before_write=quarantine)
    report["shards"] = len(shards)
    report["folders"] = sorted({p.parent.relative_to(storage.root).as_posix() for p in shards})  # for compaction
    return report
