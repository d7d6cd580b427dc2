"""Mask shapes: each frame's edit region as its grown bounding boxes (official) or as is."""

from __future__ import annotations

import logging

import cv2
import numpy as np

log = logging.getLogger(__name__)


def box_shape(edit: np.ndarray, grow: float = 0.1, min_area: int = 50) -> np.ndarray:
    """``bool (T, H, W)`` edit regions -> each component's bounding box, grown by ``grow`` (half per side).

    As the official LoRA-Edit ``create_bbox_mask`` (``predata_app.py``), to the pixel: one
    box per outer contour, boxes of area below ``min_area`` px ignored, ``int(w * grow)`` added
    to the width with half (rounded down) on the left; a box clipped at the left/top border
    keeps its full grown size towards the right/bottom.
    """
    out = np.zeros_like(edit, dtype=bool)
    h, w = edit.shape[1:]
    for t, frame in enumerate(edit):
        contours, _ = cv2.findContours(frame.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        for x, y, bw, bh in map(cv2.boundingRect, contours):
            if bw * bh < min_area:
                continue
            gx, gy = int(bw * grow), int(bh * grow)
            x0, y0 = max(0, x - gx // 2), max(0, y - gy // 2)
            x1, y1 = min(w, x0 + bw + gx), min(h, y0 + bh + gy)
            out[t, y0:y1, x0:x1] = True
    return out


def exact_shape(edit: np.ndarray, dilate: int = 0) -> np.ndarray:
    """``bool (T, H, W)`` edit regions, optionally dilated by ``dilate`` px."""
    if dilate <= 0:
        return edit.astype(bool)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1, 2 * dilate + 1))
    return np.stack([cv2.dilate(f.astype(np.uint8), kernel) > 0 for f in edit])


def shape_mask(keep: np.ndarray, cfg: dict) -> np.ndarray:
    """Apply the configured shape to a raw keep mask ``(T, H, W)``, frame 0 included.

    Frame 0's region is kept in the file (the object on the first frame: `train.recolor_copies`
    recolours it); the conditioning, not the file, keeps frame 1 whole (`training.stage1_keep`,
    `inference.inference_condition`), and every score reads frames 2..T only.
    """
    edit = keep == 0
    if cfg["shape"] == "box":
        edit = box_shape(edit, float(cfg["box_grow"]), int(cfg["min_area"]))
    elif cfg["shape"] == "exact":
        edit = exact_shape(edit, int(cfg["dilate"]))
    else:
        raise ValueError(f"masks.shape = {cfg['shape']!r}; choose box or exact")
    return (~edit).astype(np.uint8)


def degenerate_warnings(masks: np.ndarray, clip_id: str) -> list[str]:
    """Logged warnings for frames 2..T that keep everything or nothing (legal, but rarely meant)."""
    later = masks[1:].reshape(len(masks) - 1, -1)
    ones = [t + 1 for t, m in enumerate(later) if m.all()]
    zeros = [t + 1 for t, m in enumerate(later) if not m.any()]
    n = len(masks)
    msgs = []
    if ones:
        whole = "; the mask keeps the whole clip: nothing will be edited" if len(ones) == n - 1 else ""
        msgs.append(f"mask frames {_frames(ones)} of {n} are all ones (nothing to edit there){whole}")
    if zeros:
        whole = "; every frame after the first is regenerated" if len(zeros) == n - 1 else ""
        msgs.append(f"mask frames {_frames(zeros)} of {n} are all zeros (the whole frame is regenerated){whole}")
    for msg in msgs:
        log.warning("%s: %s", clip_id, msg)
    return msgs


def _frames(ts: list[int]) -> str:
    return ", ".join(map(str, ts)) if len(ts) <= 8 else f"{ts[0]}..{ts[-1]} ({len(ts)} frames)"
