"""The service, above the stages: a supervisor actor that keeps one recorder per channel and
schedules processing, the dedup pass and raw-file retention (`supervisor`, `retention`).

`up`, `status` and `down` are what the CLI and the dashboard call."""

from .supervisor import Supervisor, down, status, up

__all__ = ["Supervisor", "down", "status", "up"]
