"""Ray casting of a room: exact z-depth and labels, anti-aliased view-independent colour.

Every pixel casts one ray through its centre (depth and label come from it) and, with
supersampling s > 1, s x s rays on a regular sub-pixel grid whose colours are averaged. Rays
are ``o + t d`` with ``d = R K^-1 [x, y, 1]``, so the hit's ``t`` is its camera z-depth. Each
primitive is only tested against the rays inside its projected bounding rectangle. Shading is
Lambertian under a directional light, a ceiling point light and ambient light, darkened near the
room's planes (a smooth stand-in for ambient occlusion); it depends on the surface point only.
"""

from dataclasses import dataclass

import numpy as np
from jaxtyping import Float, Int, UInt8

from gsnerf.data.synthetic.layout import SHELL_FACES, Room
from gsnerf.data.synthetic.primitives import (
    Primitive,
    PrimitiveArrays,
    ShapeKind,
    bounding_corners,
    intersect_box,
    intersect_cylinder,
    intersect_shell,
)
from gsnerf.data.synthetic.textures import SIDE_FACE, SurfacePoints, albedo

# Hits closer than this to the camera are ignored, metres.
MIN_DEPTH = 1e-3


@dataclass
class LightingCfg:
    # Ambient light, fraction of albedo (range drawn per room).
    ambient_min: float = 0.42
    ambient_max: float = 0.52
    # Directional ("sun") light strength at normal incidence.
    sun_min: float = 0.3
    sun_max: float = 0.42
    # Elevation of the directional light above the horizon, degrees.
    sun_elevation_min_deg: float = 30.0
    sun_elevation_max_deg: float = 65.0
    # Ceiling point light strength at normal incidence and zero distance.
    lamp_min: float = 0.15
    lamp_max: float = 0.3
    # Distance at which the point light falls to half strength, metres.
    lamp_falloff: float = 2.5
    # Darkening of a point touching another room plane (0 none, 1 black).
    occlusion: float = 0.3
    # Decay length of that darkening, metres.
    occlusion_distance: float = 0.25


@dataclass(frozen=True)
class Lighting:
    """The lights of one room."""

    ambient: float
    sun: float
    sun_direction: tuple[float, float, float]  # unit vector towards the light
    lamp: float
    lamp_position: tuple[float, float, float]  # metres
    lamp_falloff: float
    occlusion: float
    occlusion_distance: float


def sample_lighting(rng: np.random.Generator, cfg: LightingCfg,
                    size: tuple[float, float, float]) -> Lighting:
    azimuth = rng.uniform(0.0, 2 * np.pi)
    elevation = np.deg2rad(rng.uniform(cfg.sun_elevation_min_deg, cfg.sun_elevation_max_deg))
    direction = (float(np.cos(elevation) * np.cos(azimuth)),
                 float(np.cos(elevation) * np.sin(azimuth)), float(np.sin(elevation)))
    return Lighting(
        ambient=float(rng.uniform(cfg.ambient_min, cfg.ambient_max)),
        sun=float(rng.uniform(cfg.sun_min, cfg.sun_max)),
        sun_direction=direction,
        lamp=float(rng.uniform(cfg.lamp_min, cfg.lamp_max)),
        lamp_position=(size[0] / 2, size[1] / 2, size[2] - 0.3),
        lamp_falloff=cfg.lamp_falloff,
        occlusion=cfg.occlusion,
        occlusion_distance=cfg.occlusion_distance,
    )


@dataclass
class RenderedFrame:
    color: UInt8[np.ndarray, "h w 3"]  # sRGB
    depth: Float[np.ndarray, "h w"]  # z-depth at the pixel centre, metres
    raw_labels: Int[np.ndarray, "h w"]  # raw ScanNet category id at the pixel centre


class RoomRenderer:
    """Renders frames of one room; holds the room's primitives as arrays."""

    def __init__(self, room: Room, lighting: Lighting) -> None:
        self.room, self.lighting = room, lighting
        width, depth, height = room.size
        centre = (width / 2, depth / 2, height / 2)
        half = (width / 2, depth / 2, height / 2)
        # The shell's six faces become six pseudo-primitives after the objects.
        shell = [Primitive(ShapeKind.SHELL, centre, half, 0.0, room.shell_raw_ids[f], -1,
                           room.shell_materials[f]) for f in range(SHELL_FACES)]
        self.count = len(room.primitives)
        self.arrays = PrimitiveArrays.from_list(room.primitives + shell)
        self.corners = bounding_corners(PrimitiveArrays.from_list(room.primitives)) if (
            self.count) else np.zeros((0, 8, 3))
        self.room_centre, self.room_half = np.array(centre), np.array(half)

    def render(self, intrinsics: Float[np.ndarray, "3 3"], cam_to_world: Float[np.ndarray, "4 4"],
               width: int, height: int, supersampling: int) -> RenderedFrame:
        offsets = [(0.0, 0.0)]
        if supersampling > 1:
            grid = (np.arange(supersampling) + 0.5) / supersampling - 0.5
            offsets += [(float(dx), float(dy)) for dy in grid for dx in grid]
        rotation, origin = cam_to_world[:3, :3], cam_to_world[:3, 3]
        rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
        offset = np.array(offsets)
        x = (cols[None] + offset[:, 0, None, None] - intrinsics[0, 2]) / intrinsics[0, 0]
        y = (rows[None] + offset[:, 1, None, None] - intrinsics[1, 2]) / intrinsics[1, 1]
        camera_dirs = np.stack([x, y, np.ones_like(x)], axis=-1)
        directions = camera_dirs @ rotation.T
        depth, ids = self._cast(origin, directions, rotation, intrinsics, width, height)
        colour_samples = slice(1, None) if supersampling > 1 else slice(0, 1)
        points = origin + depth[colour_samples, ..., None] * directions[colour_samples]
        rgb = self._shade(points.reshape(-1, 3), ids[colour_samples].reshape(-1))
        rgb = rgb.reshape(-1, height, width, 3).mean(axis=0)
        color = np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
        return RenderedFrame(color, depth[0], self.arrays.raw_id[ids[0]])

    def _cast(self, origin, directions, rotation, intrinsics, width: int, height: int):
        """Nearest hit ``t`` and primitive index of every ray (shell faces come last)."""
        t = intersect_shell(origin - self.room_centre, directions, self.room_half)
        points = origin + t[..., None] * directions - self.room_centre
        ratio = np.abs(points) / self.room_half
        axis = ratio.argmax(axis=-1)
        positive = np.take_along_axis(points, axis[..., None], axis=-1)[..., 0] > 0
        ids = self.count + 2 * axis + positive
        cam = (self.corners - origin) @ rotation
        z = cam[..., 2]
        for index in range(self.count):
            window = self._window(cam[index], z[index], intrinsics, width, height)
            if window is None:
                continue
            block = directions[:, window[0], window[1]]
            hit = self._intersect(index, origin, block)
            current = t[:, window[0], window[1]]
            closer = hit < current
            t[:, window[0], window[1]] = np.where(closer, hit, current)
            ids[:, window[0], window[1]] = np.where(closer, index, ids[:, window[0], window[1]])
        return t, ids

    @staticmethod
    def _window(cam, z, intrinsics, width: int, height: int):
        """Pixel rows and columns that may see a primitive (its projected bounding box)."""
        if (z <= MIN_DEPTH).all():
            return None
        if (z <= MIN_DEPTH).any():
            return slice(0, height), slice(0, width)
        u = intrinsics[0, 0] * cam[:, 0] / z + intrinsics[0, 2]
        v = intrinsics[1, 1] * cam[:, 1] / z + intrinsics[1, 2]
        c0, c1 = max(0, int(np.floor(u.min())) - 1), min(width, int(np.ceil(u.max())) + 2)
        r0, r1 = max(0, int(np.floor(v.min())) - 1), min(height, int(np.ceil(v.max())) + 2)
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def _intersect(self, index: int, origin, block):
        a = self.arrays
        cos, sin = np.cos(a.yaw[index]), np.sin(a.yaw[index])
        relative = origin - a.center[index]
        local_origin = np.array([cos * relative[0] + sin * relative[1],
                                 -sin * relative[0] + cos * relative[1], relative[2]])
        if a.kind[index] == ShapeKind.CYLINDER:
            return intersect_cylinder(local_origin, block, a.half_size[index, 0],
                                      a.half_size[index, 2], MIN_DEPTH)
        local = np.stack([cos * block[..., 0] + sin * block[..., 1],
                          -sin * block[..., 0] + cos * block[..., 1], block[..., 2]], axis=-1)
        return intersect_box(local_origin, local, a.half_size[index], MIN_DEPTH)

    def _surface(self, points, ids):
        """Surface frames, face indices and world normals of hit points."""
        a = self.arrays
        yaw, kind, half = a.yaw[ids], a.kind[ids], a.half_size[ids]
        cos, sin = np.cos(yaw), np.sin(yaw)

        def unrotate(v):
            return np.stack([cos * v[:, 0] + sin * v[:, 1], -sin * v[:, 0] + cos * v[:, 1],
                             v[:, 2]], axis=-1)

        tex = unrotate(points)
        local = unrotate(points - a.center[ids])
        ratio = np.abs(local) / half
        face = ratio.argmax(axis=-1)
        radial = np.hypot(local[:, 0], local[:, 1])
        cylinder = kind == ShapeKind.CYLINDER
        cap_gap = np.abs(half[:, 2] - np.abs(local[:, 2])) / half[:, 2]
        side_gap = np.abs(half[:, 0] - radial) / half[:, 0]
        face = np.where(cylinder, np.where(cap_gap < side_gap, 2, SIDE_FACE), face)
        normal = np.zeros_like(local)
        box_like = ~cylinder | (face == 2)
        rows = np.nonzero(box_like)[0]
        normal[rows, face[rows]] = np.sign(local[rows, face[rows]])
        side = np.nonzero(~box_like)[0]
        normal[side, :2] = local[side, :2] / np.maximum(radial[side, None], 1e-9)
        normal[kind == ShapeKind.SHELL] *= -1.0
        world_normal = np.stack([cos * normal[:, 0] - sin * normal[:, 1],
                                 sin * normal[:, 0] + cos * normal[:, 1], normal[:, 2]], axis=-1)
        return SurfacePoints(tex, local, half, face), world_normal

    def _shade(self, points, ids):
        surface, normal = self._surface(points, ids)
        materials = self.arrays.material[ids]
        rgb = np.zeros_like(points, dtype=np.float32)
        order = np.argsort(materials, kind="stable")
        bounds = np.flatnonzero(np.diff(materials[order])) + 1
        for group in np.split(order, bounds):
            if len(group) == 0:
                continue
            part = SurfacePoints(surface.tex[group], surface.local[group], surface.half[group],
                                 surface.face[group])
            rgb[group] = albedo(part, self.room.materials[int(materials[group[0]])])
        return rgb * self._light(points, normal)[:, None]

    def _light(self, points, normal):
        light = self.lighting
        sun = np.clip(normal @ np.array(light.sun_direction), 0.0, None) * light.sun
        to_lamp = np.array(light.lamp_position) - points
        distance = np.linalg.norm(to_lamp, axis=-1)
        facing = np.clip((normal * to_lamp).sum(axis=-1) / np.maximum(distance, 1e-6), 0.0, None)
        lamp = light.lamp * facing / (1.0 + (distance / light.lamp_falloff) ** 2)
        size = np.array(self.room.size)
        planes = np.concatenate([points, size - points], axis=-1)
        near = np.where(planes > 1e-3, np.exp(-planes / light.occlusion_distance), 0.0)
        occlusion = np.clip(1.0 - light.occlusion * near.sum(axis=-1), 0.5, 1.0)
        return ((light.ambient + sun + lamp) * occlusion).astype(np.float32)
