"""The analytic FLOP count against PyTorch's own FlopCounterMode on the real module class, and
against the first rough estimate for the 14B model."""

import accelerate
import pytest
import torch
from diffusers import WanTransformer3DModel
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from loraedit import training as tr
from loraedit.backends import wan
from loraedit.backends.wan import flops, tiny

T_LAT, H_LAT, W_LAT = 3, 8, 12  # latent grid of the tiny runs: 3 x 4 x 6 = 72 tokens
TOKENS = T_LAT * (H_LAT // 2) * (W_LAT // 2)
IMAGE_TOKENS = 17


def _inputs(config):
    g = torch.Generator().manual_seed(0)
    return {
        "hidden_states": torch.randn(1, 36, T_LAT, H_LAT, W_LAT, generator=g),
        "timestep": torch.tensor([500.0]),
        "encoder_hidden_states": torch.randn(1, flops.TEXT_TOKENS, config["text_dim"], generator=g),
        "encoder_hidden_states_image": torch.randn(1, IMAGE_TOKENS, config["image_dim"], generator=g),
        "return_dict": False,
    }


def _counted(model, backward: bool) -> int:
    """FLOPs PyTorch counts for one pass; the math SDPA backend exposes attention as bmm on CPU."""
    inputs = _inputs(model.config)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        out = model(**inputs)[0]
        if backward:
            out.float().square().mean().backward()
    return counter.get_total_flops()


def test_latent_tokens():
    assert flops.latent_tokens(49, 480, 832) == 13 * 30 * 52 == 20280
    assert flops.latent_tokens(13, 480, 832) == 4 * 30 * 52
    with pytest.raises(ValueError):
        flops.latent_tokens(48, 480, 832)


def test_forward_matches_flop_counter_without_lora():
    model = tiny.build_tiny_transformer().eval()
    with torch.no_grad():
        counted = _counted(model, backward=False)
    assert flops.forward_flops(model.config, TOKENS, image_tokens=IMAGE_TOKENS, lora_rank=0).total == counted


# The default targets, and FFN-only targets (then block 0's attention has no gradient at all).
@pytest.mark.parametrize("targets", [wan.LORA_TARGET_REGEX, r".*blocks\.\d+\.ffn\.net\.2"])
def test_lora_training_step_matches_flop_counter(targets):
    config = dict(tiny.build_tiny_transformer().config)
    settings = tr.TrainSettings(rank=4, target_modules=targets)
    kw = {"image_tokens": IMAGE_TOKENS, "lora_rank": settings.rank, "lora_targets": targets}

    model = tiny.build_tiny_transformer()
    tr.add_lora(model, settings, wan)
    with torch.no_grad():
        assert _counted(model, backward=False) == flops.forward_flops(config, TOKENS, **kw).total

    model.train()
    plain = flops.train_step_flops(config, TOKENS, gradient_checkpointing=False, **kw)
    assert _counted(model, backward=True) == plain.model == plain.hardware

    model.enable_gradient_checkpointing()
    ckpt = flops.train_step_flops(config, TOKENS, gradient_checkpointing=True, **kw)
    assert _counted(model, backward=True) == ckpt.hardware
    assert ckpt.model == plain.model and ckpt.recompute.total > 0


def test_fourteen_b_forward_matches_the_rough_estimate():
    cfg = flops.WAN21_I2V_14B_CONFIG
    fwd = flops.forward_flops(cfg, 20280)
    # The estimate: "a forward pass at 20,280 tokens is about 9e14 FLOPs (linear 5.7e14 + self-attention 3.4e14)".
    assert fwd.total == pytest.approx(9e14, rel=0.1)
    assert fwd.self_attention == pytest.approx(3.4e14, rel=0.02)
    # The estimate's linear figure is 2 x tokens x 14e9 weights; the exact count is lower because the
    # cross-attention K/V weights (4 of the 10 d x d matrices per block) act on the 769 context
    # tokens, not on the 20,280 video tokens.
    assert fwd.linear == pytest.approx(5.7e14, rel=0.2)
    assert fwd.linear < 5.7e14
    # "a LoRA training step with recomputation about 3x that"
    step = flops.train_step_flops(cfg, 20280)
    assert 2.8 < step.hardware / fwd.total < 3.6
    assert step.model < step.hardware


def test_fourteen_b_config_builds_the_named_modules():
    with accelerate.init_empty_weights():  # meta device: no memory
        model = WanTransformer3DModel(**flops.WAN21_I2V_14B_CONFIG)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(16.4e9, rel=0.01)
    names = {n for n, _ in model.named_modules()}
    assert set(flops.module_names(model.config)) <= names
