"""The read-only web dashboard (`stream2dataset ui`, `stream2dataset up --ui`).

Server-rendered pages over the same library calls as the CLI: the service's status, the catalog
(sandboxed SQL, the newest crops, a frame's image), `stats` and its chart, the training runs.
Starlette and uvicorn are imported only when the dashboard starts (`app`, `server`), so the
CLI's start-up stays fast.
"""

__all__ = ["build_app", "serve"]


def __getattr__(name: str):
    if name == "build_app":
        from .app import build_app
        return build_app
    if name == "serve":
        from .server import serve
        return serve
    raise AttributeError(name)
