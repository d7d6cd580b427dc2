"""pyiqa metrics, plus masked PSNR / SSIM built on pyiqa's SSIM map.

pyiqa 0.1.16 runs these with no downloaded weights (checked offline): psnr,
ssim, ms_ssim, cw_ssim, fsim, vif, gmsd, nlpd, vsi (full-reference) and piqe,
entropy (no-reference). Metrics that need weight files (niqe, brisque, lpips,
musiq, qalign) run only when the files are already cached; pyiqa would
otherwise try to download them, which a compute node usually cannot.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import torch

from ..devices import resolve_device
from .base import NO_WEIGHTS, PSNR_CAP_DB, pkg_version, record, to_tensor01

WEIGHT_FREE_METRICS = ("psnr", "ssim", "ms_ssim", "cw_ssim", "fsim", "vif", "gmsd", "nlpd", "vsi", "piqe", "entropy")
WEIGHT_METRICS = ("niqe", "brisque", "lpips", "musiq")
QALIGN_REPO = "q-future/one-align"  # what pyiqa's QAlign loads through from_pretrained
MS_SSIM_MIN_SIDE = 161  # 5 scales of an 11-tap window: the coarsest scale must still hold the window
# Smallest frame side each multi-scale metric accepts (cw_ssim: a 4-level steerable pyramid; measured).
MIN_SIDE = {"ms_ssim": MS_SSIM_MIN_SIDE, "cw_ssim": 64}
SSIM_BORDER = 5  # pyiqa's SSIM filters 11x11 'valid': the map is 5 px smaller on each side
CHUNK_PIXELS = 500_000  # pixels per pyiqa call: entropy (one-hot) peaks near 2 GB per Mpx, SSIM (float64) near 1 GB


def _chunk(frames: np.ndarray) -> int:
    """Frames per call: a whole 17-frame demo clip at 128x128, one frame at 832x480."""
    return max(1, CHUNK_PIXELS // (frames.shape[1] * frames.shape[2]))


def _pyiqa():
    import pyiqa  # slow (~5 s): imported on first use so that importing loraedit.metrics stays fast

    return pyiqa


def pyiqa_cache_dir() -> Path:
    """Where pyiqa keeps its weight files: ``$TORCH_HOME/hub/pyiqa`` (default ``~/.cache/torch/hub/pyiqa``)."""
    return Path(torch.hub.get_dir()) / "pyiqa"


def _url_name(url: str) -> str:
    return os.path.basename(url.split("?")[0])


def required_weight_files(name: str) -> list[Path]:
    """The files pyiqa's default configuration of ``name`` loads, taken from pyiqa's own URL tables."""
    from pyiqa.archs import brisque_arch, lpips_arch, musiq_arch, niqe_arch

    cache, hub = pyiqa_cache_dir(), Path(torch.hub.get_dir()) / "checkpoints"
    if name == "niqe":
        return [cache / _url_name(niqe_arch.default_model_urls["url"])]
    if name == "brisque":
        return [cache / _url_name(brisque_arch.default_model_urls["url"])]
    if name == "lpips":  # LPIPS linear layers + torchvision's ImageNet AlexNet backbone
        from torchvision.models import AlexNet_Weights

        return [
            cache / _url_name(lpips_arch.default_model_urls["0.1_alex"]),
            hub / _url_name(AlexNet_Weights.IMAGENET1K_V1.url),
        ]
    if name == "musiq":
        return [cache / _url_name(musiq_arch.default_model_urls["koniq10k"])]
    raise KeyError(f"no weight-file table for pyiqa metric {name!r}")


def weights_cached(name: str) -> bool:
    """Whether pyiqa can build ``name`` without downloading (unknown weight metrics: False)."""
    if name in WEIGHT_FREE_METRICS:
        return True
    if name == "qalign":
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(QALIGN_REPO, "config.json"), str)
    if name not in WEIGHT_METRICS:
        return False  # loraedit does not know its files: only with pyiqa_allow_download
    return all(p.is_file() for p in required_weight_files(name))


@functools.cache
def _metric(name: str, device: str):
    return _pyiqa().create_metric(name, device=torch.device(device), as_loss=False)


def check_names(names: list[str]) -> None:
    """Fail before any scoring on a metric name pyiqa does not have."""
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    unknown = [n for n in names if n not in DEFAULT_CONFIGS]
    if unknown:
        raise ValueError(f"score: unknown pyiqa metric(s) {', '.join(map(repr, unknown))} (see pyiqa.list_models())")


def _info(name: str) -> dict:
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    check_names([name])
    return DEFAULT_CONFIGS[name]


def _run(name: str, out: np.ndarray, ref: np.ndarray | None, device: torch.device) -> float:
    """Mean over frames of pyiqa ``name`` on ``out`` (vs ``ref`` for full-reference metrics)."""
    metric = _metric(name, str(device))
    scores, n = [], _chunk(out)
    for s in range(0, len(out), n):
        x = to_tensor01(out[s : s + n]).to(device)  # (n, 3, H, W)
        with torch.no_grad():
            if ref is None:
                v = metric(x)
            else:
                v = metric(x, to_tensor01(ref[s : s + n]).to(device))
        scores.append(v.detach().float().reshape(-1).cpu())
    return float(torch.cat(scores).mean())


def pyiqa_metric(
    name: str,
    out: np.ndarray,
    ref: np.ndarray | None,
    device: str | torch.device = "auto",
    allow_download: bool = False,
    ref_label: str = "ground truth",
) -> dict:
    """One pyiqa metric as a record. ``out``/``ref`` are ``uint8 (T, H, W, 3)``; ref None -> n/a for FR metrics.

    A metric that needs weight files runs only when they are cached (or ``allow_download``).
    """
    info = _info(name)
    fr = info["metric_mode"] == "FR"
    higher = not info.get("lower_better", False)
    impl = f"pyiqa.create_metric('{name}')" + (f" vs {ref_label}" if fr else " (no-reference)")
    version = f"pyiqa {pkg_version('pyiqa')}"
    model = "" if name in WEIGHT_FREE_METRICS else "pyiqa default weights"
    fam = "ground_truth" if fr else "no_reference"
    if fr and ref is None:
        return record(None, higher, impl, version, model, f"n/a (no {ref_label})", fam)
    if not allow_download and not weights_cached(name):
        return record(None, higher, impl, version, model, NO_WEIGHTS, fam)
    if min(out.shape[1:3]) < MIN_SIDE.get(name, 0):
        return record(None, higher, impl, version, model, f"n/a (frames under {MIN_SIDE[name]} px)", fam)
    return record(_run(name, out, ref, resolve_device(device)), higher, impl, version, model, "", fam)


def qalign_metric(out: np.ndarray, device: str | torch.device = "auto", enabled: bool = True) -> dict:
    """pyiqa's Q-Align (mPLUG-Owl2, 1..5), DeQA-Score's closest relative, per frame, averaged."""
    impl, version, model = "pyiqa.create_metric('qalign')", f"pyiqa {pkg_version('pyiqa')}", QALIGN_REPO
    if not enabled:
        return record(None, True, impl, version, model, "n/a (disabled in config)", "table1")
    if not weights_cached("qalign"):
        return record(None, True, impl, version, model, NO_WEIGHTS, "table1")
    return record(_run("qalign", out, None, resolve_device(device)), True, impl, version, model, "", "table1")


# ----------------------------------------------------------------------------- masked PSNR / SSIM


def masked_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """RGB PSNR in dB of ``(T, H, W, 3)`` videos over every pixel where ``mask`` (T, H, W) is 1.

    One MSE pooled over all frames (not a mean of per-frame PSNRs, which a single
    identical frame would push to infinity); inf when identical, nan when the mask is empty.
    """
    diff2 = (a.astype(np.float64) - b.astype(np.float64)) ** 2  # (T, H, W, 3)
    w = np.ones(a.shape[:3]) if mask is None else (np.asarray(mask) > 0).astype(np.float64)
    n = w.sum() * 3
    if n == 0:
        return float("nan")
    mse = (diff2 * w[..., None]).sum() / n
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def ssim_per_frame(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """``float (T,)`` SSIM (pyiqa's: Y channel, 11x11 Gaussian, 0..255) averaged over the kept pixels.

    The map is 'valid'-filtered, so the mask is cropped by the same 5 px per side; nan where it is empty.
    """
    from pyiqa.archs.func_util import preprocess_rgb
    from pyiqa.archs.ssim_arch import ssim

    out, n = [], _chunk(a)
    for s in range(0, len(a), n):
        x = preprocess_rgb(to_tensor01(a[s : s + n]), True, 255, "yiq").double()
        y = preprocess_rgb(to_tensor01(b[s : s + n]), True, 255, "yiq").double()
        m = ssim(x, y, get_ssim_map=True, data_range=255)[:, 0].numpy()  # (n, H-10, W-10)
        if mask is None:
            out.extend(m.mean(axis=(1, 2)))
            continue
        k = (np.asarray(mask[s : s + n]) > 0)[:, SSIM_BORDER:-SSIM_BORDER, SSIM_BORDER:-SSIM_BORDER]
        for mi, ki in zip(m, k):
            out.append(mi[ki].mean() if ki.any() else np.nan)
    return np.asarray(out, dtype=np.float64)


def psnr_record(value: float, impl: str, family: str, empty_note: str) -> dict:
    """A PSNR record; identical inputs (inf) become ``PSNR_CAP_DB`` and say so."""
    version = f"numpy {np.__version__}"
    if np.isnan(value):
        return record(None, True, impl, version, "", empty_note, family)
    if np.isinf(value):
        return record(PSNR_CAP_DB, True, impl, version, "", f"capped at {PSNR_CAP_DB:g} dB (identical)", family)
    return record(value, True, impl, version, "", "", family)


def ssim_record(values: np.ndarray, impl: str, family: str, empty_note: str) -> dict:
    values = values[~np.isnan(values)]
    version = f"pyiqa {pkg_version('pyiqa')}"
    if values.size == 0:
        return record(None, True, impl, version, "", empty_note, family)
    return record(float(values.mean()), True, impl, version, "", "", family)
