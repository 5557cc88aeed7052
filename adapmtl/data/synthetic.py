"""Synthetic indoor scenes, ray cast with numpy: learnable multitask data with exact targets.

A scene is a room (floor, four walls, ceiling) holding cabinets and tables (boxes turned about
the vertical), balls (spheres), bins (upright cylinders) and pictures (thin boxes on a wall). One
primary ray per pixel (all pixels at once) finds the nearest surface; from that one hit come

- the image: albedo (room surfaces: tinted per scene; objects: half class colour, half random, so
  colour hints at the class and shape settles it; a world-space texture) lit by a point
  light under the ceiling with distance falloff, Lambert shading and cast shadows, plus ambient
  light, gamma and a little sensor noise, so shading carries the geometry;
- ``segment_semantic``: the class of the hit (:data:`SCENE_CLASSES`, no ignore pixels);
- ``depth_zbuffer``: camera-frame z of the hit, metres (rooms are 3-8 m, so about 0.5-11 m);
- ``normal``: the surface normal in the camera frame (x right, y down, z forward, OpenCV
  convention), turned to face the camera;
- ``keypoints2d``: Gaussian blobs (sigma about 1 % of the image height) at the visible corners of
  boxes and of the room, projected;
- ``edge_texture``: 1 for pixels on a discontinuity of surface, depth (> 5 %) or normal (> 25 deg),
  else 0 (for this generator it holds geometric edges; the real Taskonomy map is texture edges).

The scene is drawn from ``numpy.random.default_rng([seed, index])`` before the resolution is used,
so one (seed, index) gives the same room at any size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from adapmtl.data.base import DatasetError, MultitaskDataset, Transform, check_tasks, to_sample
from adapmtl.data.registry import register_dataset
from adapmtl.tasks import DATASET_TASKS, TASK_NAMES

SCENE_CLASSES = ("floor", "wall", "ceiling", "cabinet", "table", "ball", "bin", "picture")
"""Class names of the synthetic scenes; a label is an index into this tuple."""

_PALETTE = np.array(
    [
        [0.55, 0.42, 0.30],  # floor: wood
        [0.80, 0.78, 0.72],  # wall
        [0.92, 0.92, 0.90],  # ceiling
        [0.35, 0.45, 0.65],  # cabinet
        [0.60, 0.35, 0.25],  # table
        [0.85, 0.30, 0.30],  # ball
        [0.30, 0.65, 0.40],  # bin
        [0.90, 0.75, 0.25],  # picture
    ],
    dtype=np.float64,
)
_EPS = 1e-4


@dataclass
class _Shape:
    kind: str  # "box", "sphere" or "cylinder"
    label: int
    center: np.ndarray  # world (x, y, z); box: centre of the box, cylinder: centre of its base
    size: np.ndarray  # box: half extents; sphere: (r,); cylinder: (r, height)
    yaw: float
    color: np.ndarray


def _rotation_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _hit_box(shape: _Shape, origin: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Entry distance of rays [P, 3] into a box turned by ``yaw`` about the vertical (inf where missed)."""
    rot = _rotation_y(shape.yaw)
    o = (origin - shape.center) @ rot  # into the box frame (rows times R = R^T applied)
    d = direction @ rot
    d = np.where(np.abs(d) < 1e-12, 1e-12, d)
    inv = 1.0 / d
    t1, t2 = (-shape.size - o) * inv, (shape.size - o) * inv
    near, far = np.minimum(t1, t2), np.maximum(t1, t2)
    t_near = np.maximum(np.maximum(near[:, 0], near[:, 1]), near[:, 2])
    t_far = np.minimum(np.minimum(far[:, 0], far[:, 1]), far[:, 2])
    return np.where((t_near <= t_far) & (t_near > _EPS), t_near, np.inf)


def _hit_sphere(shape: _Shape, origin: np.ndarray, direction: np.ndarray) -> np.ndarray:
    oc = origin - shape.center
    b = (oc * direction).sum(axis=-1)
    c = (oc * oc).sum(axis=-1) - shape.size[0] ** 2
    disc = b * b - c
    t = -b - np.sqrt(np.maximum(disc, 0.0))
    return np.where((disc > 0) & (t > _EPS), t, np.inf)


def _hit_cylinder(shape: _Shape, origin: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Upright cylinder standing on the floor: side and top cap."""
    radius, height = shape.size
    o = np.broadcast_to(origin - shape.center, direction.shape)
    ox, oy, oz = o[:, 0], o[:, 1], o[:, 2]
    dx, dy, dz = direction[:, 0], direction[:, 1], direction[:, 2]
    a = np.maximum(dx * dx + dz * dz, 1e-12)
    b = ox * dx + oz * dz
    c = ox * ox + oz * oz - radius**2
    disc = b * b - a * c
    t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
    y_side = oy + t_side * dy
    t_side = np.where((disc > 0) & (t_side > _EPS) & (y_side >= 0) & (y_side <= height), t_side, np.inf)
    t_cap = (height - oy) / np.where(np.abs(dy) < 1e-12, 1e-12, dy)
    cx, cz = ox + t_cap * dx, oz + t_cap * dz
    t_cap = np.where((t_cap > _EPS) & (cx * cx + cz * cz <= radius**2), t_cap, np.inf)
    return np.minimum(t_side, t_cap)


def _surface_normal(shape: _Shape, points: np.ndarray) -> np.ndarray:
    """Outward world normals of ``shape`` at ``points`` [P, 3] lying on its surface."""
    if shape.kind == "sphere":
        return (points - shape.center) / shape.size[0]
    if shape.kind == "cylinder":
        radius, height = shape.size
        local = points - shape.center
        radial = local * np.array([1.0, 0.0, 1.0]) / radius
        on_cap = (local[:, 1] > height - 1e-6) & ((radial**2).sum(axis=1) < 1 - 1e-6)
        return np.where(on_cap[:, None], np.array([0.0, 1.0, 0.0]), radial)
    rot = _rotation_y(shape.yaw)
    scaled = ((points - shape.center) @ rot) / shape.size
    axis = np.abs(scaled).argmax(axis=1)
    local = np.zeros_like(scaled)
    local[np.arange(len(points)), axis] = np.sign(scaled[np.arange(len(points)), axis])
    return local @ rot.T


_HIT = {"box": _hit_box, "sphere": _hit_sphere, "cylinder": _hit_cylinder}


@dataclass
class _Scene:
    room: np.ndarray  # (width, height, depth): x in [-w/2, w/2], y in [0, h], z in [-d/2, d/2]
    camera: np.ndarray  # world position
    rotation: np.ndarray  # camera-to-world rotation (columns: camera x, y, z axes in world)
    hfov: float
    light: np.ndarray
    shapes: list[_Shape]
    texture: np.ndarray  # random frequencies/phases for the world-space textures
    room_colors: np.ndarray  # albedo of floor, wall, ceiling
    noise_seed: int


def _draw_scene(rng: np.random.Generator) -> _Scene:
    """Draw one room, camera, light and 3-8 objects (independent of the image resolution)."""
    width, height, depth = rng.uniform(3.0, 7.0), rng.uniform(2.4, 3.2), rng.uniform(3.0, 8.0)
    room = np.array([width, height, depth])
    camera = np.array(
        [rng.uniform(-0.3, 0.3) * width, rng.uniform(1.2, 1.7), rng.uniform(0.2, 0.4) * depth]
    )
    yaw = rng.uniform(-0.6, 0.6) + np.pi  # looking towards -z, roughly down the room
    pitch = rng.uniform(0.05, 0.35)  # downwards
    hfov = rng.uniform(np.radians(55), np.radians(70))
    # camera frame: x right, y down, z forward
    forward = np.array([np.sin(yaw) * np.cos(pitch), -np.sin(pitch), np.cos(yaw) * np.cos(pitch)])
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward], axis=1)
    light = np.array([rng.uniform(-0.4, 0.4) * width, height - 0.25, rng.uniform(-0.4, 0.3) * depth])

    shapes: list[_Shape] = []
    for _ in range(int(rng.integers(3, 9))):
        kind = rng.choice(["cabinet", "table", "ball", "bin"], p=[0.3, 0.3, 0.2, 0.2])
        # in front of the camera, inside the room
        angle = yaw + rng.uniform(-0.5, 0.5) * hfov
        dist = rng.uniform(1.3, 4.5)
        x = np.clip(camera[0] + np.sin(angle) * dist, -width / 2 + 0.4, width / 2 - 0.4)
        z = np.clip(camera[2] + np.cos(angle) * dist, -depth / 2 + 0.4, depth / 2 - 0.4)
        label = SCENE_CLASSES.index(kind)
        # half class colour, half random: appearance hints at the class, shape must settle it
        color = np.clip(0.5 * _PALETTE[label] * rng.uniform(0.75, 1.2) + 0.5 * rng.uniform(0.1, 0.95, 3), 0.05, 1.0)
        if kind == "cabinet":
            half = np.array([rng.uniform(0.25, 0.6), rng.uniform(0.45, 1.0), rng.uniform(0.2, 0.4)])
            shapes.append(_Shape("box", label, np.array([x, half[1], z]), half, rng.uniform(0, np.pi), color))
        elif kind == "table":
            half = np.array([rng.uniform(0.4, 0.9), rng.uniform(0.2, 0.4), rng.uniform(0.3, 0.6)])
            shapes.append(_Shape("box", label, np.array([x, half[1], z]), half, rng.uniform(0, np.pi), color))
        elif kind == "ball":
            r = rng.uniform(0.15, 0.45)
            shapes.append(_Shape("sphere", label, np.array([x, r, z]), np.array([r]), 0.0, color))
        else:
            size = np.array([rng.uniform(0.12, 0.35), rng.uniform(0.4, 1.2)])
            shapes.append(_Shape("cylinder", label, np.array([x, 0.0, z]), size, 0.0, color))
    for _ in range(int(rng.integers(0, 3))):  # pictures on the far (-z) or side walls
        half = np.array([rng.uniform(0.25, 0.6), rng.uniform(0.2, 0.45), 0.015])
        wall = int(rng.integers(0, 3))
        along = rng.uniform(-0.3, 0.3)
        y = rng.uniform(1.3, height - 0.6)
        if wall == 0:
            center, yaw_p = np.array([along * width, y, -depth / 2 + 0.015]), 0.0
        else:
            sign = -1.0 if wall == 1 else 1.0
            center, yaw_p = np.array([sign * (width / 2 - 0.015), y, along * depth]), np.pi / 2
        color = np.clip(rng.uniform(0.15, 0.95, 3), 0.05, 1.0)
        shapes.append(_Shape("box", SCENE_CLASSES.index("picture"), center, half, yaw_p, color))
    texture = rng.uniform(0.0, 1.0, size=8)
    room_colors = np.clip(_PALETTE[:3] * rng.uniform(0.6, 1.15, size=(3, 3)), 0.05, 1.0)  # floor, wall, ceiling tints
    return _Scene(room, camera, rotation, hfov, light, shapes, texture, room_colors, int(rng.integers(2**31)))


def _room_hit(scene: _Scene, origin: np.ndarray, direction: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exit distance, surface id (0 floor, 1 ceiling, 2-5 walls) and inward normal for rays inside the room."""
    w, h, d = scene.room
    lo, hi = np.array([-w / 2, 0.0, -d / 2]), np.array([w / 2, h, d / 2])
    safe = np.where(np.abs(direction) < 1e-12, 1e-12, direction)
    t_axes = (np.where(safe > 0, hi, lo) - origin) / safe
    axis = t_axes.argmin(axis=1)
    t = t_axes[np.arange(len(direction)), axis]
    positive = safe[np.arange(len(direction)), axis] > 0
    surface = np.select([axis == 1, axis == 0], [np.where(positive, 1, 0), np.where(positive, 3, 2)], np.where(positive, 5, 4))
    normal = np.zeros_like(direction)
    normal[np.arange(len(direction)), axis] = np.where(positive, -1.0, 1.0)
    return t, surface, normal


def _texture(scene: _Scene, points: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Multiplicative albedo texture from world coordinates (so it is the same at any resolution)."""
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    f = scene.texture
    planks = 0.88 + 0.12 * np.sign(np.sin((x * (2.5 + 2 * f[0]) + f[1] * 6.3) * np.pi))
    grain = 1.0 + 0.06 * np.sin(z * (9 + 6 * f[2]) + 3 * np.sin(x * 2.0))
    wall = 1.0 + 0.05 * np.sin(x * (3 + 3 * f[3]) + z * (3 + 3 * f[4])) * np.sin(y * (4 + 4 * f[5]))
    stripes = 1.0 + 0.08 * np.sin((x + z) * 12 + y * (20 + 10 * f[6]))
    out = np.ones_like(x)
    out = np.where(labels == 0, planks * grain, out)
    out = np.where(labels == 1, wall, out)
    out = np.where((labels == 3) | (labels == 4), stripes, out)
    return out


def _keypoints(scene: _Scene, depth: np.ndarray, focal: float, size: tuple[int, int]) -> np.ndarray:
    """Heatmap [H, W] in [0, 1] of Gaussian blobs at visible projected box and room corners."""
    height, width = size
    corners = []
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
    for shape in scene.shapes:
        if shape.kind == "box":
            corners.append(shape.center + (signs * shape.size) @ _rotation_y(shape.yaw).T)
    w, h, d = scene.room
    corners.append((signs + 1) / 2 * np.array([w, h, d]) - np.array([w / 2, 0.0, d / 2]))
    world = np.concatenate(corners)
    cam = (world - scene.camera) @ scene.rotation
    z = cam[:, 2]
    ahead = z > 0.05
    u = focal * cam[:, 0] / np.where(ahead, z, 1.0) + width / 2 - 0.5
    v = focal * cam[:, 1] / np.where(ahead, z, 1.0) + height / 2 - 0.5
    inside = ahead & (u > -0.5) & (u < width - 0.5) & (v > -0.5) & (v < height - 0.5)
    ui = np.clip(np.rint(u), 0, width - 1).astype(int)
    vi = np.clip(np.rint(v), 0, height - 1).astype(int)
    visible = inside & (z <= depth[vi, ui] * 1.03 + 0.02)
    sigma = max(height / 100.0, 0.7)
    heat = np.zeros(size)
    rows, cols = np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64)
    for uu, vv in zip(u[visible], v[visible]):
        gy = np.exp(-((rows - vv) ** 2) / (2 * sigma**2))
        gx = np.exp(-((cols - uu) ** 2) / (2 * sigma**2))
        np.maximum(heat, gy[:, None] * gx[None, :], out=heat)
    return heat


def _edges(surface: np.ndarray, depth: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """1 where a pixel and its right or lower neighbour differ in surface, depth (> 5 %) or normal (> 25 deg)."""
    edge = np.zeros(surface.shape, dtype=bool)
    for axis in (0, 1):
        a = [slice(None), slice(None)]
        b = [slice(None), slice(None)]
        a[axis], b[axis] = slice(None, -1), slice(1, None)
        a, b = tuple(a), tuple(b)
        jump = (
            (surface[a] != surface[b])
            | (np.abs(depth[a] - depth[b]) > 0.05 * np.minimum(depth[a], depth[b]))
            | ((normal[a] * normal[b]).sum(-1) < np.cos(np.radians(25)))
        )
        edge[a] |= jump
        edge[b] |= jump
    return edge.astype(np.float32)


def render_scene(seed: int | Sequence[int], size: tuple[int, int] = (96, 128)) -> dict[str, np.ndarray]:
    """Render one synthetic scene.

    Args:
        seed: seeds ``numpy.random.default_rng``; an int or a sequence such as ``[seed, index]``.
        size: (H, W) in pixels; any size (the scene does not depend on it).

    Returns numpy arrays: ``"image"`` uint8 [H, W, 3] RGB; ``"segment_semantic"`` uint8 [H, W]
    (indices into :data:`SCENE_CLASSES`); ``"depth_zbuffer"`` float32 [H, W] metres;
    ``"normal"`` float32 [H, W, 3] unit, camera frame; ``"keypoints2d"``, ``"edge_texture"``
    float32 [H, W] in [0, 1].
    """
    scene = _draw_scene(np.random.default_rng(seed))
    height, width = int(size[0]), int(size[1])
    focal = (width / 2) / np.tan(scene.hfov / 2)
    v, u = np.mgrid[0:height, 0:width]
    rays_cam = np.stack(
        [(u.ravel() + 0.5 - width / 2) / focal, (v.ravel() + 0.5 - height / 2) / focal, np.ones(height * width)], axis=1
    )
    rays_cam /= np.linalg.norm(rays_cam, axis=1, keepdims=True)
    rays = rays_cam @ scene.rotation.T
    origin = scene.camera

    t, surface, normal = _room_hit(scene, origin, rays)
    labels = np.select([surface == 0, surface == 1], [0, 2], 1)
    albedo = scene.room_colors[labels]
    hit = np.full(len(t), -1)
    for index, shape in enumerate(scene.shapes):
        t_obj = _HIT[shape.kind](shape, origin, rays)
        closer = t_obj < t
        t = np.where(closer, t_obj, t)
        hit[closer] = index
    points = origin + t[:, None] * rays
    for index, shape in enumerate(scene.shapes):
        mine = hit == index
        normal[mine] = _surface_normal(shape, points[mine])
        surface[mine] = 6 + index
        labels[mine] = shape.label
        albedo[mine] = shape.color

    to_light = scene.light - points
    light_dist = np.linalg.norm(to_light, axis=1)
    to_light /= light_dist[:, None]
    shadow_origin = points + normal * 1e-3
    lit = np.ones(len(t), dtype=bool)
    for shape in scene.shapes:
        t_block = _HIT[shape.kind](shape, shadow_origin, to_light)
        lit &= ~(t_block < light_dist)
    lambert = np.clip((normal * to_light).sum(axis=1), 0.0, 1.0) * lit
    brightness = 0.22 + 2.2 * lambert / (1.0 + 0.12 * light_dist**2)
    colour = albedo * _texture(scene, points, labels)[:, None] * brightness[:, None]
    colour *= np.exp(-0.02 * t)[:, None]
    image = np.clip(colour, 0.0, 1.0) ** (1 / 2.2) * 255.0
    noise = np.random.default_rng(scene.noise_seed).normal(0.0, 2.0, image.shape)
    image = np.clip(np.rint(image + noise), 0, 255).astype(np.uint8).reshape(height, width, 3)

    normal_cam = normal @ scene.rotation  # world -> camera
    facing = (normal_cam * rays_cam).sum(axis=1) > 0
    normal_cam[facing] *= -1.0
    depth = (t * rays_cam[:, 2]).reshape(height, width)
    normal_cam = normal_cam.reshape(height, width, 3)
    surface = surface.reshape(height, width)
    return {
        "image": image,
        "segment_semantic": labels.reshape(height, width).astype(np.uint8),
        "depth_zbuffer": depth.astype(np.float32),
        "normal": normal_cam.astype(np.float32),
        "keypoints2d": _keypoints(scene, depth, focal, (height, width)).astype(np.float32),
        "edge_texture": _edges(surface, depth, normal_cam),
    }


@register_dataset("synthetic")
class SyntheticScenes(MultitaskDataset):
    """``n`` procedural indoor scenes (see module docstring), rendered on access; deterministic per seed.

    Args:
        n: number of scenes.
        size: (H, W) of each image.
        seed: seeds the transform's draws; also the scenes unless ``scene_seed`` is given.
        scene_seed: scene ``i`` is drawn from ``default_rng([scene_seed, i])``; ``None``: ``seed``.
        tasks: subset of the five canonical task names (default: all five).
        transform: e.g. :class:`~adapmtl.data.TrainTransform`; ``None`` = full size, as rendered.
        normalize: image normalisation (see :data:`adapmtl.data.base.NORMALIZATIONS`).
        cache: keep each rendered scene in memory after its first access (about 0.45 MB a
            scene at 96×128), so that training epochs after the first cost no rendering.

    ``num_classes`` is ``len(SCENE_CLASSES)`` (8). Raises :class:`DatasetError` if ``n`` < 1,
    ``tasks`` is empty or unknown, or ``normalize`` is unknown.
    """

    metric_set = "nyuv2"

    def __init__(
        self,
        n: int,
        size: tuple[int, int] = (96, 128),
        seed: int = 0,
        tasks: Sequence[str] | None = None,
        transform: Transform | None = None,
        normalize: str = "imagenet",
        cache: bool = False,
        scene_seed: int | None = None,
    ) -> None:
        super().__init__(transform, seed, normalize)
        self.scene_seed = self.seed if scene_seed is None else int(scene_seed)
        if int(n) < 1:
            raise DatasetError(f"SyntheticScenes: n must be at least 1 scene, got {n}")
        self._cache: dict[int, dict[str, torch.Tensor]] | None = {} if cache else None
        self.n = int(n)
        self.size = (int(size[0]), int(size[1]))
        self.tasks = check_tasks(tasks, TASK_NAMES, "SyntheticScenes")
        self.num_classes = len(SCENE_CLASSES)
        self.class_names = SCENE_CLASSES

    @classmethod
    def from_config(cls, data: Any, split: str, transform: Transform | None, seed: int) -> "SyntheticScenes":
        """``data.synthetic_<split>`` scenes of ``data.synthetic_size``; by default NYU-v2's three tasks,
        for which synthetic runs stand in. Each split draws its own scenes: scene seed ``3 * d + k``
        with k = 0, 1, 2 for train, val, test and d = ``data.seed``, or the run's ``seed`` when that
        is None; the transform's draws use ``3 * seed + k`` either way.

        Raises DatasetError for another split or a bad task list.
        """
        offsets = {"train": 0, "val": 1, "test": 2}
        if split not in offsets:
            raise DatasetError(f"SyntheticScenes: unknown split {split!r}; expected one of {list(offsets)}")
        data_seed = seed if data.seed is None else data.seed
        return cls(getattr(data, f"synthetic_{split}"), data.synthetic_size, seed=seed * 3 + offsets[split],
                   tasks=data.tasks or DATASET_TASKS["nyuv2"], transform=transform, normalize=data.normalize,
                   cache=data.cache, scene_seed=data_seed * 3 + offsets[split])

    def __len__(self) -> int:
        return self.n

    def render(self, index: int) -> dict[str, np.ndarray]:
        """The raw numpy arrays of scene ``index`` (see :func:`render_scene`)."""
        return render_scene([self.scene_seed, int(index)], self.size)

    def load(self, index: int) -> dict[str, torch.Tensor]:
        """Scene ``index`` rendered (or taken from the cache) as a sample dict, before any transform."""
        if self._cache is not None and index in self._cache:
            return dict(self._cache[index])  # transforms build new tensors; the cached ones stay intact
        raw = self.render(index)
        sample = to_sample(raw["image"], {t: raw[t] for t in self.tasks}, self.normalize)
        if self._cache is not None:
            self._cache[index] = sample
        return dict(sample)
