"""SAM inputs of a sample-sheet row: clicks, boxes, a text phrase, and the frame they refer to.

Columns (all optional; see the README's "Masks"):

``mask_points``  clicks for SAM2, several objects separated by ``|``::

    1:+120,80;-200,40|2:+300,200

  Each object is ``[ID:]POINT;POINT...``; a point is ``+x,y`` (positive: on the object; the
  ``+`` may be left out) or ``-x,y`` (negative: not the object). Without ``ID:`` objects are
  numbered 1, 2, ... in order. Every object needs at least one positive click.
``mask_box``     ``x0,y0,x1,y1`` for SAM2, several boxes separated by ``|``, each optionally
  ``ID:``-prefixed. A box and clicks with the same object id describe one object (the clicks
  refine the box, as in SAM2's own API); different ids are different objects.
``mask_prompt``  a phrase for SAM3 ("the man's shirt"): every instance is found and tracked.
``mask_frame``   the frame the clicks/box/phrase refer to, counted from 1 (the first frame,
  the default) in the *source* video. Note: ``extra_edits`` counts from 0.

Coordinates are pixels of the **source** video (x to the right, y down, origin at the top-left
corner of the frame, as any image viewer shows them), so they stay valid whatever bucket size
``prepare`` picks. :func:`to_prepared` maps them through prepare's resize + centre crop.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from ..frames import cover_crop

COLUMNS = ("mask_points", "mask_box", "mask_prompt", "mask_frame")
_NUM = r"(?:\d+\.?\d*|\.\d+)"  # a non-negative pixel coordinate
_POINT = re.compile(rf"^([+-]?)\s*({_NUM})\s*,\s*({_NUM})$")
_ID = re.compile(r"^\s*(\d+)\s*:(.*)$", re.DOTALL)


@dataclass
class SamObject:
    """One object to track: clicks ``(x, y)`` with labels 1/0, and/or a box ``(x0, y0, x1, y1)``."""

    obj_id: int
    points: list[tuple[float, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    box: tuple[float, float, float, float] | None = None


@dataclass
class SamPrompt:
    """What a row asks SAM for. ``objects`` (SAM2) or ``text`` (SAM3); ``frame`` is 1-based, source."""

    objects: list[SamObject]
    text: str | None
    frame: int = 1

    @property
    def model(self) -> str | None:
        return "sam3" if self.text else ("sam2" if self.objects else None)


def _split_objects(text: str, column: str) -> list[tuple[int | None, str]]:
    """``"1:a|b"`` -> ``[(1, "a"), (None, "b")]``."""
    out = []
    for part in str(text).split("|"):
        if not part.strip():
            raise ValueError(f"{column}: empty object between '|' in {text!r}")
        m = _ID.match(part)
        out.append((int(m.group(1)), m.group(2).strip()) if m else (None, part.strip()))
    return out


def _numbered(items: list[tuple[int | None, object]], column: str) -> dict[int, object]:
    """Give unnamed objects their position (1-based) as id; ids must be unique and >= 1."""
    out: dict[int, object] = {}
    for i, (oid, value) in enumerate(items, start=1):
        oid = i if oid is None else oid
        if oid < 1:
            raise ValueError(f"{column}: object id {oid} must be 1 or more")
        if oid in out:
            raise ValueError(f"{column}: object id {oid} given twice")
        out[oid] = value
    return out


def parse_points(text: str) -> dict[int, tuple[list[tuple[float, float]], list[int]]]:
    """``"1:+120,80;-200,40|2:+300,200"`` -> ``{1: ([(120, 80), (200, 40)], [1, 0]), 2: ([(300, 200)], [1])}``."""
    items = []
    for oid, body in _split_objects(text, "mask_points"):
        pts, labels = [], []
        for tok in (t.strip() for t in body.split(";")):
            if not tok:
                continue
            m = _POINT.match(tok)
            if not m:
                raise ValueError(f"mask_points: {tok!r} is not +x,y or -x,y (e.g. +120,80)")
            pts.append((float(m.group(2)), float(m.group(3))))
            labels.append(0 if m.group(1) == "-" else 1)
        if 1 not in labels:
            raise ValueError(f"mask_points: object {body!r} has no positive (+x,y) click")
        items.append((oid, (pts, labels)))
    return _numbered(items, "mask_points")


def parse_box(text: str) -> dict[int, tuple[float, float, float, float]]:
    """``"10,20,110,90|2:5,5,40,40"`` -> ``{1: (10, 20, 110, 90), 2: (5, 5, 40, 40)}``."""
    items = []
    for oid, body in _split_objects(text, "mask_box"):
        vals = [v.strip() for v in body.split(",")]
        if len(vals) != 4 or not all(re.fullmatch(_NUM, v) for v in vals):
            raise ValueError(f"mask_box: {body!r} is not x0,y0,x1,y1 (four numbers)")
        x0, y0, x1, y1 = map(float, vals)
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"mask_box: {body!r} needs x1 > x0 and y1 > y0")
        items.append((oid, (x0, y0, x1, y1)))
    return _numbered(items, "mask_box")


def parse_frame(text) -> int:
    s = str(text).strip()
    if not s.isdigit() or int(s) < 1:
        raise ValueError(f"mask_frame: {s!r} is not a frame number (1 = the first frame)")
    return int(s)


def _given(row: dict, key: str) -> str | None:
    v = row.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)) or not str(v).strip():
        return None
    return str(v).strip()


def parse_row(row: dict) -> SamPrompt | None:
    """The row's SAM request, or None when it has none. Raises ValueError naming the column."""
    pts, box, text, frame = (_given(row, c) for c in COLUMNS)
    if text and (pts or box):
        raise ValueError("mask_prompt: a phrase (SAM3) and mask_points/mask_box (SAM2) are exclusive; give one")
    frame_no = parse_frame(frame) if frame else 1
    if frame and not (pts or box or text):
        raise ValueError("mask_frame: given without mask_points, mask_box or mask_prompt")
    if not (pts or box or text):
        return None
    points = parse_points(pts) if pts else {}
    boxes = parse_box(box) if box else {}
    objects = []
    for oid in sorted(set(points) | set(boxes)):
        p, lab = points.get(oid, ([], []))
        objects.append(SamObject(oid, list(p), list(lab), boxes.get(oid)))
    return SamPrompt(objects, text, frame_no)


def _column_problem(err: ValueError) -> tuple[str, str]:
    msg = str(err)
    col = next((c for c in COLUMNS if msg.startswith(f"{c}: ")), "mask_points")
    return col, msg.removeprefix(f"{col}: ")


def row_problems(row: dict) -> dict[str, str]:
    """``{column: problem}`` for the sample-sheet validation: each column's syntax, then how they combine."""
    problems = {}
    for col, parse in (("mask_points", parse_points), ("mask_box", parse_box), ("mask_frame", parse_frame)):
        if (value := _given(row, col)) is not None:
            try:
                parse(value)
            except ValueError as e:
                problems.setdefault(*_column_problem(e))
    try:
        parse_row(row)
    except ValueError as e:
        problems.setdefault(*_column_problem(e))
    return problems


# ----------------------------------------------------------------------------- geometry


def to_prepared(xy: np.ndarray, src_size: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """``float (N, 2)`` source-pixel ``(x, y)`` -> prepared-frame pixels (prepare's cover + centre crop).

    ``src_size`` and ``size`` are ``(W, H)``. Points are continuous coordinates (0 = left edge).
    """
    (w0, h0), (w, h) = src_size, size
    new_w, new_h, x0, y0 = cover_crop(w0, h0, w, h)
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    return np.stack([xy[:, 0] * new_w / w0 - x0, xy[:, 1] * new_h / h0 - y0], axis=1)


def source_frame_to_prepared(frame_no: int, frame_indices: list[int]) -> int:
    """1-based source frame -> index of the nearest prepared frame (prepare's uniform resampling)."""
    return int(np.argmin(np.abs(np.asarray(frame_indices) - (frame_no - 1))))
