"""LoRA files: diffusers format (stock `load_lora_weights`) and the original Wan key names.

HunyuanVideo-I2V LoRAs are written in the diffusers format only (`transformer.transformer_blocks.N.attn.to_q...`,
loadable with `HunyuanVideoImageToVideoPipeline.load_lora_weights`).

diffusers: `transformer.blocks.N.attn1.to_q.lora_A.weight` ... with the LoraConfig (rank, alpha)
in the safetensors metadata, so alpha survives a round trip.
Wan (ComfyUI / DiffSynth / diffusion-pipe): `diffusion_model.blocks.N.self_attn.q.lora_A.weight`
... plus a scalar `.alpha` per layer.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from diffusers import HunyuanVideoImageToVideoPipeline, WanImageToVideoPipeline
from peft import LoraConfig
from safetensors.torch import save_file

from .atomic import atomic_path

DIFFUSERS_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
WAN_WEIGHT_NAME = "lora_wan.safetensors"

# diffusers module path inside a block -> original Wan module path
_TO_WAN = {
    "attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o",
    "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k", "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o",
    "attn2.add_k_proj": "cross_attn.k_img", "attn2.add_v_proj": "cross_attn.v_img",
    "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2",
}
_KEY = re.compile(r"^(?:transformer\.)?blocks\.(\d+)\.(.+)\.(lora_[AB])\.weight$")


def expert_weight_name(index: int, base: str) -> str:
    """File name per expert: expert 0 keeps the stock name; Wan2.2's second expert gets a suffix."""
    if index == 0:
        return base
    stem, ext = os.path.splitext(base)
    return f"{stem}_transformer_{index + 1}{ext}"


def to_wan_keys(state: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """diffusers/peft LoRA keys -> original Wan keys (+ one `.alpha` scalar per layer)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = _KEY.match(key)
        if not match or match.group(2) not in _TO_WAN:
            raise KeyError(f"no Wan name for LoRA key {key!r}")
        block, module, ab = match.groups()
        base = f"diffusion_model.blocks.{block}.{_TO_WAN[module]}"
        out[f"{base}.{ab}.weight"] = value.contiguous()
        out[f"{base}.alpha"] = torch.tensor(float(alpha))
    return out


def save_lora(out_dir: str | os.PathLike, states: list[dict[str, torch.Tensor]], config: LoraConfig,
              family: str = "wan") -> list[Path]:
    """Write every expert's LoRA in both formats into `out_dir` (family "hunyuan": diffusers only); returns the files."""
    pipeline_cls = HunyuanVideoImageToVideoPipeline if family == "hunyuan" else WanImageToVideoPipeline
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metadata = config.to_dict()
    metadata = {k: (list(v) if isinstance(v, set) else v) for k, v in metadata.items()}
    written = []
    for i, state in enumerate(states):
        state = {k: v.to(torch.float32).contiguous() for k, v in state.items()}
        name = expert_weight_name(i, DIFFUSERS_WEIGHT_NAME)
        with atomic_path(out_dir / name) as tmp:
            pipeline_cls.save_lora_weights(
                tmp.parent, transformer_lora_layers=state, weight_name=tmp.name,
                transformer_lora_adapter_metadata=metadata,
            )
        written.append(out_dir / name)
        if family == "hunyuan":
            continue
        wan_name = expert_weight_name(i, WAN_WEIGHT_NAME)
        with atomic_path(out_dir / wan_name) as tmp:
            save_file(to_wan_keys(state, config.lora_alpha), str(tmp), metadata={"format": "pt"})
        written.append(out_dir / wan_name)
    return written


def load_lora_into_pipeline(pipe: WanImageToVideoPipeline, lora_dir: str | os.PathLike, num_experts: int = 1,
                            adapter_name: str = "loraedit") -> None:
    """Stock diffusers loading; Wan2.2's second expert goes into transformer_2."""
    lora_dir = Path(lora_dir)
    pipe.load_lora_weights(str(lora_dir), weight_name=DIFFUSERS_WEIGHT_NAME, adapter_name=adapter_name)
    if num_experts > 1:
        pipe.load_lora_weights(str(lora_dir), weight_name=expert_weight_name(1, DIFFUSERS_WEIGHT_NAME),
                               adapter_name=adapter_name, load_into_transformer_2=True)
