"""`loraedit check`: the run that a config and a profile would start, checked in seconds, before any GPU time.

The config is read as Snakemake reads it (the Snakefile's own config/config.yaml, then every
--configfile merged on top, then the profile's `config:` entries), validated against
config/config.schema.yaml, with model.path resolved as rules/common.smk resolves it. Then:

- the sample sheet (every bad row, and every row whose masks the `masks` config cannot make);
- every model the run will load, as a local folder or a hub id in the local Hugging Face cache
  (never downloaded): a diffusers pipeline's model_index.json and its components, a transformers
  checkpoint's config.json and weights; SAM only for rows masked by SAM, Florence-2 only when a
  row has no prompt, DeQA / Q-Align only when the `score` config asks for them;
- free disk for the outputs, ffmpeg, and the GPUs with the memory mode and estimated peak of the
  training and inference jobs (the transformer built on the meta device, `memory.plan.choose`).

It prints the plan: clips x methods, jobs per rule, GPU hours from the committed benchmark. Every
problem is one line naming the config key or the file; the exit status is 1 if there is any.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from .commands import command_parser
from .variants import clip_variants, mask_mode_problems, prior_settings, train_settings, uses_prior

GB = 1e9
OUT = "results"  # rules/common.smk: OUT
SCHEMA = Path("config") / "config.schema.yaml"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spiece.model", "vocab.json")

# Bytes on disk per pixel and frame. PNG of natural frames keeps one half to three quarters of the
# raw RGB (the upper end is taken); masks are two-valued and compress to almost nothing; the mp4s
# are H.264 at crf 18 (video_io.write_mp4), well under 0.05 bytes per pixel.
PNG_RGB = 3 * 0.75
PNG_MASK = 0.05
MP4 = 0.05
TEXT_TOKENS = 512  # prompt embedding rows cached per training sample (Wan pads UMT5 to 512)
LORA_COPIES = 2  # the diffusers file and the family's original-key copy (lora_io.save_lora)

# rules/*.smk, in DAG order; rules without a `resources:` block run with the profile's defaults.
RULES = (
    "demo_data",
    "prepare",
    "caption",
    "masks",
    "masks_sam",
    "train_prior",
    "train_lora",
    "infer",
    "composite",
    "score",
    "side_by_side",
    "aggregate",
    "bar_charts",
)
# The transformer configs the families know, for a memory estimate before the checkpoint is downloaded.
KNOWN_CONFIGS = {
    "wan2.1-i2v-480p": ("flops", "WAN21_I2V_14B_CONFIG", "WanTransformer3DModel"),
    "wan2.1-i2v-720p": ("flops", "WAN21_I2V_14B_CONFIG", "WanTransformer3DModel"),
    "hunyuanvideo-i2v": ("loader", "I2V_33CH_CONFIG", "HunyuanVideoTransformer3DModel"),
}
RESOURCED = {"prepare", "caption", "masks", "masks_sam", "train_prior", "train_lora", "infer", "score", "aggregate"}


class CheckError(Exception):
    """Problems that leave nothing else to check (an unreadable or invalid config)."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclasses.dataclass
class Run:
    workflow: Path
    workdir: Path
    config: dict
    configfiles: list[Path]
    profile: dict


@dataclasses.dataclass(frozen=True)
class Clip:
    clip_id: str
    refs: int = 0  # extra edited frames (mask+ref applies)
    sam: str | None = None  # sam2 / sam3 when its masks come from SAM
    captions: bool = False  # Florence-2 captions one of its images (a prompt cell is empty)
    gt: bool = False


@dataclasses.dataclass
class Report:
    lines: list[str] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)

    def line(self, text: str) -> None:
        self.lines.append(text)

    def problem(self, text: str) -> None:
        self.problems.append(" ".join(str(text).split()))  # one line, whatever the source wrote


@dataclasses.dataclass
class Transformer:
    """What the memory and disk estimates need of the configured transformer(s)."""

    modules: list  # built on the meta device (real for the tiny backends), LoRA attached
    source: str  # where its config came from
    sizes: object  # memory.plan.ModelSizes of one expert
    patch: tuple[int, int, int]
    in_channels: int
    text_dim: int
    dtype_bytes: int  # of the frozen weights (model.dtype as the job resolves it)


# ----------------------------------------------------------------------------- config


def read_yaml(path: Path, what: str) -> dict:
    if not path.is_file():
        raise CheckError([f"{what}: {path}: not found"])
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise CheckError([f"{what}: {path}: not valid YAML ({' '.join(str(err).split())})"]) from None
    if not isinstance(data, dict):
        raise CheckError([f"{what}: {path}: not a mapping of keys"])
    return data


def as_list(value) -> list:
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def load_profile(name: str | None, workflow: Path) -> dict:
    """The profile's settings: a folder as given, or one under the workflow's profiles/."""
    if not name:
        return {}
    for folder in (Path(name), workflow / name, workflow / "profiles" / name):
        for file in ("config.v8+.yaml", "config.yaml"):
            if (folder / file).is_file():
                return read_yaml(folder / file, "--profile")
    raise CheckError([f"--profile: {name}: no config.v8+.yaml or config.yaml there"])


def schema_problems(config: dict, schema_path: Path) -> list[str]:
    import jsonschema

    schema = yaml.safe_load(schema_path.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{'.'.join(str(p) for p in e.absolute_path) or 'config'}: {e.message} ({SCHEMA})" for e in errors]


def load_run(args) -> Run:
    """The config Snakemake would build: the Snakefile's configfile, --configfile files, the profile's config."""
    from snakemake.utils import update_config

    workflow = Path(args.workflow).resolve()
    if not (workflow / "Snakefile").is_file():
        raise CheckError([f"--workflow: {workflow / 'Snakefile'}: not found"])
    profile = load_profile(args.profile, workflow)
    files = args.configfile or as_list(profile.get("configfile") or profile.get("configfiles"))
    configfiles = [workflow / "config" / "config.yaml", *(Path(f).resolve() for f in files)]
    config: dict = {}
    for path in configfiles:
        update_config(config, read_yaml(path, "--configfile"))
    if profile.get("config"):
        from snakemake.cli import parse_config  # slow to import: only for a profile that sets config

        try:
            update_config(config, parse_config(as_list(profile["config"])))
        except ValueError as err:
            raise CheckError([f"--profile: config: {err}"]) from None
    problems = schema_problems(config, workflow / SCHEMA)
    if problems:
        raise CheckError(problems)
    workdir = Path(args.directory or profile.get("directory") or ".").resolve()
    return Run(workflow, workdir, config, configfiles, profile)


def resolve(run: Run, path: str) -> Path:
    p = Path(os.path.expanduser(str(path)))
    return p if p.is_absolute() else run.workdir / p


def model_ref(run: Run, spec) -> str:
    """model.path (or the backend's hub id), with rules/common.smk's fallback to the workflow's folder."""
    path = run.config["model"].get("path")
    if path and not os.path.isabs(path) and not resolve(run, path).exists() and (run.workflow / path).is_dir():
        return str(run.workflow / path)
    return path or spec.default_path


# ----------------------------------------------------------------------------- sheet


def demo_has_refs(demo: dict, index: int) -> bool:
    """Whether demo clip `index` gets an extra edited frame (scripts/demo_data.py's datasets)."""
    if demo.get("world", "toy") != "toy":
        from .toy.demo import SPECS

        return SPECS[index % len(SPECS)].extra_edit
    from .toy.data import clip_kind
    from .toy.world import scene_for

    kind = clip_kind(index, demo.get("odd_clips", "object"))
    if kind == "any":  # a random scene: a two-sided target shows its back side in a later frame
        scene = scene_for(demo.get("seed", 0), index)
        return scene.objects[scene.target].two_sided
    return kind == "card"


def demo_clips(config: dict, report: Report) -> list[Clip]:
    from .masks import masks_config

    demo = config.get("demo", {})
    source = masks_config(config.get("masks"))["source"]
    sam = source if source in ("sam2", "sam3") else None  # demo rows carry mask files, no SAM inputs
    clips = [Clip(f"demo{i}", int(demo_has_refs(demo, i)), sam) for i in range(int(demo.get("num_clips", 3)))]
    report.line(
        f"sheet: generated by the workflow (demo.enabled, {demo.get('world', 'toy')} world): {len(clips)} "
        f"clips, {sum(c.refs > 0 for c in clips)} with an extra edited frame"
    )
    return clips


def clip_of(row: dict, masks: dict) -> Clip:
    from .errors import ClipError
    from .masks import choose_source

    try:
        source = choose_source(masks["source"], row, row.get("mask"), row["clip_id"], bool(masks["allow_flow"]))
    except ClipError:
        source = None  # reported by sheet_source_problems
    return Clip(
        row["clip_id"],
        len(row.get("extra_edits") or {}),
        source if source in ("sam2", "sam3") else None,
        row.get("prompt") is None or row.get("source_prompt") is None,
        bool(row.get("gt_video")),
    )


def sheet_clips(run: Run, report: Report) -> list[Clip] | None:
    """The clips of the run; None when the sheet cannot be read (its problems are reported)."""
    if run.config.get("demo", {}).get("enabled", False):
        return demo_clips(run.config, report)
    from .errors import SheetError
    from .masks import masks_config, sheet_source_problems
    from .sheet.samples import load_samples, sample_row

    sheet = resolve(run, run.config["samples"])
    try:
        samples = load_samples(sheet)
    except SheetError as err:
        for p in err.problems:
            report.problem(f"samples: {p}" if p.startswith(str(sheet)) else f"samples: {sheet}: {p}")
        return None
    rows = [{**sample_row(samples, clip), "clip_id": clip} for clip in samples.index]
    for p in sheet_source_problems(rows, run.config.get("masks")):
        report.problem(f"samples: {sheet}: {p}")
    clips = [clip_of(row, masks_config(run.config.get("masks"))) for row in rows]
    report.line(
        f"sheet: {sheet}: {len(clips)} clips, {sum(c.refs > 0 for c in clips)} with extra edited frames, "
        f"{sum(c.sam is not None for c in clips)} masked by SAM"
    )
    return clips


# ----------------------------------------------------------------------------- models


def hf_cache_dir() -> Path:
    """The hub cache a job would read, from the environment now (huggingface_hub reads it at import)."""
    env = os.environ
    if env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE"):
        return Path(env.get("HF_HUB_CACHE") or env["HUGGINGFACE_HUB_CACHE"]).expanduser()
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def cached_snapshot(repo: str, probe: str) -> Path | None:
    """The snapshot folder of `repo` when `probe` is in the local cache (offline: nothing is downloaded)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, probe, cache_dir=hf_cache_dir())
    return Path(found).parent if isinstance(found, str) else None


def locate(run: Run, key: str, ref: str, probe: str, report: Report) -> Path | None:
    """A model as a folder: the local folder, or the hub id's snapshot in the local cache."""
    path = resolve(run, ref)
    if path.exists():
        if path.is_dir():
            return path
        report.problem(f"{key}: {path}: not a folder")
        return None
    if not HUB_ID.match(ref) or resolve(run, ref.split("/")[0]).is_dir():
        report.problem(f"{key}: {path}: not found")
        return None
    snapshot = cached_snapshot(ref, probe)
    if snapshot is None:
        partial = (hf_cache_dir() / f"models--{ref.replace('/', '--')}").is_dir()
        why = f"cached without {probe} (an interrupted download?)" if partial else "not in the local Hugging Face cache"
        report.problem(f"{key}: {ref}: {why} (download it first: hf download {ref})")
    return snapshot


def weight_problem(folder: Path) -> str | None:
    """None when `folder` holds weights: *.safetensors (or *.bin), or an index whose shards all exist."""
    indexes = sorted(folder.glob("*.index.json"))
    for index in indexes:
        try:
            shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
        except (OSError, ValueError):
            return f"{index.name} is not readable JSON"
        missing = sorted(s for s in shards if not (folder / s).exists())
        if missing:
            return f"{index.name} names {len(missing)} missing shard(s), e.g. {missing[0]}"
    weights = [p for pattern in ("*.safetensors", "*.bin") for p in folder.glob(pattern) if p.exists()]
    return None if indexes or weights else "has no *.safetensors"


def files_needed(cls: str) -> tuple[str, ...] | None:
    """The files a non-model pipeline component needs (any one of them); None for a model."""
    if "Scheduler" in cls:
        return ("scheduler_config.json",)
    if "Tokenizer" in cls:
        return TOKENIZER_FILES
    if "Processor" in cls or "FeatureExtractor" in cls:
        return PROCESSOR_FILES
    return None


def component_problem(folder: Path, name: str, cls: str) -> str | None:
    sub = folder / name
    if not sub.is_dir():
        return f"{name}/ not found"
    needed = files_needed(cls)
    if needed is not None:
        return None if any((sub / f).exists() for f in needed) else f"{name}/ has none of {', '.join(needed)}"
    if not (sub / "config.json").is_file():
        return f"{name}/config.json not found"
    problem = weight_problem(sub)
    return None if problem is None else f"{name}/ {problem}"


def pipeline_problems(key: str, folder: Path, experts: tuple[str, ...]) -> list[str]:
    """A diffusers pipeline folder: model_index.json, each component it names, and the transformer(s)
    (required even where the index says null: the loaders read them on their own)."""
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        return [f"{key}: {folder}: no model_index.json (not a diffusers pipeline folder)"]
    try:
        index = json.loads(index_path.read_text())
    except ValueError as err:
        return [f"{key}: {index_path}: not valid JSON ({err})"]
    components = {
        name: v[1]
        for name, v in index.items()
        if not name.startswith("_") and isinstance(v, list) and len(v) == 2 and v[0] and v[1]
    }
    components.update({name: components.get(name, "Transformer") for name in experts})
    found = (component_problem(folder, name, cls) for name, cls in sorted(components.items()))
    return [f"{key}: {folder}: {p}" for p in found if p]


def transformers_problems(key: str, folder: Path, processor: bool) -> list[str]:
    """A transformers checkpoint: config.json, weights and (when loaded with one) a processor."""
    problems = [] if (folder / "config.json").is_file() else ["config.json not found"]
    weights = weight_problem(folder)
    problems += [weights] if weights else []
    if processor and not any((folder / f).exists() for f in PROCESSOR_FILES):
        problems.append(f"has none of {', '.join(PROCESSOR_FILES)}")
    return [f"{key}: {folder}: {p}" for p in problems]


def check_transformers_model(run: Run, key: str, ref: str, report: Report, processor: bool = True) -> None:
    if ref == "tiny":
        report.line(f"{key}: tiny (built offline)")
        return
    folder = locate(run, key, ref, "config.json", report)
    if folder is None:
        return
    problems = transformers_problems(key, folder, processor)
    for p in problems:
        report.problem(p)
    report.line(f"{key}: {ref}" + ("" if str(folder) == ref else f" -> {folder}") + ("" if problems else ": ok"))


def family_module(spec, name: str):
    """A module of the backend's family package, imported by name as the registry imports families (so
    that this module links to neither family)."""
    from .backends.registry import FAMILIES

    return importlib.import_module(f"{FAMILIES[spec.family]}.{name}")


def hunyuan_problem(key: str, folder: Path, spec) -> str | None:
    """The token_replace release has no channel for LoRA-Edit's mask: refused by the loader too."""
    config_path = folder / "transformer" / "config.json"
    if not config_path.is_file():
        return None  # reported by pipeline_problems
    try:
        family_module(spec, "loader").check_condition_type(json.loads(config_path.read_text()), f"{key}: {folder}")
    except ValueError as err:
        return str(err)
    return None


def check_backend(run: Run, spec, report: Report) -> Path | None:
    """The base model's checkpoint folder (None: tiny, or not usable)."""
    if spec.tiny:
        report.line(f"model: {spec.name}: built offline (no weights)")
        return None
    ref = model_ref(run, spec)
    folder = locate(run, "model.path", ref, "model_index.json", report)
    if folder is None:
        return None
    problems = pipeline_problems("model.path", folder, spec.experts)
    if spec.family == "hunyuan" and (problem := hunyuan_problem("model.path", folder, spec)):
        problems.append(problem)
    for p in problems:
        report.problem(p)
    where = "" if str(folder) == ref else f" -> {folder}"
    report.line(f"model.path: {ref}{where} ({spec.name}): " + ("ok" if not problems else "see problems"))
    return None if problems else folder


def check_caption(run: Run, clips: list[Clip] | None, report: Report) -> None:
    from .caption import DEFAULT_MODEL

    ref = str((run.config.get("caption") or {}).get("model", DEFAULT_MODEL))
    if ref != "tiny" and clips is not None and not any(c.captions for c in clips):
        report.line(f"caption.model: {ref}: not loaded (every row gives prompt and source_prompt)")
        return
    check_transformers_model(run, "caption.model", ref, report)


def check_sam(run: Run, clips: list[Clip] | None, report: Report) -> None:
    from .masks import masks_config

    masks = masks_config(run.config.get("masks"))
    needed = {kind: sum(c.sam == kind for c in clips or []) for kind in ("sam2", "sam3")}
    if not any(needed.values()):
        report.line("masks: no clip is masked by SAM (sam2_model / sam3_model not loaded)")
    for kind, count in needed.items():
        if count:
            report.line(f"masks.{kind}_model: needed by {count} clip(s)")
            check_transformers_model(run, f"masks.{kind}_model", str(masks[f"{kind}_model"]), report)


def executable_problem(run: Run, key: str, command: str) -> str | None:
    exe = shlex.split(command)[0] if command.strip() else ""
    found = shutil.which(exe) or (os.access(resolve(run, exe), os.X_OK) and resolve(run, exe).is_file())
    return None if found else f"{key}: {exe or command!r}: not found"


def check_deqa(run: Run, deqa: dict, report: Report) -> None:
    """DeQA runs in its own interpreter or command (score.deqa.python / .command) when one is set."""
    if not deqa.get("python") and not deqa.get("command"):
        report.line("score.deqa: not configured (its column is n/a)")
        return
    key, command = (
        ("score.deqa.command", deqa["command"]) if deqa.get("command") else ("score.deqa.python", deqa["python"])
    )
    problem = executable_problem(run, key, str(command))
    if problem:
        report.problem(problem)
    if deqa.get("python") or "{model}" in str(deqa.get("command")):
        check_transformers_model(run, "score.deqa.model", str(deqa["model"]), report, processor=False)


def check_qalign(run: Run, report: Report) -> None:
    """Q-Align runs when its weights are cached; asked for explicitly (score.qalign: true), it must be."""
    from .metrics.iqa import QALIGN_REPO

    if (run.config.get("score") or {}).get("qalign") is True:
        check_transformers_model(run, "score.qalign", QALIGN_REPO, report, processor=False)
    elif cached_snapshot(QALIGN_REPO, "config.json") is None:
        report.line(f"score.qalign: {QALIGN_REPO} not cached: its column is n/a")
    else:
        report.line(f"score.qalign: {QALIGN_REPO}: cached, scored")


def check_score(run: Run, report: Report) -> None:
    from .metrics import score_config

    score = score_config(run.config.get("score"))
    check_transformers_model(run, "score.clip_model", str(score["clip_model"]), report)
    check_deqa(run, score["deqa"], report)
    if score["qalign"]:
        check_qalign(run, report)


# ----------------------------------------------------------------------------- ffmpeg, GPUs


def check_ffmpeg(report: Report) -> None:
    """The binary video_io drives (imageio-ffmpeg's, or the one IMAGEIO_FFMPEG_EXE / PATH gives it)."""
    from .video_io import ffmpeg_exe

    try:
        exe = ffmpeg_exe()
    except (RuntimeError, ImportError, OSError) as err:
        report.problem(f"ffmpeg: not found ({err}): pip install imageio-ffmpeg, or set IMAGEIO_FFMPEG_EXE")
        return
    try:
        out = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        report.problem(f"ffmpeg: {exe}: does not run ({err})")
        return
    if out.returncode != 0:
        report.problem(f"ffmpeg: {exe}: exits with status {out.returncode}")
        return
    report.line(f"ffmpeg: {exe} ({(out.stdout.splitlines() or ['?'])[0]})")


@dataclasses.dataclass(frozen=True)
class Gpu:
    name: str
    total: float
    free: float


def gpus_seen() -> list[Gpu]:
    import torch

    if not torch.cuda.is_available():
        return []
    return [
        Gpu(torch.cuda.get_device_name(i), *reversed(torch.cuda.mem_get_info(i)))
        for i in range(torch.cuda.device_count())
    ]


@dataclasses.dataclass(frozen=True)
class Target:
    """Where the GPU jobs run: device type, the memory budget (None: unknown) and why."""

    device: str
    free: float | None
    why: str


def job_target(run: Run, gpus: list[Gpu]) -> Target:
    device = str(run.config["model"].get("device", "auto"))
    budget = run.config["train"].get("gpu_memory_gb")
    budget = float(budget) * GB if budget else None
    if device == "cpu":
        return Target("cpu", None, "model.device: cpu: CPU run")
    if run.profile.get("executor") == "slurm":  # the GPUs here are not the nodes' GPUs
        why = "train.gpu_memory_gb" if budget else "GPU memory unknown (SLURM nodes; set train.gpu_memory_gb)"
        return Target("cuda", budget, why)
    if not gpus:
        return Target("cpu", None, "no GPU: CPU run")
    if budget:
        return Target("cuda", budget, f"train.gpu_memory_gb {budget / GB:.1f}")
    smallest = min(gpus, key=lambda g: g.free)
    return Target("cuda", smallest.free, f"{smallest.free / GB:.1f} GB free on {smallest.name}")


# ----------------------------------------------------------------------------- transformer on meta


def transformer_configs(spec, folder: Path | None) -> tuple[list[dict], str] | None:
    """Each expert's transformer config: the checkpoint's, else the family's known one."""
    if folder is not None and all((folder / e / "config.json").is_file() for e in spec.experts):
        return [json.loads((folder / e / "config.json").read_text()) for e in spec.experts], f"{folder}/transformer"
    if spec.name not in KNOWN_CONFIGS:
        return None
    module, name, cls = KNOWN_CONFIGS[spec.name]
    return [dict(getattr(family_module(spec, module), name), _class_name=cls)], f"{name} (no checkpoint here)"


def build_transformers(run: Run, spec, folder: Path | None, dtype) -> tuple[list, str] | None:
    """The transformer(s) on the meta device (tiny backends: their real, small build)."""
    import diffusers
    from accelerate import init_empty_weights

    from .backends import registry
    from .backends.base import cast_like_from_pretrained

    if spec.tiny:
        return registry.load_transformers(run.config["model"], None, dtype), f"the {spec.name} build"
    found = transformer_configs(spec, folder)
    if found is None:
        return None
    configs, source = found
    modules = []
    for config in configs:
        cls = getattr(diffusers, config["_class_name"])
        with init_empty_weights():
            model = cls.from_config({k: v for k, v in config.items() if not k.startswith("_")})
        modules.append(cast_like_from_pretrained(model, None, dtype))
    return modules, source


class _Blocks:
    """ModelSizes reads `.blocks`; HunyuanVideo keeps two block lists (double- and single-stream)."""

    def __init__(self, model):
        self.model, self.config = model, model.config
        self.blocks = [*model.transformer_blocks, *model.single_transformer_blocks]

    def parameters(self):
        return self.model.parameters()

    def buffers(self):
        return self.model.buffers()


def describe_transformer(run: Run, spec, folder: Path | None, dtype) -> Transformer | None:
    """The transformer with the configured LoRA attached on the meta device."""
    from accelerate import init_empty_weights

    from . import training as tr
    from .backends import registry
    from .memory.apply import patch_size_of
    from .memory.plan import ModelSizes

    built = build_transformers(run, spec, folder, dtype)
    if built is None:
        return None
    modules, source = built
    settings = tr.TrainSettings.from_config(run.config["train"])
    for model in modules:
        with init_empty_weights():  # LoRA matrices on meta too: nothing is allocated
            tr.add_lora(model, settings, registry.family(spec))
    first = modules[0]
    sizes = ModelSizes.of(first if hasattr(first, "blocks") else _Blocks(first))
    if run.config["train"].get("fp8_weights"):
        sizes = dataclasses.replace(sizes, block_bytes=sizes.block_bytes // 2)
    cfg = first.config
    return Transformer(
        modules,
        source,
        sizes,
        patch_size_of(first),
        cfg.in_channels,
        cfg.get("text_dim") or cfg.get("text_embed_dim") or 0,
        dtype.itemsize,
    )


def lora_params(transformer: Transformer | None) -> int:
    return 0 if transformer is None else transformer.sizes.trainable_params


# ----------------------------------------------------------------------------- sizes and tokens


@dataclasses.dataclass(frozen=True)
class Video:
    frames: int
    width: int
    height: int
    vae_t: int = 4
    vae_s: int = 8

    def latent(self, frames: int | None = None) -> tuple[int, int, int]:
        f = self.frames if frames is None else frames
        return (f - 1) // self.vae_t + 1, self.height // self.vae_s, self.width // self.vae_s

    def tokens(self, patch: tuple[int, int, int], frames: int | None = None) -> int:
        t, h, w = self.latent(frames)
        return (t // patch[0]) * (h // patch[1]) * (w // patch[2])

    @property
    def pixels(self) -> int:
        return self.width * self.height


def vae_scales(folder: Path | None) -> tuple[int, int]:
    """(temporal, spatial) compression of the checkpoint's VAE (Wan / HunyuanVideo keys); 4, 8 by default."""
    path = None if folder is None else folder / "vae" / "config.json"
    cfg = json.loads(path.read_text()) if path is not None and path.is_file() else {}
    temporal = cfg.get("scale_factor_temporal") or cfg.get("temporal_compression_ratio") or 4
    spatial = cfg.get("scale_factor_spatial") or cfg.get("spatial_compression_ratio") or 8
    return int(temporal), int(spatial)


def run_video(config: dict, folder: Path | None) -> Video:
    """The prepared clip size: num_frames at the largest bucket (clips of every orientation fit under it)."""
    prepare = config["prepare"]
    buckets = [
        prepare.get(k, d) for k, d in (("landscape", [832, 480]), ("portrait", [480, 832]), ("square", [624, 624]))
    ]
    width, height = max(buckets, key=lambda b: b[0] * b[1])
    return Video(int(prepare["num_frames"]), int(width), int(height), *vae_scales(folder))


# ----------------------------------------------------------------------------- jobs


def train_problems(config: dict) -> list[str]:
    """Training settings the job would refuse, found before the estimates below use them."""
    from . import training as tr

    problems = []
    for method in trained(list(config["methods"])):
        try:
            s = tr.TrainSettings.from_config(train_settings(config, method))
            if s.low_cost:
                tr.window_starts(int(config["prepare"]["num_frames"]), s.window)
            tr.check_init(s, {} if uses_prior(config) else None, stage2=method == "mask+ref")
        except (ValueError, TypeError) as err:
            problems.append(f"{'train_ref' if method == 'mask+ref' else 'train'}: {err}")
    if trains_prior(config):
        try:
            tr.lr_at(0, 2, tr.TrainSettings.from_config(prior_settings(config)))
        except (ValueError, TypeError) as err:
            problems.append(f"prior: {err}")
    return sorted(set(problems))


def cache_problems(config: dict, spec) -> list[str]:
    """infer.cache that the family cannot run (TeaCache's polynomial is fitted to Wan only)."""
    from .backends import registry

    if config["infer"].get("cache") == "teacache" and getattr(registry.family(spec), "TEACACHE", None) is None:
        return [f"infer.cache: teacache is fitted to Wan2.1 only, not {spec.name} (use first_block or none)"]
    return []


def trains_prior(config: dict) -> bool:
    """Whether the run's train_prior job runs: the prior is used and no prior.path names one."""
    return uses_prior(config) and not (config.get("prior") or {}).get("path")


def check_prior(run: Run, clips: list[Clip] | None, report: Report) -> None:
    """The mask prior a run uses: a trained one at prior.path (here, else in the workflow), or the plan to train one."""
    from .lora_io import DIFFUSERS_WEIGHT_NAME

    if not uses_prior(run.config):
        return
    path = run.config["prior"].get("path")
    if not path:
        count = "its" if clips is None else f"its {len(clips)}"
        report.line(f"prior: trained by train_prior on {count} clips ({run.config['prior'].get('steps', 100)} steps)")
        return
    folder = resolve(run, path)
    if not folder.exists() and not Path(path).is_absolute():
        folder = run.workflow / path
    weights = folder / DIFFUSERS_WEIGHT_NAME
    if weights.is_file():
        report.line(f"prior.path: {path} -> {folder.resolve()}: ok")
    else:
        report.problem(f"prior.path: {path}: no {DIFFUSERS_WEIGHT_NAME} (train one: set prior.path: null)")


def trained(methods: list[str]) -> list[str]:
    """Variants with a per-clip LoRA; mask+ref continues from the stage-1 `mask` LoRA, trained for it."""
    out = [m for m in methods if m not in ("none", "prior")]
    return out + ["mask"] if "mask+ref" in out and "mask" not in out else out


def job_counts(config: dict, clips: list[Clip]) -> dict[str, int]:
    composite = bool(config["infer"].get("composite_background"))
    baselines = len(config.get("baselines") or {})
    counts = dict.fromkeys(RULES, 0)
    counts["demo_data"] = int(bool(config.get("demo", {}).get("enabled", False)))
    counts["train_prior"] = int(trains_prior(config) and bool(clips))
    for clip in clips:
        methods = clip_variants(config, clip.refs > 0)
        counts["prepare"] += 1
        counts["caption"] += 1
        counts["masks_sam" if clip.sam else "masks"] += 1
        counts["train_lora"] += len(trained(methods))
        counts["infer"] += len(methods)
        counts["composite"] += len(methods) if composite else 0
        counts["score"] += len(methods) * (2 if composite else 1) + baselines
        counts["side_by_side"] += 1
    counts["aggregate"] = counts["bar_charts"] = int(bool(clips))
    return counts


def train_parts(config: dict, method: str, clip: Clip, frames: int) -> list[tuple[int, int]]:
    """[(steps, frames per sample)] of one train_lora job, as training.step_order schedules them."""
    from . import training as tr

    s = tr.TrainSettings.from_config(train_settings(config, method))
    spans = len(tr.window_starts(frames, s.window)) if s.low_cost else 1
    span_frames = min(s.window, frames) if s.low_cost else frames
    refs = clip.refs if method == "mask+ref" else 0
    if refs and s.ref_schedule == "official":
        return [(s.ref_epochs * spans, span_frames), (s.ref_epochs * refs * s.ref_repeats, 1)]
    if s.low_cost and s.steps_per_window and not refs:
        return [(spans * s.steps_per_window, span_frames)]
    return [(s.steps, span_frames)]


def cached_samples(config: dict, method: str, clip: Clip, frames: int) -> list[int]:
    """Frames of each sample the training job caches (work/samples.pt)."""
    from . import training as tr

    s = tr.TrainSettings.from_config(config["train"])
    spans = tr.window_starts(frames, s.window) if s.low_cost else [0]
    span_frames = min(s.window, frames) if s.low_cost else frames
    refs = clip.refs if method == "mask+ref" else 0
    return [span_frames] * len(spans) * (1 + s.recolor_copies) + [1] * refs


# ----------------------------------------------------------------------------- disk


def sample_bytes(video: Video, transformer: Transformer | None, frames: int) -> float:
    """One cached training sample: fp32 latents and condition (together the transformer's input
    channels), prompt embeddings (fp32 at most)."""
    if transformer is None:
        return 0.0
    t, h, w = video.latent(frames)
    return transformer.in_channels * t * h * w * 4 + TEXT_TOKENS * transformer.text_dim * 4


def clip_bytes(config: dict, clip: Clip, video: Video, transformer: Transformer | None) -> float:
    """Everything the run keeps for one clip (results/<clip>/), upper estimates."""
    frame, mp4 = video.pixels * PNG_RGB, video.frames * video.pixels * MP4
    methods = clip_variants(config, clip.refs > 0)
    outputs = len(methods) * (2 if config["infer"].get("composite_background") else 1)
    prepared = (video.frames * (2 if clip.gt else 1) + 1 + clip.refs) * frame
    masks = video.frames * video.pixels * PNG_MASK + mp4 + frame
    per_output = video.frames * frame + mp4 * (1 + 3)  # frames/, output.mp4, side_by_side.mp4 (3 panels)
    per_train = lora_params(transformer) * 4 * LORA_COPIES  # fp32 (lora_io.save_lora)
    caches = sum(
        sample_bytes(video, transformer, f)
        for m in trained(methods)
        for f in cached_samples(config, m, clip, video.frames)
    )
    side_by_side = mp4 * (len(methods) + 1)
    return prepared + masks + outputs * per_output + len(trained(methods)) * per_train + caches + side_by_side


def folder_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files if os.path.isfile(os.path.join(root, f)))
    return total


def size(nbytes: float) -> str:
    """GB with one decimal; MB under 1 GB, where 0.0 GB would hide what a toy run needs."""
    return f"{nbytes / GB:.1f} GB" if nbytes >= GB else f"{nbytes / 1e6:.0f} MB"


def existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def shown(path: Path) -> str:
    try:
        return f"{path.relative_to(Path.cwd())}/"
    except ValueError:
        return f"{path}/"


def check_disk(
    run: Run, clips: list[Clip], video: Video, transformer: Transformer | None, slots: int, report: Report
) -> None:
    """Free disk under results/ against the outputs still to write (what is there already counts as written)."""
    results = run.workdir / OUT
    need = sum(clip_bytes(run.config, c, video, transformer) for c in clips)
    # A training job's resume checkpoint (LoRA + AdamW moments, fp32) lives until the job ends.
    need += min(slots, job_counts(run.config, clips)["train_lora"]) * lora_params(transformer) * 12
    if results.is_dir():
        need = max(0.0, need - folder_bytes(results))
    free = shutil.disk_usage(existing_parent(results)).free
    message = f"disk: {shown(results)}: {size(free)} free, the run needs about {size(need)}"
    (report.problem if free < need else report.line)(message)


# ----------------------------------------------------------------------------- memory


def peak_text(target: Target, gpu: float, host: float, tokens: int) -> str:
    if target.device == "cpu":
        return f"about {size(gpu)} of memory at {tokens} tokens"
    return f"estimated peak {size(gpu)} GPU, {size(host)} host at {tokens} tokens"


def train_memory(run: Run, spec, transformer: Transformer, tokens: int, target: Target) -> tuple[str, str | None]:
    """(the line for train_lora, a problem when no mode fits), as memory.apply.setup_training plans it."""
    import torch

    from .memory import attention
    from .memory.plan import MemoryPlan, choose, estimate

    train = run.config["train"]
    if train.get("offload_blocks_per_group") and target.device == "cuda":
        return "train_lora: diffusers group offload (train.offload_blocks_per_group): not estimated", None
    if not hasattr(transformer.modules[0], "blocks"):  # setup_training: plain placement, no plan
        n = transformer.sizes.num_blocks
        plan = MemoryPlan("plain", n, False, bool(train.get("gradient_checkpointing")), False, False, None)
        gpu, host = estimate(plan, transformer.sizes, tokens)
        return f"train_lora: {target.why}: plain placement ({spec.name}); {peak_text(target, gpu, host, tokens)}", None
    device = torch.device(target.device)
    fast = attention.pick_backend(device)[0] if target.device == "cuda" and torch.cuda.is_available() else None
    plan = choose(train, transformer.sizes, tokens, device, target.free, fast)
    mode = plan.describe().split(";")[0].removeprefix("train.memory -> ")
    line = f"train_lora: {target.why}: {mode}; {peak_text(target, plan.gpu_bytes, plan.host_bytes, tokens)}"
    problem = f"train.memory: {plan.reason}" if plan.reason.startswith("no mode fits") else None
    return line, problem


def encoder_bytes(folder: Path | None, dtype_bytes: int) -> float:
    """The encoders inference keeps on the GPU: text / image encoders in the model dtype, the VAE in fp32."""
    if folder is None:
        return 0.0
    names = ("text_encoder", "text_encoder_2", "image_encoder")
    return sum(tensor_elements(folder / n) for n in names) * dtype_bytes + tensor_elements(folder / "vae") * 4


def tensor_elements(folder: Path) -> int:
    """Parameter count of the safetensors files in `folder`, from their headers alone."""
    total = 0
    for file in folder.glob("*.safetensors") if folder.is_dir() else []:
        with open(file, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        total += sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
    return total


def infer_memory(
    run: Run, spec, folder: Path | None, transformer: Transformer, tokens: int, target: Target, measured
) -> tuple[str, str | None]:
    """Inference keeps every weight resident: the transformer(s), the encoders, plus one forward's activations."""
    weights = sum(p.numel() * p.element_size() for m in transformer.modules for p in m.parameters())
    weights += encoder_bytes(folder, transformer.dtype_bytes)
    per_token = measured.infer_bytes_per_token if measured else 0.0
    peak = weights + per_token * tokens * transformer.sizes.dim / 5120
    compiled = target.device == "cuda" and run.config["infer"].get("compile") is not False
    line = f"infer: {target.why}: all weights resident, compile {compiled}; estimated peak {size(peak)}" + (
        "" if folder or spec.tiny else " (transformer only: no checkpoint for the encoders' sizes)"
    )
    problem = None
    if target.device == "cuda" and target.free is not None and peak > target.free:
        problem = f"infer: estimated peak {peak / GB:.1f} GB exceeds the {target.free / GB:.1f} GB available"
    return line, problem


def check_memory(run: Run, spec, folder, transformer, video: Video, target: Target, measured, report) -> None:
    if transformer is None:
        report.line(f"memory: not estimated (no transformer config for {spec.name})")
        return
    tokens = video.tokens(transformer.patch)
    report.line(
        f"memory: {transformer.source}, LoRA rank {run.config['train'].get('rank', 16)} "
        f"({transformer.sizes.trainable_params / 1e6:.1f} M parameters), {tokens} tokens per clip"
    )
    for line, problem in (
        train_memory(run, spec, transformer, tokens, target),
        infer_memory(run, spec, folder, transformer, tokens, target, measured),
    ):
        report.line(line)
        if problem:
            report.problem(problem)


# ----------------------------------------------------------------------------- GPU hours


@dataclasses.dataclass(frozen=True)
class Measured:
    """Seconds per transformer step of the committed GPU benchmark (Wan2.1-I2V-14B, 49 x 832 x 480)."""

    train: dict  # mode -> s/step
    infer: dict  # mode -> s per transformer pass
    tokens: int
    device: str
    source: str
    infer_bytes_per_token: float  # the inference peak beyond the weights


def read_measured(workflow: Path) -> Measured | None:
    train, infer, tokens, device, sources, per_token = {}, {}, 0, "", [], 0.0
    for path in sorted((workflow / "benchmarks" / "results").glob("*.json")):
        result = json.loads(path.read_text())
        if result.get("settings", {}).get("config") != "wan14b" or result["device"].get("type") != "cuda":
            continue
        for r in result["records"]:
            if (
                r["section"] not in ("train", "infer")
                or r.get("frames") != 49
                or r.get("mode") not in ("bf16", "compile")
            ):
                continue
            if r["section"] == "train":
                train[r["mode"]] = r["seconds_per_step"]
            else:
                infer[r["mode"]] = r["seconds_per_step"] / r.get("transformer_passes_per_step", 1)
                weights = result["model"]["parameters"] * 2  # bf16
                per_token = max(per_token, (r["peak_allocated_gb"] * GB - weights) / r["tokens"])
            tokens, device = r["tokens"], result["device"]["name"]
            sources.append(f"benchmarks/results/{path.name}")
    if not train or not infer:
        return None
    return Measured(train, infer, tokens, device, ", ".join(sorted(set(sources))), per_token)


def small_model(run: Run, spec, folder: Path | None) -> bool:
    """Tiny builds, and checkpoints the resources table treats as toys (under 1 GiB of weights)."""
    from .resources import SMALL_CHECKPOINT_BYTES, checkpoint_bytes

    size = checkpoint_bytes(str(folder)) if folder is not None else None
    return spec.tiny or (size is not None and size < SMALL_CHECKPOINT_BYTES)


def gpu_hours(run: Run, spec, clips: list[Clip], video: Video, patch, measured: Measured) -> tuple[float, float, str]:
    """(training, inference) GPU hours: steps x measured s/step, scaled by tokens; and which numbers."""
    train_cfg, infer_cfg = run.config["train"], run.config["infer"]
    train_mode = "bf16" if train_cfg.get("compile") is False or train_cfg.get("memory") == "low" else "compile"
    infer_mode = "bf16" if infer_cfg.get("compile") is False else "compile"
    train_mode = train_mode if train_mode in measured.train else "bf16"
    infer_mode = infer_mode if infer_mode in measured.infer else "bf16"
    passes = 2 if float(infer_cfg.get("guidance_scale", 5.0)) > 1.0 else 1
    train_s = infer_s = 0.0
    for clip in clips:
        methods = clip_variants(run.config, clip.refs > 0)
        for method in trained(methods):
            for steps, frames in train_parts(run.config, method, clip, video.frames):
                scale = video.tokens(patch, frames) / measured.tokens
                train_s += steps * measured.train[train_mode] * scale * len(spec.experts)
        infer_steps = int(infer_cfg.get("num_steps", 30)) * passes * len(methods)
        infer_s += infer_steps * measured.infer[infer_mode] * video.tokens(patch) / measured.tokens
    if trains_prior(run.config):  # a prior step is a LoRA step on one clip-sized sample
        steps = int(prior_settings(run.config).get("steps", 100))
        train_s += steps * measured.train[train_mode] * video.tokens(patch) / measured.tokens * len(spec.experts)
    how = (
        f"{measured.device}: train {measured.train[train_mode]:.2f} s/step ({train_mode}), infer "
        f"{measured.infer[infer_mode]:.2f} s per pass ({infer_mode}, {passes} per step) at {measured.tokens} "
        f"tokens (49x832x480), scaled by tokens; transformer steps only; {measured.source}"
    )
    return train_s / 3600, infer_s / 3600, how


def report_hours(run: Run, spec, folder, clips, video, transformer, measured, report: Report) -> None:
    if small_model(run, spec, folder):
        report.line(
            f"GPU hours: negligible ({spec.name if spec.tiny else 'toy checkpoint'}: "
            "not estimated from the 14B benchmark)"
        )
        return
    if measured is None or transformer is None:
        report.line("GPU hours: not estimated (no benchmark results under benchmarks/results, or no model config)")
        return
    train_h, infer_h, how = gpu_hours(run, spec, clips, video, transformer.patch, measured)
    family = "" if spec.family == "wan" else f" (Wan2.1-14B numbers applied to {spec.name}: not measured)"
    report.line(f"GPU hours: about {train_h + infer_h:.1f} ({train_h:.1f} training, {infer_h:.1f} inference){family}")
    report.line(f"  from {how}")


# ----------------------------------------------------------------------------- plan


def report_jobs(run: Run, clips: list[Clip], video: Video, slots: tuple[int, str], report: Report) -> None:
    from .resources import rule_resources

    config = run.config
    counts = job_counts(config, clips)
    refs = sum(c.refs > 0 for c in clips)
    note = f"; mask+ref only on the {refs} clip(s) with extra edited frames" if "mask+ref" in config["methods"] else ""
    report.line(f"plan: {len(clips)} clips x {len(config['methods'])} methods ({', '.join(config['methods'])}{note})")
    width, height = config["prepare"]["landscape"]  # what rules/common.smk res() passes
    report.line(
        f"  {'rule':<13}{'jobs':>6}{'gpu':>5}{'mem_mb':>8}{'runtime_min':>13}   (GPU jobs at once: "
        f"{slots[0]}, {slots[1]})"
    )
    for rule, jobs in counts.items():
        if not jobs:
            continue
        figures = "     -       -            -"
        if rule in RESOURCED:
            try:
                r = rule_resources(config, rule, 1, video.frames, width, height)
            except (KeyError, ValueError) as err:
                report.problem(f"resources.{rule}: {err}")
            else:
                figures = f"{r['gpu']:>5}{r['mem_mb']:>8}{r['runtime']:>13}"
        report.line(f"  {rule:<13}{jobs:>6}{figures}")
    report.line(f"  {'total':<13}{sum(counts.values()):>6}")


def gpu_slots(run: Run, gpus: list[Gpu]) -> tuple[int, str]:
    """How many GPU jobs run at once, and who says so."""
    profile = run.profile
    if profile.get("executor") == "slurm":
        return int(profile.get("jobs") or 1), f"SLURM, profile jobs: {profile.get('jobs', 1)}"
    resources = {k: v for item in as_list(profile.get("resources")) for k, _, v in [str(item).partition("=")]}
    if "gpu" in resources:
        return int(resources["gpu"]), f"profile resources gpu={resources['gpu']}"
    # No gpu resource: loraedit.gpu_slots still runs one job per GPU
    return max(1, len(gpus)), f"one per GPU seen ({len(gpus)})" if gpus else "no GPU seen"


# ----------------------------------------------------------------------------- main


def check_inputs(run: Run, spec, report: Report) -> tuple[list[Clip] | None, Path | None]:
    """The config's own consistency, the sheet, every model and ffmpeg: (clips, the checkpoint folder)."""
    report.line(f"config: {', '.join(str(p) for p in run.configfiles)} (valid against {SCHEMA})")
    for p in mask_mode_problems(run.config) + train_problems(run.config) + cache_problems(run.config, spec):
        report.problem(p)
    clips = sheet_clips(run, report)
    folder = check_backend(run, spec, report)
    check_caption(run, clips, report)
    check_sam(run, clips, report)
    check_score(run, report)
    check_prior(run, clips, report)
    check_ffmpeg(report)
    return clips, folder


def check_compute(run: Run, spec, clips: list[Clip] | None, folder: Path | None, report: Report) -> None:
    """GPUs, the memory of the GPU jobs, disk, jobs per rule and GPU hours."""
    import torch

    from .devices import resolve_dtype

    gpus = gpus_seen()
    seen = "; ".join(f"{g.name} ({g.total / GB:.1f} GB, {g.free / GB:.1f} GB free)" for g in gpus)
    report.line(f"GPUs: {seen or 'none seen'}")
    target = job_target(run, gpus)
    dtype = resolve_dtype(run.config["model"].get("dtype", "auto"), torch.device(target.device))
    transformer = describe_transformer(run, spec, folder, dtype)
    video = run_video(run.config, folder)
    measured = read_measured(run.workflow)
    check_memory(run, spec, folder, transformer, video, target, measured, report)
    if clips is None:
        report.line("plan: not made (the sample sheet has problems)")
        return
    slots = gpu_slots(run, gpus)
    check_disk(run, clips, video, transformer, slots[0], report)
    report_jobs(run, clips, video, slots, report)
    report_hours(run, spec, folder, clips, video, transformer, measured, report)


def check(run: Run, report: Report) -> None:
    from .backends.registry import backend_spec

    spec = backend_spec(run.config["model"])
    clips, folder = check_inputs(run, spec, report)
    if train_problems(run.config):
        return  # the estimates below build the LoRA and the schedule from these settings
    check_compute(run, spec, clips, folder, report)


def parser():
    ap = command_parser(
        "loraedit check",
        __doc__.splitlines()[0].strip("`"),
        "loraedit check --configfile config/wan2.1-480p.yaml --profile profiles/slurm",
    )
    ap.add_argument(
        "--configfile",
        nargs="+",
        default=[],
        metavar="YAML",
        help="config files merged over the workflow's config/config.yaml, as snakemake --configfile",
    )
    ap.add_argument("--profile", help="a Snakemake profile folder (its configfile, config, directory, executor)")
    ap.add_argument("--directory", "-d", help="the working directory of the run (results/ and relative paths)")
    ap.add_argument("--workflow", default=".", help="the folder with the Snakefile (default: .)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    report = Report()
    try:
        run = load_run(args)
        report.line(f"loraedit check: workflow {run.workflow}, working directory {run.workdir}")
        check(run, report)
    except CheckError as err:
        report.problems += err.problems
    print("\n".join(report.lines), flush=True)
    for problem in report.problems:
        print(problem, file=sys.stderr)
    count = len(report.problems)
    print(f"check: {count} problem(s)" if count else "check: ok")
    return 1 if count else 0


if __name__ == "__main__":
    sys.exit(main())
