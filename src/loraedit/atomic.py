"""Write outputs under a temporary name and rename them into place.

A crashed or killed job never leaves a half-written file or folder behind that
Snakemake (or a person) could mistake for a finished output.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it to ``final``.

    The temporary name lives in the same folder (same file system), so the
    rename is atomic. On error the temporary is removed and ``final`` is left
    untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    if is_dir:
        tmp.unlink()
        tmp.mkdir()
    else:
        # Keep the real suffix so tools that look at it (ffmpeg, PIL) still work.
        tmp.unlink()
        tmp = tmp.with_name(tmp.name[: -len(".tmp")] + ".tmp" + final.suffix)
    try:
        yield tmp
        if is_dir and final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
