"""GPU memory and speed modes for LoRA training and inference (issue 11).

- `streamer`: frozen block weights streamed host-to-device into a ring of device slots;
- `activations`: saved-tensor hooks that keep the per-block checkpoint inputs in host memory;
- `checkpointing`: the gradient-checkpointing function that ties both (and selective saving of
  attention outputs) to diffusers' `enable_gradient_checkpointing`;
- `plan`: the `train.memory: auto | fast | low` choice from a memory model;
- `apply`: puts a plan onto a transformer (called by `stages.prepare_for_training`);
- `attention`: which attention kernel to ask for, and which one ran (profiler);
- `fp8`: fp8 matmuls for the frozen block Linears (`train.fp8_matmul`, a benchmark mode);
- `bench`: the GPU benchmark's modes and its LoRA correctness check.
"""
