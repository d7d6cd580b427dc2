"""Each acceleration that fails on a machine falls back to the plain path, with a one-line warning
and a record, before the LoRA has changed (tiny Wan, CPU; the failures are simulated).

compile (at set-up and at the first step), the attention kernel (refused at set-up and at its first
call), fp8 (storage and matmuls), the weight streamer / activation offload (-> resident, or a
clear error when resident does not fit), running out of memory, and the same for inference."""

import functools
import logging
import re

import numpy as np
import pytest
import torch
from test_memory_training import sample as training_sample

from loraedit import inference as inf
from loraedit import stages
from loraedit import training as tr
from loraedit.backends import wan
from loraedit.backends.registry import load_models, load_transformers
from loraedit.memory import apply as mem
from loraedit.memory import fallback, fp8
from loraedit.memory.plan import GpuMemoryError, MemoryPlan
from loraedit.memory.record import MemoryRecord
from loraedit.memory.streamer import BlockWeightStreamer

CPU = torch.device("cpu")
SETTINGS = tr.TrainSettings(rank=4, lr=1e-2, steps=3, checkpoint_every=0, gradient_checkpointing=True)
PLAIN = {"memory": "auto", "gradient_checkpointing": True}
REAL_COMPILE = torch.compile


@pytest.fixture(autouse=True)
def restore_attention_backend():
    """`set_attention_backend` also sets diffusers' process-wide default: leave it as found."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    before = _AttentionBackendRegistry._active_backend
    yield
    _AttentionBackendRegistry._active_backend = before


def tiny():
    return load_transformers({"backend": "tiny"}, None, torch.float32)[0]


def sample():
    return training_sample(image_tokens=5)


def prepare(transformer, cfg, settings=SETTINGS, probe=True):
    return stages.prepare_for_training(
        transformer, settings, cfg, CPU, wan, tokens=12, probe_sample=sample() if probe else None
    )


def trained(cfg, tmp_path, settings=SETTINGS, probe=True, calls=None):
    """(LoRA state after `settings.steps` steps, the memory record) of a fresh tiny model."""
    torch.manual_seed(1)  # LoRA dropout draws from the global generator: the probe must not move it
    transformer = tiny()
    if calls is not None:
        transformer.register_forward_pre_hook(lambda *_: calls.append(1))
    prepared = prepare(transformer, cfg, settings, probe)
    tr.train(
        transformer,
        [sample()],
        settings,
        CPU,
        tmp_path / f"run{len(list(tmp_path.iterdir()))}",
        progress=False,
        family=wan,
    )
    return tr.lora_state(transformer), prepared.memory


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def failing_compile(monkeypatch, message="inductor: no C++ compiler"):
    """torch.compile whose backend fails when the first call compiles (as a broken toolchain does)."""

    def backend(*_args, **_kwargs):
        raise RuntimeError(message)

    monkeypatch.setattr(torch, "compile", functools.partial(REAL_COMPILE, backend=backend))


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("loraedit")]


# ----------------------------------------------------------------------------- the probe


def test_the_probe_leaves_the_trained_lora_bit_identical(tmp_path):
    """Streaming on (so the probe runs), LoRA dropout on (so the global RNG matters)."""
    settings = tr.TrainSettings(**{**vars(SETTINGS), "dropout": 0.1})
    with_calls, without_calls = [], []
    probed, record = trained({"memory": "low"}, tmp_path, settings, probe=True, calls=with_calls)
    plain, _ = trained({"memory": "low"}, tmp_path, settings, probe=False, calls=without_calls)
    assert len(with_calls) == len(without_calls) + 1  # the probe ran: one more forward, no optimizer step
    assert_same(probed, plain)
    assert any(float(v.abs().max()) > 0 for k, v in probed.items() if "lora_B" in k)  # it trained
    assert record.ran["mode"] == "low" and record.fallbacks == []


def test_the_probe_drops_its_gradients_and_skips_a_plain_model():
    transformer = tiny().eval()
    record = prepare(transformer, {"memory": "low"}).memory
    assert all(p.grad is None for p in transformer.parameters()) and transformer.training is False  # as found
    assert record.ran["streamed_blocks"] == 2
    calls = []
    plain = tiny()
    plain.register_forward_pre_hook(lambda *_: calls.append(1))
    prepare(plain, PLAIN)
    assert calls == []  # nothing to give up: no probe step


# ----------------------------------------------------------------------------- compile


def test_compile_refused_at_set_up_falls_back_to_eager(monkeypatch, caplog):
    def refuse(*_args, **_kwargs):
        raise RuntimeError("Dynamo is not supported on this Python")

    monkeypatch.setattr(torch, "compile", refuse)
    transformer = tiny()
    with caplog.at_level(logging.WARNING, logger="loraedit"):
        record = prepare(transformer, {**PLAIN, "compile": True}).memory
    assert not fallback.compiled(transformer) and record.ran["compile"] is False
    assert [(f["acceleration"], f["when"]) for f in record.fallbacks] == [("compile", "at set-up")]
    assert warnings(caplog) == [
        "train: compile failed at set-up (RuntimeError: Dynamo is not supported on this Python); eager instead"
    ]
    assert record.plan["compile"] is True  # planned, then given up


def test_compile_failing_at_the_first_step_falls_back_before_the_lora_changes(monkeypatch, tmp_path, caplog):
    reference, _ = trained(PLAIN, tmp_path)
    failing_compile(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="loraedit"):
        lora, record = trained({**PLAIN, "compile": True}, tmp_path)
    [fell] = record.fallbacks
    assert (fell["acceleration"], fell["when"], fell["instead"]) == ("compile", "at the first step", "eager")
    assert "inductor: no C++ compiler" in fell["error"] and "\n" not in fell["error"]
    assert len(warnings(caplog)) == 1 and "compile failed at the first step" in warnings(caplog)[0]
    assert record.ran["compile"] is False
    assert_same(lora, reference)  # the failed probe left no trace: the eager run's LoRA exactly


def test_a_compile_that_works_stays_on(monkeypatch):
    monkeypatch.setattr(torch, "compile", functools.partial(REAL_COMPILE, backend="eager"))
    transformer = tiny()
    record = prepare(transformer, {**PLAIN, "compile": True}).memory
    assert fallback.compiled(transformer) and record.ran["compile"] is True and record.fallbacks == []
    torch._dynamo.reset()


# ----------------------------------------------------------------------------- attention


def applied_with(transformer, plan: MemoryPlan, cfg=PLAIN):
    """A plan as on CUDA (the CPU plan never asks for a kernel), applied to the tiny model."""
    tr.add_lora(transformer, SETTINGS, wan)
    record = MemoryRecord.start("train", cfg, CPU)
    return mem.apply_plan(transformer, plan, CPU, record, 12, cfg), record


def probe(transformer):
    return functools.partial(stages.probe_step, transformer, sample(), SETTINGS, CPU, wan)


def plan(backend=None, resident=2, offload=False, **kw):
    return MemoryPlan("fast", resident, offload, True, False, False, backend, **kw)


def test_an_attention_kernel_refused_at_set_up_falls_back_to_pytorch_s_choice():
    transformer = tiny()
    _, record = applied_with(transformer, plan("_flash_3"))  # FlashAttention-3 is not installed here
    assert [(f["acceleration"], f["when"]) for f in record.fallbacks] == [("attention", "at set-up")]
    assert "_flash_3" in record.fallbacks[0]["error"]
    assert "attention" not in fallback.active(transformer)
    assert fallback.state(transformer)["attention_backend"] == "native"


def test_an_attention_kernel_failing_at_its_first_call_falls_back():
    transformer = tiny()
    applied, record = applied_with(transformer, plan("_native_cudnn"))  # set fine; no cuDNN kernel on the CPU
    assert fallback.active(transformer) == ["attention"]
    mem.probe_until_it_runs(transformer, applied, probe(transformer), CPU)
    assert [(f["acceleration"], f["when"]) for f in record.fallbacks] == [("attention", "at the first step")]
    assert fallback.active(transformer) == []


def test_a_failure_of_the_plain_path_is_raised_as_it_is():
    transformer = tiny()
    applied, record = applied_with(transformer, plan("_native_cudnn"))
    bad = dict(sample(), condition=torch.zeros(1, 7, 2, 4, 6))  # wrong channel count: not the kernels' fault
    with pytest.raises(RuntimeError, match="channels|size|shape"):
        mem.probe_until_it_runs(
            transformer, applied, functools.partial(stages.probe_step, transformer, bad, SETTINGS, CPU, wan), CPU
        )
    assert [f["acceleration"] for f in record.fallbacks] == ["attention"]  # tried, then the real error


# ----------------------------------------------------------------------------- fp8


def test_fp8_matmuls_unsupported_fall_back_to_bf16(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise RuntimeError("torch._scaled_mm is only supported on CUDA devices with compute capability >= 8.9")

    monkeypatch.setattr(torch, "_scaled_mm", refuse)
    transformer = tiny()
    record = prepare(transformer, {**PLAIN, "fp8_matmul": True}).memory
    assert [(f["acceleration"], f["instead"]) for f in record.fallbacks] == [("fp8_matmul", "bf16 matmuls")]
    assert not fp8.fp8_layers(transformer.blocks) and record.ran["fp8_matmul"] is False


def test_fp8_matmuls_failing_at_the_first_step_are_dequantized(monkeypatch):
    transformer = tiny()
    tr.add_lora(transformer, SETTINGS, wan)
    record = MemoryRecord.start("train", PLAIN, CPU)
    applied = mem.setup_training(transformer, {**PLAIN, "fp8_matmul": True}, CPU, 12, record=record)
    assert fp8.fp8_layers(transformer.blocks)

    def refuse(*_args, **_kwargs):
        raise RuntimeError("CUBLAS_STATUS_NOT_SUPPORTED")

    monkeypatch.setattr(torch, "_scaled_mm", refuse)
    mem.probe_until_it_runs(transformer, applied, probe(transformer), CPU)
    assert [(f["acceleration"], f["when"]) for f in record.fallbacks] == [("fp8_matmul", "at the first step")]
    assert not fp8.fp8_layers(transformer.blocks)
    assert all(m.weight.dtype == torch.float32 for m in transformer.blocks.modules() if type(m) is torch.nn.Linear)


def test_fp8_storage_unsupported_keeps_the_weights(monkeypatch):
    def refuse(_device):
        raise TypeError("float8_e4m3fn is not supported on this device")

    monkeypatch.setitem(fp8._PROBES, "storage", refuse)
    transformer = tiny()
    record = prepare(transformer, {**PLAIN, "fp8_weights": True}).memory
    assert [(f["acceleration"], f["instead"]) for f in record.fallbacks] == [("fp8_weights", "bf16 weights")]
    assert transformer.blocks[0].attn1.to_q.base_layer.weight.dtype == torch.float32
    assert record.ran["fp8_weights"] is False


# ----------------------------------------------------------------------------- streaming


def test_a_streamer_failing_at_the_first_step_falls_back_to_resident(monkeypatch, tmp_path):
    reference, _ = trained(PLAIN, tmp_path)

    def broken_load(self, index, slot, action):
        raise RuntimeError("cudaHostRegister failed: operation not supported")

    monkeypatch.setattr(BlockWeightStreamer, "_load", broken_load)
    lora, record = trained({"memory": "low"}, tmp_path)
    [fell] = record.fallbacks
    assert (fell["acceleration"], fell["when"], fell["instead"]) == (
        "streaming",
        "at the first step",
        "every block resident",
    )
    assert (record.ran["mode"], record.ran["streamed_blocks"], record.ran["offload_activations"]) == ("plain", 0, False)
    assert_same(lora, reference)


def test_a_streamer_failing_at_set_up_falls_back_to_resident(monkeypatch):
    def broken_init(self, *args, **kwargs):
        raise RuntimeError("cudaHostAlloc failed: out of pinned memory")

    monkeypatch.setattr(BlockWeightStreamer, "__init__", broken_init)
    transformer = tiny()
    record = prepare(transformer, {"memory": "low"}).memory
    assert [(f["acceleration"], f["when"]) for f in record.fallbacks] == [("streaming", "at set-up")]
    assert record.ran["streamed_blocks"] == 0 and record.ran["offload_activations"] is False


def test_an_activation_offload_failure_falls_back_to_resident(monkeypatch):
    from loraedit.memory.activations import ActivationOffload

    def broken_pack(self, t):
        raise RuntimeError("pin_memory: cudaErrorMemoryAllocation")

    monkeypatch.setattr(ActivationOffload, "_pack", broken_pack)
    transformer = tiny()
    record = prepare(transformer, {"memory": "low", "resident_blocks": 2}).memory  # offload only, no streaming
    assert [f["acceleration"] for f in record.fallbacks] == ["streaming"]
    assert record.ran["offload_activations"] is False


def test_a_failing_streamer_is_a_clear_error_when_resident_does_not_fit(monkeypatch):
    def broken_init(self, *args, **kwargs):
        raise RuntimeError("cudaHostAlloc failed")

    monkeypatch.setattr(BlockWeightStreamer, "__init__", broken_init)
    lean = plan(resident=0, offload=True, free_bytes=1e5, usable_bytes=0.9e5)  # room for the streamed plan only
    with pytest.raises(GpuMemoryError) as error:
        applied_with(tiny(), lean, {"memory": "low"})
    message = str(error.value)
    assert "\n" not in message and "streaming failed (RuntimeError: cudaHostAlloc failed)" in message
    assert "every block resident needs an estimated" in message and "train.fp8_weights: true" in message
    assert "train.memory: low," not in message  # it is the low mode that failed


def test_running_out_of_memory_in_the_first_step_names_the_settings():
    transformer = tiny()
    applied, _ = applied_with(
        transformer, plan(resident=0, offload=True, free_bytes=1e9, usable_bytes=0.9e9, gpu_bytes=0.8e9)
    )

    def oom():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(
        GpuMemoryError,
        match=r"ran out of GPU memory in the fast plan \(estimated 0\.8 GB, "
        r"0\.9 GB usable; OutOfMemoryError: CUDA out of memory",
    ):
        mem.probe_until_it_runs(transformer, applied, oom, CPU)


def test_no_mode_fits_is_one_line_before_any_step(monkeypatch):
    """The CUDA decision (1 kB free), simulated through the plan functions on the tiny model."""
    real_choose = mem.choose

    def on_a_tiny_gpu(cfg, sizes, tokens, device, free, backend=None, verified=None):
        return real_choose(cfg, sizes, tokens, torch.device("cuda"), 1e3, backend, verified=verified)

    monkeypatch.setattr(mem, "choose", on_a_tiny_gpu)
    calls = []
    transformer = tiny()
    tr.add_lora(transformer, SETTINGS, wan)
    before = tr.lora_state(transformer)
    with pytest.raises(GpuMemoryError) as error:
        mem.setup_training(transformer, {"memory": "low"}, CPU, 12, probe=lambda: calls.append(1))
    message = str(error.value)
    assert "\n" not in message and calls == []
    assert re.match(
        r"train\.memory: no mode fits: the leanest plan \(low, \d blocks resident\) needs an estimated ", message
    )
    assert "GB of GPU memory at 12 tokens, 0.0 GB is usable (0.9 x 0.0 GB free)" in message
    assert "train.fp8_weights: true" in message and "train.gpu_memory_gb" in message
    assert_same(tr.lora_state(transformer), before)


# ----------------------------------------------------------------------------- inference


@pytest.fixture(scope="module")
def clip():
    rng = np.random.default_rng(0)
    frames = (rng.random((5, 32, 48, 3)) * 255).astype(np.uint8)
    keep = np.ones((5, 32, 48), np.uint8)
    keep[1:, 8:24, 16:32] = 0
    return frames, keep


def edit(infer_cfg, clip):
    """(output frames, memory record) of the tiny model's edit with `infer_cfg`'s compile / kernel."""
    frames, keep = clip
    models = load_models({"backend": "tiny", "seed": 0}, CPU, torch.float32)
    settings = inf.InferSettings(num_steps=2, guidance_scale=3.0)
    record = mem.prepare_for_inference(models.transformers, infer_cfg, CPU)
    output = mem.run_inference(
        lambda: inf.edit_video(models, frames, 255 - frames[0], keep, "p3rs0n", settings, CPU, progress=False),
        models.transformers,
        CPU,
        record,
    )
    return output, record


def test_inference_falls_back_from_a_failing_compile_and_kernel_to_the_same_output(monkeypatch, clip):
    plain, record = edit({"compile": False}, clip)
    assert record.fallbacks == [] and record.ran == {"compile": False, "attention_backend": "native"}
    failing_compile(monkeypatch)
    output, record = edit({"compile": True, "attention_backend": "_native_cudnn"}, clip)
    assert [(f["acceleration"], f["when"]) for f in record.fallbacks] == [
        ("compile", "at the first step"),
        ("attention", "at the first step"),
    ]
    assert record.ran == {"compile": False, "attention_backend": "native"}
    assert np.array_equal(output, plain)


def test_inference_with_a_refused_kernel_and_a_working_compile(monkeypatch, clip):
    plain, _ = edit({"compile": False}, clip)
    monkeypatch.setattr(torch, "compile", functools.partial(REAL_COMPILE, backend="eager"))
    output, record = edit({"compile": True, "attention_backend": "_flash_3"}, clip)
    assert [(f["acceleration"], f["when"]) for f in record.fallbacks] == [("attention", "at set-up")]
    assert record.ran == {"compile": True, "attention_backend": "native"}
    assert np.array_equal(output, plain)
    torch._dynamo.reset()


def test_inference_errors_outside_the_transformer_are_not_retried(clip):
    models = load_models({"backend": "tiny", "seed": 0}, CPU, torch.float32)
    record = mem.prepare_for_inference(models.transformers, {"attention_backend": "_native_math"}, CPU)
    runs = []

    def decode_fails():
        runs.append(1)
        raise ValueError("VAE decode: bad latents")

    with pytest.raises(ValueError, match="VAE decode"):
        mem.run_inference(decode_fails, models.transformers, CPU, record)
    assert runs == [1] and record.fallbacks == []
