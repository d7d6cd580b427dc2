"""`train.memory`: the memory model against the measured H200 numbers, and `auto`'s choice from
given memory figures (the real 14B sizes, built on the meta device: no memory, no weights)."""

import dataclasses
import logging
from pathlib import Path

import accelerate
import pytest
import torch
from diffusers import WanTransformer3DModel

from loraedit import training as tr
from loraedit.backends import wan
from loraedit.backends.wan import flops, tiny
from loraedit.memory import apply as mem
from loraedit.memory import plan as mp
from loraedit.memory.record import MemoryRecord
from loraedit.memory.verified import Verified, gpu_class, records_from_benchmark, write_record

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
CUDA = torch.device("cuda")
TOKENS_49 = flops.latent_tokens(49, 480, 832)  # 20,280
BASE = {"memory": "auto", "gradient_checkpointing": True}


def sizes_14b(fp8=False):
    with accelerate.init_empty_weights():
        model = WanTransformer3DModel.from_config(dict(flops.WAN21_I2V_14B_CONFIG))
    model.to(torch.bfloat16)
    if fp8:  # the order of stages.prepare_for_training: fp8 storage, then the LoRA
        model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    tr.add_lora(model, tr.TrainSettings(rank=16), wan)
    return mp.ModelSizes.of(model)


@pytest.fixture(scope="module")
def wan14b():
    return sizes_14b()


def test_calibration_constants_are_the_fit_of_the_committed_results(wan14b):
    fitted = mp.calibrate(RESULTS, wan14b)
    assert fitted.intercept_bytes == pytest.approx(mp.MEASURED.intercept_bytes, rel=1e-3)
    assert fitted.bytes_per_token == pytest.approx(mp.MEASURED.bytes_per_token, rel=1e-3)
    assert fitted.compiled_ratio == pytest.approx(mp.MEASURED.compiled_ratio, rel=1e-3)
    # The fitted points are reproduced (bf16 at 49 and 13 frames: 51.5 and 39.3 GB).
    plain = mp.MemoryPlan("fast", 40, False, True, False, False, None)
    assert mp.estimate(plain, wan14b, TOKENS_49)[0] / 1e9 == pytest.approx(51.48, abs=0.05)
    assert mp.estimate(plain, wan14b, 6240)[0] / 1e9 == pytest.approx(39.32, abs=0.05)


def test_memory_model_predicts_the_fp8_peak_it_was_not_fitted_to():
    fp8 = sizes_14b(fp8=True)
    plain = mp.MemoryPlan("fast", 40, False, True, False, False, None)
    predicted = mp.estimate(plain, fp8, TOKENS_49)[0] / 1e9
    assert predicted == pytest.approx(35.89, rel=0.05)  # measured: 35.9 GB (fp8 storage, 49 frames)


def test_auto_on_80_gb_is_the_fast_mode(wan14b):
    plan = mp.choose(BASE, wan14b, TOKENS_49, CUDA, 80e9, "_native_cudnn")
    assert (plan.mode, plan.resident_blocks, plan.compile, plan.save_attention, plan.offload_activations) == (
        "fast",
        40,
        True,
        True,
        False,
    )
    assert plan.attention_backend == "_native_cudnn" and plan.gpu_bytes <= 0.9 * 80e9
    assert "fits 72.0 GB usable of 80.0 GB free" in plan.reason


def test_auto_on_24_gb_streams_and_offloads(wan14b):
    plan = mp.choose(BASE, wan14b, TOKENS_49, CUDA, 24e9, "_native_cudnn")
    assert (plan.mode, plan.offload_activations, plan.compile) == ("low", True, False)
    assert 0 < plan.resident_blocks < 40
    assert plan.gpu_bytes <= 0.9 * 24e9
    one_more = dataclasses.replace(plan, resident_blocks=plan.resident_blocks + 1)
    assert mp.estimate(one_more, wan14b, TOKENS_49)[0] > 0.9 * 24e9  # the most resident blocks that fit
    # Host side: pinned masters of the streamed blocks + 39 offloaded block inputs.
    assert plan.host_bytes == pytest.approx(
        (40 - plan.resident_blocks) * wan14b.block_bytes + 39 * TOKENS_49 * 5120 * 2
    )


def test_20_gb_target_is_reachable_and_a_too_small_card_gets_the_leanest_mode(wan14b):
    plan = mp.choose(BASE, wan14b, TOKENS_49, CUDA, 20e9 / 0.9, None)
    assert plan.gpu_bytes <= 20e9 and plan.mode == "low"
    tiny_card = mp.choose(BASE, wan14b, TOKENS_49, CUDA, 8e9, None)
    assert tiny_card.resident_blocks == 0 and "no mode fits" in tiny_card.reason and tiny_card.fits is False


def test_explicit_knobs_win(wan14b):
    plan = mp.choose(
        {**BASE, "memory": "low", "resident_blocks": 30, "offload_activations": False},
        wan14b,
        TOKENS_49,
        CUDA,
        80e9,
        None,
    )
    assert (plan.mode, plan.resident_blocks, plan.offload_activations, plan.gradient_checkpointing) == (
        "low",
        30,
        False,
        True,
    )
    fast = mp.choose(
        {**BASE, "memory": "fast", "compile": False, "attention_backend": "_native_flash"},
        wan14b,
        TOKENS_49,
        CUDA,
        24e9,
        "_native_cudnn",
    )
    assert (fast.mode, fast.compile, fast.attention_backend, fast.resident_blocks) == (
        "fast",
        False,
        "_native_flash",
        40,
    )
    assert "no mode fits" in fast.reason  # asked for, told it will not fit
    with pytest.raises(ValueError, match="train.memory"):
        mp.choose({"memory": "tiny"}, wan14b, TOKENS_49, CUDA, 80e9, None)


def test_on_the_cpu_auto_is_the_plain_model_and_low_streams_everything():
    model = tiny.build_tiny_transformer()
    tr.add_lora(model, tr.TrainSettings(rank=4), wan)
    sizes = mp.ModelSizes.of(model)
    plain = mp.choose({"memory": "auto", "gradient_checkpointing": False}, sizes, 12, torch.device("cpu"), None)
    assert (
        plain.resident_blocks,
        plain.offload_activations,
        plain.gradient_checkpointing,
        plain.compile,
        plain.save_attention,
        plain.attention_backend,
    ) == (2, False, False, False, False, None)
    low = mp.choose({"memory": "low"}, sizes, 12, torch.device("cpu"), None)
    assert (low.resident_blocks, low.offload_activations, low.gradient_checkpointing) == (0, True, True)


def test_setup_training_logs_the_choice_and_streams_on_the_cpu(caplog):
    model = tiny.build_tiny_transformer()
    tr.add_lora(model, tr.TrainSettings(rank=4), wan)
    with caplog.at_level(logging.INFO, logger="loraedit.memory.apply"):
        applied = mem.setup_training(model, {"memory": "low"}, torch.device("cpu"), 12)
    assert applied.streamer is not None and applied.offload is not None and model.is_gradient_checkpointing
    assert "train.memory -> low: resident blocks 0" in caplog.text and "no GPU memory limit" in caplog.text
    mem.park(model)
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert not model.blocks[0]._forward_pre_hooks  # the streamer's hooks are gone


def test_the_planned_token_count_uses_each_transformer_s_patch():
    """The toy model's patch is 1x1 (4x the tokens of Wan's 2x2); HunyuanVideo's is an int + patch_size_t."""
    from loraedit.backends.hunyuan import tiny as tiny_hunyuan
    from loraedit.toy.i2v import I2VRecipe, build_transformer

    samples = [{"latents": torch.zeros(1, 16, 5, 16, 16)}]
    wan, toy = tiny.build_tiny_transformer(), build_transformer(I2VRecipe(num_layers=1))
    hunyuan = tiny_hunyuan.build_tiny_transformer()
    assert mem.patch_size_of(wan) == (1, 2, 2) and mem.patch_size_of(toy) == (1, 1, 1)
    cfg = hunyuan.config
    assert mem.patch_size_of(hunyuan) == (cfg.patch_size_t, cfg.patch_size, cfg.patch_size)
    toy_tokens, wan_tokens = (mem.sample_tokens(samples, mem.patch_size_of(m)) for m in (toy, wan))
    assert toy_tokens == 4 * wan_tokens == 16 * 16 * 5


# ----------------------------------------------------------------------------- too little memory


def test_no_mode_fits_is_one_line_naming_the_need_the_room_and_the_settings(wan14b):
    plan = mp.choose(BASE, wan14b, TOKENS_49, CUDA, 8e9, None)
    message = mp.shortfall(plan, BASE, TOKENS_49)
    assert "\n" not in message
    assert message.startswith(
        "train.memory: no mode fits: the leanest plan (low, 0 blocks resident) needs an "
        f"estimated {plan.gpu_bytes / 1e9:.1f} GB of GPU memory at 20280 tokens, 7.2 GB is "
        "usable (0.9 x 8.0 GB free); try train.memory: low, train.fp8_weights: true, "
        "train.low_cost: true or fewer frames (prepare.num_frames); or set train.gpu_memory_gb"
    )
    lean = {"memory": "low", "resident_blocks": 3, "fp8_weights": True, "low_cost": True}
    assert mp.fixes(lean) == (
        "try fewer train.resident_blocks (now 3), fewer frames (prepare.num_frames); or set "
        "train.gpu_memory_gb when CUDA's free figure is too low"
    )


# ----------------------------------------------------------------------------- verified modes


def record(mode, passed=True, backend="_native_cudnn", gpu="H100"):
    return {
        "mode": mode,
        "passed": passed,
        "gpu_class": gpu,
        "device": "NVIDIA H100 80GB HBM3",
        "attention_backend": backend,
    }


def verified(folder, *records, gpu="H100"):
    folder.mkdir(exist_ok=True)
    for r in records:
        write_record(folder, r)
    return Verified.load(folder, gpu)


def plain_on_cuda(plan):
    return (
        plan.mode,
        plan.compile,
        plan.attention_backend,
        plan.save_attention,
        plan.resident_blocks,
        plan.offload_activations,
        plan.gradient_checkpointing,
    ) == ("plain", False, None, False, 40, False, True)


def test_auto_without_records_trains_plain_bf16_and_says_how_to_verify(wan14b, tmp_path):
    plan = mp.choose(BASE, wan14b, TOKENS_49, CUDA, 80e9, "_native_cudnn", verified=verified(tmp_path))
    assert plain_on_cuda(plan) and plan.fits
    assert plan.note.startswith("train.memory: auto: no passing verification record for fast/low on H100 in ")
    assert "training plain bf16" in plan.note and "gpu_scale.py --verified-dir" in plan.note
    assert "\n" not in plan.note
    # no setting at all: the same, and the note says the setting is missing
    unset = mp.choose(BASE, wan14b, TOKENS_49, CUDA, 80e9, "_native_cudnn", verified=Verified("H100", None))
    assert plain_on_cuda(unset) and "train.verified_modes is not set" in unset.note


def test_auto_takes_the_modes_with_a_passing_record_for_this_gpu_class(wan14b, tmp_path):
    fast = mp.choose(
        BASE, wan14b, TOKENS_49, CUDA, 80e9, "_native_cudnn", verified=verified(tmp_path / "a", record("fast"))
    )
    assert (fast.mode, fast.compile, fast.save_attention, fast.attention_backend, fast.note) == (
        "fast",
        True,
        True,
        "_native_cudnn",
        "",
    )
    low = verified(tmp_path / "b", record("low"))
    lean = mp.choose(BASE, wan14b, TOKENS_49, CUDA, 24e9, "_native_cudnn", verified=low)
    assert (lean.mode, lean.offload_activations, lean.fits) == ("low", True, True)
    assert mp.choose(BASE, wan14b, TOKENS_49, CUDA, 80e9, "_native_cudnn", verified=low).mode == "plain"  # fits first
    # fast verified, low not: a 24 GB card has nothing verified that fits
    short = mp.choose(
        BASE, wan14b, TOKENS_49, CUDA, 24e9, "_native_cudnn", verified=verified(tmp_path / "c", record("fast"))
    )
    assert short.fits is False and short.mode in ("fast", "plain")


def test_a_failing_record_another_kernel_or_another_gpu_class_is_not_picked(wan14b, tmp_path):
    failing = verified(tmp_path / "a", record("fast", passed=False), record("low", passed=False))
    assert plain_on_cuda(mp.choose(BASE, wan14b, TOKENS_49, CUDA, 80e9, "_native_cudnn", verified=failing))
    assert failing.describe()["failing"] == ["fast", "low"] and failing.describe()["passing"] == []
    other_kernel = verified(tmp_path / "b", record("fast", backend="_flash_3"))
    assert plain_on_cuda(mp.choose(BASE, wan14b, TOKENS_49, CUDA, 80e9, "_native_cudnn", verified=other_kernel))
    other_gpu = verified(tmp_path / "c", record("fast"), gpu="A100-80GB")
    assert plain_on_cuda(mp.choose(BASE, wan14b, TOKENS_49, CUDA, 80e9, "_native_cudnn", verified=other_gpu))


def test_an_explicit_mode_or_knob_overrides_the_records(wan14b, tmp_path):
    none = verified(tmp_path)
    fast = mp.choose({**BASE, "memory": "fast"}, wan14b, TOKENS_49, CUDA, 80e9, "_native_cudnn", verified=none)
    assert (fast.mode, fast.compile, fast.save_attention, fast.note) == ("fast", True, True, "")
    low = mp.choose({**BASE, "memory": "low"}, wan14b, TOKENS_49, CUDA, 24e9, "_native_cudnn", verified=none)
    assert (low.mode, low.offload_activations, low.fits) == ("low", True, True)
    # auto + an explicit knob: the knob is taken, what it did not ask for still needs a record
    knob = mp.choose({**BASE, "compile": True}, wan14b, TOKENS_49, CUDA, 80e9, "_native_cudnn", verified=none)
    assert (knob.mode, knob.compile, knob.attention_backend, knob.save_attention) == ("plain", True, None, False)
    kernel = mp.choose(
        {**BASE, "attention_backend": "_native_flash", "compile": True, "selective_checkpointing": True},
        wan14b,
        TOKENS_49,
        CUDA,
        80e9,
        "_native_cudnn",
        verified=none,
    )
    assert (kernel.mode, kernel.compile, kernel.attention_backend, kernel.save_attention) == (
        "fast",
        True,
        "_native_flash",
        True,
    )


def test_setup_on_cuda_reads_the_records_of_its_gpu_class_and_warns_once(monkeypatch, tmp_path, caplog):
    """The CUDA path of `plan_training` (planning only: nothing is placed), the device name simulated."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "NVIDIA H100 80GB HBM3")
    model = tiny.build_tiny_transformer()
    tr.add_lora(model, tr.TrainSettings(rank=4), wan)
    cfg = {"memory": "auto", "gpu_memory_gb": 80, "verified_modes": str(tmp_path)}
    run = MemoryRecord.start("train", cfg, torch.device("cpu"))
    with caplog.at_level(logging.WARNING, logger="loraedit"):
        plan = mem.plan_training(model, cfg, CUDA, 12, run)
    assert plan.mode == "plain"
    assert run.verified == {"gpu_class": "H100", "source": str(tmp_path), "passing": [], "failing": []}
    assert len(run.warnings) == 1 and "on H100 in" in run.warnings[0]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == run.warnings
    write_record(tmp_path, record("fast", backend=mem.attention.pick_backend(CUDA)[0]))
    assert mem.plan_training(model, cfg, CUDA, 12).mode == "fast"
    with pytest.raises(ValueError, match="train.verified_modes: .* is not a folder"):
        mem.plan_training(model, {**cfg, "verified_modes": str(tmp_path / "missing")}, CUDA, 12)


def test_gpu_classes():
    names = {
        "NVIDIA H100 80GB HBM3": "H100",
        "NVIDIA H100 NVL": "H100",
        "NVIDIA H200": "H200",
        "NVIDIA GH200 480GB": "GH200",
        "NVIDIA A100-SXM4-80GB": "A100-80GB",
        "NVIDIA A100 80GB PCIe": "A100-80GB",
        "NVIDIA A100-PCIE-40GB": "A100-40GB",
        "NVIDIA L40S": "L40S",
        "NVIDIA L4": "L4",
        "NVIDIA GeForce RTX 4090": "RTX-4090",
    }
    assert {name: gpu_class(name) for name in names} == names


def benchmark_result(**checks):
    """A `gpu_scale.py` result with a LoRA check (and a timed training) per mode."""
    records = []
    for mode, (status, kernel_ok) in checks.items():
        records.append(
            {
                "section": "check",
                "mode": mode,
                "status": status,
                "relative_difference": 0.01,
                "tolerance": 0.25,
                "why": "",
                "attention_backend": "_native_cudnn",
                "attention_kernel_ok": kernel_ok,
            }
        )
        records.append(
            {"section": "train", "mode": mode, "frames": 49, "seconds_per_step": 5.0, "peak_allocated_gb": 60.0}
        )
    return {
        "date": "2026-12-01T10:00:00+00:00",
        "commands": ["python benchmarks/gpu_scale.py --modes fast low"],
        "device": {"name": "NVIDIA H100 80GB HBM3", "type": "cuda"},
        "settings": {"config": "wan14b"},
        "versions": {"torch": "2.14.1+cu130", "diffusers": "0.42.1", "cuda": "13.0"},
        "records": records,
    }


def test_benchmark_records_are_written_per_gpu_class_and_a_failure_revokes_a_pass(tmp_path):
    result = benchmark_result(fast=("ok", True), low=("FAILED", True), attn=("ok", False), fp8mm=("ok", True))
    records = records_from_benchmark(result, "abc123", False)
    assert [(r["mode"], r["passed"]) for r in records] == [("fast", True), ("low", False), ("attn", False)]
    fast = records[0]
    assert (
        fast["gpu_class"],
        fast["torch"],
        fast["seconds_per_step"],
        fast["peak_gb"],
        fast["commit"],
        fast["date"],
    ) == ("H100", "2.14.1+cu130", 5.0, 60.0, "abc123", "2026-12-01")
    for r in records:
        write_record(tmp_path, r)
    assert Verified.load(tmp_path, "H100").describe()["passing"] == ["fast"]
    write_record(tmp_path, records_from_benchmark(benchmark_result(fast=("FAILED", True)))[0])
    assert Verified.load(tmp_path, "H100").describe() == {
        "gpu_class": "H100",
        "source": str(tmp_path),
        "passing": [],
        "failing": ["attn", "fast", "low"],
    }
    with pytest.raises(ValueError, match="CUDA runs of the wan14b config"):
        records_from_benchmark({**result, "device": {"name": "cpu-x86_64", "type": "cpu"}})
    (tmp_path / "A10G.json").write_text('{"records": [{"mode": "fast"}]}')
    with pytest.raises(ValueError, match="A10G.json: expected"):
        Verified.load(tmp_path, "A10G")
