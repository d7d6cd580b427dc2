"""Decode and encode videos, image folders and masks.

ffmpeg comes from imageio-ffmpeg (a static binary, no system ffmpeg or
ffprobe needed) and is driven through ffmpeg-python. Every reader turns a bad
input into a one-line :class:`~loraedit.errors.ClipError`; every writer is
atomic (temp name, then rename).

In memory: videos are ``uint8 (T, H, W, 3)`` RGB, masks ``uint8 (T, H, W)``
with 1 = keep. In mask FILES white (255) = keep, black = edit region.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from .atomic import atomic_path
from .errors import ClipError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
DEFAULT_FOLDER_FPS = 8.0  # image folders carry no frame rate


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    import imageio_ffmpeg  # lazy: the GPU benchmark imports this module's users without ffmpeg installed

    return imageio_ffmpeg.get_ffmpeg_exe()


def _ffmpeg():
    """ffmpeg-python, imported on first use (see `ffmpeg_exe`)."""
    import ffmpeg

    return ffmpeg


def _check_exists(path: Path, clip_id: str | None) -> None:
    if not path.exists():
        raise ClipError(clip_id, path, "file not found")


def _ffmpeg_problem(stderr: bytes, path: Path) -> str:
    """The informative last line of ffmpeg's stderr, without the file name."""
    lines = [ln.strip() for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
    generic = ("Conversion failed!", "Exiting normally")
    lines = [ln for ln in lines if not ln.startswith(generic)]
    last = lines[-1] if lines else "unknown error"
    last = last.replace(str(path), "").replace(path.name, "")
    last = re.sub(r"^\[[^\]]*\]\s*", "", last).strip(" :")  # "[in#0 @ 0x..] " prefix
    return last


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))


# ----------------------------------------------------------------------------- probing


def _parse_header(stderr: str) -> dict:
    """Size, fps, duration and rotation of the first video stream from ``ffmpeg -i``."""
    video = re.search(r"Stream #\d+:\d+.*?: Video: (.*)", stderr)
    if video is None:
        return {}
    line = video.group(1)
    size = re.search(r"[ ,](\d{2,5})x(\d{2,5})[ ,\[]", line + " ")
    fps = re.search(r"([\d.]+) fps", line) or re.search(r"([\d.]+)k? tbr", line)
    dur = re.search(r"Duration: (\d+):(\d+):([\d.]+)", stderr)
    rot = re.search(r"rotation of (-?[\d.]+) degrees", stderr)
    info = {
        "width": int(size.group(1)) if size else None,
        "height": int(size.group(2)) if size else None,
        "fps": float(fps.group(1)) if fps else None,
        "duration": int(dur.group(1)) * 3600 + int(dur.group(2)) * 60 + float(dur.group(3)) if dur else None,
    }
    # ffmpeg auto-rotates on decode, so a 90-degree display matrix swaps the decoded size.
    if rot and info["width"] and round(abs(float(rot.group(1)))) % 180 == 90:
        info["width"], info["height"] = info["height"], info["width"]
    return info


def probe(path: str | os.PathLike, clip_id: str | None = None, folder_fps: float = DEFAULT_FOLDER_FPS) -> dict:
    """``dict(width, height, fps, num_frames, duration)`` of a video file or image folder.

    No ffprobe: the header is parsed from ffmpeg's stderr and the frame count is
    the number of packets ffmpeg copies to the null muxer (fast, no decoding).
    """
    path = Path(path)
    _check_exists(path, clip_id)
    if path.is_dir():
        files = _image_files(path)
        if not files:
            raise ClipError(clip_id, path, "folder has no images (png/jpg)")
        h, w = read_image(files[0], clip_id).shape[:2]
        n = len(files)
        return {"width": w, "height": h, "fps": folder_fps, "num_frames": n, "duration": n / folder_fps}
    if path.stat().st_size == 0:
        raise ClipError(clip_id, path, "empty file (0 bytes)")
    ffmpeg = _ffmpeg()
    stream = ffmpeg.input(str(path))["v:0"].output("pipe:", format="null", vcodec="copy")
    try:
        _, err = stream.run(cmd=ffmpeg_exe(), capture_stdout=True, capture_stderr=True)
    except ffmpeg.Error as e:
        if b"matches no streams" in e.stderr:
            raise ClipError(clip_id, path, "no video stream (zero video frames)") from None
        raise ClipError(clip_id, path, f"unreadable video (ffmpeg: {_ffmpeg_problem(e.stderr, path)})") from None
    text = err.decode(errors="replace")
    info = _parse_header(text)
    if not info.get("width"):
        raise ClipError(clip_id, path, "no video stream found")
    counts = re.findall(r"frame=\s*(\d+)", text)
    n = int(counts[-1]) if counts else 0
    if n == 0:
        raise ClipError(clip_id, path, "video has no frames")
    fps = info["fps"] or DEFAULT_FOLDER_FPS
    duration = info["duration"] or n / fps
    return {"width": info["width"], "height": info["height"], "fps": fps, "num_frames": n, "duration": duration}


# ----------------------------------------------------------------------------- reading


def read_image(path: str | os.PathLike, clip_id: str | None = None) -> np.ndarray:
    """One image as ``uint8 (H, W, 3)`` RGB (alpha dropped, 16-bit scaled down)."""
    path = Path(path)
    _check_exists(path, clip_id)
    if path.is_dir():
        raise ClipError(clip_id, path, "expected an image file, got a folder")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.uint32)
                arr = (arr >> 8 if arr.max() > 255 else arr).astype(np.uint8)
                return np.repeat(arr[..., None], 3, axis=2)
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ClipError(
            clip_id, path, f"unreadable image ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
        ) from None


def _read_folder(folder: Path, clip_id: str | None) -> np.ndarray:
    files = _image_files(folder)
    if not files:
        raise ClipError(clip_id, folder, "folder has no images (png/jpg)")
    frames = []
    for f in files:
        img = read_image(f, clip_id)
        if frames and img.shape != frames[0].shape:
            h0, w0 = frames[0].shape[:2]
            raise ClipError(
                clip_id,
                f,
                f"image is {img.shape[1]}x{img.shape[0]} but {files[0].name} is {w0}x{h0}; "
                "all frames of a folder must have one size",
            )
        frames.append(img)
    return np.stack(frames)  # (T, H, W, 3)


def read_video(
    path: str | os.PathLike, clip_id: str | None = None, folder_fps: float = DEFAULT_FOLDER_FPS
) -> tuple[np.ndarray, float]:
    """``(frames uint8 (T, H, W, 3), fps)`` from a video file or a folder of images."""
    path = Path(path)
    _check_exists(path, clip_id)
    if path.is_dir():
        return _read_folder(path, clip_id), float(folder_fps)
    info = probe(path, clip_id)
    w, h = info["width"], info["height"]
    ffmpeg = _ffmpeg()
    stream = ffmpeg.input(str(path))["v:0"].output("pipe:", format="rawvideo", pix_fmt="rgb24")
    try:
        out, _ = stream.run(cmd=ffmpeg_exe(), capture_stdout=True, capture_stderr=True)
    except ffmpeg.Error as e:
        raise ClipError(clip_id, path, f"unreadable video (ffmpeg: {_ffmpeg_problem(e.stderr, path)})") from None
    n = len(out) // (w * h * 3)
    if n == 0:
        raise ClipError(clip_id, path, "video has no frames")
    if len(out) % (w * h * 3):
        raise ClipError(clip_id, path, f"decoded data does not match the header's size {w}x{h}")
    frames = np.frombuffer(out, np.uint8)[: n * w * h * 3].reshape(n, h, w, 3)
    return frames.copy(), float(info["fps"])


def read_mask(path: str | os.PathLike, clip_id: str | None = None) -> np.ndarray:
    """A mask video, image folder or single image as ``uint8 (T, H, W)``: 1 where the file is white (> 127)."""
    path = Path(path)
    _check_exists(path, clip_id)
    if path.is_dir():
        rgb = _read_folder(path, clip_id)
    elif path.suffix.lower() in IMAGE_EXTS:
        rgb = read_image(path, clip_id)[None]
    else:
        rgb = read_video(path, clip_id)[0]
    # Luma, so coloured or anti-aliased masks threshold sensibly.
    gray = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in rgb])
    return (gray > 127).astype(np.uint8)


def read_frames(folder: str | os.PathLike, clip_id: str | None = None) -> np.ndarray:
    """A folder of frames (as written by :func:`write_frames`) as ``uint8 (T, H, W, 3)``."""
    folder = Path(folder)
    _check_exists(folder, clip_id)
    return _read_folder(folder, clip_id)


# ----------------------------------------------------------------------------- writing


def _imwrite(path: Path, img: np.ndarray) -> None:
    img = np.ascontiguousarray(img)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write {path}")


def write_png(path: str | os.PathLike, img: np.ndarray) -> None:
    """Write ``uint8 (H, W, 3)`` RGB or ``(H, W)`` gray atomically."""
    with atomic_path(path) as tmp:
        _imwrite(tmp, np.asarray(img, np.uint8))


def write_png_sequence(folder: str | os.PathLike, images) -> None:
    """``00000.png, 00001.png, ...`` into an existing folder (the caller makes it atomic)."""
    folder = Path(folder)
    for t, img in enumerate(images):
        _imwrite(folder / f"{t:05d}.png", np.asarray(img, np.uint8))


def write_frames(folder: str | os.PathLike, frames: np.ndarray) -> None:
    """A folder of PNG frames from ``uint8 (T, H, W, 3)``, replaced atomically."""
    with atomic_path(folder, is_dir=True) as tmp:
        write_png_sequence(tmp, frames)


def write_mask_frames(folder: str | os.PathLike, masks: np.ndarray) -> None:
    """``(T, H, W)`` 0/1 keep masks as 0/255 gray PNGs (white = keep), replaced atomically."""
    masks = np.asarray(masks)
    with atomic_path(folder, is_dir=True) as tmp:
        write_png_sequence(tmp, (masks > 0).astype(np.uint8) * 255)


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float, crf: int = 18) -> None:
    """H.264 yuv420p mp4 from ``uint8 (T, H, W, 3)``; odd sizes are padded by one pixel (yuv420p needs even)."""
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    t, h, w = frames.shape[:3]
    if t == 0:
        raise ValueError("write_mp4: no frames")
    ffmpeg = _ffmpeg()
    with atomic_path(path) as tmp:
        stream = (
            ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", framerate=fps)
            .filter("pad", "ceil(iw/2)*2", "ceil(ih/2)*2")
            .output(str(tmp), format="mp4", vcodec="libx264", pix_fmt="yuv420p", crf=crf, movflags="+faststart")
            .overwrite_output()
        )
        try:
            stream.run(cmd=ffmpeg_exe(), input=frames.tobytes(), capture_stdout=True, capture_stderr=True)
        except ffmpeg.Error as e:
            raise OSError(f"{path}: ffmpeg could not encode ({_ffmpeg_problem(e.stderr, tmp)})") from None
