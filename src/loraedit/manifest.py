"""The run manifest (``results/tables/manifest.json``): what produced these numbers.

Config, seed, model ids, package versions, sha256 of every input file, git
commit, Python and platform, wall time / peak memory per rule from the
Snakemake ``benchmark:`` files, each clip's mask source, and per clip and
method the memory/speed set-up its train and infer jobs ran (``memory.json``).

Benchmark files are expected at ``benchmarks/<rule>/<wildcards>.tsv`` (the rule
is the folder right under a ``benchmarks`` folder; otherwise the file's stem).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path

import pandas as pd

from .atomic import write_json
from .metrics.base import pkg_version

PACKAGES = (
    "loraedit", "torch", "torchvision", "diffusers", "transformers", "peft", "accelerate", "safetensors",
    "snakemake", "pyiqa", "opencv-python-headless", "opencv-python", "numpy", "pandas", "scikit-image",
    "timm", "ffmpeg-python", "imageio-ffmpeg",
)  # fmt: skip


def sha256(path: str | os.PathLike) -> str:
    """sha256 of a file; of a folder, the sha256 over its files' relative paths and hashes."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(f"{f.relative_to(path).as_posix()}\0{sha256(f)}\n".encode())
        return h.hexdigest()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def package_versions() -> dict[str, str]:
    return {p: v for p in PACKAGES if (v := pkg_version(p)) != "not installed"}


def git_info(repo: str | os.PathLike = ".") -> dict | None:
    """``{"commit", "dirty"}``, or None outside a git work tree / before the first commit.

    ``--no-optional-locks`` keeps ``git status`` from rewriting the index.
    """

    def git(*args: str) -> str | None:
        try:
            p = subprocess.run(
                ["git", "--no-optional-locks", "-C", str(repo), *args],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return p.stdout.strip() if p.returncode == 0 else None

    commit = git("rev-parse", "--verify", "HEAD")
    if not commit:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status)}


def rule_of(bench_file: str | os.PathLike) -> str:
    parts = Path(bench_file).parts
    if "benchmarks" in parts[:-1]:
        i = len(parts) - 1 - parts[::-1].index("benchmarks")
        if i + 1 < len(parts) - 1:
            return parts[i + 1]
    return Path(bench_file).stem


def _num(v) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None  # Snakemake writes "-" / "NA" where it could not measure
    return v if math.isfinite(v) else None


def read_benchmarks(benchmark_files: list[str | os.PathLike]) -> tuple[list[dict], dict[str, dict]]:
    """Per job ``{file, rule, wall_s, max_rss_mb, cpu_s}`` and per rule totals / peaks."""
    jobs = []
    for f in benchmark_files:
        df = pd.read_csv(f, sep="\t")
        for _, row in df.iterrows():  # several rows when the rule used benchmark repeats
            jobs.append(
                {
                    "file": str(f),
                    "rule": rule_of(f),
                    "wall_s": _num(row.get("s")),
                    "max_rss_mb": _num(row.get("max_rss")),
                    "cpu_s": _num(row.get("cpu_time")),
                }
            )
    rules: dict[str, dict] = {}
    for j in jobs:
        r = rules.setdefault(j["rule"], {"jobs": 0, "wall_s_total": 0.0, "wall_s_max": None, "max_rss_mb": None})
        r["jobs"] += 1
        if j["wall_s"] is not None:
            r["wall_s_total"] += j["wall_s"]
            r["wall_s_max"] = max(r["wall_s_max"] or 0.0, j["wall_s"])
        if j["max_rss_mb"] is not None:
            r["max_rss_mb"] = max(r["max_rss_mb"] or 0.0, j["max_rss_mb"])
    return jobs, rules


def read_mask_sources(mask_dirs: list[str | os.PathLike]) -> dict[str, dict]:
    """Per clip, from ``<clip>/masks/source.json``: the mask source used, its model, the edited
    share of frames 2..T and any warning (an empty or all-keeping mask). Clips without the file
    (masks from before it existed) are left out."""
    out = {}
    for d in mask_dirs:
        f = Path(d) / "source.json"
        if f.is_file():
            info = json.loads(f.read_text())
            keys = (
                "source",
                "requested",
                "shape",
                "model",
                "text",
                "objects",
                "mask_frame",
                "edit_fraction",
                "warnings",
            )
            out[info.get("clip_id") or Path(d).parent.name] = {k: info[k] for k in keys if k in info}
    return out


MEMORY_RECORD = "memory.json"  # loraedit.memory.record.FILE (the layers keep memory out of here)


def read_memory_records(method_dirs: list[str | os.PathLike]) -> dict[str, dict]:
    """Per clip and method, ``{"train": ..., "infer": ...}`` from ``<clip>/<method>/lora/memory.json``
    and ``<clip>/<method>/output/memory.json``: the memory mode that ran, why, and every fallback.
    Folders without the files (composites, baselines, runs from before them) are left out."""
    out: dict[str, dict] = {}
    for d in map(Path, method_dirs):
        for stage, folder in (("train", "lora"), ("infer", "output")):
            f = d / folder / MEMORY_RECORD
            if f.is_file():
                info = json.loads(f.read_text())
                clip, method = info.get("clip_id") or d.parent.name, info.get("method") or d.name
                out.setdefault(clip, {}).setdefault(method, {})[stage] = info
    return out


def _gpus() -> list[str]:
    try:
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except (ImportError, RuntimeError):  # no torch / broken driver: the manifest still gets written
        return []


def write_manifest(
    out_path: str | os.PathLike,
    config: dict,
    model_ids: dict,
    input_files: list[str | os.PathLike],
    benchmark_files: list[str | os.PathLike],
    seed,
    mask_sources: dict[str, dict] | None = None,
    memory_modes: dict[str, dict] | None = None,
) -> None:
    """Write the run manifest JSON to ``out_path`` (atomically); ``mask_sources``: :func:`read_mask_sources`,
    ``memory_modes``: :func:`read_memory_records`."""
    jobs, rules = read_benchmarks(benchmark_files)
    manifest = {
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "model_ids": dict(model_ids),
        "config": config,
        "git": git_info(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": {"cpu_count": os.cpu_count(), "gpus": _gpus()},
        "packages": package_versions(),
        "inputs": [
            {"path": str(p), "sha256": sha256(p), "bytes": Path(p).stat().st_size if Path(p).is_file() else None}
            for p in input_files
        ],
        "mask_sources": mask_sources or {},
        "memory_modes": memory_modes or {},
        "rules": rules,
        "jobs": jobs,
    }
    write_json(out_path, manifest)
