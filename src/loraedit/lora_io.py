"""LoRA files: the diffusers format (stock `load_lora_weights`) plus the family's own extra files.

diffusers: `transformer.blocks.N.attn1.to_q.lora_A.weight` ... with the LoraConfig (rank, alpha)
in the safetensors metadata, so alpha survives a round trip. Wan adds the original Wan key names
(`backends/wan/lora_keys.py`); HunyuanVideo writes the diffusers format only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from peft import LoraConfig
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .atomic import atomic_path
from .backends.base import Family

DIFFUSERS_WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def expert_weight_name(index: int, base: str) -> str:
    """File name per expert: expert 0 keeps the stock name; Wan2.2's second expert gets a suffix."""
    if index == 0:
        return base
    stem, ext = os.path.splitext(base)
    return f"{stem}_transformer_{index + 1}{ext}"


def save_lora(
    out_dir: str | os.PathLike, states: list[dict[str, torch.Tensor]], config: LoraConfig, family: Family
) -> list[Path]:
    """Write every expert's LoRA into `out_dir`: the diffusers file and the family's extra files; returns the files."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metadata = config.to_dict()
    metadata = {k: (list(v) if isinstance(v, set) else v) for k, v in metadata.items()}
    written = []
    for i, state in enumerate(states):
        state = {k: v.to(torch.float32).contiguous() for k, v in state.items()}
        name = expert_weight_name(i, DIFFUSERS_WEIGHT_NAME)
        with atomic_path(out_dir / name) as tmp:
            family.PIPELINE_CLS.save_lora_weights(
                tmp.parent,
                transformer_lora_layers=state,
                weight_name=tmp.name,
                transformer_lora_adapter_metadata=metadata,
            )
        written.append(out_dir / name)
        for base, tensors in family.extra_lora_files(state, config.lora_alpha).items():
            extra = out_dir / expert_weight_name(i, base)
            with atomic_path(extra) as tmp:
                save_file(tensors, str(tmp), metadata={"format": "pt"})
            written.append(extra)
    return written


def load_lora_into_pipeline(
    pipe, lora_dir: str | os.PathLike, num_experts: int = 1, adapter_name: str = "loraedit"
) -> None:
    """Stock diffusers loading; Wan2.2's second expert goes into transformer_2."""
    lora_dir = Path(lora_dir)
    pipe.load_lora_weights(str(lora_dir), weight_name=DIFFUSERS_WEIGHT_NAME, adapter_name=adapter_name)
    if num_experts > 1:
        pipe.load_lora_weights(
            str(lora_dir),
            weight_name=expert_weight_name(1, DIFFUSERS_WEIGHT_NAME),
            adapter_name=adapter_name,
            load_into_transformer_2=True,
        )


def read_lora(lora_dir: str | os.PathLike, expert: int = 0) -> tuple[dict[str, torch.Tensor], float]:
    """A saved diffusers-format LoRA as (peft state without the 'transformer.' prefix, its alpha).

    The alpha comes from the LoraConfig the file carries (`save_lora`); a file without one is
    read as alpha = rank (scale 1)."""
    path = Path(lora_dir) / expert_weight_name(expert, DIFFUSERS_WEIGHT_NAME)
    state = {k.removeprefix("transformer."): v for k, v in load_file(str(path)).items()}
    with safe_open(str(path), "pt") as f:
        meta = (f.metadata() or {}).get("lora_adapter_metadata")
    config = json.loads(meta) if meta else {}
    config = config.get("transformer", config)  # keyed by component in some diffusers versions
    alpha = config.get("lora_alpha")
    if alpha is None:
        alpha = next(v.shape[0] for k, v in state.items() if k.endswith("lora_A.weight"))
    return state, float(alpha)
