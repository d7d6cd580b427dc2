"""The workflow's model stages wired from the library: what each `scripts/*.py` entry point runs.

Kept free of Snakemake so every stage can be run and tested from Python.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import torch

from . import inference as inf
from . import lora_io
from . import prior as mask_prior
from . import training as tr
from .atomic import atomic_path, write_json
from .backends import registry
from .backends.base import Models
from .devices import device_and_dtype
from .frames import overlay
from .memory import apply as memory
from .memory.record import FILE as MEMORY_RECORD
from .memory.record import MemoryRecord
from .report_assets import side_by_side
from .sampling_cache import CacheStats
from .video_io import read_frames, read_image, read_mask, write_frames, write_mp4

log = logging.getLogger(__name__)


def read_prepared(prepared_dir: str | os.PathLike, masks_dir: str | os.PathLike, clip_id: str | None = None):
    """(meta, frames uint8 (T, H, W, 3), keep (T, H, W) 0/1, edited frames {t: (H, W, 3)})."""
    prepared = Path(prepared_dir)
    meta = json.loads((prepared / "meta.json").read_text())
    frames = read_frames(prepared / "frames", clip_id)
    keep = read_mask(masks_dir, clip_id)
    edited = {int(p.stem): read_image(p, clip_id) for p in sorted((prepared / "edited").glob("*.png"))}
    return meta, frames, keep, edited


def read_truth(prepared_dir: str | os.PathLike, clip_id: str | None = None) -> np.ndarray | None:
    """The prepared true edited video, uint8 (T, H, W, 3), or None when the sheet gave no gt_video."""
    gt_dir = Path(prepared_dir) / "gt"
    return read_frames(gt_dir, clip_id) if gt_dir.is_dir() else None


def _device_dtype(model_cfg: dict) -> tuple[torch.device, torch.dtype]:
    return device_and_dtype(model_cfg.get("device", "auto"), model_cfg.get("dtype", "auto"))


def _release_memory() -> None:
    """Return freed host/GPU memory (call after dropping the last reference to a model)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclasses.dataclass
class Prepared:
    """What `prepare_for_training` set up: the LoRA parameters, and what the memory set-up runs and why."""

    params: list[torch.nn.Parameter]
    memory: MemoryRecord


def prepare_for_training(
    transformer,
    settings: tr.TrainSettings,
    train_cfg: dict,
    device: torch.device,
    family,
    init_state: dict[str, torch.Tensor] | None = None,
    tokens: int | None = None,
    probe_sample: dict | None = None,
    prior: tuple[dict[str, torch.Tensor], float] | None = None,
) -> Prepared:
    """Memory modes + LoRA, in the order they must go (shared by `run_train` and the GPU benchmark).

    1. fp8 weight storage (diffusers layerwise casting) on the frozen base Linear layers, where the
       device casts to fp8 (else bf16, recorded);
    0. with `train.init: prior-merged`, the mask prior merged into the base weights (before any cast);
    2. the fresh LoRA (fp32 master weights), started from the mask prior (`train.init: prior`) and/or
       a stage-1 LoRA (stage 2 continues from it);
    3. group offloading last, so its hooks also cover the LoRA parameters; or else
    4. the `train.memory` plan for `tokens` latent tokens (`memory.apply`: placement on the device,
       weight streaming, activation offload, checkpointing, attention kernel, compile), and with
       `probe_sample` one training step without the optimizer step (`probe_step`): each
       acceleration that fails in it is given up before the LoRA has changed.
    """
    record = MemoryRecord.start("train", train_cfg, device)
    prior_state, prior_alpha = prior if prior is not None else (None, None)
    tr.check_init(settings, prior_state)
    if settings.init == "prior-merged":
        tr.merge_into_base(transformer, prior_state, prior_alpha)
    if train_cfg.get("fp8_weights"):
        memory.fp8_storage(transformer, device, record)
    params = tr.add_lora(transformer, settings, family)
    if settings.init == "prior" and init_state is None:
        tr.load_prior(transformer, prior_state, settings)
    if init_state is not None:  # Sec. 3.3.2 continues from the stage-1 LoRA
        tr.load_lora_state(transformer, init_state)
    blocks = train_cfg.get("offload_blocks_per_group")
    if blocks and device.type == "cuda":
        record.warn(
            "train.offload_blocks_per_group: diffusers group offloading with streams reverts the LoRA "
            "to its initial values at every offload (tests/test_group_offload_lora.py); use train.memory: low"
        )
        transformer.enable_group_offload(
            onload_device=device,
            offload_device=torch.device("cpu"),
            offload_type="block_level",
            num_blocks_per_group=int(blocks),
            use_stream=bool(train_cfg.get("offload_use_stream", True)),
        )
        record.plan = {"mode": "group offload", "reason": "train.offload_blocks_per_group"}
    else:
        if blocks:
            record.warn("train.offload_blocks_per_group needs a CUDA device; training without offloading")
        probe = (
            None
            if probe_sample is None
            else functools.partial(probe_step, transformer, probe_sample, settings, device, family)
        )
        memory.setup_training(transformer, train_cfg, device, tokens, probe=probe, record=record)
    return Prepared(params, record)


PROBE_T = 0.5  # any t runs every block and kernel; the middle of the schedule


def probe_step(transformer, sample: dict, settings: tr.TrainSettings, device: torch.device, family) -> None:
    """One forward + backward of the flow-matching loss at t = 0.5 with noise of its own seed: the
    first step's kernels run once before the optimizer exists. The gradients are dropped and the
    global RNG (LoRA dropout) is restored, so the training that follows is bit-identical to one
    without the probe. A loss that is not finite is an error (a kernel computing garbage)."""
    noise = torch.randn(sample["latents"].shape, generator=torch.Generator().manual_seed(0))  # (1, 16, T_lat, h, w)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    was_training = transformer.training
    transformer.train()
    try:
        with torch.random.fork_rng(devices=cuda):
            loss = tr.flow_matching_loss(transformer, sample, PROBE_T, noise, settings, device, family)
            loss.backward()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"the first step's loss is {value}")
    finally:
        for p in transformer.parameters():
            p.grad = None
        transformer.train(was_training)


def expert_t_ranges(models_spec) -> list[tuple[float, float]]:
    """Wan2.2: expert 0 learns t >= boundary (high noise), expert 1 below it; Wan2.1: all of [0, 1]."""
    if models_spec.boundary_ratio is None:
        return [(0.0, 1.0)]
    b = models_spec.boundary_ratio
    return [(b, 1.0), (0.0, b)]


def run_train(
    prepared_dir,
    masks_dir,
    caption_json,
    method: str,
    model_cfg: dict,
    train_cfg: dict,
    out_lora_dir,
    loss_csv,
    loss_png,
    work_dir,
    init_lora_dir=None,
    clip_id: str | None = None,
    progress: bool = True,
    prior_dir=None,
) -> list[dict]:
    """Stage `train_lora` for one clip and one variant (naive | mask | mask+ref); with `train.init`
    prior / prior-merged it starts from the mask prior in `prior_dir`."""
    spec = registry.backend_spec(model_cfg)
    family = registry.family(spec)
    settings = tr.TrainSettings.from_config(train_cfg)  # LoRA targets: train.target_modules or the family's
    tr.check_init(settings, None if prior_dir is None else {}, stage2=init_lora_dir is not None)  # before encoding
    device, dtype = _device_dtype(model_cfg)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)

    def encode(encoders) -> list[dict]:
        meta, frames, keep, edited = read_prepared(prepared_dir, masks_dir, clip_id)
        captions = json.loads(Path(caption_json).read_text())
        extra = {
            int(t): (img, captions["extra_prompts"].get(str(t), captions["infer_prompt"]))
            for t, img in edited.items()
            if t > 0
        }
        return tr.encode_samples(
            encoders,
            frames,
            keep,
            method,
            captions["train_prompt"],
            settings,
            device,
            extra_refs=extra,
            edited_first=edited[0],
            mask_mode=train_cfg.get("mask_downsample", "nearest"),
            family=family,
        )

    key = {"clip_id": clip_id, "method": method, "settings": dataclasses.asdict(settings)}
    samples = encoded_samples(work_dir / "samples.pt", key, spec, family, model_cfg, encode)
    init_states = None
    if init_lora_dir is not None:  # Sec. 3.3.2 continues from the stage-1 LoRA
        init_states = [lora_io.read_lora(init_lora_dir, i)[0] for i in range(len(expert_t_ranges(spec)))]
    return train_and_save(
        spec,
        family,
        model_cfg,
        train_cfg,
        settings,
        samples,
        out_lora_dir,
        loss_csv,
        loss_png,
        work_dir,
        {"clip_id": clip_id, "method": method},
        init_states,
        prior_dir,
        progress,
    )


def encoded_samples(cache: Path, key: dict, spec, family, model_cfg: dict, encode) -> list[dict]:
    """Encode once: the samples `encode(encoders)` makes, cached in `cache` under `key` (what they were
    made from; a cache of other inputs is re-encoded, never reused); the encoders are freed."""
    if cache.exists():
        cached = torch.load(cache, map_location="cpu", weights_only=False)
        if isinstance(cached, dict) and cached.get("key") == key:
            return cached["samples"]
        log.info("%s was encoded from other inputs: encoding again", cache)
    device, dtype = _device_dtype(model_cfg)
    encoders = family.load_encoders(spec, model_cfg, device, dtype)
    samples = encode(encoders)
    with atomic_path(cache) as tmp:
        torch.save({"key": key, "samples": samples}, tmp)
    del encoders  # the VAE and text/image encoders are not needed for training
    _release_memory()
    return samples


def train_and_save(
    spec,
    family,
    model_cfg: dict,
    train_cfg: dict,
    settings: tr.TrainSettings,
    samples: list[dict],
    out_lora_dir,
    loss_csv,
    loss_png,
    work_dir: Path,
    record: dict,
    init_states: list[dict] | None = None,
    prior_dir=None,
    progress: bool = True,
) -> list[dict]:
    """Train the LoRA of every expert on `samples` (resumable from work_dir/expert<i>/) and write it with
    its memory record and loss curve. A "prior-merged" start is saved as one LoRA: prior + clip LoRA."""
    device, dtype = _device_dtype(model_cfg)
    # On the CPU first: `prepare_for_training` places (or streams) one expert at a time.
    transformers = family.load_transformers(spec, model_cfg, None, dtype)
    histories, states, records = [], [], []
    probe = max(samples, key=lambda s: s["latents"].numel())  # the largest: the run's shapes and peak
    config = tr.lora_config(settings, family)
    for i, (transformer, t_range) in enumerate(zip(transformers, expert_t_ranges(spec))):
        prior = lora_io.read_lora(prior_dir, i) if prior_dir is not None and settings.init != "none" else None
        tokens = memory.sample_tokens(samples, memory.patch_size_of(transformer))
        prepared = prepare_for_training(
            transformer,
            settings,
            train_cfg,
            device,
            family,
            None if init_states is None else init_states[i],
            tokens=tokens,
            probe_sample=probe,
            prior=prior,
        )
        records.append(prepared.memory.to_dict())
        history = tr.train(
            transformer, samples, settings, device, work_dir / f"expert{i}", t_range, progress, family=family
        )
        histories += [dict(h, expert=i) for h in history]
        state = tr.lora_state(transformer)
        if settings.init == "prior-merged":
            state, rank = tr.stacked_lora(prior[0], prior[1], state, settings.alpha)
            config = tr.lora_config(dataclasses.replace(settings, rank=rank, alpha=float(rank)), family)
        states.append(state)
        if i + 1 < len(transformers):
            memory.park(transformer)  # Wan2.2: the idle expert waits on the CPU, not on the GPU
    with atomic_path(out_lora_dir, is_dir=True) as tmp:
        lora_io.save_lora(tmp, states, config, family)
        # What ran (per expert), beside the LoRA it made; the run manifest gathers these.
        write_json(Path(tmp) / MEMORY_RECORD, {**record, "stage": "train", "experts": records})
    tr.plot_loss(histories, loss_csv, loss_png)
    for i in range(len(transformers)):
        tr.finish(work_dir / f"expert{i}")
    return histories


def read_prior_clips(prepared_dirs, masks_dirs, caption_jsons, clip_ids) -> list[mask_prior.PriorClip]:
    """The run's clips as the prior learns them: frames, their edit masks, p* + the caption of frame 1."""
    clips = []
    for prepared, masks, caption, clip_id in zip(prepared_dirs, masks_dirs, caption_jsons, clip_ids, strict=True):
        _, frames, keep, _ = read_prepared(prepared, masks, clip_id)
        prompt = json.loads(Path(caption).read_text())["train_prompt"]
        clips.append(mask_prior.PriorClip(clip_id, frames, keep, prompt))
    return clips


def run_train_prior(
    clips: list,
    model_cfg: dict,
    prior_cfg: dict,
    out_lora_dir,
    loss_csv,
    loss_png,
    work_dir,
    progress: bool = True,
) -> list[dict]:
    """Stage `train_prior`: the mask prior (`loraedit.prior`) on `clips` (`prior.PriorClip`), trained
    with `prior_cfg` (TrainSettings keys + `regions`); resumable like `train_lora`."""
    spec = registry.backend_spec(model_cfg)
    family = registry.family(spec)
    settings = tr.TrainSettings.from_config({**prior_cfg, "init": "none"})
    device, _ = _device_dtype(model_cfg)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    regions = prior_cfg.get("regions", list(mask_prior.REGIONS))

    def encode(encoders) -> list[dict]:
        mode = prior_cfg.get("mask_downsample", "nearest")
        return mask_prior.prior_samples(family, encoders, clips, settings, device, regions, mode)

    record = {"clip_id": None, "method": "prior", "clips": [c.clip_id for c in clips], "regions": list(regions)}
    key = {**record, "settings": dataclasses.asdict(settings)}
    samples = encoded_samples(work_dir / "samples.pt", key, spec, family, model_cfg, encode)
    return train_and_save(
        spec,
        family,
        model_cfg,
        prior_cfg,
        settings,
        samples,
        out_lora_dir,
        loss_csv,
        loss_png,
        work_dir,
        record,
        progress=progress,
    )


def load_models_for_inference(model_cfg: dict, lora_dir=None) -> tuple[Models, torch.device]:
    """Encoders + transformer(s), with the LoRA loaded by stock diffusers `load_lora_weights`."""
    device, dtype = _device_dtype(model_cfg)
    models = registry.load_models(model_cfg, device, dtype)
    if lora_dir is not None:
        pipe = registry.assemble_pipeline(models)
        lora_io.load_lora_into_pipeline(pipe, lora_dir, num_experts=len(models.transformers))
        second = getattr(pipe, "transformer_2", None)  # Wan2.2's low-noise expert; HunyuanVideo has none
        models.transformers = [pipe.transformer] + ([second] if second is not None else [])
    return models, device


def run_infer(
    prepared_dir,
    masks_dir,
    caption_json,
    method: str,
    model_cfg: dict,
    infer_cfg: dict,
    out_dir,
    lora_dir=None,
    clip_id: str | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Stage `infer`: writes out_dir/frames/*.png, output.mp4 and side_by_side.mp4 (input | output | mask)."""
    settings = inf.InferSettings.from_config(infer_cfg)
    meta, frames, keep, edited = read_prepared(prepared_dir, masks_dir, clip_id)
    captions = json.loads(Path(caption_json).read_text())
    models, device = load_models_for_inference(model_cfg, lora_dir)
    record = memory.prepare_for_inference(models.transformers, infer_cfg, device)
    cache = CacheStats()  # infer.cache: the share of transformer calls skipped
    output = memory.run_inference(
        lambda: inf.edit_video(
            models,
            frames,
            edited[0],
            inf.method_keep(method, keep),
            captions["infer_prompt"],
            settings,
            device,
            progress,
            cache_stats=cache,
        ),
        models.transformers,
        device,
        record,
    )
    write_output(out_dir, output, frames, keep, meta.get("fps", 8.0))
    write_json(
        Path(out_dir) / MEMORY_RECORD,
        {"clip_id": clip_id, "method": method, **record.to_dict(), "sampling_cache": cache.to_dict()},
    )
    log.info("memory: %s", record.summary())
    return output


def write_output(out_dir, output: np.ndarray, frames: np.ndarray, keep: np.ndarray, fps: float) -> None:
    """One atomic folder: frames/, output.mp4, side_by_side.mp4 (input | output | mask overlay)."""
    with atomic_path(out_dir, is_dir=True) as tmp:
        write_frames(Path(tmp) / "frames", output)
        write_mp4(Path(tmp) / "output.mp4", output, fps)
        side_by_side(
            [("input", frames), ("output", output), ("mask", overlay(frames, keep))],
            Path(tmp) / "side_by_side.mp4",
            fps,
        )


def run_composite(prepared_dir, masks_dir, method_out_dir, out_dir, feather_px: int = 5, clip_id=None) -> None:
    """Beyond the paper: the method's output with the kept background pasted back (feathered)."""
    meta, frames, keep, _ = read_prepared(prepared_dir, masks_dir, clip_id)
    output = read_frames(Path(method_out_dir) / "frames", clip_id)
    composited = inf.composite_background(output, frames, keep, feather_px)
    write_output(out_dir, composited, frames, keep, meta.get("fps", 8.0))
