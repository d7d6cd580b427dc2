"""What the GPU benchmarks share (`gpu_scale.py`: Wan2.1-I2V-14B, `hunyuan_scale.py`: HunyuanVideo-I2V).

- measuring: synchronised wall time, peak GPU memory, the achievable matmul rate;
- the model: a random-weight transformer materialised straight on the device from the meta device;
- the project's own code, timed: `training.train` steps, `inference.denoise` steps and the family's
  VAE `encode_video` / `decode_latents`;
- the command line: the arguments every benchmark takes and how a `--config` preset fills the
  ones left unset;
- the results: `<out-dir>/<stem>.json` and `.md`.

It imports no model family: each benchmark passes its own (`loraedit.backends.wan`, `.hunyuan`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import logging
import platform
import re
import statistics
import tempfile
import time
import traceback
from pathlib import Path

import accelerate
import torch

from loraedit import inference as inf
from loraedit import training as tr
from loraedit.atomic import write_json, write_text
from loraedit.backends.base import Family, Models
from loraedit.devices import resolve_device

log = logging.getLogger("benchmarks")

RESULTS_DIR = Path(__file__).resolve().parent / "results"
GB = 1e9

# NVIDIA datasheet dense bf16 tensor-core peaks (informational; MFU uses the measured matmul peak).
SPEC_BF16_DENSE = [
    ("H100 NVL", 835e12),
    ("H100 PCIe", 756e12),
    ("H100", 989.4e12),
    ("H200 NVL", 835e12),
    ("H200", 989.4e12),
]


# ----------------------------------------------------------------------------- measuring


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict:
    """Peak allocated / reserved GPU memory since the last `reset_peak`, in GB; None on the CPU."""
    if device.type != "cuda":
        return {"peak_allocated_gb": None, "peak_reserved_gb": None}
    return {
        "peak_allocated_gb": torch.cuda.max_memory_allocated(device) / GB,
        "peak_reserved_gb": torch.cuda.max_memory_reserved(device) / GB,
    }


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def timed(fn, device: torch.device, warmup: int, repeats: int) -> dict:
    """Median wall time of `fn` (synchronised), peak memory of the timed runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    reset_peak(device)
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        seconds.append(time.perf_counter() - t0)
    return {"seconds": statistics.median(seconds), "samples": seconds, **peak_memory(device)}


@torch.no_grad()
def matmul_peak(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 10, inner: int = 10) -> dict:
    """The achievable dense matmul rate: (size x size) @ (size x size), median over `repeats` bursts."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=g)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=g)
    out = torch.empty_like(a)
    work = inner * 2.0 * size**3  # one multiply-add = 2 FLOPs

    def burst():
        for _ in range(inner):
            torch.matmul(a, b, out=out)

    timing = timed(burst, device, warmup=2, repeats=repeats)
    rates = [work / s for s in timing["samples"]]
    return {
        "size": size,
        "dtype": str(dtype).removeprefix("torch."),
        "flops_per_second": statistics.median(rates),
        "flops_per_second_max": max(rates),
    }


def spec_peak(device_name: str) -> float | None:
    for key, value in SPEC_BF16_DENSE:
        if key in device_name:
            return value
    return None


@contextlib.contextmanager
def forward_starts(module: torch.nn.Module, device: torch.device):
    """Synchronised start time of every forward of `module` (the transformer passes of `denoise`)."""
    times: list[float] = []

    def hook(*_):
        sync(device)
        times.append(time.perf_counter())

    handle = module.register_forward_pre_hook(hook)
    try:
        yield times
    finally:
        handle.remove()


def error(e: BaseException) -> str:
    """Log the whole traceback; the first line of the error, for a result record."""
    log.error("%s", "".join(traceback.format_exception(e)))
    text = f"{type(e).__name__}: {e}".splitlines()[0]
    return text[:300]


def fmt(value, spec: str = ".2f", none: str = "n/a") -> str:
    return none if value is None else format(value, spec)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu-{platform.machine()}"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def start(device_arg: str, matmul_size: int) -> tuple[torch.device, str, dict, datetime.datetime]:
    """(device, its name, its measured bf16 matmul peak, the run's UTC start time)."""
    device = resolve_device(device_arg)
    name = device_name(device)
    log.info("device %s; measuring the matmul peak", name)
    peak = matmul_peak(device, torch.bfloat16, matmul_size)
    free(device)
    return device, name, peak, datetime.datetime.now(datetime.UTC)


# ----------------------------------------------------------------------------- the model


def init_parameters(model: torch.nn.Module, seed: int) -> None:
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
def build_transformer(
    model_cls: type, config: dict, device: torch.device, dtype: torch.dtype, seed: int = 0
) -> torch.nn.Module:
    """`model_cls.from_config(config)` with random weights in `dtype`, allocated only on `device`
    (meta first: no fp32 copy anywhere)."""
    with accelerate.init_empty_weights():  # parameters on meta; buffers (the RoPE tables) stay real
        model = model_cls.from_config(config)
    model.to(dtype)  # all in `dtype`; the few fp32 modules of a real checkpoint barely change speed
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    model.to_empty(device=device)
    for name, b in model.named_buffers():
        b.copy_(buffers[name])
    init_parameters(model, seed)
    return model.eval()


def count_parameters(model_cls: type, config: dict) -> int:
    with accelerate.init_empty_weights():  # on meta: no memory
        return sum(p.numel() for p in model_cls.from_config(config).parameters())


# ----------------------------------------------------------------------------- the project's code, timed


def time_training(
    transformer, sample: dict, settings: tr.TrainSettings, device: torch.device, warmup: int, family: Family
) -> dict:
    """The project's `training.train` loop; per-step seconds from its history (each step ends in a
    host read of the loss, so it is synchronised)."""
    sync(device)
    reset_peak(device)
    with tempfile.TemporaryDirectory() as out_dir:
        history = tr.train(transformer, [sample], settings, device, out_dir, progress=False, family=family)
    seconds = [h["seconds"] for h in history]
    return {
        "seconds_per_step": statistics.median(seconds[warmup:]),
        "first_step_seconds": seconds[0],
        "step_seconds": seconds[warmup:],
        **peak_memory(device),
    }


def time_inference(
    models: Models,
    condition: torch.Tensor,
    text: dict,
    negative: dict | None,
    settings: inf.InferSettings,
    device: torch.device,
    warmup: int,
) -> dict:
    """The project's `inference.denoise` (`text` / `negative`: the family's `encode_text` dicts); a
    step = its transformer passes (2 with guidance), split by a synchronising forward pre-hook."""
    transformer = models.transformers[0]
    passes = 2 if settings.guidance_scale > 1.0 and negative is not None else 1
    sync(device)
    reset_peak(device)
    with forward_starts(transformer, device) as starts:
        inf.denoise(models, condition, text, negative, settings, device, progress=False)
        sync(device)
        starts.append(time.perf_counter())
    if len(starts) != passes * settings.num_steps + 1:
        raise RuntimeError(f"denoise ran {len(starts) - 1} transformer passes, expected {passes * settings.num_steps}")
    steps = [starts[(i + 1) * passes] - starts[i * passes] for i in range(settings.num_steps)]
    return {
        "seconds_per_step": statistics.median(steps[warmup:]),
        "first_step_seconds": steps[0],
        "step_seconds": steps[warmup:],
        "transformer_passes_per_step": passes,
        **peak_memory(device),
    }


def time_vae(
    vae,
    family: Family,
    frames: int,
    height: int,
    width: int,
    device: torch.device,
    repeats: int,
    tilings: tuple[bool, ...] = (False, True),
) -> list[dict]:
    """The family's `encode_video` / `decode_latents` of one random clip, untiled and/or tiled."""
    g = torch.Generator().manual_seed(0)
    video = (torch.rand(1, 3, frames, height, width, generator=g) * 2 - 1).to(device)  # (1, 3, T, H, W)
    records = []
    for use_tiling in tilings:
        vae.enable_tiling() if use_tiling else vae.disable_tiling()
        latents = None
        for op in ("encode", "decode"):
            record = {"section": "vae", "op": op, "tiled": use_tiling, "frames": frames}
            try:
                if op == "encode":
                    record.update(timed(lambda: family.encode_video(vae, video), device, 1, repeats))
                    latents = family.encode_video(vae, video)
                else:
                    if latents is None:
                        raise RuntimeError("no latents: the encode failed")
                    record.update(timed(lambda z=latents: family.decode_latents(vae, z), device, 1, repeats))
            except Exception as e:  # noqa: BLE001 - keep measuring the rest; the failure is reported
                record["error"] = error(e)
            records.append(record)
            free(device)
    vae.disable_tiling()
    return records


# ----------------------------------------------------------------------------- command line


def preset_help(presets: dict, key: str) -> str:
    """An argument's help: each preset's value of `key`."""

    def show(value) -> str:
        return " ".join(map(str, value)) if isinstance(value, list) else str(value)

    return "default: " + "; ".join(f"{name} {show(values[key])}" for name, values in presets.items())


def argument_parser(doc: str, presets: dict, default_config: str, config_help: str) -> argparse.ArgumentParser:
    """A parser with `--config` (a key of `presets`) and the arguments every benchmark takes. Leave
    a preset's keys without a default (None): `parse_args` fills them from the chosen preset."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", choices=sorted(presets), default=default_config, help=config_help)
    p.add_argument("--train-frames", nargs="+", type=int, help=preset_help(presets, "train_frames"))
    p.add_argument("--infer-frames", type=int, help=preset_help(presets, "infer_frames"))
    p.add_argument("--height", type=int, help=preset_help(presets, "height"))
    p.add_argument("--width", type=int, help=preset_help(presets, "width"))
    p.add_argument("--matmul-size", type=int, help=preset_help(presets, "matmul_size"))
    p.add_argument("--warmup", type=int, default=2, help="training steps not timed")
    p.add_argument("--steps", type=int, default=10, help="timed training steps (median)")
    p.add_argument("--infer-warmup", type=int, default=1)
    p.add_argument("--infer-steps", type=int, default=10, help="timed guided denoising steps (median)")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--vae-repeats", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    return p


def parse_args(parser: argparse.ArgumentParser, argv: list[str], presets: dict) -> argparse.Namespace:
    """Parse `argv`; every argument left unset (None) takes the `--config` preset's value."""
    args = parser.parse_args(argv)
    for key, value in presets[args.config].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.warmup < 1 or args.steps < 1 or args.infer_steps < 1:
        parser.error("--warmup, --steps and --infer-steps must be >= 1")
    return args


# ----------------------------------------------------------------------------- results


def default_stem(device: str, now: datetime.datetime, suffix: str = "") -> str:
    """A result's file name without extension when `--name` is not given: `<device>-<date><suffix>`."""
    return f"{slug(device)}-{now.date().isoformat()}{suffix}"


def result_paths(out_dir: Path, stem: str) -> dict[str, Path]:
    return {"json": Path(out_dir) / f"{stem}.json", "markdown": Path(out_dir) / f"{stem}.md"}


def write_result(paths: dict[str, Path], result: dict, markdown: str) -> dict:
    """Write the JSON and the Markdown; the result with `paths` (as strings) added."""
    write_json(paths["json"], result)
    write_text(paths["markdown"], markdown)
    log.info("wrote %s and %s", paths["json"], paths["markdown"])
    return dict(result, paths={key: str(path) for key, path in paths.items()})


def report(outcome: dict) -> int:
    """A script's end: print the Markdown; exit status 1 if any measurement failed (it is in the files)."""
    print(Path(outcome["paths"]["markdown"]).read_text())
    return 1 if any("error" in r for r in outcome["records"]) else 0
