"""The sample sheet: one row per (video, edited first frame) pair.

TSV by default (``.csv`` files are read comma-separated). Rows are validated
like ``snakemake.utils.validate`` does (each row a JSON record without its
empty cells, checked against the packaged ``schemas/samples.schema.yaml``), but every
problem of every row is collected and raised as one :class:`SheetError`.
"""

from __future__ import annotations

import os
import re
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

import jsonschema
import pandas as pd
import yaml

from ..errors import SheetError
from .mask_columns import COLUMNS as MASK_COLUMNS
from .mask_columns import row_problems as mask_problems

DEFAULT_SCHEMA = files("loraedit") / "schemas" / "samples.schema.yaml"

REQUIRED = ("clip_id", "video", "edited_first_frame")
OPTIONAL = ("mask", "prompt", "source_prompt", "edit_instruction", "extra_edits", "gt_video", *MASK_COLUMNS)
PATH_COLUMNS = ("video", "edited_first_frame", "mask", "gt_video")
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def parse_extra_edits(text: str) -> dict[int, str]:
    """``"12:a.png;24:b.png"`` -> ``{12: "a.png", 24: "b.png"}`` (frame indices of the source clip)."""
    out: dict[int, str] = {}
    for item in (s.strip() for s in str(text).split(";")):
        if not item:
            continue
        idx, sep, path = item.partition(":")  # first colon only: "3:C:\\x.png" keeps its drive
        idx, path = idx.strip(), path.strip()
        if not sep or not path:
            raise ValueError(f"extra_edits entry {item!r} is not FRAME:PATH")
        if not idx.isdigit():
            raise ValueError(f"extra_edits entry {item!r}: frame {idx!r} is not a non-negative integer")
        if int(idx) in out:
            raise ValueError(f"extra_edits: frame {int(idx)} given twice")
        out[int(idx)] = path
    return out


def _resolve(base: Path, value: str) -> str:
    p = Path(os.path.expanduser(value))
    return os.path.normpath(p if p.is_absolute() else base / p)


def _read_table(sheet: Path) -> pd.DataFrame:
    sep = "," if sheet.suffix.lower() == ".csv" else "\t"
    # dtype=str keeps ids like "007"; no NA parsing so "NA" stays a string;
    # blank lines kept so that row i is line i + 2 (header = line 1).
    df = pd.read_csv(sheet, sep=sep, dtype=str, keep_default_na=False, skip_blank_lines=False, encoding="utf-8-sig")
    df.columns = [str(c).strip() for c in df.columns]
    df = df.fillna("").map(lambda v: v.strip() if isinstance(v, str) else v)
    df.insert(0, "line", range(2, len(df) + 2))
    data_cols = [c for c in df.columns if c != "line"]
    return df[(df[data_cols] != "").any(axis=1)]


def _schema_problem(err: jsonschema.ValidationError) -> tuple[str, str]:
    """``(column, problem)`` in words a user can act on."""
    if err.validator == "required":
        missing = re.findall(r"'([^']+)'", err.message)
        col = missing[0] if missing else "?"
        return col, f"required value {col} is empty"
    col = str(err.path[0]) if err.path else "row"
    if col == "clip_id" and err.validator in ("pattern", "maxLength"):
        return col, (
            f"id {err.instance!r} is not safe as a folder name "
            "(use letters, digits, '.', '_', '-', starting with a letter or digit, at most 200 characters)"
        )
    return col, err.message


def load_samples(
    sheet_path: str | os.PathLike, schema_path: str | os.PathLike | Traversable = DEFAULT_SCHEMA
) -> pd.DataFrame:
    """Read, validate and resolve a sample sheet.

    Returns a DataFrame indexed by ``clip_id`` (the column is kept too) with a
    ``line`` column (line number in the file), every optional column present
    (None when empty), absolute paths, and ``extra_edits`` parsed to
    ``{source frame: absolute path}``. Raises :class:`SheetError` listing all
    problems as ``line N (clip X): <file or column>: <problem>``.
    """
    sheet = Path(sheet_path)
    if not sheet.is_file():
        raise SheetError(sheet, [f"{sheet}: sample sheet not found"])
    try:
        df = _read_table(sheet)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise SheetError(sheet, [f"{sheet}: cannot parse: {str(e).strip()}"]) from None

    missing_cols = [c for c in REQUIRED if c not in df.columns]
    if missing_cols:
        found = ", ".join(c for c in df.columns if c != "line") or "none"
        raise SheetError(sheet, [f"line 1: header: missing column(s) {', '.join(missing_cols)} (found: {found})"])
    if df.empty:
        raise SheetError(sheet, [f"{sheet}: no samples (only a header)"])

    # the packaged default is a Traversable (a plain path in a source checkout, not one in a zip)
    schema_file = schema_path if hasattr(schema_path, "read_text") else Path(schema_path)
    schema = yaml.safe_load(schema_file.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    base = sheet.parent.resolve()

    problems: list[str] = []
    first_line: dict[str, int] = {}
    records = []
    for rec in df.to_dict("records"):
        line = int(rec.pop("line"))
        cid = rec.get("clip_id") or "?"
        where = f"line {line} (clip {cid})"

        # snakemake.utils.validate semantics: a JSON record without its empty cells.
        present = {k: v for k, v in rec.items() if v != ""}
        schema_errs = {}
        for err in validator.iter_errors(present):
            col, msg = _schema_problem(err)
            schema_errs.setdefault(col, msg)

        extra: dict[int, str] = {}
        if present.get("extra_edits"):
            try:
                extra = parse_extra_edits(present["extra_edits"])
            except ValueError as e:
                schema_errs["extra_edits"] = str(e)  # more specific than the schema's pattern message
        schema_errs.update(mask_problems(present))  # SAM clicks / box / phrase / frame (mask_columns.py)
        problems += [f"{where}: {col}: {msg}" for col, msg in schema_errs.items()]

        if cid != "?":
            if cid in first_line:
                problems.append(f"{where}: clip_id: duplicate id, first used on line {first_line[cid]}")
            else:
                first_line[cid] = line

        out = {c: (present.get(c) or None) for c in (*REQUIRED, *OPTIONAL)}
        out.update({k: v for k, v in present.items() if k not in out})  # extra user columns pass through
        for col in PATH_COLUMNS:
            if out[col] is not None and col not in schema_errs:
                out[col] = _resolve(base, out[col])
                if not os.path.exists(out[col]):
                    problems.append(f"{where}: {out[col]}: file not found (column {col})")
        out["extra_edits"] = {f: _resolve(base, p) for f, p in extra.items()}
        for f, p in out["extra_edits"].items():
            if not os.path.exists(p):
                problems.append(f"{where}: {p}: file not found (extra_edits frame {f})")
        out["line"] = line
        records.append(out)

    if problems:
        raise SheetError(sheet, problems)
    result = pd.DataFrame(records, dtype=object)  # object: keeps None (not NaN) and dicts
    result["line"] = result["line"].astype(int)
    return result.set_index("clip_id", drop=False).rename_axis(None)


def sample_row(samples: pd.DataFrame, clip_id: str) -> dict:
    """One sheet row as a plain dict (what :func:`loraedit.prepare.prepare_clip` takes)."""
    row = samples.loc[clip_id].to_dict()
    return {k: (None if isinstance(v, float) and pd.isna(v) else v) for k, v in row.items()}
