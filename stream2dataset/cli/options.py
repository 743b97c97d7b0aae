"""The root command, its console and the options every command group shares."""

from __future__ import annotations

import json
import logging
import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from .. import cluster
from ..errors import UserError

DEFAULT_CONFIG_NAME = "stream2dataset.yaml"  # config.DEFAULT_CONFIG_NAME, without importing pydantic to say it


def load_config(path):
    """config.load_config, imported when a command runs: `--help` and `--version` need no pydantic."""
    from ..config import load_config as load  # pydantic: deferred, as the comment above says

    return load(path)

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Record Twitch/YouTube/HLS channels with Ray and turn them into datasets.")
console = Console()

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", envvar="S2D_CONFIG", help="config file")]
AddressOpt = Annotated[Optional[str], typer.Option("--address", envvar="RAY_ADDRESS",
                                                   help="Ray cluster address (default: the config's, else a local Ray)")]


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"stream2dataset {version('stream2dataset')}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                help="print the version and exit")] = False,
          verbose: Annotated[bool, typer.Option("--verbose", "-v", help=(
              "show the libraries' logs too (Ray, Ray Data INFO); without it they stay in Ray's log files"))] = False,
          ) -> None:
    if verbose:
        cluster.set_verbose(True)
        logging.getLogger().setLevel(logging.INFO)


class OutputFormat(str, Enum):
    table = "table"
    json = "json"


FormatOpt = Annotated[OutputFormat, typer.Option("--format", "-f", help="table, or json for scripts")]


def print_json(data) -> None:
    """Machine-readable output: plain JSON on stdout, no rich markup or wrapping."""
    print(json.dumps(data, indent=1, default=str))


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not m:
        raise UserError(f"--duration {text!r}: use a number with s, m or h, e.g. 90s, 10m, 1h")
    return float(m[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[m[2]]

