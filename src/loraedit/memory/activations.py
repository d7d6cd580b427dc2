"""Keep the per-block checkpoint inputs in host memory until the backward pass needs them.

`ActivationOffload.hooks()` is a `torch.autograd.graph.saved_tensors_hooks` context. Wrapped
around a (non-reentrant) block checkpoint, it sees exactly what the checkpoint keeps for the
recompute: the block's inputs. The checkpoint's own hook is innermost, so nothing inside the
block reaches it. It moves a saved tensor to the host when the tensor carries gradient (the
residual stream, a different tensor per block; the text/image context, the time embedding and
the RoPE tables are shared by every block and stay) and is at least `min_bytes` large (default
0: the gradient rule alone picks exactly the residual stream).

On CUDA the copy to pinned host memory runs on a side stream (the device tensor is kept valid for
it with `record_stream`); when the backward pass unpacks block k's input, the input of block
k-1 (the next one it will need) is already copied back on the side stream. On the CPU the
"host copy" is a plain clone, so the bookkeeping is tested there: gradients are bit-identical.
"""

from __future__ import annotations

import dataclasses
import weakref

import torch


@dataclasses.dataclass
class _Packed:
    index: int
    host: torch.Tensor  # same shape/dtype as the saved tensor, on the CPU (pinned on CUDA)
    device: torch.device
    copied: object = None  # CUDA event: the device-to-host copy is done
    prefetched: torch.Tensor | None = None  # device copy made ahead of its unpack (CUDA)
    fetched: object = None  # CUDA event: `prefetched` is ready
    unpacked: bool = False


class ActivationOffload:
    """Counters: `packed` tensors moved out, `host_bytes` held now, `peak_host_bytes`."""

    def __init__(self, min_bytes: int = 0):
        self.min_bytes = min_bytes
        self.packed = 0
        self.host_bytes = 0
        self.peak_host_bytes = 0
        self._items: list[weakref.ref] = []  # this step's packed tensors, in pack order
        self._stream = None

    def hooks(self) -> torch.autograd.graph.saved_tensors_hooks:
        return torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _wanted(self, t: torch.Tensor) -> bool:
        return (
            t.requires_grad and not isinstance(t, torch.nn.Parameter) and t.numel() * t.element_size() >= self.min_bytes
        )

    def _side_stream(self, device: torch.device):
        if self._stream is None:
            self._stream = torch.cuda.Stream(device)
        return self._stream

    def _pack(self, t: torch.Tensor):
        if not self._wanted(t):
            return t
        if all(ref() is None or ref().unpacked for ref in self._items):
            self._items = []  # a new step (or the last graph was dropped without a backward pass)
        item = _Packed(len(self._items), torch.empty(0), t.device)
        if t.device.type == "cuda":
            stream = self._side_stream(t.device)
            stream.wait_stream(torch.cuda.current_stream(t.device))
            item.host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            with torch.cuda.stream(stream):
                item.host.copy_(t.detach(), non_blocking=True)
                item.copied = torch.cuda.Event()
                item.copied.record(stream)
            t.record_stream(stream)  # the allocator keeps t's memory until the copy has run
        else:
            item.host = t.detach().clone()
        self._items.append(weakref.ref(item))
        self.packed += 1
        self._count(item.host, +1)
        return item

    def _unpack(self, item):
        if not isinstance(item, _Packed):
            return item
        if item.unpacked:
            raise RuntimeError("activation offload: a saved block input was unpacked twice (retain_graph?)")
        if item.device.type == "cuda":
            if item.prefetched is None:
                self._fetch(item)
            current = torch.cuda.current_stream(item.device)
            current.wait_event(item.fetched)
            out = item.prefetched
            out.record_stream(current)
            previous = self._items[item.index - 1]() if 0 < item.index <= len(self._items) else None
            if previous is not None and not previous.unpacked:
                self._fetch(previous)  # the block input the backward pass needs next
        else:
            out = item.host.clone()
        item.prefetched, item.unpacked = None, True
        self._count(item.host, -1)
        item.host = torch.empty(0)
        return out

    def _fetch(self, item: _Packed) -> None:
        if item.prefetched is not None:
            return
        stream = self._side_stream(item.device)
        with torch.cuda.stream(stream):
            stream.wait_event(item.copied)
            item.prefetched = item.host.to(item.device, non_blocking=True)
            item.fetched = torch.cuda.Event()
            item.fetched.record(stream)

    def _count(self, host: torch.Tensor, sign: int) -> None:
        self.host_bytes += sign * host.numel() * host.element_size()
        self.peak_host_bytes = max(self.peak_host_bytes, self.host_bytes)
