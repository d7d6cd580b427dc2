"""Temporal consistency: warping error (Lai et al., ECCV 2018) and mean frame difference.

Warping error as Lai et al. define it and TokenFlow uses it: optical flow is
computed on the SOURCE video (so a flickering edit cannot hide its flicker
behind its own flow), frame t of the edited video is warped back to t-1 with
it, and pixels that fail the forward-backward consistency check (occlusions)
or sit on motion boundaries are left out:

    E_warp = 1/(T-1) * sum_t  sum_x M_t(x) ||O_{t-1}(x) - warp(O_t)(x)||^2 / sum_x M_t(x)

with O in [0, 1], squared L2 over RGB. OpenCV's DIS (or Farneback) flow stands
in for FlowNet2/RAFT so no weights are needed.
"""

from __future__ import annotations

import cv2
import numpy as np

from .base import loraedit_version, record

FLOW_METHODS = ("dis", "farneback")


def optical_flow(a: np.ndarray, b: np.ndarray, method: str = "dis") -> np.ndarray:
    """``float32 (H, W, 2)`` flow f with ``a(x) ~ b(x + f(x))`` for RGB uint8 frames ``a``, ``b``."""
    ga, gb = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)
    if method == "dis":
        return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(ga, gb, None)
    if method == "farneback":
        return cv2.calcOpticalFlowFarneback(ga, gb, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    raise ValueError(f"score.flow = {method!r}; choose one of {', '.join(FLOW_METHODS)}")


def _grid(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return xs + flow[..., 0], ys + flow[..., 1]


def warp(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``img`` sampled at ``x + flow(x)`` (bilinear), i.e. brought into the flow's source frame."""
    mx, my = _grid(flow)
    return cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def valid_mask(fw: np.ndarray, bw: np.ndarray) -> np.ndarray:
    """``bool (H, W)`` in the source frame of ``fw``: True where the flow is trusted.

    Lai et al.'s check: forward and warped backward flow must cancel
    (|fw + bw'|^2 <= 0.01 (|fw|^2 + |bw'|^2) + 0.5), the pixel must not sit on a
    motion boundary, and it must land inside the next frame.
    """
    bw_w = warp(bw, fw)

    def sq(f: np.ndarray) -> np.ndarray:  # squared length of (H, W, 2) flow vectors
        return (f**2).sum(-1)

    inconsistent = sq(fw + bw_w) > 0.01 * (sq(fw) + sq(bw_w)) + 0.5
    du = np.gradient(fw[..., 0])
    dv = np.gradient(fw[..., 1])
    boundary = (du[0] ** 2 + du[1] ** 2 + dv[0] ** 2 + dv[1] ** 2) > 0.01 * sq(fw) + 0.002
    mx, my = _grid(fw)
    h, w = fw.shape[:2]
    inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    return ~inconsistent & ~boundary & inside


def warping_error(output: np.ndarray, source: np.ndarray, method: str = "dis") -> float:
    """Lai et al.'s E_warp of ``output`` (T, H, W, 3) with flow and occlusions from ``source``."""
    errs = []
    for t in range(1, len(output)):
        fw = optical_flow(source[t - 1], source[t], method)  # t-1 -> t
        bw = optical_flow(source[t], source[t - 1], method)  # t -> t-1
        keep = valid_mask(fw, bw).astype(np.float64)  # (H, W)
        prev = output[t - 1].astype(np.float32) / 255.0
        warped = warp(output[t].astype(np.float32) / 255.0, fw)
        sq = ((warped - prev) ** 2).sum(-1)  # (H, W)
        n = keep.sum()
        # No trusted pixel at all (a cut): Lai et al. divide by every pixel and channel.
        errs.append((sq * keep).sum() / n if n > 0 else sq.mean() / 3)
    return float(np.mean(errs)) if errs else float("nan")


def frame_difference(output: np.ndarray) -> float:
    """Mean absolute difference of consecutive frames, 0..255 (flicker; also low for a frozen video)."""
    if len(output) < 2:
        return float("nan")
    d = np.abs(np.diff(output.astype(np.int16), axis=0))
    return float(d.mean())


def temporal_metrics(output: np.ndarray, source: np.ndarray, method: str = "dis") -> dict[str, dict]:
    ver = f"{loraedit_version()}, opencv {cv2.__version__}"
    short = "n/a (fewer than 2 frames)"
    we = warping_error(output, source, method)
    fd = frame_difference(output)
    return {
        "warp_error": record(
            we if np.isfinite(we) else None,
            False,
            f"Lai et al. 2018 warping error, {method} flow on the source video",
            ver,
            f"OpenCV {method} optical flow",
            "" if np.isfinite(we) else short,
            "temporal",
        ),
        "frame_diff": record(
            fd if np.isfinite(fd) else None,
            False,
            "mean |O_t - O_{t-1}| (0..255)",
            ver,
            "",
            "" if np.isfinite(fd) else short,
            "temporal",
        ),
    }
