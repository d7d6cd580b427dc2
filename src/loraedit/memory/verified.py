"""Which memory/speed modes ran correctly on which GPU class: `train.memory: auto` picks only those.

A verification record comes from the GPU benchmark (`benchmarks/gpu_scale.py --verified-dir`): a
mode whose LoRA check passed (it trains the same LoRA as the plain bf16 mode) and whose timed
training ran, on one device. Records live in `<train.verified_modes>/<gpu class>.json`:

    {"gpu_class": "H100", "records": [{"mode": "fast", "passed": true, "gpu_class": "H100",
      "device": "NVIDIA H100 80GB HBM3", "torch": "2.14.1+cu130", "diffusers": "0.42.1",
      "attention_backend": "_native_cudnn", "lora_check": {...}, "seconds_per_step": 5.1,
      "peak_gb": 60.2, "frames": 49, "commit": "...", "dirty": false, "date": "2026-12-01",
      "command": "python benchmarks/gpu_scale.py ..."}, ...]}

one record per benchmark mode (the latest run replaces it: a failing run revokes a passing one).
A mode verifies the accelerations it ran (`MODE_FEATURES`); the attention kernel is verified by
name, since FlashAttention-3 on one machine says nothing about cuDNN attention on another.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from ..atomic import write_json

# Benchmark mode (memory.bench.MODES) -> the accelerations it runs; "attention" stands for the
# kernel the record names (`attention:<backend>`), nothing when that is PyTorch's own choice.
MODE_FEATURES = {
    "bf16": (),
    "compile": ("compile",),
    "attn": ("attention",),
    "fast": ("compile", "attention", "keep_attention"),
    "low": ("stream", "attention"),
    "low20": ("stream", "attention"),
}

# torch.cuda.get_device_name -> GPU class; first match wins (H200 NVL before H200, A100 by memory).
GPU_CLASSES = (
    (r"GH200", "GH200"),
    (r"H200", "H200"),
    (r"H100", "H100"),
    (r"B200", "B200"),
    (r"B100", "B100"),
    (r"A100.*80\s*GB", "A100-80GB"),
    (r"A100", "A100-40GB"),
    (r"L40S", "L40S"),
    (r"L40", "L40"),
    (r"A10G", "A10G"),
    (r"\bL4\b", "L4"),
)
VERIFY_HINT = "benchmarks/gpu_scale.py --verified-dir writes them (benchmarks/results/verified/README.md)"


def gpu_class(device_name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'H100', 'NVIDIA A100-SXM4-80GB' -> 'A100-80GB'; other names: the
    name without the vendor, spaces as dashes ('NVIDIA GeForce RTX 4090' -> 'RTX-4090')."""
    for pattern, name in GPU_CLASSES:
        if re.search(pattern, device_name, re.IGNORECASE):
            return name
    short = re.sub(r"\b(NVIDIA|GeForce)\b", "", device_name)
    return re.sub(r"[^A-Za-z0-9.]+", "-", short).strip("-") or "unknown"


def record_features(record: dict) -> frozenset[str]:
    out = set()
    for feature in MODE_FEATURES.get(record.get("mode"), ()):
        if feature != "attention":
            out.add(feature)
        elif record.get("attention_backend") not in (None, "native"):
            out.add(f"attention:{record['attention_backend']}")
    return frozenset(out)


@dataclasses.dataclass(frozen=True)
class Verified:
    """The verification records of one GPU class (`records`: passing or not), from `source`."""

    gpu_class: str
    source: str | None  # the records' folder; None: no `train.verified_modes` set
    records: tuple[dict, ...] = ()

    @classmethod
    def load(cls, folder: str | Path | None, gpu: str) -> Verified:
        if not folder:
            return cls(gpu, None)
        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"train.verified_modes: {folder} is not a folder (the GPU verification records)")
        path = folder / f"{gpu}.json"
        if not path.is_file():
            return cls(gpu, str(folder))
        return cls(gpu, str(folder), tuple(read_records(path)))

    def passing(self) -> list[dict]:
        return [r for r in self.records if r.get("passed") is True and r.get("gpu_class") == self.gpu_class]

    def covers(self, required: frozenset[str]) -> bool:
        """Does one passing record run every acceleration in `required` (nothing required: yes)?"""
        return not required or any(required <= record_features(r) for r in self.passing())

    def describe(self) -> dict:
        return {
            "gpu_class": self.gpu_class,
            "source": self.source,
            "passing": sorted(r["mode"] for r in self.passing()),
            "failing": sorted(r["mode"] for r in self.records if r not in self.passing()),
        }

    def plain_note(self, unverified: list[str]) -> str:
        """The warning when auto leaves modes out: what it runs instead, and how to verify."""
        where = f"in {self.source}" if self.source else "(train.verified_modes is not set)"
        return (
            f"train.memory: auto: no passing verification record for {'/'.join(unverified)} on "
            f"{self.gpu_class} {where}; training plain bf16 (gradient checkpointing; no compile, streaming "
            f"or attention kernel unless asked for); {VERIFY_HINT}"
        )


def read_records(path: Path) -> list[dict]:
    """The records of one file; a malformed file is a one-line error (not a silent 'unverified')."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"train.verified_modes: {path}: not readable JSON ({e})") from e
    records = data.get("records") if isinstance(data, dict) else None
    if not isinstance(records, list) or not all(isinstance(r, dict) and "mode" in r and "passed" in r for r in records):
        raise ValueError(f"train.verified_modes: {path}: expected {{'records': [{{'mode', 'passed', ...}}]}}")
    return records


# ----------------------------------------------------------------------------- writing


def records_from_benchmark(result: dict, commit: str | None = None, dirty: bool | None = None) -> list[dict]:
    """One record per mode of MODE_FEATURES with a LoRA check in a `gpu_scale.py` result: passed
    when the check is ok, the asked attention kernel ran, and the timed training had no error."""
    device = result["device"]
    if device["type"] != "cuda" or result["settings"]["config"] != "wan14b":
        raise ValueError(
            f"verification records come from CUDA runs of the wan14b config, not "
            f"{device['type']} / {result['settings']['config']}"
        )
    out = []
    for check in (r for r in result["records"] if r["section"] == "check" and r.get("mode") in MODE_FEATURES):
        trains = [r for r in result["records"] if r["section"] == "train" and r.get("mode") == check["mode"]]
        timed = max((r for r in trains if "seconds_per_step" in r), key=lambda r: r["frames"], default={})
        passed = (
            check.get("status") == "ok"
            and check.get("attention_kernel_ok") is not False
            and bool(timed)
            and not any("error" in r for r in trains)
        )
        out.append(
            {
                "mode": check["mode"],
                "passed": passed,
                "gpu_class": gpu_class(device["name"]),
                "device": device["name"],
                "torch": result["versions"]["torch"],
                "diffusers": result["versions"].get("diffusers"),
                "cuda": result["versions"].get("cuda"),
                "attention_backend": check.get("attention_backend"),
                "lora_check": {
                    k: check.get(k)
                    for k in ("status", "relative_difference", "tolerance", "why", "error", "attention_kernel_ok")
                },
                "frames": timed.get("frames"),
                "seconds_per_step": timed.get("seconds_per_step"),
                "peak_gb": timed.get("peak_allocated_gb"),
                "commit": commit,
                "dirty": dirty,
                "date": result["date"][:10],
                "command": result["commands"][-1],
            }
        )
    return out


def write_record(folder: str | Path, record: dict) -> Path:
    """Add `record` to its GPU class's file, replacing that mode's earlier record."""
    path = Path(folder) / f"{record['gpu_class']}.json"
    kept = [r for r in read_records(path) if r["mode"] != record["mode"]] if path.is_file() else []
    write_json(path, {"gpu_class": record["gpu_class"], "records": sorted(kept + [record], key=lambda r: r["mode"])})
    return path
