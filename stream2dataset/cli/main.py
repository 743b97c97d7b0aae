"""`main`: run the command line, and turn errors a user can fix into one line and an exit status."""

from __future__ import annotations

import logging
import signal
import sys

import click
import typer

from ..errors import Interrupted, Terminated, UserError, raise_terminated
# Each command group registers its commands on `app` when imported, in the order `--help` lists them.
from . import recording, processing, demo, dataset, identity, training, ui  # noqa: F401,E402  isort: skip
from .options import app

# typer raises the exceptions of its own copy of click (typer._click), not the click package's.
try:
    from typer._click import exceptions as _typer_click
except ImportError:  # an older typer that uses click itself
    _typer_click = click.exceptions
_CLICK_ERRORS = (click.ClickException, _typer_click.ClickException)
_ABORTS = (click.exceptions.Abort, typer.Abort, KeyboardInterrupt)


def usage_error_line(err: Exception) -> str:
    """A click usage error as one line: what is wrong, then where the right usage is shown."""
    ctx = getattr(err, "ctx", None)
    command = ctx.command_path if ctx else "stream2dataset"
    msg = " ".join(err.format_message().replace("Value error, ", "").split()).rstrip(".")
    option = getattr(err, "option_name", None)
    if ctx is not None and ctx.parent is None and option and "Possible options" not in msg:
        # `stream2dataset -c x status`: a command's option before the command (not a mistyped --verbose)
        commands = getattr(ctx.command, "commands", {})
        named = next((a for a in sys.argv[1:] if a in commands), "sql")
        return f"{msg}: options go after the command, e.g. `stream2dataset {named} {option} ...`"
    return f"{msg}{' ' if msg.endswith('?') else '; '}see `{command} --help`"  # after "Did you mean ...?"


def _end_ray() -> None:
    """Disconnect from Ray before exiting on a signal, so its atexit hook has nothing left to report."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        try:
            ray.shutdown()
        except BaseException:  # noqa: BLE001 - ending anyway; a second signal here must not print a trace
            pass


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, raise_terminated)  # cluster.reclaim_sigterm puts it back after ray.init
    try:
        code = app(prog_name="stream2dataset", standalone_mode=False)
        if code == 130:  # typer turns KeyboardInterrupt (Ctrl-C) into Exit(130), returned here
            raise KeyboardInterrupt
        if isinstance(code, int) and code:
            sys.exit(code)
    except Terminated:
        print("terminated", file=sys.stderr)
        _end_ray()
        sys.exit(143)
    except UserError as err:
        for line in str(err).splitlines():
            print(f"error: {line}", file=sys.stderr)
        sys.exit(130 if isinstance(err, Interrupted) else 2)
    except _CLICK_ERRORS as err:
        if isinstance(err, (click.exceptions.NoArgsIsHelpError, _typer_click.NoArgsIsHelpError)):
            print(err.ctx.get_help(), file=sys.stderr)
        else:
            print(f"error: {usage_error_line(err)}", file=sys.stderr)
        sys.exit(2)
    except _ABORTS:
        print("interrupted", file=sys.stderr)
        _end_ray()
        sys.exit(130)

