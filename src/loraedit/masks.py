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
optical flow); ``sam2`` (sheet clicks / boxes) and ``sam3`` (a sheet phrase) live in
:mod:`loraedit.sam_masks`. ``auto`` = the row's SAM inputs, else its mask file, else
``flow``. The source used and any warning are written to ``masks/source.json``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .atomic import atomic_path, write_json
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
    "flow_max_area_change": 1.3,  # flow source: refuse a snap that makes the region this much larger/smaller than frame 1's
    "aspect_tolerance": 0.05,  # a given mask may differ this much in aspect from the video
    "sam2_model": "tiny",  # tiny | local folder | hub id (facebook/sam2.1-hiera-large)
    "sam3_model": "tiny",  # tiny | local folder | hub id (facebook/sam3)
    "device": "auto",
    "dtype": "auto",  # auto = bf16 on GPU, fp32 on CPU
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
    row: dict | None = None  # the sheet row (SAM sources read mask_points, mask_box, mask_prompt, mask_frame)
    info: dict = field(default_factory=dict)  # what the source reports; goes to masks/source.json


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


def propagate_region(frames: np.ndarray, region0: np.ndarray, snap: bool = True,
                     max_area_change: float = 1.3) -> np.ndarray:
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
        warped = cv2.remap(prev, grid_x + flow[..., 0], grid_y + flow[..., 1], cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE) > 0.5
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


@register_mask_source("flow")
def flow_mask(inputs: MaskInputs) -> np.ndarray:
    """Edit region = where the edited first frame differs from frame 0, tracked with DIS optical flow."""
    region0 = edit_region(inputs.frames[0], inputs.edited, float(inputs.cfg["flow_threshold"]))
    if not region0.any():
        log.warning(
            "%s: edited first frame differs from frame 0 nowhere (masks.flow_threshold=%s); nothing to edit",
            inputs.clip_id, inputs.cfg["flow_threshold"],
        )
    regions = propagate_region(inputs.frames, region0, snap=bool(inputs.cfg["flow_snap"]),
                               max_area_change=float(inputs.cfg["flow_max_area_change"]))
    return (~regions).astype(np.uint8)


# ----------------------------------------------------------------------------- shapes


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


# ----------------------------------------------------------------------------- stage


def choose_source(requested: str, row: dict | None, given_mask_path, clip_id: str | None = None) -> str:
    """``auto`` -> ``sam2``/``sam3`` when the row has SAM inputs, else ``file`` with a mask, else ``flow``."""
    if requested != "auto":
        return requested
    from .mask_prompts import parse_row

    try:
        prompt = parse_row(row or {})
    except ValueError as e:
        raise ClipError(clip_id, "sample sheet", str(e)) from None
    if prompt is not None:
        return prompt.model
    return "file" if given_mask_path else "flow"


def compute_masks_info(
    prepared_dir: str | os.PathLike,
    cfg: dict | None,
    given_mask_path: str | os.PathLike | None = None,
    clip_id: str | None = None,
    row: dict | None = None,
) -> tuple[np.ndarray, dict]:
    """``(uint8 (T, H, W) keep masks, info)`` for a prepared clip; ``info`` is what source.json records."""
    cfg = masks_config(cfg)
    prepared = Path(prepared_dir)
    meta_path = prepared / "meta.json"
    if not meta_path.is_file():
        raise ClipError(clip_id, meta_path, "not found; run the prepare stage first")
    meta = json.loads(meta_path.read_text())
    clip_id = clip_id or meta.get("clip_id")
    frames = read_frames(prepared / "frames", clip_id)
    edited = read_image(prepared / "edited" / "00000.png", clip_id)

    source = choose_source(cfg["source"], row, given_mask_path, clip_id)
    if source not in MASK_SOURCES:
        from . import sam_masks  # noqa: F401  registers sam2 and sam3 (imports torch + transformers)
    if source not in MASK_SOURCES:
        raise ValueError(f"masks.source = {source!r}; choose auto or one of {', '.join(sorted(MASK_SOURCES))}")
    inputs = MaskInputs(clip_id, frames, edited, meta, cfg, None if given_mask_path is None else Path(given_mask_path),
                        row=row)
    keep = np.asarray(MASK_SOURCES[source](inputs))
    if keep.shape != frames.shape[:3]:
        raise ClipError(clip_id, given_mask_path, f"mask source {source!r} returned {keep.shape}, expected {frames.shape[:3]}")

    masks = shape_mask(keep, cfg)
    info = {"clip_id": clip_id, "source": source, "requested": cfg["source"], "shape": cfg["shape"], **inputs.info}
    info["edit_fraction"] = round(float(1.0 - masks[1:].mean()), 4)  # of frames 2..T
    info["warnings"] = info.get("warnings", []) + degenerate_warnings(masks, clip_id)
    return masks, info


def compute_masks(
    prepared_dir: str | os.PathLike,
    cfg: dict | None,
    given_mask_path: str | os.PathLike | None = None,
    clip_id: str | None = None,
    row: dict | None = None,
) -> np.ndarray:
    """``uint8 (T, H, W)`` keep masks for a prepared clip (see module doc). ``cfg``: the ``masks`` section."""
    return compute_masks_info(prepared_dir, cfg, given_mask_path, clip_id, row)[0]


def overlay(frames: np.ndarray, masks: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``uint8 (T, H, W, 3)`` frames with the edit region (mask 0) tinted red."""
    red = np.array([255, 0, 0], np.float32)
    edit = (masks == 0)[..., None]
    out = np.where(edit, frames * (1 - alpha) + red * alpha, frames)
    return out.round().astype(np.uint8)


def write_masks(out_dir: str | os.PathLike, masks: np.ndarray, frames: np.ndarray, fps: float = 8.0,
                info: dict | None = None) -> None:
    """``out_dir/00000.png ...`` (255 = keep), ``out_dir/overlay.mp4`` and, given ``info``,
    ``out_dir/source.json``, as one atomic folder."""
    with atomic_path(out_dir, is_dir=True) as tmp:
        write_png_sequence(tmp, (masks > 0).astype(np.uint8) * 255)
        write_mp4(Path(tmp) / "overlay.mp4", overlay(frames, masks), fps)
        if info is not None:
            write_json(Path(tmp) / "source.json", info)


def make_masks(
    prepared_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: dict | None,
    given_mask_path: str | os.PathLike | None = None,
    clip_id: str | None = None,
    row: dict | None = None,
    contact_sheet_png: str | os.PathLike | None = None,
) -> np.ndarray:
    """The whole stage: :func:`compute_masks_info`, then :func:`write_masks` with ``source.json``
    (fps from meta.json) and, when asked, the contact sheet (:mod:`loraedit.mask_check`)."""
    from .mask_check import write_contact_sheet

    masks, info = compute_masks_info(prepared_dir, cfg, given_mask_path, clip_id, row)
    prepared = Path(prepared_dir)
    fps = json.loads((prepared / "meta.json").read_text()).get("fps", 8.0)
    frames = read_frames(prepared / "frames", clip_id)
    write_masks(out_dir, masks, frames, fps, info)
    if contact_sheet_png is not None:
        write_contact_sheet(contact_sheet_png, frames, masks, info)
    return masks
