"""Mask sources ``sam2`` (clicks / boxes) and ``sam3`` (a text phrase), as the paper makes masks.

The official LoRA-Edit tool (cjeen/LoRAEdit ``predata_app.py``) has a person click positive /
negative points on a frame, SAM2 tracks the object through the (already resized) clip, and
each frame's mask becomes boxes (``masks.shape: box``, see :func:`loraedit.masks.shapes.box_shape`).
Here the clicks come from the sample sheet (:mod:`loraedit.sheet.mask_columns`), tracking runs on
the prepared frames, and SAM3 adds text prompts: every instance of the phrase is found and
tracked, and the union per frame is the edit region.

Tracking starts on the prompt frame and runs forward to the end, then backward to frame 0
when the prompt frame is not the first. Weights: ``masks.sam2_model`` / ``masks.sam3_model``
(``tiny`` = random model of the same classes, built offline; or a local folder / hub id).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch

from ..devices import device_and_dtype
from ..errors import ClipError
from ..sheet.mask_columns import (
    SamObject,
    SamPrompt,
    parse_row,
    source_frame_to_prepared,
    to_prepared,
)
from .base import MaskInputs
from .sam_models import load_sam2, load_sam3

log = logging.getLogger(__name__)


def _propagate(model, session, start: int, num_frames: int) -> Iterator[tuple[int, object]]:
    """``(frame_idx, output)`` once per frame: ``start`` .. end, then ``start - 1`` .. 0."""
    seen: set[int] = set()
    for reverse in (False, True):
        if reverse and start == 0:
            break
        for out in model.propagate_in_video_iterator(inference_session=session, start_frame_idx=start, reverse=reverse):
            if out.frame_idx not in seen:
                seen.add(out.frame_idx)
                yield out.frame_idx, out
    missing = sorted(set(range(num_frames)) - seen)
    if missing:  # would silently leave frames unmasked
        raise RuntimeError(f"SAM propagation gave no output for frames {missing}")


@torch.inference_mode()
def track_sam2(
    model, proc, frames: np.ndarray, start: int, objects: list[SamObject], device="cpu", dtype=torch.float32
) -> np.ndarray:
    """``bool (n_obj, T, H, W)``: each object (prepared-frame coordinates) tracked over ``frames (T, H, W, 3)``."""
    t, h, w = frames.shape[:3]
    sess = proc.init_video_session(video=list(frames), inference_device=device, video_storage_device="cpu", dtype=dtype)
    for obj in objects:
        kwargs = {}
        if obj.points:
            kwargs.update(input_points=[[[list(p) for p in obj.points]]], input_labels=[[list(obj.labels)]])
        if obj.box is not None:
            kwargs["input_boxes"] = [[list(obj.box)]]
        proc.add_inputs_to_inference_session(inference_session=sess, frame_idx=start, obj_ids=obj.obj_id, **kwargs)
        model(inference_session=sess, frame_idx=start)  # consume this object's inputs before the next is added
    out_masks = np.zeros((len(objects), t, h, w), bool)
    order = {o.obj_id: i for i, o in enumerate(objects)}
    for f, out in _propagate(model, sess, start, t):
        m = proc.post_process_masks([out.pred_masks], original_sizes=[[h, w]], binarize=True)[0]  # (n_obj, 1, H, W)
        for k, oid in enumerate(out.object_ids):
            out_masks[order[oid], f] = m[k, 0].cpu().numpy()
    return out_masks


@torch.inference_mode()
def track_sam3(
    model, proc, frames: np.ndarray, start: int, text: str, device="cpu", dtype=torch.float32
) -> tuple[np.ndarray, list[int]]:
    """``(bool (T, H, W) union of every instance of ``text``, instances per frame)``."""
    t, h, w = frames.shape[:3]
    sess = proc.init_video_session(
        video=list(frames), inference_device=device, processing_device="cpu", video_storage_device="cpu", dtype=dtype
    )
    sess = proc.add_text_prompt(inference_session=sess, text=text)
    union = np.zeros((t, h, w), bool)
    counts = [0] * t
    for f, out in _propagate(model, sess, start, t):
        pp = proc.postprocess_outputs(sess, out)  # masks: bool (N, H, W); ids may change between frames
        masks = pp["masks"]
        counts[f] = int(masks.shape[0])
        if counts[f]:
            union[f] = masks.any(0).cpu().numpy()
    return union, counts


# ----------------------------------------------------------------------------- sources


def _prompt_of(inputs: MaskInputs, want: str) -> SamPrompt:
    try:
        prompt = parse_row(inputs.row or {})
    except ValueError as e:
        raise ClipError(inputs.clip_id, "sample sheet", str(e)) from None
    if prompt is None or prompt.model != want:
        cols = "mask_prompt" if want == "sam3" else "mask_points or mask_box"
        raise ClipError(inputs.clip_id, "sample sheet", f"masks.source is {want!r} but the row has no {cols}")
    return prompt


def _prompt_frame(inputs: MaskInputs, prompt: SamPrompt) -> int:
    """Prepared index of the prompt frame (nearest resampled frame); recorded in ``inputs.info``."""
    meta = inputs.meta
    n_src = int(meta.get("src_num_frames", len(inputs.frames)))
    if prompt.frame > n_src:
        raise ClipError(
            inputs.clip_id,
            meta.get("source", {}).get("video"),
            f"mask_frame {prompt.frame} is past the clip's last frame ({n_src})",
        )
    indices = meta.get("frame_indices", list(range(len(inputs.frames))))
    t = source_frame_to_prepared(prompt.frame, indices)
    inputs.info.update(mask_frame=prompt.frame, prompt_frame_prepared=t, prompt_frame_source=int(indices[t]) + 1)
    if int(indices[t]) + 1 != prompt.frame:
        msg = (
            f"mask_frame {prompt.frame} was not kept by prepare's resampling; prompting the nearest prepared "
            f"frame {t}, which is source frame {int(indices[t]) + 1}"
        )
        log.warning("%s: %s", inputs.clip_id, msg)
        inputs.info.setdefault("warnings", []).append(msg)
    return t


def _objects_to_prepared(inputs: MaskInputs, objects: list[SamObject]) -> list[SamObject]:
    """Source-pixel clicks/boxes -> prepared pixels; a click outside the kept (cropped) area is an error."""
    h, w = inputs.frames.shape[1:3]
    src = tuple(inputs.meta.get("src_size", [w, h]))
    video = inputs.meta.get("source", {}).get("video")
    out = []
    for obj in objects:
        pts = to_prepared(obj.points, src, (w, h)) if obj.points else np.zeros((0, 2))
        for (x, y), (px, py) in zip(obj.points, pts):
            if not (0 <= x <= src[0] and 0 <= y <= src[1]):
                raise ClipError(
                    inputs.clip_id,
                    video,
                    f"mask_points object {obj.obj_id}: click ({x:g}, {y:g}) is "
                    f"outside the {src[0]}x{src[1]} source frame",
                )
            if not (0 <= px <= w and 0 <= py <= h):
                raise ClipError(
                    inputs.clip_id,
                    video,
                    f"mask_points object {obj.obj_id}: click ({x:g}, {y:g}) falls "
                    f"in the part that prepare crops away ({src[0]}x{src[1]} -> {w}x{h})",
                )
        box = None
        if obj.box is not None:
            (bx0, by0), (bx1, by1) = to_prepared(np.reshape(obj.box, (2, 2)), src, (w, h))
            bx0, bx1 = np.clip([bx0, bx1], 0, w)
            by0, by1 = np.clip([by0, by1], 0, h)
            if bx1 - bx0 < 1 or by1 - by0 < 1:
                raise ClipError(
                    inputs.clip_id,
                    video,
                    f"mask_box object {obj.obj_id}: {obj.box} lies outside the "
                    f"part of the {src[0]}x{src[1]} source frame that prepare keeps ({w}x{h})",
                )
            box = (float(bx0), float(by0), float(bx1), float(by1))
        out.append(SamObject(obj.obj_id, [tuple(map(float, p)) for p in pts], list(obj.labels), box))
    return out


def sam2_mask(inputs: MaskInputs) -> np.ndarray:
    """SAM2 from the row's ``mask_points`` / ``mask_box``; union of the objects, 1 = keep."""
    prompt = _prompt_of(inputs, "sam2")
    start = _prompt_frame(inputs, prompt)
    objects = _objects_to_prepared(inputs, prompt.objects)
    device, dtype = device_and_dtype(inputs.cfg.get("device", "auto"), inputs.cfg.get("dtype", "auto"))
    model, proc = load_sam2(inputs.cfg.get("sam2_model", "tiny"), device, dtype)
    per_obj = track_sam2(model, proc, inputs.frames, start, objects, device, dtype)  # (n_obj, T, H, W)
    inputs.info.update(
        model=str(inputs.cfg.get("sam2_model", "tiny")),
        objects=[o.obj_id for o in objects],
        object_area=[[round(float(m.mean()), 4) for m in obj] for obj in per_obj],
    )
    return (~per_obj.any(0)).astype(np.uint8)


def sam3_mask(inputs: MaskInputs) -> np.ndarray:
    """SAM3 from the row's ``mask_prompt``: every instance found and tracked; their union, 1 = keep."""
    prompt = _prompt_of(inputs, "sam3")
    start = _prompt_frame(inputs, prompt)
    device, dtype = device_and_dtype(inputs.cfg.get("device", "auto"), inputs.cfg.get("dtype", "auto"))
    model, proc = load_sam3(inputs.cfg.get("sam3_model", "tiny"), device, dtype)
    union, counts = track_sam3(model, proc, inputs.frames, start, prompt.text, device, dtype)
    inputs.info.update(model=str(inputs.cfg.get("sam3_model", "tiny")), text=prompt.text, instances=counts)
    if not any(counts):
        msg = f"SAM3 found no instance of {prompt.text!r} in any frame"
        log.warning("%s: %s", inputs.clip_id, msg)
        inputs.info.setdefault("warnings", []).append(msg)
    return (~union).astype(np.uint8)
