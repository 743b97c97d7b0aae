"""Connecting to Ray: an existing cluster (`--address`), or a local one that outlives this process.

Recorders are detached actors, so `up` needs a Ray that keeps running after the command returns:
without an address we start `ray start --head` on this machine (once) and remember that we did,
so `down` can stop it again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .errors import UserError

log = logging.getLogger(__name__)

LOCAL_STATE = Path(os.environ.get("S2D_STATE_DIR", Path.home() / ".cache" / "stream2dataset")) / "local-ray.json"


def ray_env_defaults() -> None:
    # Checked on this stack (DESIGN.md): local Ray needs these to start offline without prompts.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_TMPDIR", "/tmp/ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _ray_cli() -> str:
    exe = Path(sys.executable).parent / "ray"
    return str(exe) if exe.exists() else (shutil.which("ray") or "ray")


def connect(address: str | None, namespace: str, start_local: bool = True) -> None:
    """ray.init against `address`, or the local cluster (started if needed and allowed)."""
    import ray

    ray_env_defaults()
    if ray.is_initialized():
        return
    if address:
        try:
            ray.init(address=address, namespace=namespace, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError) as err:
            raise UserError(f"cannot reach Ray at {address!r} ({err}); check --address / ray.address") from None
        return
    if not LOCAL_STATE.exists():
        if not start_local:
            raise UserError("no local stream2dataset Ray is running; start the service with `stream2dataset up`")
        log.info("starting a local Ray head node")
        cmd = [_ray_cli(), "start", "--head", "--disable-usage-stats", "--include-dashboard=false",
               f"--temp-dir={os.environ['RAY_TMPDIR']}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise UserError(f"`ray start --head` failed: {proc.stderr.strip().splitlines()[-1:]}")
        LOCAL_STATE.parent.mkdir(parents=True, exist_ok=True)
        LOCAL_STATE.write_text(json.dumps({"started_by": "stream2dataset up"}))
    try:
        ray.init(address="auto", namespace=namespace, log_to_driver=False, logging_level=logging.WARNING)
    except ConnectionError:
        LOCAL_STATE.unlink(missing_ok=True)  # stale: the local Ray was stopped behind our back
        raise UserError("the local Ray started by `up` is gone; run `stream2dataset up` again") from None


def stop_local() -> bool:
    """Stop the local Ray that `up` started, if any."""
    import ray

    if not LOCAL_STATE.exists():
        return False
    ray.shutdown()  # disconnect first, or Ray reports its own head processes dying to this driver
    subprocess.run([_ray_cli(), "stop"], capture_output=True)
    LOCAL_STATE.unlink(missing_ok=True)
    return True


def connect_for_job(address: str | None, namespace: str) -> None:
    """A foreground job uses the running service's Ray (or `address`), else a Ray of its own."""
    import ray

    ray_env_defaults()
    if ray.is_initialized():
        return
    if address or LOCAL_STATE.exists():
        connect(address, namespace, start_local=False)
    else:
        ray.init(namespace=namespace, log_to_driver=False, logging_level=logging.WARNING)
