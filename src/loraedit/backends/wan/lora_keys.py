"""The original Wan key names of a LoRA (ComfyUI / DiffSynth / diffusion-pipe), written beside the
diffusers-format file: `diffusion_model.blocks.N.self_attn.q.lora_A.weight` ... plus a scalar
`.alpha` per layer."""

from __future__ import annotations

import re

import torch

WAN_WEIGHT_NAME = "lora_wan.safetensors"

# diffusers module path inside a block -> original Wan module path
_TO_WAN = {
    "attn1.to_q": "self_attn.q",
    "attn1.to_k": "self_attn.k",
    "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o",
    "attn2.to_q": "cross_attn.q",
    "attn2.to_k": "cross_attn.k",
    "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o",
    "attn2.add_k_proj": "cross_attn.k_img",
    "attn2.add_v_proj": "cross_attn.v_img",
    "ffn.net.0.proj": "ffn.0",
    "ffn.net.2": "ffn.2",
}
_KEY = re.compile(r"^(?:transformer\.)?blocks\.(\d+)\.(.+)\.(lora_[AB])\.weight$")


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


def extra_lora_files(state: dict[str, torch.Tensor], alpha: float) -> dict[str, dict[str, torch.Tensor]]:
    """File name -> tensors written beside the diffusers-format LoRA: the original-key copy."""
    return {WAN_WEIGHT_NAME: to_wan_keys(state, alpha)}
