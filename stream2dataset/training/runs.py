"""The run folder: `<root>/runs/<run>/`, everything a training run leaves behind.

    run.json                 kind, snapshot (name, created, rows, channels), created, config hash
    config.yaml              the resolved training config the run was started (or resumed) with
    metrics.csv              step, loss, lr, images/s, data wait, GPU memory, ...
    events.jsonl             started / restored (from which step; each worker's Ray node)
    tb/                      TensorBoard event files (same metrics)
    samples/step-NNNNNNN.png sample grids written during training
    checkpoint-NNNNNNN/      Ray Train checkpoints: state.pt (model, EMA, optimizer, step, config, snapshot)

Ray Train owns the checkpoint folders and resumes a run from the newest one when it is started
again under the same name; the rest is written by rank 0.
"""

from __future__ import annotations

import csv
import json
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from ..config import TrainingConfig, config_hash
from ..errors import UserError
from ..names import ARTIFACT_NAME
from ..layout import RUNS, Storage, atomic_write_bytes, push_file

PUSH_EVERY_S = 2.0
CHECKPOINT = re.compile(r"^checkpoint-(\d{7,})$")


def run_names(storage: Storage) -> list[str]:
    """Every run that has a run.json, here or in the object store, by name."""
    return sorted({key.split("/")[1] for key in storage.files(RUNS) if key.endswith("/run.json")})


def run_dir(storage: Storage, name: str) -> Path:
    if not ARTIFACT_NAME.match(name):
        raise UserError(f"run name {name!r}: use letters, digits, '.', '_' or '-' (at most 64, no '/')")
    return storage.runs_dir / name


SMALL_FILES = ("run.json", "config.yaml", "metrics.csv", "events.jsonl")


def pull_run(storage: Storage, name: str, newest_state: bool = False) -> Path:
    """Bring run `name`'s files into this node's copy of an object-store root: the small ones, and
    with `newest_state` the newest checkpoint (Ray Train writes them to the store); its folder."""
    folder = run_dir(storage, name)
    if storage.remote:
        storage.pull(*(f"runs/{name}/{f}" for f in SMALL_FILES))
        if newest_state and (steps := checkpoint_steps(storage, name)):
            storage.pull(f"runs/{name}/checkpoint-{steps[-1]:07d}")
    return folder


def checkpoint_steps(storage: Storage, name: str) -> list[int]:
    """Steps of run `name`'s complete checkpoints, oldest first (here, or in the store)."""
    found = {int(m.group(1)) for key in storage.files(f"runs/{name}")
             if (parts := key.split("/"))[-1] == "state.pt" and (m := CHECKPOINT.match(parts[-2]))}
    return sorted(found)


def new_run_name(kind: str, snapshot: str) -> str:
    return f"{kind}-{snapshot}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"[:64]


def write_run_info(folder: Path, kind: str, snapshot: dict, cfg: TrainingConfig) -> None:

    folder.mkdir(parents=True, exist_ok=True)
    info = {"kind": kind, "snapshot": snapshot, "config_hash": config_hash(cfg),
            "created": datetime.now(timezone.utc).isoformat()}
    if (folder / "run.json").exists():  # a resume keeps the original creation time
        info["created"] = read_run_info(folder)["created"]
    atomic_write_bytes(folder / "run.json", json.dumps(info, indent=1).encode(), sync=False)
    atomic_write_bytes(folder / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False).encode(), sync=False)


def read_run_info(folder: Path) -> dict:
    path = folder / "run.json"
    if not path.exists():
        raise UserError(f"{folder}: not a training run (no run.json); `stream2dataset runs` lists the runs")
    return json.loads(path.read_text())


def read_run_config(folder: Path) -> TrainingConfig:
    return TrainingConfig.model_validate(yaml.safe_load((folder / "config.yaml").read_text()))


def checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, folder) of each complete checkpoint, oldest first."""
    found = [(int(m.group(1)), p) for p in folder.glob("checkpoint-*")
             if (m := CHECKPOINT.match(p.name)) and (p / "state.pt").exists()]
    return sorted(found)


def load_state(folder: Path, step: int | None = None) -> dict:
    """The newest checkpoint's state (or the one at `step`), on CPU."""
    import torch

    found = checkpoints(folder)
    if step is not None:
        found = [c for c in found if c[0] == step]
    if not found:
        what = f"at step {step}" if step is not None else "yet"
        raise UserError(f"run {folder.name!r} has no checkpoint {what} (under {folder}); train longer or pick another run")
    return torch.load(found[-1][1] / "state.pt", map_location="cpu", weights_only=False)


class MetricsLog:
    """metrics.csv and TensorBoard, rank 0 only. On a resume, rows after the restored step (written
    by the attempt that died) are dropped first, so the CSV never holds a step twice."""

    FIELDS = ["step", "epoch", "loss", "lr", "images_per_s", "data_wait", "gpu_mem_gb", "elapsed_s"]

    def __init__(self, folder: Path, start_step: int, extra: list[str]):
        from torch.utils.tensorboard import SummaryWriter

        self.path = folder / "metrics.csv"
        self.pushed = 0.0
        self.fields = self.FIELDS + [f for f in extra if f not in self.FIELDS]
        kept = []
        if self.path.exists():
            with self.path.open() as f:
                kept = [r for r in csv.DictReader(f) if int(r["step"]) <= start_step]
        body = [",".join(self.fields)] + [",".join(r.get(k, "") or "" for k in self.fields) for r in kept]
        atomic_write_bytes(self.path, ("\n".join(body) + "\n").encode(), sync=False)
        self.file = self.path.open("a", newline="")
        self.csv = csv.DictWriter(self.file, self.fields, extrasaction="ignore")
        self.tb = SummaryWriter(str(folder / "tb"), purge_step=start_step + 1)
        self.started = time.monotonic()

    def event(self, name: str, **fields) -> None:
        """One line in events.jsonl: starts, restores from a checkpoint (after a failure or a resume)."""
        line = json.dumps({"event": name, "time": datetime.now(timezone.utc).isoformat(), **fields})
        with (self.path.parent / "events.jsonl").open("a") as f:
            f.write(line + "\n")
        push_file(self.path.parent / "events.jsonl")

    def write(self, row: dict) -> None:
        row = {**row, "elapsed_s": round(time.monotonic() - self.started, 2)}
        self.csv.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self.file.flush()
        if time.monotonic() - self.pushed > PUSH_EVERY_S:  # appended in place: uploaded now and then
            push_file(self.path)
            self.pushed = time.monotonic()
        for k, v in row.items():
            if k not in ("step", "epoch") and isinstance(v, (int, float)):
                self.tb.add_scalar(k, v, row["step"])

    def close(self) -> None:
        self.file.close()
        push_file(self.path)
        self.tb.close()


def read_metrics(folder: Path) -> list[dict]:
    path = folder / "metrics.csv"
    if not path.exists():
        return []
    with path.open() as f:
        return [{k: float(v) if v not in ("", None) else None for k, v in r.items()} for r in csv.DictReader(f)]
