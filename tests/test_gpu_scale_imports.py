"""The GPU benchmark must run where ffmpeg-python and imageio-ffmpeg are not installed (the device
machines): importing it, and everything it imports (benchmarks/harness.py included), must not import them."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_scale.py"

BLOCKED_IMPORT = f"""
import importlib.abc, importlib.util, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ffmpeg", "imageio_ffmpeg"):
            raise ImportError(f"blocked: {{name}}")
        return None

sys.meta_path.insert(0, Block())
spec = importlib.util.spec_from_file_location("gpu_scale", {str(SCRIPT)!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
import loraedit.stages, loraedit.video_io  # the path that used to pull them in
print("ok", "ffmpeg" in sys.modules, "imageio_ffmpeg" in sys.modules)
"""


def test_gpu_scale_imports_without_ffmpeg_packages():
    out = subprocess.run(
        [sys.executable, "-c", BLOCKED_IMPORT], capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-3:] == ["ok", "False", "False"]
