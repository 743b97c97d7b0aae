"""`stream2dataset demo`: the embedded demo channel, recorded, processed and trained on end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .options import app, console


@app.command()
def demo(workdir: Annotated[Path, typer.Option(help="where the demo's config and data go")] = Path("demo-data"),
         seconds: Annotated[float, typer.Option(help="how long to record")] = 60.0) -> None:
    """The embedded default: a demo channel served as live HLS on loopback, recorded end to end."""
    from .walkthrough import run_demo  # deferred on purpose: it imports every stage (Ray, torch)

    run_demo(workdir, seconds, console)
