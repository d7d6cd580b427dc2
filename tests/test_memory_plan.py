"""`train.memory`: the memory model against the measured H200 numbers, and `auto`'s choice from
given memory figures (the real 14B sizes, built on the meta device: no memory, no weights)."""

import dataclasses
import logging
from pathlib import Path

import accelerate
import pytest
import torch
from diffusers import WanTransformer3DModel

from loraedit import flops
from loraedit import training as tr
from loraedit.memory import apply as mem
from loraedit.memory import plan as mp
from loraedit.models import tiny

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
    tr.add_lora(model, tr.TrainSettings(rank=16))
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
    assert (plan.mode, plan.resident_blocks, plan.compile, plan.save_attention, plan.offload_activations) == \
        ("fast", 40, True, True, False)
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
    assert plan.host_bytes == pytest.approx((40 - plan.resident_blocks) * wan14b.block_bytes + 39 * TOKENS_49 * 5120 * 2)


def test_20_gb_target_is_reachable_and_a_too_small_card_gets_the_leanest_mode(wan14b):
    plan = mp.choose(BASE, wan14b, TOKENS_49, CUDA, 20e9 / 0.9, None)
    assert plan.gpu_bytes <= 20e9 and plan.mode == "low"
    tiny_card = mp.choose(BASE, wan14b, TOKENS_49, CUDA, 8e9, None)
    assert tiny_card.resident_blocks == 0 and "no mode fits" in tiny_card.reason


def test_explicit_knobs_win(wan14b):
    plan = mp.choose({**BASE, "memory": "low", "resident_blocks": 30, "offload_activations": False}, wan14b,
                     TOKENS_49, CUDA, 80e9, None)
    assert (plan.mode, plan.resident_blocks, plan.offload_activations, plan.gradient_checkpointing) == \
        ("low", 30, False, True)
    fast = mp.choose({**BASE, "memory": "fast", "compile": False, "attention_backend": "_native_flash"}, wan14b,
                     TOKENS_49, CUDA, 24e9, "_native_cudnn")
    assert (fast.mode, fast.compile, fast.attention_backend, fast.resident_blocks) == ("fast", False, "_native_flash", 40)
    assert "no mode fits" in fast.reason  # asked for, told it will not fit
    with pytest.raises(ValueError, match="train.memory"):
        mp.choose({"memory": "tiny"}, wan14b, TOKENS_49, CUDA, 80e9, None)


def test_on_the_cpu_auto_is_the_plain_model_and_low_streams_everything():
    model = tiny.build_tiny_transformer()
    tr.add_lora(model, tr.TrainSettings(rank=4))
    sizes = mp.ModelSizes.of(model)
    plain = mp.choose({"memory": "auto", "gradient_checkpointing": False}, sizes, 12, torch.device("cpu"), None)
    assert (plain.resident_blocks, plain.offload_activations, plain.gradient_checkpointing, plain.compile,
            plain.save_attention, plain.attention_backend) == (2, False, False, False, False, None)
    low = mp.choose({"memory": "low"}, sizes, 12, torch.device("cpu"), None)
    assert (low.resident_blocks, low.offload_activations, low.gradient_checkpointing) == (0, True, True)


def test_setup_training_logs_the_choice_and_streams_on_the_cpu(caplog):
    model = tiny.build_tiny_transformer()
    tr.add_lora(model, tr.TrainSettings(rank=4))
    with caplog.at_level(logging.INFO, logger="loraedit.memory.apply"):
        applied = mem.setup_training(model, {"memory": "low"}, torch.device("cpu"), 12)
    assert applied.streamer is not None and applied.offload is not None and model.is_gradient_checkpointing
    assert "train.memory -> low: resident blocks 0" in caplog.text and "no GPU memory limit" in caplog.text
    mem.park(model)
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert not model.blocks[0]._forward_pre_hooks  # the streamer's hooks are gone


def test_the_planned_token_count_uses_each_transformer_s_patch():
    """The toy model's patch is 1x1 (4x the tokens of Wan's 2x2); HunyuanVideo's is an int + patch_size_t."""
    from loraedit.models import tiny_hunyuan
    from loraedit.toy_i2v import I2VRecipe, build_transformer

    samples = [{"latents": torch.zeros(1, 16, 5, 16, 16)}]
    wan, toy = tiny.build_tiny_transformer(), build_transformer(I2VRecipe(num_layers=1))
    hunyuan = tiny_hunyuan.build_tiny_transformer()
    assert mem.patch_size_of(wan) == (1, 2, 2) and mem.patch_size_of(toy) == (1, 1, 1)
    cfg = hunyuan.config
    assert mem.patch_size_of(hunyuan) == (cfg.patch_size_t, cfg.patch_size, cfg.patch_size)
    toy_tokens, wan_tokens = (mem.sample_tokens(samples, mem.patch_size_of(m)) for m in (toy, wan))
    assert toy_tokens == 4 * wan_tokens == 16 * 16 * 5
