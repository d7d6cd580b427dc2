"""Cached sampling (`infer.cache`): TeaCache as the official inference runs it, diffusers'
FirstBlockCache, their skip counts, per-branch state, and no state or hook outliving a video.

Which blocks really ran is watched with plain torch hooks on the blocks' feed-forward layers,
independent of the cache's own diffusers hooks and counts."""

import contextlib

import numpy as np
import pytest
import torch

from loraedit import conditioning as cond
from loraedit import inference as inf
from loraedit import sampling_cache
from loraedit.backends import registry
from loraedit.backends.base import Models
from loraedit.backends.wan.teacache import OFFICIAL_COEFFICIENTS, TEACACHE
from loraedit.sampling_cache import CacheStats

DEV = torch.device("cpu")
T, H, W = 5, 32, 32
STEPS = 8
PROMPT = "p3rs0n, a clip"


def clip(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frames = (rng.random((T, H, W, 3)) * 255).astype(np.uint8)
    keep = np.ones((T, H, W), np.uint8)
    keep[1:, 8:24, 8:24] = 0
    return frames, keep


def settings(cfg: bool = True, **cache) -> inf.InferSettings:
    return inf.InferSettings(num_steps=STEPS, guidance_scale=5.0 if cfg else 1.0, seed=3, **cache)


def sample(models, s: inf.InferSettings, seed: int = 1, stats: CacheStats | None = None) -> torch.Tensor:
    """`edit_video` up to the latents (1, 16, T_lat, h, w): finer than the decoded uint8 frames."""
    frames, keep = clip(seed)
    family, enc = models.family, models.encoders
    video, keep_t = cond.inference_condition(frames, frames[0], keep)
    condition = family.build_condition(enc.vae, video, keep_t, s.mask_downsample)
    negative_prompt = s.negative_prompt if s.guidance_scale > 1.0 else None
    text, negative = family.encode_text(enc, PROMPT, frames[0], negative_prompt, DEV, s.image_preprocess)
    return inf.denoise(models, condition, text, negative, s, DEV, progress=False, cache_stats=stats)


def hooks_left(transformer) -> list[str]:
    return [
        name
        for name, m in transformer.named_modules()
        if getattr(m, "_diffusers_hook", None) and m._diffusers_hook.hooks
    ]


@contextlib.contextmanager
def watch_blocks(transformer):
    """Per transformer call, which blocks' feed-forward ran: a list of lists of block indices."""
    calls: list[list[int]] = []
    handles = [transformer.register_forward_pre_hook(lambda *_: calls.append([]))]
    for i, block in enumerate(sampling_cache.transformer_blocks(transformer)):
        handles.append(block.ffn.register_forward_pre_hook(lambda *_, i=i: calls[-1].append(i)))
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def official_teacache(modulations: list[torch.Tensor], coefficients, threshold: float) -> list[bool]:
    """The official `TeaCache.check` call by call (custom_wan_pipe.py): True = the blocks run."""
    rescale = np.poly1d(coefficients)
    computed, accumulated, previous = [], 0.0, None
    for step, modulation in enumerate(modulations):
        if step in (0, len(modulations) - 1):
            run, accumulated = True, 0.0
        else:
            accumulated += rescale(((modulation - previous).abs().mean() / previous.abs().mean()).item())
            run = accumulated >= threshold
            if run:
                accumulated = 0.0
        previous = modulation
        computed.append(run)
    return computed


def test_none_installs_nothing_and_threshold_zero_changes_nothing(models):
    transformer = models.transformers[0]
    seen = []
    handle = transformer.register_forward_pre_hook(lambda *_: seen.append(hooks_left(transformer)))
    stats = CacheStats()
    try:
        plain = sample(models, settings(), stats=stats)
    finally:
        handle.remove()
    assert seen == [[]] * 2 * STEPS  # no hook on any module while sampling
    assert stats.calls == {"cond": STEPS, "uncond": STEPS} and stats.skipped == {}
    # Threshold 0: the 480P polynomial is positive for every change >= 0 (no real root), so TeaCache's
    # sum never stays below 0; FirstBlockCache's relative change is never below 0.
    for cache in ("teacache", "first_block"):
        stats = CacheStats()
        with watch_blocks(transformer) as calls:
            latents = sample(models, settings(cache=cache, cache_threshold=0.0), stats=stats)
        assert torch.equal(latents, plain), cache
        assert stats.skipped == {} and stats.skipped_share == 0.0
        assert calls == [[0, 1]] * 2 * STEPS
        assert hooks_left(transformer) == [] and not transformer.is_cache_enabled


def test_teacache_huge_threshold_computes_only_first_and_last_step(models):
    transformer = models.transformers[0]
    stats = CacheStats()
    with watch_blocks(transformer) as calls:
        latents = sample(models, settings(cache="teacache", cache_threshold=1e9), stats=stats)
    assert stats.calls == {"cond": STEPS, "uncond": STEPS}
    assert stats.skipped == {"cond": STEPS - 2, "uncond": STEPS - 2}
    assert stats.skipped_share == (STEPS - 2) / STEPS
    ran = [bool(blocks) for blocks in calls]  # cond, uncond, cond, uncond, ...
    assert ran == [True, True] + [False] * 2 * (STEPS - 2) + [True, True]
    assert all(blocks in ([], [0, 1]) for blocks in calls)  # a skipped call runs no block
    assert not torch.equal(latents, sample(models, settings()))


def plain_modulations(models) -> list[torch.Tensor]:
    """The timestep modulation of each step of a plain run, (1, 6 * dim) each."""
    modulations = []
    embedder = models.transformers[0].condition_embedder
    handle = embedder.register_forward_hook(lambda m, i, out: modulations.append(out[1]))
    try:
        sample(models, settings(cfg=False))
    finally:
        handle.remove()
    return modulations


def middle_threshold(modulations: list[torch.Tensor]) -> float:
    """A TeaCache threshold under which some calls are skipped and some computed in between."""
    rescale = np.poly1d(TEACACHE.coefficients[OFFICIAL_COEFFICIENTS])
    steps = [rescale(((b - a).abs().mean() / a.abs().mean()).item()) for a, b in zip(modulations, modulations[1:])]
    return 2.5 * float(np.median(steps))


def test_teacache_skips_as_the_official_rule(models):
    """The modulation depends on the timestep only, so the official rule on the modulations of a
    plain run predicts every skip of a cached run."""
    modulations = plain_modulations(models)
    threshold = middle_threshold(modulations)
    expected = official_teacache(modulations, TEACACHE.coefficients[OFFICIAL_COEFFICIENTS], threshold)
    assert False in expected and True in expected[1:-1]
    stats = CacheStats()
    with watch_blocks(models.transformers[0]) as calls:
        sample(models, settings(cfg=False, cache="teacache", cache_threshold=threshold), stats=stats)
    assert [bool(blocks) for blocks in calls] == expected
    assert stats.skipped == {"cond": expected.count(False)}


def test_teacache_keeps_one_state_per_cfg_branch(models):
    """cond calls give the same outputs whether or not uncond calls run between them: a shared
    state would hand cond the uncond call's residual."""
    transformer, family = models.transformers[0], models.family
    frames, _ = clip(1)
    text, negative = family.encode_text(models.encoders, PROMPT, frames[0], "blurry", DEV, "resize")
    latent_input = torch.randn(1, 36, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    timesteps = torch.linspace(999, 1, STEPS)

    def cond_outputs(with_uncond: bool) -> list[torch.Tensor]:
        outputs = []
        with sampling_cache.cached_sampling([transformer], "teacache", 1e9, TEACACHE, OFFICIAL_COEFFICIENTS) as cache:
            for i, t in enumerate(timesteps):
                with cache.call(transformer, "cond", i, STEPS):
                    outputs.append(family.predict(transformer, latent_input, t.expand(1), text, DEV))
                if with_uncond:
                    with cache.call(transformer, "uncond", i, STEPS):
                        family.predict(transformer, latent_input, t.expand(1), negative, DEV)
        assert cache.stats.skipped == ({"cond": STEPS - 2, "uncond": STEPS - 2} if with_uncond else {"cond": STEPS - 2})
        return outputs

    alone, interleaved = cond_outputs(False), cond_outputs(True)
    assert all(torch.equal(a, b) for a, b in zip(alone, interleaved))


def test_first_block_cache_skips_all_but_the_first_block(models):
    transformer = models.transformers[0]
    stats = CacheStats()
    with watch_blocks(transformer) as calls:
        latents = sample(models, settings(cache="first_block", cache_threshold=1e9), stats=stats)
    # The first call of a branch has no residual to compare with; every later one is skipped.
    assert stats.skipped == {"cond": STEPS - 1, "uncond": STEPS - 1} and stats.method == "first_block"
    assert calls == [[0, 1]] * 2 + [[0]] * 2 * (STEPS - 1)
    assert not torch.equal(latents, sample(models, settings()))
    assert hooks_left(transformer) == [] and not transformer.is_cache_enabled
    default = CacheStats()
    sample(models, settings(cache="first_block"), stats=default)
    assert default.threshold == sampling_cache.DEFAULT_THRESHOLDS["first_block"]


@pytest.mark.parametrize("cache", ["teacache", "first_block"])
def test_no_state_outlives_a_video(models, cache):
    threshold = middle_threshold(plain_modulations(models)) if cache == "teacache" else 0.05
    s = settings(cache=cache, cache_threshold=threshold)
    stats = CacheStats()
    first = sample(models, s, seed=2, stats=stats)
    assert 0 < sum(stats.skipped.values()) < 2 * STEPS - 4  # some skipped, some computed
    sample(models, s, seed=5)  # another clip in between
    assert torch.equal(sample(models, s, seed=2), first)
    assert torch.equal(sample(models, settings()), sample(models, settings()))  # and none is none again
    assert hooks_left(models.transformers[0]) == []


def test_hooks_are_removed_on_error(models):
    transformer = models.transformers[0]
    with pytest.raises(RuntimeError, match="boom"):
        with sampling_cache.cached_sampling([transformer], "teacache", None, TEACACHE, OFFICIAL_COEFFICIENTS):
            assert hooks_left(transformer) != []
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        with sampling_cache.cached_sampling([transformer], "first_block", None):
            raise RuntimeError("boom")
    assert hooks_left(transformer) == [] and not transformer.is_cache_enabled


def test_wan22_experts_each_start_computed():
    """Two experts, each with its own hooks: the low-noise expert's first call has no residual yet."""
    models = registry.load_models({"backend": "tiny-wan2.2", "seed": 0}, DEV, torch.float32)
    stats = CacheStats()
    s = inf.InferSettings(num_steps=6, guidance_scale=1.0, seed=3, cache="teacache", cache_threshold=1e9)
    sample(models, s, stats=stats)  # t = 1000, 962, 909 (expert 1) | 833, 714, 500 (expert 2)
    assert stats.skipped == {"cond": 3}  # computed: steps 0, 3 (expert 2's first), 5 (last)
    assert all(hooks_left(t) == [] for t in models.transformers)


def test_settings_and_refusals(models):
    assert inf.InferSettings.from_config({}).cache == "none"
    s = inf.InferSettings.from_config({"cache": "teacache", "cache_threshold": None})
    assert (s.cache, s.cache_threshold, s.teacache_coefficients) == ("teacache", None, OFFICIAL_COEFFICIENTS)
    assert sampling_cache.resolve_threshold("teacache", None) == 0.275  # the official inference's
    with pytest.raises(ValueError, match="infer.cache: unknown 'tea'"):
        sample(models, settings(cache="tea"))
    with pytest.raises(ValueError, match="infer.cache_threshold"):
        sample(models, settings(cache="first_block", cache_threshold=-1.0))
    with pytest.raises(ValueError, match="infer.teacache_coefficients: unknown"):
        sample(models, settings(cache="teacache", teacache_coefficients="Wan2.2"))
    assert hooks_left(models.transformers[0]) == []
    hunyuan = Models(registry.BACKENDS["tiny-hunyuan"], registry.family("hunyuan"), None, [])
    with pytest.raises(ValueError, match="teacache is fitted to Wan2.1 only, not the hunyuan family"):
        inf.denoise(hunyuan, None, {}, None, settings(cache="teacache"), DEV)


def test_first_block_cache_on_hunyuan():
    models = registry.load_models({"backend": "tiny-hunyuan", "seed": 0}, DEV, torch.float32)
    s = inf.InferSettings(num_steps=4, guidance_scale=1.0, seed=11)
    plain = sample(models, s)
    stats = CacheStats()
    assert torch.equal(
        sample(models, inf.InferSettings(**{**vars(s), "cache": "first_block", "cache_threshold": 0.0})), plain
    )
    sample(models, inf.InferSettings(**{**vars(s), "cache": "first_block", "cache_threshold": 1e9}), stats=stats)
    assert stats.skipped == {"cond": 3}
    assert hooks_left(models.transformers[0]) == []
