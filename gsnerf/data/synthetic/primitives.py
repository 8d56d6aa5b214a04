"""Analytic primitives of the synthetic rooms and their ray intersections.

Three shapes, all in a frame rotated by ``yaw`` about the world's vertical (+z) axis:
- ``BOX``: an oriented box, ``|p_i| <= half_size_i`` in its local frame;
- ``CYLINDER``: a vertical cylinder of radius ``half_size[0]`` and half height ``half_size[2]``;
- ``SHELL``: the room itself, a box seen from inside (rays leave through its faces).

Rays are ``o + t d`` with ``d`` scaled so that the camera z-depth of the hit is ``t``; every
intersection returns that ``t`` (``inf`` on a miss) for all rays of a block at once. Ray
directions come as three component arrays (x, y, z), which keeps every operation elementwise.
"""

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from jaxtyping import Float, Int

# Clip of 1 / direction components (finite in float32 and far beyond any room).
_HUGE = 1e30


class ShapeKind(IntEnum):
    BOX = 0
    CYLINDER = 1
    SHELL = 2


@dataclass(frozen=True)
class Primitive:
    """One analytic solid with its semantic label and material."""

    kind: ShapeKind
    # Centre in world coordinates, metres.
    center: tuple[float, float, float]
    # Box: half extents along local x, y, z; cylinder: (radius, radius, half height); metres.
    half_size: tuple[float, float, float]
    # Rotation about +z from local to world axes, radians.
    yaw: float
    # Raw ScanNet category id written to label-filt.
    raw_id: int
    # Object instance the primitive belongs to (several primitives per instance).
    instance_id: int
    # Index into the scene's material list.
    material: int


@dataclass
class PrimitiveArrays:
    """The primitives of a scene as parallel arrays (one row per primitive)."""

    kind: Int[np.ndarray, " p"]
    center: Float[np.ndarray, "p 3"]
    half_size: Float[np.ndarray, "p 3"]
    yaw: Float[np.ndarray, " p"]
    raw_id: Int[np.ndarray, " p"]
    material: Int[np.ndarray, " p"]

    @classmethod
    def from_list(cls, primitives: list[Primitive]) -> "PrimitiveArrays":
        return cls(
            kind=np.array([int(p.kind) for p in primitives], dtype=np.int64),
            center=np.array([p.center for p in primitives], dtype=np.float64).reshape(-1, 3),
            half_size=np.array([p.half_size for p in primitives], dtype=np.float64).reshape(-1, 3),
            yaw=np.array([p.yaw for p in primitives], dtype=np.float64),
            raw_id=np.array([p.raw_id for p in primitives], dtype=np.int64),
            material=np.array([p.material for p in primitives], dtype=np.int64),
        )


Directions = tuple[Float[np.ndarray, "*r"], Float[np.ndarray, "*r"], Float[np.ndarray, "*r"]]


def _slabs(
    origin: Float[np.ndarray, "3"], directions: Directions, half_size: Float[np.ndarray, "3"]
):
    """Per axis, the ``t`` where rays enter and leave the slab ``|p_k| <= half_k``.

    ``t = (+-half_k - o_k) / d_k``; written as ``-o_k / d_k -+ half_k / |d_k|`` so the entry and
    exit need no comparison. ``1 / d`` is clipped to +-1e30 so a ray parallel to a slab gets
    (-huge, +huge) inside it and an interval far beyond any hit outside it, never NaN.
    """
    entries, exits = [], []
    with np.errstate(divide="ignore"):
        for k in range(3):
            inverse = np.clip(1.0 / directions[k], -_HUGE, _HUGE)
            # Python floats keep the rays' precision (float32 stays float32).
            centre = -float(origin[k]) * inverse
            spread = float(half_size[k]) * np.abs(inverse)
            entries.append(centre - spread)
            exits.append(centre + spread)
    return entries, exits


def intersect_box(
    origin: Float[np.ndarray, "3"],
    directions: Directions,
    half_size: Float[np.ndarray, "3"],
    min_t: float,
) -> Float[np.ndarray, "*r"]:
    """Entry ``t`` of rays into the axis-aligned box ``|p| <= half_size`` (slab method).

    ``t_in = max_k min(t1_k, t2_k)``, ``t_out = min_k max(t1_k, t2_k)`` with
    ``t{1,2}_k = (-+half_k - o_k) / d_k``; hit when ``t_in <= t_out`` and ``t_in > min_t``.
    ``directions`` holds the x, y and z components as separate arrays.
    Example: origin (0, 0, -2), direction (0, 0, 1), half size 1 -> t = 1.
    """
    entries, exits = _slabs(origin, directions, half_size)
    t_in = np.maximum(np.maximum(entries[0], entries[1]), entries[2])
    t_out = np.minimum(np.minimum(exits[0], exits[1]), exits[2])
    hit = (t_in <= t_out) & (t_in > min_t)
    return np.where(hit, t_in, np.inf).astype(directions[0].dtype)


def intersect_shell(
    origin: Float[np.ndarray, "3"],
    directions: Directions,
    half_size: Float[np.ndarray, "3"],
) -> Float[np.ndarray, "*r"]:
    """Exit ``t`` of rays that start inside the box ``|p| <= half_size``: ``min_k max(t1, t2)``."""
    _, exits = _slabs(origin, directions, half_size)
    return np.minimum(np.minimum(exits[0], exits[1]), exits[2])


def intersect_cylinder(
    origin: Float[np.ndarray, "3"],
    directions: Directions,
    radius: float,
    half_height: float,
    min_t: float,
) -> Float[np.ndarray, "*r"]:
    """First ``t`` of rays on the capped vertical cylinder ``x^2 + y^2 <= r^2, |z| <= h``.

    Side: smallest root of ``(ox + t dx)^2 + (oy + t dy)^2 = r^2`` whose ``z`` is within
    ``[-h, h]``; caps: ``t = (+-h - oz) / dz`` with the hit inside the disc. Example: origin
    (-3, 0, 0), direction (1, 0, 0), r = 1 -> t = 2.
    """
    dx, dy, dz = directions
    ox, oy, oz = (float(v) for v in origin)
    a = dx * dx + dy * dy
    b = 2.0 * (ox * dx + oy * dy)
    c = ox * ox + oy * oy - radius * radius
    disc = b * b - 4.0 * a * c
    with np.errstate(invalid="ignore", divide="ignore"):
        t_side = (-b - np.sqrt(disc)) / (2.0 * a)
        side_ok = (np.abs(oz + t_side * dz) <= half_height) & (t_side > min_t)
        best = np.where(side_ok, t_side, np.inf)
        # Only the cap facing the origin can be entered first.
        cap_z = half_height if oz > 0 else -half_height
        t_cap = (cap_z - oz) / dz
        x_cap, y_cap = ox + t_cap * dx, oy + t_cap * dy
        cap_ok = (x_cap * x_cap + y_cap * y_cap <= radius * radius) & (t_cap > min_t)
    return np.minimum(best, np.where(cap_ok, t_cap, np.inf)).astype(dx.dtype)


def bounding_corners(arrays: PrimitiveArrays) -> Float[np.ndarray, "p 8 3"]:
    """World corners of each primitive's (yaw-rotated) bounding box."""
    signs = np.array(
        [[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64
    )
    local = signs[None] * arrays.half_size[:, None, :]
    cos, sin = np.cos(arrays.yaw)[:, None], np.sin(arrays.yaw)[:, None]
    world_x = cos * local[..., 0] - sin * local[..., 1]
    world_y = sin * local[..., 0] + cos * local[..., 1]
    rotated = np.stack([world_x, world_y, local[..., 2]], axis=-1)
    return rotated + arrays.center[:, None, :]
