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
    Directions,
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
# A point this close to a room plane lies on it (no darkening from its own plane), metres.
ON_PLANE = 1e-3


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
    # Height of the point light below the ceiling (above the room centre), metres.
    lamp_below_ceiling: float = 0.3
    # Distance at which the point light falls to half strength, metres.
    lamp_falloff: float = 2.5
    # Darkening of a point touching another room plane (0 none, 1 black).
    occlusion: float = 0.3
    # Decay length of that darkening, metres.
    occlusion_distance: float = 0.25
    # Darkest the occlusion term may make a point (factor on the light).
    occlusion_min_factor: float = 0.5


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
    occlusion_min_factor: float


def sample_lighting(
    rng: np.random.Generator, cfg: LightingCfg, size: tuple[float, float, float]
) -> Lighting:
    """Lights of a room of ``size`` metres: strengths and sun direction drawn from ``cfg``."""
    azimuth = rng.uniform(0.0, 2 * np.pi)
    elevation = np.deg2rad(rng.uniform(cfg.sun_elevation_min_deg, cfg.sun_elevation_max_deg))
    direction = (
        float(np.cos(elevation) * np.cos(azimuth)),
        float(np.cos(elevation) * np.sin(azimuth)),
        float(np.sin(elevation)),
    )
    return Lighting(
        ambient=float(rng.uniform(cfg.ambient_min, cfg.ambient_max)),
        sun=float(rng.uniform(cfg.sun_min, cfg.sun_max)),
        sun_direction=direction,
        lamp=float(rng.uniform(cfg.lamp_min, cfg.lamp_max)),
        lamp_position=(size[0] / 2, size[1] / 2, size[2] - cfg.lamp_below_ceiling),
        lamp_falloff=cfg.lamp_falloff,
        occlusion=cfg.occlusion,
        occlusion_distance=cfg.occlusion_distance,
        occlusion_min_factor=cfg.occlusion_min_factor,
    )


@dataclass
class RenderedFrame:
    """One rendered view: what the writer stores as colour, depth and label-filt images."""

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
        shell = [
            Primitive(
                ShapeKind.SHELL,
                centre,
                half,
                0.0,
                room.shell_raw_ids[f],
                -1,
                room.shell_materials[f],
            )
            for f in range(SHELL_FACES)
        ]
        self.count = len(room.primitives)
        self.arrays = PrimitiveArrays.from_list(room.primitives + shell)
        objects = PrimitiveArrays.from_list(room.primitives)
        self.corners = bounding_corners(objects) if self.count else np.zeros((0, 8, 3))
        self.room_centre, self.room_half = np.array(centre), np.array(half)
        self.yaw32 = self.arrays.yaw.astype(np.float32)
        self.center32 = self.arrays.center.astype(np.float32)
        self.half32 = self.arrays.half_size.astype(np.float32)

    def render(
        self,
        intrinsics: Float[np.ndarray, "3 3"],
        cam_to_world: Float[np.ndarray, "4 4"],
        width: int,
        height: int,
        supersampling: int,
    ) -> RenderedFrame:
        """Frame seen by a camera (K in pixels, OpenCV camera-to-world pose)."""
        offsets = [(0.0, 0.0)]
        if supersampling > 1:
            grid = (np.arange(supersampling) + 0.5) / supersampling - 0.5
            offsets += [(float(dx), float(dy)) for dy in grid for dx in grid]
        rotation, origin = cam_to_world[:3, :3], cam_to_world[:3, 3]
        rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
        offset = np.array(offsets)
        x = (cols[None] + offset[:, 0, None, None] - intrinsics[0, 2]) / intrinsics[0, 0]
        y = (rows[None] + offset[:, 1, None, None] - intrinsics[1, 2]) / intrinsics[1, 1]
        # World direction components of every ray, shape (samples, h, w) each.
        directions = tuple(
            (rotation[k, 0] * x + rotation[k, 1] * y + rotation[k, 2]).astype(np.float32)
            for k in range(3)
        )
        depth, ids = self._cast(origin, directions, rotation, intrinsics, width, height)
        colour_samples = slice(1, None) if supersampling > 1 else slice(0, 1)
        points = np.stack(
            [
                np.float32(origin[k]) + depth[colour_samples] * directions[k][colour_samples]
                for k in range(3)
            ],
            axis=-1,
        )
        rgb = self._shade(points.reshape(-1, 3), ids[colour_samples].reshape(-1))
        rgb = rgb.reshape(-1, height, width, 3).mean(axis=0)
        color = np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
        return RenderedFrame(color, depth[0].astype(np.float64), self.arrays.raw_id[ids[0]])

    def _cast(
        self,
        origin: Float[np.ndarray, "3"],
        directions: Directions,
        rotation: Float[np.ndarray, "3 3"],
        intrinsics: Float[np.ndarray, "3 3"],
        width: int,
        height: int,
    ) -> tuple[Float[np.ndarray, "s h w"], Int[np.ndarray, "s h w"]]:
        """Nearest hit ``t`` and primitive index of every ray (shell faces come last)."""
        t = intersect_shell(origin - self.room_centre, directions, self.room_half)
        # Shell face of each ray: the axis where the exit point is farthest out, and its side.
        ratios = [
            np.abs(origin[k] - self.room_centre[k] + t * directions[k]) / self.room_half[k]
            for k in range(3)
        ]
        axis = np.argmax(np.stack(ratios), axis=0)
        exit_point = np.choose(axis, [origin[k] + t * directions[k] for k in range(3)])
        positive = exit_point > np.choose(axis, self.room_centre)
        ids = self.count + 2 * axis + positive
        cam = np.einsum("pck,kj->pcj", self.corners - origin, rotation)
        z = cam[..., 2]
        for index in range(self.count):
            window = self._window(cam[index], z[index], intrinsics, width, height)
            if window is None:
                continue
            block = tuple(component[:, window[0], window[1]] for component in directions)
            hit = self._intersect(index, origin, block)
            current = t[:, window[0], window[1]]
            closer = hit < current
            np.copyto(current, hit, where=closer)
            np.copyto(ids[:, window[0], window[1]], index, where=closer)
        return t, ids

    @staticmethod
    def _window(
        cam: Float[np.ndarray, "8 3"],
        z: Float[np.ndarray, "8"],
        intrinsics: Float[np.ndarray, "3 3"],
        width: int,
        height: int,
    ) -> tuple[slice, slice] | None:
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

    def _intersect(
        self, index: int, origin: Float[np.ndarray, "3"], block: Directions
    ) -> Float[np.ndarray, "s a b"]:
        """``t`` of the rays of ``block`` on primitive ``index`` (``inf`` where they miss)."""
        a = self.arrays
        cos, sin = np.cos(a.yaw[index]), np.sin(a.yaw[index])
        relative = origin - a.center[index]
        local_origin = np.array(
            [
                cos * relative[0] + sin * relative[1],
                -sin * relative[0] + cos * relative[1],
                relative[2],
            ]
        )
        dx, dy, dz = block
        if a.kind[index] == ShapeKind.CYLINDER:
            # A vertical cylinder is symmetric about z: intersect it in unrotated axes.
            return intersect_cylinder(
                relative, block, a.half_size[index, 0], a.half_size[index, 2], MIN_DEPTH
            )
        if a.yaw[index] != 0.0:
            cos, sin = np.float32(cos), np.float32(sin)
            dx, dy = cos * dx + sin * dy, cos * dy - sin * dx
        return intersect_box(local_origin, (dx, dy, dz), a.half_size[index], MIN_DEPTH)

    def _surface(
        self, points: Float[np.ndarray, "n 3"], ids: Int[np.ndarray, " n"]
    ) -> tuple[SurfacePoints, Float[np.ndarray, "n 3"]]:
        """Surface frames, face indices and world normals of hit points (float32)."""
        yaw, kind = self.yaw32[ids], self.arrays.kind[ids]
        centre, half = self.center32[ids], self.half32[ids]
        cos, sin = np.cos(yaw), np.sin(yaw)
        px, py, pz = points[:, 0], points[:, 1], points[:, 2]
        tex = np.stack([cos * px + sin * py, cos * py - sin * px, pz], axis=-1)
        rx, ry, rz = px - centre[:, 0], py - centre[:, 1], pz - centre[:, 2]
        local = np.stack([cos * rx + sin * ry, cos * ry - sin * rx, rz], axis=-1)
        ratio = np.abs(local) / half
        face = np.where(ratio[:, 0] >= ratio[:, 1], 0, 1)
        face = np.where(ratio[:, 2] > np.maximum(ratio[:, 0], ratio[:, 1]), 2, face)
        radial = np.hypot(local[:, 0], local[:, 1])
        cylinder = kind == ShapeKind.CYLINDER
        cap_gap = np.abs(half[:, 2] - np.abs(local[:, 2])) / half[:, 2]
        side_gap = np.abs(half[:, 0] - radial) / half[:, 0]
        face = np.where(cylinder, np.where(cap_gap < side_gap, 2, SIDE_FACE), face)
        sign = np.sign(np.take_along_axis(local, np.minimum(face, 2)[:, None], axis=1))[:, 0]
        sign = np.where(kind == ShapeKind.SHELL, -sign, sign)
        inv_radial = 1.0 / np.maximum(radial, np.float32(1e-9))
        side = face == SIDE_FACE
        nx = np.where(side, local[:, 0] * inv_radial, np.where(face == 0, sign, 0.0))
        ny = np.where(side, local[:, 1] * inv_radial, np.where(face == 1, sign, 0.0))
        nz = np.where(face == 2, sign, 0.0)
        normal = np.stack([cos * nx - sin * ny, sin * nx + cos * ny, nz], axis=-1)
        return SurfacePoints(tex, local, half, face), normal.astype(np.float32)

    def _shade(
        self, points: Float[np.ndarray, "n 3"], ids: Int[np.ndarray, " n"]
    ) -> Float[np.ndarray, "n 3"]:
        """Albedo (grouped by material) times light of the hit points."""
        surface, normal = self._surface(points, ids)
        materials = self.arrays.material[ids]
        rgb = np.zeros_like(points, dtype=np.float32)
        order = np.argsort(materials, kind="stable")
        bounds = np.flatnonzero(np.diff(materials[order])) + 1
        for group in np.split(order, bounds):
            if len(group) == 0:
                continue
            part = SurfacePoints(
                surface.tex[group], surface.local[group], surface.half[group], surface.face[group]
            )
            rgb[group] = albedo(part, self.room.materials[int(materials[group[0]])])
        return rgb * self._light(points, normal)[:, None]

    def _light(
        self, points: Float[np.ndarray, "n 3"], normal: Float[np.ndarray, "n 3"]
    ) -> Float[np.ndarray, " n"]:
        """View-independent light factor: ``(ambient + sun + lamp) * occlusion``.

        ``sun = s max(0, n . l)``, ``lamp = p max(0, n . v / |v|) / (1 + (|v| / f)^2)`` with ``v``
        towards the lamp, ``occlusion = clip(1 - o sum_planes exp(-d / r), min, 1)`` over the six
        room planes except the point's own (d > 1 mm).
        """
        light = self.lighting
        sun_x, sun_y, sun_z = (np.float32(v) for v in light.sun_direction)
        nx, ny, nz = normal[:, 0], normal[:, 1], normal[:, 2]
        sun = np.clip(nx * sun_x + ny * sun_y + nz * sun_z, 0.0, None) * np.float32(light.sun)
        to_lamp = [np.float32(light.lamp_position[k]) - points[:, k] for k in range(3)]
        distance = np.sqrt(to_lamp[0] ** 2 + to_lamp[1] ** 2 + to_lamp[2] ** 2)
        facing = (nx * to_lamp[0] + ny * to_lamp[1] + nz * to_lamp[2]) / distance
        falloff = np.float32(light.lamp_falloff)
        lamp = np.float32(light.lamp) * np.clip(facing, 0.0, None) / (1 + (distance / falloff) ** 2)
        # Darken points close to a room plane other than their own (ambient occlusion stand-in).
        near = np.zeros(len(points), dtype=np.float32)
        scale = np.float32(-1.0 / light.occlusion_distance)
        for k in range(3):
            for gap in (points[:, k], np.float32(self.room.size[k]) - points[:, k]):
                near += np.where(gap > ON_PLANE, np.exp(gap * scale), 0.0).astype(np.float32)
        occlusion = np.clip(1.0 - np.float32(light.occlusion) * near, light.occlusion_min_factor, 1)
        return (np.float32(light.ambient) + sun + lamp) * occlusion
