"""Stage ``masks``: which pixels of each prepared frame the model regenerates.

Masks are ``uint8 (T, H, W)`` with 1 = keep, 0 = edit region. Frame 0 is
always all ones: the edited first frame conditions it.

A *source* produces a raw keep mask, then a *shape* turns each frame's edit
region into what training and inference use. Sources live in the registry
``MASK_SOURCES`` so more can plug in (SAM2 points/boxes, SAM3 text)::

    @register_mask_source("sam2")
    def sam2_mask(inputs: MaskInputs) -> np.ndarray: ...  # uint8 (T, H, W), 1 = keep

Built in: ``file`` (a mask given in the sample sheet) and ``flow`` (where the
edited first frame differs from frame 0, carried through the clip with dense
optical flow). ``auto`` = ``file`` when the sheet gives a mask, else ``flow``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .atomic import atomic_path
from .errors import ClipError
from .prepare import resize_center_crop
from .video_io import read_frames, read_image, read_mask, write_mp4, write_png_sequence

log = logging.getLogger(__name__)

DEFAULTS = {
    "source": "auto",
    "shape": "box",
    "box_grow": 0.1,  # as the official LoRA-Edit code (expand_ratio=0.1)
    "min_area": 50,  # px; smaller components are ignored (official min_area=50)
    "flow_threshold": 30.0,  # RGB distance that counts as "edited"
    "dilate": 0,  # px, exact shape only
    "flow_snap": True,  # flow source: snap warped masks to the region's colour boundary
    "aspect_tolerance": 0.05,  # a given mask may differ this much in aspect from the video
}


def masks_config(cfg: dict | None) -> dict:
    """The ``masks`` config section with defaults filled in."""
    out = dict(DEFAULTS)
    out.update(cfg or {})
    return out


@dataclass
class MaskInputs:
    """What a mask source gets for one prepared clip."""

    clip_id: str
    frames: np.ndarray  # uint8 (T, H, W, 3), prepared frames
    edited: np.ndarray  # uint8 (H, W, 3), prepared edited first frame
    meta: dict  # prepared/meta.json
    cfg: dict  # masks config section (defaults filled)
    mask_path: Path | None = None  # the sheet's mask column


MaskSource = Callable[[MaskInputs], np.ndarray]
MASK_SOURCES: dict[str, MaskSource] = {}


def register_mask_source(name: str) -> Callable[[MaskSource], MaskSource]:
    """Decorator: make ``fn(inputs) -> uint8 (T, H, W) keep mask`` available as ``masks.source: name``."""

    def deco(fn: MaskSource) -> MaskSource:
        MASK_SOURCES[name] = fn
        return fn

    return deco


# ----------------------------------------------------------------------------- sources


@register_mask_source("file")
def file_mask(inputs: MaskInputs) -> np.ndarray:
    """The sheet's mask (video, folder or one image for all frames), matched to the prepared clip."""
    clip, path, meta = inputs.clip_id, inputs.mask_path, inputs.meta
    if path is None:
        raise ClipError(clip, None, "masks.source is 'file' but the sample sheet gives no mask")
    t, h, w = inputs.frames.shape[:3]
    m = read_mask(path, clip)  # (Tm, Hm, Wm) 0/1
    n_src = int(meta.get("src_num_frames", t))
    if len(m) == 1:
        m = np.repeat(m, t, axis=0)
    elif len(m) == t:
        pass
    elif len(m) == n_src:
        m = m[np.asarray(meta["frame_indices"])]  # same time resampling as prepare
    else:
        raise ClipError(
            clip, path,
            f"mask has {len(m)} frames but the prepared clip has {t} (source clip: {n_src}); give 1, {t} or {n_src} frames",
        )

    hm, wm = m.shape[1:]
    if (wm, hm) != (w, h):
        w0, h0 = meta.get("src_size", [w, h])
        aspect, ref = wm / hm, w0 / h0
        if abs(aspect / ref - 1.0) > inputs.cfg["aspect_tolerance"]:
            raise ClipError(
                clip, path,
                f"mask is {wm}x{hm} (aspect {aspect:.3f}) but the video is {w0}x{h0} (aspect {ref:.3f}); "
                "cannot resize it sensibly",
            )
        # Same geometry as prepare (cover, centre crop), nearest so it stays binary.
        m = np.stack([resize_center_crop(f, w, h, interpolation=cv2.INTER_NEAREST) for f in m])
    return m.astype(np.uint8)


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


def propagate_region(frames: np.ndarray, region0: np.ndarray, snap: bool = True) -> np.ndarray:
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
        warped = cv2.remap(prev, grid_x + flow[..., 0], grid_y + flow[..., 1], cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE) > 0.5
        if is_fg is not None and warped.any():
            warped = _snap(warped, is_fg[t], band)
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


def _snap(warped: np.ndarray, fg: np.ndarray, band: int) -> np.ndarray:
    """Colour pixels near ``warped`` whose components touch it; ``warped`` itself if that looks wrong."""
    near = warped | _ring(warped, band)
    snapped = cv2.morphologyEx((fg & near).astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    _, labels = cv2.connectedComponents(snapped, connectivity=8)
    touching = np.unique(labels[warped & (labels > 0)])
    snapped = np.isin(labels, touching[touching > 0])
    ratio = snapped.sum() / warped.sum()
    return snapped if 0.5 < ratio < 2.0 else warped  # a big change in area means the colours lie


@register_mask_source("flow")
def flow_mask(inputs: MaskInputs) -> np.ndarray:
    """Edit region = where the edited first frame differs from frame 0, tracked with DIS optical flow."""
    region0 = edit_region(inputs.frames[0], inputs.edited, float(inputs.cfg["flow_threshold"]))
    if not region0.any():
        log.warning(
            "%s: edited first frame differs from frame 0 nowhere (masks.flow_threshold=%s); nothing to edit",
            inputs.clip_id, inputs.cfg["flow_threshold"],
        )
    regions = propagate_region(inputs.frames, region0, snap=bool(inputs.cfg["flow_snap"]))
    return (~regions).astype(np.uint8)


# ----------------------------------------------------------------------------- shapes


def box_shape(edit: np.ndarray, grow: float = 0.1, min_area: int = 50) -> np.ndarray:
    """``bool (T, H, W)`` edit regions -> each component's bounding box, grown by ``grow`` (half per side).

    Like the official LoRA-Edit ``create_bbox_mask``: boxes whose area is below
    ``min_area`` px are ignored.
    """
    out = np.zeros_like(edit, dtype=bool)
    h, w = edit.shape[1:]
    for t, frame in enumerate(edit):
        _, _, stats, _ = cv2.connectedComponentsWithStats(frame.astype(np.uint8), connectivity=8)
        for x, y, bw, bh, _ in stats[1:]:  # row 0 is the background
            if bw * bh < min_area:
                continue
            gx, gy = int(bw * grow), int(bh * grow)
            x0, y0 = max(0, x - gx // 2), max(0, y - gy // 2)
            x1, y1 = min(w, x + bw + gx - gx // 2), min(h, y + bh + gy - gy // 2)
            out[t, y0:y1, x0:x1] = True
    return out


def exact_shape(edit: np.ndarray, dilate: int = 0) -> np.ndarray:
    """``bool (T, H, W)`` edit regions, optionally dilated by ``dilate`` px."""
    if dilate <= 0:
        return edit.astype(bool)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1, 2 * dilate + 1))
    return np.stack([cv2.dilate(f.astype(np.uint8), kernel) > 0 for f in edit])


def shape_mask(keep: np.ndarray, cfg: dict) -> np.ndarray:
    """Apply the configured shape to a raw keep mask ``(T, H, W)``; frame 0 becomes all ones."""
    edit = keep == 0
    if cfg["shape"] == "box":
        edit = box_shape(edit, float(cfg["box_grow"]), int(cfg["min_area"]))
    elif cfg["shape"] == "exact":
        edit = exact_shape(edit, int(cfg["dilate"]))
    else:
        raise ValueError(f"masks.shape = {cfg['shape']!r}; choose box or exact")
    out = (~edit).astype(np.uint8)
    out[0] = 1  # frame 0 is the edited first frame itself: never regenerated
    return out


def _warn_degenerate(masks: np.ndarray, clip_id: str) -> None:
    later = masks[1:].reshape(len(masks) - 1, -1)
    ones = [t + 1 for t, m in enumerate(later) if m.all()]
    zeros = [t + 1 for t, m in enumerate(later) if not m.any()]
    n = len(masks)
    if ones:
        log.warning("%s: mask frames %s of %d are all ones (nothing to edit there)", clip_id, _frames(ones), n)
    if zeros:
        log.warning("%s: mask frames %s of %d are all zeros (the whole frame is regenerated)", clip_id, _frames(zeros), n)


def _frames(ts: list[int]) -> str:
    return ", ".join(map(str, ts)) if len(ts) <= 8 else f"{ts[0]}..{ts[-1]} ({len(ts)} frames)"


# ----------------------------------------------------------------------------- stage


def compute_masks(
    prepared_dir: str | os.PathLike,
    cfg: dict | None,
    given_mask_path: str | os.PathLike | None = None,
    clip_id: str | None = None,
) -> np.ndarray:
    """``uint8 (T, H, W)`` keep masks for a prepared clip (see module doc). ``cfg``: the ``masks`` section."""
    cfg = masks_config(cfg)
    prepared = Path(prepared_dir)
    meta_path = prepared / "meta.json"
    if not meta_path.is_file():
        raise ClipError(clip_id, meta_path, "not found; run the prepare stage first")
    meta = json.loads(meta_path.read_text())
    clip_id = clip_id or meta.get("clip_id")
    frames = read_frames(prepared / "frames", clip_id)
    edited = read_image(prepared / "edited" / "00000.png", clip_id)

    source = cfg["source"]
    if source == "auto":
        source = "file" if given_mask_path else "flow"
    if source not in MASK_SOURCES:
        raise ValueError(f"masks.source = {source!r}; choose auto or one of {', '.join(sorted(MASK_SOURCES))}")
    inputs = MaskInputs(clip_id, frames, edited, meta, cfg, None if given_mask_path is None else Path(given_mask_path))
    keep = np.asarray(MASK_SOURCES[source](inputs))
    if keep.shape != frames.shape[:3]:
        raise ClipError(clip_id, given_mask_path, f"mask source {source!r} returned {keep.shape}, expected {frames.shape[:3]}")

    masks = shape_mask(keep, cfg)
    _warn_degenerate(masks, clip_id)
    return masks


def overlay(frames: np.ndarray, masks: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``uint8 (T, H, W, 3)`` frames with the edit region (mask 0) tinted red."""
    red = np.array([255, 0, 0], np.float32)
    edit = (masks == 0)[..., None]
    out = np.where(edit, frames * (1 - alpha) + red * alpha, frames)
    return out.round().astype(np.uint8)


def write_masks(out_dir: str | os.PathLike, masks: np.ndarray, frames: np.ndarray, fps: float = 8.0) -> None:
    """``out_dir/00000.png ...`` (255 = keep) and ``out_dir/overlay.mp4``, as one atomic folder."""
    with atomic_path(out_dir, is_dir=True) as tmp:
        write_png_sequence(tmp, (masks > 0).astype(np.uint8) * 255)
        write_mp4(Path(tmp) / "overlay.mp4", overlay(frames, masks), fps)


def make_masks(
    prepared_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: dict | None,
    given_mask_path: str | os.PathLike | None = None,
    clip_id: str | None = None,
) -> np.ndarray:
    """The whole stage: :func:`compute_masks` then :func:`write_masks` (fps from meta.json)."""
    masks = compute_masks(prepared_dir, cfg, given_mask_path, clip_id)
    prepared = Path(prepared_dir)
    fps = json.loads((prepared / "meta.json").read_text()).get("fps", 8.0)
    write_masks(out_dir, masks, read_frames(prepared / "frames", clip_id), fps)
    return masks
