"""HunyuanVideo-I2V backend (paper Sec. 4.4) on the tiny offline build of the real classes.

Oracle: with the stock mask (latent frame 0 only) our 33-channel conditioning and denoising loop
reproduce the stock `HunyuanVideoImageToVideoPipeline`; then the edit mask, training (variants,
windows, LoRA targets, loss), LoRA files through stock `load_lora_weights`, and the refusal of the
token_replace release."""

import numpy as np
import pytest
import torch
from diffusers import HunyuanVideoTransformer3DModel
from peft.utils import get_peft_model_state_dict
from PIL import Image
from safetensors.torch import load_file
from test_conditioning_oracle import DEV, H, T, W  # the Wan oracle's sizes

from loraedit import conditioning as cond
from loraedit import inference as inf
from loraedit import lora_io
from loraedit import training as tr
from loraedit.backends import hunyuan, registry
from loraedit.backends.hunyuan import conditioning as hy
from loraedit.backends.hunyuan import loader as hunyuan_loader
from loraedit.backends.hunyuan import tiny as tiny_hunyuan
from loraedit.backends.registry import load_encoders, load_transformers
from loraedit.inference import make_scheduler
from loraedit.stages import load_models_for_inference, prepare_for_training

CFG = {"backend": "tiny-hunyuan", "seed": 0}
PROMPT = "p3rs0n, a red circle"


@pytest.fixture(scope="module")
def models():
    return load_models_for_inference({**CFG, "device": "cpu", "dtype": "float32"})[0]  # what the infer stage loads


@pytest.fixture(scope="module")
def image():
    return (np.random.default_rng(3).random((H, W, 3)) * 255).astype(np.uint8)  # as the Wan oracle's


def stock_keep():
    return torch.from_numpy(cond.first_frame_keep_mask(T, H, W).astype(np.float32)).unsqueeze(0)


def stock_run(models, image, output_type, steps=3):
    """The stock pipeline with true CFG; returns (its output, the full latents after the last step)."""
    pipe = registry.assemble_pipeline(models)
    pipe.scheduler = make_scheduler("euler", hunyuan_loader.SCHEDULER_SHIFT)
    seen = {}

    def keep_latents(_pipe, _i, _t, kwargs):
        seen["latents"] = kwargs["latents"]
        return {}

    out = pipe(
        image=Image.fromarray(image),
        prompt=PROMPT,
        negative_prompt="blurry",
        true_cfg_scale=5.0,
        height=H,
        width=W,
        num_frames=T,
        num_inference_steps=steps,
        prompt_template=models.encoders.prompt_template,
        max_sequence_length=models.encoders.max_sequence_length,
        output_type=output_type,
        generator=torch.Generator(device=DEV).manual_seed(11),
        callback_on_step_end=keep_latents,
    ).frames
    return out, seen["latents"]


def settings(steps=3):
    return inf.InferSettings(
        num_steps=steps, guidance_scale=5.0, shift=hunyuan_loader.SCHEDULER_SHIFT, seed=11, negative_prompt="blurry"
    )


def test_condition_equals_stock(models, image):
    pipe = registry.assemble_pipeline(models)
    img = pipe.video_processor.preprocess(Image.fromarray(image), height=H, width=W).to(DEV, torch.float32)
    _, stock_image_latents = pipe.prepare_latents(
        img, 1, 16, H, W, T, torch.float32, DEV, torch.Generator().manual_seed(0)
    )
    stock_image_latents[:, :, 1:] = 0  # as __call__ does for latent_concat
    frames = np.repeat(image[None], T, axis=0)  # later frames are greyed out entirely by the stock mask
    ours = hy.build_condition(models.encoders.vae, cond.frames_to_video(frames), stock_keep())
    assert ours.shape == (1, 17, (T - 1) // 4 + 1, H // 8, W // 8)
    torch.testing.assert_close(ours[:, :16], stock_image_latents, rtol=1e-5, atol=1e-5)
    stock_mask = torch.zeros_like(ours[:, 16:])
    stock_mask[:, :, 0] = 1
    assert torch.equal(ours[:, 16:], stock_mask)


def test_final_latents_equal_stock(models, image):
    _, stock_latents = stock_run(models, image, "latent")
    frames = np.repeat(image[None], T, axis=0)
    video, keep = cond.inference_condition(frames, image, cond.first_frame_keep_mask(T, H, W))
    condition = hy.build_condition(models.encoders.vae, video, keep)
    text, negative = hy.encode_text(models.encoders, PROMPT, image, "blurry", device=DEV)
    ours = inf.denoise(models, condition, text, negative, settings(), DEV, progress=False)
    torch.testing.assert_close(ours, stock_latents, rtol=1e-5, atol=1e-5)


def test_frames_equal_stock_and_keep_the_first_four(models, image):
    stock, _ = stock_run(models, image, "np")
    frames = np.repeat(image[None], T, axis=0)
    ours = inf.edit_video(
        models, frames, image, cond.first_frame_keep_mask(T, H, W), PROMPT, settings(), DEV, progress=False
    )
    stock_u8 = (stock[0] * 255).round().astype(np.uint8)
    assert ours.shape == (T, H, W, 3) and stock_u8.shape == (T - 4, H, W, 3)  # the stock drops 4 frames
    assert np.abs(ours[4:].astype(int) - stock_u8.astype(int)).max() <= 1


def test_edit_mask_folds_four_frames_with_min(models, image):
    keep = np.ones((T, H, W), np.uint8)
    keep[1:, 8:24, 16:32] = 0
    keep[6, 0:8, 0:8] = 0  # one frame of latent frame 2 (pixel frames 5..8) loses this cell
    mask = hy.latent_keep_mask(torch.from_numpy(keep.astype(np.float32))[None], (H // 8, W // 8))
    assert mask.shape == (1, 1, 3, H // 8, W // 8)
    assert torch.all(mask[0, 0, 0] == 1)  # frame 1 kept
    assert mask[0, 0, 1, 0, 0] == 1 and mask[0, 0, 2, 0, 0] == 0  # min over the 4 folded frames
    assert torch.all(mask[0, 0, 1:, 1:3, 2:4] == 0)  # the edit region is generated
    frames = np.repeat(image[None], T, axis=0)
    condition = hy.build_condition(
        models.encoders.vae, cond.frames_to_video(frames), torch.from_numpy(keep.astype(np.float32))[None]
    )
    assert torch.all(condition[0, :16, 1:, 1:3, 2:4] == 0)  # unknown latents are 0, as the stock convention
    assert condition[0, :16, 1:, 0, 5].abs().min() > 0  # the kept background carries the video's latents


def test_variants_windows_and_lora_targets(models):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)
    keep = np.ones((T, H, W), np.uint8)
    keep[1:, 8:24, 16:32] = 0
    enc = models.encoders
    naive = tr.encode_samples(enc, frames, keep, "naive", PROMPT, tr.TrainSettings(), DEV, family=hunyuan)
    assert len(naive) == 1 and torch.all(naive[0]["condition"][0, 16, 1:] == 0)  # stock: only frame 1 kept
    assert set(hy.TEXT_KEYS) <= set(naive[0])
    windows = tr.encode_samples(
        enc, frames, keep, "mask", PROMPT, tr.TrainSettings(low_cost=True, window=5), DEV, family=hunyuan
    )
    assert [w["name"] for w in windows] == ["window0", "window4"] and windows[1]["latents"].shape[2] == 2
    recolored = tr.encode_samples(
        enc, frames, keep, "mask", PROMPT, tr.TrainSettings(recolor_copies=1), DEV, family=hunyuan
    )
    assert [r["name"] for r in recolored] == ["clip", "clip~recolor0"]
    assert not torch.equal(recolored[0]["latents"], recolored[1]["latents"])
    refs = {4: (frames[4][::-1].copy(), "p3rs0n, an edited square")}
    mixed = tr.encode_samples(
        enc,
        frames,
        keep,
        "mask+ref",
        PROMPT,
        tr.TrainSettings(),
        DEV,
        extra_refs=refs,
        edited_first=frames[0],
        family=hunyuan,
    )
    assert [m["name"] for m in mixed] == ["clip", "ref4"] and mixed[1]["kind"] == "ref"
    assert mixed[1]["condition"][0, 16].min() == 0  # the reference's edit region is generated
    with pytest.raises(ValueError, match="extra edited frames"):
        tr.encode_samples(enc, frames, keep, "mask+ref", PROMPT, tr.TrainSettings(), DEV, family=hunyuan)
    # LoRA on the double- and single-stream blocks' attention and MLP Linears, not the final proj_out
    transformer = load_transformers(CFG, DEV, torch.float32)[0]
    tr.add_lora(transformer, tr.TrainSettings(rank=2), hunyuan)  # the family's targets
    adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in transformer.named_parameters() if ".lora_A." in n}
    assert "single_transformer_blocks.0.proj_out" in adapted and "proj_out" not in adapted
    assert {
        "transformer_blocks.0.attn.add_q_proj",
        "transformer_blocks.0.ff_context.net.2",
        "single_transformer_blocks.0.proj_mlp",
        "single_transformer_blocks.0.attn.to_q",
    } <= adapted
    assert not any(n.startswith("context_embedder") for n in adapted)  # the token refiner stays frozen
    assert len(adapted) == (8 + 4) + 5  # double: 8 attention + 4 MLP Linears; single: 3 attention + 2 MLP


def test_training_lowers_the_loss_and_the_lora_loads_in_the_stock_pipeline(models, tmp_path):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (5, H, W, 3), dtype=np.uint8)
    keep = np.ones((5, H, W), np.uint8)
    keep[1:, 8:24, 16:32] = 0
    settings = tr.TrainSettings(
        steps=40,
        lr=5e-3,
        rank=4,
        alpha=8,
        checkpoint_every=0,
        edit_region_weight=2.0,
        target_modules=hunyuan.LORA_TARGET_REGEX,
    )  # as given in the config
    samples = tr.encode_samples(models.encoders, frames, keep, "mask", PROMPT, settings, DEV, family=hunyuan)
    transformer = load_transformers(CFG, DEV, torch.float32)[0]
    tr.add_lora(transformer, settings, hunyuan)
    g = torch.Generator().manual_seed(1234)
    grid = [(t, torch.randn(samples[0]["latents"].shape, generator=g)) for t in (0.2, 0.5, 0.8)]

    def fixed_loss():
        with torch.no_grad():
            return float(
                sum(tr.flow_matching_loss(transformer, samples[0], t, n, settings, DEV, hunyuan) for t, n in grid)
            )

    before = fixed_loss()
    history = tr.train(transformer, samples, settings, DEV, tmp_path / "run", progress=False, family=hunyuan)
    after = fixed_loss()
    assert len(history) == 40 and after < 0.9 * before, (before, after)
    # diffusers-format file, loaded by the stock pipeline's load_lora_weights: same weights, same outputs
    state = tr.lora_state(transformer)
    written = lora_io.save_lora(tmp_path / "lora", [state], tr.lora_config(settings, hunyuan), hunyuan)
    assert [p.name for p in written] == [lora_io.DIFFUSERS_WEIGHT_NAME]
    keys = load_file(str(written[0]))
    assert "transformer.single_transformer_blocks.0.proj_out.lora_A.weight" in keys
    pipe = hunyuan.assemble_pipeline(models.encoders, load_transformers(CFG, DEV, torch.float32), models.spec)
    lora_io.load_lora_into_pipeline(pipe, tmp_path / "lora")
    loaded = get_peft_model_state_dict(pipe.transformer, adapter_name="loraedit")
    assert state.keys() == loaded.keys() and all(torch.equal(state[k], loaded[k]) for k in state)
    assert pipe.transformer.peft_config["loraedit"].lora_alpha == 8
    text, _ = hy.encode_text(models.encoders, PROMPT, frames[0], device=DEV)
    x = torch.cat([samples[0]["latents"], samples[0]["condition"]], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(
            hy.predict(pipe.transformer, x, torch.tensor([500.0]), text, DEV),
            hy.predict(transformer, x, torch.tensor([500.0]), text, DEV),
        )
    # stage 2 (mask+ref) starts from this file, as stages.run_train does
    stage2 = load_transformers(CFG, DEV, torch.float32)[0]
    prepare_for_training(stage2, settings, {}, DEV, hunyuan, lora_io.read_lora(tmp_path / "lora")[0])
    assert all(torch.equal(state[k], v) for k, v in tr.lora_state(stage2).items())


def test_real_loader_refuses_token_replace_and_loads_latent_concat(tmp_path):
    bad = HunyuanVideoTransformer3DModel.from_config(
        {**tiny_hunyuan.build_tiny_transformer().config, "in_channels": 16, "image_condition_type": "token_replace"}
    )
    bad.save_pretrained(tmp_path / "tr" / "transformer")
    with pytest.raises(ValueError, match="token_replace.*latent_concat|latent_concat.*token_replace"):
        load_transformers({"backend": "hunyuanvideo-i2v", "path": str(tmp_path / "tr")}, None, torch.float32)
    good = tiny_hunyuan.build_tiny_transformer()
    good.save_pretrained(tmp_path / "lc" / "transformer")
    loaded = load_transformers({"backend": "hunyuanvideo-i2v", "path": str(tmp_path / "lc")}, None, torch.float32)[0]
    assert loaded.config.image_condition_type == "latent_concat" and loaded.config.in_channels == 33
    # the encoders' real loader on a saved folder (as a downloaded checkpoint): stock template, fp32 VAE
    load_encoders(CFG, DEV, torch.float32).pipe.save_pretrained(tmp_path / "lc")
    real = load_encoders({"backend": "hunyuanvideo-i2v", "path": str(tmp_path / "lc")}, DEV, torch.bfloat16)
    assert real.prompt_template["crop_start"] == 103 and real.max_sequence_length == hunyuan_loader.MAX_SEQUENCE_LENGTH
    assert real.vae.dtype == torch.float32 and real.pipe.text_encoder.dtype == torch.bfloat16


def test_gpu_benchmark_runs_the_backend(tmp_path):
    """`benchmarks/gpu_scale.py --config tiny-hunyuan` (the real 13B config is the same code on a GPU):
    training and guided steps timed, FLOPs counted on the meta device equal the real module's."""
    import importlib.util
    from pathlib import Path

    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_scale.py"
    spec = importlib.util.spec_from_file_location("gpu_scale_for_hunyuan", script)
    gpu_scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_scale)
    result = gpu_scale.main(
        [
            "--config",
            "tiny-hunyuan",
            "--train-frames",
            "5",
            "--infer-frames",
            "5",
            "--warmup",
            "1",
            "--steps",
            "1",
            "--infer-steps",
            "1",
            "--no-vae",
            "--out-dir",
            str(tmp_path),
        ]
    )
    assert [r["section"] for r in result["records"]] == ["train", "infer"]
    assert all("error" not in r and r["mfu"] > 0 for r in result["records"])
    assert Path(result["paths"]["markdown"]).read_text().count("| train |") == 1
    import hunyuan_scale  # gpu_scale put benchmarks/ on sys.path and dispatched to it (already imported)

    config = hunyuan_scale.transformer_config("tiny-hunyuan")
    sample = hunyuan_scale.random_sample(config, 5, 32, 48, 40, 0)
    model = load_transformers(CFG, DEV, torch.float32)[0]
    x = torch.cat([sample["latents"], sample["condition"]], 1)
    # the math SDPA backend exposes attention as matmuls on the CPU (as tests/test_flops.py)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        hy.predict(model, x, torch.tensor([500.0]), sample, DEV)
    assert hunyuan_scale.counted_flops(config, sample, 0, train=False, checkpointing=False) == counter.get_total_flops()
    model_step = hunyuan_scale.counted_flops(config, sample, 4, train=True, checkpointing=False)
    assert hunyuan_scale.counted_flops(config, sample, 4, train=True, checkpointing=True) > model_step


def test_resources_follow_the_backend_and_its_buckets():
    from loraedit.resources import rule_resources

    real = {"model": {"backend": "hunyuanvideo-i2v"}}
    paper = rule_resources(real, "train_lora", frames=49, width=624, height=368)  # config/hunyuan-i2v.yaml
    wan = rule_resources({"model": {"backend": "wan2.1-i2v-480p"}}, "train_lora", frames=49, width=832, height=480)
    tiny = rule_resources({"model": {"backend": "tiny-hunyuan"}}, "train_lora", frames=49, width=624, height=368)
    assert tiny["mem_mb"] < paper["mem_mb"] < wan["mem_mb"] and paper["runtime"] < wan["runtime"]
    assert paper["gpu"] == 1 and rule_resources(real, "prepare")["gpu"] == 0


def test_paper_config_is_valid_and_uses_the_paper_buckets():
    from pathlib import Path

    import yaml
    from snakemake.utils import validate

    repo = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((repo / "config" / "hunyuan-i2v.yaml").read_text())
    validate(config, str(repo / "config" / "config.schema.yaml"))
    assert config["model"]["backend"] == "hunyuanvideo-i2v" and config["model"]["path"] == hunyuan_loader.DEFAULT_PATH
    assert config["prepare"]["landscape"] == [624, 368] and config["prepare"]["portrait"] == [368, 624]
    side = config["prepare"]["square"]
    assert side[0] == side[1] and side[0] % 16 == 0 and abs(side[0] ** 2 / (624 * 368) - 1) < 0.01
