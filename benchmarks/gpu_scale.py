#!/usr/bin/env python
"""Speed and memory of LoRA-Edit at the real Wan2.1-I2V-14B scale (issue 6).

Builds `WanTransformer3DModel` with the real 14B config (random bf16 weights, materialised
straight on the GPU from the meta device: no fp32 copy) and the real `AutoencoderKLWan`, then
times the project's own code: `training.train` (LoRA steps), `inference.denoise` (guided
denoising steps) and `conditioning.encode_video` / `decode_latents` (VAE), in each memory mode.
Weight values do not change speed, so this is what users with the real weights will see.

    python benchmarks/gpu_scale.py                    # everything, on the GPU (see benchmarks/README.md)
    python benchmarks/gpu_scale.py --config tiny      # the same code path, tiny model, seconds on a CPU

Writes benchmarks/results/<device>-<date>.json and .md (or --out-dir / --name).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import logging
import platform
import re
import shlex
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import accelerate
import diffusers
import peft
import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel

from loraedit import conditioning as cond
from loraedit import flops
from loraedit import inference as inf
from loraedit import training as tr
from loraedit.atomic import write_json, write_text
from loraedit.models import tiny
from loraedit.devices import resolve_device
from loraedit.memory import attention as attn
from loraedit.memory import bench as membench
from loraedit.memory.checkpointing import BlockCheckpoint
from loraedit.models.wan import BACKENDS, WanModels
from loraedit.stages import prepare_for_training

log = logging.getLogger("gpu_scale")

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# Memory/speed modes. Each is the `train` config a user would set (loraedit.memory.bench), plus
# torch.compile for "compile" and "fast".
MODES = membench.MODES

# Per-config defaults; any of them can be overridden on the command line.
PRESETS = {
    "wan14b": {"height": 480, "width": 832, "train_frames": [49, 13], "infer_frames": 49,
               "modes": ["bf16", "fp8", "offload", "compile", "attn", "fast", "low", "low20"], "matmul_size": 8192,
               "backend": "wan2.1-i2v-480p", "check_frames": 13},
    "tiny": {"height": 64, "width": 96, "train_frames": [9, 5], "infer_frames": 9,
             "modes": ["bf16", "fp8", "low", "fast"], "matmul_size": 256, "backend": "tiny", "check_frames": 5},
}

# NVIDIA datasheet dense bf16 tensor-core peaks (informational; MFU uses the measured matmul peak).
SPEC_BF16_DENSE = [("H100 NVL", 835e12), ("H100 PCIe", 756e12), ("H100", 989.4e12),
                   ("H200 NVL", 835e12), ("H200", 989.4e12)]

TARGETS = {
    "train_peak_gb_49_frames": 20.0,  # paper: "typically 20 GB"
    "train_lean_vs_bf16_time": 1.3,  # issue 11: the <= 20 GB mode at <= 1.3x the bf16 step time
    "train_mfu": 0.55,  # issue 11 (issue 6 asked for 0.45)
    "clip_vs_flop_limit": 1.25,  # issue 11 (issue 6 asked for 2)
}

GB = 1e9


# ----------------------------------------------------------------------------- models


def transformer_config(name: str) -> dict:
    if name == "wan14b":
        return dict(flops.WAN21_I2V_14B_CONFIG)
    config = tiny.build_tiny_transformer().config  # the tiny sizes, from the project's own builder
    return {k: v for k, v in config.items() if not k.startswith("_")}


def _init_parameters(model: torch.nn.Module, seed: int) -> None:
    """PyTorch's default init, in place, in the parameters' own dtype and device."""
    torch.manual_seed(seed)
    done = set()
    for module in model.modules():
        reset = getattr(module, "reset_parameters", None)
        if module is not model and callable(reset):
            reset()
            done.update(id(p) for p in module.parameters(recurse=False))
    for name, p in model.named_parameters():
        if id(p) in done:
            continue
        if p.ndim == 1:
            p.fill_(1.0 if name.endswith("weight") else 0.0)  # norm scales / shifts
        else:
            p.normal_(0.0, p.shape[-1] ** -0.5)  # scale_shift_table: randn / sqrt(dim), as diffusers


@torch.no_grad()
def build_transformer(config: dict, device: torch.device, dtype: torch.dtype, seed: int = 0,
                      model_cls=WanTransformer3DModel) -> WanTransformer3DModel:
    """Random weights in `dtype`, allocated only on `device` (meta first: no fp32 copy anywhere)."""
    with accelerate.init_empty_weights():  # parameters on meta; buffers (the RoPE tables) stay real
        model = model_cls.from_config(config)
    model.to(dtype)  # all in `dtype`; the few fp32 modules of a real checkpoint barely change speed
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    model.to_empty(device=device)
    for name, b in model.named_buffers():
        b.copy_(buffers[name])
    _init_parameters(model, seed)
    return model.eval()


def build_vae(name: str, device: torch.device) -> AutoencoderKLWan:
    # diffusers' defaults of AutoencoderKLWan are the real Wan2.1 VAE; the project runs it in fp32.
    vae = AutoencoderKLWan() if name == "wan14b" else tiny.build_tiny_vae()
    return vae.to(device, torch.float32).eval()


def random_sample(config: dict, frames: int, height: int, width: int, image_tokens: int, seed: int) -> dict:
    """A training sample of the real shapes (what `training.encode_samples` caches), random values."""
    g = torch.Generator().manual_seed(seed)
    t, h, w = cond.latent_num_frames(frames), height // cond.VAE_SPATIAL, width // cond.VAE_SPATIAL
    return {
        "name": f"{frames}f",
        "weight": 1.0,
        "latents": torch.randn(1, 16, t, h, w, generator=g),
        "condition": torch.randn(1, 20, t, h, w, generator=g),
        "prompt_embeds": torch.randn(1, flops.TEXT_TOKENS, config["text_dim"], generator=g),
        "image_embeds": torch.randn(1, image_tokens, config["image_dim"], generator=g),
    }


# ----------------------------------------------------------------------------- measuring


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"peak_allocated_gb": None, "peak_reserved_gb": None}
    return {"peak_allocated_gb": torch.cuda.max_memory_allocated(device) / GB,
            "peak_reserved_gb": torch.cuda.max_memory_reserved(device) / GB}


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _timed(fn, device: torch.device, warmup: int, repeats: int) -> dict:
    """Median wall time of `fn` (synchronised), peak memory of the timed runs."""
    for _ in range(warmup):
        fn()
    _sync(device)
    _reset_peak(device)
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        seconds.append(time.perf_counter() - t0)
    return {"seconds": statistics.median(seconds), "samples": seconds, **_peak(device)}


@torch.no_grad()
def matmul_peak(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 10, inner: int = 10) -> dict:
    """The achievable dense matmul rate: (size x size) @ (size x size), median over `repeats` bursts."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=g)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=g)
    out = torch.empty_like(a)
    work = inner * flops.matmul_flops(size, size, size)

    def burst():
        for _ in range(inner):
            torch.matmul(a, b, out=out)

    timing = _timed(burst, device, warmup=2, repeats=repeats)
    rates = [work / s for s in timing["samples"]]
    return {"size": size, "dtype": str(dtype).removeprefix("torch."), "flops_per_second": statistics.median(rates),
            "flops_per_second_max": max(rates)}


def spec_peak(device_name: str) -> float | None:
    for key, value in SPEC_BF16_DENSE:
        if key in device_name:
            return value
    return None


@contextlib.contextmanager
def _forward_starts(module: torch.nn.Module, device: torch.device):
    """Synchronised start time of every forward of `module` (the transformer passes of `denoise`)."""
    times: list[float] = []

    def hook(*_):
        _sync(device)
        times.append(time.perf_counter())

    handle = module.register_forward_pre_hook(hook)
    try:
        yield times
    finally:
        handle.remove()


def time_training(transformer, sample: dict, settings: tr.TrainSettings, device: torch.device, warmup: int) -> dict:
    """The project's `training.train` loop; per-step seconds from its history (each step ends in a
    host read of the loss, so it is synchronised)."""
    _sync(device)
    _reset_peak(device)
    with tempfile.TemporaryDirectory() as out_dir:
        history = tr.train(transformer, [sample], settings, device, out_dir, progress=False)
    seconds = [h["seconds"] for h in history]
    return {"seconds_per_step": statistics.median(seconds[warmup:]), "first_step_seconds": seconds[0],
            "step_seconds": seconds[warmup:], **_peak(device)}


def time_inference(transformer, spec_name: str, sample: dict, negative_embeds: torch.Tensor, settings: inf.InferSettings,
                   device: torch.device, warmup: int) -> dict:
    """The project's `inference.denoise` with guidance; a step = its two transformer passes."""
    models = WanModels(BACKENDS[spec_name], None, [transformer])
    passes = 2 if settings.guidance_scale > 1.0 else 1
    _sync(device)
    _reset_peak(device)
    with _forward_starts(transformer, device) as starts:
        inf.denoise(models, sample["condition"], sample["prompt_embeds"], negative_embeds, sample["image_embeds"],
                    settings, device, progress=False)
        _sync(device)
        starts.append(time.perf_counter())
    if len(starts) != passes * settings.num_steps + 1:
        raise RuntimeError(f"denoise ran {len(starts) - 1} transformer passes, expected {passes * settings.num_steps}")
    steps = [starts[(i + 1) * passes] - starts[i * passes] for i in range(settings.num_steps)]
    return {"seconds_per_step": statistics.median(steps[warmup:]), "first_step_seconds": steps[0],
            "step_seconds": steps[warmup:], "transformer_passes_per_step": passes, **_peak(device)}


def time_vae(vae, frames: int, height: int, width: int, device: torch.device, repeats: int, tiled: bool) -> list[dict]:
    """`conditioning.encode_video` / `decode_latents` of one clip (untiled, and tiled when asked)."""
    g = torch.Generator().manual_seed(0)
    video = (torch.rand(1, 3, frames, height, width, generator=g) * 2 - 1).to(device)  # (1, 3, T, H, W)
    records = []
    for use_tiling in (False, True) if tiled else (False,):
        vae.enable_tiling() if use_tiling else vae.disable_tiling()
        latents = None
        for op in ("encode", "decode"):
            record = {"section": "vae", "op": op, "tiled": use_tiling, "frames": frames}
            try:
                if op == "encode":
                    record.update(_timed(lambda: cond.encode_video(vae, video), device, 1, repeats))
                    latents = cond.encode_video(vae, video)
                else:
                    if latents is None:
                        raise RuntimeError("no latents: the encode failed")
                    record.update(_timed(lambda z=latents: cond.decode_latents(vae, z), device, 1, repeats))
            except Exception as e:  # noqa: BLE001 - keep measuring the rest; the failure is reported
                record["error"] = _error(e)
            records.append(record)
            _free(device)
    vae.disable_tiling()
    return records


def _error(e: BaseException) -> str:
    log.error("%s", "".join(traceback.format_exception(e)))
    text = f"{type(e).__name__}: {e}".splitlines()[0]
    return text[:300]


# ----------------------------------------------------------------------------- one mode


def lora_check(transformer, mode: str, args, config: dict, settings_kw: dict, device: torch.device,
               backend: str | None) -> tuple[dict, dict]:
    """Train `--check-steps` steps at `--check-frames` from the fixed seed/sample; (LoRA update, record)."""
    tokens = flops.latent_tokens(args.check_frames, args.height, args.width, config["patch_size"])
    sample = random_sample(config, args.check_frames, args.height, args.width, args.image_tokens, args.seed)
    before = tr.lora_state(transformer)
    with tempfile.TemporaryDirectory() as out_dir:
        tr.train(transformer, [sample], tr.TrainSettings(**dict(settings_kw, steps=args.check_steps)), device, out_dir,
                 progress=False)
    record = {"mode": mode, "description": MODES[mode], "section": "check", "frames": args.check_frames,
              "tokens": tokens, "steps": args.check_steps}
    if device.type == "cuda":  # which attention kernel really runs (one forward, profiled)
        latent = torch.cat([sample["latents"], sample["condition"]], 1).to(device, dtype=torch.bfloat16)

        def forward():
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                transformer(hidden_states=latent, timestep=torch.tensor([500.0], device=device),
                            encoder_hidden_states=sample["prompt_embeds"].to(device, torch.bfloat16),
                            encoder_hidden_states_image=sample["image_embeds"].to(device, torch.bfloat16),
                            return_dict=False)

        kernels = attn.attention_kernels(attn.profile_kernels(forward))
        record.update(attention_backend=backend, attention_kernels=kernels,
                      attention_kernel_ok=attn.kernel_matches(backend, kernels))
    return membench.lora_update(tr.lora_state(transformer), before), record


def host_memory(transformer) -> dict:
    """Host memory (GB): the process's peak resident set so far (model build included) and, in the
    low modes, the pinned weight masters and the peak offloaded block inputs."""
    import resource

    out = {"host_peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB}  # ru_maxrss: KiB
    fn = getattr(transformer, "_gradient_checkpointing_func", None)
    if isinstance(fn, BlockCheckpoint) and (fn.streamer or fn.offload):
        out.update(host_weights_gb=fn.streamer.host_bytes() / GB if fn.streamer else 0.0,
                   host_activations_gb=fn.offload.peak_host_bytes / GB if fn.offload else 0.0)
    return out


def run_mode(mode: str, args, config: dict, device: torch.device, dtype: torch.dtype, peak: float,
             reference: dict | None = None, check_only: bool = False) -> tuple[list[dict], dict | None]:
    """Build the model for `mode`, check its LoRA against `reference` (the bf16 mode's update),
    time training at each frame count, then guided inference. Returns (records, LoRA update)."""
    preset = PRESETS[args.config]
    train_cfg = membench.train_config(mode, args.offload_blocks, args.resident_blocks)
    settings_kw = {"rank": args.rank, "mixed_precision": args.mixed_precision, "checkpoint_every": 0,
                   "gradient_checkpointing": args.gradient_checkpointing, "steps": args.warmup + args.steps}
    base = {"mode": mode, "description": MODES[mode], "rank": args.rank,
            "gradient_checkpointing": args.gradient_checkpointing, "mixed_precision": args.mixed_precision}
    records: list[dict] = []
    targets = ([("train", f) for f in args.train_frames] if args.train and not check_only else []) + \
              ([("infer", args.infer_frames)] if args.infer and not check_only else [])
    checking = args.check and args.train
    if not targets and not checking:
        return [], None
    if mode == "offload" and device.type != "cuda":
        targets += [("check", args.check_frames)] if checking else []
        return [dict(base, section=s, frames=f, skipped="group offloading needs a CUDA device") for s, f in targets], None

    asked = args.attention_backend or train_cfg.get("attention_backend")
    backend = attn.pick_backend(device)[0] if asked in (None, "auto") else asked  # what the plan will set
    transformer = None
    try:
        # As `stages.run_train`: an offloaded model starts on the CPU. It is materialised on the GPU
        # (fast random init) and moved, so the CPU never holds an fp32 copy either.
        transformer = build_transformer(config, device, dtype, args.seed)
        if mode in ("offload", "low", "low20", "auto"):  # as `stages.run_train`: these start on the CPU
            transformer.to("cpu")
            _free(device)
        if args.attention_backend:  # the command line wins over the mode's choice
            train_cfg["attention_backend"] = args.attention_backend
        # Exactly what `stages.run_train` does: fp8 storage, the LoRA, then the memory plan (or group offloading).
        tokens = flops.latent_tokens(max(args.train_frames), args.height, args.width, config["patch_size"])
        prepare_for_training(transformer, tr.TrainSettings(**settings_kw), train_cfg, device, tokens=tokens)
        if mode in membench.COMPILED:
            fn = getattr(transformer, "_gradient_checkpointing_func", None)
            keeps_attention = isinstance(fn, BlockCheckpoint) and fn.save_attention
            transformer.compile_repeated_blocks(fullgraph=not keeps_attention, dynamic=False, backend=args.compile_backend)
    except Exception as e:  # noqa: BLE001 - reported as this part's error
        error = _error(e)
        del transformer
        _free(device)
        targets += [("check", args.check_frames)] if checking else []
        return [dict(base, section=s, frames=f, error=f"model setup: {error}") for s, f in targets], None

    update = None
    if checking:
        log.info("%s: LoRA check, %d steps at %d frames", mode, args.check_steps, args.check_frames)
        try:
            update, record = lora_check(transformer, mode, args, config, settings_kw, device, backend)
            ref = update if reference is None else reference
            record.update(membench.compare_updates(update, ref, args.check_tolerance), reference="bf16")
        except Exception as e:  # noqa: BLE001 - reported as this part's error
            record = dict(base, section="check", frames=args.check_frames, error=_error(e))
        records.append(record)

    for section, frames in targets:
        tokens = flops.latent_tokens(frames, args.height, args.width, config["patch_size"])
        record = dict(base, section=section, frames=frames, height=args.height, width=args.width, tokens=tokens)
        sample = random_sample(config, frames, args.height, args.width, args.image_tokens, args.seed)
        log.info("%s: %s at %d frames (%d tokens)", mode, section, frames, tokens)
        try:
            if section == "train":
                settings = tr.TrainSettings(**settings_kw)
                count = flops.train_step_flops(config, tokens, image_tokens=args.image_tokens, lora_rank=args.rank,
                                               lora_targets=settings.target_modules,
                                               gradient_checkpointing=args.gradient_checkpointing)
                record.update(time_training(transformer, sample, settings, device, args.warmup))
                record.update(host_memory(transformer), estimated_peak_gb=membench.estimated_peak_gb(
                    transformer, tokens, compiled=mode in membench.COMPILED))
                record.update(model_flops=count.model, hardware_flops=count.hardware,
                              mfu=count.model / record["seconds_per_step"] / peak,
                              hfu=count.hardware / record["seconds_per_step"] / peak)
            else:
                settings = inf.InferSettings(num_steps=args.infer_warmup + args.infer_steps,
                                             guidance_scale=args.guidance_scale)
                negative = torch.randn(sample["prompt_embeds"].shape, generator=torch.Generator().manual_seed(1))
                record.update(time_inference(transformer, preset["backend"], sample, negative, settings, device,
                                             args.infer_warmup))
                fwd = flops.forward_flops(config, tokens, image_tokens=args.image_tokens, lora_rank=args.rank)
                step_flops = record["transformer_passes_per_step"] * fwd.total
                record.update(flops_per_step=step_flops, mfu=step_flops / record["seconds_per_step"] / peak)
        except Exception as e:  # noqa: BLE001 - an OOM or a failing mode is a result too
            record["error"] = _error(e)
        records.append(record)
        _free(device)

    del transformer
    if mode in membench.COMPILED:
        torch._dynamo.reset()
    _free(device)
    return records, update


# ----------------------------------------------------------------------------- summary


def _key(r: dict) -> tuple:
    return (r["section"], r.get("mode"), r.get("op"), r.get("tiled"), r.get("frames"))


def projections(result: dict) -> list[dict]:
    """Minutes per clip = N training steps + one M-step guided inference (+ VAE), per mode and
    training window, against the GPU's FLOP limit for the same work."""
    ok = [r for r in result["records"] if "seconds" in r or "seconds_per_step" in r]
    vae = {(r["op"], r["tiled"]): r["seconds"] for r in ok if r["section"] == "vae"}
    enc = vae.get(("encode", False), vae.get(("encode", True)))
    dec = vae.get(("decode", False), vae.get(("decode", True)))
    # Clip latents + greyed condition for training, the condition again for inference; one decode.
    vae_seconds = 3 * enc + dec if enc is not None and dec is not None else None
    n_train, n_infer = result["settings"]["clip_train_steps"], result["settings"]["clip_infer_steps"]
    out = []
    for t in (r for r in ok if r["section"] == "train"):
        infer = next((r for r in ok if r["section"] == "infer" and r["mode"] == t["mode"]), None)
        if infer is None:
            continue
        peak = result["matmul_peak"]["flops_per_second"]
        seconds = n_train * t["seconds_per_step"] + n_infer * infer["seconds_per_step"] + (vae_seconds or 0.0)
        limit = (n_train * t["hardware_flops"] + n_infer * infer["flops_per_step"]) / peak
        out.append({"mode": t["mode"], "train_frames": t["frames"], "infer_frames": infer["frames"],
                    "minutes": seconds / 60, "includes_vae": vae_seconds is not None,
                    "flop_limit_minutes": limit / 60, "ratio_to_limit": seconds / limit})
    return out


def _fmt(value, spec: str = ".2f", none: str = "n/a") -> str:
    return none if value is None else format(value, spec)


def _status(r: dict) -> str:
    return r.get("error") or r.get("skipped") or ""


def markdown(result: dict) -> str:
    s = result["settings"]
    peak = result["matmul_peak"]
    lines = [
        f"# GPU-scale benchmark: {result['device']['name']}",
        "",
        (f"- date: {result['date']}; config: `{s['config']}` "
         f"({result['model']['parameters'] / 1e9:.3g} B parameters), {s['height']}x{s['width']}"),
        (f"- torch {result['versions']['torch']}, diffusers {result['versions']['diffusers']}, "
         f"peft {result['versions']['peft']}, python {result['versions']['python']}"),
        f"- measured {peak['dtype']} matmul peak ({peak['size']}^3): {peak['flops_per_second'] / 1e12:.1f} TFLOP/s"
        + (f" (datasheet dense: {result['device']['spec_bf16_flops'] / 1e12:.0f})"
           if result["device"].get("spec_bf16_flops") else ""),
        (f"- medians of {s['steps']} training steps after {s['warmup']} warm-up, {s['infer_steps']} guided "
         f"steps after {s['infer_warmup']}; LoRA rank {s['rank']}; memory in GB (1e9 bytes), peak allocated"),
        "- commands:",
        *[f"  - `{c}`" for c in result["commands"]],
        "",
        "## LoRA training (one step = forward + backward + AdamW)",
        "",
        ("| mode | frames | tokens | s/step | first step s | peak GB | model's estimate GB "
         "| host GB (weights + activations) | MFU | HFU | note |"),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    records = result["records"]
    for r in (r for r in records if r["section"] == "train"):
        host = (f"{r['host_weights_gb']:.1f} + {r['host_activations_gb']:.1f}" if "host_weights_gb" in r else "")
        lines.append(f"| {r['mode']} | {r['frames']} | {r.get('tokens', '')} | {_fmt(r.get('seconds_per_step'), '.3f')} "
                     f"| {_fmt(r.get('first_step_seconds'), '.1f')} | {_fmt(r.get('peak_allocated_gb'), '.1f')} "
                     f"| {_fmt(r.get('estimated_peak_gb'), '.1f')} | {host} | {_fmt(r.get('mfu'), '.1%')} | {_fmt(r.get('hfu'), '.1%')} | {_status(r)} |")
    lines += ["", "## LoRA check (each mode's LoRA update vs the bf16 mode's, same seed and sample)", "",
              "| mode | frames | steps | relative difference | status | attention kernels (profiled) | note |",
              "|---|---|---|---|---|---|---|"]
    for r in (r for r in records if r["section"] == "check"):
        kernels = ", ".join(r.get("attention_kernels", [])[:3]) + \
            {True: " (as asked)", False: " (NOT the asked backend)", None: ""}[r.get("attention_kernel_ok")]
        lines.append(f"| {r['mode']} | {r['frames']} | {r.get('steps', '')} | {_fmt(r.get('relative_difference'), '.2e')} "
                     f"| {r.get('status', '')} | {kernels} | {r.get('why') or _status(r)} |")
    lines += ["", "## Guided inference (one step = two transformer passes)", "",
              "| mode | frames | tokens | s/step | peak GB | MFU | note |", "|---|---|---|---|---|---|---|"]
    for r in (r for r in records if r["section"] == "infer"):
        lines.append(f"| {r['mode']} | {r['frames']} | {r.get('tokens', '')} | {_fmt(r.get('seconds_per_step'), '.3f')} "
                     f"| {_fmt(r.get('peak_allocated_gb'), '.1f')} | {_fmt(r.get('mfu'), '.1%')} | {_status(r)} |")
    lines += ["", "## VAE (fp32)", "", "| op | tiled | frames | s | peak GB | note |", "|---|---|---|---|---|---|"]
    for r in (r for r in records if r["section"] == "vae"):
        lines.append(f"| {r['op']} | {r['tiled']} | {r['frames']} | {_fmt(r.get('seconds'), '.2f')} "
                     f"| {_fmt(r.get('peak_allocated_gb'), '.1f')} | {_status(r)} |")
    lines += ["", (f"## Per clip: {s['clip_train_steps']} training steps + one {s['clip_infer_steps']}-step "
                   "guided inference"), "",
              (f"| mode | train frames | minutes | FLOP-limit minutes | ratio (target <= {TARGETS['clip_vs_flop_limit']}) "
               "| VAE included |"),
              "|---|---|---|---|---|---|"]
    for p in result["projections"]:
        lines.append(f"| {p['mode']} | {p['train_frames']} | {p['minutes']:.1f} | {p['flop_limit_minutes']:.1f} "
                     f"| {p['ratio_to_limit']:.2f} | {p['includes_vae']} |")
    lines += ["", "## Targets", ""] + [f"- {line}" for line in target_lines(result)] + [""]
    return "\n".join(lines)


def target_lines(result: dict) -> list[str]:
    ok = [r for r in result["records"] if r["section"] == "train" and "seconds_per_step" in r]
    big = max((r["frames"] for r in ok), default=None)
    lines = []
    failed = [r["mode"] for r in result["records"] if r["section"] == "check" and r.get("status") == "FAILED"]
    lines.append(f"LoRA check FAILED: {', '.join(failed)}" if failed else "LoRA check: no mode failed")
    if big is not None:
        at_big = [r for r in ok if r["frames"] == big and r["peak_allocated_gb"] is not None]
        fits = [r["mode"] for r in at_big if r["peak_allocated_gb"] <= TARGETS["train_peak_gb_49_frames"]]
        verdict = (", ".join(fits) or "no mode") if at_big else "GPU memory not measured"
        lines.append(f"training {big} frames in <= {TARGETS['train_peak_gb_49_frames']:.0f} GB: {verdict}")
        plain = next((r for r in ok if r["frames"] == big and r["mode"] == "bf16"), None)
        for r in (r for r in at_big if plain and r["mode"] in fits):
            ratio = r["seconds_per_step"] / plain["seconds_per_step"]
            lines.append(f"{r['mode']}: {ratio:.2f}x the bf16 step time at {big} frames "
                         f"(target <= {TARGETS['train_lean_vs_bf16_time']}x)")
        best = max(ok, key=lambda r: r["mfu"])
        lines.append(f"best training MFU: {best['mfu']:.1%} ({best['mode']}, {best['frames']} frames; "
                     f"target >= {TARGETS['train_mfu']:.0%})")
    if result["projections"]:
        best = min(result["projections"], key=lambda p: p["ratio_to_limit"])
        lines.append(f"best clip time: {best['minutes']:.1f} min ({best['mode']}, {best['train_frames']}-frame training), "
                     f"{best['ratio_to_limit']:.2f}x the FLOP limit (target <= {TARGETS['clip_vs_flop_limit']}x)")
    return lines or ["nothing measured"]


# ----------------------------------------------------------------------------- CLI


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", choices=sorted(PRESETS), default="wan14b",
                   help="wan14b: the real Wan2.1-I2V-14B sizes; tiny: loraedit.models.tiny (CPU smoke test)")
    p.add_argument("--tiny", action="store_const", const="tiny", dest="config", help="same as --config tiny")
    p.add_argument("--modes", nargs="+", choices=sorted(MODES), help="default: all but auto (tiny: bf16 fp8 low fast)")
    p.add_argument("--train-frames", nargs="+", type=int, help="default 49 13 (tiny: 9 5)")
    p.add_argument("--infer-frames", type=int, help="default 49 (tiny: 9)")
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--image-tokens", type=int, default=flops.IMAGE_TOKENS)
    p.add_argument("--warmup", type=int, default=2, help="training steps not timed")
    p.add_argument("--steps", type=int, default=10, help="timed training steps (median)")
    p.add_argument("--infer-warmup", type=int, default=1)
    p.add_argument("--infer-steps", type=int, default=10, help="timed guided denoising steps (median)")
    p.add_argument("--guidance-scale", type=float, default=5.0)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--mixed-precision", choices=["bf16", "no"], default="bf16")
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--offload-blocks", type=int, default=1, help="blocks per group in the offload mode")
    p.add_argument("--resident-blocks", type=int, default=0, help="blocks kept on the GPU in the low mode")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="LoRA correctness check: each mode's LoRA update vs the bf16 mode's")
    p.add_argument("--check-steps", type=int, default=3, help="training steps of the LoRA check")
    p.add_argument("--check-frames", type=int, help="frames of the LoRA check (default 13; tiny: 5)")
    p.add_argument("--check-tolerance", type=float, default=0.25,
                   help="largest relative difference of the LoRA update to the bf16 mode's that passes")
    p.add_argument("--merge-files", nargs="+", type=Path, metavar="JSON",
                   help="only merge these result files (partial runs) into --out-dir/--name (default merged)")
    p.add_argument("--compile-backend", default="inductor")
    p.add_argument("--attention-backend", help="diffusers attention backend (default: native torch SDPA)")
    p.add_argument("--vae-repeats", type=int, default=3)
    p.add_argument("--tiled-vae", action=argparse.BooleanOptionalAction, default=True, help="also time tiled VAE")
    p.add_argument("--matmul-size", type=int)
    p.add_argument("--clip-train-steps", type=int, default=100, help="projection: training steps per clip")
    p.add_argument("--clip-infer-steps", type=int, default=30, help="projection: denoising steps per clip")
    for section in ("train", "infer", "vae"):
        p.add_argument(f"--{section}", action=argparse.BooleanOptionalAction, default=True, help=f"run the {section} part")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--name", help="file stem; default <device>-<date> (tiny: <device>-<date>-tiny)")
    p.add_argument("--merge", action="store_true",
                   help="merge into an existing result of the same name (modes run by separate commands)")
    args = p.parse_args(argv)
    for key, value in PRESETS[args.config].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.warmup < 1 or args.steps < 1 or args.infer_steps < 1:
        p.error("--warmup, --steps and --infer-steps must be >= 1")
    return args


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu-{platform.machine()}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def merge(old: dict, new: dict) -> dict:
    if old["device"]["name"] != new["device"]["name"] or old["settings"]["config"] != new["settings"]["config"]:
        raise SystemExit(f"--merge: existing result is for {old['device']['name']} / {old['settings']['config']}")
    records = {_key(r): r for r in old["records"]}
    records.update({_key(r): r for r in new["records"]})
    merged = dict(new, records=list(records.values()), commands=old["commands"] + new["commands"])
    merged["projections"] = projections(merged)
    return merged


def merge_files(paths: list[Path], stem: Path) -> dict:
    """One table from the JSON files of several partial runs (same device and config)."""
    results = [json.loads(Path(p).read_text()) for p in paths]
    merged = results[0]
    for result in results[1:]:
        merged = merge(merged, result)
    merged["projections"] = projections(merged)
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    write_json(json_path, merged)
    write_text(md_path, markdown(merged))
    log.info("merged %d files into %s and %s", len(paths), json_path, md_path)
    return dict(merged, paths={"json": str(json_path), "markdown": str(md_path)})


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a.removeprefix("--config=") in ("hunyuan13b", "tiny-hunyuan") for a in argv):
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import hunyuan_scale  # HunyuanVideo-I2V (paper Sec. 4.4): benchmarks/hunyuan_scale.py

        return hunyuan_scale.main(argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.merge_files:
        return merge_files(args.merge_files, args.out_dir / f"{args.name or 'merged'}")
    device = resolve_device(args.device)
    dtype = torch.bfloat16
    config = transformer_config(args.config)
    now = datetime.datetime.now(datetime.UTC)
    name = _device_name(device)
    with accelerate.init_empty_weights():
        parameters = sum(p.numel() for p in WanTransformer3DModel.from_config(config).parameters())

    log.info("device %s; measuring the matmul peak", name)
    peak = matmul_peak(device, dtype, args.matmul_size)
    _free(device)
    result = {
        "date": now.isoformat(timespec="seconds"),
        "commands": ["python benchmarks/gpu_scale.py " + shlex.join(argv)],
        "device": {"name": name, "type": device.type, "spec_bf16_flops": spec_peak(name) if device.type == "cuda" else None},
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__, "peft": peft.__version__,
                     "python": platform.python_version(), "cuda": torch.version.cuda},
        "model": {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
                  "parameters": parameters, "dtype": "bfloat16"},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "matmul_peak": peak,
        "records": [],
    }
    reference = None  # the bf16 mode's LoRA update: every mode must train the same LoRA
    if args.check and args.train and "bf16" not in args.modes:
        log.info("LoRA check reference: the bf16 mode")
        _, reference = run_mode("bf16", args, config, device, dtype, peak["flops_per_second"], check_only=True)
    for mode in sorted(args.modes, key=lambda m: m != "bf16"):  # bf16 first: it is the reference
        log.info("mode %s", mode)
        records, update = run_mode(mode, args, config, device, dtype, peak["flops_per_second"], reference)
        result["records"] += records
        reference = update if mode == "bf16" else reference
    if args.vae:
        log.info("VAE")
        try:
            vae = build_vae(args.config, device)
            result["records"] += time_vae(vae, args.infer_frames, args.height, args.width, device, args.vae_repeats,
                                          args.tiled_vae)
            del vae
        except Exception as e:  # noqa: BLE001 - reported as this part's error
            result["records"].append({"section": "vae", "op": "build", "tiled": False, "frames": args.infer_frames,
                                      "error": _error(e)})
        _free(device)
    result["projections"] = projections(result)

    stem = args.name or f"{_slug(name)}-{now.date().isoformat()}" + ("-tiny" if args.config == "tiny" else "")
    json_path, md_path = args.out_dir / f"{stem}.json", args.out_dir / f"{stem}.md"
    if args.merge and json_path.exists():
        result = merge(json.loads(json_path.read_text()), result)
    write_json(json_path, result)
    write_text(md_path, markdown(result))
    log.info("wrote %s and %s", json_path, md_path)
    result["paths"] = {"json": str(json_path), "markdown": str(md_path)}
    return result


if __name__ == "__main__":
    outcome = main()
    print(Path(outcome["paths"]["markdown"]).read_text())
    failed = [r for r in outcome["records"] if "error" in r]
    sys.exit(1 if failed else 0)
