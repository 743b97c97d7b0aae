"""Image transforms: plain functions in a registry, named in config order (DESIGN.md).

A transform is a pure function `fn(batch, **params) -> batch` over a uint8 batch of equal-size
images, shape (N, H, W, 3) RGB or (N, H, W, 4) RGBA. The alpha channel carries a mask: `chroma_key`
creates it (alpha 0 = removed), every later transform keeps it. Grayscale keeps 3 channels so any
chain composes.

Parameters are declared once, in each function's signature: the type hints (with pydantic
constraints) validate a config's chain at start (`parse_chain`), so a typo fails before any video
is decoded, and `chain_names` records exactly what ran, defaults included.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model

from .errors import ConfigError


class _LazyCv2:
    """OpenCV on first use: the config validates transform chains here, and `sql` or `status` need no
    OpenCV (~0.1 s to import) for that."""

    def __getattr__(self, name: str):
        import cv2 as module

        globals()["cv2"] = module
        return getattr(module, name)


cv2 = _LazyCv2()

Transform = Callable[..., np.ndarray]
TRANSFORMS: dict[str, Transform] = {}
_PARAMS: dict[str, type[BaseModel]] = {}  # name -> pydantic model of its keyword parameters

NAMED_COLORS = {"white": (255, 255, 255), "black": (0, 0, 0), "red": (255, 0, 0), "green": (0, 255, 0),
                "blue": (0, 0, 255), "yellow": (255, 255, 0), "cyan": (0, 255, 255),
                "magenta": (255, 0, 255), "gray": (128, 128, 128)}


def to_rgb(color: tuple[int, int, int] | str) -> tuple[int, int, int]:
    """A colour name from NAMED_COLORS, '#rrggbb', or an (r, g, b) tuple -> (r, g, b)."""
    if isinstance(color, str):
        if color.lower() in NAMED_COLORS:
            return NAMED_COLORS[color.lower()]
        if len(color) == 7 and color[0] == "#":
            try:
                return tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
            except ValueError:
                pass
        raise ValueError(f"unknown colour; use '#rrggbb', (r, g, b) or one of {', '.join(NAMED_COLORS)}")
    return tuple(int(c) for c in color)  # type: ignore[return-value]


Byte = Annotated[int, Field(ge=0, le=255)]
# Validated to an (r, g, b) tuple at parse time, so chain_names shows the exact colour used.
Color = Annotated[tuple[Byte, Byte, Byte] | str, AfterValidator(to_rgb)]
Size = Annotated[int, Field(ge=1, le=16384)]


def transform(name: str) -> Callable[[Transform], Transform]:
    """Register `fn` under `name`, with a pydantic model of its keyword parameters."""

    def register(fn: Transform) -> Transform:
        if name in TRANSFORMS:
            raise ValueError(f"transform {name!r} is registered twice")
        hints = typing.get_type_hints(fn, include_extras=True)
        fields = {p.name: (hints[p.name], ... if p.default is p.empty else p.default)
                  for p in list(inspect.signature(fn).parameters.values())[1:]}  # [0] is the batch
        config = ConfigDict(extra="forbid", validate_default=True)  # defaults too: "white" -> (255, 255, 255)
        _PARAMS[name] = create_model(f"{name}_params", __config__=config, **fields)
        TRANSFORMS[name] = fn
        return fn

    return register


def _check(batch: np.ndarray) -> int:
    """The batch's channel count, after checking it is a uint8 (N, H, W, 3|4) array."""
    if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[-1] not in (3, 4):
        raise ValueError(f"expected a uint8 (N, H, W, 3|4) batch, got {batch.dtype} {batch.shape}")
    return batch.shape[-1]


def _tall(batch: np.ndarray) -> np.ndarray:
    """View the batch as one tall image, so pointwise cv2 calls run once per batch, not per image."""
    n, h, w, c = batch.shape
    return np.ascontiguousarray(batch).reshape(n * h, w, c)


# numpy is slow on a last axis of 3 or 4 (tiny inner loops): work on whole planes, which cv2
# splits and merges at memory speed.
def _split(batch: np.ndarray) -> list[np.ndarray]:
    """The channels as contiguous (N, H, W) planes."""
    return [p.reshape(batch.shape[:3]) for p in cv2.split(_tall(batch))]


def _merge(planes: list[np.ndarray]) -> np.ndarray:
    n, h, w = planes[0].shape
    return cv2.merge([p.reshape(n * h, w) for p in planes]).reshape(n, h, w, len(planes))


def _split_alpha(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(RGB batch, alpha plane or None)."""
    if batch.shape[-1] == 3:
        return batch, None
    tall = _tall(batch)
    rgb = cv2.cvtColor(tall, cv2.COLOR_RGBA2RGB).reshape(*batch.shape[:3], 3)
    return rgb, cv2.extractChannel(tall, 3).reshape(batch.shape[:3])


def _join_alpha(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    if alpha is None:
        return rgb
    out = cv2.cvtColor(_tall(rgb), cv2.COLOR_RGB2RGBA)
    cv2.insertChannel(alpha.reshape(out.shape[:2]), out, 3)  # in place
    return out.reshape(*rgb.shape[:3], 4)


@transform("contrast")
def contrast(batch: np.ndarray, gain: Annotated[float, Field(ge=0, le=10)] = 1.5,
             bias: Annotated[float, Field(ge=-255, le=255)] = 0.0) -> np.ndarray:
    """Linear contrast around mid-grey: out = (x - 128) * gain + 128 + bias, clipped to 0..255."""
    c = _check(batch)
    lut = np.clip((np.arange(256) - 128.0) * gain + 128.0 + bias, 0, 255).round().astype(np.uint8)
    luts = np.stack([lut] * 3 + [np.arange(256, dtype=np.uint8)] * (c - 3), axis=-1)  # alpha: identity
    return cv2.LUT(_tall(batch), luts.reshape(1, 256, c)).reshape(batch.shape)


@transform("clahe")
def clahe(batch: np.ndarray, clip_limit: Annotated[float, Field(gt=0, le=100)] = 2.0,
          tile: Annotated[int, Field(ge=1, le=64)] = 8) -> np.ndarray:
    """OpenCV CLAHE on the L channel of LAB: local contrast without shifting colours."""
    _check(batch)
    rgb, alpha = _split_alpha(batch)
    lab = _split(cv2.cvtColor(_tall(rgb), cv2.COLOR_RGB2LAB).reshape(rgb.shape))
    op = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tile, tile))
    for i, lum in enumerate(lab[0]):  # per image: the tiles are per image
        lab[0][i] = op.apply(lum)
    rgb = cv2.cvtColor(_tall(_merge(lab)), cv2.COLOR_LAB2RGB).reshape(rgb.shape)
    return _join_alpha(rgb, alpha)


@transform("chroma_key")
def chroma_key(batch: np.ndarray, color: Literal["green", "blue"] = "green",
               tolerance: Annotated[float, Field(gt=0, lt=1)] = 0.3) -> np.ndarray:
    """Remove a green or blue screen; returns RGBA with removed pixels transparent and black.

    Dominance key: a pixel is screen when its key channel K exceeds both other channels by more
    than `tolerance * K` (and by at least 16 levels, so near-black noise is kept). Being a ratio,
    it holds in the screen's shadows too. Lower tolerance removes more (spill, dim screen); higher
    keeps more of greenish (bluish) subjects.
    """
    _check(batch)
    planes = _split(batch)
    r, g, b = planes[:3]
    key, others = (g, np.maximum(r, b)) if color == "green" else (b, np.maximum(r, g))
    excess = key - np.minimum(key, others)  # uint8, saturating at 0
    # For each key level K, the least excess that makes a pixel screen: > tolerance*K and >= 16.
    # A 256-entry table looked up with cv2.LUT keeps it all uint8 (no float arrays per pixel).
    need = np.maximum(16, np.floor(tolerance * np.arange(256)) + 1).astype(np.uint8)
    keep = excess < cv2.LUT(key.reshape(-1, key.shape[-1]), need).reshape(key.shape)
    alpha = planes[3] if len(planes) == 4 else np.full(keep.shape, 255, np.uint8)
    alpha = alpha * keep  # bool * uint8 stays uint8
    keep &= alpha > 0
    return _merge([p * keep for p in planes[:3]] + [alpha])


@transform("one_color")
def one_color(batch: np.ndarray, color: Color = "white",
              threshold: Annotated[int, Field(ge=0, le=254)] = 10) -> np.ndarray:
    """Silhouette: every foreground pixel becomes `color`, the background black; alpha is kept.

    Foreground is alpha > 0 for RGBA; for RGB, any channel above `threshold` (not black).
    """
    _check(batch)
    planes = _split(batch)
    fg = planes[3] > 0 if len(planes) == 4 else np.maximum(np.maximum(planes[0], planes[1]), planes[2]) > threshold
    fg = fg.view(np.uint8)  # 0 or 1
    return _merge([fg * np.uint8(v) for v in to_rgb(color)] + planes[3:])


@transform("grayscale")
def grayscale(batch: np.ndarray) -> np.ndarray:
    """Luma (BT.601, as cv2) repeated into 3 channels, so later transforms still see RGB."""
    _check(batch)
    rgb, alpha = _split_alpha(batch)
    gray = cv2.cvtColor(_tall(rgb), cv2.COLOR_RGB2GRAY)
    return _join_alpha(cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB).reshape(rgb.shape), alpha)


@transform("crop")
def crop(batch: np.ndarray, box: tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)], Size, Size]
         ) -> np.ndarray:
    """Cut the (x, y, w, h) box, in pixels, out of every image."""
    _check(batch)
    x, y, w, h = box
    height, width = batch.shape[1:3]
    if x + w > width or y + h > height:
        raise ValueError(f"crop.box (x, y, w, h) = {tuple(box)} does not fit the {width}x{height} image")
    return batch[:, y:y + h, x:x + w].copy()


INTERPOLATION = {"area": "INTER_AREA", "linear": "INTER_LINEAR", "cubic": "INTER_CUBIC"}  # cv2 constants' names


@transform("resize")
def resize(batch: np.ndarray, size: Size | tuple[Size, Size], mode: Literal["pad", "crop", "stretch"] = "pad",
           interpolation: Literal["area", "linear", "cubic"] = "area", pad_color: Color = (0, 0, 0)
           ) -> np.ndarray:
    """Resize to `size` (one int: square; or (w, h)).

    pad: keep the aspect and letterbox with `pad_color` (the bands are transparent for RGBA);
    crop: keep the aspect and cut the centre; stretch: distort to fit.
    """
    c = _check(batch)
    tw, th = (size, size) if isinstance(size, int) else size
    n, h, w = batch.shape[:3]
    if mode == "crop":  # cut the source to the target's aspect first: less to resize
        cw, ch = min(w, max(1, round(h * tw / th))), min(h, max(1, round(w * th / tw)))
        batch = batch[:, (h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw]
    nw, nh = tw, th
    if mode == "pad":
        scale = min(tw / w, th / h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = np.stack([cv2.resize(img, (nw, nh), interpolation=getattr(cv2, INTERPOLATION[interpolation])) for img in batch])
    if (nw, nh) == (tw, th):
        return resized
    fill = [*to_rgb(pad_color), 0][:c]  # the letterbox is not content: alpha 0
    out = np.empty((n, th, tw, c), np.uint8)
    out[:] = np.array(fill, np.uint8)
    x0, y0 = (tw - nw) // 2, (th - nh) // 2
    out[:, y0:y0 + nh, x0:x0 + nw] = resized
    return out


# --- chains: the config side --------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One validated transform of a chain: its name and all its parameters, defaults filled in."""

    name: str
    params: dict[str, Any] = field(default_factory=dict, hash=False)

    def __str__(self) -> str:
        def fmt(v: Any) -> str:
            return "(" + ",".join(map(fmt, v)) + ")" if isinstance(v, (tuple, list)) else str(v)

        return f"{self.name}({','.join(f'{k}={fmt(v)}' for k, v in self.params.items())})"


class ChainError(ValueError):
    """A bad transform spec. `path` is relative to the chain ('[2].resize.mode'), `detail` the rest."""

    def __init__(self, index: int, name: str | None, param: str | None, detail: str):
        self.index, self.name, self.param, self.detail = index, name, param, detail
        self.path = f"[{index}]" + "".join(f".{p}" for p in (name, param) if p)
        where = f"step {index}" + (f" ({name})" if name else "") + (f": {param}" if param else "")
        super().__init__(f"{where}: {detail}")


def chain_error_to_config_error(err: ChainError, field_path: str) -> ConfigError:
    """`field_path` is where the chain sits in the config, e.g. 'processing.transforms'."""
    return ConfigError(f"{field_path}{err.path}: {err.detail}")


def parse_chain(specs: list[Any]) -> list[Step]:
    """Validate a config's chain: each spec is a name or a one-key mapping {name: {param: value}}."""
    if not isinstance(specs, list):
        raise ValueError(f"transforms must be a list of names or {{name: {{param: value}}}} (got {specs!r})")
    steps = []
    for i, spec in enumerate(specs):
        if isinstance(spec, dict) and len(spec) == 1:
            name, params = next(iter(spec.items()))
            params = {} if params is None else params
        elif isinstance(spec, str):
            name, params = spec, {}
        else:
            raise ChainError(i, None, None, f"expected a name or a one-key mapping {{name: {{param: value}}}} "
                                            f"(got {spec!r})")
        if name not in TRANSFORMS:
            raise ChainError(i, None, None, f"unknown transform {name!r} (known: {', '.join(sorted(TRANSFORMS))})")
        if not isinstance(params, dict):
            raise ChainError(i, name, None, f"parameters must be a mapping (got {params!r})")
        model = _PARAMS[name]
        allowed = list(model.model_fields)
        for key in params:
            if key not in allowed:
                raise ChainError(i, name, str(key), f"unknown parameter (allowed: {', '.join(allowed) or 'none'})")
        try:
            validated = model.model_validate(params)
        except ValidationError as err:
            e = max(err.errors(), key=lambda e: len(e["loc"]))  # in a union, the member that got furthest
            got = "" if e["type"] == "missing" else f" (got {e['input']!r})"
            # loc is (param, [union member name], [tuple index]...): keep the param and indexes.
            param = str(e["loc"][0]) + "".join(f"[{p}]" for p in e["loc"][1:] if isinstance(p, int))
            raise ChainError(i, name, param, e["msg"].removeprefix("Value error, ") + got) from None
        steps.append(Step(name, {k: getattr(validated, k) for k in allowed}))
    return steps


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside (), [] or {}."""
    parts, depth, current = [], 0, ""
    for ch in text + ",":
        if ch == "," and depth == 0:
            if current.strip():
                parts.append(current.strip())
            current = ""
            continue
        depth += (ch in "([{") - (ch in ")]}")
        current += ch
    return parts


def chain_specs_from_text(text: str) -> list[Any]:
    """`"clahe, resize(size=256, mode=crop)"` -> config specs: the syntax `chain_names` writes.

    Values are YAML scalars or lists; `(r,g,b)` reads as a list, as `chain_names` prints tuples.
    """
    import yaml

    specs: list[Any] = []
    for part in _split_top(text):
        name, paren, rest = part.partition("(")
        if not paren:
            specs.append(name.strip())
            continue
        if not rest.rstrip().endswith(")"):
            raise ValueError(f"{part!r}: missing ')'")
        params = {}
        for arg in _split_top(rest.rstrip()[:-1]):
            key, eq, value = arg.partition("=")
            if not eq:
                raise ValueError(f"{part!r}: parameters are written key=value (got {arg!r})")
            value = value.strip()
            if value.startswith("(") and value.endswith(")"):
                value = f"[{value[1:-1]}]"
            params[key.strip()] = yaml.safe_load(value)
        specs.append({name.strip(): params})
    return specs


def apply_chain(steps: list[Step], batch: np.ndarray) -> np.ndarray:
    """Run the steps in order. An empty batch comes back as it is (cv2 has no empty images)."""
    if len(batch) == 0:
        return batch
    for step in steps:
        batch = TRANSFORMS[step.name](batch, **step.params)
    return batch


def stored_scale(steps: list[Step], w: int, h: int) -> float:
    """The factor by which the chain's last `resize` scales a w x h image (1.0 without one): what a
    crop's sharpness is judged at. (A `crop` step before it is not taken into account.)"""
    resizes = [s for s in steps if s.name == "resize"]
    if not resizes:
        return 1.0
    size, mode = resizes[-1].params["size"], resizes[-1].params["mode"]
    tw, th = (size, size) if isinstance(size, int) else size
    if mode == "pad":
        return min(tw / w, th / h)
    if mode == "crop":
        return max(tw / w, th / h)
    return (tw * th / (w * h)) ** 0.5  # stretch: the mean of the two axes' factors, geometrically


def chain_names(steps: list[Step]) -> list[str]:
    """The `transforms` column of a row: e.g. ['clahe(clip_limit=2.0,tile=8)', ...], deterministic."""
    return [str(step) for step in steps]
