"""The gradient-checkpointing function handed to diffusers' `enable_gradient_checkpointing`.

diffusers calls it as `fn(block, hidden_states, encoder_hidden_states, timestep_proj, rotary_emb)`
for every transformer block. It is PyTorch's non-reentrant checkpoint, plus three optional parts:

- the weight streamer is told which pass runs (`checkpointed_forward` / `recomputing`), so it
  prefetches in forward order, then in reverse order during the backward recompute;
- activation offload: the checkpoint's saved inputs go to host memory (`ActivationOffload`);
- selective checkpointing: the attention kernels' outputs are kept instead of recomputed
  (`torch.utils.checkpoint.create_selective_checkpoint_contexts`), costing one (tokens x dim)
  tensor per block and saving the attention recompute (about half of the recompute FLOPs at
  20,280 tokens).
"""

from __future__ import annotations

import contextlib
import functools

import torch
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from .activations import ActivationOffload
from .streamer import BlockWeightStreamer

_aten = torch.ops.aten
# The fused SDPA kernels PyTorch dispatches to (CPU included); math attention is plain matmuls.
ATTENTION_OPS = tuple(
    getattr(_aten, name)
    for name in (
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_flash_attention_for_cpu",
        "_flash_attention_forward",
        "_efficient_attention_forward",
    )
    if hasattr(_aten, name)
)


def is_attention(op) -> bool:
    """`op` is an OpOverload (e.g. `aten._scaled_dot_product_flash_attention.default`)."""
    return getattr(op, "overloadpacket", op) in ATTENTION_OPS


def save_attention_policy(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if is_attention(op) else CheckpointPolicy.PREFER_RECOMPUTE


@contextlib.contextmanager
def _together(*managers):
    with contextlib.ExitStack() as stack:
        for m in managers:
            stack.enter_context(m)
        yield


class BlockCheckpoint:
    """Non-reentrant checkpoint of one block with the optional streamer / offload / saved attention."""

    def __init__(
        self,
        streamer: BlockWeightStreamer | None = None,
        offload: ActivationOffload | None = None,
        save_attention: bool = False,
    ):
        self.streamer = streamer
        self.offload = offload
        self.save_attention = save_attention

    def _contexts(self):
        if self.save_attention:
            forward, recompute = create_selective_checkpoint_contexts(save_attention_policy)
        else:
            forward, recompute = contextlib.nullcontext(), contextlib.nullcontext()
        if self.streamer is not None:
            forward = _together(forward, self.streamer.checkpointed_forward())
            recompute = _together(recompute, self.streamer.recomputing())
        return forward, recompute

    def __call__(self, block: torch.nn.Module, *args):
        run = functools.partial(checkpoint, block.__call__, *args, use_reentrant=False, context_fn=self._contexts)
        if self.offload is None:
            return run()
        with self.offload.hooks():
            return run()
