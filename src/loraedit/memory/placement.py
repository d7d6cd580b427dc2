"""Move a model's parameters and buffers to a device, leaving some parameters where they are."""

from __future__ import annotations

import torch


def place(transformer: torch.nn.Module, device: torch.device, skip: set[int] = frozenset()) -> None:
    """Move every parameter and buffer to `device`, except the parameters whose id is in `skip`."""
    for p in transformer.parameters():
        if id(p) not in skip:
            p.data = p.data.to(device)
    for module in transformer.modules():
        for name, buffer in module._buffers.items():
            if buffer is not None:
                module._buffers[name] = buffer.to(device)
