"""Oracle: with the stock "frame 1 only" mask, our conditioning and denoising loop must equal the
stock `WanImageToVideoPipeline` on the tiny model with the same seed."""

import numpy as np
import pytest
import torch
from PIL import Image

from loraedit import conditioning as cond
from loraedit import inference as inf
from loraedit.backends import registry
from loraedit.backends.wan import conditioning as wan_cond
from loraedit.inference import make_scheduler

T, H, W = 9, 32, 48
DEV = torch.device("cpu")


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(3)
    return (rng.random((H, W, 3)) * 255).astype(np.uint8)


def stock_prepare(pipe, image, generator):
    img = pipe.video_processor.preprocess(Image.fromarray(image), height=H, width=W).to(DEV, torch.float32)
    return pipe.prepare_latents(img, 1, 16, H, W, T, torch.float32, DEV, generator)


def test_mask_equals_stock(models, image):
    pipe = registry.assemble_pipeline(models)
    _, stock_condition = stock_prepare(pipe, image, torch.Generator().manual_seed(0))
    keep = torch.from_numpy(cond.first_frame_keep_mask(T, H, W).astype(np.float32)).unsqueeze(0)
    ours = cond.latent_keep_mask(keep, (H // 8, W // 8))
    assert ours.shape == (1, 4, (T - 1) // 4 + 1, H // 8, W // 8)
    assert torch.equal(ours, stock_condition[:, :4])


def test_condition_latents_equal_stock(models, image):
    pipe = registry.assemble_pipeline(models)
    _, stock_condition = stock_prepare(pipe, image, torch.Generator().manual_seed(0))
    frames = np.repeat(image[None], T, axis=0)  # later frames are greyed out entirely by the mask
    keep = torch.from_numpy(cond.first_frame_keep_mask(T, H, W).astype(np.float32)).unsqueeze(0)
    ours = wan_cond.build_condition(models.encoders.vae, cond.frames_to_video(frames), keep)
    torch.testing.assert_close(ours, stock_condition, rtol=1e-5, atol=1e-5)


def test_full_denoising_equals_stock(models, image):
    pipe = registry.assemble_pipeline(models)
    pipe.scheduler = make_scheduler("euler", 5.0)
    settings = inf.InferSettings(
        num_steps=3,
        guidance_scale=5.0,
        seed=11,
        negative_prompt="blurry",
        image_preprocess="center_crop",
        schedule="diffusers",
    )  # stock
    prompt = "p3rs0n, a red circle"
    stock = pipe(
        image=Image.fromarray(image),
        prompt=prompt,
        negative_prompt="blurry",
        height=H,
        width=W,
        num_frames=T,
        num_inference_steps=3,
        guidance_scale=5.0,
        generator=torch.Generator(device=DEV).manual_seed(11),
        output_type="np",
    ).frames[0]
    frames = np.repeat(image[None], T, axis=0)
    ours = inf.edit_video(
        models, frames, image, cond.first_frame_keep_mask(T, H, W), prompt, settings, DEV, progress=False
    )
    stock_u8 = (stock * 255).round().astype(np.uint8)
    assert ours.shape == stock_u8.shape == (T, H, W, 3)
    assert np.abs(ours.astype(int) - stock_u8.astype(int)).max() <= 1


def test_edit_mask_changes_condition(models, image):
    """A per-pixel mask keeps the background of later frames in the condition (unlike stock)."""
    frames = np.repeat(image[None], T, axis=0)
    keep = np.ones((T, H, W), np.uint8)
    keep[1:, 8:24, 16:32] = 0
    mask = cond.latent_keep_mask(torch.from_numpy(keep.astype(np.float32))[None], (H // 8, W // 8))
    assert mask[0, :, 1:].min() == 0 and mask[0, :, 1:].max() == 1
    assert torch.all(mask[0, :, 0] == 1)
    video = cond.frames_to_video(frames)
    greyed = cond.grey_out(video, torch.from_numpy(keep.astype(np.float32))[None])
    assert torch.equal(greyed[:, :, 1:, :8], video[:, :, 1:, :8])  # background kept
    assert torch.all(greyed[:, :, 1:, 8:24, 16:32] == 0)  # edit region grey
    # conservative min-pooling never keeps a latent pixel that covers an edited pixel
    keep2 = np.ones((T, H, W), np.uint8)
    keep2[1:, 9, 17] = 0
    k2 = torch.from_numpy(keep2.astype(np.float32))[None]
    assert cond.latent_keep_mask(k2, (H // 8, W // 8), "conservative")[0, :, 1:, 1, 2].max() == 0
    assert cond.latent_keep_mask(k2, (H // 8, W // 8), "nearest")[0, :, 1:, 1, 2].min() == 1


def test_final_latents_equal_stock(models, image):
    pipe = registry.assemble_pipeline(models)
    pipe.scheduler = make_scheduler("euler", 5.0)
    prompt = "p3rs0n, a red circle"
    stock = pipe(
        image=Image.fromarray(image),
        prompt=prompt,
        negative_prompt="blurry",
        height=H,
        width=W,
        num_frames=T,
        num_inference_steps=3,
        guidance_scale=5.0,
        generator=torch.Generator(device=DEV).manual_seed(11),
        output_type="latent",
    ).frames
    frames = np.repeat(image[None], T, axis=0)
    video, keep = cond.inference_condition(frames, image, cond.first_frame_keep_mask(T, H, W))
    condition = wan_cond.build_condition(models.encoders.vae, video, keep)
    pe, ne = wan_cond.encode_prompts(models.encoders, prompt, "blurry", device=DEV)
    ie = wan_cond.encode_image(models.encoders, image, device=DEV, preprocess="center_crop")  # the stock processor
    settings = inf.InferSettings(
        num_steps=3,
        guidance_scale=5.0,
        seed=11,
        negative_prompt="blurry",
        image_preprocess="center_crop",
        schedule="diffusers",
    )  # stock
    text, negative = {"prompt_embeds": pe, "image_embeds": ie}, {"prompt_embeds": ne, "image_embeds": ie}
    ours = inf.denoise(models, condition, text, negative, settings, DEV, progress=False)
    torch.testing.assert_close(ours, stock, rtol=1e-5, atol=1e-5)


def test_official_image_preprocessing_sees_the_whole_frame(models):
    """`resize` (official) squeezes the whole frame to the encoder's input; the stock centre crop of a
    wide frame never sees its sides."""
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)
    sides = wide.copy()
    sides[:, :12] = 255 - sides[:, :12]  # only the left sixth changes
    enc = models.encoders
    crop = [wan_cond.encode_image(enc, x, DEV, preprocess="center_crop") for x in (wide, sides)]
    whole = [wan_cond.encode_image(enc, x, DEV) for x in (wide, sides)]
    torch.testing.assert_close(crop[0], crop[1])  # the crop cannot tell them apart
    assert (whole[0] - whole[1]).abs().max() > 1e-3
    # A frame already at the encoder's size: both preprocessings agree.
    square = wide[:, :32].copy()
    torch.testing.assert_close(
        wan_cond.encode_image(enc, square, DEV),
        wan_cond.encode_image(enc, square, DEV, "center_crop"),
        rtol=1e-4,
        atol=1e-4,
    )
    with pytest.raises(ValueError, match="image_preprocess"):
        wan_cond.encode_image(enc, square, DEV, "squash")
