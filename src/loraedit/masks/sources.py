"""The mask sources, one table: ``masks.source`` name -> the function that makes the raw keep mask.

Each source module imports only :mod:`loraedit.masks.base` (and leaves), never another source, so
a new source is a new module and one row here. A source is imported on first use: the SAM sources
bring torch and transformers, which the file and flow sources do not need.
"""

from __future__ import annotations

import importlib

from .base import MaskSource

SOURCES: dict[str, str] = {
    "file": "loraedit.masks.file:file_mask",  # the sheet's mask column
    "flow": "loraedit.masks.flow:flow_mask",  # optical-flow heuristic from the edited first frame
    "sam2": "loraedit.masks.sam:sam2_mask",  # SAM2 from the sheet's clicks / boxes
    "sam3": "loraedit.masks.sam:sam3_mask",  # SAM3 from the sheet's phrase
}


def get_source(name: str) -> MaskSource:
    """The source function of `name` (one line naming the choices for an unknown one)."""
    if name not in SOURCES:
        raise ValueError(f"masks.source = {name!r}; choose auto or one of {', '.join(sorted(SOURCES))}")
    module, function = SOURCES[name].split(":")
    return getattr(importlib.import_module(module), function)
