"""`train.memory` wired through `stages.prepare_for_training` and `training.train` (tiny, CPU): the
low mode (every block streamed, inputs offloaded, the probe step run first) trains the same LoRA
as the plain model, and the Wan2.2 expert that is not training is parked on the CPU."""

import torch

from loraedit import stages
from loraedit import training as tr
from loraedit.backends import wan
from loraedit.backends.registry import load_transformers
from loraedit.memory.checkpointing import BlockCheckpoint

CPU = torch.device("cpu")
SETTINGS = tr.TrainSettings(rank=4, lr=1e-2, steps=2, checkpoint_every=0, gradient_checkpointing=True)


def sample(image_tokens: int | None = None):
    """A seeded random tiny-Wan training sample; without image tokens it is the Wan2.2 kind."""
    g = torch.Generator().manual_seed(0)
    return {
        "name": "clip",
        "weight": 1.0,
        "latents": torch.randn(1, 16, 2, 4, 6, generator=g),
        "condition": torch.randn(1, 20, 2, 4, 6, generator=g),
        "prompt_embeds": torch.randn(1, 8, 32, generator=g),
        "image_embeds": None if image_tokens is None else torch.randn(1, image_tokens, 32, generator=g),
    }


def train_experts(train_cfg, tmp_path):
    experts = load_transformers({"backend": "tiny-wan2.2"}, None, torch.float32)
    states, checkpoint_fns = [], []
    for i, transformer in enumerate(experts):
        # As stages.run_train: the probe step first (it runs for the low mode: streaming can fail over)
        stages.prepare_for_training(transformer, SETTINGS, train_cfg, CPU, wan, tokens=12, probe_sample=sample())
        tr.train(
            transformer,
            [sample()],
            SETTINGS,
            CPU,
            tmp_path / f"{train_cfg.get('memory')}{i}",
            progress=False,
            family=wan,
        )
        checkpoint_fns.append(transformer._gradient_checkpointing_func)
        states.append(tr.lora_state(transformer))
        if i + 1 < len(experts):
            stages.memory.park(transformer)
    return experts, states, checkpoint_fns


def test_low_mode_trains_the_same_lora_and_parks_the_idle_expert(tmp_path):
    _, plain, _ = train_experts({"memory": "auto", "gradient_checkpointing": True}, tmp_path)
    experts, low, fns = train_experts({"memory": "low"}, tmp_path)
    for a, b in zip(plain, low):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(float(v.abs().max()) > 0 for k, v in low[0].items() if "lora_B" in k)  # it trained
    # train() kept the plan's checkpoint function (the streamer needs it for the recompute).
    assert all(isinstance(fn, BlockCheckpoint) for fn in fns)
    assert fns[1].streamer is not None and fns[0].streamer is None  # expert 0 parked: streamer detached
    assert not any(b._forward_pre_hooks for b in experts[0].blocks)
