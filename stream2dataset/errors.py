"""The exception hierarchy.

`UserError`s are mistakes an operator can fix: the CLI prints their one-line message and exits 2.
`ExpectedError`s are states of the world (a channel is offline, a server errs): recorders back off
and show them in `status`, they are not bugs. Anything else is a bug and keeps its traceback.
"""


class S2DError(Exception):
    """Base of every error this package raises on purpose."""


class UserError(S2DError):
    """Something the operator can fix; the message says what and how, on one line."""


class Interrupted(UserError):
    """The operator stopped a command (Ctrl-C): one line, exit status 130."""


class ConfigError(UserError):
    """The config file is missing, unreadable or invalid."""


class ExpectedError(S2DError):
    """A normal state of an outside system: back off and retry, don't crash."""


class ChannelOffline(ExpectedError):
    """The channel has no live stream right now."""


class StreamError(ExpectedError):
    """A network, HTTP or platform error while opening or reading a stream."""


class CorruptMedia(S2DError):
    """A video file that does not decode; it is quarantined with this message as the reason."""


class Terminated(BaseException):
    """The process got SIGTERM: like KeyboardInterrupt (no `except Exception` swallows it), the CLI
    ends the command cleanly on one line with exit status 143 (128 + SIGTERM)."""


def raise_terminated(signum, frame) -> None:
    """The SIGTERM handler of the CLI (installed again after `ray.init`, whose C++ core worker puts a
    failure handler that prints a stack trace in its place)."""
    raise Terminated()
