"""The recording service: a supervisor actor that keeps one recorder actor per channel.

All actors are named and detached in the config's Ray namespace, so `up`, `status` and `down` are
separate commands that find them again. The supervisor also runs the processing pool (`pool.py`):
segments are processed as they are committed, by actors that live as long as the supervisor. The supervisor re-reads the config file when it changes:
added channels start, removed ones finish their segment and stop, changed ones restart, the rest
are left alone. Ray restarts a dead recorder, which then recovers its unfinished segment.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ..config import Config, channel_fingerprint, load_config
from ..errors import ConfigError, UserError
from ..ingest.recorder import ChannelRecorder
from .pool import ProcessingPool, same_processing

log = logging.getLogger(__name__)

SUPERVISOR = "supervisor"
RECORDER_PREFIX = "recorder-"
RELOAD_INTERVAL_S = 2.0
STOP_TIMEOUT_S = 60.0
POOL_TICK_S = 0.2


class RecorderActor(ChannelRecorder):
    """The recorder as a Ray actor; `fingerprint` lets a supervisor tell if its config changed."""

    def __init__(self, config: Config, channel_name: str):
        super().__init__(config, channel_name)
        self.fingerprint = channel_fingerprint(config, self.channel)

    def status(self) -> dict:
        ctx = ray.get_runtime_context()
        return {**super().status(), "fingerprint": self.fingerprint,
                "restarted": ctx.was_current_actor_reconstructed, "pid": os.getpid(), "node": ctx.get_node_id()}


def _placement(node_id: str, pinned: bool) -> dict:
    if not pinned:
        return {"scheduling_strategy": "SPREAD"}
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)}


# The Supervisor runs commit rounds for as long as the service does. Arrow's default pool (mimalloc)
# keeps pages it frees: 200 rounds replayed grew a process by 15 MB with it, 9 MB with malloc's
# (bench/rounds.py). `pa.set_memory_pool` does not reach Arrow's C++ readers: the variable does.
# malloc's mmap threshold is fixed: glibc otherwise raises it as big blocks are freed and then
# serves them from its heap, which it keeps; this way a shard merge's buffers go back to the system.
LONG_LIVED_ENV = {"ARROW_DEFAULT_MEMORY_POOL": "system", "MALLOC_MMAP_THRESHOLD_": "262144"}


class Supervisor:
    """Reconciles the running recorders with the config file, every few seconds."""

    def __init__(self, config_path: str, node_id: str):
        self.path = Path(config_path)
        self.node_id = node_id  # the node that holds the config file (and a local storage root)
        self.config: Config | None = None
        self.mtime = 0.0
        self.error = ""
        self.recorders: dict[str, ray.actor.ActorHandle] = {}
        self.fingerprints: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.pool: ProcessingPool | None = None
        self.processing = {"state": "idle", "since": time.time(), "last": "", "error": ""}
        self._adopt_running()
        self.reconcile()
        threading.Thread(target=self._watch, daemon=True).start()
        self._pool_thread = threading.Thread(target=self._run_pool, daemon=True)
        self._pool_thread.start()

    def _adopt_running(self) -> None:
        """After a supervisor restart, take the recorders that kept running back under control."""
        for name in ray.util.list_named_actors():
            if name.startswith(RECORDER_PREFIX):
                handle = ray.get_actor(name)
                try:
                    st = ray.get(handle.status.remote(), timeout=10)
                except Exception:  # noqa: BLE001 - a dead recorder is recreated by reconcile
                    continue
                self.recorders[st["channel"]] = handle
                self.fingerprints[st["channel"]] = st["fingerprint"]

    def _run_pool(self) -> None:
        """The processing pool's loop (a thread): windows flow to the actors while the service runs."""
        while not self._stop.is_set():
            cfg = self.config
            try:
                if cfg is None or not cfg.processing.auto:
                    self._close_pool()
                elif self.pool is None or not same_processing(self.pool.config, cfg):
                    self._close_pool()  # a processing edit: new actors with the new settings
                    self.pool = ProcessingPool(cfg)
                if self.pool is not None:
                    self.pool.step()
                    self.processing = self.pool.status()
            except Exception as err:  # noqa: BLE001 - keep the loop; the error is in status
                log.exception("processing pool")
                self.processing["error"] = f"{type(err).__name__}: {err}"
                self._stop.wait(2.0)
            self._stop.wait(POOL_TICK_S)

    def _close_pool(self, drain_s: float = 0.0) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            if drain_s:
                pool.drain(drain_s)
            pool.shutdown()

    def _watch(self) -> None:
        while not self._stop.wait(RELOAD_INTERVAL_S):
            try:
                self.reconcile()
            except Exception:  # noqa: BLE001 - keep watching; the error is in status
                log.exception("reconcile failed")

    def reconcile(self) -> dict:
        """Load the config if it changed and start/stop/restart recorders to match it."""
        with self._lock:
            if self._stop.is_set():
                return {}
            try:
                mtime = self.path.stat().st_mtime
                if mtime != self.mtime or self.config is None:
                    self.config = load_config(self.path)
                    self.mtime, self.error = mtime, ""
            except (ConfigError, OSError) as err:
                # Keep recording with the last good config; show why the edit was not applied.
                self.error = f"config not reloaded: {err}"
                if self.config is None:
                    raise
            cfg = self.config
            want = {ch.name: channel_fingerprint(cfg, ch) for ch in cfg.channels if ch.enabled}
            changes = {"started": [], "stopped": [], "restarted": []}
            changes["stopped"] = sorted(set(self.recorders) - set(want))
            self._stop_recorders(changes["stopped"])
            for name, fp in sorted(want.items()):
                if name in self.recorders and self.fingerprints.get(name) == fp:
                    continue
                if name in self.recorders:
                    self._stop_recorders([name])
                    changes["restarted"].append(name)
                else:
                    changes["started"].append(name)
                self._start_recorder(cfg, name, fp)
            if any(changes.values()):
                log.info("reconciled: %s", changes)
            return changes

    def _start_recorder(self, cfg: Config, name: str, fingerprint: str) -> None:
        actor_cls = ray.remote(RecorderActor)
        self.recorders[name] = actor_cls.options(
            name=RECORDER_PREFIX + name, lifetime="detached", max_restarts=-1, max_task_retries=-1,
            max_concurrency=8, num_cpus=cfg.ray.recorder_cpus, get_if_exists=True,
            **_placement(self.node_id, pinned=not cfg.storage.any_node),
        ).remote(cfg, name)
        self.fingerprints[name] = fingerprint

    def _stop_recorders(self, names: list[str]) -> list[dict]:
        """Ask all to finish their open segment at once, then wait: stopping 100 takes as long as 1."""
        handles = {n: self.recorders.pop(n) for n in names}
        refs = {n: h.stop.remote() for n, h in handles.items()}
        deadline = time.monotonic() + STOP_TIMEOUT_S
        finals = []
        for name, handle in handles.items():
            self.fingerprints.pop(name, None)
            try:
                finals.append(ray.get(refs[name], timeout=max(1.0, deadline - time.monotonic())))
            except Exception as err:  # noqa: BLE001 - stopping must not fail on a dead actor
                finals.append({"channel": name, "state": "stopped", "last_error": f"stop: {err}"})
            ray.kill(handle, no_restart=True)
        return finals

    def status(self) -> dict:
        handles = dict(self.recorders)  # reconcile may change the dict meanwhile
        names = sorted(handles)
        refs = {n: handles[n].status.remote() for n in names}
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=5.0)
        rows = []
        for n in names:
            try:
                rows.append(ray.get(refs[n]) if refs[n] in ready else {"channel": n, "state": "restarting"})
            except ray.exceptions.RayError as err:
                rows.append({"channel": n, "state": "restarting", "last_error": type(err).__name__})
        return {"config": str(self.path), "config_error": self.error, "channels": rows, "processing": self.processing}

    def shutdown(self) -> list[dict]:
        """Stop every recorder (each finishes its open segment) and the watcher."""
        self._stop.set()
        self._pool_thread.join(timeout=POOL_TICK_S * 10)
        with self._lock:
            finals = self._stop_recorders(sorted(self.recorders))
        self._close_pool(drain_s=STOP_TIMEOUT_S / 2)  # windows in hand are finished and committed
        return finals


# ---------------------------------------------------------------------- commands


def _supervisor():
    try:
        return ray.get_actor(SUPERVISOR)
    except ValueError:
        return None


def up(config_path: str | Path) -> dict:
    """Start (or update) the service on the connected Ray; returns the initial status."""
    config_path = Path(config_path).resolve()
    load_config(config_path)  # fail here, in the operator's terminal, on a bad file
    sup = _supervisor()
    if sup is None:
        node_id = ray.get_runtime_context().get_node_id()
        sup = ray.remote(Supervisor).options(
            name=SUPERVISOR, lifetime="detached", max_restarts=-1, max_task_retries=-1, max_concurrency=4,
            num_cpus=0, get_if_exists=True, runtime_env={"env_vars": LONG_LIVED_ENV}, **_placement(node_id, pinned=True),
        ).remote(str(config_path), node_id)
    else:
        ray.get(sup.reconcile.remote())
    return ray.get(sup.status.remote())


def status() -> dict:
    sup = _supervisor()
    if sup is None:
        raise UserError("the service is not running in this Ray namespace; start it with `stream2dataset up`")
    return ray.get(sup.status.remote(), timeout=30)


def down() -> list[dict]:
    """Stop all recorders cleanly, then the supervisor."""
    sup = _supervisor()
    if sup is None:
        return []
    final = ray.get(sup.shutdown.remote(), timeout=STOP_TIMEOUT_S * 2)
    ray.kill(sup, no_restart=True)
    deadline = time.monotonic() + 10
    while _supervisor() is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    return final
