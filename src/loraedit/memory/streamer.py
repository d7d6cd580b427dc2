"""Stream the frozen base weights of the transformer blocks host-to-device during training.

Each streamed block keeps its frozen parameters in one host *master* buffer per dtype (pinned on
CUDA). A small ring of device *slots* (one flat buffer per dtype, sized for the largest block)
receives them: a load is one `copy_` per dtype, host to device, on a side stream, gated by
events. Eviction only points the parameters back at their master: nothing is ever copied back,
so the masters are the frozen weights, unchanged for the whole run. Trainable parameters (the
LoRA) are never touched: they stay on the device, and so does the optimizer state.

Which block comes next is predicted from the phase: during a forward pass the blocks run in
order, during the backward pass the checkpoint recompute runs them in reverse (the
`BlockCheckpoint` function marks the recompute), and inference repeats forward passes. A forward
pre-hook on every block makes its own block resident (waiting on the load's event) and then
fills the other slots with the next blocks of that order, evicting the slot whose block is
needed last (Belady's rule over the predicted order).

Safety rule: with gradients enabled, a streamed block may only run inside the streamer's
checkpoint (`BlockCheckpoint`): a plain autograd graph would save views of a slot that is reused
before the backward pass reads them. The hook raises otherwise.

With fp8 storage (diffusers layerwise casting) the casting hooks replace a loaded block's
parameters by their own device copies until the block is evicted: one more block of device memory.

Resident blocks are the first `resident` ones (0..num_blocks). On a CPU device everything is the
same except that copies are synchronous and there are no streams, events or pinning, so the
bookkeeping is tested on the CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence

import torch

FORWARD, RECOMPUTE = "forward", "recompute"


@dataclasses.dataclass
class _View:
    param: torch.nn.Parameter
    dtype: torch.dtype
    offset: int
    numel: int
    shape: torch.Size


@dataclasses.dataclass
class _Block:
    index: int
    views: list[_View]
    masters: dict[torch.dtype, torch.Tensor]  # flat host buffers (numel,), pinned on CUDA

    def bind(self, buffers: dict[torch.dtype, torch.Tensor]) -> None:
        for v in self.views:
            v.param.data = buffers[v.dtype][v.offset : v.offset + v.numel].view(v.shape)

    def unbind(self) -> None:
        self.bind(self.masters)


@dataclasses.dataclass
class _Slot:
    index: int
    buffers: dict[torch.dtype, torch.Tensor]  # flat device buffers, sized for the largest block
    block: int | None = None
    ready: object = None  # torch.cuda.Event recorded on the copy stream after the load


class BlockWeightStreamer:
    """Frozen weights of `blocks[resident:]` live on the host and visit `slots` device slots.

    `events` records (phase, block, action, slot) with action 'load' (a copy was issued), 'hit'
    (the block ran from a slot already loaded) or 'miss' (it had to be loaded on the spot).
    """

    def __init__(
        self,
        blocks: Sequence[torch.nn.Module],
        device: torch.device,
        resident: int,
        slots: int = 2,
        record_events: bool = False,
    ):
        if not 0 <= resident <= len(blocks):
            raise ValueError(f"resident blocks: {resident} is not in 0..{len(blocks)}")
        if slots < 1:
            raise ValueError("the streamer needs at least one device slot")
        self.blocks = list(blocks)
        self.device = torch.device(device)
        self.resident = resident
        self.streamed = list(range(resident, len(blocks)))
        self.cuda = self.device.type == "cuda"
        self.phase = FORWARD
        self.in_checkpoint = False
        self.record_events = record_events
        self.events: list[tuple[str, int, str, int | None]] = []
        self._copy_stream = torch.cuda.Stream(self.device) if self.cuda else None
        self._blocks = {i: self._make_block(i) for i in self.streamed}
        self._slots = self._make_slots(min(slots, len(self.streamed))) if self.streamed else []
        self._handles = []

    # ------------------------------------------------------------------ set-up

    def _make_block(self, index: int) -> _Block:
        """Copy the block's frozen parameters into flat host masters and point them there."""
        frozen = [p for p in self.blocks[index].parameters() if not p.requires_grad]
        sizes: dict[torch.dtype, int] = {}
        views = []
        for p in frozen:
            views.append(_View(p, p.dtype, sizes.get(p.dtype, 0), p.numel(), p.shape))
            sizes[p.dtype] = sizes.get(p.dtype, 0) + p.numel()
        masters = {d: torch.empty(n, dtype=d, pin_memory=self.cuda) for d, n in sizes.items()}
        for v in views:
            masters[v.dtype][v.offset : v.offset + v.numel].copy_(v.param.data.reshape(-1))
        block = _Block(index, views, masters)
        block.unbind()
        return block

    def _make_slots(self, count: int) -> list[_Slot]:
        sizes: dict[torch.dtype, int] = {}
        for block in self._blocks.values():
            for d, m in block.masters.items():
                sizes[d] = max(sizes.get(d, 0), m.numel())
        return [
            _Slot(i, {d: torch.empty(n, dtype=d, device=self.device) for d, n in sizes.items()}) for i in range(count)
        ]

    def managed_parameters(self) -> set[int]:
        """ids of the parameters the streamer places (everything else belongs on the device)."""
        return {id(v.param) for b in self._blocks.values() for v in b.views}

    def attach(self) -> BlockWeightStreamer:
        for i, block in enumerate(self.blocks):
            self._handles.append(block.register_forward_pre_hook(lambda _m, _a, i=i: self._before_block(i)))
        return self

    def detach(self) -> None:
        """Remove the hooks; every streamed block points at its host master again."""
        for h in self._handles:
            h.remove()
        self._handles = []
        for slot in self._slots:
            if slot.block is not None:
                self._blocks[slot.block].unbind()
                slot.block = None
        if self.cuda:
            torch.cuda.current_stream(self.device).wait_stream(self._copy_stream)

    def host_bytes(self) -> int:
        return sum(m.numel() * m.element_size() for b in self._blocks.values() for m in b.masters.values())

    def device_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for s in self._slots for t in s.buffers.values())

    # ------------------------------------------------------------------ phases

    @contextlib.contextmanager
    def _setting(self, name: str, value):
        previous = getattr(self, name)
        setattr(self, name, value)
        try:
            yield
        finally:
            setattr(self, name, previous)

    def recomputing(self):
        """Entered by the checkpoint around a block's recompute (the backward pass)."""
        return self._setting("phase", RECOMPUTE)

    def checkpointed_forward(self):
        """Entered by the checkpoint around a block's first forward: no weight views are saved."""
        return self._setting("in_checkpoint", True)

    def predicted_order(self, current: int) -> list[int]:
        """Streamed blocks in the order they are expected to run after block `current`."""
        ahead = [j for j in self.streamed if j > current]
        behind = [j for j in reversed(self.streamed) if j < current]
        if self.phase == RECOMPUTE:
            return behind + self.streamed  # then the next step's forward pass
        if torch.is_grad_enabled():
            return ahead + list(reversed(self.streamed))  # then the backward pass (recompute)
        return ahead + self.streamed  # inference: the next forward pass

    # ------------------------------------------------------------------ the hook

    def _before_block(self, index: int) -> None:
        if index in self._blocks:
            if torch.is_grad_enabled() and self.phase == FORWARD and not self.in_checkpoint:
                raise RuntimeError(
                    f"block {index} is streamed but runs with gradients outside the streamer's checkpoint: "
                    "enable gradient checkpointing with loraedit.memory.checkpointing.BlockCheckpoint"
                )
            slot = self._slot_of(index)
            if slot is None:
                slot = self._load(index, self._victim(index, self.predicted_order(index)), "miss")
            else:
                self._log(index, "hit", slot.index)
            if self.cuda and slot.ready is not None:
                torch.cuda.current_stream(self.device).wait_event(slot.ready)
        self._prefetch(index)

    def _slot_of(self, block: int) -> _Slot | None:
        return next((s for s in self._slots if s.block == block), None)

    def _victim(self, current: int, order: list[int]) -> _Slot:
        """The slot whose block is needed last (empty slots first), never the current block's."""

        def next_use(slot: _Slot) -> float:
            if slot.block is None:
                return float("inf")
            return order.index(slot.block) if slot.block in order else float("inf")

        candidates = [s for s in self._slots if s.block != current]
        return max(candidates, key=next_use)

    def _prefetch(self, current: int) -> None:
        order = self.predicted_order(current)
        for position, target in enumerate(order):
            if target == current or self._slot_of(target) is not None:
                continue
            if len(self._slots) < 2 and current in self._blocks:
                return  # one slot, and the current block is in it
            victim = self._victim(current, order)
            if victim.block is not None and victim.block in order and order.index(victim.block) < position:
                return  # every slot holds a block needed before the target
            self._load(target, victim, "load")

    def _load(self, index: int, slot: _Slot, action: str) -> _Slot:
        """Evict the slot's block (repoint it at its master), copy `index` in, bind its parameters."""
        if slot.block is not None:
            self._blocks[slot.block].unbind()
        block = self._blocks[index]
        if self.cuda:
            # The slot's previous block: all its work is already queued on the compute stream.
            self._copy_stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self._copy_stream):
                for d, master in block.masters.items():
                    slot.buffers[d][: master.numel()].copy_(master, non_blocking=True)
                slot.ready = torch.cuda.Event()
                slot.ready.record(self._copy_stream)
        else:
            for d, master in block.masters.items():
                slot.buffers[d][: master.numel()].copy_(master)
        block.bind(slot.buffers)
        slot.block = index
        self._log(index, action, slot.index)
        return slot

    def _log(self, block: int, action: str, slot: int | None) -> None:
        if self.record_events:
            self.events.append((self.phase, block, action, slot))
