"""yt-dlp glue for the youtube adapter; works for any URL yt-dlp knows (tests use an RSS feed).

Playlists are read unprocessed (`process=False`) and their entries handled one by one, so each
video is yielded as soon as its file is complete, and archived entries are skipped before yt-dlp
requests anything for them.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from ...errors import StreamError
from ._streamlink import one_line
from .base import ThumbnailItem, VideoItem

log = logging.getLogger(__name__)
_NOT_LIVE = "!is_live & live_status !=? is_live & live_status !=? is_upcoming"  # yt-dlp --match-filter


class _Logger:
    """yt-dlp's messages go to logging instead of the terminal (it sends info to debug() too)."""

    def debug(self, msg: str) -> None:
        log.debug(msg.removeprefix("[debug] "))

    # With a logger set yt-dlp ignores `no_warnings`; its warnings are advisory and repeat on
    # every poll ("Falling back on generic information extractor"), so they go to info.
    def warning(self, msg: str) -> None:
        log.info(msg)

    def error(self, msg: str) -> None:
        log.debug(msg)  # every error is also raised: we log or re-raise it once, with context


def _ydl(**params: Any):
    import yt_dlp

    return yt_dlp.YoutubeDL({"quiet": True, "noprogress": True, "no_warnings": True,
                             "logger": _Logger(), **params})


def _reason(err: BaseException) -> str:
    return one_line(err).removeprefix("ERROR: ")


def _entries(ydl, url: str) -> Iterator[dict]:
    """The URL's entries, unresolved, one at a time; a single video is a list of one."""
    from yt_dlp.utils import DownloadError, ExtractorError

    try:
        result = ydl.extract_info(url, download=False, process=False)
        if result is None:
            raise StreamError(f"{url}: yt-dlp found nothing there")
        if result.get("_type") not in ("playlist", "multi_video"):
            yield result
            return
        for entry in result.get("entries") or ():  # may be a generator fetching pages lazily
            if entry:
                yield entry
    except (DownloadError, ExtractorError) as err:  # the URL itself failed, not one video
        raise StreamError(f"{url}: {_reason(err)}") from err


def _entry_id(entry: dict) -> str | None:
    from yt_dlp.utils import unsmuggle_url

    if entry.get("id"):
        return str(entry["id"])
    # Feeds pass an item's <guid> as the video id inside the URL (generic extractor, "force_videoid").
    return unsmuggle_url(entry.get("url") or "")[1].get("force_videoid")


def _archive_id(ydl, entry: dict) -> str | None:
    """yt-dlp's own download-archive line ("<extractor> <id>") for an entry, before extracting it.

    `_make_archive_id` (what `in_download_archive` uses) takes the extractor from ie_key or
    extractor_key, else from the first extractor whose pattern matches the URL.
    """
    vid = _entry_id(entry)
    return ydl._make_archive_id({**entry, "id": vid}) if vid else None


def _published(info: dict) -> datetime | None:
    ts = info.get("timestamp") or info.get("release_timestamp")
    if ts is not None:
        return datetime.fromtimestamp(ts, timezone.utc)
    day = info.get("upload_date") or info.get("release_date")
    return datetime.strptime(day, "%Y%m%d").replace(tzinfo=timezone.utc) if day else None


def _finished(info: dict | None) -> Iterator[dict]:
    """Video infos with a file on disk inside a processed result (nested playlists included)."""
    if not info:
        return
    if info.get("_type") in ("playlist", "multi_video"):
        for entry in info.get("entries") or ():
            yield from _finished(entry)
        return
    downloads = info.get("requested_downloads") or [info]
    path = downloads[-1].get("filepath")
    if path and Path(path).is_file():  # none when yt-dlp skipped it (archive, live, filters)
        yield {**info, "filepath": path}


def fetch_videos(url: str, staging: Path, archive: set[str], fmt: str) -> Iterator[VideoItem]:
    """Download every video of `url` whose archive id is not in `archive` into `staging`."""
    from yt_dlp.utils import DownloadError, ExtractorError, match_filter_func, match_str

    staging = Path(staging)
    staging.mkdir(parents=True, exist_ok=True)
    params = {
        "download_archive": set(archive),  # a copy: yt-dlp adds to it, the recorder owns the real one
        "outtmpl": {"default": str(staging / "%(id)s.%(ext)s")},
        "format": fmt,
        "merge_output_format": "mp4/mkv",  # mp4 when the streams allow it, else mkv
        # A stream that is live now would download until it ends (live mode records those), and
        # an upcoming one has nothing yet: both wait for a later poll, when they are VODs.
        "match_filter": match_filter_func(_NOT_LIVE),
    }
    with _ydl(**params) as ydl:
        for entry in _entries(ydl, url):
            aid = _archive_id(ydl, entry)
            if (aid is not None and aid in archive) or not match_str(_NOT_LIVE, entry, incomplete=True):
                continue
            try:
                info = ydl.process_ie_result(entry, download=True)
            except (DownloadError, ExtractorError) as err:  # one broken video: log it, go on
                log.warning("%s: skipping %s: %s", url, aid or entry.get("url"), _reason(err))
                continue
            for done in _finished(info):
                yield VideoItem(path=Path(done["filepath"]), source_id=str(done["id"]),
                                archive_id=ydl._make_archive_id(done), title=done.get("title"),
                                published=_published(done))


def fetch_thumbnails(url: str, seen: set[str]) -> Iterator[ThumbnailItem]:
    """Each listed video's best thumbnail, for videos whose id is not in `seen`."""
    from yt_dlp.networking.exceptions import RequestError
    from yt_dlp.utils import DownloadError, ExtractorError, sanitize_url

    with _ydl(extract_flat="in_playlist") as ydl:
        for entry in _entries(ydl, url):
            vid = _entry_id(entry)
            if vid in seen:
                continue
            try:
                if vid is None or not _best_thumbnail(entry):  # the listing lacks it: ask the page
                    entry = ydl.process_ie_result(entry, download=False)
                    vid = str(entry["id"])
                thumb = _best_thumbnail(entry)
                if thumb is None or vid in seen:
                    log.debug("%s: %s has no thumbnail", url, vid)
                    continue
                thumb = sanitize_url(thumb, scheme="https")  # listings may give "//host/x.jpg"
                with ydl.urlopen(thumb) as res:  # yt-dlp's networking: its headers, proxy, cookies
                    image = res.read()
            except (DownloadError, ExtractorError, RequestError, OSError) as err:
                log.warning("%s: no thumbnail for %s: %s", url, vid or entry.get("url"), _reason(err))
                continue
            yield ThumbnailItem(source_id=vid, title=entry.get("title"), image=image, url=thumb,
                                published=_published(entry))


def _best_thumbnail(info: dict) -> str | None:
    """The preferred, then largest, thumbnail (yt-dlp's own order: preference, then size)."""
    thumbs = [(t.get("preference") or 0, (t.get("width") or 0) * (t.get("height") or 0), i, t["url"])
              for i, t in enumerate(info.get("thumbnails") or ()) if t.get("url")]
    return max(thumbs)[-1] if thumbs else info.get("thumbnail")
