"""Weight streamer, activation offload and the checkpoint function on the tiny Wan transformer
(CPU): the bookkeeping (what is resident when, prefetch order forward and backward, masters never
written, LoRA never moved) and exact equality with the plain model."""

import pytest
import torch

from loraedit import training as tr
from loraedit.backends import wan
from loraedit.backends.wan import tiny
from loraedit.memory.activations import ActivationOffload
from loraedit.memory.checkpointing import BlockCheckpoint
from loraedit.memory.streamer import FORWARD, RECOMPUTE, BlockWeightStreamer

LAYERS = 4
SETTINGS = tr.TrainSettings(rank=4, lr=1e-2, steps=3, checkpoint_every=0, gradient_checkpointing=True)


def lora_model():
    model = tiny.build_tiny_transformer(num_layers=LAYERS, ffn_dim=96, attention_head_dim=16)
    tr.add_lora(model, SETTINGS, wan)
    return model


def sample(seed=0):
    g = torch.Generator().manual_seed(seed)
    model_cfg = tiny.TINY_DEFAULTS
    return {
        "name": "clip",
        "weight": 1.0,
        "latents": torch.randn(1, 16, 2, 4, 6, generator=g),  # (1, 16, T_lat, h, w)
        "condition": torch.randn(1, 20, 2, 4, 6, generator=g),
        "prompt_embeds": torch.randn(1, 8, model_cfg["text_dim"], generator=g),  # (1, L, D_text)
        "image_embeds": torch.randn(1, 5, model_cfg["image_dim"], generator=g),
    }


def streamed(resident, slots=2, offload=None, save_attention=False):
    model = lora_model()
    streamer = BlockWeightStreamer(model.blocks, torch.device("cpu"), resident, slots, record_events=True).attach()
    model.enable_gradient_checkpointing(BlockCheckpoint(streamer, offload, save_attention))
    return model, streamer


def lora_grads(model):
    model.zero_grad(set_to_none=True)
    loss = tr.flow_matching_loss(
        model,
        sample(),
        0.6,
        torch.randn(1, 16, 2, 4, 6, generator=torch.Generator().manual_seed(3)),
        SETTINGS,
        torch.device("cpu"),
        wan,
    )
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def plain_grads():
    model = lora_model()
    model.enable_gradient_checkpointing()
    return lora_grads(model)


def assert_same(a, b):
    assert torch.equal(a[0], b[0])
    assert a[1].keys() == b[1].keys() and len(a[1]) > 0
    for name in a[1]:
        assert torch.equal(a[1][name], b[1][name]), name


@pytest.mark.parametrize("resident,slots", [(0, 2), (1, 2), (2, 3), (LAYERS, 2)])
def test_streamed_gradients_equal_the_plain_model(resident, slots):
    model, streamer = streamed(resident, slots)
    assert_same(lora_grads(model), plain_grads())
    assert streamer.streamed == list(range(resident, LAYERS))


def test_prefetch_order_forward_then_reverse_recompute():
    model, streamer = streamed(resident=1, slots=2)
    lora_grads(model)
    first = list(streamer.events)
    streamer.events.clear()
    lora_grads(model)
    # Step 1: blocks 1 and 2 are prefetched while block 0 (resident) runs; block 3 replaces
    # block 1 during block 2; the backward recompute runs 3, 2, then needs 1, loaded during 2.
    assert first == [
        (FORWARD, 1, "load", 0),
        (FORWARD, 2, "load", 1),
        (FORWARD, 1, "hit", 0),
        (FORWARD, 2, "hit", 1),
        (FORWARD, 3, "load", 0),
        (FORWARD, 3, "hit", 0),
        (RECOMPUTE, 3, "hit", 0),
        (RECOMPUTE, 2, "hit", 1),
        (RECOMPUTE, 1, "load", 0),
        (RECOMPUTE, 1, "hit", 0),
    ]
    # Step 2 starts with 1 and 2 resident (the reverse pass ended there): no load is ever late.
    assert streamer.events == [
        (FORWARD, 1, "hit", 0),
        (FORWARD, 2, "hit", 1),
        (FORWARD, 3, "load", 0),
        (FORWARD, 3, "hit", 0),
        (RECOMPUTE, 3, "hit", 0),
        (RECOMPUTE, 2, "hit", 1),
        (RECOMPUTE, 1, "load", 0),
        (RECOMPUTE, 1, "hit", 0),
    ]
    assert not [e for e in first + streamer.events if e[2] == "miss"]


def test_inference_prefetches_the_next_forward_pass():
    model, streamer = streamed(resident=0, slots=2)
    plain = lora_model().eval()
    x = sample()
    kw = {
        "hidden_states": torch.cat([x["latents"], x["condition"]], 1),
        "timestep": torch.tensor([500.0]),
        "encoder_hidden_states": x["prompt_embeds"],
        "encoder_hidden_states_image": x["image_embeds"],
        "return_dict": False,
    }
    with torch.no_grad():
        outs = [model.eval()(**kw)[0] for _ in range(2)]
        expected = plain(**kw)[0]
    assert all(torch.equal(o, expected) for o in outs)
    # Only the very first block is late (cold start); each block loads the next one, and the last
    # block loads block 0 for the next pass (the next denoising step).
    one_pass = [
        (FORWARD, 1, "load", 1),
        (FORWARD, 1, "hit", 1),
        (FORWARD, 2, "load", 0),
        (FORWARD, 2, "hit", 0),
        (FORWARD, 3, "load", 1),
        (FORWARD, 3, "hit", 1),
        (FORWARD, 0, "load", 0),
    ]
    assert streamer.events == [(FORWARD, 0, "miss", 0)] + one_pass + [(FORWARD, 0, "hit", 0)] + one_pass


def test_masters_are_never_written_and_lora_never_moves():
    model, streamer = streamed(resident=1, slots=2)
    masters = {id(m): m.clone() for b in streamer._blocks.values() for m in b.masters.values()}
    lora = {n: (p, p.data_ptr()) for n, p in model.named_parameters() if p.requires_grad}
    with torch.no_grad():
        before = {n: p.clone() for n, (p, _) in lora.items()}
    opt = torch.optim.AdamW([p for p, _ in lora.values()], lr=1e-2)
    for _ in range(3):
        lora_grads(model)
        opt.step()
        for slot in streamer._slots:  # scribble over the slots: only masters may feed a load
            for buffer in slot.buffers.values():
                buffer.fill_(float("nan"))
            if slot.block is not None:
                streamer._blocks[slot.block].unbind()
                slot.block = None
    for b in streamer._blocks.values():
        for m in b.masters.values():
            assert torch.equal(m, masters[id(m)])
    for n, (p, ptr) in lora.items():
        assert p is dict(model.named_parameters())[n] and p.data_ptr() == ptr  # same tensor, same storage
    assert any(not torch.equal(p, before[n]) for n, (p, _) in lora.items() if "lora_B" in n)
    loss, _ = lora_grads(model)
    assert torch.isfinite(loss)


def test_gradients_outside_the_streamer_checkpoint_are_refused():
    model = lora_model()
    BlockWeightStreamer(model.blocks, torch.device("cpu"), resident=2).attach()
    with pytest.raises(RuntimeError, match="outside the streamer's checkpoint"):
        lora_grads(model)  # no gradient checkpointing: the graph would keep slot views


def test_activation_offload_is_bit_identical_and_moves_the_block_inputs():
    offload = ActivationOffload(min_bytes=0)
    model = lora_model()
    model.enable_gradient_checkpointing(BlockCheckpoint(offload=offload))
    assert_same(lora_grads(model), plain_grads())
    # Blocks 1..3 get the residual stream, which carries gradient; block 0's input does not.
    hidden = 1 * 12 * tiny.TINY_DEFAULTS["num_attention_heads"] * 16 * 4  # (1, tokens, dim) fp32 bytes
    assert offload.packed == LAYERS - 1 and offload.peak_host_bytes == (LAYERS - 1) * hidden
    assert offload.host_bytes == 0  # all brought back by the backward pass


def test_streamer_offload_and_saved_attention_together():
    model, _streamer = streamed(resident=0, slots=2, offload=ActivationOffload(min_bytes=0), save_attention=True)
    assert_same(lora_grads(model), plain_grads())


def attention_runs_in_backward(save_attention):
    """How many forward SDPA kernels run during the backward pass (i.e. in the recompute)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        runs = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func)
            Count.runs += "scaled_dot_product" in name and "backward" not in name
            return func(*args, **(kwargs or {}))

    model = lora_model()
    model.enable_gradient_checkpointing(BlockCheckpoint(save_attention=save_attention))
    loss = tr.flow_matching_loss(model, sample(), 0.6, torch.randn(1, 16, 2, 4, 6), SETTINGS, torch.device("cpu"), wan)
    with Count():
        loss.backward()
    return Count.runs


def test_selective_checkpointing_keeps_attention_instead_of_recomputing_it():
    model = lora_model()
    model.enable_gradient_checkpointing(BlockCheckpoint(save_attention=True))
    assert_same(lora_grads(model), plain_grads())
    # Self- and cross-attention: 2 SDPA calls per block in the tiny model. Plain checkpointing runs
    # them again in the recompute; with the attention outputs kept, none run.
    assert attention_runs_in_backward(False) == 2 * LAYERS
    assert attention_runs_in_backward(True) == 0


def test_streaming_fp8_stored_weights():
    """fp8 storage (diffusers layerwise casting: cast to the compute dtype around each Linear) with
    the streamed masters in fp8: the same gradients as the plain fp8 model."""

    def fp8_model():
        model = tiny.build_tiny_transformer(num_layers=LAYERS, ffn_dim=96, attention_head_dim=16)
        model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
        tr.add_lora(model, SETTINGS, wan)
        return model

    plain = fp8_model()
    plain.enable_gradient_checkpointing()
    model = fp8_model()
    streamer = BlockWeightStreamer(model.blocks, torch.device("cpu"), resident=1, slots=2).attach()
    model.enable_gradient_checkpointing(BlockCheckpoint(streamer))
    assert torch.float8_e4m3fn in streamer._blocks[1].masters
    for _ in range(2):  # the second step reloads blocks whose parameters the casting hooks replaced
        assert_same(lora_grads(model), lora_grads(plain))
