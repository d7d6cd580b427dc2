"""Cached sampling: transformer calls whose blocks are skipped and replaced by a cached residual.

- `teacache`: TeaCache as the official LoRA-Edit inference runs it (`custom_wan_pipe.py`, class
  `TeaCache`, threshold 0.275 with the Wan2.1-I2V-14B-480P polynomial in `inference.py`). Per call,
  the relative L1 change of the timestep modulation every block reads (mean |m - m_prev| / mean
  |m_prev|) is rescaled by the family's fitted polynomial and accumulated; while the sum stays below
  the threshold the blocks are skipped and the residual of the last computed call (output of the
  last block - input of the first) is added instead; a computed call resets the sum. The first and
  the last step are always computed. Each CFG branch keeps its own memory, as the official code
  keeps one TeaCache object per branch.
- `first_block`: diffusers' FirstBlockCache (`FirstBlockCacheConfig`): the first block always runs;
  the others are skipped while its residual changed by less than the threshold (relative L1).

Both are diffusers hooks (`diffusers.hooks`) on the transformer and its blocks, so the model's own
forward runs unchanged. The denoise loop names every call (`CachedSampling.call`: the CFG branch,
the step index and the number of steps, through `transformer.cache_context`), and `cached_sampling`
removes every hook when the video is done: no state outlives a video. `CacheStats` counts the calls
and the skipped ones per branch.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import numpy as np
import torch
from diffusers.hooks import FirstBlockCacheConfig, HookRegistry, ModelHook
from diffusers.hooks.first_block_cache import FBCHeadBlockHook
from diffusers.hooks.hooks import BaseState, StateManager

CACHES = ("none", "teacache", "first_block")
# teacache: the official inference's; first_block: FirstBlockCacheConfig's default.
DEFAULT_THRESHOLDS = {"teacache": 0.275, "first_block": 0.05}
# The transformers' block lists, in call order (Wan: blocks; HunyuanVideo: dual- then single-stream).
BLOCK_LISTS = ("blocks", "transformer_blocks", "single_transformer_blocks")

_TEACACHE_DECISION = "loraedit_teacache_decision"
_TEACACHE_BLOCK = "loraedit_teacache_block"
_TEACACHE_COMMIT = "loraedit_teacache_commit"
_SKIP_COUNTER = "loraedit_skip_counter"


@dataclasses.dataclass(frozen=True)
class TeaCacheSpec:
    """A family's TeaCache: the submodule whose output holds the timestep modulation that every block
    reads (at `modulation_index` of its output tuple), and the rescaling polynomials fitted per
    checkpoint (coefficients, highest power first) by name."""

    modulation_module: str
    modulation_index: int
    coefficients: dict[str, tuple[float, ...]]


@dataclasses.dataclass
class CacheStats:
    """One video's transformer calls and the skipped ones, per CFG branch ("cond", "uncond").

    Skipped: TeaCache ran no block; FirstBlockCache ran the first block only."""

    method: str = "none"
    threshold: float | None = None
    calls: dict[str, int] = dataclasses.field(default_factory=dict)
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def skipped_share(self) -> float:
        calls = sum(self.calls.values())
        return sum(self.skipped.values()) / calls if calls else 0.0

    def summary(self) -> str:
        threshold = "" if self.threshold is None else f" (threshold {self.threshold:g})"
        return (
            f"cache {self.method}{threshold}: skipped {sum(self.skipped.values())} of {sum(self.calls.values())} "
            f"transformer calls ({100 * self.skipped_share:.1f} %)"
        )

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "skipped_share": self.skipped_share}

    def count_call(self, branch: str) -> None:
        self.calls[branch] = self.calls.get(branch, 0) + 1

    def count_skip(self, branch: str) -> None:
        self.skipped[branch] = self.skipped.get(branch, 0) + 1


def resolve_threshold(method: str, threshold: float | None) -> float | None:
    """The threshold a method runs with (None: its default); raises on a bad method or threshold."""
    if method not in CACHES:
        raise ValueError(f"infer.cache: unknown {method!r} (choose {'|'.join(CACHES)})")
    if method == "none":
        return None
    threshold = DEFAULT_THRESHOLDS[method] if threshold is None else float(threshold)
    if not threshold >= 0:
        raise ValueError(f"infer.cache_threshold: {threshold} must be a number >= 0")
    return threshold


def transformer_blocks(transformer: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer's blocks in call order (those FirstBlockCache hooks too)."""
    lists = [
        m for name, m in transformer.named_children() if name in BLOCK_LISTS and isinstance(m, torch.nn.ModuleList)
    ]
    return [block for blocks in lists for block in blocks]


class _TeaCacheBranch(BaseState):
    """One CFG branch's memory."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.previous_modulation: torch.Tensor | None = None
        self.accumulated = 0.0  # rescaled relative change since the last computed call
        self.residual: torch.Tensor | None = None  # last computed call: last block out - first block in


class _TeaCacheCall:
    """The call under way, as the blocks see it: one object for the whole video, holding plain
    attributes, so blocks compiled with torch.compile guard on a bool and not on branch objects."""

    def __init__(self) -> None:
        self.compute = True
        self.residual: torch.Tensor | None = None  # the branch's cached residual (B, L, D)
        self.block_input: torch.Tensor | None = None  # (B, L, D) entering the first block
        self.new_residual: torch.Tensor | None = None


class _TeaCacheDecision(ModelHook):
    """On the modulation's submodule (outside the compiled blocks): compute or skip this call."""

    _is_stateful = True

    def __init__(self, state_manager: StateManager, call: _TeaCacheCall, index: int, coefficients, threshold: float):
        super().__init__()
        self.state_manager, self.call, self.index = state_manager, call, index
        self.coefficients, self.threshold = np.asarray(coefficients, dtype=np.float64), threshold

    def post_forward(self, module: torch.nn.Module, output):
        context = self.state_manager.context
        if context.step_index is None or context.num_inference_steps is None:
            raise ValueError("TeaCache needs cache_context(name, step_index=..., num_inference_steps=...)")
        branch = self.state_manager.get_state()
        modulation = output[self.index]  # Wan: timestep_proj (B, 6 * dim), the blocks' (B, 6, dim)
        edge = context.step_index in (0, context.num_inference_steps - 1)
        if edge or branch.previous_modulation is None or branch.residual is None:
            compute = True
        else:
            previous = branch.previous_modulation
            # In the modulation's own dtype, as the official code (bf16 in the paper's runs).
            change = ((modulation - previous).abs().mean() / previous.abs().mean()).item()
            branch.accumulated += float(np.polyval(self.coefficients, change))
            compute = branch.accumulated >= self.threshold
        if compute:
            branch.accumulated = 0.0
        branch.previous_modulation = modulation
        self.call.compute, self.call.residual = compute, branch.residual
        return output

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.state_manager.reset()
        return module


class _TeaCacheBlock(ModelHook):
    """On every block: a skipped call adds the cached residual at the first block and passes it on."""

    def __init__(self, call: _TeaCacheCall, first: bool, last: bool):
        super().__init__()
        self.call, self.first, self.last = call, first, last

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        hidden_states = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]  # (B, L, D)
        call = self.call
        if not call.compute:
            return hidden_states + call.residual if self.first else hidden_states
        if self.first:
            call.block_input = hidden_states
        output = self.fn_ref.original_forward(*args, **kwargs)
        if self.last:
            call.new_residual = output - call.block_input
        return output


class _TeaCacheCommit(ModelHook):
    """On the transformer, after each call: keep a computed call's residual for its branch; count."""

    _is_stateful = True

    def __init__(self, state_manager: StateManager, call: _TeaCacheCall, stats: CacheStats):
        super().__init__()
        self.state_manager, self.call, self.stats = state_manager, call, stats

    def post_forward(self, module: torch.nn.Module, output):
        call = self.call
        if call.compute:
            self.state_manager.get_state().residual = call.new_residual
        else:
            self.stats.count_skip(self.state_manager.context.name)
        call.residual = call.block_input = call.new_residual = None
        return output

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.state_manager.reset()
        return module


class _FirstBlockCacheCounter(ModelHook):
    """On the transformer, after each call: count it when FirstBlockCache skipped the remaining blocks."""

    def __init__(self, head: FBCHeadBlockHook, stats: CacheStats):
        super().__init__()
        self.head, self.stats = head, stats

    def post_forward(self, module: torch.nn.Module, output):
        if not self.head.state_manager.get_state().should_compute:
            self.stats.count_skip(self.head.state_manager.context.name)
        return output


def _apply_teacache(transformer, spec: TeaCacheSpec, coefficients: str, threshold: float, stats: CacheStats) -> None:
    state_manager, call = StateManager(_TeaCacheBranch), _TeaCacheCall()
    decision = _TeaCacheDecision(state_manager, call, spec.modulation_index, spec.coefficients[coefficients], threshold)
    modulation = transformer.get_submodule(spec.modulation_module)
    HookRegistry.check_if_exists_or_initialize(modulation).register_hook(decision, _TEACACHE_DECISION)
    blocks = transformer_blocks(transformer)
    for i, block in enumerate(blocks):
        hook = _TeaCacheBlock(call, first=i == 0, last=i == len(blocks) - 1)
        HookRegistry.check_if_exists_or_initialize(block).register_hook(hook, _TEACACHE_BLOCK)
    root = HookRegistry.check_if_exists_or_initialize(transformer)
    root.register_hook(_TeaCacheCommit(state_manager, call, stats), _TEACACHE_COMMIT)
    root.invalidate_child_registries_cache()  # so cache_context reaches the new block hooks


def _apply_first_block_cache(transformer, threshold: float, stats: CacheStats) -> None:
    transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    head_registry = HookRegistry.check_if_exists_or_initialize(transformer_blocks(transformer)[0])
    head = next(h for h in head_registry.hooks.values() if isinstance(h, FBCHeadBlockHook))
    HookRegistry.check_if_exists_or_initialize(transformer).register_hook(
        _FirstBlockCacheCounter(head, stats), _SKIP_COUNTER
    )


def _remove(transformer, method: str) -> None:
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    if method == "teacache":
        for name in (_TEACACHE_COMMIT, _TEACACHE_BLOCK, _TEACACHE_DECISION):
            registry.remove_hook(name, recurse=True)
        registry.invalidate_child_registries_cache()
    else:
        registry.remove_hook(_SKIP_COUNTER, recurse=False)
        transformer.disable_cache()


class CachedSampling:
    """The denoise loop's side: each transformer call inside `call(...)`."""

    def __init__(self, stats: CacheStats):
        self.stats = stats

    @contextlib.contextmanager
    def call(self, transformer, branch: str, step_index: int, num_steps: int) -> Iterator[None]:
        """One transformer call of CFG branch `branch` ("cond" / "uncond") at step `step_index` of `num_steps`."""
        self.stats.count_call(branch)
        if self.stats.method == "none":
            yield
            return
        with transformer.cache_context(branch, step_index=step_index, num_inference_steps=num_steps):
            yield


@contextlib.contextmanager
def cached_sampling(
    transformers: list[torch.nn.Module],
    method: str = "none",
    threshold: float | None = None,
    teacache: TeaCacheSpec | None = None,
    coefficients: str | None = None,
    stats: CacheStats | None = None,
) -> Iterator[CachedSampling]:
    """`method` on every transformer for one video; every hook is removed on leaving, also on error.

    `teacache`: the family's spec (None: the family has none); `coefficients`: a name of its
    polynomials. `stats` (a fresh one if None) is reset and filled in; method "none" installs nothing."""
    threshold = resolve_threshold(method, threshold)
    if method == "teacache":
        if teacache is None:
            raise ValueError("infer.cache: teacache has no fitted coefficients for this model family")
        if coefficients not in teacache.coefficients:
            raise ValueError(
                f"infer.teacache_coefficients: unknown {coefficients!r} (choose {'|'.join(teacache.coefficients)})"
            )
    stats = CacheStats() if stats is None else stats
    stats.method, stats.threshold, stats.calls, stats.skipped = method, threshold, {}, {}  # this video's
    applied = []
    try:
        for transformer in transformers:
            if method == "teacache":
                applied.append(transformer)  # removing hooks never registered is a no-op
                _apply_teacache(transformer, teacache, coefficients, threshold, stats)
            elif method == "first_block":
                _apply_first_block_cache(transformer, threshold, stats)  # refuses a model with a cache on
                applied.append(transformer)
        yield CachedSampling(stats)
    finally:
        if method != "none":
            for transformer in applied:
                _remove(transformer, method)
