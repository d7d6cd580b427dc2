"""SAM3 phrases for imported benchmarks (``loraedit import ... --mask-prompts phrases.tsv``).

``phrases.tsv``: two tab-separated columns per line, a key and a phrase::

    # key                                   phrase
    a-couple-in-a-public_sketch-style       the two people
    An Old Man Doing Exercises For The Body And Mind    the old man
    item3                                   the car

The key is a clip id of the written sheet, or the source video's name (AnyV2V ``<name>``,
I2VEdit ``itemN``), which applies to every edit of that video; a clip id wins over its video's
name. Blank lines and lines starting with ``#`` are skipped. A key matching no clip is an error
(a typo would otherwise silently leave a clip on the heuristic).
"""

from __future__ import annotations

import os
from pathlib import Path


def read_mask_prompts(path: str | os.PathLike) -> dict[str, str]:
    """``{key: phrase}``; raises ValueError naming the file and line of a bad line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: mask prompts file not found")
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, phrase = line.partition("\t")
        key, phrase = key.strip(), phrase.strip()
        if not sep or not key or not phrase:
            raise ValueError(f"{path}: line {n}: expected KEY<TAB>PHRASE, got {line!r}")
        if key in out:
            raise ValueError(f"{path}: line {n}: key {key!r} given twice")
        out[key] = phrase
    return out


def fill_mask_prompts(rows: list[dict], phrases: dict[str, str], source: str | os.PathLike = "mask prompts") -> None:
    """Set ``row["mask_prompt"]`` from ``phrases`` (by ``clip_id``, else by ``source_name``)."""
    known = {r["clip_id"] for r in rows} | {r.get("source_name") for r in rows}
    unknown = sorted(k for k in phrases if k not in known)
    if unknown:
        raise ValueError(f"{source}: no clip id or source video named {', '.join(map(repr, unknown))}")
    for r in rows:
        phrase = phrases.get(r["clip_id"]) or phrases.get(r.get("source_name"))
        if phrase:
            r["mask_prompt"] = phrase


def heuristic_only(rows: list[dict]) -> list[str]:
    """Clip ids whose masks can only come from the optical-flow heuristic (no mask, clicks, box or phrase)."""
    cols = ("mask", "mask_points", "mask_box", "mask_prompt")
    return [r["clip_id"] for r in rows if not any(str(r.get(c) or "").strip() for c in cols)]
