"""`stream2dataset ui`: serve the read-only dashboard (also `stream2dataset up --ui`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Callable, Optional

import typer

from .. import cluster
from ..errors import UserError
from .options import DEFAULT_CONFIG_NAME, AddressOpt, ConfigOpt, app, console, load_config

if TYPE_CHECKING:  # pydantic only when a command runs: `--help` stays fast
    from ..config import Config

__all__ = ["serve_dashboard", "ui"]

LOOPBACK = ("127.0.0.1", "localhost")


def _service_status(cfg: Config, address: Optional[str]) -> Optional[Callable[[], dict]]:
    """`service.status` on the service's Ray, if one is running; else None (the manifest alone)."""
    try:
        cluster.connect(address or cfg.ray.address, cfg.ray.namespace, start_local=False)
    except UserError as err:
        console.print(f"[yellow]{err}[/yellow]: channels show the manifest only")
        return None
    from .. import service  # Ray: deferred, the dashboard without a running service needs none

    return service.status


def serve_dashboard(cfg: Config, host: str, port: int, service_status: Optional[Callable[[], dict]]) -> None:
    """Serve the dashboard on host:port until Ctrl-C."""
    from ..ui.app import LOOPBACK_HOSTS, build_app  # Starlette, uvicorn: deferred, only `ui` needs them
    from ..ui.server import serve

    loopback = host in LOOPBACK
    dashboard = build_app(cfg, service_status, allowed_hosts=LOOPBACK_HOSTS if loopback else None)
    if not loopback:
        console.print(f"[yellow]listening on {host}: anyone who reaches this port can browse the dataset and "
                      "run read-only SQL on it[/yellow]")
    try:
        url = f"http://{'127.0.0.1' if host == 'localhost' else host}:{port}/"
        serve(dashboard, host, port, on_ready=lambda: console.print(f"dashboard (read-only) on {url} ; "
                                                                   "Ctrl-C stops it"))
    except OSError as err:
        raise UserError(str(err)) from None


@app.command()
def ui(config: ConfigOpt = Path(DEFAULT_CONFIG_NAME),
       host: Annotated[str, typer.Option(help="address to listen on; 0.0.0.0 opens it to the network")] = "127.0.0.1",
       port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port")] = 8765,
       address: AddressOpt = None) -> None:
    """Serve a read-only web dashboard: channels (live), newest crops, stats chart, SQL, training runs."""
    cfg = load_config(config)
    serve_dashboard(cfg, host, port, _service_status(cfg, address))
