"""A procedural toy world with laws a small image-to-video model can learn, and the truth of an edit.

A scene: a textured background (smooth noise that pans, drifting stripes, or a still gradient)
and one to three objects (circle, square, triangle, diamond, ellipse; solid or textured; some
two-sided cards whose back shows as they flip). The motion follows fixed laws, so frame 1 (plus
the caption) predicts the clip and a plain I2V model can be judged against the true video:
- every object travels through the frame centre (from its start p0 to c - 0.5 (p0 - c));
- each shape spins at its own fixed rate; objects in the upper half grow, in the lower half shrink;
- a two-sided card turns half a revolution about its vertical axis; its back is the complement
  colour (255 - front), shown once the card has turned past 90 degrees;
- noise backgrounds pan by a fixed vector, stripes drift along their normal, gradients stay.
Sizes and speeds are relative to the frame, so 17 frames at 64x64 and 33 frames at 128x128 show
the same world.

The edit recolours one object (front and, for cards, back with an unrelated colour). The renderer
returns the edited video, the exact per-frame keep mask (1 where the edited object covers no part
of the pixel) and the mask of its back side, which only later frames show (Sec. 3.3.2, Fig. 7).
In memory: videos uint8 (T, H, W, 3), masks uint8 (T, H, W).
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

SUPERSAMPLE = 4  # objects are rasterised 4x larger, then area-averaged: anti-aliased edges

PALETTE = {
    "red": (220, 40, 40),
    "green": (40, 170, 70),
    "blue": (50, 80, 210),
    "yellow": (240, 200, 30),
    "purple": (150, 50, 210),
    "orange": (235, 135, 30),
    "cyan": (40, 200, 210),
    "pink": (235, 120, 180),
    "white": (235, 235, 235),
    "brown": (130, 80, 40),
}
SHAPES = ("circle", "square", "triangle", "diamond", "ellipse")
SPIN = {
    "circle": 0.0,
    "square": 0.5 * math.pi,
    "triangle": -0.66 * math.pi,
    "diamond": 0.33 * math.pi,
    "ellipse": -0.5 * math.pi,
}  # radians over the whole clip
PAN = (0.12, 0.06)  # noise backgrounds move by this fraction of the frame width / height over a clip
MIN_WIDTH = 0.06  # a card seen edge-on keeps this fraction of its width


@dataclasses.dataclass(frozen=True)
class ToyObject:
    shape: str
    color: str  # PALETTE name of the front
    radius: float  # half-size, fraction of min(W, H)
    start: tuple[float, float]  # centre at frame 1, fractions of (W, H)
    angle: float  # rotation at frame 1, radians
    textured: bool
    two_sided: bool
    flip: float  # card turn at frame 1, radians in [0, pi/4] (front shows)
    texture_seed: int

    def front_rgb(self) -> np.ndarray:
        return np.float32(PALETTE[self.color])

    def back_rgb(self) -> np.ndarray:
        return 255.0 - self.front_rgb()  # the world's law: the back is the complement colour


@dataclasses.dataclass(frozen=True)
class ToyScene:
    background: str  # noise | stripes | gradient
    colors: tuple[tuple[float, float, float], tuple[float, float, float]]
    stripe_angle: float
    stripe_period: float  # fraction of W
    bg_seed: int
    objects: tuple[ToyObject, ...]
    target: int  # index of the edited object
    edit_color: str  # new front colour of the target
    edit_back: tuple[int, int, int]  # new back colour (cards only); not predictable from frame 1


@dataclasses.dataclass
class ToyClip:
    video: np.ndarray  # uint8 (T, H, W, 3)
    edited: np.ndarray  # uint8 (T, H, W, 3), the true edit
    keep: np.ndarray  # uint8 (T, H, W), 1 = the edited object covers no part of the pixel
    back: np.ndarray  # uint8 (T, H, W), 1 = the edited object's back side is visible (alpha >= 0.5)
    caption: str
    edit_caption: str
    extra_frames: list[int]  # frames whose edit shows what frame 1 cannot (the back side), best first


def sample_scene(rng: np.random.Generator, max_objects: int = 3) -> ToyScene:
    n = int(rng.integers(1, max_objects + 1))
    objects = []
    for _ in range(n):
        theta, rho = rng.uniform(0, 2 * math.pi), rng.uniform(0.18, 0.3)
        two_sided = bool(rng.random() < 0.4)
        objects.append(
            ToyObject(
                shape=str(rng.choice(SHAPES)),
                color=str(rng.choice(list(PALETTE))),
                radius=float(rng.uniform(0.1, 0.17)),
                start=(0.5 + rho * math.cos(theta), 0.5 + rho * math.sin(theta)),
                angle=float(rng.uniform(0, 2 * math.pi)),
                textured=bool(rng.random() < 0.5),
                two_sided=two_sided,
                flip=float(rng.uniform(0, math.pi / 4)),
                texture_seed=int(rng.integers(2**31)),
            )
        )
    objects.sort(key=lambda o: -o.radius)  # larger objects behind smaller ones
    target = int(rng.integers(n))
    edit_color = str(rng.choice([c for c in PALETTE if c != objects[target].color]))
    return ToyScene(
        background=str(rng.choice(["noise", "stripes", "gradient"])),
        colors=(tuple(rng.uniform(50, 200, 3)), tuple(rng.uniform(50, 200, 3))),
        stripe_angle=float(rng.uniform(0, math.pi)),
        stripe_period=float(rng.uniform(0.18, 0.3)),
        bg_seed=int(rng.integers(2**31)),
        objects=tuple(objects),
        target=target,
        edit_color=edit_color,
        edit_back=tuple(int(v) for v in rng.integers(0, 256, 3)),
    )


def _smooth_noise(seed: int, cells: int, size: tuple[int, int]) -> np.ndarray:
    """float32 (h, w) smooth noise in about [-1, 1]: a (cells x cells) grid, cubic upsampled."""
    grid = np.random.default_rng(seed).normal(0, 1, (cells + 3, cells + 3)).astype(np.float32)
    w, h = size
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC) / 2.0


def _background(scene: ToyScene, u: float, w: int, h: int) -> np.ndarray:
    """float32 (h, w, 3) background at clip time u in [0, 1]."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xn, yn = xx / w, yy / h  # frame-relative coordinates
    c0, c1 = np.float32(scene.colors[0]), np.float32(scene.colors[1])
    if scene.background == "stripes":
        nx, ny = math.cos(scene.stripe_angle), math.sin(scene.stripe_angle)
        phase = (xn * nx + yn * ny) / scene.stripe_period - 0.25 * u  # drift a quarter period per clip
        ramp = 0.5 + 0.5 * np.sin(2 * np.pi * phase)
    elif scene.background == "noise":
        # A 2x larger noise field sampled through a window that pans by PAN over the clip.
        big = _smooth_noise(scene.bg_seed, 8, (2 * w, 2 * h))
        ox, oy = (0.25 + PAN[0] * u) * w, (0.25 + PAN[1] * u) * h
        ramp = cv2.remap(big, (xx + ox).astype(np.float32), (yy + oy).astype(np.float32), cv2.INTER_LINEAR)
        ramp = np.clip(0.5 + 0.6 * ramp, 0, 1)
    else:  # gradient
        ramp = 0.6 * xn + 0.4 * yn
    return c0 * (1 - ramp[..., None]) + c1 * ramp[..., None]


def _polygon(shape: str) -> np.ndarray:
    """float32 (N, 2) outline in unit coordinates (half-size 1)."""
    if shape in ("circle", "ellipse"):
        a = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        ry = 1.0 if shape == "circle" else 0.6
        return np.stack([np.cos(a), ry * np.sin(a)], 1).astype(np.float32)
    return np.float32(
        {
            "square": [[-1, -1], [1, -1], [1, 1], [-1, 1]],
            "triangle": [[0, -1], [-1, 0.9], [1, 0.9]],
            "diamond": [[0, -1.2], [0.8, 0], [0, 1.2], [-0.8, 0]],
        }[shape]
    )


def object_pose(obj: ToyObject, u: float, w: int, h: int) -> tuple[float, float, float, float, float]:
    """(cx, cy, radius_px, angle, card_cos) of an object at clip time u: the world's motion laws."""
    sx, sy = obj.start
    cx, cy = sx - 1.5 * (sx - 0.5) * u, sy - 1.5 * (sy - 0.5) * u  # through the centre
    grow = 1.0 + 0.35 * u if sy < 0.5 else 1.0 - 0.3 * u
    r = obj.radius * min(w, h) * grow
    card = math.cos(obj.flip + math.pi * u) if obj.two_sided else 1.0
    return cx * w, cy * h, r, obj.angle + SPIN[obj.shape] * u, card


def _object_layer(obj: ToyObject, u: float, w: int, h: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """(alpha (h, w), shade (h, w), back_visible) of one object at time u."""
    cx, cy, r, angle, card = object_pose(obj, u, w, h)
    squeeze = max(abs(card), MIN_WIDTH)
    ca, sa = math.cos(angle), math.sin(angle)
    rot = np.float32([[ca, -sa], [sa, ca]])
    local = _polygon(obj.shape) * np.float32([squeeze, 1.0]) * r  # card turns about its local vertical axis
    pts = (local @ rot.T + np.float32([cx, cy])) * SUPERSAMPLE
    canvas = np.zeros((h * SUPERSAMPLE, w * SUPERSAMPLE), np.uint8)
    cv2.fillPoly(canvas, [np.round(pts * 16).astype(np.int32)], 255, lineType=cv2.LINE_8, shift=4)
    alpha = cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    if not obj.textured:
        return alpha, np.ones((h, w), np.float32), card < 0
    # Texture in object coordinates: it moves, spins and squeezes with the object.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = xx + 0.5 - cx, yy + 0.5 - cy
    lx = (ca * dx + sa * dy) / (r * squeeze)
    ly = (-sa * dx + ca * dy) / r
    tex = _smooth_noise(obj.texture_seed, 4, (64, 64))  # covers [-1.2, 1.2]^2 of the object
    mx, my = ((lx / 2.4 + 0.5) * 63).astype(np.float32), ((ly / 2.4 + 0.5) * 63).astype(np.float32)
    shade = cv2.remap(tex, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return alpha, 1.0 + 0.35 * np.clip(shade, -1, 1), card < 0


def render_frames(scene: ToyScene, num_frames: int, size: tuple[int, int], edited: bool = False):
    """(video uint8 (T, H, W, 3), target visible alpha float32 (T, H, W), target back flags (T,))."""
    w, h = size
    frames, vis, backs = [], [], []
    for t in range(num_frames):
        u = t / max(1, num_frames - 1)
        img = _background(scene, u, w, h)
        target_alpha = np.zeros((h, w), np.float32)
        back_t = False
        for i, obj in enumerate(scene.objects):
            alpha, shade, back = _object_layer(obj, u, w, h)
            color = obj.back_rgb() if back else obj.front_rgb()
            if edited and i == scene.target:
                color = np.float32(scene.edit_back) if back else np.float32(PALETTE[scene.edit_color])
            a = alpha[..., None]
            img = img * (1 - a) + np.clip(color * shade[..., None], 0, 255) * a
            target_alpha = alpha if i == scene.target else target_alpha * (1 - alpha)  # occluded by later ones
            back_t = back if i == scene.target else back_t
        frames.append(np.clip(img, 0, 255).round().astype(np.uint8))
        vis.append(target_alpha)
        backs.append(back_t)
    return np.stack(frames), np.stack(vis), np.array(backs)


def caption(scene: ToyScene, edited: bool = False) -> str:
    names = []
    for i, obj in enumerate(scene.objects):
        color = scene.edit_color if edited and i == scene.target else obj.color
        names.append(f"a {color} {obj.shape}")
    return " and ".join(names) + f" moving over a {scene.background} background"


def render_clip(scene: ToyScene, num_frames: int = 17, size: tuple[int, int] = (64, 64)) -> ToyClip:
    video, vis, _ = render_frames(scene, num_frames, size)
    edited, _, backs = render_frames(scene, num_frames, size, edited=True)
    keep = (vis <= 0).astype(np.uint8)
    back = ((vis >= 0.5) & backs[:, None, None]).astype(np.uint8)
    area = back.reshape(num_frames, -1).sum(1)
    extra = [int(t) for t in np.argsort(-area, kind="stable") if t > 0 and area[t] > 0]
    return ToyClip(video, edited, keep, back, caption(scene), caption(scene, edited=True), extra)


def scene_for(seed: int, index: int, max_objects: int = 3) -> ToyScene:
    """The index-th scene of a seed (independent streams: any clip is rendered alone)."""
    return sample_scene(np.random.default_rng([seed, index]), max_objects)


def _scene_whose_target(rng: np.random.Generator, two_sided: bool) -> ToyScene:
    while True:
        scene = sample_scene(rng)
        if scene.objects[scene.target].two_sided == two_sided:
            return scene


def two_sided_scene_for(seed: int, index: int) -> ToyScene:
    """A scene whose edited object is a two-sided card (the mask+ref case); still deterministic."""
    return _scene_whose_target(np.random.default_rng([seed, index, 2]), two_sided=True)


def one_sided_scene_for(seed: int, index: int) -> ToyScene:
    """A scene whose edited object has one colour all round (stage 1's plain recolour)."""
    return _scene_whose_target(np.random.default_rng([seed, index, 1]), two_sided=False)
