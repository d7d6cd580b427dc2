"""Inference options: samplers, and the background composite (beyond the paper)."""

import numpy as np
import pytest
import torch

from loraedit import inference as inf
from loraedit.inference import make_scheduler

DEV = torch.device("cpu")
T, H, W = 5, 32, 32


@pytest.fixture(scope="module")
def clip():
    rng = np.random.default_rng(1)
    frames = (rng.random((T, H, W, 3)) * 255).astype(np.uint8)
    keep = np.ones((T, H, W), np.uint8)
    keep[1:, 8:24, 8:24] = 0
    return frames, keep


def test_samplers_run_and_are_seeded(models, clip):
    frames, keep = clip
    outs = {}
    for sampler, schedule in (("euler", "official"), ("unipc", "diffusers")):
        s = inf.InferSettings(num_steps=3, guidance_scale=5.0, scheduler=sampler, schedule=schedule, seed=3)
        outs[sampler] = inf.edit_video(models, frames, frames[0], keep, "p3rs0n, a clip", s, DEV, progress=False)
        again = inf.edit_video(models, frames, frames[0], keep, "p3rs0n, a clip", s, DEV, progress=False)
        assert outs[sampler].shape == frames.shape and np.array_equal(outs[sampler], again)
    assert not np.array_equal(outs["euler"], outs["unipc"])
    with pytest.raises(ValueError, match="unknown sampler"):
        inf.edit_video(
            models,
            frames,
            frames[0],
            keep,
            "x",
            inf.InferSettings(num_steps=1, scheduler="ddim", schedule="diffusers"),
            DEV,
        )


def test_official_schedule_is_the_official_formula():
    """DiffSynth FlowMatchScheduler(shift=5, sigma_min=0, extra_one_step=True), 30 steps."""
    for steps, shift in ((30, 5.0), (10, 3.0)):
        scheduler = make_scheduler("euler", shift)
        inf.set_schedule(scheduler, inf.InferSettings(num_steps=steps, shift=shift), DEV)
        s = np.linspace(1.0, 0.0, steps + 1)[:-1]
        expected = np.append(shift * s / (1 + (shift - 1) * s), 0.0)
        np.testing.assert_allclose(scheduler.sigmas.numpy(), expected, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(scheduler.timesteps.numpy(), 1000 * expected[:-1], rtol=1e-5)
    np.testing.assert_allclose(scheduler_tail("official"), [0.357, 0.263, 0.147, 0.0], atol=5e-4)
    np.testing.assert_allclose(scheduler_tail("diffusers"), [0.284, 0.170, 0.024, 0.0], atol=5e-4)
    with pytest.raises(ValueError, match="Euler sampler"):
        inf.set_schedule(make_scheduler("unipc", 5.0), inf.InferSettings(scheduler="unipc"), DEV)
    with pytest.raises(ValueError, match="infer.schedule"):
        inf.set_schedule(make_scheduler("euler", 5.0), inf.InferSettings(schedule="karras"), DEV)


def scheduler_tail(schedule):
    scheduler = make_scheduler("euler", 5.0)
    inf.set_schedule(scheduler, inf.InferSettings(num_steps=30, shift=5.0, schedule=schedule), DEV)
    return scheduler.sigmas[-4:].numpy()


def test_negative_prompt_by_name():
    assert inf.InferSettings.from_config({}).negative_prompt == inf.WAN_NEGATIVE_PROMPT
    assert inf.InferSettings.from_config({"negative_prompt": "wan"}).negative_prompt == inf.WAN_NEGATIVE_PROMPT
    official = inf.InferSettings.from_config({"negative_prompt": "official"}).negative_prompt
    assert official.startswith("Overexposure, static") and official.endswith("upside down")
    assert inf.InferSettings.from_config({"negative_prompt": "blurry"}).negative_prompt == "blurry"


def test_composite_keeps_background_and_edit_region():
    rng = np.random.default_rng(0)
    source = rng.integers(0, 255, (T, H, W, 3), dtype=np.uint8)
    output = rng.integers(0, 255, (T, H, W, 3), dtype=np.uint8)
    keep = np.ones((T, H, W), np.uint8)
    keep[:, 8:24, 8:24] = 0
    out = inf.composite_background(output, source, keep, feather_px=2)
    assert np.array_equal(out[0], output[0])  # frame 1 is the model's (it is the edited frame)
    assert np.array_equal(out[1:, 12:20, 12:20], output[1:, 12:20, 12:20])  # edit region: the model's
    assert np.abs(out[1:, :2].astype(int) - source[1:, :2]).max() <= 1  # far background: the source
