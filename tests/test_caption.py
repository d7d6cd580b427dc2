"""Caption stage: the real Florence-2 code path on the tiny offline model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from loraedit.caption import (
    TASK,
    build_tiny_florence2,
    caption_clip,
    caption_image,
    load_florence2,
    make_prompt,
    parse_caption,
)
from loraedit.errors import ClipError

TINY_CFG = {
    "model": "tiny",
    "special_token": "p3rs0n,",
    "num_beams": 3,
    "tiny_max_new_tokens": 12,
    "device": "cpu",
    "dtype": "auto",
    "seed": 0,
}


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_florence2(seed=0)


def _image(seed: int, h: int = 40, w: int = 56) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _prepared(tmp_path, extras=(3,)):
    """results/{clip}/prepared with frame 1, the edited frame and extra edited frames."""
    prep = tmp_path / "clipA" / "prepared"
    (prep / "frames").mkdir(parents=True)
    (prep / "edited").mkdir()
    Image.fromarray(_image(1)).save(prep / "frames" / "00000.png")
    Image.fromarray(_image(2)).save(prep / "edited" / "00000.png")
    for t in extras:
        Image.fromarray(_image(10 + t)).save(prep / "edited" / f"{t:05d}.png")
    (prep / "meta.json").write_text(json.dumps({"clip_id": "clipA"}))
    return prep


def test_tiny_model_is_the_native_florence2_and_seeded():
    model_a, proc_a = build_tiny_florence2(seed=0)
    model_b, _ = build_tiny_florence2(seed=0)
    model_c, _ = build_tiny_florence2(seed=1)
    assert type(model_a).__name__ == "Florence2ForConditionalGeneration"
    assert type(proc_a).__name__ == "Florence2Processor"
    sd_a, sd_b, sd_c = model_a.state_dict(), model_b.state_dict(), model_c.state_dict()
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    assert any(not torch.equal(sd_a[k], sd_c[k]) for k in sd_a)
    # The processor expands the task token and inserts one <image> per image token.
    inputs = proc_a(text=TASK, images=Image.fromarray(_image(0)), return_tensors="pt")
    n_img = int((inputs["input_ids"] == model_a.config.image_token_id).sum())
    assert n_img == proc_a.num_image_tokens
    assert inputs["pixel_values"].shape[-2:] == (64, 64)


def test_caption_image_real_path_is_deterministic(tiny):
    model, processor = tiny
    img = _image(5)
    first = caption_image(model, processor, img, num_beams=3, max_new_tokens=12)
    second = caption_image(model, processor, img, num_beams=3, max_new_tokens=12)
    other_model, other_proc = build_tiny_florence2(seed=0)
    third = caption_image(other_model, other_proc, img, num_beams=3, max_new_tokens=12)
    assert isinstance(first, str) and first
    assert first == second == third
    assert "<s>" not in first and "</s>" not in first  # post_process_generation ran
    prompt = make_prompt("p3rs0n,", first)
    assert prompt.startswith("p3rs0n, ") and prompt.endswith(first)


def test_captions_depend_on_the_image(tiny):
    caps = {caption_image(*tiny, _image(s), num_beams=3, max_new_tokens=12) for s in range(4)}
    assert len(caps) > 1


def test_load_florence2_round_trip(tiny, tmp_path):
    model, processor = tiny
    folder = tmp_path / "florence2-tiny"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    loaded_model, loaded_proc = load_florence2(folder, device="cpu", dtype="auto")
    assert loaded_model.dtype == torch.float32 and not loaded_model.training
    img = _image(6)
    assert caption_image(loaded_model, loaded_proc, img, 3, 12) == caption_image(model, processor, img, 3, 12)
    # caption_clip with a local checkpoint path takes the real loader.
    prep = _prepared(tmp_path, extras=())
    out = caption_clip(prep, dict(TINY_CFG, model=str(folder), max_new_tokens=12))
    assert out["source"] == "florence2" and out["model"] == str(folder)
    assert out == dict(caption_clip(prep, TINY_CFG), source="florence2", model=str(folder))


def test_caption_image_rejects_non_rgb(tiny):
    with pytest.raises(ValueError):
        caption_image(*tiny, np.zeros((8, 8), np.uint8))


def test_leading_image_shows_is_stripped_after_post_processing(tiny):
    _, processor = tiny
    text = "</s><s>The image shows a red car parked. The image shows it twice.</s>"
    assert parse_caption(processor, text, image_size=(56, 40)) == "a red car parked. The image shows it twice."
    # Only a leading one is removed.
    assert (
        parse_caption(processor, "</s><s>A dog. The image shows a cat.</s>", (8, 8)) == "A dog. The image shows a cat."
    )


def test_make_prompt():
    assert make_prompt("p3rs0n,", "a man in a hat") == "p3rs0n, a man in a hat"
    assert make_prompt("p3rs0n,", "p3rs0n, a man") == "p3rs0n, a man"
    assert make_prompt("", " a man ") == "a man"


def test_caption_clip_with_tiny_model(tmp_path):
    prep = _prepared(tmp_path, extras=(3, 7))
    out = caption_clip(prep, TINY_CFG)
    again = caption_clip(prep, TINY_CFG)
    assert out == again
    assert out["source"] == "florence2-tiny" and out["model"] == "tiny"
    assert set(out["extra_prompts"]) == {3, 7}
    for p in [out["train_prompt"], out["infer_prompt"], *out["extra_prompts"].values()]:
        assert isinstance(p, str) and p.startswith("p3rs0n, ") and len(p) > len("p3rs0n, ")
    # Each prompt is the caption of its own image.
    model, processor = build_tiny_florence2(seed=0)
    edited = np.asarray(Image.open(prep / "edited" / "00000.png").convert("RGB"))
    assert out["infer_prompt"] == make_prompt("p3rs0n,", caption_image(model, processor, edited, 3, 12))
    json.dumps(out)  # caption.json-ready


def test_sheet_prompts_skip_model_loading(tmp_path):
    prep = _prepared(tmp_path)
    cfg = dict(TINY_CFG, model=str(tmp_path / "no-such-florence"))
    out = caption_clip(prep, cfg, sheet_prompt="a woman in a red dress", sheet_source_prompt="a man in a suit")
    assert out == {
        "train_prompt": "p3rs0n, a man in a suit",
        "infer_prompt": "p3rs0n, a woman in a red dress",
        "extra_prompts": {3: "p3rs0n, a woman in a red dress"},
        "source": "sheet",
        "model": None,
    }
    # The edit's text never becomes the training prompt: without a source prompt the
    # source frame must be captioned, so the same config loads the (missing) model and fails.
    with pytest.raises(RuntimeError, match="no-such-florence"):
        caption_clip(prep, cfg, sheet_prompt="p3rs0n, a woman", sheet_source_prompt=float("nan"))
    with pytest.raises(RuntimeError, match="no-such-florence"):
        caption_clip(prep, cfg)


def test_prompt_only_trains_on_the_source_caption(tmp_path):
    """Paper / official code: train on p* + caption of source frame 1; the sheet's prompt is for inference."""
    prep = _prepared(tmp_path)
    out = caption_clip(prep, TINY_CFG, sheet_prompt="p3rs0n, a woman")
    assert out["infer_prompt"] == "p3rs0n, a woman"  # p* is not doubled
    model, processor = build_tiny_florence2(seed=0)
    source = np.asarray(Image.open(prep / "frames" / "00000.png").convert("RGB"))
    assert out["train_prompt"] == make_prompt("p3rs0n,", caption_image(model, processor, source, 3, 12))
    assert out["source"] == "florence2-tiny"


def test_source_prompt_only_captions_the_edited_frames(tmp_path):
    prep = _prepared(tmp_path)
    out = caption_clip(prep, TINY_CFG, sheet_source_prompt="a man in a suit")
    assert out["train_prompt"] == "p3rs0n, a man in a suit"
    assert out["source"] == "florence2-tiny"
    assert out["infer_prompt"].startswith("p3rs0n, ") and out["infer_prompt"] != out["train_prompt"]


def test_missing_edited_frame_is_a_clip_error(tmp_path):
    prep = _prepared(tmp_path, extras=())
    (prep / "edited" / "00000.png").unlink()
    with pytest.raises(ClipError, match="clipA: .*edited/00000.png"):
        caption_clip(prep, TINY_CFG)
