"""Stage 1 of the toy model: a small `AutoencoderKLWan` trained on the toy world's frames.

dim_mult [1, 2, 2] gives 4x spatial and 4x temporal compression (17x64x64 -> 16x5x16x16). It is
trained deterministically on the posterior mode (no sampling), decoded without the final clamp of
`AutoencoderKLWan.decode` (the clamp zeroes the gradient of every saturated pixel), with plain MSE
and a tiny pull of the latent mean towards 0. Training data are rendered on the fly from the
step number, so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from diffusers import AutoencoderKLWan

from . import world as toyworld

VAE_SEED_BASE = 1_000_000  # training scenes: seeds VAE_SEED_BASE + step (held-out evaluation uses small seeds)


@dataclasses.dataclass
class VaeRecipe:
    base_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    # Wan2.2's residual down/up blocks (parameter-free space-to-channel average / duplicate shortcuts):
    # held out after 600 steps 22.9 dB against 17.0 dB without them (probes: docs/toy-world.md)
    is_residual: bool = True
    lr: float = 1e-3
    warmup: int = 50
    steps: int = 6000
    min_lr_ratio: float = 0.05  # cosine decay to lr * this at `steps`
    batch: int = 8  # many small crops of different scenes beat few large ones (probes: docs/toy-world.md)
    frames: int = 9  # 4k+1 consecutive frames per sample
    crop: int = 16  # square crops of the 64x64 frames (the VAE is convolutional)
    mean_weight: float = 1e-6  # weight of mean(mu^2): the deterministic stand-in for the KL term
    # Stage 1b: the whole VAE on whole 17x64x64 clips. Trained on crops of 9 frames only, it decodes
    # frames 10-17 2-3 dB worse than frames 1-9 (the causal caches of later chunks never trained).
    whole_steps: int = 500
    whole_lr: float = 3e-4
    whole_batch: int = 2


def build_vae(recipe: VaeRecipe, seed: int = 0) -> AutoencoderKLWan:
    levels = len(recipe.dim_mult) - 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKLWan(
            base_dim=recipe.base_dim,
            z_dim=16,
            dim_mult=list(recipe.dim_mult),
            num_res_blocks=recipe.num_res_blocks,
            temperal_downsample=[True] * levels,
            scale_factor_spatial=2**levels,
            scale_factor_temporal=4,
            is_residual=recipe.is_residual,
        )


def decode_unclamped(vae: AutoencoderKLWan, z: torch.Tensor) -> torch.Tensor:
    """`AutoencoderKLWan._decode` without its final clamp. z (B, 16, T_lat, h, w) -> (B, 3, T, H, W)."""
    vae.clear_cache()
    x = vae.post_quant_conv(z)
    outs = []
    for i in range(z.shape[2]):
        vae._conv_idx = [0]
        outs.append(
            vae.decoder(x[:, :, i : i + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx, first_chunk=i == 0)
        )
    vae.clear_cache()
    return torch.cat(outs, 2)


def batch_at(step: int, recipe: VaeRecipe, size: int = 64, clip_frames: int = 17) -> torch.Tensor:
    """The training batch of `step`: (B, 3, frames, crop, crop) in [-1, 1], a function of step only."""
    rng = np.random.default_rng([VAE_SEED_BASE, step])
    clips = []
    for b in range(recipe.batch):
        video, _, _ = toyworld.render_frames(
            toyworld.scene_for(VAE_SEED_BASE + step, b), clip_frames, (size, size), edited=bool(rng.random() < 0.5)
        )
        t0 = int(rng.integers(0, clip_frames - recipe.frames + 1))
        y0, x0 = (int(v) for v in rng.integers(0, size - recipe.crop + 1, 2))
        clips.append(video[t0 : t0 + recipe.frames, y0 : y0 + recipe.crop, x0 : x0 + recipe.crop])
    x = torch.from_numpy(np.stack(clips)).float() / 127.5 - 1.0  # (B, T, h, w, 3)
    return x.permute(0, 4, 1, 2, 3).contiguous()


def whole_clip_recipe(recipe: VaeRecipe) -> VaeRecipe:
    """Stage 1b batches: whole 17-frame clips (as the pipelines encode and decode them), scenes after
    those of stage 1 (batch_at(recipe.steps + step, ...))."""
    return dataclasses.replace(recipe, crop=64, frames=17, batch=recipe.whole_batch)


def vae_loss(vae: AutoencoderKLWan, x: torch.Tensor, recipe: VaeRecipe) -> torch.Tensor:
    mu = vae.encode(x).latent_dist.mode()  # (B, 16, T_lat, h, w)
    recon = decode_unclamped(vae, mu)
    return torch.nn.functional.mse_loss(recon, x) + recipe.mean_weight * mu.pow(2).mean()


@torch.no_grad()
def latent_stats(vae: AutoencoderKLWan, videos: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the posterior mode over clips (for the config's latents_mean/std)."""
    zs = []
    for v in videos:
        x = torch.from_numpy(v).float().div(127.5).sub(1.0).permute(3, 0, 1, 2)[None].to(vae.device)
        zs.append(vae.encode(x).latent_dist.mode().transpose(0, 1).reshape(16, -1).cpu())
    z = torch.cat(zs, 1)
    return [round(float(m), 5) for m in z.mean(1)], [round(float(s), 5) for s in z.std(1).clamp_min(1e-3)]


def heldout_videos(seed: int, count: int, num_frames: int = 17, size: int = 64) -> np.ndarray:
    """uint8 (count, T, H, W, 3) clips of a held-out seed."""
    return np.stack(
        [toyworld.render_clip(toyworld.scene_for(seed, i), num_frames, (size, size)).video for i in range(count)]
    )
