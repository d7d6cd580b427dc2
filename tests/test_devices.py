"""Config device/dtype names, shared by captions, the Wan models and metrics."""

import pytest
import torch

from loraedit.caption import resolve_dtype as caption_dtype
from loraedit.devices import resolve_device, resolve_dtype


def test_auto_and_explicit_devices():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == resolve_device(None).type == expected
    assert resolve_device("cpu") == torch.device("cpu")


def test_dtypes():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("auto", gpu) == torch.bfloat16  # the Wan models
    assert caption_dtype("auto", gpu) == torch.float16  # Florence-2, as the official code
    assert resolve_dtype("bf16", cpu) == torch.bfloat16 and resolve_dtype(torch.float16, cpu) == torch.float16
    with pytest.raises(ValueError, match="dtype 'fp64'"):
        resolve_dtype("fp64", cpu)
