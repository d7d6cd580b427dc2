"""Benchmark tables from per-clip ``scores.json`` files (the ``aggregate`` rule).

Writes, into ``out_dir``:

- ``per_clip.csv``: tidy, one row per clip x method x metric, with direction,
  implementation, version, model and note;
- ``metrics.csv``: one row per clip x method (metrics as columns), then a
  ``mean`` and a ``std`` row per method (``clip_id`` = "mean" / "std");
- ``metrics.md``, ``metrics.tex`` and ``metrics.html`` (a fragment for the
  report): the paper's Table 1 layout, methods as rows and metrics as columns,
  one table per metric family, means over clips, the best mean per column in
  bold, arrows for direction and "n/a" where a metric could not run (notes
  underneath say why).
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path

import pandas as pd

from .atomic import atomic_path, write_text

KNOWN_METHODS = ("naive", "mask", "mask+ref", "none", "composited")  # ours first, baselines after
NA = "n/a"
FAMILIES = {
    "table1": "Table 1 metrics",
    "background": "Background preservation (mask = 1, frames 2..T, vs input)",
    "fidelity": "Edit fidelity (vs the edited frames)",
    "temporal": "Temporal consistency",
    "ground_truth": "Full-reference vs the ground-truth edited video (pyiqa)",
    "no_reference": "No-reference quality (pyiqa)",
    "other": "Other metrics",
}
LABELS = {
    "clip_score": "CLIP Score",
    "input_similarity": "Input Sim.",
    "deqa": "DeQA-Score",
    "qalign": "Q-Align",
    "bg_psnr": "PSNR",
    "bg_ssim": "SSIM",
    "first_frame_psnr": "1st-frame PSNR",
    "first_frame_ssim": "1st-frame SSIM",
    "extra_edit_psnr": "extra-edit PSNR",
    "extra_edit_ssim": "extra-edit SSIM",
    "warp_error": "Warp error",
    "frame_diff": "Frame diff.",
}
LONG_COLUMNS = [
    "clip_id",
    "method",
    "metric",
    "value",
    "higher_is_better",
    "family",
    "impl",
    "version",
    "model",
    "note",
]


def load_scores(score_files: list[str | os.PathLike]) -> pd.DataFrame:
    """Tidy frame, one row per clip x method x metric, in the metrics' first-seen order."""
    rows = []
    for f in score_files:
        s = json.loads(Path(f).read_text())
        for name, m in s["metrics"].items():
            v = m.get("value")
            rows.append(
                {
                    "clip_id": s.get("clip_id"),
                    "method": s.get("method"),
                    "metric": name,
                    "value": math.nan if v is None else float(v),
                    "higher_is_better": bool(m.get("higher_is_better", True)),
                    "family": m.get("family") or "other",
                    "impl": m.get("impl", ""),
                    "version": m.get("version", ""),
                    "model": m.get("model", ""),
                    "note": m.get("note", ""),
                }
            )
    if not rows:
        raise ValueError("aggregate: no scores to tabulate")
    return pd.DataFrame(rows, columns=LONG_COLUMNS)


def _order(seen: list[str], preferred) -> list[str]:
    preferred = [m for m in (preferred or []) if m in seen]
    return preferred + [m for m in seen if m not in preferred]


def fmt(v: float) -> str:
    """Compact number for the tables: n/a for missing, 2-4 decimals, scientific for tiny values."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return NA
    a = abs(v)
    if a != 0 and a < 0.01:
        return f"{v:.2e}"
    return f"{v:.1f}" if a >= 100 else f"{v:.2f}" if a >= 10 else f"{v:.4f}"


def wide_table(long: pd.DataFrame, methods: list[str], metrics: list[str]) -> pd.DataFrame:
    """``metrics.csv``: clip x method rows, then mean and std rows per method."""
    wide = long.pivot(index=["method", "clip_id"], columns="metric", values="value")  # observed pairs only
    wide = wide.reindex(columns=metrics)
    parts = []
    for m in methods:
        per = wide.loc[m].sort_index()  # (clips, metrics)
        per = per.reset_index().assign(method=m)
        stats = pd.DataFrame([per[metrics].mean(), per[metrics].std(ddof=0)])
        stats.insert(0, "clip_id", ["mean", "std"])
        stats["method"] = m
        parts += [per, stats]
    out = pd.concat(parts, ignore_index=True)
    return out[["clip_id", "method", *metrics]]


def _best_marks(means: pd.DataFrame, higher: dict[str, bool]) -> dict[str, set[str]]:
    """Per metric, the methods whose displayed mean equals the best one (ties all bold)."""
    best = {}
    for col in means.columns:
        vals = means[col].dropna()
        if len(vals) < 2:  # one method alone is not "best"
            best[col] = set()
            continue
        top = fmt(vals.max() if higher[col] else vals.min())
        best[col] = {m for m, v in vals.items() if fmt(v) == top}
    return best


def metric_label(metric: str, higher: bool, arrow: tuple[str, str] = ("↑", "↓"), escape=lambda s: s) -> str:
    """Display name of a metric with its direction marker, e.g. ``"CLIP Score ↑"``."""
    name = LABELS.get(metric) or (f"GT {metric[3:]}" if metric.startswith("gt_") else metric)
    return f"{escape(name)} {arrow[0] if higher else arrow[1]}"


def _notes(long: pd.DataFrame, metrics: list[str]) -> list[str]:
    """``"<note>: metric, metric"`` lines, one per distinct note, in metric order."""
    by_note: dict[str, list[str]] = {}
    for m in metrics:
        for n in long.loc[long.metric == m, "note"].dropna().unique():
            if n and m not in by_note.setdefault(n, []):
                by_note[n].append(m)
    return [f"{n}: {', '.join(ms)}" for n, ms in by_note.items()]


def _family_tables(long, means, methods, metrics, higher, bold, arrow, escape=lambda s: s):
    """``[(family title, str DataFrame)]``: methods as rows, formatted means, best in ``bold``."""
    family = long.drop_duplicates("metric").set_index("metric")["family"].to_dict()
    best = _best_marks(means, higher)
    tables = []
    for fam, title in FAMILIES.items():
        cols = [m for m in metrics if (family[m] if family[m] in FAMILIES else "other") == fam]
        if not cols:
            continue
        df = pd.DataFrame({"Method": [escape(m) for m in methods]})
        for c in cols:
            df[metric_label(c, higher[c], arrow, escape)] = [
                bold(fmt(means.at[m, c])) if m in best[c] else fmt(means.at[m, c]) for m in methods
            ]
        tables.append((title, df))
    return tables


def latex_escape(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#"), ("_", r"\_"), ("$", r"\$")):
        s = s.replace(a, b)
    return s


def clips_table(long: pd.DataFrame, edit_instructions: dict[str, str] | None) -> pd.DataFrame | None:
    """``clip_id | edit instruction`` for the scored clips, or None when no clip has an instruction."""
    given = {c: str(t) for c, t in (edit_instructions or {}).items() if isinstance(t, str) and t.strip()}
    if not given:
        return None
    clips = list(dict.fromkeys(long["clip_id"]))
    return pd.DataFrame({"Clip": clips, "Edit instruction": [given.get(c, "") for c in clips]})


def to_markdown(long, means, methods, metrics, higher, n_clips, clips=None) -> str:
    lines = [f"# Metrics (mean over {n_clips} clip(s) per method)", ""]
    for title, df in _family_tables(long, means, methods, metrics, higher, lambda s: f"**{s}**", ("↑", "↓")):
        lines += [f"## {title}", "", df.to_markdown(index=False), ""]
    notes = _notes(long, metrics)
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    if clips is not None:
        lines += ["## Clips", "", clips.to_markdown(index=False), ""]
    return "\n".join(lines)


def to_html(long, means, methods, metrics, higher, n_clips, clips=None) -> str:
    """An HTML fragment (headings + tables), for the Snakemake report and :func:`report_assets.summary_html`."""
    parts = [f"<p>Mean over {n_clips} clip(s) per method; best in bold.</p>"]
    for title, df in _family_tables(
        long, means, methods, metrics, higher, lambda s: f"<b>{s}</b>", ("↑", "↓"), html.escape
    ):
        parts += [f"<h2>{html.escape(title)}</h2>", df.to_html(index=False, escape=False, border=0)]
    notes = _notes(long, metrics)
    if notes:
        parts += ["<h2>Notes</h2>", "<ul>", *[f"<li>{html.escape(n)}</li>" for n in notes], "</ul>"]
    if clips is not None:
        parts += ["<h2>Clips</h2>", clips.to_html(index=False, border=0)]  # escaped by pandas
    return "\n".join(parts) + "\n"


def to_latex(long, means, methods, metrics, higher, n_clips) -> str:
    """booktabs tables (``\\usepackage{booktabs}``), one ``table`` per metric family."""
    out = [f"% generated by loraedit.tables.aggregate: means over {n_clips} clip(s); best in bold"]
    tables = _family_tables(
        long,
        means,
        methods,
        metrics,
        higher,
        lambda s: f"\\textbf{{{s}}}",
        ("$\\uparrow$", "$\\downarrow$"),
        latex_escape,
    )
    for title, df in tables:
        body = df.to_latex(index=False, escape=False, column_format="l" + "c" * (df.shape[1] - 1))
        out += [
            "\\begin{table}[t]",
            "\\centering",
            f"\\caption{{{latex_escape(title)}}}",
            body.rstrip(),
            "\\end{table}",
            "",
        ]
    notes = _notes(long, metrics)
    if notes:
        out += ["% notes:"] + [f"%   {n}" for n in notes]
    return "\n".join(out) + "\n"


def aggregate(
    score_files: list[str | os.PathLike],
    out_dir: str | os.PathLike,
    method_order=None,
    edit_instructions: dict[str, str] | None = None,
) -> None:
    """Write ``metrics.{csv,md,tex,html}`` and ``per_clip.csv`` into ``out_dir``.

    ``edit_instructions`` (clip id -> the benchmark's edit text, informational only: it is never a
    prompt) adds a column to ``per_clip.csv`` and a "Clips" table to the Markdown and HTML.
    """
    out_dir = Path(out_dir)
    long = load_scores(score_files)
    clips = clips_table(long, edit_instructions)
    if clips is not None:
        long.insert(1, "edit_instruction", long["clip_id"].map(dict(zip(clips["Clip"], clips["Edit instruction"]))))
    methods = _order(list(dict.fromkeys(long["method"])), method_order or KNOWN_METHODS)
    metrics = list(dict.fromkeys(long["metric"]))
    higher = long.drop_duplicates("metric").set_index("metric")["higher_is_better"].to_dict()
    dup = long.duplicated(["clip_id", "method", "metric"])
    if dup.any():
        r = long[dup].iloc[0]
        raise ValueError(f"aggregate: clip {r.clip_id!r} method {r.method!r} is scored twice")

    wide = wide_table(long, methods, metrics)
    means = wide[wide.clip_id == "mean"].set_index("method")[metrics]
    n_clips = long["clip_id"].nunique()

    with atomic_path(out_dir / "per_clip.csv") as tmp:
        long.to_csv(tmp, index=False, na_rep=NA)
    with atomic_path(out_dir / "metrics.csv") as tmp:
        wide.to_csv(tmp, index=False, na_rep=NA, float_format="%.6g")
    write_text(out_dir / "metrics.md", to_markdown(long, means, methods, metrics, higher, n_clips, clips))
    write_text(out_dir / "metrics.tex", to_latex(long, means, methods, metrics, higher, n_clips))
    write_text(out_dir / "metrics.html", to_html(long, means, methods, metrics, higher, n_clips, clips))
