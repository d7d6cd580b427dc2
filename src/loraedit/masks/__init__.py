"""The edit masks: which pixels of each prepared frame the model regenerates.

Masks are ``uint8 (T, H, W)`` with 1 = keep, 0 = edit region. Frame 0 is
always all ones: the edited first frame conditions it.

A *source* produces a raw keep mask (:mod:`.sources`: ``file``, ``flow``, ``sam2``,
``sam3``, each its own module on :mod:`.base`), then a *shape* (:mod:`.shapes`) turns
each frame's edit region into what training and inference use. :mod:`.stage` picks the
source (``auto`` = the row's SAM inputs, else its mask file, else ``flow`` where
``masks.allow_flow``), writes the
masks and ``masks/source.json``; :mod:`.check` draws the contact sheet. A source module is
imported when a clip first uses it, so importing this package brings no torch (the SAM sources do).
"""

from .base import DEFAULTS, MaskInputs, masks_config
from .stage import choose_source, compute_masks, compute_masks_info, make_masks, sheet_source_problems, write_masks

__all__ = [
    "DEFAULTS",
    "MaskInputs",
    "choose_source",
    "compute_masks",
    "compute_masks_info",
    "make_masks",
    "masks_config",
    "sheet_source_problems",
    "write_masks",
]
