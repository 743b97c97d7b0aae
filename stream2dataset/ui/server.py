"""uvicorn serving the dashboard in a thread of this process, for as long as the caller wants."""

from __future__ import annotations

import threading
import time

import uvicorn

__all__ = ["serve", "start"]


def start(app, host: str = "127.0.0.1", port: int = 8765,
          timeout_s: float = 30.0) -> tuple[uvicorn.Server, threading.Thread]:
    """Start serving `app` in a daemon thread; returns once it listens (or raises why not).
    Stop it with `server.should_exit = True` and `thread.join()`."""
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                           lifespan="off"))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            server.run()
        except BaseException as err:  # noqa: BLE001 - e.g. the port in use (uvicorn exits via SystemExit)
            errors.append(err)

    thread = threading.Thread(target=run, name="s2d-dashboard", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise OSError(f"the dashboard could not listen on {host}:{port}"
                          + (f" ({errors[0]})" if errors and str(errors[0]) not in ("", "1") else
                             " (is the port in use? pick another with --port)"))
        time.sleep(0.05)
    return server, thread


def serve(app, host: str = "127.0.0.1", port: int = 8765, on_ready=None) -> None:
    """Serve `app` until Ctrl-C (which is raised on, once the server has stopped)."""
    server, thread = start(app, host, port)
    if on_ready:
        on_ready()
    try:
        while thread.is_alive():
            thread.join(0.5)
    finally:
        server.should_exit = True
        thread.join(10)
