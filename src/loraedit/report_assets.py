"""Figures and videos for the Snakemake report (``snakemake --report``).

- :func:`bar_charts`: one bar chart per metric across methods (mean, std as
  error bar) from ``metrics.csv``;
- :func:`comparison_panels` and :func:`side_by_side`: one mp4 of titled panels next to each
  other (input | edited first frame | true edit, if known | each method | edit region);
- :func:`summary_html`: a self-contained page with the tables and the charts
  (charts inlined), handy outside the Snakemake report too.
"""

from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg canvas by default

from .atomic import atomic_path, write_text
from .frames import overlay
from .tables import NA, fmt, metric_label
from .video_io import write_mp4

TITLE_BG = (24, 24, 24)
TITLE_FG = (255, 255, 255)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name)


def _directions(metrics_csv: Path) -> dict[str, bool]:
    """higher_is_better per metric, from the ``per_clip.csv`` that ``aggregate`` writes beside ``metrics.csv``."""
    tidy = metrics_csv.with_name("per_clip.csv")
    if not tidy.exists():
        return {}
    df = pd.read_csv(tidy, usecols=["metric", "higher_is_better"]).drop_duplicates("metric")
    return dict(zip(df["metric"], df["higher_is_better"].astype(bool)))


def bar_charts(metrics_csv: str | os.PathLike, out_dir: str | os.PathLike) -> list[str]:
    """``<out_dir>/<metric>.png`` for every metric with at least one value; returns the paths written."""
    metrics_csv, out_dir = Path(metrics_csv), Path(out_dir)
    df = pd.read_csv(metrics_csv, na_values=[NA], keep_default_na=True)
    mean = df[df.clip_id == "mean"].set_index("method")
    std = df[df.clip_id == "std"].set_index("method")
    higher = _directions(metrics_csv)
    methods = list(mean.index)
    paths = []
    for metric in [c for c in df.columns if c not in ("clip_id", "method")]:
        vals = pd.to_numeric(mean[metric], errors="coerce")
        if vals.isna().all():
            continue
        errs = pd.to_numeric(std[metric], errors="coerce").reindex(methods).fillna(0.0)
        fig = Figure(figsize=(max(3.2, 0.9 * len(methods) + 1.2), 3.0), dpi=100)
        ax = fig.add_subplot()
        x = np.arange(len(methods))
        bars = ax.bar(x, vals.fillna(0.0), yerr=errs, capsize=3, color="#1f77b4")
        for xi, b, v in zip(x, bars, vals):
            ax.annotate(
                fmt(v),
                (xi, b.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
                xytext=(0, 2),
                textcoords="offset points",
            )
        ax.set_xticks(x, methods, rotation=20 if len(methods) > 3 else 0, fontsize=8)
        title = (
            metric_label(metric, higher[metric], ("(higher is better)", "(lower is better)"))
            if metric in higher
            else metric
        )
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        path = out_dir / f"{_safe(metric)}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
        paths.append(str(path))
    return paths


def _fit_height(img: np.ndarray, height: int) -> np.ndarray:
    h, w = img.shape[:2]
    if h == height:
        return img
    return cv2.resize(img, (max(1, round(w * height / h)), height), interpolation=cv2.INTER_AREA)


def _title_strip(title: str, width: int, height: int) -> np.ndarray:
    """``uint8 (height, width, 3)`` dark strip with ``title`` centred, shrunk until it fits."""
    strip = np.full((height, width, 3), TITLE_BG, np.uint8)
    font, thick = cv2.FONT_HERSHEY_SIMPLEX, 1
    scale = height / 30.0
    while scale > 0.2:
        (tw, th), _ = cv2.getTextSize(title, font, scale, thick)
        if tw <= width - 4:
            break
        scale *= 0.9
    (tw, th), _ = cv2.getTextSize(title, font, scale, thick)
    org = (max(2, (width - tw) // 2), (height + th) // 2)
    cv2.putText(strip, title, org, font, scale, TITLE_FG, thick, cv2.LINE_AA)
    return strip


def comparison_panels(
    frames: np.ndarray,
    edited_first: np.ndarray,
    keep: np.ndarray,
    outputs: list[tuple[str, np.ndarray]],
    truth: np.ndarray | None = None,
) -> list[tuple[str, np.ndarray]]:
    """The panels of one clip's comparison video: input ``uint8 (T, H, W, 3)`` | edited frame 1
    ``(H, W, 3)`` | the true edited video (when the sheet has a ``gt_video``: the toy world's clips)
    | each ``(method, output)`` | the edit region (keep ``(T, H, W)`` == 0) tinted red over the input."""
    panels = [("input", frames), ("edited frame 1", edited_first)]
    if truth is not None:
        panels.append(("truth", truth))
    return panels + list(outputs) + [("edit region", overlay(frames, keep))]


def side_by_side(panels: list[tuple[str, np.ndarray]], out_mp4: str | os.PathLike, fps: float) -> None:
    """Write titled panels side by side as an mp4.

    Each panel is ``(title, frames)`` with frames ``uint8 (T, H, W, 3)`` or a
    single image ``(H, W, 3)`` (shown for the whole clip). Panels are scaled to
    the first panel's height; a shorter video holds its last frame.
    """
    if not panels:
        raise ValueError("side_by_side: no panels")
    vids = [np.asarray(f, np.uint8)[None] if np.ndim(f) == 3 else np.asarray(f, np.uint8) for _, f in panels]
    height = vids[0].shape[1]
    n = max(len(v) for v in vids)
    strip_h = max(20, height // 10)
    columns = []
    for (title, _), v in zip(panels, vids):
        v = np.stack([_fit_height(f, height) for f in v])  # (t, height, w, 3)
        v = v[np.minimum(np.arange(n), len(v) - 1)]  # (n, height, w, 3)
        strip = _title_strip(title, v.shape[2], strip_h)
        columns.append(np.concatenate([np.broadcast_to(strip, (n, *strip.shape)), v], axis=1))
    write_mp4(out_mp4, np.concatenate(columns, axis=2), fps)


def _data_uri(png: str | os.PathLike) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(png).read_bytes()).decode()


def summary_html(
    tables_html: str | os.PathLike, chart_pngs: list[str], out_html: str | os.PathLike, title: str = "loraedit results"
) -> None:
    """One self-contained HTML page: the bar charts (inlined) above the metric tables (``metrics.html``)."""
    tables = Path(tables_html).read_text()
    charts = "\n".join(
        f'<figure><img src="{_data_uri(p)}" alt="{html.escape(Path(p).stem)}">'
        f"<figcaption>{html.escape(Path(p).stem)}</figcaption></figure>"
        for p in chart_pngs
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border-bottom: 1px solid #bbb; padding: 0.25em 0.7em; text-align: center; }}
th:first-child, td:first-child {{ text-align: left; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 1em; }}
figure {{ margin: 0; }} figcaption {{ font-size: 0.8em; color: #555; }}
</style></head>
<body>
<h1>{html.escape(title)}</h1>
<h2>Bar charts (mean over clips, std as error bar)</h2>
<div class="charts">
{charts}
</div>
{tables}
</body></html>
"""
    write_text(out_html, page)
