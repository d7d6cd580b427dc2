"""The claim about diffusers group offloading + LoRA, checked with diffusers' own code.

With `use_stream=True` (what `stages.prepare_for_training` used for `offload_blocks_per_group`)
a `ModuleGroup` snapshots every parameter of its blocks to host memory when offloading is
applied (`cpu_param_dict`), and offloading a group points each parameter back at that snapshot.
Applied after the LoRA is attached, the snapshot holds the LoRA's initial values, so every
offload throws the optimizer's updates away. The streamed onload itself needs CUDA (pinned
memory), but the offload half runs on the CPU and shows the loss. The full GPU check is the
benchmark's LoRA check of the `offload` mode (benchmarks/README.md).
"""

import torch
from diffusers.hooks.group_offloading import ModuleGroup

from loraedit import training as tr
from loraedit.backends import wan
from loraedit.backends.wan import tiny


def lora_b(block):
    return [p for n, p in block.named_parameters() if "lora_B" in n]


def test_streamed_group_offload_reverts_the_lora_to_its_snapshot():
    model = tiny.build_tiny_transformer()
    tr.add_lora(model, tr.TrainSettings(rank=4), wan)
    block = model.blocks[0]
    # The group `apply_group_offloading(..., use_stream=True)` builds for one block, except that the
    # snapshot is not pinned (no CUDA here) and record_stream skips the CUDA sync.
    group = ModuleGroup(
        modules=[block],
        offload_device=torch.device("cpu"),
        onload_device=torch.device("cpu"),
        offload_leader=block,
        onload_leader=block,
        stream=torch.cpu.Stream(),
        record_stream=True,
        low_cpu_mem_usage=True,
    )
    params = lora_b(block)
    snapshot = [group.cpu_param_dict[p] for p in params]
    assert params and all(float(p.detach().norm()) == 0 for p in params)  # peft starts lora_B at zero
    # The streamed onload is `snapshot.to(cuda)`: a new device tensor. On the CPU `.to("cpu")` would
    # alias the snapshot, so the copy it makes on a GPU is made here by hand.
    for p, s in zip(params, snapshot):
        p.data = s.clone()
    optimizer = torch.optim.SGD(params, lr=0.1)
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()  # a training step moves lora_B (in place, on the onloaded tensor)
    assert all(float(p.detach().norm()) > 0 for p in params)
    group.offload_()  # diffusers' own offload, as its hook runs it after the block
    assert all(p.data_ptr() == s.data_ptr() for p, s in zip(params, snapshot))  # repointed at the snapshot
    assert all(float(p.detach().norm()) == 0 for p in params)  # the update is gone: back to the snapshot
