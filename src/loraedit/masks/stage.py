"""Stage ``masks``: choose the row's source, run it, shape the mask, write it with its record.

``auto`` = the row's SAM inputs (``sam2`` clicks / boxes, ``sam3`` phrase), else its mask file,
else ``flow``. The source used and any warning are written to ``masks/source.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, write_json
from ..errors import ClipError
from ..frames import overlay
from ..sheet.mask_columns import parse_row
from ..video_io import read_frames, read_image, write_mp4, write_png_sequence
from .base import MaskInputs, masks_config
from .check import write_contact_sheet
from .shapes import degenerate_warnings, shape_mask
from .sources import get_source

NO_SOURCE = (
    "no mask source: add a mask_prompt (SAM3 phrase) or mask_points / mask_box (SAM2 clicks), "
    "or a mask file, to the sheet row; or set masks.allow_flow: true for the optical-flow heuristic"
)


def choose_source(
    requested: str, row: dict | None, given_mask_path, clip_id: str | None = None, allow_flow: bool = True
) -> str:
    """``auto`` -> ``sam2``/``sam3`` when the row has SAM inputs, else ``file`` with a mask, else
    ``flow`` (the heuristic) when `allow_flow`, else a one-line error naming the clip and the fix.
    The paper always masks with SAM; its configs set ``masks.allow_flow: false``."""
    if requested != "auto":
        return requested
    try:
        prompt = parse_row(row or {})
    except ValueError as e:
        raise ClipError(clip_id, "sample sheet", str(e)) from None
    if prompt is not None:
        return prompt.model
    if given_mask_path:
        return "file"
    if not allow_flow:
        raise ClipError(clip_id, "sample sheet", NO_SOURCE)
    return "flow"


def sheet_source_problems(rows: list[dict], cfg: dict | None) -> list[str]:
    """One line per sheet row whose masks cannot be made under the ``masks`` config (checked
    before the DAG starts, with every row's problem at once)."""
    cfg = masks_config(cfg)
    problems = []
    for row in rows:
        try:
            choose_source(cfg["source"], row, row.get("mask"), row.get("clip_id"), bool(cfg["allow_flow"]))
        except ClipError as err:
            problems.append(str(err))
    return problems


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

    source = choose_source(cfg["source"], row, given_mask_path, clip_id, bool(cfg["allow_flow"]))
    source_fn = get_source(source)  # sam2 / sam3 import torch + transformers here, on use
    inputs = MaskInputs(
        clip_id, frames, edited, meta, cfg, None if given_mask_path is None else Path(given_mask_path), row=row
    )
    keep = np.asarray(source_fn(inputs))
    if keep.shape != frames.shape[:3]:
        raise ClipError(
            clip_id, given_mask_path, f"mask source {source!r} returned {keep.shape}, expected {frames.shape[:3]}"
        )

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


def write_masks(
    out_dir: str | os.PathLike, masks: np.ndarray, frames: np.ndarray, fps: float = 8.0, info: dict | None = None
) -> None:
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
    (fps from meta.json) and, when asked, the contact sheet (:mod:`loraedit.masks.check`)."""

    masks, info = compute_masks_info(prepared_dir, cfg, given_mask_path, clip_id, row)
    prepared = Path(prepared_dir)
    fps = json.loads((prepared / "meta.json").read_text()).get("fps", 8.0)
    frames = read_frames(prepared / "frames", clip_id)
    write_masks(out_dir, masks, frames, fps, info)
    if contact_sheet_png is not None:
        write_contact_sheet(contact_sheet_png, frames, masks, info)
    return masks
