"""The config file (`stream2dataset.yaml`): pydantic models, validation, hashing.

This is the only module that reads the file. Everything downstream gets typed objects, and every
output records `Config.hash` so a row can be traced to the settings that produced it.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from .errors import ConfigError
from .names import CHANNEL_NAME as NAME_RE
from .sources import resolve_source

DEFAULT_CONFIG_NAME = "stream2dataset.yaml"

PLATFORMS = ("twitch", "youtube", "hls", "file")
MODES = ("live", "videos", "thumbnails")

# A channel name becomes a folder name: lowercase slug only, so no traversal and no shell text.
URI_RE = re.compile(r"^[a-z][a-z0-9+.-]*://")
# pyarrow.fs.FileSystem.from_uri's object stores and HDFS (a local root is written as a path).
URI_SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "hdfs", "viewfs")
# Characters that only appear in a source by mistake or malice (shell metacharacters, whitespace).
UNSAFE_SOURCE_CHARS = set(";|&$`<>\"'\\\n\r\t\0 ") | {chr(c) for c in range(32)}


class _Model(BaseModel):
    # strict: YAML's `true` is not the number 1, nor "10" the number 10; finite: `.inf` is no size.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class RecordingSettings(_Model):
    """How a channel is recorded; every field can be overridden per channel."""

    segment_seconds: float = Field(60.0, gt=0, le=3600, description="length of each recorded segment")
    quality: str = Field("720p60,720p,best", description="streamlink quality preference, first available wins")
    poll_interval_s: float = Field(30.0, gt=0, le=86400, description="how often an offline channel is checked")
    poll_jitter: float = Field(0.1, ge=0, lt=1, description="fraction of the poll interval randomly taken off")
    backoff_initial_s: float = Field(2.0, gt=0, description="first wait after an error or an ended stream")
    backoff_max_s: float = Field(300.0, gt=0, description="cap of the exponential backoff")
    stream_timeout_s: float = Field(60.0, gt=0, description="no data for this long means the stream dropped")
    min_free_gb: float = Field(5.0, ge=0, description="pause recording when the storage root has less free space")
    token_env: str = Field("TWITCH_OAUTH_TOKEN", pattern=r"^[A-Z_][A-Z0-9_]*$",
                           description="environment variable holding a Twitch OAuth token (never stored)")
    video_format: str = Field("bv*[height<=720]+ba/b[height<=720]/b", description="yt-dlp format for videos mode")

    @model_validator(mode="after")
    def _backoff_order(self) -> RecordingSettings:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be >= backoff_initial_s")
        return self


class RecordingOverrides(_Model):
    """The per-channel subset of RecordingSettings that was set explicitly."""

    segment_seconds: float | None = Field(None, gt=0, le=3600)
    quality: str | None = None
    poll_interval_s: float | None = Field(None, gt=0, le=86400)
    poll_jitter: float | None = Field(None, ge=0, lt=1)
    backoff_initial_s: float | None = Field(None, gt=0)
    backoff_max_s: float | None = Field(None, gt=0)
    stream_timeout_s: float | None = Field(None, gt=0)
    min_free_gb: float | None = Field(None, ge=0)
    token_env: str | None = Field(None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    video_format: str | None = None


class Channel(_Model):
    """One channel entry. `platform` and `name` are filled in from `source` when left out."""

    source: str = Field(description="channel name, @handle, URL, or local path (file platform)")
    platform: Literal["twitch", "youtube", "hls", "file"] | None = None
    name: str | None = Field(None, description="folder-safe id; derived from the source when left out")
    mode: Literal["live", "videos", "thumbnails"] | None = None
    tags: list[str] = Field(default_factory=list)
    enabled: bool = True
    recording: RecordingOverrides = Field(default_factory=RecordingOverrides)

    @field_validator("source")
    @classmethod
    def _safe_source(cls, v: str) -> str:
        # `&` separates query parameters; sources never reach a shell, so URLs may keep it.
        unsafe = UNSAFE_SOURCE_CHARS - {"&"} if re.match(r"^[a-z]+://", v) else UNSAFE_SOURCE_CHARS
        bad = sorted({c for c in v if c in unsafe})
        if bad or not v:
            raise ValueError(f"contains characters not allowed in a source: {''.join(map(repr, bad)) or 'empty'}")
        if ".." in Path(v.split("?")[0]).parts or "/../" in v:
            raise ValueError("path traversal ('..') is not allowed")
        return v

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str | None) -> str | None:
        if v is not None and not NAME_RE.match(v):
            raise ValueError("must match [a-z0-9][a-z0-9_-]{0,63} (lowercase letters, digits, _ and -)")
        return v

    @field_validator("tags")
    @classmethod
    def _safe_tags(cls, v: list[str]) -> list[str]:
        for tag in v:
            if not re.match(r"^[\w.:-]{1,64}$", tag):
                raise ValueError(f"tag {tag!r} must be 1-64 letters, digits or _.:-")
        return v

    @model_validator(mode="after")
    def _resolve(self) -> Channel:
        # raises ValueError for an unmatched URL or a bad mode
        resolved = resolve_source(self.source, self.platform, self.name, self.mode)
        for key, value in resolved.items():
            object.__setattr__(self, key, value)
        if not NAME_RE.match(self.name or ""):
            raise ValueError(f"derived name {self.name!r} is not folder-safe; set `name:` explicitly")
        return self

    def settings(self, defaults: RecordingSettings) -> RecordingSettings:
        """The effective recording settings: global defaults with this channel's overrides."""
        overrides = self.recording.model_dump(exclude_none=True)
        return RecordingSettings(**{**defaults.model_dump(), **overrides})


def _checked_uri(uri: str) -> str:
    """An object-store root URI, normalised; ValueError (one line) for anything else."""
    scheme, _, rest = uri.partition("://")
    if scheme not in URI_SCHEMES:
        raise ValueError(f"root {uri!r}: unknown scheme {scheme!r}; use a path or one of "
                         f"{', '.join(s + '://' for s in URI_SCHEMES)}")
    rest = rest.rstrip("/")
    if "@" in rest.split("/")[0]:  # the config is copied next to every output: no secrets in it
        raise ValueError(f"root {scheme}://…@…: credentials do not go in the config; set them in the "
                         "environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...)")
    if not rest or ".." in rest.split("/") or "?" in rest:
        raise ValueError(f"root {scheme + '://' + rest!r}: give a bucket and an optional prefix, e.g. s3://bucket/datasets/a "
                         "(options such as the endpoint come from the environment: AWS_ENDPOINT_URL)")
    return f"{scheme}://{rest}"


class StorageConfig(_Model):
    root: Path = Field(Path("s2d-data"), strict=False, description="storage root: a path (relative paths are relative to the config "
                                                     "file), or an object-store URI such as s3://bucket/prefix (any "
                                                     "pyarrow filesystem); with a URI this becomes the node's working copy")
    uri: str | None = Field(None, description="the object store holding the data, when `root` was given as a URI "
                                              "(set from it; every node reads and writes through it)")
    cache: Path = Field(Path("~/.cache/stream2dataset"), strict=False, description="object-store roots only: where each node keeps "
                                                                     "its working copy ({node}: the Ray node id)")
    shared: bool = Field(False, description="every Ray node mounts the root at the same path (NFS...): "
                                            "recorders may then run on any node, else on the node of `up`")

    @field_validator("root", "cache", mode="before")
    @classmethod
    def _a_path(cls, v: Any) -> Any:
        if not isinstance(v, (str, Path)) or not str(v).strip():  # "" would silently mean the config's folder
            raise ValueError("give a folder path, e.g. s2d-data, or an object-store URI such as s3://bucket/prefix")
        return v

    @model_validator(mode="before")
    @classmethod
    def _split_uri(cls, data: Any) -> Any:
        """`root: s3://bucket/prefix` -> uri = that, root = <cache>/<bucket-prefix>-<hash>."""
        if isinstance(data, dict) and isinstance(data.get("root"), str) and URI_RE.match(data["root"]):
            uri = _checked_uri(data["root"])
            rest = uri.partition("://")[2]
            name = re.sub(r"[^A-Za-z0-9_.-]", "-", rest)[:48] + "-" + hashlib.sha256(uri.encode()).hexdigest()[:8]
            data = {**data, "uri": uri, "root": str(Path(str(data.get("cache") or "~/.cache/stream2dataset")) / name)}
        elif isinstance(data, dict) and isinstance(data.get("uri"), str):  # written out, as in a dumped config
            data = {**data, "uri": _checked_uri(data["uri"])}
        return data

    @property
    def any_node(self) -> bool:
        """Whether a recorder may run on any node (its files reach every other one)."""
        return self.shared or self.uri is not None


class RayConfig(_Model):
    address: str | None = Field(None, description="Ray cluster address; none starts a local Ray")
    namespace: str = Field("stream2dataset", pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    recorder_cpus: float = Field(0.05, gt=0, le=16, description="Ray CPUs reserved per recorder (mostly I/O: "
                                                                 "~0.025 of a core per 720p stream measured)")
    processor_cpus: float = Field(1.0, gt=0, le=64, description="Ray CPUs reserved per processing actor")


class RetentionConfig(_Model):
    raw_keep_hours: float | None = Field(
        None, ge=0, description="delete raw segments this long after they were processed; none keeps them")


OUTPUTS = ("facecam", "face", "aligned_face", "silhouette", "person", "person_cutout", "frame")


class ClipSettings(_Model):
    """Runs of consecutive frames for the temporal model."""

    enabled: bool = Field(False, description="also cut clips of consecutive frames")
    fps: float = Field(8.0, gt=0, le=60, description="clip frame rate")
    length: int = Field(16, ge=2, le=256, description="frames per clip")
    min_motion: float = Field(1.0, ge=0, description="mean grey-level change per frame below which a clip is static")


class ProcessingConfig(_Model):
    """How recorded segments become frames (DESIGN.md `processing/`)."""

    auto: bool = Field(True, description="while `up` runs, process new segments as they are committed")
    interval_s: float = Field(30.0, gt=0, description="while `up` runs, processed segments are committed as shards "
                                                     "at least this often (fewer, larger shards when longer)")
    outputs: list[Literal["facecam", "face", "aligned_face", "silhouette", "person", "person_cutout", "frame"]] = \
        Field(default_factory=lambda: ["facecam"], min_length=1, description="crops made from each sampled frame")
    sample_fps: float = Field(1.0, gt=0, le=120, description="frames sampled per second of video")
    keyframes_only: bool = Field(False, description="decode keyframes only (about 10x cheaper, sparser)")
    max_side: int = Field(1280, ge=64, le=8192, description="frames are downscaled to this longest side while decoding")
    decode_threads: int = Field(1, ge=0, le=64, description="FFmpeg threads per decode: 1 is cheapest per core when the actor pool fills every core; 0 lets FFmpeg choose")
    window_s: float = Field(60.0, gt=0, le=3600, description="long videos are processed in windows this long")
    detector: Literal["mediapipe", "haar"] = Field("mediapipe", description="face detector (haar: OpenCV fallback)")
    min_face_score: float = Field(0.75, ge=0, le=1, description="faces below this detector score are dropped")
    min_crop_px: int = Field(64, ge=8, description="crops smaller than this (either side) are dropped")
    min_sharpness: float = Field(15.0, ge=0, description="variance of the Laplacian, at the size the crop is stored (its `resize`), below which a crop is blurred")
    face_margin: float = Field(0.5, ge=0, le=3, description="`face` output: margin around the face, in face sizes")
    aligned_size: int = Field(256, ge=32, le=2048, description="`aligned_face` output size")
    embeddings: bool = Field(False, description="identity embeddings (dlib ResNet, 128-d) of the `aligned_face` and "
                                                "`face` crops, for `lookalike`; ~100 ms a crop on one loaded core")
    person_threshold: float = Field(0.5, gt=0, lt=1, description="person mask confidence threshold")
    min_person_area: float = Field(0.02, ge=0, le=1, description="frames whose person covers less are dropped")
    transforms: list[Any] = Field(default_factory=lambda: [{"resize": {"size": 256, "mode": "pad"}}],
                                  description="applied in order to every crop (see `transforms` in the README)")
    image_format: Literal["png", "jpeg", "webp"] = Field("png", description="how crops are stored")
    dedup_distance: int = Field(4, ge=0, le=64, description="consecutive crops within this pHash distance are duplicates")
    clips: ClipSettings = Field(default_factory=ClipSettings)
    concurrency: int | None = Field(None, ge=1, description="most processing actors (a job's, or the service's pool, "
                                                             "which grows with the backlog); none: one per CPU")

    @field_validator("transforms")
    @classmethod
    def _valid_chain(cls, v: list[Any]) -> list[Any]:
        from .transforms import parse_chain  # deferred on purpose: numpy and the registry, only for a processing config

        parse_chain(v)  # raises ValueError naming the step, the parameter and what is allowed
        return v

    @model_validator(mode="after")
    def _embeddings_need_faces(self) -> ProcessingConfig:
        if self.embeddings and not {"aligned_face", "face"} & set(self.outputs):
            raise ValueError("embeddings: true needs aligned_face or face in outputs (the crops it embeds)")
        return self


class DatasetConfig(_Model):
    """How rows are stored, deduplicated across segments and indexed (DESIGN.md `dataset/`)."""

    shard_target_mb: float = Field(256, gt=0, le=16384, description="a shard is closed once its rows reach this size")
    row_group_rows: int = Field(2048, ge=16, le=1_000_000, description="rows per Parquet row group")
    dedup_radius: int = Field(4, ge=0, le=16, description="frames across segments within this pHash distance are near-duplicates")
    dedup_auto: bool = Field(True, description="while `up` runs, dedup across segments after each processing pass")
    sql_timeout_s: float = Field(60.0, gt=0, le=86400, description="`sql`, `stats` and `preview` queries running longer "
                                                                   "are interrupted")


class DiffusionSettings(_Model):
    """The image diffusion model: a UNet (diffusers' UNet2DModel) trained with a DDPM schedule."""

    resolution: int = Field(64, ge=16, le=512, description="training and sampling size (square); frames are resized to it")
    base_channels: int = Field(128, ge=8, le=1024, description="UNet channels at full resolution")
    channel_mults: list[int] = Field(default_factory=lambda: [1, 2, 2, 2], min_length=1, max_length=6,
                                     description="channels per UNet level, as multiples of base_channels")
    attention_levels: list[int] = Field(default_factory=lambda: [1], description="UNet levels (0 = full resolution) with self-attention")
    layers_per_block: int = Field(2, ge=1, le=8, description="residual blocks per UNet level")
    dropout: float = Field(0.1, ge=0, lt=1)
    timesteps: int = Field(1000, ge=10, le=10000, description="DDPM noise steps")
    beta_schedule: Literal["linear", "squaredcos_cap_v2"] = Field("linear", description="DDPM noise schedule")
    sample_steps: int = Field(50, ge=1, le=1000, description="DDIM steps when sampling")
    condition_on_channel: bool = Field(False, description="learn one class embedding per channel")

    @model_validator(mode="after")
    def _levels_fit(self) -> DiffusionSettings:
        if any(not 0 <= lv < len(self.channel_mults) for lv in self.attention_levels):
            raise ValueError(f"attention_levels {self.attention_levels}: each must be a level 0..{len(self.channel_mults) - 1} of channel_mults")
        if self.resolution % 2 ** (len(self.channel_mults) - 1):
            raise ValueError(f"resolution {self.resolution} must divide by 2^(levels-1) = {2 ** (len(self.channel_mults) - 1)}")
        return self


class TemporalSettings(_Model):
    """The video model: a frame autoencoder plus a sequence model over the frame latents."""

    resolution: int = Field(64, ge=16, le=256, description="frame size (square); clip frames are resized to it")
    latent_dim: int = Field(256, ge=8, le=4096, description="one frame's latent vector")
    ae_channels: int = Field(64, ge=8, le=512, description="autoencoder channels at full resolution")
    sequence_model: Literal["gru", "transformer"] = Field("gru", description="predicts the next latent from the previous ones")
    hidden: int = Field(512, ge=8, le=8192, description="sequence model width")
    layers: int = Field(2, ge=1, le=24, description="sequence model layers")
    context: int = Field(8, ge=2, le=256, description="frames per training window (cut from a clip)")
    predict_weight: float = Field(1.0, ge=0, description="weight of the next-latent loss against reconstruction")
    rollout: float = Field(0.25, ge=0, le=1, description="share of each window's steps predicted from the model's own sampled latents")
    temperature: float = Field(1.0, ge=0, le=4, description="spread of the sampled steps in `sample temporal` (1: as fitted; 0: the mean step)")
    match_speed: bool = Field(True, description="`sample temporal` scales the temperature so samples move at the real "
                                                "clips' speed, fitted on half the snapshot's clips (not on those it reports against)")

    @field_validator("resolution")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v & (v - 1):  # the autoencoder halves the frame down to 4x4
            raise ValueError(f"resolution {v} must be a power of two (16, 32, 64, 128 or 256)")
        return v


class TrainingConfig(_Model):
    """Distributed training runs (`stream2dataset train`): Ray Train settings and both models."""

    steps: int = Field(2000, ge=1, description="optimizer steps in the run")
    batch_size: int = Field(64, ge=1, le=65536, description="images (diffusion) or windows (temporal) per worker per step")
    lr: float = Field(2e-4, gt=0, le=1)
    lr_schedule: Literal["cosine", "constant"] = Field("cosine", description="after the warm-up")
    warmup_steps: int = Field(100, ge=0, description="steps of linear warm-up to lr; unset: 100, or a tenth of a shorter run")
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, ge=0, description="max gradient norm; 0 disables clipping")
    ema_decay: float = Field(0.999, ge=0, lt=1, description="EMA of the weights used for sampling")
    precision: Literal["bf16", "fp32"] = Field("bf16", description="bf16 autocast on GPUs (CPU workers train in fp32)")
    channels_last: bool = Field(True, description="channels-last memory format on GPUs")
    compile: bool = Field(False, description="torch.compile the model on GPUs")
    flip: bool = Field(True, description="augment with random horizontal flips")
    checkpoint_every: int = Field(500, ge=1, description="steps between checkpoints (and at the end)")
    sample_every: int = Field(500, ge=1, description="steps between sample grids written to the run folder")
    log_every: int = Field(10, ge=1, description="steps between metric rows")
    workers: int = Field(1, ge=1, le=4096, description="Ray Train workers (one per GPU on GPU clusters)")
    gpus_per_worker: float = Field(0, ge=0, le=16, description="0 trains on CPU (gloo), else NCCL")
    cpus_per_worker: float = Field(1, gt=0, le=256)
    loader_cpus: float = Field(1, gt=0, le=64, description="CPUs per Ray Data actor that decodes and augments images")
    prefetch_batches: int = Field(4, ge=0, le=64, description="batches each worker prefetches ahead of the GPU")
    max_failures: int = Field(3, ge=-1, description="worker failures recovered from the last checkpoint (-1: always)")
    seed: int = Field(0, ge=0)
    diffusion: DiffusionSettings = Field(default_factory=DiffusionSettings)
    temporal: TemporalSettings = Field(default_factory=TemporalSettings)

    @field_validator("warmup_steps")
    @classmethod
    def _warmup_in_run(cls, v: int, info: ValidationInfo) -> int:
        # Runs only for a warm-up given explicitly (an unset one is fitted to the run: trainer.py).
        steps = info.data.get("steps")
        if steps is not None and v >= steps:
            raise ValueError(f"{v} warm-up steps in a run of {steps} steps: the learning rate would never reach lr; "
                             f"set warmup_steps below steps (e.g. --set warmup_steps={steps // 10}) or train longer")
        return v


class Config(_Model):
    storage: StorageConfig = Field(default_factory=StorageConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    recording: RecordingSettings = Field(default_factory=RecordingSettings)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    processing: ProcessingConfig = Field(default_factory=ProcessingConfig)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    channels: list[Channel] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        seen: set[str] = set()
        for ch in self.channels:
            if ch.name in seen:
                raise ValueError(f"two channels are named {ch.name!r}; give one an explicit `name:`")
            seen.add(ch.name or "")
        return self

    @property
    def hash(self) -> str:
        """Stable 16-hex hash of the resolved config, recorded with every output."""
        return config_hash(self)

    def channel(self, name: str) -> Channel:
        for ch in self.channels:
            if ch.name == name:
                return ch
        known = ", ".join(c.name or "" for c in self.channels) or "none"
        raise ConfigError(f"no channel named {shorten(repr(name))} in the config (known: {shorten(known)})")


def config_hash(model: BaseModel) -> str:
    canonical = json.dumps(model.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def channel_fingerprint(cfg: Config, channel: Channel) -> str:
    """What a recorder depends on: when it changes on reload, that recorder is restarted."""
    parts = {"channel": channel.model_dump(mode="json"), "settings": channel.settings(cfg.recording).model_dump(),
             "storage": cfg.storage.model_dump(mode="json"), "ray": cfg.ray.model_dump()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def shorten(text: str, limit: int = 80) -> str:
    """A value as an error message shows it: at most `limit` characters."""
    return text if len(text) <= limit else f"{text[:limit - 20]}…({len(text):,} chars)"


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem: `file: field.path: message (got VALUE)`."""
    lines = []
    for e in err.errors():
        path = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in e["loc"]).replace(".[", "[")
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; `stream2dataset init` writes every field)"
        got = e.get("input")
        shown = "" if isinstance(got, (dict, list)) or e["type"] == "missing" else f" (got {shorten(repr(got))})"
        lines.append(f"{source}: {path or '<top>'}: {msg}{shown}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "<config>", base_dir: Path | None = None) -> Config:
    """Validate a parsed YAML document; relative storage roots resolve against `base_dir`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(data).__name__}")
    try:
        cfg = Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None
    root = cfg.storage.root.expanduser()
    if base_dir is not None and not root.is_absolute():
        root = (base_dir / root).resolve()
    if root != cfg.storage.root:
        cfg = cfg.model_copy(update={"storage": cfg.storage.model_copy(update={"root": root})})
    return cfg


# A config is a page of settings: anything far bigger or deeper is a mistake or an attack.
MAX_CONFIG_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_VALUES = 100_000  # after YAML aliases are expanded ("billion laughs")


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                line = key_node.start_mark.line + 1
                raise ConfigError(f"line {line}: key {shorten(repr(key))} is given twice; keep one")
            seen.add(key if isinstance(key, (str, int, float, bool)) else id(key_node))
        return super().construct_mapping(node, deep)


# YAML 1.1 reads `1e-4` (no dot) as text; with strict numbers that would be refused, so read it
# as YAML 1.2 and every other tool does: a float.
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def load_yaml(text: str) -> Any:
    """A YAML value as configs read it (duplicate keys refused, `1e-4` a float)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)


def _decode(raw: bytes, path: Path) -> str:
    ascii_as_utf16 = max(raw[0::2].count(0), raw[1::2].count(0)) > len(raw) // 4  # no BOM: every other byte NUL
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or ascii_as_utf16:
        raise ConfigError(f"{path}: the file is UTF-16 text; save it as UTF-8")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}; a binary file?); "
                          "a config is YAML saved as UTF-8") from None
    if "\0" in text:
        raise ConfigError(f"{path}: line {text.count(chr(10), 0, text.index(chr(0))) + 1}: a NUL byte; remove it")
    return text


def _check_values(data: Any, path: Path) -> None:
    """No NUL in any string (paths and names break on it), bounded depth and size."""
    stack, count = [(data, 0, "")], 0
    while stack:
        value, depth, where = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise ConfigError(f"{path}: more than {MAX_VALUES:,} values (YAML aliases expanding?); simplify the file")
        if depth > MAX_DEPTH:
            raise ConfigError(f"{path}: {where or '<top>'}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            stack.extend((v, depth + 1, f"{where}.{k}" if where else str(k)) for k, v in value.items())
            stack.extend((k, depth + 1, where) for k in value)
        elif isinstance(value, list):
            stack.extend((v, depth + 1, f"{where}[{i}]") for i, v in enumerate(value))
        elif isinstance(value, str) and "\0" in value:
            raise ConfigError(f"{path}: {where or '<top>'}: a NUL character in a value; remove it")


def load_config(path: str | Path) -> Config:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found; create one with `stream2dataset init {path}`")
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config file ({err.strerror})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES >> 20} MB; is this the config file?")
    text = _decode(raw, path)
    try:
        data = load_yaml(text)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    except (ValueError, OverflowError) as err:  # e.g. an integer of 100,000 digits
        raise ConfigError(f"{path}: a value YAML cannot read ({shorten(str(err))})") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested deeper than {MAX_DEPTH} levels; is this the config file?") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where}: not valid YAML ({shorten(str(getattr(err, 'problem', None) or err))})") from None
    _check_values(data, path)
    return parse_config(data, str(path), base_dir=path.resolve().parent)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
