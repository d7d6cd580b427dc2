"""The mask prior on the tiny model: its regions and samples, the three starts of a clip's LoRA
(the prior's weights, the merged prior, the stacked file stock diffusers loads), and training
refusing another run's checkpoint."""

import dataclasses

import numpy as np
import pytest
import torch
from test_training import CFG, DEV, moving_square_clip

from loraedit import lora_io
from loraedit import prior as mask_prior
from loraedit import training as tr
from loraedit.backends import registry, wan
from loraedit.backends.registry import load_encoders, load_transformers

SETTINGS = tr.TrainSettings(rank=4, alpha=8.0, lr=1e-2, steps=4, checkpoint_every=2, recolor_copies=2)


@pytest.fixture(scope="module")
def encoders():
    return load_encoders(CFG, DEV, torch.float32)


@pytest.fixture(scope="module")
def prior_clips():
    frames, keep = moving_square_clip()
    return [
        mask_prior.PriorClip("a", frames, keep, "p3rs0n, a square"),
        mask_prior.PriorClip("b", frames[:, ::-1].copy(), None, "p3rs0n, b"),
    ]


@pytest.mark.parametrize("shape", ["blob", "box"])
def test_a_random_region_moves_and_stays_a_region(shape):
    region = mask_prior.moving_region(np.random.default_rng(3), 9, 32, 48, shape)
    assert region.shape == (9, 32, 48) and region.dtype == bool
    areas = region.reshape(9, -1).sum(1)
    assert (areas > 0).all() and (areas < 32 * 48).all()
    centres = [np.argwhere(r).mean(0) for r in region]
    assert np.abs(centres[-1] - centres[0]).max() > 1  # it moves
    if shape == "box":  # a rectangle fills its bounding box
        ys, xs = np.nonzero(region[0])
        assert region[0, ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].all()


def test_prior_samples_name_every_clip_and_keep_frame_one(encoders, prior_clips):
    samples = mask_prior.prior_samples(wan, encoders, prior_clips, SETTINGS, DEV)
    names = [s["name"] for s in samples]
    assert len(set(names)) == len(names)  # unique across clips: no two clips share a part
    # clip a: dataset + blob + box, clip b (no mask): blob + box; each with 2 recoloured copies
    assert len(samples) == (3 + 2) * 3
    assert {tr.copy_group(s) for s in samples} == {"a/dataset", "a/blob", "a/box", "b/blob", "b/box"}
    for s in samples:
        keep = wan.keep_channel(s["condition"])  # (1, 1, T_lat, h, w)
        assert bool((keep[:, :, 0] == 1).all())  # frame 1 always kept
        assert bool((keep[:, :, 1:] == 0).any())  # something is generated later


def test_recoloured_copies_change_only_the_region(prior_clips):
    clip = prior_clips[0]
    rng = np.random.default_rng(0)
    ((_, region),) = mask_prior.clip_regions(clip, ["dataset"], rng)
    copy = tr.shift_region_color(clip.frames, region, np.random.default_rng(1))
    assert (copy[~region] == clip.frames[~region]).all()
    assert np.abs(copy[region].astype(int) - clip.frames[region]).mean() > 5


def test_unknown_region_is_one_line():
    with pytest.raises(ValueError, match="prior.regions: unknown 'disk'"):
        mask_prior.clip_regions(mask_prior.PriorClip("a", np.zeros((5, 8, 8, 3), np.uint8), None, ""), ["disk"], None)


def _prior_state(seed=5, rank=4):
    """A LoRA state with non-zero A and B, as a trained prior has (rank `rank`)."""
    (transformer,) = load_transformers(CFG, DEV, torch.float32)
    tr.add_lora(transformer, dataclasses.replace(SETTINGS, rank=rank), wan)
    g = torch.Generator().manual_seed(seed)
    return {k: 0.05 * torch.randn(v.shape, generator=g) for k, v in tr.lora_state(transformer).items()}


def _out(transformer, sample):
    noise = torch.randn(sample["latents"].shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return tr.flow_matching_loss(transformer, sample, 0.4, noise, SETTINGS, DEV, wan)


@pytest.fixture(scope="module")
def sample(encoders, prior_clips):
    return mask_prior.prior_samples(
        wan, encoders, prior_clips[:1], dataclasses.replace(SETTINGS, recolor_copies=0), DEV
    )[0]


def test_the_three_starts(sample):
    prior = _prior_state()
    (cold,) = load_transformers(CFG, DEV, torch.float32)
    tr.start_lora(cold, SETTINGS, wan)
    (started,) = load_transformers(CFG, DEV, torch.float32)
    tr.start_lora(started, dataclasses.replace(SETTINGS, init="prior"), wan, prior, SETTINGS.alpha)
    (merged,) = load_transformers(CFG, DEV, torch.float32)
    tr.start_lora(merged, dataclasses.replace(SETTINGS, init="prior-merged"), wan, prior, SETTINGS.alpha)
    state = tr.lora_state(started)
    assert all(torch.equal(state[k], prior[k]) for k in prior)  # "prior": the LoRA holds the prior
    # "prior-merged": a fresh LoRA (B = 0) on merged weights computes what the prior LoRA computes
    assert torch.allclose(_out(merged, sample), _out(started, sample), rtol=1e-4)
    assert not torch.allclose(_out(cold, sample), _out(started, sample), rtol=1e-3)  # the prior matters


def test_prior_merged_is_saved_as_one_lora_stock_diffusers_loads(sample, tmp_path):
    prior = _prior_state()
    settings = dataclasses.replace(SETTINGS, init="prior-merged")
    (merged,) = load_transformers(CFG, DEV, torch.float32)
    tr.start_lora(merged, settings, wan, prior, SETTINGS.alpha)
    clip_state = {k: v + 0.03 for k, v in tr.lora_state(merged).items()}  # as if trained
    tr.load_lora_state(merged, clip_state)
    stacked, rank = tr.stacked_lora(prior, SETTINGS.alpha, clip_state, settings.alpha)
    assert rank == 2 * SETTINGS.rank
    config = tr.lora_config(dataclasses.replace(settings, rank=rank, alpha=float(rank)), wan)
    lora_io.save_lora(tmp_path, [stacked], config, wan)
    models = registry.load_models(CFG, DEV, torch.float32)
    pipe = registry.assemble_pipeline(models)
    lora_io.load_lora_into_pipeline(pipe, tmp_path)  # stock `load_lora_weights`
    assert torch.allclose(_out(pipe.transformer, sample), _out(merged, sample), rtol=1e-4)
    state, alpha = lora_io.read_lora(tmp_path)
    assert alpha == rank and state.keys() == stacked.keys()


def test_init_needs_a_prior_of_the_same_rank():
    (transformer,) = load_transformers(CFG, DEV, torch.float32)
    with pytest.raises(ValueError, match="train.init: prior needs a mask prior"):
        tr.start_lora(transformer, dataclasses.replace(SETTINGS, init="prior"), wan)
    with pytest.raises(ValueError, match="the prior has rank 8, train.rank is 4"):
        tr.start_lora(transformer, dataclasses.replace(SETTINGS, init="prior"), wan, _prior_state(rank=8), 8.0)
    merged = dataclasses.replace(SETTINGS, init="prior-merged")
    tr.check_init(merged, {})  # stage 1: fine
    with pytest.raises(ValueError, match="prior-merged cannot continue into stage 2"):
        tr.check_init(merged, {}, stage2=True)


def test_cosine_schedule_ends_at_its_floor():
    settings = dataclasses.replace(SETTINGS, lr=1e-3, lr_schedule="cosine", lr_min_ratio=0.1)
    assert tr.lr_at(0, 100, settings) == pytest.approx(1e-3)
    assert tr.lr_at(99, 100, settings) == pytest.approx(1e-4)
    assert tr.lr_at(50, 100, dataclasses.replace(settings, lr_schedule="constant")) == 1e-3


def test_a_checkpoint_of_another_run_is_refused(sample, tmp_path):
    (transformer,) = load_transformers(CFG, DEV, torch.float32)
    tr.add_lora(transformer, SETTINGS, wan)

    def stop(step, loss):
        if step == 3:
            raise KeyboardInterrupt  # killed after the step-2 checkpoint

    with pytest.raises(KeyboardInterrupt):
        tr.train(transformer, [sample], SETTINGS, DEV, tmp_path, progress=False, on_step=stop, family=wan)
    assert (tmp_path / "checkpoint.pt").exists()
    other = dataclasses.replace(SETTINGS, lr=5e-3)
    with pytest.raises(ValueError, match="checkpoint of another run"):
        tr.train(transformer, [sample], other, DEV, tmp_path, progress=False, family=wan)
    renamed = {**sample, "name": "another clip"}
    with pytest.raises(ValueError, match="checkpoint of another run"):
        tr.train(transformer, [renamed], SETTINGS, DEV, tmp_path, progress=False, family=wan)
    history = tr.train(transformer, [sample], SETTINGS, DEV, tmp_path, progress=False, family=wan)  # its own: resumed
    assert [h["step"] for h in history] == [1, 2, 3, 4]
