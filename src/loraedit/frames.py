"""Frame geometry and pictures of frames: resize + centre crop, cover-crop coordinates, time
resampling, the red mask overlay. A leaf: numpy and OpenCV only."""

from __future__ import annotations

import math

import cv2
import numpy as np

PAD_MODES = ("error", "loop", "hold")


def resize_center_crop(frame: np.ndarray, width: int, height: int, interpolation: int | None = None) -> np.ndarray:
    """Scale ``(H, W[, C])`` to cover ``width x height``, then crop the centre.

    INTER_AREA when shrinking (no aliasing), INTER_CUBIC when enlarging (INTER_AREA
    degenerates to nearest-neighbour there). Pass INTER_NEAREST for masks.
    """
    h, w = frame.shape[:2]
    if (w, h) == (width, height):
        return frame.copy()
    new_w, new_h, x0, y0 = cover_crop(w, h, width, height)
    if interpolation is None:
        interpolation = cv2.INTER_AREA if max(width / w, height / h) < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(frame, (new_w, new_h), interpolation=interpolation)
    return np.ascontiguousarray(resized[y0 : y0 + height, x0 : x0 + width])


def cover_crop(w: int, h: int, width: int, height: int) -> tuple[int, int, int, int]:
    """``(new_w, new_h, x0, y0)``: a ``w x h`` frame is scaled to ``new_w x new_h`` (covering
    ``width x height``), then cropped at ``(x0, y0)``. Also maps sheet coordinates (mask_points)."""
    scale = max(width / w, height / h)
    new_w, new_h = max(width, math.ceil(w * scale - 1e-6)), max(height, math.ceil(h * scale - 1e-6))
    return new_w, new_h, (new_w - width) // 2, (new_h - height) // 2


def resample_indices(n_src: int, n_target: int, pad: str = "error") -> np.ndarray:
    """``int (n_target,)`` source frame indices spread uniformly over the clip.

    A clip shorter than ``n_target`` is an error unless ``pad`` is ``hold``
    (repeat the last frame) or ``loop`` (wrap around to the start).
    """
    if pad not in PAD_MODES:
        raise ValueError(f"prepare.pad = {pad!r}; choose one of {', '.join(PAD_MODES)}")
    if n_src <= 0:
        raise ValueError("clip has no frames")
    if n_src >= n_target:
        return np.round(np.linspace(0, n_src - 1, n_target)).astype(np.int64)
    if pad == "error":
        raise ValueError(
            f"clip has {n_src} frames, {n_target} requested; set prepare.pad: loop|hold or lower num_frames"
        )
    t = np.arange(n_target)
    return np.minimum(t, n_src - 1) if pad == "hold" else t % n_src


def overlay(frames: np.ndarray, masks: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``uint8 (T, H, W, 3)`` frames with the edit region (mask 0) tinted red."""
    red = np.array([255, 0, 0], np.float32)
    edit = (masks == 0)[..., None]
    out = np.where(edit, frames * (1 - alpha) + red * alpha, frames)
    return out.round().astype(np.uint8)
