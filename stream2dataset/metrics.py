"""Service metrics through `ray.util.metrics`, so Ray's Prometheus endpoint exports them.

Every node's Ray agent serves its processes' metrics on the node's metrics export port
(`ray start --metrics-export-port`, or the port in `/tmp/ray/session_latest/metrics`); Prometheus
scrapes those, and the Ray dashboard's Grafana panels can chart them. The names are `s2d_*` (Ray
prefixes `ray_`). Outside Ray (a unit test, a plain script) recording is a no-op.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)

# name -> (kind, description, tag keys)
CATALOGUE: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "s2d_segments_recorded": ("counter", "segments committed to the manifest by recorders", ("channel",)),
    "s2d_bytes_recorded": ("counter", "bytes of committed segments", ("channel",)),
    "s2d_recorder_errors": ("counter", "recorder errors (a failed fetch, a damaged segment)", ("channel",)),
    "s2d_backlog_segments": ("gauge", "committed segments not yet processed", ()),
    "s2d_pool_actors": ("gauge", "processing actors alive in the service's pool", ()),
    "s2d_segments_processed": ("counter", "segments whose rows were committed as shards", ("channel",)),
    "s2d_frames_kept": ("counter", "crops stored (not in-segment duplicates)", ("channel",)),
    "s2d_drops": ("counter", "sampled frames or crops dropped, by reason", ("reason",)),
    "s2d_processing_errors": ("counter", "segments processed with an error (quarantined)", ("channel",)),
    "s2d_commit_round_seconds": ("gauge", "the last commit round's seconds, by step (commit, dedup, retention, "
                                 "compact): flat over the service's life if a round costs the same on day 300", ("step",)),
    "s2d_commit_latency_seconds": ("histogram", "from a segment's manifest commit to its rows being queryable", ()),
}
LATENCY_BOUNDARIES = [1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800]

_made: dict[str, object] = {}


def _metric(name: str):
    if name in _made:
        return _made[name]
    ray = sys.modules.get("ray")  # never imported for a metric: a foreground `record` runs without Ray
    if ray is None or not getattr(ray, "is_initialized", lambda: False)():
        return None
    from ray.util import metrics

    kind, description, tags = CATALOGUE[name]
    if kind == "counter":
        made = metrics.Counter(name, description=description, tag_keys=tags)
    elif kind == "gauge":
        made = metrics.Gauge(name, description=description, tag_keys=tags)
    else:
        made = metrics.Histogram(name, description=description, boundaries=LATENCY_BOUNDARIES, tag_keys=tags)
    _made[name] = made
    return made


def record(name: str, value: float = 1.0, **tags: str) -> None:
    """Add to a counter, set a gauge or observe a histogram value (by the catalogue's kind)."""
    try:
        metric = _metric(name)
        if metric is None:
            return
        kind = CATALOGUE[name][0]
        if kind == "counter":
            if value > 0:
                metric.inc(value, tags=tags or None)
        elif kind == "gauge":
            metric.set(value, tags=tags or None)
        else:
            metric.observe(value, tags=tags or None)
    except Exception:  # noqa: BLE001 - a metric must never stop recording or processing
        log.debug("metric %s not recorded", name, exc_info=True)
