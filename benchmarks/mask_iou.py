"""IoU of each mask source against the true mask, on procedural clips whose truth is known.

The demo clips (``loraedit.toy.demo.render_clip``: a textured shape moving over a panning
textured background, recoloured in the edited first frame) are rendered for several seeds
and lengths. For every source the edit region of frames 2..T is compared with the true one,
in both shapes: ``exact`` (the region itself) and ``box`` (the official boxes; the truth is
boxed the same way), plus the coverage: the share of the true region inside the mask (what
is left out cannot be edited). Prints a Markdown table per source.

Sources: ``flow`` (the heuristic, with and without colour snapping); ``sam2`` from one click
on the true region's centre on frame 1, and ``sam2-box`` from its true box; ``sam3`` from the
phrase "a <colour> <shape>". SAM runs with ``--sam2-model`` / ``--sam3-model`` (a local folder
or hub id for real numbers; ``tiny`` runs the random offline models: meaningless IoU, a smoke
test of the code path).

    .venv/bin/python benchmarks/mask_iou.py --seeds 0 1 2 --frames 17 49
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from loraedit.masks import MaskInputs, masks_config
from loraedit.masks.shapes import box_shape, shape_mask
from loraedit.masks.sources import get_source
from loraedit.toy.demo import SPECS, render_clip


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def _rows(spec, shape_name):
    """Sheet rows per SAM source for one clip (the truth gives the click / box / phrase)."""
    return {
        "sam2": lambda region0: {"mask_points": "+{:.1f},{:.1f}".format(*_centre(region0))},
        "sam2-box": lambda region0: {"mask_box": "{},{},{},{}".format(*_bbox(region0))},
        "sam3": lambda region0: {"mask_prompt": f"a {spec.color_name} {shape_name}"},
    }


def _centre(region: np.ndarray) -> tuple[float, float]:
    """A point inside the region: the pixel nearest the centroid (the region may be concave)."""
    ys, xs = np.nonzero(region)
    i = np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2)
    return xs[i] + 0.5, ys[i] + 0.5


def _bbox(region: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(region)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def run(seeds: list[int], frame_counts: list[int], sam2_model: str | None, sam3_model: str | None) -> list[dict]:
    sources = {
        "flow": {"source": "flow"},
        "flow (no snap)": {"source": "flow", "flow_snap": False},
        "flow (dilate 1)": {"source": "flow", "dilate": 1},
    }  # dilate: exact shape only
    if sam2_model:
        sources |= {
            "sam2": {"source": "sam2", "sam2_model": sam2_model},
            "sam2-box": {"source": "sam2", "sam2_model": sam2_model},
        }
    if sam3_model:
        sources["sam3"] = {"source": "sam3", "sam3_model": sam3_model}
    results = []
    for n in frame_counts:
        for seed in seeds:
            for i, spec in enumerate(SPECS):
                video, gt, keep = render_clip(spec, n, np.random.default_rng([seed, i]))
                truth = keep == 0  # (T, H, W) the shape's footprint
                t, h, w = truth.shape
                meta = {"clip_id": spec.shape, "src_num_frames": t, "src_size": [w, h], "frame_indices": list(range(t))}
                rows = _rows(spec, spec.shape)
                for name, extra in sources.items():
                    cfg = masks_config(extra)
                    row = rows[name](truth[0]) if name in rows else {}
                    start = time.perf_counter()
                    raw = get_source(cfg["source"])(MaskInputs(spec.shape, video, gt[0], meta, cfg, row=row))
                    secs = time.perf_counter() - start
                    for shape in ("exact", "box"):
                        pred = shape_mask(raw, {**cfg, "shape": shape})[1:] == 0
                        ref = truth[1:] if shape == "exact" else box_shape(truth[1:], cfg["box_grow"], cfg["min_area"])
                        ious = [iou(p, r) for p, r in zip(pred, ref)]
                        cover = [(p & r).sum() / max(r.sum(), 1) for p, r in zip(pred, truth[1:])]
                        results.append(
                            {
                                "frames": n,
                                "seed": seed,
                                "clip": spec.shape,
                                "source": name,
                                "shape": shape,
                                "mean_iou": float(np.mean(ious)),
                                "min_iou": float(np.min(ious)),
                                "coverage": float(np.mean(cover)),
                                "s": secs,
                            }
                        )
    return results


def table(results: list[dict]) -> str:
    keys = sorted({(r["frames"], r["source"], r["shape"]) for r in results}, key=lambda k: (k[0], k[2], k[1]))
    lines = [
        "| frames | shape | source | clips | mean IoU | worst clip mean | worst frame | coverage | s / clip |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n, source, shape in keys:
        rs = [r for r in results if (r["frames"], r["source"], r["shape"]) == (n, source, shape)]
        lines.append(
            f"| {n} | {shape} | {source} | {len(rs)} | {np.mean([r['mean_iou'] for r in rs]):.3f} | "
            f"{min(r['mean_iou'] for r in rs):.3f} | {min(r['min_iou'] for r in rs):.3f} | "
            f"{np.mean([r['coverage'] for r in rs]):.3f} | "
            f"{np.mean([r['s'] for r in rs]):.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--frames", type=int, nargs="+", default=[17])
    ap.add_argument("--sam2-model", default=None, help="tiny | local folder | hub id (default: skip SAM2)")
    ap.add_argument("--sam3-model", default=None, help="tiny | local folder | hub id (default: skip SAM3)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(table(run(args.seeds, args.frames, args.sam2_model, args.sam3_model)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
