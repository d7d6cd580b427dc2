"""The GPU benchmark's own code path, scaled down to the tiny model on the CPU, so it never rots."""

import importlib.util
import json
import shlex
from pathlib import Path

import pytest
import torch
from diffusers import WanTransformer3DModel

from loraedit.backends.wan import flops

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_scale.py"
ARGS = [
    "--tiny",
    "--modes",
    "bf16",
    "fp8",
    "compile",
    "offload",
    "--compile-backend",
    "eager",
    "--warmup",
    "1",
    "--steps",
    "2",
    "--infer-warmup",
    "1",
    "--infer-steps",
    "2",
    "--vae-repeats",
    "1",
]


@pytest.fixture(scope="module")
def gpu_scale():
    spec = importlib.util.spec_from_file_location("gpu_scale", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run(gpu_scale, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    argv = ARGS + ["--out-dir", str(out), "--name", "smoke"]
    return gpu_scale.main(argv), argv, out


def test_meta_build_is_bf16_with_the_real_rope_tables(gpu_scale):
    config = gpu_scale.transformer_config("tiny")
    model = gpu_scale.harness.build_transformer(WanTransformer3DModel, config, torch.device("cpu"), torch.bfloat16)
    assert type(model) is WanTransformer3DModel
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert all(torch.isfinite(p.float()).all() for p in model.parameters())
    reference = gpu_scale.tiny.build_tiny_transformer().to(torch.bfloat16)
    for (name, buffer), (_, expected) in zip(model.named_buffers(), reference.named_buffers(), strict=True):
        assert torch.equal(buffer, expected), name


def test_json_records_every_mode(run):
    result, argv, out = run
    on_disk = json.loads((out / "smoke.json").read_text())
    assert on_disk["commands"] == ["python benchmarks/gpu_scale.py " + shlex.join(argv)]
    for key in ("date", "device", "versions", "model", "settings", "matmul_peak", "records", "projections"):
        assert key in on_disk
    assert on_disk["versions"]["torch"] == torch.__version__ and on_disk["versions"]["diffusers"]
    assert on_disk["device"]["type"] == "cpu" and on_disk["matmul_peak"]["flops_per_second"] > 0

    records = on_disk["records"]
    assert not [r for r in records if "error" in r]
    for mode in ("bf16", "fp8", "compile"):
        for frames in (9, 5):
            [train] = [r for r in records if (r["section"], r.get("mode"), r["frames"]) == ("train", mode, frames)]
            assert len(train["step_seconds"]) == 2 and min(train["step_seconds"]) > 0
            assert train["tokens"] == flops.latent_tokens(frames, 64, 96)
            assert train["hardware_flops"] > train["model_flops"] > 0 and train["mfu"] > 0
            assert train["peak_allocated_gb"] is None  # no GPU memory on the CPU
        [infer] = [r for r in records if r["section"] == "infer" and r["mode"] == mode]
        assert infer["seconds_per_step"] > 0 and infer["transformer_passes_per_step"] == 2
    offload = [r for r in records if r.get("mode") == "offload"]
    assert len(offload) == 4 and all("CUDA" in r["skipped"] for r in offload)  # train x2, infer, check
    # LoRA check: same seed and sample, 3 steps; bf16 is the reference, compile (eager) is exact.
    check = {r["mode"]: r for r in records if r["section"] == "check" and "status" in r}
    assert set(check) == {"bf16", "fp8", "compile"}
    assert check["bf16"]["relative_difference"] == 0 and check["compile"]["relative_difference"] == 0
    assert check["bf16"]["update_norm"] > 0 and check["compile"]["status"] == "ok"
    assert 0 < check["fp8"]["relative_difference"]  # fp8 storage changes the base weights, so the LoRA too
    vae = {(r["op"], r["tiled"]): r for r in records if r["section"] == "vae"}
    assert set(vae) == {("encode", False), ("decode", False), ("encode", True), ("decode", True)}
    assert all(r["seconds"] > 0 for r in vae.values())

    # The per-clip projection: 100 steps + a 30-step guided inference + the VAE passes.
    assert len(on_disk["projections"]) == 6
    p = next(p for p in on_disk["projections"] if p["mode"] == "bf16" and p["train_frames"] == 9)
    train = next(r for r in records if (r["section"], r.get("mode"), r["frames"]) == ("train", "bf16", 9))
    infer = next(r for r in records if (r["section"], r.get("mode")) == ("infer", "bf16"))
    seconds = (
        100 * train["seconds_per_step"]
        + 30 * infer["seconds_per_step"]
        + 3 * vae[("encode", False)]["seconds"]
        + vae[("decode", False)]["seconds"]
    )
    assert p["minutes"] == pytest.approx(seconds / 60) and p["includes_vae"]
    assert result["paths"]["json"] == str(out / "smoke.json")


def test_markdown_table(run):
    result, _, out = run
    text = (out / "smoke.md").read_text()
    assert result["device"]["name"] in text and "python benchmarks/gpu_scale.py --tiny" in text
    assert f"diffusers {result['versions']['diffusers']}" in text
    rows = [line for line in text.splitlines() if line.startswith("| bf16 | 9 |")]
    assert len(rows) == 3  # training, inference, projection
    assert "group offloading needs a CUDA device" in text


def test_merge_adds_a_second_command(gpu_scale, run):
    _, _, out = run
    argv = [
        "--tiny",
        "--modes",
        "bf16",
        "--no-train",
        "--no-vae",
        "--infer-steps",
        "1",
        "--out-dir",
        str(out),
        "--name",
        "smoke",
        "--merge",
    ]
    merged = gpu_scale.main(argv)
    assert len(merged["commands"]) == 2 and merged["commands"][1].endswith(shlex.join(argv))
    modes = {(r["section"], r.get("mode")) for r in merged["records"]}
    assert ("train", "fp8") in modes and ("infer", "bf16") in modes  # old records kept, new one replaced
    [infer] = [r for r in merged["records"] if (r["section"], r.get("mode")) == ("infer", "bf16")]
    assert len(infer["step_seconds"]) == 1  # the new run's record (1 timed step, not 2)


def test_memory_modes_train_the_same_lora_and_merge(gpu_scale, run, tmp_path):
    """low (every block streamed, inputs offloaded) and fast (kept attention, compile) on the CPU:
    their LoRA updates equal the bf16 mode's exactly; fp8mm's differs (reported, not hidden);
    --merge-files joins partial runs."""
    argv = [
        "--tiny",
        "--modes",
        "low",
        "fast",
        "fp8mm",
        "--compile-backend",
        "eager",
        "--train-frames",
        "5",
        "--warmup",
        "1",
        "--steps",
        "1",
        "--no-infer",
        "--no-vae",
        "--out-dir",
        str(tmp_path),
        "--name",
        "modes",
    ]
    result = gpu_scale.main(argv)
    check = {r["mode"]: r for r in result["records"] if r["section"] == "check"}
    assert set(check) == {"low", "fast", "fp8mm"}  # the bf16 reference ran too, but only for its LoRA update
    for r in (check["low"], check["fast"]):
        assert r["status"] == "ok" and r["relative_difference"] == 0 and r["update_norm"] > 0
    assert check["fp8mm"]["update_norm"] > 0 and check["fp8mm"]["relative_difference"] > 0  # quantized base
    [low] = [r for r in result["records"] if (r["section"], r["mode"]) == ("train", "low")]
    assert low["host_weights_gb"] > 0 and low["host_activations_gb"] > 0 and low["seconds_per_step"] > 0
    [fast] = [r for r in result["records"] if (r["section"], r["mode"]) == ("train", "fast")]
    assert 0 < low["estimated_peak_gb"] < fast["estimated_peak_gb"]  # the memory model's view of each set-up

    merged = gpu_scale.main(
        [
            "--merge-files",
            str(run[2] / "smoke.json"),
            str(tmp_path / "modes.json"),
            "--out-dir",
            str(tmp_path),
            "--name",
            "both",
        ]
    )
    modes = {r["mode"] for r in merged["records"] if r["section"] == "train"}
    assert {"bf16", "fp8", "compile", "low", "fast"} <= modes and len(merged["commands"]) >= 2
    assert "| low | 5 |" in (tmp_path / "both.md").read_text()
