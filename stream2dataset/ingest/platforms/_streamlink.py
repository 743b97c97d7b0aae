"""streamlink glue shared by the twitch, youtube and hls adapters (imported lazily, by them only).

What `Streamlink.streams()` does (streamlink 8.6.3, `plugin/plugin.py`, checked on loopback):
it returns a dict of quality name -> Stream with the synonyms "best" and "worst" added, and `{}`
when the plugin finds no stream: Twitch raises NoStreamsError inside for an empty access token
(channel offline or unknown) and returns nothing on a 4xx/5xx usher playlist; YouTube logs "Could
not get video info - <status>" for a /live page without a live video. It raises `NoPluginError`
when no plugin matches, and `PluginError` for HTTP and parse errors: `OSError`/`ValueError` in a
plugin are wrapped into it, so a 404 or refused HLS playlist and a failed Twitch API call arrive
as PluginError("Unable to open URL: ... (404 Client Error ...)"). HLS has no "offline" answer
but a missing playlist, so the hls adapter passes `offline_status=(404, 410)`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, BinaryIO, Collection, Mapping

from ...errors import StreamError
from ._sequences import open_tracked

if TYPE_CHECKING:
    from streamlink import Streamlink

    from ...config import RecordingSettings


def new_session(settings: RecordingSettings) -> Streamlink:
    """A streamlink session for one recording attempt.

    Logging is quiet already: streamlink sets its "streamlink" logger to WARNING on import and adds
    no handler, so only its warnings and errors reach the application's logging.
    """
    # yt-dlp first, always: both monkey-patch urllib3 (`urllib3.util.url._PERCENT_RE`) when imported,
    # and the project checked them together in this order (DESIGN.md), so every process gets the
    # same chain of patches whichever adapter runs first.
    import yt_dlp  # noqa: F401
    from streamlink import Streamlink

    return Streamlink({
        "stream-timeout": settings.stream_timeout_s,
        "hls-live-edge": 3,  # start three segments behind the live edge (streamlink's default)
        # Twitch may ask a browser for a client-integrity token; never pop up a window on a server.
        "webbrowser-headless": True,
    })


def open_best(
    session: Streamlink, url: str, quality: str, options: Mapping[str, Any] | None = None,
    offline_status: Collection[int] = (), resume: int | None = None,
) -> BinaryIO | None:
    """Open the first available quality of `quality` (comma list); None when there is no stream.

    `options` are plugin options; an HTTP status in `offline_status` also means "no stream".
    An HLS stream starts at media sequence `resume` when its playlist still has it, and its reader
    tells the media sequence of each byte (`_sequences.py`).
    """
    from streamlink.exceptions import NoPluginError, StreamlinkError
    from streamlink.options import Options

    try:
        streams = session.streams(url, options=Options(dict(options or {})))
    except NoPluginError:
        raise StreamError(f"no streamlink plugin handles {url}") from None
    except (StreamlinkError, OSError, ValueError) as err:
        if _http_status(err) in offline_status:
            return None
        raise StreamError(f"{url}: {one_line(err)}") from err
    if not streams:
        return None
    wanted = [q.strip() for q in quality.split(",") if q.strip()]
    name = next((q for q in wanted if q in streams), None)
    if name is None:
        raise StreamError(
            f"{url}: none of the qualities {quality!r} is offered (available: {', '.join(streams)}); "
            "add 'best' to the quality list")
    try:
        return open_tracked(streams[name], resume)
    except (StreamlinkError, OSError) as err:
        raise StreamError(f"{url}: could not open the {name} stream: {one_line(err)}") from err


def _http_status(err: BaseException | None) -> int | None:
    """The HTTP status of the response behind a (wrapped) requests error, if any."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if (status := getattr(getattr(err, "response", None), "status_code", None)) is not None:
            return status
        err = getattr(err, "err", None) or err.__cause__ or err.__context__  # streamlink keeps .err
    return None


def one_line(err: BaseException) -> str:
    """An exception as one line of text (messages of requests/yt-dlp can span several)."""
    return " ".join(str(err).split()) or type(err).__name__
