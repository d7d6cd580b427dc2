"""Analytic FLOPs of a `WanTransformer3DModel` pass: every matmul (linear layers, the patch
convolution, attention scores and attention-weighted values), nothing elementwise.

One multiply-add = 2 FLOPs. Counted per op with the autograd rules PyTorch actually follows, so
the numbers match `torch.utils.flop_counter.FlopCounterMode` on the real module (tested):
- frozen base weights get no weight gradient; their input gradient is computed only when the
  input requires grad (block 0's input and the text/image context never do);
- a LoRA (rank r) on a Linear adds its two small matmuls forward and dA, dB, dh (and dx) backward;
- attention backward computes dP = dO V^T, dV, dQ = dS K, dK, each only when needed;
- gradient checkpointing recomputes each transformer block's forward once during backward.

"Model FLOPs" (for MFU) are forward + backward; "hardware FLOPs" add the recomputation. Fused
attention kernels also recompute the score matrix in backward (FlopCounterMode counts that on
GPU); it is not model work and is not counted here.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from ...conditioning import VAE_SPATIAL, latent_num_frames
from .conditioning import LORA_TARGET_REGEX

TEXT_TOKENS = 512  # Wan pads the UMT5 prompt to 512 tokens (hard-coded in diffusers' Wan attention)
IMAGE_TOKENS = 257  # CLIP ViT-H/14 at 224 px: 16 x 16 patches + the class token

# Wan2.1-I2V-14B-480P transformer (diffusers `transformer/config.json`); 16.4 B parameters.
WAN21_I2V_14B_CONFIG = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 40,
    "attention_head_dim": 128,
    "in_channels": 36,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 13824,
    "num_layers": 40,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "image_dim": 1280,
    "added_kv_proj_dim": 5120,
    "rope_max_seq_len": 1024,
}


def latent_tokens(num_frames: int, height: int, width: int, patch_size=(1, 2, 2)) -> int:
    """Transformer sequence length of a clip: 49 x 480 x 832 -> 13 x 30 x 52 = 20,280."""
    pt, ph, pw = patch_size
    return (latent_num_frames(num_frames) // pt) * (height // VAE_SPATIAL // ph) * (width // VAE_SPATIAL // pw)


@dataclasses.dataclass(frozen=True)
class FlopCount:
    linear: float = 0.0  # frozen weights: Linear layers and the patch convolution
    lora: float = 0.0  # the adapters' matmuls
    self_attention: float = 0.0
    cross_attention: float = 0.0  # text (512 keys) + image (257 keys)

    @property
    def attention(self) -> float:
        return self.self_attention + self.cross_attention

    @property
    def total(self) -> float:
        return self.linear + self.lora + self.self_attention + self.cross_attention

    def __add__(self, other: FlopCount) -> FlopCount:
        return FlopCount(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))

    def as_dict(self) -> dict[str, float]:
        return {**dataclasses.asdict(self), "attention": self.attention, "total": self.total}


@dataclasses.dataclass(frozen=True)
class TrainStepFlops:
    forward: FlopCount
    backward: FlopCount
    recompute: FlopCount  # zero without gradient checkpointing

    @property
    def model(self) -> float:
        return self.forward.total + self.backward.total

    @property
    def hardware(self) -> float:
        return self.model + self.recompute.total

    def as_dict(self) -> dict:
        return {
            "forward": self.forward.as_dict(),
            "backward": self.backward.as_dict(),
            "recompute": self.recompute.as_dict(),
            "model": self.model,
            "hardware": self.hardware,
        }


@dataclasses.dataclass(frozen=True)
class _Linear:
    name: str  # module path in the real model, so the LoRA target regex applies as peft applies it
    rows: int  # tokens the weight is applied to
    d_in: int
    d_out: int
    input_grad: bool  # does the input require grad (then backward computes dx)
    in_block: bool  # recomputed under gradient checkpointing


@dataclasses.dataclass(frozen=True)
class _Attention:
    kind: str  # "self_attention" | "cross_attention"
    queries: int
    keys: int
    width: int  # heads x head_dim
    grads: tuple[bool, bool, bool]  # q, k, v require grad


def _ops(
    config: Mapping, num_tokens: int, text_tokens: int, image_tokens: int, lora: re.Pattern | None
) -> list[_Linear | _Attention]:
    """Every matmul of one forward, in execution order, with its gradient flags."""
    d = config["num_attention_heads"] * config["attention_head_dim"]
    f = config["ffn_dim"]
    pt, ph, pw = config["patch_size"]
    patch = pt * ph * pw
    image_dim = config.get("image_dim")
    added_kv = config.get("added_kv_proj_dim")
    n = num_tokens

    def has_lora(name: str) -> bool:
        return lora is not None and lora.fullmatch(name) is not None

    ops: list[_Linear | _Attention] = [
        # Inputs never require grad: nothing before block 0 has a backward.
        _Linear("patch_embedding", n, config["in_channels"] * patch, d, False, False),
        _Linear("condition_embedder.time_embedder.linear_1", 1, config["freq_dim"], d, False, False),
        _Linear("condition_embedder.time_embedder.linear_2", 1, d, d, False, False),
        _Linear("condition_embedder.time_proj", 1, d, 6 * d, False, False),
        _Linear("condition_embedder.text_embedder.linear_1", text_tokens, config["text_dim"], d, False, False),
        _Linear("condition_embedder.text_embedder.linear_2", text_tokens, d, d, False, False),
    ]
    use_image = image_dim is not None and image_tokens > 0
    if use_image:
        ops += [
            _Linear(
                "condition_embedder.image_embedder.ff.net.0.proj", image_tokens, image_dim, image_dim, False, False
            ),
            _Linear("condition_embedder.image_embedder.ff.net.2", image_tokens, image_dim, d, False, False),
        ]

    h_grad = False  # does the residual stream require grad (becomes True after the first LoRA)
    for i in range(config["num_layers"]):
        b = f"blocks.{i}"

        def linear(name, rows, d_in, d_out, input_grad, _b=b):
            ops.append(_Linear(f"{_b}.{name}", rows, d_in, d_out, input_grad, True))
            return input_grad or has_lora(f"{_b}.{name}")  # does the output require grad

        # 1. self-attention (the modulation comes from the frozen time embedding: no grad)
        q, k, v = (linear(f"attn1.to_{x}", n, d, d, h_grad) for x in "qkv")
        ops.append(_Attention("self_attention", n, n, d, (q, k, v)))
        h_grad |= linear("attn1.to_out.0", n, d, d, q or k or v)
        # 2. cross-attention: queries from the video, keys/values from the text (and image) context
        q = linear("attn2.to_q", n, d, d, h_grad)
        k, v = (linear(f"attn2.to_{x}", text_tokens, d, d, False) for x in "kv")
        ops.append(_Attention("cross_attention", n, text_tokens, d, (q, k, v)))
        out_grad = q or k or v
        if use_image and added_kv is not None:
            ki, vi = (linear(f"attn2.add_{x}_proj", image_tokens, added_kv, d, False) for x in "kv")
            ops.append(_Attention("cross_attention", n, image_tokens, d, (q, ki, vi)))
            out_grad |= ki or vi
        h_grad |= linear("attn2.to_out.0", n, d, d, out_grad)
        # 3. feed-forward
        g = linear("ffn.net.0.proj", n, d, f, h_grad)
        h_grad |= linear("ffn.net.2", n, f, d, g)

    ops.append(_Linear("proj_out", n, d, config["out_channels"] * patch, h_grad, False))
    return ops


def _forward(op: _Linear | _Attention, rank: int, lora: re.Pattern | None) -> FlopCount:
    if isinstance(op, _Attention):
        # QK^T and PV: 2 matmuls of queries x keys x width
        return FlopCount(**{op.kind: 4.0 * op.queries * op.keys * op.width})
    base = 2.0 * op.rows * op.d_in * op.d_out
    adapter = 2.0 * op.rows * rank * (op.d_in + op.d_out) if lora and lora.fullmatch(op.name) else 0.0
    return FlopCount(linear=base, lora=adapter)


def _backward(op: _Linear | _Attention, rank: int, lora: re.Pattern | None) -> FlopCount:
    if isinstance(op, _Attention):
        q, k, v = op.grads
        matmuls = (q or k) + v + q + k  # dP = dO V^T, dV = P^T dO, dQ = dS K, dK = dS^T Q
        return FlopCount(**{op.kind: 2.0 * matmuls * op.queries * op.keys * op.width})
    base = 2.0 * op.rows * op.d_in * op.d_out if op.input_grad else 0.0  # dx = dy W (W frozen)
    adapter = 0.0
    if lora and lora.fullmatch(op.name):
        # h = x A^T, y = h B^T: dB = dy^T h, dh = dy B, dA = dh^T x (+ dx = dh A)
        adapter = 2.0 * op.rows * rank * (2 * op.d_out + op.d_in + (op.d_in if op.input_grad else 0))
    return FlopCount(linear=base, lora=adapter)


def _sum(counts) -> FlopCount:
    total = FlopCount()
    for c in counts:
        total = total + c
    return total


def _lora_pattern(lora_rank: int, lora_targets: str | None) -> re.Pattern | None:
    return re.compile(lora_targets or LORA_TARGET_REGEX) if lora_rank > 0 else None


def forward_flops(
    config: Mapping,
    num_tokens: int,
    text_tokens: int = TEXT_TOKENS,
    image_tokens: int = IMAGE_TOKENS,
    lora_rank: int = 0,
    lora_targets: str | None = None,
) -> FlopCount:
    """One transformer forward over `num_tokens` video tokens (batch 1), with an optional LoRA."""
    lora = _lora_pattern(lora_rank, lora_targets)
    return _sum(_forward(op, lora_rank, lora) for op in _ops(config, num_tokens, text_tokens, image_tokens, lora))


def train_step_flops(
    config: Mapping,
    num_tokens: int,
    text_tokens: int = TEXT_TOKENS,
    image_tokens: int = IMAGE_TOKENS,
    lora_rank: int = 16,
    lora_targets: str | None = None,
    gradient_checkpointing: bool = True,
) -> TrainStepFlops:
    """One LoRA training step (frozen base): forward, backward and, with checkpointing, the recompute."""
    if lora_rank <= 0:
        raise ValueError("train_step_flops: a LoRA training step needs lora_rank > 0")
    lora = _lora_pattern(lora_rank, lora_targets)
    ops = _ops(config, num_tokens, text_tokens, image_tokens, lora)
    forward = _sum(_forward(op, lora_rank, lora) for op in ops)
    backward = _sum(_backward(op, lora_rank, lora) for op in ops)
    in_block = [op for op in ops if isinstance(op, _Attention) or op.in_block]
    recompute = _sum(_forward(op, lora_rank, lora) for op in in_block) if gradient_checkpointing else FlopCount()
    return TrainStepFlops(forward, backward, recompute)


def module_names(config: Mapping) -> list[str]:
    """The module paths the count refers to (checked against the real model in the tests)."""
    return [op.name for op in _ops(config, 1, TEXT_TOKENS, IMAGE_TOKENS, None) if isinstance(op, _Linear)]
