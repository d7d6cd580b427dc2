#!/usr/bin/env python
"""Speed and memory of LoRA-Edit on HunyuanVideo-I2V (paper Sec. 4.4) at the real 13B size.

Builds `HunyuanVideoTransformer3DModel` with the real 33-channel config (`models.hunyuan.I2V_33CH_CONFIG`;
random bf16 weights materialised on the GPU from the meta device, as `gpu_scale.build_transformer`)
and the real `AutoencoderKLHunyuanVideo` (diffusers defaults), then times the project's own code:
`training.train` (LoRA steps, bf16 autocast, gradient checkpointing), `inference_hunyuan.denoise`
(guided steps) and `conditioning_hunyuan.encode_video` / `decode_latents`.
FLOPs per step are counted by torch's `FlopCounterMode` on the meta device (the real model at the
real token count, no memory); MFU is against the measured bf16 matmul peak.

    python benchmarks/gpu_scale.py --config hunyuan13b        # this file, through the main benchmark
    python benchmarks/hunyuan_scale.py --config tiny-hunyuan   # CPU smoke test, numbers meaningless

Writes <out-dir>/<device>-<date>-<config>.json and .md.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import statistics
import sys
import time
from pathlib import Path

import accelerate
import torch
from diffusers import AutoencoderKLHunyuanVideo, HunyuanVideoTransformer3DModel
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))  # gpu_scale.py, the main benchmark, beside this file
import gpu_scale as gs  # noqa: E402
from loraedit import conditioning_hunyuan as hy
from loraedit import inference as inf
from loraedit import inference_hunyuan as inf_hy
from loraedit import training as tr
from loraedit.atomic import write_json, write_text
from loraedit.conditioning import latent_num_frames
from loraedit.devices import resolve_device
from loraedit.models import hunyuan, tiny_hunyuan
from loraedit.models.wan import BACKENDS, WanModels
from loraedit.stages import prepare_for_training

PRESETS = {
    "hunyuan13b": {"height": 368, "width": 624, "train_frames": [49, 13], "infer_frames": 49, "matmul_size": 8192,
                   "text_tokens": hunyuan.IMAGE_TOKENS + hunyuan.MAX_SEQUENCE_LENGTH, "backend": "hunyuanvideo-i2v"},
    "tiny-hunyuan": {"height": 64, "width": 96, "train_frames": [9, 5], "infer_frames": 9, "matmul_size": 256,
                     "text_tokens": 25 + hunyuan.TINY_MAX_SEQUENCE_LENGTH, "backend": "tiny-hunyuan"},
}


def transformer_config(name: str) -> dict:
    if name == "hunyuan13b":
        return dict(hunyuan.I2V_33CH_CONFIG)
    return {k: v for k, v in tiny_hunyuan.build_tiny_transformer().config.items() if not k.startswith("_")}


def random_sample(config: dict, frames: int, height: int, width: int, text_tokens: int, seed: int) -> dict:
    """A training sample of the real shapes (what `training_hunyuan.encode_samples` caches), random values."""
    g = torch.Generator().manual_seed(seed)
    t, h, w = latent_num_frames(frames), height // 8, width // 8
    mask = torch.ones(1, 1, t, h, w)
    return {"name": f"{frames}f", "weight": 1.0, "kind": "clip",
            "latents": torch.randn(1, 16, t, h, w, generator=g),  # (1, 16, T_lat, h, w)
            "condition": torch.cat([torch.randn(1, 16, t, h, w, generator=g), mask], 1),  # (1, 17, ...)
            "prompt_embeds": torch.randn(1, text_tokens, config["text_embed_dim"], generator=g),
            "prompt_attention_mask": torch.ones(1, text_tokens),  # every token attended: the longest prompt
            "pooled_prompt_embeds": torch.randn(1, config["pooled_projection_dim"], generator=g)}


def counted_flops(config: dict, sample: dict, rank: int, train: bool, checkpointing: bool) -> int:
    """FLOPs of one forward (train=False) or LoRA step (forward + backward [+ recompute]), on meta."""
    with accelerate.init_empty_weights():
        model = HunyuanVideoTransformer3DModel.from_config(config)
    meta = torch.device("meta")
    if rank:
        tr.add_lora(model, tr.TrainSettings(rank=rank, target_modules=hunyuan.LORA_TARGET_REGEX))
    if checkpointing:
        model.enable_gradient_checkpointing()
    latent_input = torch.cat([sample["latents"], sample["condition"]], 1).to(meta)  # (1, 33, T_lat, h, w)
    text = {k: v.to(meta) for k, v in sample.items() if k in hy.TEXT_KEYS}
    with torch.set_grad_enabled(train), FlopCounterMode(display=False) as counter:
        out = hy.predict(model, latent_input, torch.tensor([500.0], device=meta), text, meta)
        if train:
            out.float().square().mean().backward()
    return counter.get_total_flops()


def time_inference(transformer, sample: dict, settings: inf.InferSettings, device: torch.device, warmup: int) -> dict:
    """`inference_hunyuan.denoise` with guidance; a step = its transformer passes (2 with CFG)."""
    models = WanModels(BACKENDS["hunyuanvideo-i2v"], None, [transformer])
    text = {k: v for k, v in sample.items() if k in hy.TEXT_KEYS}
    passes = 2 if settings.guidance_scale > 1.0 else 1
    gs._sync(device)
    gs._reset_peak(device)
    with gs._forward_starts(transformer, device) as starts:
        inf_hy.denoise(models, sample["condition"], text, text, settings, device, progress=False)
        gs._sync(device)
        starts.append(time.perf_counter())
    steps = [starts[(i + 1) * passes] - starts[i * passes] for i in range(settings.num_steps)]
    return {"seconds_per_step": statistics.median(steps[warmup:]), "first_step_seconds": steps[0],
            "transformer_passes_per_step": passes, **gs._peak(device)}


def time_vae(vae, frames: int, height: int, width: int, device: torch.device, repeats: int) -> list[dict]:
    video = (torch.rand(1, 3, frames, height, width, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(device)
    vae.enable_tiling()  # as infer.tiled_decode in config/hunyuan-i2v.yaml
    latents = hy.encode_video(vae, video)
    return [{"section": "vae", "op": "encode", "tiled": True, "frames": frames,
             **gs._timed(lambda: hy.encode_video(vae, video), device, 1, repeats)},
            {"section": "vae", "op": "decode", "tiled": True, "frames": frames,
             **gs._timed(lambda: hy.decode_latents(vae, latents), device, 1, repeats)}]


def run(args, device: torch.device, peak: float) -> list[dict]:
    config = transformer_config(args.config)
    records = []
    transformer = gs.build_transformer(config, device, torch.bfloat16, args.seed, HunyuanVideoTransformer3DModel)
    settings_kw = {"rank": args.rank, "mixed_precision": "bf16", "checkpoint_every": 0, "gradient_checkpointing": True,
                   "steps": args.warmup + args.steps, "target_modules": hunyuan.LORA_TARGET_REGEX}
    prepare_for_training(transformer, tr.TrainSettings(**settings_kw), {}, device)
    for frames in args.train_frames:
        sample = random_sample(config, frames, args.height, args.width, args.text_tokens, args.seed)
        record = {"section": "train", "mode": "bf16", "frames": frames, "height": args.height, "width": args.width}
        try:
            record.update(gs.time_training(transformer, sample, tr.TrainSettings(**settings_kw), device, args.warmup))
            model = counted_flops(config, sample, args.rank, train=True, checkpointing=False)
            hardware = counted_flops(config, sample, args.rank, train=True, checkpointing=True)
            record.update(model_flops=model, hardware_flops=hardware, mfu=model / record["seconds_per_step"] / peak)
        except Exception as e:  # noqa: BLE001 - an OOM is a result too
            record["error"] = gs._error(e)
        records.append(record)
        gs._free(device)
    sample = random_sample(config, args.infer_frames, args.height, args.width, args.text_tokens, args.seed)
    record = {"section": "infer", "mode": "bf16", "frames": args.infer_frames, "height": args.height, "width": args.width}
    try:
        settings = inf.InferSettings(num_steps=args.infer_warmup + args.infer_steps, guidance_scale=6.0,
                                     shift=hunyuan.SCHEDULER_SHIFT, negative_prompt="x")
        record.update(time_inference(transformer, sample, settings, device, args.infer_warmup))
        step_flops = record["transformer_passes_per_step"] * counted_flops(config, sample, args.rank, False, False)
        record.update(flops_per_step=step_flops, mfu=step_flops / record["seconds_per_step"] / peak)
    except Exception as e:  # noqa: BLE001
        record["error"] = gs._error(e)
    records.append(record)
    del transformer
    gs._free(device)
    if args.vae:
        vae = (AutoencoderKLHunyuanVideo() if args.config == "hunyuan13b" else tiny_hunyuan.build_tiny_vae())
        records += time_vae(vae.to(device, torch.float32).eval(), args.infer_frames, args.height, args.width, device,
                            args.vae_repeats)
    return records


def markdown(result: dict) -> str:
    lines = [f"# HunyuanVideo-I2V benchmark: {result['device']}", "",
             f"- {result['date']}; `{result['config']}`, {result['parameters'] / 1e9:.3g} B parameters; "
             f"matmul peak {result['matmul_peak']['flops_per_second'] / 1e12:.1f} TFLOP/s",
             f"- command: `{result['command']}`", "",
             "| section | frames | s/step or s | peak GB | MFU | note |", "|---|---|---|---|---|---|"]
    for r in result["records"]:
        seconds = r.get("seconds_per_step", r.get("seconds"))
        lines.append(f"| {r['section']}{' ' + r['op'] if 'op' in r else ''} | {r['frames']} | {gs._fmt(seconds, '.3f')} "
                     f"| {gs._fmt(r.get('peak_allocated_gb'), '.1f')} | {gs._fmt(r.get('mfu'), '.1%')} "
                     f"| {r.get('error', '')} |")
    return "\n".join(lines + [""])


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", choices=sorted(PRESETS), default="hunyuan13b")
    for name in ("height", "width", "infer-frames", "matmul-size", "text-tokens"):
        p.add_argument(f"--{name}", type=int)
    p.add_argument("--train-frames", nargs="+", type=int)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--infer-warmup", type=int, default=1)
    p.add_argument("--infer-steps", type=int, default=10)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--vae", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--vae-repeats", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", type=Path, default=gs.RESULTS_DIR)
    p.add_argument("--name")
    args = p.parse_args(argv)
    for key, value in PRESETS[args.config].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    device = resolve_device(args.device)
    name = gs._device_name(device)
    peak = gs.matmul_peak(device, torch.bfloat16, args.matmul_size)
    with accelerate.init_empty_weights():
        parameters = sum(p.numel() for p in HunyuanVideoTransformer3DModel.from_config(
            transformer_config(args.config)).parameters())
    now = datetime.datetime.now(datetime.UTC)
    result = {"date": now.isoformat(timespec="seconds"), "device": name, "config": args.config,
              "command": "python benchmarks/hunyuan_scale.py " + shlex.join(argv), "parameters": parameters,
              "matmul_peak": peak, "records": run(args, device, peak["flops_per_second"])}
    stem = args.name or f"{gs._slug(name)}-{now.date().isoformat()}-{args.config}"
    paths = {"json": str(args.out_dir / f"{stem}.json"), "markdown": str(args.out_dir / f"{stem}.md")}
    write_json(paths["json"], result)
    write_text(paths["markdown"], markdown(result))
    return {**result, "paths": paths}


if __name__ == "__main__":
    outcome = main()
    print(Path(outcome["paths"]["markdown"]).read_text())
    sys.exit(1 if any("error" in r for r in outcome["records"]) else 0)
