"""The toy world (renderer, truth of the edit) and the resumable pretraining loop."""

import warnings

import numpy as np
import pytest
import torch

from loraedit.toy import demo as demo_data
from loraedit.toy import i2v as toy_i2v
from loraedit.toy import pretrain as toy_pretrain
from loraedit.toy import vae as toy_vae
from loraedit.toy import world as toyworld
from loraedit.toy.loop import step_batches, train_loop


def test_render_is_deterministic_and_seeded():
    a = toyworld.render_clip(toyworld.scene_for(3, 5))
    b = toyworld.render_clip(toyworld.scene_for(3, 5))
    c = toyworld.render_clip(toyworld.scene_for(4, 5))
    for name in ("video", "edited", "keep", "back"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert a.caption == b.caption and a.extra_frames == b.extra_frames
    assert not np.array_equal(a.video, c.video)


def test_pixels_are_finite_for_many_seeds():
    """No NaN reaches the uint8 cast (numpy warns 'invalid value encountered in cast')."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for i in range(60):
            clip = toyworld.render_clip(toyworld.scene_for(11, i), num_frames=9)
            assert clip.video.dtype == np.uint8 and clip.video.shape == (9, 64, 64, 3)
        big = toyworld.render_clip(toyworld.scene_for(11, 0), num_frames=33, size=(128, 128))
        assert big.video.shape == (33, 128, 128, 3)


def test_demo_render_clip_has_no_nan_with_random_colours():
    """Regression: cv2.remap got a float64 y-map (cy is a numpy float64) and sampled NaNs."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for seed in range(40):
            rng = np.random.default_rng(seed)
            colors = [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(2)]
            spec = demo_data.ClipSpec(
                ("circle", "square", "triangle")[seed % 3], (64, 64), colors[0], "a", colors[1], "b"
            )
            demo_data.render_clip(spec, 9, np.random.default_rng(seed))


@pytest.mark.parametrize("index", range(6))
def test_edit_truth_matches_its_mask(index):
    clip = toyworld.render_clip(toyworld.two_sided_scene_for(5, index))
    changed = (clip.video != clip.edited).any(-1)  # (T, H, W)
    assert not changed[clip.keep == 1].any()  # the edit touches only the masked pixels
    for t in range(len(clip.video)):
        if (clip.keep[t] == 0).any() and (clip.keep[t] == 0).sum() > 20:
            assert changed[t].any()  # a visible edited object really changed colour
    assert not (clip.back.astype(bool) & (clip.keep == 1)).any()  # the back side lies inside the mask
    assert clip.back[0].sum() == 0  # frame 1 shows the front...
    assert clip.extra_frames and clip.back[clip.extra_frames[0]].sum() > 0  # ...a later frame the back
    assert clip.edit_caption != clip.caption


def test_objects_move():
    clip = toyworld.render_clip(toyworld.scene_for(3, 1))
    assert (clip.video[-1] != clip.video[0]).any(-1).mean() > 0.02
    assert not np.array_equal(clip.keep[0], clip.keep[-1])


def test_training_loop_resumes_to_identical_weights(tmp_path):
    """A run stopped after its first step and started again ends bit-identical to an unbroken run,
    and so does a run whose batches worker processes build ahead."""
    torch.set_num_threads(1)
    recipe = toy_vae.VaeRecipe(base_dim=4, batch=1, frames=5, crop=16, steps=3, warmup=1)

    def run(folder, deadline, workers=0):
        vae = toy_vae.build_vae(recipe)
        done = train_loop(
            vae,
            lambda x: toy_vae.vae_loss(vae, x, recipe),
            lambda s: toy_vae.batch_at(s, recipe),
            steps=recipe.steps,
            lr=1e-3,
            warmup=1,
            min_lr_ratio=0.1,
            ckpt=folder / "vae.pt",
            log_csv=folder / "log.csv",
            every=100,
            deadline=deadline,
            workers=workers,
        )
        return done, vae.state_dict()

    done, straight = run(tmp_path / "a", None)
    assert done
    paused, _ = run(tmp_path / "b", deadline=0.0)  # past the deadline: checkpoint after step 1, stop
    assert not paused
    done, resumed = run(tmp_path / "b", None)
    assert done
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    lines = (tmp_path / "b" / "log.csv").read_text().splitlines()
    assert len(lines) == 1 + recipe.steps  # header + one row per step, none repeated
    assert lines[0].endswith(",threads,device") and all(line.endswith(",1,cpu") for line in lines[1:])
    done, prefetched = run(tmp_path / "c", None, workers=2)
    assert done
    assert all(torch.equal(straight[k], prefetched[k]) for k in straight)


def test_step_batches_come_in_step_order_from_workers():
    assert list(step_batches(lambda s: (s, f"clip {s}"), 3, 9, workers=2)) == [(s, f"clip {s}") for s in range(3, 9)]
    video, caption = next(step_batches(toy_i2v.training_clip, 5, 6, workers=1))
    assert isinstance(video, np.ndarray) and video.dtype == np.uint8  # as built, not converted to a tensor
    assert np.array_equal(video, toy_i2v.training_clip(5)[0]) and caption == toy_i2v.training_clip(5)[1]


def test_a_checkpoint_without_thread_counts_is_refused_on_resume(tmp_path):
    """Its log rows lack 'threads': refused before any step, naming the checkpoint (not a KeyError at export)."""
    recipe = toy_vae.VaeRecipe(base_dim=4, batch=1, frames=5, crop=16, steps=3, warmup=1)
    vae = toy_vae.build_vae(recipe)
    ckpt = tmp_path / "vae.pt"
    torch.save(
        {
            "model": vae.state_dict(),
            "optimizer": torch.optim.AdamW(vae.parameters()).state_dict(),
            "log": [{"step": 1, "loss": 1.0, "lr": 1e-3, "seconds": 0.1}],
            "step": 1,
        },
        ckpt,
    )
    with pytest.raises(ValueError, match=r"vae\.pt: its loss log has no per-step 'threads'"):
        train_loop(
            vae,
            lambda x: toy_vae.vae_loss(vae, x, recipe),
            lambda s: toy_vae.batch_at(s, recipe),
            steps=recipe.steps,
            lr=1e-3,
            warmup=1,
            min_lr_ratio=0.1,
            ckpt=ckpt,
            log_csv=tmp_path / "log.csv",
        )


def test_stage_times_names_a_log_without_thread_counts(tmp_path):
    for name in ("vae", "vae_whole", "transformer"):
        (tmp_path / f"{name}_loss.csv").write_text("step,loss,lr,seconds,threads\n1,1.0,0.001,0.5,2\n")
    (tmp_path / "transformer_loss.csv").write_text("step,loss,lr,seconds,threads,device\n1,1.0,0.001,0.5,2,cuda\n")
    assert toy_pretrain.stage_times(tmp_path) == (
        {"vae": 0.5, "vae_whole": 0.5, "transformer": 0.5},
        {"vae": [2], "vae_whole": [2], "transformer": [2]},
        {"vae": ["cpu"], "vae_whole": ["cpu"], "transformer": ["cuda"]},
    )
    (tmp_path / "vae_whole_loss.csv").write_text("step,loss,lr,seconds\n1,1.0,0.001,0.5\n")
    with pytest.raises(ValueError, match=r"vae_whole_loss\.csv: rows without a 'threads' count"):
        toy_pretrain.stage_times(tmp_path)
