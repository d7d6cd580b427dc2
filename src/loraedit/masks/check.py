"""See the masks before spending GPU hours: a per-clip contact sheet PNG for the report.

Three panels (frames 1, middle, last), each the prepared frame with the edit region tinted
red and one green rectangle per edit component (what the condition frames will grey out).
A title line names the clip, the mask source and the edited share of frames 2..T; each
warning of ``masks/source.json`` (a mask that keeps everything, an all-zero mask, SAM3
finding nothing, a moved prompt frame) is printed on a red line below, so it shows in the
Snakemake report.
"""

from __future__ import annotations

import os
import textwrap

import cv2
import numpy as np

from ..frames import overlay
from ..video_io import write_png

MIN_PANEL_HEIGHT = 192  # small (demo) frames are enlarged so that boxes and text stay readable
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def contact_frames(num_frames: int) -> list[int]:
    """Frame indices shown: first, middle, last (distinct)."""
    return sorted({0, num_frames // 2, num_frames - 1})


def component_boxes(edit: np.ndarray) -> list[tuple[int, int, int, int]]:
    """``bool (H, W)`` -> ``[(x0, y0, x1, y1)]`` (x1, y1 exclusive), one per 8-connected component."""
    _, _, stats, _ = cv2.connectedComponentsWithStats(edit.astype(np.uint8), connectivity=8)
    return [(int(x), int(y), int(x + w), int(y + h)) for x, y, w, h, _ in stats[1:]]


def _panel(frame: np.ndarray, keep: np.ndarray, scale: int, label: str) -> np.ndarray:
    img = overlay(frame[None], keep[None])[0]
    img = cv2.resize(img, (frame.shape[1] * scale, frame.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    for x0, y0, x1, y1 in component_boxes(keep == 0):
        for inset in (0, 1):  # 2 px wide, inside the box
            cv2.rectangle(
                img,
                (x0 * scale + inset, y0 * scale + inset),
                (x1 * scale - 1 - inset, y1 * scale - 1 - inset),
                (0, 255, 0),
                1,
            )
    cv2.putText(img, label, (4, 16), _FONT, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def _text_line(text: str, width: int, color: tuple[int, int, int]) -> np.ndarray:
    line = np.zeros((20, width, 3), np.uint8)
    line[:] = color
    cv2.putText(line, text, (4, 14), _FONT, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return line


def contact_sheet(frames: np.ndarray, masks: np.ndarray, info: dict) -> np.ndarray:
    """``uint8 (H', W', 3)`` from ``frames (T, H, W, 3)`` and keep ``masks (T, H, W)``."""
    t, h = frames.shape[:2]
    scale = max(1, -(-MIN_PANEL_HEIGHT // h))
    gap = np.full((h * scale, 4, 3), 255, np.uint8)
    panels = []
    for i in contact_frames(t):
        panels += [_panel(frames[i], masks[i], scale, f"frame {i + 1}/{t}"), gap]
    body = np.concatenate(panels[:-1], axis=1)
    width = body.shape[1]
    title = (
        f"{info.get('clip_id', '')}  source: {info.get('source', '?')}  shape: {info.get('shape', '?')}  "
        f"edited: {100 * info.get('edit_fraction', 0):.1f}% of frames 2..{t}"
    )
    lines = [_text_line(title, width, (40, 40, 40)), body]
    for w in info.get("warnings", []):
        wrapped = textwrap.wrap(f"WARNING: {w}", max(20, width // 7))  # ~7 px per character at this font size
        lines += [_text_line(part, width, (180, 0, 0)) for part in wrapped]
    return np.concatenate(lines, axis=0)


def write_contact_sheet(path: str | os.PathLike, frames: np.ndarray, masks: np.ndarray, info: dict) -> None:
    write_png(path, contact_sheet(frames, masks, info))
