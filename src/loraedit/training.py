"""LoRA-Edit training: Sec. 3.1 (naive), 3.3.1 (mask-aware, stage 1), 3.3.2 (extra references,
stage 2) and 4.5 (low-cost windows), with a peft LoRA, for every model family.

Encode once, train many: `encode_samples` runs the family's VAE / text / image encoders once per
clip and returns small tensors that are cached on disk; `train` only needs the transformer. The
family (`backends.base.Family`) is passed in: it builds the condition and makes the model call;
the samples, the schedule and the loss here know no family.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from tqdm.auto import tqdm

from . import conditioning as cond
from .atomic import atomic_path
from .backends.base import Family

log = logging.getLogger(__name__)

VARIANTS = ("naive", "mask", "mask+ref", "none")
LORA_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclasses.dataclass
class TrainSettings:
    rank: int = 16
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: str | None = None  # None: the family's LORA_TARGET_REGEX
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    steps: int = 100
    timestep_sampling: str = "uniform"  # official; or "logit_normal"
    shift: float = 1.0  # timestep shift applied with logit_normal
    edit_region_weight: float = 1.0  # >1 up-weights the generated (mask = 0) region in the loss
    checkpoint_every: int = 25
    # "constant" (the paper) | "cosine": lr decays to lr x lr_min_ratio over the steps (the mask prior)
    lr_schedule: str = "constant"
    lr_min_ratio: float = 0.1
    seed: int = 0
    mixed_precision: str = "no"  # "bf16": autocast; "no": run in the weights' dtype
    # The LoRA weights and so the AdamW state: "fp32" master weights, or "bf16" as the official code
    # (DiffSynth keeps the LoRA in the model's bf16).
    lora_dtype: str = "fp32"
    gradient_checkpointing: bool = False
    low_cost: bool = False  # Sec. 4.5: overlapping windows
    window: int = 13
    # Sec. 4.5: None = `steps` shared by the windows (100 steps, 4 windows: ~25 updates each, the same
    # compute as one 13-frame run); N = exactly N updates per window (N x windows steps in all).
    steps_per_window: int | None = None
    # Sec. 3.3.2 stage 2. "official": as the official code's dataset, each epoch visits the clip once
    # and every extra edited frame `ref_repeats` times, for `ref_epochs` epochs (1 reference: 10 x
    # (1 + 9) = 100 steps, ~90 updates per reference, whatever their number); `steps` is ignored.
    # "shared": `steps` steps, the references sampled with total weight `ref_weight` (clip = 1), so
    # N references get 1/N as many updates each.
    ref_schedule: str = "official"
    ref_epochs: int = 10
    ref_repeats: int = 9
    ref_weight: float = 9.0
    # The CLIP image of a reference sample: "source" (official: the unedited frame t) or
    # "edited_first" (the edited frame 1, the same image the clip gets at inference).
    ref_clip_image: str = "source"
    # CLIP image preprocessing: "resize" (official: whole frame to 224x224) | "center_crop" (stock diffusers)
    image_preprocess: str = "resize"
    # Beyond the paper (0 = off, the paper): this many extra copies of the clip whose edit region
    # (every frame, frame 1 included) has its colours remapped. The LoRA then cannot memorise the
    # input object's colours and must carry them from frame 1, as inference asks it to.
    recolor_copies: int = 0
    # How a copy is recoloured: "channels" (an RGB channel permutation + inversion: only the colours
    # those reach, e.g. never a brown from a red) | "random" (the region's mean moved to a random
    # colour of the RGB cube, its texture kept: any colour an edit may ask for).
    recolor_mode: str = "channels"
    # Where the LoRA starts: "none" (fresh, the paper) | "prior" (the mask prior's weights, trained on)
    # | "prior-merged" (the prior merged into the base weights, a fresh LoRA on top; saved as one LoRA
    # of rank prior + rank). Beyond the paper: a mask prior trained once (loraedit.prior).
    init: str = "none"

    @classmethod
    def from_config(cls, cfg: dict) -> TrainSettings:
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


# Colour remaps of the recoloured copies: an RGB channel permutation and a per-channel inversion
# (255 - x), every combination but the identity (47). Unlike a hue rotation they also move white,
# black and grey objects.
COLOR_REMAPS = [
    (perm, invert) for perm in itertools.permutations(range(3)) for invert in itertools.product((False, True), repeat=3)
][1:]


def recolor_region(frames: np.ndarray, region: np.ndarray, remap: int) -> np.ndarray:
    """frames uint8 (T, H, W, 3) with the pixels of `region` (T, H, W) bool put through COLOR_REMAPS[remap]."""
    perm, invert = COLOR_REMAPS[remap]
    remapped = frames[..., list(perm)]
    remapped = np.where(np.array(invert), 255 - remapped, remapped)
    out = frames.copy()
    out[region] = remapped[region]
    return out


def recolor_remaps(settings: TrainSettings) -> list[int]:
    """The remaps of the recoloured copies: distinct, drawn with the training seed."""
    if not 0 <= settings.recolor_copies <= len(COLOR_REMAPS):
        raise ValueError(f"train.recolor_copies: {settings.recolor_copies} is outside 0..{len(COLOR_REMAPS)}")
    rng = np.random.default_rng(settings.seed)
    return [int(i) for i in rng.choice(len(COLOR_REMAPS), size=settings.recolor_copies, replace=False)]


RECOLOR_MODES = ("channels", "random")


def shift_region_color(frames: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """frames uint8 (T, H, W, 3) with the pixels of `region` (T, H, W) bool moved to a random mean
    colour (uniform in [20, 235]^3); each channel's deviation from the region's mean is kept or
    mirrored, so the texture and the shading stay."""
    out = frames.copy()
    if not region.any():
        return out
    pixels = frames[region].astype(np.float32)  # (N, 3)
    target, sign = rng.uniform(20, 235, 3), rng.choice([-1.0, 1.0], 3)
    out[region] = np.clip(target + sign * (pixels - pixels.mean(0)), 0, 255).round().astype(np.uint8)
    return out


def recolored_copies(frames: np.ndarray, region: np.ndarray, settings: TrainSettings) -> list[np.ndarray]:
    """The `recolor_copies` copies of frames (T, H, W, 3) with `region` recoloured by `recolor_mode`;
    copy i gets the same colours in every window (drawn from the training seed and i)."""
    if settings.recolor_mode not in RECOLOR_MODES:
        raise ValueError(f"train.recolor_mode: unknown {settings.recolor_mode!r} (choose {'|'.join(RECOLOR_MODES)})")
    if settings.recolor_mode == "random":
        return [
            shift_region_color(frames, region, np.random.default_rng([settings.seed, i]))
            for i in range(settings.recolor_copies)
        ]
    return [recolor_region(frames, region, remap) for remap in recolor_remaps(settings)]


def stage1_keep(variant: str, keep: np.ndarray) -> np.ndarray:
    """The training mask: stock first-frame mask (naive) or the per-pixel edit mask (mask, mask+ref)."""
    if variant == "naive":
        return cond.first_frame_keep_mask(*keep.shape)
    keep = keep.copy()
    keep[0] = 1  # frame 1 is always given
    return keep


def _cpu(x):
    return None if x is None else x.cpu()


@torch.no_grad()
def encode_sample(
    family: Family,
    encoders,
    target: np.ndarray,
    source: np.ndarray,
    keep: np.ndarray,
    prompt: str,
    image: np.ndarray,
    name: str,
    kind: str,
    weight: float,
    mask_mode: str,
    device: torch.device,
    image_preprocess: str,
) -> dict:
    """One training sample: the latents of `target`, the condition of `source` greyed by `keep`, the text.

    target/source uint8 (T, H, W, 3), keep (T, H, W); image (H, W, 3) the condition image of the text
    encoders. Returns CPU tensors: latents (1, 16, T_lat, h, w), condition (1, C_cond, T_lat, h, w) and
    the family's text keys (Wan: prompt_embeds, image_embeds; HunyuanVideo: Llava embeddings, mask, pooled).
    """
    keep_t = torch.from_numpy(keep.astype(np.float32)).unsqueeze(0)  # (1, T, H, W)
    text, _ = family.encode_text(encoders, prompt, image, None, device, image_preprocess)
    return {
        "name": name,
        "kind": kind,
        "weight": weight,
        "latents": family.encode_video(encoders.vae, cond.frames_to_video(target)).cpu(),
        "condition": family.build_condition(encoders.vae, cond.frames_to_video(source), keep_t, mask_mode).cpu(),
        **{k: _cpu(v) for k, v in text.items()},
    }


@torch.no_grad()
def encode_samples(
    encoders,
    frames: np.ndarray,
    keep: np.ndarray,
    variant: str,
    train_prompt: str,
    settings: TrainSettings,
    device: torch.device,
    extra_refs: dict | None = None,
    edited_first: np.ndarray | None = None,
    mask_mode: str = "nearest",
    *,
    family: Family,
) -> list[dict]:
    """All training samples of one clip for one variant.

    frames uint8 (T, H, W, 3); keep (T, H, W) 1 = keep. extra_refs (mask+ref only):
    {t: (edited frame (H, W, 3), prompt)}. The clip (or its low-cost windows, each conditioned on
    its own first frame, which is also its condition image) and, for mask+ref, one sample per extra
    edited frame (`reference_samples`). Returns dicts of CPU tensors (`encode_sample`).
    """
    if variant not in VARIANTS or variant == "none":
        raise ValueError(f"train: variant {variant!r} has no training samples (choose naive, mask, mask+ref)")
    edit_region = keep < 0.5  # (T, H, W) the user's edit region, frame 1 included (recoloured copies)
    keep = stage1_keep(variant, keep)
    samples = [
        encode_sample(
            family,
            encoders,
            win,
            win,
            win_keep,
            train_prompt,
            win[0],
            name,
            "clip",
            weight,
            mask_mode,
            device,
            settings.image_preprocess,
        )
        for name, win, win_keep, weight in clip_parts(frames, keep, edit_region, settings)
    ]
    if variant == "mask+ref":
        samples += reference_samples(
            family, encoders, frames, keep, extra_refs or {}, settings, device, edited_first, mask_mode
        )
    return samples


def clip_parts(frames: np.ndarray, keep: np.ndarray, edit_region: np.ndarray, settings: TrainSettings):
    """The clip's training samples before encoding: [(name, frames, keep, weight)].

    The whole clip, or (Sec. 4.5, low cost) its overlapping windows, each conditioned on its own
    first frame and weighted 1 / number of windows. With `recolor_copies` K, each part is followed
    by K copies named "<part>~recolor<i>" whose `edit_region` (T, H, W) is recoloured; a part and
    its copies share the part's weight.
    """
    if settings.low_cost:
        starts = window_starts(len(frames), settings.window)
        spans = [(f"window{s}", s, s + settings.window) for s in starts]
    else:
        spans = [("clip", 0, len(frames))]
    weight = 1.0 / (len(spans) * (1 + settings.recolor_copies))
    parts = []
    for name, start, stop in spans:
        part_keep = keep[start:stop].copy()
        part_keep[0] = 1  # each window is conditioned on its own first frame
        part = frames[start:stop]
        parts.append((name, part, part_keep, weight))
        parts += [
            (f"{name}~recolor{i}", copy, part_keep, weight)
            for i, copy in enumerate(recolored_copies(part, edit_region[start:stop], settings))
        ]
    return parts


def copy_group(sample: dict) -> str:
    """The part a sample belongs to: its name without the "~recolor<i>" of a recoloured copy."""
    return sample["name"].split("~")[0]


def reference_clip_image(
    frames: np.ndarray, t: int, edited_first: np.ndarray | None, settings: TrainSettings
) -> np.ndarray:
    """The CLIP image of the stage-2 sample of frame t: the unedited frame t (official) or the edited frame 1."""
    if settings.ref_clip_image not in ("source", "edited_first"):
        raise ValueError(f"train.ref_clip_image: unknown {settings.ref_clip_image!r} (source|edited_first)")
    if settings.ref_clip_image == "edited_first" and edited_first is None:
        raise ValueError("train.ref_clip_image: edited_first needs the edited first frame")
    return frames[t] if settings.ref_clip_image == "source" else edited_first


@torch.no_grad()
def reference_samples(
    family: Family,
    encoders,
    frames: np.ndarray,
    keep: np.ndarray,
    extra_refs: dict,
    settings: TrainSettings,
    device: torch.device,
    edited_first: np.ndarray | None,
    mask_mode: str,
) -> list[dict]:
    """Sec. 3.3.2: each user-edited later frame is a one-frame sample.

    target = the edited frame; condition = the unedited frame with the edit region greyed (its mask
    is NOT forced to 1: the edit region must be generated); prompt = caption of the edited frame;
    condition image = the unedited frame t (official, `predata_additional.py` puts it first in the
    sample) or, with ref_clip_image "edited_first", the edited frame 1.
    """
    if not extra_refs:
        raise ValueError("mask+ref needs extra edited frames (sheet column extra_edits)")
    weight = settings.ref_weight / len(extra_refs)
    return [
        encode_sample(
            family,
            encoders,
            edited[None],
            frames[t : t + 1],
            keep[t : t + 1],
            prompt,
            reference_clip_image(frames, t, edited_first, settings),
            f"ref{t}",
            "ref",
            weight,
            mask_mode,
            device,
            settings.image_preprocess,
        )
        for t, (edited, prompt) in sorted(extra_refs.items())
    ]


# ----------------------------------------------------------------------------- LoRA


def lora_config(settings: TrainSettings, family: Family) -> LoraConfig:
    """The LoRA of `settings` on `train.target_modules`, else on the family's targets."""
    return LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules or family.LORA_TARGET_REGEX,
        init_lora_weights=True,
    )


def add_lora(transformer, settings: TrainSettings, family: Family) -> list[torch.nn.Parameter]:
    """Attach a fresh LoRA (trainable, in `lora_dtype`) and freeze everything else; returns the LoRA params."""
    transformer.requires_grad_(False)
    # peft draws lora_A from the global RNG: seed it so the same settings give the same LoRA.
    cuda = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(settings.seed)  # seeds the CPU and CUDA generators
        transformer.add_adapter(lora_config(settings, family))
    params = [p for n, p in transformer.named_parameters() if "lora_" in n]
    dtype = LORA_DTYPES.get(settings.lora_dtype)
    if dtype is None:
        raise ValueError(f"train.lora_dtype: unknown {settings.lora_dtype!r} (choose {'|'.join(LORA_DTYPES)})")
    for p in params:
        p.data = p.data.to(dtype)  # fp32: master weights even when the base is bf16/fp8
        p.requires_grad_(True)
    return params


def lora_state(transformer) -> dict[str, torch.Tensor]:
    """The adapter weights, diffusers/peft key names without the 'transformer.' prefix."""
    return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(transformer).items()}


def load_lora_state(transformer, state: dict[str, torch.Tensor]) -> None:
    result = set_peft_model_state_dict(transformer, state)
    if getattr(result, "unexpected_keys", None):
        raise ValueError(f"LoRA state has keys the model lacks: {result.unexpected_keys[:3]}")


INITS = ("none", "prior", "prior-merged")


def lora_rank(state: dict[str, torch.Tensor]) -> int:
    """The rank of a LoRA state, read from any lora_A: (rank, in_features)."""
    return next(v.shape[0] for k, v in state.items() if k.endswith("lora_A.weight"))


def lora_scale(state: dict[str, torch.Tensor], alpha: float) -> float:
    """alpha / rank of a LoRA state."""
    return alpha / lora_rank(state)


@torch.no_grad()
def merge_into_base(transformer, state: dict[str, torch.Tensor], alpha: float) -> None:
    """W += alpha / rank x B A for every LoRA pair of `state` (peft keys, no adapter attached yet)."""
    modules = dict(transformer.named_modules())
    scale = lora_scale(state, alpha)
    for key, down in state.items():
        if not key.endswith(".lora_A.weight"):
            continue
        name = key.removesuffix(".lora_A.weight")
        up = state[f"{name}.lora_B.weight"]  # (out, rank) @ (rank, in)
        layer = modules[name]
        layer.weight += (scale * up.float() @ down.float()).to(layer.weight.dtype)


def check_init(settings: TrainSettings, prior: dict | None, stage2: bool = False) -> None:
    """The start `settings.init` asks for is known, has its prior, and (stage 2, mask+ref) can continue
    from a stage-1 LoRA: a prior-merged stage 1 is saved stacked, at another rank than a fresh LoRA."""
    if settings.init not in INITS:
        raise ValueError(f"train.init: unknown {settings.init!r} (choose {'|'.join(INITS)})")
    if settings.init != "none" and prior is None:
        raise ValueError(f"train.init: {settings.init} needs a mask prior (prior.path or the train_prior rule)")
    if stage2 and settings.init == "prior-merged":
        raise ValueError("train.init: prior-merged cannot continue into stage 2 (mask+ref); use train.init: prior")


def load_prior(transformer, prior: dict[str, torch.Tensor], settings: TrainSettings) -> None:
    """The "prior" start: the attached LoRA (same rank) takes the prior's weights."""
    prior_rank = lora_rank(prior)
    if prior_rank != settings.rank:
        raise ValueError(f"train.init: the prior has rank {prior_rank}, train.rank is {settings.rank}: make them equal")
    dtype = LORA_DTYPES[settings.lora_dtype]
    load_lora_state(transformer, {k: v.to(dtype) for k, v in prior.items()})


def start_lora(
    transformer, settings: TrainSettings, family: Family, prior: dict | None = None, prior_alpha: float | None = None
) -> list[torch.nn.Parameter]:
    """`add_lora`, started as `settings.init` says: fresh ("none"), from the prior's weights ("prior":
    same rank, then trained on), or on top of the prior merged into the base weights ("prior-merged")."""
    check_init(settings, prior)
    if settings.init == "prior-merged":
        merge_into_base(transformer, prior, prior_alpha if prior_alpha is not None else settings.alpha)
    params = add_lora(transformer, settings, family)
    if settings.init == "prior":
        load_prior(transformer, prior, settings)
    return params


def stacked_lora(
    prior: dict[str, torch.Tensor], prior_alpha: float, clip: dict[str, torch.Tensor], clip_alpha: float
) -> tuple[dict[str, torch.Tensor], int]:
    """One LoRA equal to prior + clip LoRA (the "prior-merged" start's saved form), loadable by stock
    diffusers: A stacked (r1 + r2, in), B side by side (out, r1 + r2), each B pre-scaled so that the
    stacked LoRA's alpha = its rank (scale 1). Returns (state, rank)."""
    out, rank = {}, None
    s1, s2 = lora_scale(prior, prior_alpha), lora_scale(clip, clip_alpha)
    for key in clip:
        if not key.endswith(".lora_A.weight"):
            continue
        name = key.removesuffix(".lora_A.weight")
        a = torch.cat([prior[key].float(), clip[key].float()], dim=0)
        b = torch.cat([s1 * prior[f"{name}.lora_B.weight"].float(), s2 * clip[f"{name}.lora_B.weight"].float()], 1)
        out[key], out[f"{name}.lora_B.weight"], rank = a, b, a.shape[0]
    return out, rank


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


def flow_matching_loss(
    transformer,
    sample: dict,
    t: float,
    noise: torch.Tensor,
    settings: TrainSettings,
    device: torch.device,
    family: Family,
) -> torch.Tensor:
    """x_t = (1-t) x0 + t noise; the transformer predicts noise - x0 at timestep 1000 t (plain MSE,
    the edit region up-weighted by `edit_region_weight`)."""
    dtype = transformer.dtype
    x0 = sample["latents"].to(device, torch.float32)  # (1, 16, T_lat, h, w)
    condition = sample["condition"].to(device, torch.float32)  # (1, C_cond, T_lat, h, w): Wan 20, Hunyuan 17
    noise = noise.to(device)
    x_t = (1 - t) * x0 + t * noise
    target = noise - x0
    latent_input = torch.cat([x_t, condition], dim=1).to(dtype)  # (1, 16 + C_cond, T_lat, h, w)
    autocast = settings.mixed_precision == "bf16"
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        pred = family.predict(transformer, latent_input, torch.tensor([1000.0 * t], device=device), sample, device)
    err = (pred.float() - target) ** 2
    if settings.edit_region_weight != 1.0:
        keep = family.keep_channel(condition)  # (1, 1, T_lat, h, w): 1 where kept
        generate = 1.0 - keep  # 1 where the latent is generated
        weight = 1.0 + (settings.edit_region_weight - 1.0) * generate
        return (err * weight).sum() / (weight.expand_as(err).sum())
    return err.mean()


def step_order(samples: list[dict], settings: TrainSettings) -> list[int] | None:
    """The sample index of every step, epoch by epoch, or None for weighted random sampling.

    Epochs (each a seeded shuffle of its pool) give exact update counts: stage 2 with the official
    schedule (clip samples once, each reference `ref_repeats` times, `ref_epochs` epochs) and
    low-cost windows with `steps_per_window` (every window once per epoch). A clip part's
    recoloured copies take its turns in rotation (epoch e: copy e mod (1 + K)), so they leave the
    update counts unchanged.
    """
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        if s.get("kind", "clip") == "clip":
            groups.setdefault(copy_group(s), []).append(i)
    clips = list(groups.values())  # per part: [the part, its copies...]
    refs = [[i] for i, s in enumerate(samples) if s.get("kind") == "ref"]
    if refs and settings.ref_schedule not in ("official", "shared"):
        raise ValueError(f"train.ref_schedule: unknown {settings.ref_schedule!r} (official|shared)")
    if refs and settings.ref_schedule == "official":
        pool, epochs = clips + refs * settings.ref_repeats, settings.ref_epochs
    elif settings.low_cost and settings.steps_per_window and not refs:
        pool, epochs = clips, settings.steps_per_window
    else:
        return None
    generator = torch.Generator().manual_seed(settings.seed + 1)  # apart from the noise/timestep stream
    order = []
    for epoch in range(epochs):
        order += [pool[int(i)][epoch % len(pool[int(i)])] for i in torch.randperm(len(pool), generator=generator)]
    return order


def _checkpoint_file(out_dir: Path) -> Path:
    return out_dir / "checkpoint.pt"


LR_SCHEDULES = ("constant", "cosine")


def lr_at(step: int, total: int, settings: TrainSettings) -> float:
    """The learning rate of update `step` (0-based) of `total`: constant, or cosine from lr to lr x lr_min_ratio."""
    if settings.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"train.lr_schedule: unknown {settings.lr_schedule!r} (choose {'|'.join(LR_SCHEDULES)})")
    if settings.lr_schedule == "constant" or total <= 1:
        return settings.lr
    low = settings.lr * settings.lr_min_ratio
    return low + (settings.lr - low) * 0.5 * (1 + math.cos(math.pi * step / (total - 1)))


def run_fingerprint(samples: list[dict], settings: TrainSettings, t_range) -> dict:
    """What a resume checkpoint must match: the settings, the samples' names and the expert's t range.
    A checkpoint of another run (other clips, steps, lr, ...) in the same folder is refused, not resumed."""
    return {"settings": dataclasses.asdict(settings), "samples": [s["name"] for s in samples], "t_range": list(t_range)}


def train(
    transformer,
    samples: list[dict],
    settings: TrainSettings,
    device: torch.device,
    out_dir: str | os.PathLike,
    t_range=(0.0, 1.0),
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    *,
    family: Family,
) -> list[dict]:
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
    optimizer = torch.optim.AdamW(
        params, lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay, fused=device.type == "cuda"
    )
    generator = torch.Generator().manual_seed(settings.seed)
    weights = torch.tensor([s["weight"] for s in samples], dtype=torch.float64)
    order = step_order(samples, settings)
    total = settings.steps if order is None else len(order)
    history: list[dict] = []
    start = 0
    ckpt_path = _checkpoint_file(out_dir)
    fingerprint = run_fingerprint(samples, settings, t_range)
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ckpt.get("fingerprint") != fingerprint:
            raise ValueError(
                f"train: {ckpt_path} is the checkpoint of another run (its settings or samples differ); "
                "delete it to start this one from step 0"
            )
        load_lora_state(transformer, ckpt["lora"])
        optimizer.load_state_dict(ckpt["optimizer"])
        generator.set_state(ckpt["generator"])
        history, start = ckpt["history"], ckpt["step"]
        log.info("resuming from %s at step %d", ckpt_path, start)
    if settings.gradient_checkpointing and not transformer.is_gradient_checkpointing:  # keep a memory plan's own
        transformer.enable_gradient_checkpointing()
    transformer.train()

    bar = tqdm(range(start, total), initial=start, total=total, desc="train", disable=not progress)
    for step in bar:
        t0 = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total, settings)
        index = order[step] if order is not None else int(torch.multinomial(weights, 1, generator=generator).item())
        sample = samples[index]
        t = sample_timestep(generator, settings, t_range)
        noise = torch.randn(sample["latents"].shape, generator=generator)
        loss = flow_matching_loss(transformer, sample, t, noise, settings, device, family)
        loss.backward()
        if settings.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"train: loss became {value} at step {step + 1}")
        history.append(
            {"step": step + 1, "loss": value, "t": t, "sample": sample["name"], "seconds": time.perf_counter() - t0}
        )
        bar.set_postfix(loss=f"{value:.4f}")
        if settings.checkpoint_every and (step + 1) % settings.checkpoint_every == 0 and step + 1 < total:
            with atomic_path(ckpt_path) as tmp:
                torch.save(
                    {
                        "lora": lora_state(transformer),
                        "optimizer": optimizer.state_dict(),
                        "generator": generator.get_state(),
                        "history": history,
                        "step": step + 1,
                        "fingerprint": fingerprint,
                    },
                    tmp,
                )
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
    """The loss curve as CSV (step, loss, t, sample, seconds, expert) and PNG (raw + moving average,
    one curve per expert: Wan2.2's two experts are trained one after the other on their own steps)."""
    import pandas as pd
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    frame = pd.DataFrame(history, columns=["step", "loss", "t", "sample", "seconds", "expert"])
    frame["expert"] = frame["expert"].fillna(0).astype(int)
    with atomic_path(csv_path) as tmp:
        frame.to_csv(tmp, index=False)
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    experts = sorted(frame["expert"].unique())
    for expert in experts:
        curve = frame[frame["expert"] == expert]
        name = f"expert {expert} " if len(experts) > 1 else ""
        ax.plot(curve["step"], curve["loss"], lw=0.8, alpha=0.5, label=f"{name}loss")
        if len(curve) >= 5:
            mean = curve["loss"].rolling(max(2, len(curve) // 10), min_periods=1).mean()
            ax.plot(curve["step"], mean, label=f"{name}mean")
    ax.set_xlabel("step")
    ax.set_ylabel("flow-matching MSE")
    ax.legend()
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, dpi=100)
