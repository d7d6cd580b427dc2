"""What a train or infer job asked for, what it planned, what actually ran, and every fallback.

`MemoryRecord` is filled while the job sets up and probes its accelerations; the job writes
`to_dict()` as `memory.json` beside its outputs (the LoRA folder, the output folder) and the run
manifest gathers those files. Each fallback and warning is also logged, as one line.
"""

from __future__ import annotations

import dataclasses
import logging

import torch

from .verified import gpu_class

log = logging.getLogger(__name__)

FILE = "memory.json"
TRAIN_KEYS = (
    "memory",
    "resident_blocks",
    "offload_activations",
    "selective_checkpointing",
    "compile",
    "attention_backend",
    "fp8_weights",
    "fp8_matmul",
    "gpu_memory_gb",
    "memory_fraction",
    "stream_slots",
    "offload_blocks_per_group",
    "gradient_checkpointing",
    "verified_modes",
)
INFER_KEYS = ("compile", "attention_backend")


def one_line(error: BaseException | str) -> str:
    """The first line of an error, with its type, short enough for a log line and a JSON field."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()] or [""]
    # "backend='inductor' raised:" (torch.compile) says what failed on the next line
    first = f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    return first[:300]


def device_info(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"type": device.type}
    name = torch.cuda.get_device_name(device)
    return {"type": "cuda", "name": name, "gpu_class": gpu_class(name)}


@dataclasses.dataclass
class MemoryRecord:
    stage: str  # train | infer
    requested: dict  # the config keys that choose the memory/speed set-up, as given
    device: dict
    plan: dict | None = None  # the plan chosen and why (training)
    verified: dict | None = None  # the verification records auto chose from (training on CUDA)
    ran: dict | None = None  # what ran after the fallbacks, read back from the model
    fallbacks: list[dict] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def start(cls, stage: str, cfg: dict, device: torch.device) -> MemoryRecord:
        keys = TRAIN_KEYS if stage == "train" else INFER_KEYS
        return cls(stage, {k: (cfg or {}).get(k) for k in keys}, device_info(device))

    def fall_back(self, acceleration: str, error: BaseException | str, when: str, instead: str) -> None:
        """Log and keep one fallback: `acceleration` failed `when`; `instead` runs."""
        line = one_line(error)
        log.warning("%s: %s failed %s (%s); %s instead", self.stage, acceleration, when, line, instead)
        self.fallbacks.append({"acceleration": acceleration, "when": when, "error": line, "instead": instead})

    def warn(self, text: str) -> None:
        log.warning("%s", text)
        self.warnings.append(text)

    def summary(self) -> str:
        ran = ", ".join(f"{k} {v}" for k, v in (self.ran or {}).items())
        planned = f"; planned {self.plan['mode']} ({self.plan['reason']})" if self.plan else ""
        return f"{self.stage}: ran {ran}{planned}; {len(self.fallbacks)} fallback(s)"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
