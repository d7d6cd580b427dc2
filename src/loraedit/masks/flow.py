"""Mask source ``flow``: where the edited first frame differs from frame 0, carried through the
clip with dense optical flow (the heuristic for rows without SAM inputs or a mask file)."""

from __future__ import annotations

import logging

import cv2
import numpy as np

from .base import MaskInputs

log = logging.getLogger(__name__)


def edit_region(frame: np.ndarray, edited: np.ndarray, threshold: float) -> np.ndarray:
    """``bool (H, W)``: where ``edited`` differs from ``frame`` by more than ``threshold`` (RGB distance)."""
    diff = (np.linalg.norm(frame.astype(np.float32) - edited, axis=-1) > threshold).astype(np.uint8)
    k = max(3, (min(frame.shape[:2]) // 64) | 1)  # odd, grows with the image
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    diff = cv2.morphologyEx(diff, cv2.MORPH_OPEN, kernel)  # drop specks (codec noise, resampling)
    diff = cv2.morphologyEx(diff, cv2.MORPH_CLOSE, kernel)  # fill pinholes
    return diff.astype(bool)


def _ring(region: np.ndarray, width: int) -> np.ndarray:
    """``bool (H, W)``: the band of ``width`` px just outside ``region``."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    return (cv2.dilate(region.astype(np.uint8), kernel) > 0) & ~region


def _separating_axis(frame0: np.ndarray, region0: np.ndarray, ring: np.ndarray):
    """Fisher/LDA colour axis separating the region from its surroundings in frame 0.

    Returns ``(w (3,), threshold)`` or None when either side is (nearly) empty.
    """
    inside, outside = frame0[region0].astype(np.float64), frame0[ring].astype(np.float64)
    if len(inside) < 20 or len(outside) < 20:
        return None
    scatter = np.cov(inside.T) + np.cov(outside.T) + 25.0 * np.eye(3)  # +25: ~5 grey levels of noise
    w = np.linalg.solve(scatter, inside.mean(0) - outside.mean(0))
    w /= np.abs(w).sum() + 1e-12
    return w.astype(np.float32), float(0.5 * (inside @ w).mean() + 0.5 * (outside @ w).mean())


def propagate_region(
    frames: np.ndarray, region0: np.ndarray, snap: bool = True, max_area_change: float = 1.3
) -> np.ndarray:
    """Carry ``bool (H, W)`` frame-0 region through ``uint8 (T, H, W, 3)`` frames -> ``bool (T, H, W)``.

    * Backward flow (frame t -> t-1) says where each pixel of frame t came from,
      so the previous mask is *sampled* there (no holes, unlike forward splatting).
    * Flow runs on the colour axis that best separates the region from its
      surroundings (LDA on frame 0) rather than plain grey: edited objects often
      differ from their background in colour more than in brightness.
    * Small frames are upscaled first: DIS patches (8 px) are too coarse for them.
    * ``snap``: if that colour axis classifies frame 0 well (> 90 % right near the
      region), each warped mask is snapped to the colour boundary within a narrow
      band around it. This stops flow errors from accumulating into drift.
    * A snapped region whose area left ``[area0 / max_area_change, area0 * max_area_change]``
      (``area0``: frame 0's region) is refused, and the warped mask kept for that frame: over
      long clips, snapping can otherwise leak step by step into similar background colours
      (benchmarks/mask_iou.py, 49 frames: worst frame IoU 0.52 -> 0.74).
    """
    t_len, h, w = frames.shape[:3]
    band = max(2, min(h, w) // 16)
    ring0 = _ring(region0, band)
    axis = _separating_axis(frames[0], region0, ring0)
    if axis is None:
        flow_img = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])
        is_fg = None
    else:
        proj = frames.astype(np.float32) @ axis[0]  # (T, H, W)
        lo, hi = np.percentile(proj[0], [1, 99])
        flow_img = np.clip((proj - lo) * (255.0 / max(hi - lo, 1e-6)), 0, 255).astype(np.uint8)
        is_fg = proj > axis[1]
        near = region0 | ring0
        if not snap or (is_fg[0][near] == region0[near]).mean() < 0.9:
            is_fg = None

    scale = int(min(4, max(1, np.ceil(128 / min(h, w)))))
    if scale > 1:
        flow_img = np.stack([cv2.resize(f, (w * scale, h * scale), interpolation=cv2.INTER_CUBIC) for f in flow_img])
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    dis.setFinestScale(0)  # the preset stops at half resolution
    dis.setVariationalRefinementAlpha(5.0)  # less smoothing: objects keep their own motion
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))

    out = [region0.copy()]
    for t in range(1, t_len):
        flow = dis.calc(flow_img[t], flow_img[t - 1], None)  # (h', w', 2): pixel of t -> its place in t-1
        if scale > 1:
            flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_AREA) / scale
        prev = out[-1].astype(np.float32)
        warped = (
            cv2.remap(
                prev, grid_x + flow[..., 0], grid_y + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            )
            > 0.5
        )
        if is_fg is not None and warped.any():
            warped = _snap(warped, is_fg[t], band, region0.sum(), max_area_change)
        out.append(_drop_specks(warped))
    return np.stack(out)


def _drop_specks(region: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Drop components under ``fraction`` of the largest: bits that flow/colour errors leave behind."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), connectivity=8)
    if n <= 2:
        return region
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = 1 + np.flatnonzero(areas >= fraction * areas.max())
    return np.isin(labels, keep)


def _snap(warped: np.ndarray, fg: np.ndarray, band: int, area0: int, max_change: float) -> np.ndarray:
    """Colour pixels near ``warped`` whose components touch it; ``warped`` itself if that looks wrong."""
    near = warped | _ring(warped, band)
    snapped = cv2.morphologyEx((fg & near).astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    _, labels = cv2.connectedComponents(snapped, connectivity=8)
    touching = np.unique(labels[warped & (labels > 0)])
    snapped = np.isin(labels, touching[touching > 0])
    ratio, drift = snapped.sum() / warped.sum(), snapped.sum() / max(area0, 1)
    # a big change in area, from the last frame or from frame 0, means the colours lie
    return snapped if 0.5 < ratio < 2.0 and 1 / max_change < drift < max_change else warped


def flow_mask(inputs: MaskInputs) -> np.ndarray:
    """Edit region = where the edited first frame differs from frame 0, tracked with DIS optical flow."""
    region0 = edit_region(inputs.frames[0], inputs.edited, float(inputs.cfg["flow_threshold"]))
    if not region0.any():
        log.warning(
            "%s: edited first frame differs from frame 0 nowhere (masks.flow_threshold=%s); nothing to edit",
            inputs.clip_id,
            inputs.cfg["flow_threshold"],
        )
    regions = propagate_region(
        inputs.frames,
        region0,
        snap=bool(inputs.cfg["flow_snap"]),
        max_area_change=float(inputs.cfg["flow_max_area_change"]),
    )
    return (~regions).astype(np.uint8)
