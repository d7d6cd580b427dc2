"""Pretrain the toy Wan2.1-I2V model on the toy world, by one resumable command.

    loraedit toy pretrain --out models/toy-wan2.1-i2v --work results/toy_pretrain --threads 2

Stages (each resumes from its checkpoint under --work; run the same command again to go on):
1. vae: `toy.vae` recipe, frames rendered from the step number (16x16 crops of 9 frames);
1b. vae whole clips: the whole VAE on whole 17x64x64 clips, at a lower learning rate;
2. stats: per-channel latent mean/std (written into the VAE config as latents_mean/latents_std);
3. cache: latents, stock first-frame conditions, caption and CLIP embeddings of the training clips;
4. transformer: plain I2V flow matching (`toy.i2v`);
5. export: the diffusers folder layout of Wan2.1-I2V-14B-480P-Diffusers (model_index.json,
   transformer/, vae/, text_encoder/, tokenizer/, image_encoder/, image_processor/, scheduler/),
   plus pretrain/ (command, recipes, loss logs) and SHA256SUMS.
`--max-minutes` stops cleanly after a checkpoint so a long CPU run can be split over sittings.
`--device cuda` trains and encodes on a GPU (deterministic kernels asked for; the random draws of
every batch are made on the CPU, so they do not depend on the device), `--workers N` renders the
VAE's batches and the cache's clips in N processes, and `--vae-from MODEL` starts from an exported
model's VAE (its weights, loss logs and latent statistics) and runs stages 3-5 only: a new
transformer on the same VAE (`benchmarks/toy_pretrain_gpu.sh` does this on one GPU).
`--continue-from MODEL` goes on training an exported model's transformer (same VAE, same
architecture) under a new schedule (`--i2v` steps, lr, clips...): a CPU run can thus add steps to a
finished model instead of starting over. Its batches follow the model's own (step numbers go on
from its last step), and the export's loss log and step seconds hold both runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from diffusers import AutoencoderKLWan, WanImageToVideoPipeline, WanTransformer3DModel

from ..atomic import atomic_path, write_json, write_text
from ..commands import command_parser
from . import i2v as toy_i2v
from . import vae as toy_vae
from .loop import step_batches, train_loop

log = logging.getLogger("loraedit.toy.pretrain")
STATS_CLIPS = 64
SHARD = 64  # clips per cache shard
VAE_FILES = ("vae_loss.csv", "vae_whole_loss.csv", "latent_stats.json")  # what --vae-from takes besides the weights
EARLIER_LOG = "transformer_earlier_loss.csv"  # --continue-from: the continued model's transformer log


def vae_stage(work: Path, recipe: toy_vae.VaeRecipe, deadline: float | None, device: torch.device, workers: int):
    vae = toy_vae.build_vae(recipe).to(device)
    done = train_loop(
        vae,
        lambda x: toy_vae.vae_loss(vae, x, recipe),
        lambda step: toy_vae.batch_at(step, recipe),
        steps=recipe.steps,
        lr=recipe.lr,
        warmup=recipe.warmup,
        min_lr_ratio=recipe.min_lr_ratio,
        ckpt=work / "vae.pt",
        log_csv=work / "vae_loss.csv",
        deadline=deadline,
        workers=workers,
    )
    return vae if done else None


def whole_clip_stage(work: Path, vae, recipe: toy_vae.VaeRecipe, deadline: float | None, workers: int) -> bool:
    """Stage 1b: fine-tune the whole VAE on whole clips (the latent statistics are taken after it)."""
    whole = toy_vae.whole_clip_recipe(recipe)
    done = train_loop(
        vae,
        lambda x: toy_vae.vae_loss(vae, x, recipe),
        lambda step: toy_vae.batch_at(recipe.steps + step, whole),
        steps=recipe.whole_steps,
        lr=recipe.whole_lr,
        warmup=20,
        min_lr_ratio=recipe.min_lr_ratio,
        ckpt=work / "vae_whole.pt",
        log_csv=work / "vae_whole_loss.csv",
        deadline=deadline,
        workers=workers,
    )
    vae.requires_grad_(False)
    return done


def vae_from_model(work: Path, model: Path, device: torch.device) -> tuple[AutoencoderKLWan, dict]:
    """The VAE of an exported model (stages 1, 1b and 2 done): its weights, and its loss logs and
    latent statistics copied into `work` (the new export carries them). Returns (vae, its recipe)."""
    needed = [model / "pretrain" / name for name in (*VAE_FILES, "recipe.json")] + [model / "vae"]
    missing = [str(path) for path in needed if not path.exists()]
    if missing:
        raise ValueError(f"--vae-from {model}: not an exported toy model (missing {', '.join(missing)})")
    for name in VAE_FILES:
        shutil.copy(model / "pretrain" / name, work / name)
    vae = AutoencoderKLWan.from_pretrained(model / "vae", torch_dtype=torch.float32).to(device)
    vae.requires_grad_(False).eval()
    return vae, json.loads((model / "pretrain" / "recipe.json").read_text())["vae"]


def stats_stage(work: Path, vae) -> None:
    path = work / "latent_stats.json"
    if not path.exists():
        videos = toy_vae.heldout_videos(toy_vae.VAE_SEED_BASE - 1, STATS_CLIPS)  # a seed no other stage uses
        mean, std = toy_vae.latent_stats(vae, videos)
        write_json(path, {"latents_mean": mean, "latents_std": std})
    vae.register_to_config(**json.loads(path.read_text()))


def cache_stage(
    work: Path, pipe: WanImageToVideoPipeline, clips: int, deadline: float | None, workers: int = 0
) -> dict | None:
    """Encode the training clips in shards of SHARD (each written atomically); returns the stacked cache (CPU)."""
    shards = []
    for first in range(0, clips, SHARD):
        path = work / "cache" / f"shard_{first:06d}.pt"
        if not path.exists():
            if deadline is not None and time.time() > deadline:
                return None
            clips_ahead = step_batches(toy_i2v.training_clip, first, min(clips, first + SHARD), workers)
            items = [toy_i2v.encode_clip(pipe, *clip) for clip in clips_ahead]
            with atomic_path(path) as tmp:
                torch.save({k: torch.stack([it[k] for it in items]) for k in items[0]}, tmp)
            log.info("cached clips %d..%d", first, first + len(items) - 1)
        shards.append(torch.load(path))
    return {k: torch.cat([s[k] for s in shards]) for k in shards[0]}


def _as_json(value):
    return json.loads(json.dumps(value))  # tuples in code, lists in config.json


def continued_transformer(work: Path, model: Path, recipe: toy_i2v.I2VRecipe):
    """--continue-from: (the exported transformer, its last step, its recipe); its loss log is copied
    into `work`. The recipe must build the same architecture (else a one-line error)."""
    earlier = json.loads((model / "pretrain" / "recipe.json").read_text())
    old = WanTransformer3DModel.from_pretrained(model / "transformer", torch_dtype=torch.float32)
    new_config = toy_i2v.build_transformer(recipe).config
    differ = sorted(
        k for k in new_config if not k.startswith("_") and _as_json(new_config[k]) != _as_json(old.config.get(k))
    )
    if differ:
        raise ValueError(f"--continue-from {model}: --i2v builds another architecture ({', '.join(differ)} differ)")
    shutil.copy(model / "pretrain" / "transformer_loss.csv", work / EARLIER_LOG)
    steps_before = int(pd.read_csv(work / EARLIER_LOG)["step"].max())
    return old, steps_before, earlier


def transformer_stage(
    work: Path,
    recipe: toy_i2v.I2VRecipe,
    cache: dict,
    empty: torch.Tensor,
    deadline: float | None,
    device: torch.device,
    init=None,
    step_offset: int = 0,
):
    """Stage 4; `init` (a transformer of the recipe's architecture) and `step_offset` (the steps it
    was trained for) continue a model."""
    model = (toy_i2v.build_transformer(recipe) if init is None else init).to(device)
    cache = {k: v.to(device) for k, v in cache.items()}  # batches are gathered where the model is
    done = train_loop(
        model,
        lambda batch: toy_i2v.i2v_loss(model, *batch),
        lambda step: toy_i2v.batch_at(step_offset + step, cache, empty, recipe.batch),
        steps=recipe.steps,
        lr=recipe.lr,
        warmup=recipe.warmup,
        min_lr_ratio=recipe.min_lr_ratio,
        ckpt=work / "transformer.pt",
        log_csv=work / "transformer_loss.csv",
        deadline=deadline,
    )
    return model if done else None


def stage_log(work: Path, name: str) -> pd.DataFrame:
    """A stage's loss log; the transformer's after --continue-from: the continued model's rows, then
    this run's with their step numbers going on from its last step."""
    steps = pd.read_csv(work / f"{name}_loss.csv")
    if name != "transformer" or not (work / EARLIER_LOG).exists():
        return steps
    earlier = pd.read_csv(work / EARLIER_LOG)
    return pd.concat([earlier, steps.assign(step=steps["step"] + int(earlier["step"].max()))], ignore_index=True)


def stage_times(work: Path) -> tuple[dict[str, float], dict[str, list[int]], dict[str, list[str]]]:
    """Per stage, over all sittings (from the loss logs; encoding not included): the summed step
    seconds, the torch thread counts and the devices the steps ran on (logs from before devices
    were logged ran on the CPU)."""
    seconds, threads, devices = {}, {}, {}
    for name in ("vae", "vae_whole", "transformer"):
        csv = work / f"{name}_loss.csv"
        steps = stage_log(work, name)
        if "threads" not in steps or steps["threads"].isna().any():
            raise ValueError(
                f"{csv}: rows without a 'threads' count (a log from before thread counts were "
                "logged); start a new --work folder"
            )
        seconds[name] = round(float(steps["seconds"].sum()), 1)
        threads[name] = sorted(int(n) for n in steps["threads"].unique())
        devices[name] = sorted(steps["device"].fillna("cpu").unique()) if "device" in steps else ["cpu"]
    return seconds, threads, devices


def sha256_lines(folder: Path) -> str:
    lines = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "SHA256SUMS"):
        lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.relative_to(folder)}")
    return "\n".join(lines) + "\n"


def drop_load_paths(folder: Path) -> None:
    """Components loaded from a folder (--vae-from, --continue-from) save its path as `_name_or_path`;
    the export is a model of its own, so its configs name no folder."""
    for path in folder.glob("*/config.json"):
        config = json.loads(path.read_text())
        if config.pop("_name_or_path", None) is not None:
            write_json(path, config)


def export(out: Path, work: Path, pipe: WanImageToVideoPipeline, transformer, meta: dict) -> None:
    full = WanImageToVideoPipeline(
        tokenizer=pipe.tokenizer,
        text_encoder=pipe.text_encoder,
        vae=pipe.vae,
        scheduler=pipe.scheduler,
        transformer=transformer,
        image_encoder=pipe.image_encoder,
        image_processor=pipe.image_processor,
    )
    with atomic_path(out, is_dir=True) as tmp:
        full.to("cpu").save_pretrained(tmp, safe_serialization=True)
        drop_load_paths(tmp)
        (tmp / "pretrain").mkdir()
        for name in VAE_FILES:
            shutil.copy(work / name, tmp / "pretrain" / name)
        write_text(tmp / "pretrain" / "transformer_loss.csv", stage_log(work, "transformer").to_csv(index=False))
        write_json(tmp / "pretrain" / "recipe.json", meta)
        write_text(tmp / "SHA256SUMS", sha256_lines(tmp))


def parse_args(argv):
    ap = command_parser(
        "loraedit toy pretrain",
        __doc__.split("\n")[0],
        "loraedit toy pretrain --out models/toy-wan2.1-i2v --work results/toy_pretrain --threads 2",
    )
    ap.add_argument("--out", default="models/toy-wan2.1-i2v")
    ap.add_argument("--work", default="results/toy_pretrain")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--workers", type=int, default=0, help="processes that render batches and clips ahead (0: none)")
    ap.add_argument(
        "--vae-from",
        type=Path,
        default=None,
        help="an exported toy model whose VAE to keep (stages 1, 1b and 2 are skipped)",
    )
    ap.add_argument(
        "--continue-from",
        type=Path,
        default=None,
        help="an exported toy model whose transformer to train on (implies --vae-from it)",
    )
    ap.add_argument(
        "--max-minutes", type=float, default=None, help="stop after a checkpoint past this; rerun to resume"
    )
    ap.add_argument("--vae", type=json.loads, default={}, help="VaeRecipe overrides, JSON (e.g. '{\"steps\": 10}')")
    ap.add_argument("--i2v", type=json.loads, default={}, help="I2VRecipe overrides, JSON")
    return ap.parse_args(argv)


def torch_device(name: str) -> torch.device:
    """The training device; on CUDA, deterministic kernels where PyTorch has them (a resumed run on
    the same GPU model then matches an unbroken one, as on the CPU)."""
    if name == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device here (torch.cuda.is_available() is False)")
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before the first cuBLAS call
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.device(name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    device = torch_device(args.device)
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    deadline = None if args.max_minutes is None else time.time() + 60 * args.max_minutes
    i2v_recipe = toy_i2v.I2VRecipe(**args.i2v)
    if args.continue_from is not None:
        if args.vae_from not in (None, args.continue_from):
            raise SystemExit("--continue-from MODEL keeps MODEL's VAE; drop --vae-from or give the same folder")
        args.vae_from = args.continue_from
    init, step_offset, earlier = None, 0, None
    if args.vae_from is not None:
        try:
            vae, vae_meta = vae_from_model(work, args.vae_from, device)
            if args.continue_from is not None:
                init, step_offset, earlier = continued_transformer(work, args.continue_from, i2v_recipe)
        except ValueError as err:
            raise SystemExit(str(err)) from None
    else:
        vae_recipe = toy_vae.VaeRecipe(**args.vae)
        vae = vae_stage(work, vae_recipe, deadline, device, args.workers)
        if vae is None:
            log.info("paused in the VAE stage; run the same command again to resume")
            return 3
        if not whole_clip_stage(work, vae, vae_recipe, deadline, args.workers):
            log.info("paused in the VAE's whole-clip stage; run the same command again to resume")
            return 3
        stats_stage(work, vae)
        vae_meta = dataclasses.asdict(vae_recipe)
    pipe = toy_i2v.encoder_pipeline(vae).to(device)
    cache = cache_stage(work, pipe, i2v_recipe.clips, deadline, args.workers)
    transformer = (
        None
        if cache is None
        else transformer_stage(work, i2v_recipe, cache, toy_i2v.empty_prompt(pipe), deadline, device, init, step_offset)
    )
    if transformer is None:
        log.info("paused before the transformer finished; run the same command again to resume")
        return 3
    seconds, threads, devices = stage_times(work)
    meta = {
        "command": "loraedit toy pretrain " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "threads": threads,
        "devices": devices,
        "vae": vae_meta,
        "transformer": dataclasses.asdict(i2v_recipe),
        "torch": torch.__version__,
        "step_seconds": seconds,
    }
    if args.vae_from is not None:
        meta["vae_from"] = str(args.vae_from)
    if earlier is not None:  # the time and schedule of the steps before this run
        meta["continued_from"] = {
            "model": str(args.continue_from),
            "steps_before": step_offset,
            "transformer": earlier["transformer"],
            "continued_from": earlier.get("continued_from"),
        }
    if device.type == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(device)
    export(out, work, pipe, transformer, meta)
    log.info("wrote %s", out)
    return 0
