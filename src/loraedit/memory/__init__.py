"""GPU memory and speed modes for LoRA training and inference.

- `streamer`: frozen block weights streamed host-to-device into a ring of device slots;
- `activations`: saved-tensor hooks that keep the per-block checkpoint inputs in host memory;
- `checkpointing`: the gradient-checkpointing function that ties both (and selective saving of
  attention outputs) to diffusers' `enable_gradient_checkpointing`;
- `plan`: the `train.memory: auto | fast | low` choice from a memory model;
- `verified`: which modes ran correctly on which GPU class (auto picks only those);
- `apply`: puts a plan onto a transformer (called by `stages.prepare_for_training`), probes it;
- `fallback`: gives up an acceleration that fails (compile, attention kernel, fp8, streaming);
- `record`: what a job asked for, planned, gave up and ran (`memory.json` beside its outputs);
- `placement`: moves a model's parameters and buffers to a device;
- `attention`: which attention kernel to ask for, and which one ran (profiler);
- `fp8`: fp8 matmuls for the frozen block Linears (`train.fp8_matmul`, a benchmark mode);
- `bench`: the GPU benchmark's modes and its LoRA correctness check.
"""
