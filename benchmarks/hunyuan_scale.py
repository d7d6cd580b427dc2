#!/usr/bin/env python
"""Speed and memory of LoRA-Edit on HunyuanVideo-I2V (paper Sec. 4.4) at the real 13B size.

Builds `HunyuanVideoTransformer3DModel` with the real 33-channel config
(`backends.hunyuan.loader.I2V_33CH_CONFIG`; random bf16 weights materialised on the GPU from the
meta device, `harness.build_transformer`) and the real `AutoencoderKLHunyuanVideo` (diffusers
defaults), then times the project's own code: `training.train` (LoRA steps, bf16 autocast,
gradient checkpointing), `inference.denoise` (guided steps) and the HunyuanVideo VAE's
`encode_video` / `decode_latents`.
FLOPs per step are counted by torch's `FlopCounterMode` on the meta device (the real model at the
real token count, no memory); MFU is against the measured bf16 matmul peak.

    python benchmarks/gpu_scale.py --config hunyuan13b        # this file, through the main benchmark
    python benchmarks/hunyuan_scale.py --config tiny-hunyuan   # CPU smoke test, numbers meaningless

Writes <out-dir>/<device>-<date>-<config>.json and .md.
"""

from __future__ import annotations

import argparse
import shlex
import sys

import accelerate
import harness  # beside this file (benchmarks/harness.py)
import torch
from diffusers import AutoencoderKLHunyuanVideo, HunyuanVideoTransformer3DModel
from torch.utils.flop_counter import FlopCounterMode

from loraedit import inference as inf
from loraedit import training as tr
from loraedit.backends import hunyuan
from loraedit.backends.base import Models
from loraedit.backends.hunyuan import loader, tiny
from loraedit.backends.hunyuan.conditioning import TEXT_KEYS
from loraedit.backends.registry import BACKENDS
from loraedit.conditioning import VAE_SPATIAL, latent_num_frames
from loraedit.stages import prepare_for_training

PRESETS = {
    "hunyuan13b": {
        "height": 368,
        "width": 624,
        "train_frames": [49, 13],
        "infer_frames": 49,
        "matmul_size": 8192,
        "text_tokens": loader.IMAGE_TOKENS + loader.MAX_SEQUENCE_LENGTH,
        "backend": "hunyuanvideo-i2v",
    },
    "tiny-hunyuan": {
        "height": 64,
        "width": 96,
        "train_frames": [9, 5],
        "infer_frames": 9,
        "matmul_size": 256,
        "text_tokens": 25 + loader.TINY_MAX_SEQUENCE_LENGTH,
        "backend": "tiny-hunyuan",
    },
}


def transformer_config(name: str) -> dict:
    if name == "hunyuan13b":
        return dict(loader.I2V_33CH_CONFIG)
    return {k: v for k, v in tiny.build_tiny_transformer().config.items() if not k.startswith("_")}


def random_sample(config: dict, frames: int, height: int, width: int, text_tokens: int, seed: int) -> dict:
    """A training sample of the real shapes (what `training.encode_samples` caches), random values."""
    g = torch.Generator().manual_seed(seed)
    t, h, w = latent_num_frames(frames), height // VAE_SPATIAL, width // VAE_SPATIAL
    mask = torch.ones(1, 1, t, h, w)
    return {
        "name": f"{frames}f",
        "weight": 1.0,
        "kind": "clip",
        "latents": torch.randn(1, 16, t, h, w, generator=g),  # (1, 16, T_lat, h, w)
        "condition": torch.cat([torch.randn(1, 16, t, h, w, generator=g), mask], 1),  # (1, 17, ...)
        "prompt_embeds": torch.randn(1, text_tokens, config["text_embed_dim"], generator=g),
        "prompt_attention_mask": torch.ones(1, text_tokens),  # every token attended: the longest prompt
        "pooled_prompt_embeds": torch.randn(1, config["pooled_projection_dim"], generator=g),
    }


def counted_flops(config: dict, sample: dict, rank: int, train: bool, checkpointing: bool) -> int:
    """FLOPs of one forward (train=False) or LoRA step (forward + backward [+ recompute]), on meta."""
    with accelerate.init_empty_weights():
        model = HunyuanVideoTransformer3DModel.from_config(config)
    meta = torch.device("meta")
    if rank:
        tr.add_lora(model, tr.TrainSettings(rank=rank), hunyuan)
    if checkpointing:
        model.enable_gradient_checkpointing()
    latent_input = torch.cat([sample["latents"], sample["condition"]], 1).to(meta)  # (1, 33, T_lat, h, w)
    text = {k: v.to(meta) for k, v in sample.items() if k in TEXT_KEYS}
    with torch.set_grad_enabled(train), FlopCounterMode(display=False) as counter:
        out = hunyuan.predict(model, latent_input, torch.tensor([500.0], device=meta), text, meta)
        if train:
            out.float().square().mean().backward()
    return counter.get_total_flops()


def run(args, device: torch.device, peak: float) -> list[dict]:
    config = transformer_config(args.config)
    records = []
    transformer = harness.build_transformer(HunyuanVideoTransformer3DModel, config, device, torch.bfloat16, args.seed)
    settings_kw = {
        "rank": args.rank,
        "mixed_precision": "bf16",
        "checkpoint_every": 0,
        "gradient_checkpointing": True,
        "steps": args.warmup + args.steps,
    }  # the LoRA on the family's targets (hunyuan.LORA_TARGET_REGEX)
    prepare_for_training(transformer, tr.TrainSettings(**settings_kw), {}, device, hunyuan)
    for frames in args.train_frames:
        sample = random_sample(config, frames, args.height, args.width, args.text_tokens, args.seed)
        record = {"section": "train", "mode": "bf16", "frames": frames, "height": args.height, "width": args.width}
        try:
            record.update(
                harness.time_training(
                    transformer, sample, tr.TrainSettings(**settings_kw), device, args.warmup, hunyuan
                )
            )
            model = counted_flops(config, sample, args.rank, train=True, checkpointing=False)
            hardware = counted_flops(config, sample, args.rank, train=True, checkpointing=True)
            record.update(model_flops=model, hardware_flops=hardware, mfu=model / record["seconds_per_step"] / peak)
        except Exception as e:  # noqa: BLE001 - an OOM is a result too
            record["error"] = harness.error(e)
        records.append(record)
        harness.free(device)
    sample = random_sample(config, args.infer_frames, args.height, args.width, args.text_tokens, args.seed)
    record = {
        "section": "infer",
        "mode": "bf16",
        "frames": args.infer_frames,
        "height": args.height,
        "width": args.width,
    }
    try:
        settings = inf.InferSettings(
            num_steps=args.infer_warmup + args.infer_steps, guidance_scale=6.0, shift=loader.SCHEDULER_SHIFT
        )
        models = Models(BACKENDS[args.backend], hunyuan, None, [transformer])
        text = {k: sample[k] for k in TEXT_KEYS}  # the negative prompt's encoding has the same shapes
        record.update(
            harness.time_inference(models, sample["condition"], text, text, settings, device, args.infer_warmup)
        )
        step_flops = record["transformer_passes_per_step"] * counted_flops(config, sample, args.rank, False, False)
        record.update(flops_per_step=step_flops, mfu=step_flops / record["seconds_per_step"] / peak)
    except Exception as e:  # noqa: BLE001
        record["error"] = harness.error(e)
    records.append(record)
    del transformer
    harness.free(device)
    if args.vae:  # tiled, as infer.tiled_decode in config/hunyuan-i2v.yaml
        vae = AutoencoderKLHunyuanVideo() if args.config == "hunyuan13b" else tiny.build_tiny_vae()
        records += harness.time_vae(
            vae.to(device, torch.float32).eval(),
            hunyuan,
            args.infer_frames,
            args.height,
            args.width,
            device,
            args.vae_repeats,
            tilings=(True,),
        )
    return records


def markdown(result: dict) -> str:
    lines = [
        f"# HunyuanVideo-I2V benchmark: {result['device']}",
        "",
        f"- {result['date']}; `{result['config']}`, {result['parameters'] / 1e9:.3g} B parameters; "
        f"matmul peak {result['matmul_peak']['flops_per_second'] / 1e12:.1f} TFLOP/s",
        f"- command: `{result['command']}`",
        "",
        "| section | frames | s/step or s | peak GB | MFU | note |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["records"]:
        seconds = r.get("seconds_per_step", r.get("seconds"))
        lines.append(
            f"| {r['section']}{' ' + r['op'] if 'op' in r else ''} | {r['frames']} | {harness.fmt(seconds, '.3f')} "
            f"| {harness.fmt(r.get('peak_allocated_gb'), '.1f')} | {harness.fmt(r.get('mfu'), '.1%')} "
            f"| {r.get('error', '')} |"
        )
    return "\n".join(lines + [""])


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = harness.argument_parser(
        __doc__, PRESETS, "hunyuan13b", "hunyuan13b: the real HunyuanVideo-I2V-33ch sizes; tiny-hunyuan: CPU smoke test"
    )
    p.add_argument("--text-tokens", type=int, help=harness.preset_help(PRESETS, "text_tokens"))
    p.add_argument("--vae", action=argparse.BooleanOptionalAction, default=True, help="time the tiled VAE")
    p.add_argument("--name", help="file stem; default <device>-<date>-<config>")
    return harness.parse_args(p, argv, PRESETS)


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    config = transformer_config(args.config)
    device, name, peak, now = harness.start(args.device, args.matmul_size)
    result = {
        "date": now.isoformat(timespec="seconds"),
        "device": name,
        "config": args.config,
        "command": "python benchmarks/hunyuan_scale.py " + shlex.join(argv),
        "parameters": harness.count_parameters(HunyuanVideoTransformer3DModel, config),
        "matmul_peak": peak,
        "records": run(args, device, peak["flops_per_second"]),
    }
    paths = harness.result_paths(args.out_dir, args.name or harness.default_stem(name, now, f"-{args.config}"))
    return harness.write_result(paths, result, markdown(result))


if __name__ == "__main__":
    sys.exit(harness.report(main()))
