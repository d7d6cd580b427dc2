"""The train and infer stages end to end on prepared folders, for one-expert (Wan2.1) and
two-expert (Wan2.2 layout, no image encoder) tiny backends."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from loraedit import stages
from loraedit.atomic import write_json
from loraedit.manifest import read_memory_records
from loraedit.video_io import read_frames, write_frames, write_mask_frames, write_png

T, H, W = 5, 32, 48


@pytest.fixture
def prepared(tmp_path):
    rng = np.random.default_rng(0)
    frames = (rng.random((T, H, W, 3)) * 255).astype(np.uint8)
    keep = np.ones((T, H, W), np.uint8)
    keep[1:, 8:24, 16:32] = 0
    p = tmp_path / "prepared"
    write_frames(p / "frames", frames)
    write_png(p / "edited" / "00000.png", 255 - frames[0])
    write_png(p / "edited" / "00003.png", 255 - frames[3])  # a stage-2 reference
    write_json(p / "meta.json", {"clip_id": "c", "width": W, "height": H, "num_frames": T, "fps": 8.0})
    write_mask_frames(tmp_path / "masks", keep)
    write_json(
        tmp_path / "caption.json",
        {
            "train_prompt": "p3rs0n, a clip",
            "infer_prompt": "p3rs0n, edited",
            "extra_prompts": {"3": "p3rs0n, edited frame"},
            "source": "sheet",
        },
    )
    return tmp_path


@pytest.mark.parametrize("backend", ["tiny", "tiny-wan2.2"])
def test_train_then_infer(prepared, backend):
    d = prepared
    model = {"backend": backend, "seed": 0, "device": "cpu", "dtype": "float32"}
    train = {"steps": 4, "checkpoint_every": 2, "rank": 4, "alpha": 4}
    history = stages.run_train(
        d / "prepared",
        d / "masks",
        d / "caption.json",
        "mask",
        model,
        train,
        d / "mask" / "lora",
        d / "mask" / "loss.csv",
        d / "mask" / "loss.png",
        d / "mask" / "work",
        progress=False,
    )
    experts = 2 if backend == "tiny-wan2.2" else 1
    assert len(history) == 4 * experts
    assert (d / "mask" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loss = pd.read_csv(d / "mask" / "loss.csv")
    assert list(loss["expert"]) == [i for i in range(experts) for _ in range(4)]  # one curve per expert
    files = sorted(p.name for p in (d / "mask" / "lora").iterdir())
    # What ran, per expert, beside the LoRA (the CPU: the plain model, nothing given up).
    record = json.loads((d / "mask" / "lora" / "memory.json").read_text())
    assert (record["stage"], record["method"], len(record["experts"])) == ("train", "mask", experts)
    assert all(e["ran"]["mode"] == "plain" and e["fallbacks"] == [] for e in record["experts"])
    assert record["experts"][0]["plan"]["reason"].startswith("cpu device")
    if experts == 2:
        assert "pytorch_lora_weights_transformer_2.safetensors" in files
        # the high-noise expert only ever saw t >= 0.9, the low-noise one t < 0.9
        assert all(h["t"] >= 0.9 for h in history if h["expert"] == 0)
        assert all(h["t"] < 0.9 for h in history if h["expert"] == 1)
    # stage 2 continues from stage 1
    stages.run_train(
        d / "prepared",
        d / "masks",
        d / "caption.json",
        "mask+ref",
        model,
        dict(train, ref_epochs=1, ref_repeats=1),  # official schedule: 1 x (clip + 1 ref)
        d / "ref" / "lora",
        d / "ref" / "loss.csv",
        d / "ref" / "loss.png",
        d / "ref" / "work",
        init_lora_dir=d / "mask" / "lora",
        progress=False,
    )
    a = load_file(str(d / "mask" / "lora" / "pytorch_lora_weights.safetensors"))
    b = load_file(str(d / "ref" / "lora" / "pytorch_lora_weights.safetensors"))
    assert a.keys() == b.keys() and not all(torch.equal(a[k], b[k]) for k in a)
    out = stages.run_infer(
        d / "prepared",
        d / "masks",
        d / "caption.json",
        "mask+ref",
        model,
        {"num_steps": 2, "guidance_scale": 3.0},
        d / "ref" / "output",
        lora_dir=d / "ref" / "lora",
        progress=False,
    )
    assert out.shape == (T, H, W, 3)
    assert np.array_equal(read_frames(d / "ref" / "output" / "frames"), out)
    assert (d / "ref" / "output" / "side_by_side.mp4").stat().st_size > 0
    infer_record = json.loads((d / "ref" / "output" / "memory.json").read_text())
    assert (infer_record["stage"], infer_record["ran"], infer_record["fallbacks"]) == (
        "infer",
        {"compile": False, "attention_backend": "native"},
        [],
    )
    # The run manifest gathers them per clip and method (the clip from the folder: no clip_id given).
    gathered = read_memory_records([d / "mask", d / "ref"])
    assert set(gathered[d.name]) == {"mask", "mask+ref"}
    assert set(gathered[d.name]["mask+ref"]) == {"train", "infer"} and set(gathered[d.name]["mask"]) == {"train"}


def test_fp8_weight_storage_trains_with_bf16_autocast_and_checkpointing(tmp_path):
    """The small-GPU memory mode (diffusers layerwise casting) on the tiny model: base weights are
    stored in fp8, the LoRA in fp32, compute in bf16 with gradient checkpointing."""
    from loraedit import training as tr
    from loraedit.backends import wan
    from loraedit.backends.registry import load_transformers

    dev = torch.device("cpu")
    transformer = load_transformers({"backend": "tiny"}, dev, torch.bfloat16)[0]
    assert transformer.blocks[0].norm2.weight.dtype == torch.float32  # kept in fp32, as from_pretrained
    settings = tr.TrainSettings(steps=3, checkpoint_every=0, mixed_precision="bf16", gradient_checkpointing=True)
    prepared = stages.prepare_for_training(transformer, settings, {"fp8_weights": True}, dev, wan)
    params = prepared.params
    assert transformer.blocks[0].attn1.to_q.base_layer.weight.dtype == torch.float8_e4m3fn
    assert prepared.memory.ran["fp8_weights"] and not prepared.memory.fallbacks
    assert params and all(p.dtype == torch.float32 for p in params)
    before = [p.detach().clone() for p in params]
    g = torch.Generator().manual_seed(0)
    sample = {
        "name": "clip",
        "weight": 1.0,
        "latents": torch.randn(1, 16, 2, 4, 6, generator=g),
        "condition": torch.randn(1, 20, 2, 4, 6, generator=g),
        "prompt_embeds": torch.randn(1, 512, 32, generator=g),
        "image_embeds": torch.randn(1, 17, 32, generator=g),
    }
    history = tr.train(transformer, [sample], settings, dev, tmp_path, progress=False, family=wan)
    assert len(history) == 3 and all(np.isfinite(h["loss"]) for h in history)
    assert any(not torch.equal(a, b) for a, b in zip(before, params))
