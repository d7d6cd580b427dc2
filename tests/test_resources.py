"""Per-rule resources: defaults per backend, scaling with video size and attempt, config overrides."""

from pathlib import Path

import pytest

from loraedit.resources import (
    CPU_RULES,
    DEFAULT_RESOURCES,
    GPU_RULES,
    retries,
    rule_resources,
    size_factor,
)

REAL = {"model": {"backend": "wan2.1-i2v-480p"}}
TINY = {"model": {"backend": "tiny"}}


@pytest.mark.parametrize("cfg", [REAL, TINY])
def test_gpu_rules_ask_for_a_gpu_cpu_rules_do_not(cfg):
    for rule in GPU_RULES:
        assert rule_resources(cfg, rule)["gpu"] == 1, rule
    for rule in CPU_RULES:
        assert rule_resources(cfg, rule)["gpu"] == 0, rule


def test_every_backend_has_every_rule():
    for backend, table in DEFAULT_RESOURCES.items():
        assert set(table) == set(GPU_RULES) | set(CPU_RULES), backend


def test_reference_size_gives_the_base_figures():
    r = rule_resources(REAL, "train_lora")
    base = DEFAULT_RESOURCES["wan2.1-i2v-480p"]["train_lora"]
    assert r == {"gpu": 1, "mem_mb": base["mem_mb"], "runtime": base["runtime"], "threads": base["threads"]}


def test_backend_defaults_differ():
    assert rule_resources(REAL, "train_lora")["mem_mb"] > 10 * rule_resources(TINY, "train_lora")["mem_mb"]
    # No backend set: the tiny default, as models.wan does.
    assert rule_resources({}, "infer") == rule_resources(TINY, "infer")


def test_memory_and_runtime_scale_with_frames_times_pixels():
    base = DEFAULT_RESOURCES["wan2.1-i2v-480p"]["train_lora"]
    ref = rule_resources(REAL, "train_lora")
    double = rule_resources(REAL, "train_lora", frames=98)
    # Twice the video: the scaling fraction of the figure doubles, the fixed part stays.
    assert double["mem_mb"] == pytest.approx(base["mem_mb"] * (1 + base["mem_scale"]), abs=100)
    assert double["runtime"] == pytest.approx(base["runtime"] * (1 + base["runtime_scale"]), abs=1)
    # Frames and pixels count alike: 49 frames at 2x width == 98 frames at 1x.
    assert rule_resources(REAL, "train_lora", width=1664) == double
    # A 720p clip asks for more than 480p, a small clip for less, never below the fixed part.
    big = rule_resources(REAL, "train_lora", frames=81, width=1280, height=720)
    small = rule_resources(REAL, "train_lora", frames=17, width=64, height=64)
    assert big["mem_mb"] > ref["mem_mb"] > small["mem_mb"] >= base["mem_mb"] * (1 - base["mem_scale"])
    assert big["runtime"] > ref["runtime"] > small["runtime"] >= 1
    # Threads and gpu do not scale.
    assert big["threads"] == small["threads"] == ref["threads"] and big["gpu"] == 1


def test_fixed_rules_do_not_scale():
    a = rule_resources(REAL, "aggregate")
    assert rule_resources(REAL, "aggregate", frames=97, width=1280, height=720) == a


def test_attempt_grows_by_retry_factor():
    r1, r2, r3 = (rule_resources(REAL, "infer", attempt=a) for a in (1, 2, 3))
    assert r2["mem_mb"] == pytest.approx(1.5 * r1["mem_mb"], abs=100)
    assert r3["mem_mb"] == pytest.approx(2.25 * r1["mem_mb"], abs=100)
    assert r3["runtime"] == pytest.approx(2.25 * r1["runtime"], abs=1)
    cfg = {**REAL, "resources": {"retry_factor": 2}}
    assert rule_resources(cfg, "infer", attempt=2)["mem_mb"] == 2 * r1["mem_mb"]
    with pytest.raises(ValueError):
        rule_resources(REAL, "infer", attempt=0)


def test_size_and_attempt_combine():
    one = rule_resources(REAL, "masks", frames=97)
    both = rule_resources(REAL, "masks", attempt=2, frames=97)
    assert both["mem_mb"] == pytest.approx(1.5 * one["mem_mb"], abs=100)


def test_config_overrides_rules_then_backends():
    cfg = {
        "model": {"backend": "wan2.1-i2v-480p"},
        "resources": {
            "rules": {"train_lora": {"mem_mb": 100000, "threads": 16}, "infer": {"runtime": 90}},
            "backends": {"wan2.1-i2v-480p": {"train_lora": {"mem_mb": 120000}}, "tiny": {"infer": {"runtime": 1}}},
        },
    }
    t = rule_resources(cfg, "train_lora")
    assert t["mem_mb"] == 120000 and t["threads"] == 16  # backend section wins over rules
    assert rule_resources(cfg, "infer")["runtime"] == 90  # the tiny entry does not apply here
    assert rule_resources(cfg, "caption") == rule_resources(REAL, "caption")


def test_gpu_model_only_on_gpu_rules():
    cfg = {**REAL, "resources": {"gpu_model": "a100", "rules": {"score": {"gpu_model": "l40s"}}}}
    assert rule_resources(cfg, "train_lora")["gpu_model"] == "a100"
    assert rule_resources(cfg, "score")["gpu_model"] == "l40s"
    assert "gpu_model" not in rule_resources(cfg, "prepare")
    assert "gpu_model" not in rule_resources(REAL, "train_lora")


def test_unknown_rule_and_keys_are_errors():
    with pytest.raises(KeyError, match="resources.rules.nope"):
        rule_resources(REAL, "nope")
    with pytest.raises(ValueError, match="memory"):
        rule_resources({"resources": {"rules": {"infer": {"memory": 3}}}}, "infer")
    # A new rule can be described entirely in config.
    cfg = {"resources": {"rules": {"extra": {"gpu": 0, "mem_mb": 500, "runtime": 2, "threads": 1}}}}
    assert rule_resources(cfg, "extra", frames=98) == {"gpu": 0, "mem_mb": 500, "runtime": 2, "threads": 1}
    with pytest.raises(ValueError):
        size_factor(0, 832, 480)


def test_retries():
    assert retries({}) == 1
    assert retries({"retries": 2}) == 2  # top level, as in config/config.yaml
    assert retries({"retries": 2, "resources": {"retries": 0}}) == 0
    cfg = {"resources": {"retries": 3, "rules": {"train_lora": {"retries": 0}}}}
    assert retries(cfg) == 3 and retries(cfg, "infer") == 3 and retries(cfg, "train_lora") == 0
    with pytest.raises(ValueError):
        retries({"resources": {"retries": -1}})


def test_a_small_local_checkpoint_gets_the_tiny_figures(tmp_path):
    """The bundled toy model loads through a real backend; its 9 MB of weights must not ask SLURM for
    the 14B model's memory. A real-size folder (a sparse 2 GiB file) keeps the backend's figures."""
    toy = {
        "model": {"backend": "wan2.1-i2v-480p", "path": str(Path(__file__).parents[1] / "models" / "toy-wan2.1-i2v")}
    }
    assert rule_resources(toy, "train_lora") == rule_resources(TINY, "train_lora")
    big = tmp_path / "big"
    (big / "transformer").mkdir(parents=True)
    with open(big / "transformer" / "diffusion_pytorch_model.safetensors", "wb") as f:
        f.truncate(2 * 2**30)
    real_folder = {"model": {"backend": "wan2.1-i2v-480p", "path": str(big)}}
    assert rule_resources(real_folder, "train_lora") == rule_resources(REAL, "train_lora")
    # A hub id (no local folder) keeps them too.
    hub = {"model": {"backend": "wan2.1-i2v-480p", "path": "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"}}
    assert rule_resources(hub, "train_lora") == rule_resources(REAL, "train_lora")
