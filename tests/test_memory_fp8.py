"""fp8 matmuls for the frozen block Linears (`train.fp8_matmul`, benchmark mode `fp8mm`) on the CPU:
the forward is the rowwise-scaled fp8 product, the input gradient is exact for the dequantized
weight, nothing but the LoRA trains, and the LoRA gradients stay close to the plain model's."""

import torch

from loraedit import training as tr
from loraedit.backends import wan
from loraedit.backends.wan import tiny
from loraedit.memory import fp8
from loraedit.memory.apply import setup_training

SETTINGS = tr.TrainSettings(rank=4, checkpoint_every=0, gradient_checkpointing=True)


def test_fp8_linear_forward_and_input_gradient():
    g = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(64, 48).requires_grad_(False)
    reference = torch.nn.Linear(64, 48).requires_grad_(False)
    reference.load_state_dict(layer.state_dict())
    assert fp8.enable_fp8_matmuls(torch.nn.ModuleList([layer])) == 1
    assert layer.weight.dtype == torch.float8_e4m3fn and layer.weight_scale.shape == (1, 48)
    x = torch.randn(2, 5, 64, generator=g, requires_grad=True)  # (B, N, K)
    y = layer(x)
    assert y.shape == (2, 5, 48)
    rel = float((y - reference(x)).norm() / reference(x).norm())
    assert 0 < rel < 0.1  # fp8 (e4m3) rounding, not an exact product
    grad = torch.randn(2, 5, 48, generator=g)
    y.backward(grad)
    dequant = layer.weight.float() * layer.weight_scale.t()  # (48, 64)
    assert torch.allclose(x.grad, grad @ dequant, atol=1e-6)


def test_fp8_matmul_mode_trains_only_the_lora():
    def model():
        m = tiny.build_tiny_transformer()
        tr.add_lora(m, SETTINGS, wan)
        return m

    def lora_grads(m):
        s = torch.Generator().manual_seed(0)
        sample = {
            "latents": torch.randn(1, 16, 2, 4, 6, generator=s),
            "condition": torch.randn(1, 20, 2, 4, 6, generator=s),
            "prompt_embeds": torch.randn(1, 8, 32, generator=s),
            "image_embeds": torch.randn(1, 5, 32, generator=s),
        }
        noise = torch.randn(1, 16, 2, 4, 6, generator=s)
        tr.flow_matching_loss(m, sample, 0.5, noise, SETTINGS, torch.device("cpu"), wan).backward()
        return torch.cat([p.grad.flatten() for n, p in m.named_parameters() if p.requires_grad])

    plain, quantized = model(), model()
    setup_training(plain, {"memory": "auto", "gradient_checkpointing": True}, torch.device("cpu"), 12)
    setup_training(
        quantized, {"memory": "auto", "gradient_checkpointing": True, "fp8_matmul": True}, torch.device("cpu"), 12
    )
    fp8_layers = [m for m in quantized.blocks.modules() if hasattr(m, "weight_scale")]
    assert len(fp8_layers) == 12 * len(quantized.blocks)  # q k v o in attn1 and attn2, add_k/add_v, two FFN
    a, b = lora_grads(plain), lora_grads(quantized)
    assert torch.isfinite(b).all() and not torch.equal(a, b)
    assert float(torch.nn.functional.cosine_similarity(a, b, dim=0)) > 0.95
    assert all(p.grad is None for n, p in quantized.named_parameters() if not p.requires_grad)
