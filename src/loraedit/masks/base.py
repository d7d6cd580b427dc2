"""What every mask source gets and the `masks` config section.

Masks are ``uint8 (T, H, W)`` with 1 = keep, 0 = edit region. A source is a function
``source(inputs: MaskInputs) -> uint8 (T, H, W)`` (the raw keep mask, before the shape); the
sources are listed in :mod:`loraedit.masks.sources` and import only this module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEFAULTS = {
    "source": "auto",
    "allow_flow": True,  # auto may fall back to the flow heuristic (false in the paper configs: SAM or a file)
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
