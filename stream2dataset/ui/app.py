"""The dashboard's Starlette app: server-rendered pages (Jinja2), read-only, over `data.py`.

Routes: `/` channels (live: `/channels/table` is fetched every few seconds), `/crops[/<channel>]`,
`/frames/<frame_id>` (the stored image bytes), `/stats` and `/stats.png`, `/sql` (GET or POST,
field `q`), `/runs`, `/runs/<run>`, `/runs/<run>/files/<file>` (sample grids and videos).
Nothing here writes to the storage root, and no environment variable or config field is shown.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from ..humanize import human_bytes, since  # as the CLI prints them: the page reads as `status` does
from ..config import Config
from ..dataset.catalog import query
from ..dataset.stats import cell_text, dataset_stats, plot_stats, rows
from ..errors import UserError
from ..layout import Storage
from . import data

__all__ = ["REFRESH_S", "SQL_ROWS", "build_app"]

REFRESH_S = 3.0   # the channels table refreshes itself this often
SQL_ROWS = 200    # rows shown by the SQL box (the rest are counted as "more")
CROPS = 8         # newest crops per channel on /crops; 48 on /crops/<channel>
LOOPBACK_HOSTS = ["127.0.0.1", "localhost"]

_PLOT_LOCK = threading.Lock()  # pyplot keeps global state


def _processing_line(st: dict) -> str:
    proc = st.get("processing") or {}
    if not proc:
        return ""
    return (f"processing: {proc['state']}"
            + (f" · backlog {proc['backlog']} segments" if proc.get("backlog") is not None else "")
            + (f" · last run {proc['last']}" if proc.get("last") else ""))


def build_app(cfg: Config, service_status: Callable[[], dict] | None = None,
              allowed_hosts: list[str] | None = None) -> Starlette:
    """The dashboard for `cfg`'s storage root. `service_status`: the running service's status
    (`service.status` on a connected Ray), or None to show the manifest alone.
    `allowed_hosts`: Host headers answered (loopback names guard a local dashboard against DNS
    rebinding); None: any."""
    storage = Storage.of(cfg)
    manifest = data.ManifestCache(storage)
    timeout_s = cfg.dataset.sql_timeout_s
    templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
    templates.env.filters.update(human_bytes=human_bytes, since=since)
    templates.env.filters["cell"] = cell_text

    def page(request: Request, name: str, status_code: int = 200, **context) -> HTMLResponse:
        return templates.TemplateResponse(request, name, {"where": storage.where, "refresh_s": REFRESH_S, **context},
                                          status_code=status_code)

    def not_found(request: Request, what: str) -> HTMLResponse:
        return page(request, "error.html", 404, title="not found", error=what)

    def status_context() -> dict:
        st = data.channel_status(cfg, service_status, manifest)
        nodes = {ch["node"] for ch in st["channels"] if ch.get("node")}
        proc = st.get("processing") or {}
        return {"st": st, "multi_node": len(nodes) > 1, "processing": _processing_line(st),
                "processing_error": proc.get("error", "")}

    async def channels(request: Request) -> Response:
        return page(request, "channels.html", title="channels", **await run_in_threadpool(status_context))

    async def channels_table(request: Request) -> Response:
        return page(request, "_channels_table.html", **await run_in_threadpool(status_context))

    async def crops(request: Request) -> Response:
        channel = request.path_params.get("channel")
        if channel is not None and not data.NAME.match(channel):
            return not_found(request, f"no channel {channel!r}")
        try:
            rows = await run_in_threadpool(data.newest_crops, storage.pull_dataset(), 48 if channel else CROPS,
                                           timeout_s, channel)
            error = ""
        except UserError as err:
            rows, error = [], str(err)
        by_channel: dict[str, list[dict]] = {}
        for r in rows:
            by_channel.setdefault(r["channel"], []).append(r)
        return page(request, "crops.html", title=f"crops: {channel}" if channel else "crops", channel=channel,
                    by_channel=by_channel, error=error)

    async def frame(request: Request) -> Response:
        frame_id = request.path_params["frame_id"]
        if not data.FRAME_ID.match(frame_id):
            return PlainTextResponse("not a frame id", 404)
        try:
            found = await run_in_threadpool(data.frame_image, storage.pull_dataset(), frame_id, timeout_s)
        except UserError as err:
            return PlainTextResponse(f"error: {err}", 400)
        if found is None:
            return PlainTextResponse(f"no frame {frame_id}", 404)
        body, media_type = found
        return Response(body, media_type=media_type, headers={"Cache-Control": "max-age=3600"})  # rows never change

    def _stats() -> dict:
        return dataset_stats(storage.pull_dataset(), timeout_s=timeout_s)

    async def stats(request: Request) -> Response:
        try:
            st, error = await run_in_threadpool(_stats), ""
        except UserError as err:
            st, error = None, str(err)
        return page(request, "stats.html", title="stats", stats=st, error=error)

    def _plot() -> bytes:
        st = _stats()
        with _PLOT_LOCK, tempfile.TemporaryDirectory(prefix="s2d-ui-") as tmp:
            return plot_stats(st, Path(tmp) / "stats.png").read_bytes()

    async def stats_png(request: Request) -> Response:
        try:
            return Response(await run_in_threadpool(_plot), media_type="image/png")
        except UserError as err:
            return PlainTextResponse(f"error: {err}", 400)

    def _sql(q: str):
        table, more = query(storage.pull_dataset(), q, SQL_ROWS, timeout_s=timeout_s)
        return table.column_names, list(rows(table)), more

    async def sql(request: Request) -> Response:
        if request.method == "POST":
            body = (await request.body()).decode("utf-8", "replace")
            q = (parse_qs(body).get("q") or [""])[0]
        else:
            q = request.query_params.get("q", "")
        if not q.strip():
            return page(request, "sql.html", title="sql", q=q, columns=None)
        try:
            columns, rows, more = await run_in_threadpool(_sql, q)
        except UserError as err:  # the CLI's one line, as `stream2dataset sql` prints it
            return page(request, "sql.html", 400, title="sql", q=q, columns=None, error=str(err).splitlines()[0])
        return page(request, "sql.html", title="sql", q=q, columns=columns, rows=rows, more=more, cap=SQL_ROWS)

    async def runs(request: Request) -> Response:
        return page(request, "runs.html", title="runs", runs=await run_in_threadpool(data.run_list, storage))

    async def run(request: Request) -> Response:
        name = request.path_params["name"]
        if not data.NAME.match(name):
            return not_found(request, f"no run {name!r}")
        detail = await run_in_threadpool(data.run_detail, storage, name)
        if detail is None:
            return not_found(request, f"no run {name!r}; the runs page lists them")
        return page(request, "run.html", title=f"run {name}", run=detail, chart=data.loss_points(detail["metrics"]))

    async def run_file(request: Request) -> Response:
        found = data.run_file(storage, request.path_params["name"], request.path_params["rel"])
        if found is None:
            return PlainTextResponse("not found", 404)
        return FileResponse(found[0], media_type=found[1])

    async def index(request: Request) -> Response:
        return RedirectResponse("/channels", 302)

    routes = [
        Route("/", index),
        Route("/channels", channels),
        Route("/channels/table", channels_table),
        Route("/crops", crops),
        Route("/crops/{channel}", crops),
        Route("/frames/{frame_id}", frame),
        Route("/stats", stats),
        Route("/stats.png", stats_png),
        Route("/sql", sql, methods=["GET", "POST"]),
        Route("/runs", runs),
        Route("/runs/{name}", run),
        Route("/runs/{name}/files/{rel:path}", run_file),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)] if allowed_hosts else []
    middleware.append(Middleware(_SafeHeaders))
    return Starlette(routes=routes, middleware=middleware)


class _SafeHeaders:
    """Browsers take each response for the type it is sent as, and send no referrer onwards."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-content-type-options", b"nosniff"),
                                      (b"referrer-policy", b"no-referrer")]
            await send(message)
        await self.app(scope, receive, send_with_headers if scope["type"] == "http" else send)
