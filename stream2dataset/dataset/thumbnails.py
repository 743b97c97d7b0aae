"""Thumbnail images as frame rows (kind `thumbnail`), so one table and one loader serve all images."""

from __future__ import annotations

import io
import logging
from datetime import datetime, timezone

from .schema import frame_id

log = logging.getLogger(__name__)


def thumbnail_row(item, *, channel: str, platform: str, segment_id: str, config_hash: str) -> dict | None:
    """A frames row for a fetched thumbnail (an ingest ThumbnailItem); None if it does not decode."""
    import av  # here, not above: the dataset package is imported by training nodes that have no PyAV

    try:  # probed with the same decoder the pipeline uses, so a stored image always decodes
        with av.open(io.BytesIO(item.image)) as container:
            frame = next(container.decode(video=0))
            fmt = container.format.name
    except (av.FFmpegError, StopIteration) as err:
        log.warning("%s: thumbnail of %s does not decode: %s", channel, item.source_id, err)
        return None
    return {
        "frame_id": frame_id(segment_id, 0, "thumbnail"), "channel": channel, "platform": platform,
        "segment_id": segment_id, "source_id": item.source_id, "title": item.title,
        "timestamp": item.published or datetime.now(timezone.utc), "frame_index": 0, "kind": "thumbnail",
        "width": frame.width, "height": frame.height, "image": item.image,
        "image_format": "png" if "png" in fmt else "webp" if "webp" in fmt else "jpeg",
        "config_hash": config_hash,
    }
