"""Any HLS playlist over http(s): `hls://URL` or a plain http(s) URL (the catch-all adapter)."""

from __future__ import annotations

from typing import BinaryIO, ClassVar

from ... import sources
from ._streamlink import new_session, open_best
from .base import Adapter

class HLSAdapter(Adapter):
    platform: ClassVar[str] = "hls"
    modes: ClassVar[tuple[str, ...]] = sources.MODES["hls"]

    match = staticmethod(sources.match_hls)

    def open_live(self, resume: int | None = None) -> BinaryIO | None:

        # The hls:// prefix makes streamlink use its HLS plugin whatever the URL looks like.
        url = self.channel.source
        url = url if url.startswith("hls://") else f"hls://{url}"
        # A playlist that is not there (yet) is how an HLS origin says "offline" (nginx-rtmp, the
        # demo server); other HTTP errors are errors.
        return open_best(new_session(self.settings), url, self.settings.quality, offline_status=(404, 410),
                         resume=resume)

