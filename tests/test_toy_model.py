"""The committed pretrained toy model (models/toy-wan2.1-i2v): layout, hash, the real loader, quality bars.

The bars are what the committed weights measured on held-out clips (docs/toy-world.md), less a
small margin; they are checked with fewer clips / steps than those numbers to stay within CI time.
"""

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from loraedit import conditioning as cond
from loraedit.toy import eval as toy_eval
from loraedit.toy import i2v as toy_i2v
from loraedit.toy import pretrain as toy_pretrain

MODEL = Path(__file__).resolve().parents[1] / toy_eval.TOY_MODEL  # the committed checkpoint
COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "image_encoder", "image_processor", "scheduler")
# Measured on 8 held-out clips (models/toy-wan2.1-i2v-eval.json): VAE 30.20 dB; plain I2V 20.95 dB /
# SSIM 0.828 against 18.26 dB / 0.757 for "repeat frame 1"; on the moving pixels 14.82 against 10.80 dB.
# On the 3 clips the test uses: 19.00 / 0.807 against 17.14 / 0.722; moving pixels 12.38 against 9.00.
VAE_PSNR_BAR = 30.0  # the bar, on the same 8 clips
I2V_MOVING_MARGIN_DB = 1.5
I2V_PSNR_MARGIN_DB, I2V_SSIM_MARGIN = 0.5, 0.03  # all pixels: above the baseline too, by PSNR and by SSIM


@pytest.fixture(scope="module")
def toy_models():
    torch.set_num_threads(2)
    return toy_eval.load_toy(str(MODEL))


def test_folder_is_the_diffusers_layout_and_matches_its_hashes():
    index = json.loads((MODEL / "model_index.json").read_text())
    assert index["_class_name"] == "WanImageToVideoPipeline"
    for name in COMPONENTS:
        assert (MODEL / name).is_dir() and name in index
    total = 0
    for line in (MODEL / "SHA256SUMS").read_text().splitlines():
        digest, rel = line.split("  ", 1)
        data = (MODEL / rel).read_bytes()
        total += len(data)
        assert hashlib.sha256(data).hexdigest() == digest, rel
    assert total < 20 * 2**20
    listed = {line.split("  ", 1)[1] for line in (MODEL / "SHA256SUMS").read_text().splitlines()}
    on_disk = {str(p.relative_to(MODEL)) for p in MODEL.rglob("*") if p.is_file() and p.name != "SHA256SUMS"}
    assert listed == on_disk


def test_loads_through_the_real_wan_loader(toy_models):
    assert toy_models.spec.name == "wan2.1-i2v-480p"  # the 14B model's backend, model.path = the folder
    vae = toy_models.encoders.vae
    assert vae.config.scale_factor_spatial == 4 and toy_models.transformers[0].config.in_channels == 36
    clip = toy_eval.heldout_clips(1)[0]
    latents = toy_models.family.encode_video(vae, cond.frames_to_video(clip.video))
    assert latents.shape == (1, 16, 5, 16, 16)  # 17x64x64 -> 5 latent frames of 16x16 (x4 spatial)
    # normalised by the committed latents_mean / latents_std: about unit scale
    assert 0.3 < float(latents.std()) < 3.0


def test_vae_meets_its_bar(toy_models):
    psnr = toy_eval.vae_psnr(toy_models, toy_eval.heldout_clips(8))
    assert psnr >= VAE_PSNR_BAR, f"VAE reconstruction {psnr:.2f} dB < {VAE_PSNR_BAR} dB"


def test_one_command_pauses_resumes_and_exports_a_loadable_folder(tmp_path):
    args = [
        "--out",
        str(tmp_path / "model"),
        "--work",
        str(tmp_path / "work"),
        "--vae",
        '{"steps": 2, "warmup": 1, "base_dim": 4, "batch": 1, "frames": 5, "crop": 16, "whole_steps": 2, "whole_batch": 1}',
        "--i2v",
        '{"steps": 2, "warmup": 1, "clips": 2, "batch": 2, "num_layers": 1}',
    ]
    assert toy_pretrain.main(args + ["--max-minutes", "0"]) == 3  # paused after the first VAE step
    assert not (tmp_path / "model").exists()
    assert toy_pretrain.main(args) == 0
    vae_log = (tmp_path / "model" / "pretrain" / "vae_loss.csv").read_text().splitlines()
    assert len(vae_log) == 1 + 2  # the resumed run logged each step once
    models = toy_eval.load_toy(str(tmp_path / "model"))  # the real loader
    assert models.encoders.vae.config.scale_factor_spatial == 4
    recipe = json.loads((tmp_path / "model" / "pretrain" / "recipe.json").read_text())
    assert recipe["command"].startswith("loraedit toy pretrain")
    assert set(recipe["step_seconds"]) == {"vae", "vae_whole", "transformer"}  # the time it took, per stage
    assert all(v > 0 for v in recipe["step_seconds"].values())
    assert recipe["threads"] == {"vae": [1], "vae_whole": [1], "transformer": [1]}  # --threads' default, per stage
    assert recipe["devices"] == {"vae": ["cpu"], "vae_whole": ["cpu"], "transformer": ["cpu"]}
    whole_log = (tmp_path / "model" / "pretrain" / "vae_whole_loss.csv").read_text().splitlines()
    assert len(whole_log) == 1 + 2  # stage 1b: the whole VAE on whole clips


def test_a_new_transformer_on_the_committed_vae(tmp_path):
    """--vae-from: stages 3-5 only, on the committed VAE (its weights, logs and statistics carried over),
    with the cache's clips rendered by worker processes."""
    out = tmp_path / "model"
    args = [
        "--out",
        str(out),
        "--work",
        str(tmp_path / "work"),
        "--vae-from",
        str(MODEL),
        "--workers",
        "2",
        "--i2v",
        '{"steps": 2, "warmup": 1, "clips": 2, "batch": 2, "num_layers": 1}',
    ]
    assert toy_pretrain.main(args) == 0
    recipe = json.loads((out / "pretrain" / "recipe.json").read_text())
    committed = json.loads((MODEL / "pretrain" / "recipe.json").read_text())
    assert recipe["vae_from"] == str(MODEL) and recipe["vae"] == committed["vae"]
    assert recipe["transformer"]["num_layers"] == 1
    assert recipe["step_seconds"]["vae"] == committed["step_seconds"]["vae"]  # the VAE's time, from its logs
    for name in ("vae_loss.csv", "vae_whole_loss.csv", "latent_stats.json"):
        assert (out / "pretrain" / name).read_bytes() == (MODEL / "pretrain" / name).read_bytes(), name
    new, old = toy_eval.load_toy(str(out)).encoders.vae, toy_eval.load_toy(str(MODEL)).encoders.vae
    assert new.config.latents_mean == old.config.latents_mean
    assert all(torch.equal(a, b) for a, b in zip(new.state_dict().values(), old.state_dict().values()))


def test_continue_from_trains_on_the_committed_transformer(tmp_path):
    """--continue-from: the committed VAE and transformer, trained on under a new schedule. At lr 0
    the weights come back unchanged (so they were loaded), the loss log goes on from the committed
    model's last step, and the recipe keeps the earlier schedule."""
    out = tmp_path / "model"
    args = [
        "--out",
        str(out),
        "--work",
        str(tmp_path / "work"),
        "--continue-from",
        str(MODEL),
        "--i2v",
        '{"steps": 2, "warmup": 1, "clips": 2, "batch": 2, "lr": 0.0}',
    ]
    assert toy_pretrain.main(args) == 0
    recipe = json.loads((out / "pretrain" / "recipe.json").read_text())
    committed = json.loads((MODEL / "pretrain" / "recipe.json").read_text())
    log = pd.read_csv(out / "pretrain" / "transformer_loss.csv")
    before = pd.read_csv(MODEL / "pretrain" / "transformer_loss.csv")
    assert recipe["continued_from"]["steps_before"] == int(before["step"].max())
    assert recipe["continued_from"]["transformer"] == committed["transformer"]
    assert list(log["step"]) == list(before["step"]) + [len(before) + 1, len(before) + 2]
    assert recipe["step_seconds"]["transformer"] > committed["step_seconds"]["transformer"]  # both runs' time
    for component in ("transformer", "vae"):  # loaded from MODEL, saved as a model of its own
        assert "_name_or_path" not in json.loads((out / component / "config.json").read_text())
    new, old = toy_eval.load_toy(str(out)).transformers[0], toy_eval.load_toy(str(MODEL)).transformers[0]
    assert all(torch.equal(a, b) for a, b in zip(new.state_dict().values(), old.state_dict().values()))
    # The first step's batch is the one after the committed model's last (batch_at(its last step), not batch_at(0)).
    committed_models = toy_eval.load_toy(str(MODEL))
    cache = torch.load(tmp_path / "work" / "cache" / "shard_000000.pt")  # the 2 clips, stacked
    empty = toy_i2v.empty_prompt(toy_i2v.encoder_pipeline(committed_models.encoders.vae))
    with torch.no_grad():
        loss_at = [float(toy_i2v.i2v_loss(old, *toy_i2v.batch_at(step, cache, empty, 2))) for step in (len(before), 0)]
    assert log["loss"][len(before)] == pytest.approx(loss_at[0], rel=1e-4)
    assert log["loss"][len(before)] != pytest.approx(loss_at[1], rel=1e-4)


def test_continue_from_with_another_architecture_is_one_line(tmp_path):
    with pytest.raises(
        SystemExit, match=r"--continue-from .*: --i2v builds another architecture \(num_layers differ\)"
    ):
        toy_pretrain.main(
            [
                "--out",
                str(tmp_path / "m"),
                "--work",
                str(tmp_path / "w"),
                "--continue-from",
                str(MODEL),
                "--i2v",
                '{"num_layers": 2}',
            ]
        )


def test_vae_from_a_folder_that_is_no_exported_model_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match=r"--vae-from .*nothing: not an exported toy model \(missing .*recipe\.json"):
        toy_pretrain.main(
            ["--out", str(tmp_path / "m"), "--work", str(tmp_path / "w"), "--vae-from", str(tmp_path / "nothing")]
        )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_device_cuda_without_a_gpu_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match=r"--device cuda: no CUDA device here"):
        toy_pretrain.main(["--device", "cuda", "--out", str(tmp_path / "m"), "--work", str(tmp_path / "w")])


def test_plain_i2v_beats_repeating_frame_1(toy_models):
    scores = toy_eval.i2v_quality(toy_models, toy_eval.heldout_clips(3))
    i2v, repeat = scores["i2v"], scores["repeat_frame_1"]
    assert i2v["psnr_moving"] - repeat["psnr_moving"] > I2V_MOVING_MARGIN_DB, scores  # where things move
    assert i2v["psnr"] - repeat["psnr"] > I2V_PSNR_MARGIN_DB, scores
    assert i2v["ssim"] - repeat["ssim"] > I2V_SSIM_MARGIN, scores
