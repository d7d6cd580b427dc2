"""What every model family gives the shared training and inference loops.

A *family* (Wan, HunyuanVideo, ...) is a package under `loraedit.backends` whose module namespace
satisfies `Family`: the one interface that `training`, `inference`, `lora_io` and `stages` call.
A *backend* is a row of `registry.BACKENDS`: a checkpoint (or a tiny offline build) of a family.
Nothing here imports a family; the registry does, by dotted name, on first use.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import torch


@dataclasses.dataclass(frozen=True)
class BackendSpec:
    name: str
    family: str  # a key of registry.FAMILIES
    default_path: str | None = None  # a local folder or hub id of the diffusers-format checkpoint
    tiny: bool = False  # built offline from the family's tiny config (seeded random weights)
    experts: tuple[str, ...] = ("transformer",)  # pipeline attribute names of the transformers
    boundary_ratio: float | None = None  # Wan2.2: t >= ratio*1000 uses expert 0, below expert 1
    has_image_encoder: bool = True


class Family(Protocol):
    """The module-level interface of a family package (checked for every registered family in the tests).

    Shapes: video (B, 3, T, H, W) in [-1, 1]; keep (B, T, H, W), 1 = keep; latents (B, C_lat, T_lat, h, w);
    condition (B, C_cond, T_lat, h, w); `text` a dict of tensors that `predict` reads (a training sample
    holds the same keys).
    """

    NAME: str
    LORA_TARGET_REGEX: str  # peft target_modules regex of the per-clip LoRA
    PIPELINE_CLS: type  # the stock diffusers pipeline (LoRA save/load, oracle tests)

    def load_encoders(self, spec: BackendSpec, model_cfg: dict, device: torch.device, dtype: torch.dtype) -> Any: ...

    def load_transformers(
        self, spec: BackendSpec, model_cfg: dict, device: torch.device | None, dtype: torch.dtype
    ) -> list[torch.nn.Module]: ...

    def assemble_pipeline(self, encoders: Any, transformers: list[torch.nn.Module], spec: BackendSpec) -> Any: ...

    def encode_video(self, vae: torch.nn.Module, video: torch.Tensor) -> torch.Tensor: ...

    def decode_latents(self, vae: torch.nn.Module, latents: torch.Tensor) -> torch.Tensor: ...

    def build_condition(
        self, vae: torch.nn.Module, video: torch.Tensor, keep: torch.Tensor, mask_mode: str
    ) -> torch.Tensor: ...

    def keep_channel(self, condition: torch.Tensor) -> torch.Tensor: ...

    def encode_text(
        self,
        encoders: Any,
        prompt: str,
        image: np.ndarray,
        negative_prompt: str | None,
        device: torch.device | None,
        image_preprocess: str,
    ) -> tuple[dict, dict | None]: ...

    def initial_latents(self, noise: torch.Tensor, condition: torch.Tensor) -> torch.Tensor: ...

    def predict(
        self,
        transformer: torch.nn.Module,
        latent_input: torch.Tensor,
        timestep: torch.Tensor,
        text: dict,
        device: torch.device,
    ) -> torch.Tensor: ...

    def extra_lora_files(self, state: dict[str, torch.Tensor], alpha: float) -> dict[str, dict[str, torch.Tensor]]: ...


FAMILY_ATTRIBUTES = tuple(name for name in (*Family.__annotations__, *vars(Family)) if not name.startswith("_"))


@dataclasses.dataclass
class Models:
    """What a stage holds: the family, the encoders (None once freed) and the transformer(s)."""

    spec: BackendSpec
    family: Family
    encoders: Any
    transformers: list[torch.nn.Module]


# Components are seeded one by one so that building only some of them (e.g. the transformer in the
# training job) gives the same weights as building all of them.
SEED_OFFSETS = {"transformer": 0, "vae": 1, "text_encoder": 2, "image_encoder": 3}


@contextlib.contextmanager
def seeded(seed: int, component: str) -> Iterator[None]:
    """Build a tiny component under its own seed, leaving the global CPU generator as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 1000 + SEED_OFFSETS[component])
        yield


def cast_like_from_pretrained(model: torch.nn.Module, device, dtype: torch.dtype) -> torch.nn.Module:
    """Cast a built model as `from_pretrained(torch_dtype=...)` would: the modules the class keeps in
    float32 (`_keep_in_fp32_modules`: norms, RoPE, time embedding, modulation tables) stay float32."""
    model.to(device=device)
    if dtype == torch.float32:
        return model
    keep = set(model._keep_in_fp32_modules or ())
    for name, p in model.named_parameters():
        p.data = p.data.to(torch.float32 if keep & set(name.split(".")) else dtype)
    return model


def checkpoint_path(model_cfg: dict, spec: BackendSpec) -> str:
    path = model_cfg.get("path") or spec.default_path
    if not path:
        raise ValueError(f"model.path is required for backend {spec.name!r}")
    return path


def tiny_sizes(model_cfg: dict) -> tuple[int, dict]:
    """(seed, size overrides) of a tiny build: `model.seed`, `model.tiny`."""
    return int(model_cfg.get("seed", 0)), dict(model_cfg.get("tiny", {}) or {})
