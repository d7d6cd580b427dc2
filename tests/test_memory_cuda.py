"""The CUDA paths of the weight streamer and the activation offload (side streams, events, pinned
host memory) on the tiny model: the same LoRA gradients as the plain model, the same prefetch
bookkeeping as on the CPU. Runs only where CUDA is (the CPU paths: test_memory_streaming.py)."""

import pytest
import torch

from loraedit import training as tr
from loraedit.backends import wan
from loraedit.backends.wan import tiny
from loraedit.memory.activations import ActivationOffload
from loraedit.memory.apply import place
from loraedit.memory.checkpointing import BlockCheckpoint
from loraedit.memory.streamer import BlockWeightStreamer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")
LAYERS = 4
SETTINGS = tr.TrainSettings(rank=4, checkpoint_every=0, gradient_checkpointing=True)


def lora_grads(model):
    g = torch.Generator().manual_seed(0)
    sample = {
        "latents": torch.randn(1, 16, 2, 4, 6, generator=g),
        "condition": torch.randn(1, 20, 2, 4, 6, generator=g),
        "prompt_embeds": torch.randn(1, 8, 32, generator=g),
        "image_embeds": torch.randn(1, 5, 32, generator=g),
    }
    model.zero_grad(set_to_none=True)
    loss = tr.flow_matching_loss(model, sample, 0.6, torch.randn(1, 16, 2, 4, 6, generator=g), SETTINGS, CUDA, wan)
    loss.backward()
    torch.cuda.synchronize()
    return {n: p.grad.cpu() for n, p in model.named_parameters() if p.requires_grad}


def model_with(streamed_from=None, offload=False):
    model = tiny.build_tiny_transformer(num_layers=LAYERS, ffn_dim=96, attention_head_dim=16)
    tr.add_lora(model, SETTINGS, wan)
    streamer = None
    if streamed_from is not None:
        streamer = BlockWeightStreamer(model.blocks, CUDA, streamed_from, slots=2, record_events=True).attach()
    place(model, CUDA, streamer.managed_parameters() if streamer else set())
    model.enable_gradient_checkpointing(BlockCheckpoint(streamer, ActivationOffload() if offload else None))
    return model, streamer


@pytest.mark.parametrize("resident,offload", [(0, False), (1, True), (LAYERS, True)])
def test_cuda_streaming_and_offload_match_the_plain_model(resident, offload):
    plain, _ = model_with()
    model, streamer = model_with(resident, offload)
    for _ in range(2):  # the second step runs from the slots the first one left
        expected, got = lora_grads(plain), lora_grads(model)
        for name in expected:
            torch.testing.assert_close(
                got[name], expected[name], rtol=1e-4, atol=1e-6
            )  # fused SDPA backward may use atomics
    if streamer is not None:
        assert streamer.events and not [e for e in streamer.events if e[2] == "miss"][1:]  # only a cold start
        masters = [m for b in streamer._blocks.values() for m in b.masters.values()]
        assert all(m.is_pinned() and m.device.type == "cpu" for m in masters)
        assert all(p.device.type == "cuda" for n, p in model.named_parameters() if p.requires_grad)
