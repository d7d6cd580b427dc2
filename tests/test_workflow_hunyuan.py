"""The demo DAG on the tiny HunyuanVideo-I2V build (paper Sec. 4.4), next to the tiny Wan one
(tests/test_workflow.py): one config switch, `model.backend: tiny-hunyuan`, same rules and tables."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from safetensors.torch import load_file
from test_workflow import OVERRIDES, REPO, run_workflow

from loraedit.video_io import read_frames

DEMO_HUNYUAN = yaml.safe_load((REPO / "config" / "demo-hunyuan.yaml").read_text())  # what `make demo-hunyuan` adds
# Small (about a dozen jobs): one demo clip, the LoRA-Edit mask and the no-LoRA row. Stage 2
# (mask+ref, initialised from the stage-1 file) is covered in tests/test_hunyuan.py.
HUNYUAN = {
    **OVERRIDES,
    **DEMO_HUNYUAN,
    "demo": {**OVERRIDES["demo"], "num_clips": 1},
    "methods": ["mask", "none"],
    "train": {"steps": 4, "checkpoint_every": 2},
    "infer": {**DEMO_HUNYUAN["infer"], "num_steps": 2, "composite_background": False},
}


@pytest.fixture(scope="module")
def hunyuan_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("wf-hunyuan")
    run_workflow(workdir, HUNYUAN)
    return workdir / "results"


def test_tables_name_the_backend_and_every_method(hunyuan_run):
    metrics = pd.read_csv(hunyuan_run / "tables" / "metrics.csv")
    rows = metrics[~metrics["clip_id"].isin(["mean", "std"])]
    assert sorted(rows["method"]) == ["mask", "none"] and rows["bg_psnr"].notna().all()
    manifest = json.loads((hunyuan_run / "tables" / "manifest.json").read_text())
    assert manifest["config"]["model"]["backend"] == "tiny-hunyuan"


def test_outputs_keep_every_frame_and_loras_are_hunyuan(hunyuan_run):
    sheet = pd.read_csv(hunyuan_run / "demo_data" / "samples.tsv", sep="\t")
    for clip in sheet["clip_id"]:
        d = hunyuan_run / clip
        frames = read_frames(d / "prepared" / "frames")
        out = read_frames(d / "mask" / "output" / "frames")
        assert out.shape == frames.shape and out.dtype == np.uint8  # the stock pipeline would drop 4 frames
        lora = load_file(str(d / "mask" / "lora" / "pytorch_lora_weights.safetensors"))
        assert "transformer.single_transformer_blocks.0.proj_out.lora_A.weight" in lora
        assert "transformer.proj_out.lora_A.weight" not in lora
        assert not (d / "mask" / "lora" / "lora_wan.safetensors").exists()
        loss = pd.read_csv(d / "mask" / "loss.csv")
        assert len(loss) == 4 and np.isfinite(loss["loss"]).all()
