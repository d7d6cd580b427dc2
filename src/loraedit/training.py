"""LoRA-Edit training: Sec. 3.1 (naive), 3.3.1 (mask-aware, stage 1), 3.3.2 (extra references,
stage 2) and 4.5 (low-cost windows), on a Wan I2V transformer with a peft LoRA.

Encode once, train many: `encode_samples` runs the VAE / text / image encoders once per clip and
returns small tensors that are cached on disk; `train` only needs the transformer.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from tqdm.auto import tqdm

from . import conditioning as cond
from .atomic import atomic_path

log = logging.getLogger(__name__)

# Every Linear of each transformer block (self- and cross-attention q/k/v/o and the FFN), but not
# the image key/value projections (add_k_proj, add_v_proj), as the official code (diffusion-pipe).
LORA_TARGET_REGEX = r".*blocks\.\d+\.(attn1\.(to_q|to_k|to_v|to_out\.0)|attn2\.(to_q|to_k|to_v|to_out\.0)|ffn\.net\.0\.proj|ffn\.net\.2)"

VARIANTS = ("naive", "mask", "mask+ref", "none")


@dataclasses.dataclass
class TrainSettings:
    rank: int = 16
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: str = LORA_TARGET_REGEX
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    steps: int = 100
    timestep_sampling: str = "uniform"  # official; or "logit_normal"
    shift: float = 1.0  # timestep shift applied with logit_normal
    edit_region_weight: float = 1.0  # >1 up-weights the generated (mask = 0) region in the loss
    checkpoint_every: int = 25
    seed: int = 0
    mixed_precision: str = "no"  # "bf16": autocast; "no": run in the weights' dtype
    gradient_checkpointing: bool = False
    low_cost: bool = False  # Sec. 4.5: overlapping windows
    window: int = 13
    ref_weight: float = 9.0  # Sec. 3.3.2: total sampling weight of the extra edited frames (clip = 1)

    @classmethod
    def from_config(cls, cfg: dict) -> "TrainSettings":
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in (cfg or {}).items() if k in names and v is not None}
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return cls(**values)


# ----------------------------------------------------------------------------- samples


def window_starts(num_frames: int, window: int) -> list[int]:
    """Sec. 4.5: overlapping windows sharing one frame (49 frames, 13 -> 1-13, 13-25, 25-37, 37-49).

    Any 4k+1 length: stride window-1; a last window is aligned to the clip's end if needed.
    """
    cond.latent_num_frames(window)
    if window >= num_frames:
        return [0]
    starts = list(range(0, num_frames - window + 1, window - 1))
    if starts[-1] + window < num_frames:
        starts.append(num_frames - window)
    return starts


def stage1_keep(variant: str, keep: np.ndarray) -> np.ndarray:
    """The training mask: stock first-frame mask (naive) or the per-pixel edit mask (mask, mask+ref)."""
    if variant == "naive":
        return cond.first_frame_keep_mask(*keep.shape)
    keep = keep.copy()
    keep[0] = 1  # frame 1 is always given
    return keep


@torch.no_grad()
def _clip_sample(encoders, frames: np.ndarray, keep: np.ndarray, prompt_embeds, device, weight: float,
                 name: str, mask_mode: str) -> dict:
    """One (window of a) clip: target = the input video, condition = it greyed by the mask."""
    video = cond.frames_to_video(frames)  # (1, 3, T, H, W)
    keep_t = torch.from_numpy(keep.astype(np.float32)).unsqueeze(0)  # (1, T, H, W)
    return {
        "name": name,
        "weight": weight,
        "latents": cond.encode_video(encoders.vae, video).cpu(),  # (1, 16, T_lat, h, w)
        "condition": cond.build_condition(encoders.vae, video, keep_t, mask_mode).cpu(),  # (1, 20, T_lat, h, w)
        "prompt_embeds": prompt_embeds.cpu(),  # (1, 512, D)
        "image_embeds": _cpu(cond.encode_image(encoders, frames[0], device)),  # (1, N, D_img)
    }


def _cpu(x):
    return None if x is None else x.cpu()


@torch.no_grad()
def encode_samples(encoders, frames: np.ndarray, keep: np.ndarray, variant: str, train_prompt: str,
                   settings: TrainSettings, device: torch.device, extra_refs: dict | None = None,
                   edited_first: np.ndarray | None = None, mask_mode: str = "nearest") -> list[dict]:
    """All training samples of one clip for one variant.

    frames uint8 (T, H, W, 3); keep (T, H, W) 1 = keep. extra_refs (mask+ref only):
    {t: (edited frame (H, W, 3), prompt)}. Returns dicts of CPU tensors (see `_clip_sample`).
    """
    if variant not in VARIANTS or variant == "none":
        raise ValueError(f"train: variant {variant!r} has no training samples (choose naive, mask, mask+ref)")
    keep = stage1_keep(variant, keep)
    prompt_embeds, _ = cond.encode_prompts(encoders, train_prompt, None, device=device)
    samples = []
    if settings.low_cost:
        starts = window_starts(len(frames), settings.window)
        for s in starts:
            win_keep = keep[s:s + settings.window].copy()
            win_keep[0] = 1  # each window is conditioned on its own first frame
            samples.append(_clip_sample(encoders, frames[s:s + settings.window], win_keep, prompt_embeds, device,
                                        1.0 / len(starts), f"window{s}", mask_mode))
    else:
        samples.append(_clip_sample(encoders, frames, keep, prompt_embeds, device, 1.0, "clip", mask_mode))
    if variant == "mask+ref":
        samples += encode_reference_samples(encoders, frames, keep, extra_refs or {}, settings, device,
                                            edited_first, mask_mode)
    return samples


@torch.no_grad()
def encode_reference_samples(encoders, frames: np.ndarray, keep: np.ndarray, extra_refs: dict,
                             settings: TrainSettings, device: torch.device, edited_first: np.ndarray | None,
                             mask_mode: str) -> list[dict]:
    """Sec. 3.3.2: each user-edited later frame is a one-frame sample.

    target = the edited frame; condition = the unedited frame with the edit region greyed (its mask
    is NOT forced to 1: the edit region must be generated); prompt = caption of the edited frame;
    image embedding = the edited first frame (the same reference the clip gets at inference).
    """
    if not extra_refs:
        raise ValueError("mask+ref needs extra edited frames (sheet column extra_edits)")
    samples = []
    weight = settings.ref_weight / len(extra_refs)
    for t, (edited, prompt) in sorted(extra_refs.items()):
        source = cond.frames_to_video(frames[t:t + 1])  # (1, 3, 1, H, W)
        keep_t = torch.from_numpy(keep[t:t + 1].astype(np.float32)).unsqueeze(0)  # (1, 1, H, W)
        prompt_embeds, _ = cond.encode_prompts(encoders, prompt, None, device=device)
        reference = edited_first if edited_first is not None else edited
        samples.append({
            "name": f"ref{t}",
            "weight": weight,
            "latents": cond.encode_video(encoders.vae, cond.frames_to_video(edited[None])).cpu(),
            "condition": cond.build_condition(encoders.vae, source, keep_t, mask_mode).cpu(),
            "prompt_embeds": prompt_embeds.cpu(),
            "image_embeds": _cpu(cond.encode_image(encoders, reference, device)),
        })
    return samples


# ----------------------------------------------------------------------------- LoRA


def lora_config(settings: TrainSettings) -> LoraConfig:
    return LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=settings.target_modules, init_lora_weights=True)


def add_lora(transformer, settings: TrainSettings) -> list[torch.nn.Parameter]:
    """Attach a fresh LoRA (trainable, float32) and freeze everything else; returns the LoRA params."""
    transformer.requires_grad_(False)
    # peft draws lora_A from the global RNG: seed it so the same settings give the same LoRA.
    cuda = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(settings.seed)  # seeds the CPU and CUDA generators
        transformer.add_adapter(lora_config(settings))
    params = [p for n, p in transformer.named_parameters() if "lora_" in n]
    for p in params:
        p.data = p.data.float()  # master weights in fp32 even when the base is bf16/fp8
        p.requires_grad_(True)
    return params


def lora_state(transformer) -> dict[str, torch.Tensor]:
    """The adapter weights, diffusers/peft key names without the 'transformer.' prefix."""
    return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(transformer).items()}


def load_lora_state(transformer, state: dict[str, torch.Tensor]) -> None:
    result = set_peft_model_state_dict(transformer, state)
    if getattr(result, "unexpected_keys", None):
        raise ValueError(f"LoRA state has keys the model lacks: {result.unexpected_keys[:3]}")


# ----------------------------------------------------------------------------- loop


def sample_timestep(generator: torch.Generator, settings: TrainSettings, t_range=(0.0, 1.0)) -> float:
    """t in [0, 1]: uniform (official) or logit-normal with a shift, restricted to t_range (experts)."""
    lo, hi = t_range
    if settings.timestep_sampling == "uniform":
        u = torch.rand((), generator=generator).item()
        return lo + (hi - lo) * u
    if settings.timestep_sampling == "logit_normal":
        for _ in range(1000):
            t = torch.sigmoid(torch.randn((), generator=generator)).item()
            t = settings.shift * t / (1 + (settings.shift - 1) * t)
            if lo <= t <= hi:
                return t
        return (lo + hi) / 2
    raise ValueError(f"train.timestep_sampling: unknown {settings.timestep_sampling!r} (uniform|logit_normal)")


def flow_matching_loss(transformer, sample: dict, t: float, noise: torch.Tensor, settings: TrainSettings,
                       device: torch.device) -> torch.Tensor:
    """x_t = (1-t) x0 + t noise; the transformer predicts noise - x0 at timestep 1000 t (plain MSE)."""
    dtype = transformer.dtype
    x0 = sample["latents"].to(device, torch.float32)  # (1, 16, T_lat, h, w)
    condition = sample["condition"].to(device, torch.float32)  # (1, 20, T_lat, h, w)
    noise = noise.to(device)
    x_t = (1 - t) * x0 + t * noise
    target = noise - x0
    latent_input = torch.cat([x_t, condition], dim=1).to(dtype)  # (1, 36, T_lat, h, w)
    image_embeds = sample["image_embeds"]
    autocast = settings.mixed_precision == "bf16"
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        pred = transformer(
            hidden_states=latent_input,
            timestep=torch.tensor([1000.0 * t], device=device),
            encoder_hidden_states=sample["prompt_embeds"].to(device, dtype),
            encoder_hidden_states_image=None if image_embeds is None else image_embeds.to(device, dtype),
            return_dict=False,
        )[0]
    err = (pred.float() - target) ** 2
    if settings.edit_region_weight != 1.0:
        generate = 1.0 - condition[:, 0:1]  # mask channel: 1 where the latent is generated
        weight = 1.0 + (settings.edit_region_weight - 1.0) * generate
        return (err * weight).sum() / (weight.expand_as(err).sum())
    return err.mean()


def _checkpoint_file(out_dir: Path) -> Path:
    return out_dir / "checkpoint.pt"


def train(transformer, samples: list[dict], settings: TrainSettings, device: torch.device, out_dir: str | os.PathLike,
          t_range=(0.0, 1.0), progress: bool = True, on_step: Callable[[int, float], None] | None = None) -> list[dict]:
    """Train the LoRA already attached to `transformer`; resumable from `out_dir/checkpoint.pt`.

    Noise, timesteps and the sample choice all come from one seeded generator whose state is
    checkpointed, so a killed-and-resumed run ends with the same weights as an uninterrupted one.
    Returns the loss history [{step, loss, t, sample, seconds}].
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    params = [p for p in transformer.parameters() if p.requires_grad]
    if not params:
        raise ValueError("train: the transformer has no trainable (LoRA) parameters; call add_lora first")
    optimizer = torch.optim.AdamW(params, lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay,
                                  fused=device.type == "cuda")
    generator = torch.Generator().manual_seed(settings.seed)
    weights = torch.tensor([s["weight"] for s in samples], dtype=torch.float64)
    history: list[dict] = []
    start = 0
    ckpt_path = _checkpoint_file(out_dir)
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        load_lora_state(transformer, ckpt["lora"])
        optimizer.load_state_dict(ckpt["optimizer"])
        generator.set_state(ckpt["generator"])
        history, start = ckpt["history"], ckpt["step"]
        log.info("resuming from %s at step %d", ckpt_path, start)
    if settings.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()

    bar = tqdm(range(start, settings.steps), initial=start, total=settings.steps, desc="train", disable=not progress)
    for step in bar:
        t0 = time.perf_counter()
        index = int(torch.multinomial(weights, 1, generator=generator).item())
        sample = samples[index]
        t = sample_timestep(generator, settings, t_range)
        noise = torch.randn(sample["latents"].shape, generator=generator)
        loss = flow_matching_loss(transformer, sample, t, noise, settings, device)
        loss.backward()
        if settings.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"train: loss became {value} at step {step + 1}")
        history.append({"step": step + 1, "loss": value, "t": t, "sample": sample["name"],
                        "seconds": time.perf_counter() - t0})
        bar.set_postfix(loss=f"{value:.4f}")
        if settings.checkpoint_every and (step + 1) % settings.checkpoint_every == 0 and step + 1 < settings.steps:
            with atomic_path(ckpt_path) as tmp:
                torch.save({"lora": lora_state(transformer), "optimizer": optimizer.state_dict(),
                            "generator": generator.get_state(), "history": history, "step": step + 1}, tmp)
        if on_step is not None:
            on_step(step + 1, value)
    transformer.eval()
    return history


def finish(out_dir: str | os.PathLike) -> None:
    """Drop the resume checkpoint once the final LoRA is safely written."""
    ckpt = _checkpoint_file(Path(out_dir))
    if ckpt.exists():
        ckpt.unlink()


def plot_loss(history: list[dict], csv_path: str | os.PathLike, png_path: str | os.PathLike) -> None:
    """The loss curve as CSV (step, loss, t, sample, seconds) and PNG (raw + moving average)."""
    import pandas as pd
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    frame = pd.DataFrame(history, columns=["step", "loss", "t", "sample", "seconds"])
    with atomic_path(csv_path) as tmp:
        frame.to_csv(tmp, index=False)
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    ax.plot(frame["step"], frame["loss"], lw=0.8, alpha=0.5, label="loss")
    if len(frame) >= 5:
        ax.plot(frame["step"], frame["loss"].rolling(max(2, len(frame) // 10), min_periods=1).mean(), label="mean")
    ax.set_xlabel("step")
    ax.set_ylabel("flow-matching MSE")
    ax.legend()
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, dpi=100)
