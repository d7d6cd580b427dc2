"""Turn public benchmark layouts into a sample sheet (TSV).

* AnyV2V demo: ``root/demo/<name>.mp4`` + ``root/demo/<name>/edited_first_frame/<edit>.png``
* I2VEdit test set: ``root/itemN/source_and_edits/source.mp4`` + edited first frames (PNG) beside it

CLI: ``loraedit import {anyv2v,i2vedit} ROOT OUT.tsv [--mask-prompts phrases.tsv]``
(``phrases.tsv``: a SAM3 phrase per clip id or source video, see :mod:`loraedit.sheet.mask_phrases`);
it prints the clips whose masks can only come from the optical-flow heuristic.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import unicodedata
from pathlib import Path

import pandas as pd

from ..atomic import write_text
from ..commands import command_parser
from .mask_phrases import fill_mask_prompts, heuristic_only, read_mask_prompts

EDIT_EXTS = (".png", ".jpg", ".jpeg", ".webp")
VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".gif")
MAX_SLUG = 40  # per part: keeps results/{clip}/... paths short


def slugify(text: str) -> str:
    """``"Turn his hair WHITE!"`` -> ``"turn-his-hair-white"`` (ASCII, lowercase, hyphens)."""
    text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if len(slug) > MAX_SLUG:  # cut at a word boundary when there is one
        cut = slug[: MAX_SLUG + 1]
        slug = cut.rsplit("-", 1)[0] if "-" in cut else slug[:MAX_SLUG]
    return slug


def _short_hash(*parts: str) -> str:
    return hashlib.sha1("/".join(parts).encode()).hexdigest()[:6]


def safe_clip_id(name: str, edit: str | None = None, taken: set[str] | None = None) -> str:
    """A path-safe, stable clip id ``<name-slug>_<edit-slug>``.

    Slugs never contain ``_``, so the separator is unambiguous. A short hash of
    the original names is appended only when the id is empty or already in
    ``taken`` (which is updated).
    """
    parts = [slugify(name)] + ([slugify(edit)] if edit is not None else [])
    cid = "_".join(p for p in parts if p)
    raw = [str(name)] + ([str(edit)] if edit is not None else [])
    if not cid:
        cid = f"clip-{_short_hash(*raw)}"
    if taken is not None:
        if cid in taken:
            cid = f"{cid}-{_short_hash(*raw)}"
        taken.add(cid)
    return cid


def _natural_key(p: Path):
    # item2 before item10
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", p.name)]


def _write_sheet(rows: list[dict], out_tsv: str | os.PathLike, mask_prompts=None) -> Path:
    # prompt / source_prompt stay empty so that Florence-2 captions are made (as the paper); the
    # benchmark's edit text goes to the informational edit_instruction column, never to a model.
    cols = ["clip_id", "video", "edited_first_frame", "prompt", "source_prompt", "edit_instruction"]
    if mask_prompts is not None:  # SAM3 phrases: the paper's kind of mask instead of the flow heuristic
        fill_mask_prompts(rows, read_mask_prompts(mask_prompts), mask_prompts)
        cols.append("mask_prompt")
    df = pd.DataFrame([{c: r.get(c, "") for c in cols} for r in rows], columns=cols)
    write_text(out_tsv, df.to_csv(sep="\t", index=False))
    return Path(out_tsv)


def _row(source_name: str, video: Path, edit: Path, taken: set[str]) -> dict:
    """One sheet row: an edited first frame of a source video (edit_instruction = the edit's file name)."""
    return {
        "clip_id": safe_clip_id(source_name, edit.stem, taken),
        "source_name": source_name,
        "video": str(video.resolve()),
        "edited_first_frame": str(edit.resolve()),
        "edit_instruction": edit.stem,
    }


def import_anyv2v(root: str | os.PathLike, out_tsv: str | os.PathLike, mask_prompts=None) -> Path:
    """One row per edited first frame of the AnyV2V demo layout; edit_instruction = the edit's file name."""
    root = Path(root)
    demo = root / "demo" if (root / "demo").is_dir() else root
    rows, taken = [], set()
    for folder in sorted((d for d in demo.iterdir() if d.is_dir()), key=_natural_key):
        edits_dir = folder / "edited_first_frame"
        if not edits_dir.is_dir():
            continue
        videos = [folder.with_name(folder.name + ext) for ext in VIDEO_EXTS]
        video = next((v for v in videos if v.is_file()), None)
        if video is None and any(p.suffix.lower() in (".png", ".jpg") for p in folder.iterdir()):
            video = folder  # frames folder (00000.png ...) next to edited_first_frame/
        if video is None:
            continue
        for edit in sorted((p for p in edits_dir.iterdir() if p.suffix.lower() in EDIT_EXTS), key=_natural_key):
            rows.append(_row(folder.name, video, edit, taken))
    if not rows:
        raise FileNotFoundError(f"{demo}: no <name>.mp4 with <name>/edited_first_frame/*.png found")
    return _write_sheet(rows, out_tsv, mask_prompts)


def import_i2vedit(root: str | os.PathLike, out_tsv: str | os.PathLike, mask_prompts=None) -> Path:
    """One row per edited first frame (PNG) beside each ``itemN/source_and_edits/source.mp4``."""
    root = Path(root)
    rows, taken = [], set()
    for item in sorted((d for d in root.iterdir() if d.is_dir()), key=_natural_key):
        folder = item / "source_and_edits"
        video = next((folder / f"source{ext}" for ext in VIDEO_EXTS if (folder / f"source{ext}").is_file()), None)
        if video is None:
            continue
        edits = [p for p in folder.iterdir() if p.suffix.lower() in EDIT_EXTS and p.stem != "source"]
        for edit in sorted(edits, key=_natural_key):
            rows.append(_row(item.name, video, edit, taken))
    if not rows:
        raise FileNotFoundError(f"{root}: no itemN/source_and_edits/source.mp4 with edited PNGs found")
    return _write_sheet(rows, out_tsv, mask_prompts)


IMPORTERS = {"anyv2v": import_anyv2v, "i2vedit": import_i2vedit}


def add_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``loraedit import`` on `ap` (the console script mounts them as a subcommand)."""
    ap.add_argument("layout", choices=sorted(IMPORTERS))
    ap.add_argument("root", help="benchmark folder")
    ap.add_argument("out_tsv", help="sample sheet to write")
    ap.add_argument("--mask-prompts", help="TSV: clip id or source video name <TAB> SAM3 phrase (mask_prompt)")
    return ap


def build_parser() -> argparse.ArgumentParser:
    """``loraedit import`` with its options and an example in --help."""
    ap = command_parser(
        "loraedit import",
        __doc__.splitlines()[0],
        "loraedit import anyv2v ../shared/data/anyv2v/demo sheets/anyv2v.tsv",
    )
    return add_arguments(ap)


def run(args: argparse.Namespace) -> int:
    """Write the sheet, print its size and the clips left to the flow heuristic; 2 on a bad layout."""
    try:
        out = IMPORTERS[args.layout](args.root, args.out_tsv, args.mask_prompts)
    except (FileNotFoundError, NotADirectoryError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = pd.read_csv(out, sep="\t", dtype=str, keep_default_na=False).to_dict("records")
    print(f"{out}: {len(rows)} samples")
    flow_only = heuristic_only(rows)
    if flow_only:
        print(
            f"{len(flow_only)} clip(s) have no mask source beyond the optical-flow heuristic "
            f"(add a mask_prompt with --mask-prompts, or mask_points / mask_box): {', '.join(flow_only)}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
