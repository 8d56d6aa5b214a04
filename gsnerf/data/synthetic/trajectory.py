"""Handheld-like camera paths through a furnished room.

The camera walks a smooth spline (Catmull-Rom) through random free-floor control points,
ordered around the free space so the walk circles the room, at constant speed; its height,
pitch and roll follow slow random curves. It looks towards the room centre (smoothed) plus a
slowly varying offset, so consecutive frames overlap strongly and every frame looks into the
room. Every position keeps a clearance from walls and objects.
"""

from dataclasses import dataclass

import cv2
import numpy as np
from jaxtyping import Bool, Float

from gsnerf.data.synthetic.layout import Room


@dataclass
class CameraPathCfg:
    # Camera height above the floor, metres (handheld scan).
    height_min: float = 1.2
    height_max: float = 1.7
    # Smallest distance from the camera to a wall, metres.
    wall_clearance: float = 0.3
    # Smallest horizontal distance from the camera to an object's footprint, metres.
    object_clearance: float = 0.25
    # Largest horizontal camera travel between consecutive frames, metres. About 10 cm between
    # neighbouring frames gives the cost volumes 2-4 pixels of parallax at room depth even at
    # 80x60; at 4-6 cm (a denser capture) the nearest views of so small an image barely differ.
    max_step: float = 0.15
    # Shortest accepted path, metres: long paths spread the frames of a scene over the room.
    min_length: float = 7.0
    # Number of spline control points (inclusive range).
    control_points_min: int = 6
    control_points_max: int = 8
    # Largest offset of the view direction from the room centre, degrees.
    yaw_offset_deg: float = 40.0
    # Largest heading change between consecutive frames, degrees.
    max_turn_deg: float = 12.0
    # Pitch range, degrees (negative looks down).
    pitch_min_deg: float = -35.0
    pitch_max_deg: float = 0.0
    # Largest roll, degrees.
    roll_deg: float = 3.0
    # Smallest horizontal distance to the wall straight ahead, metres.
    min_view_distance: float = 1.0
    # Gaussian smoothing of the look-at heading, frames (standard deviation).
    heading_smoothing: float = 6.0
    # Knots of the slow random curves of height, pitch, roll and heading offset per path.
    curve_knots: int = 5
    # Paths tried per room before the room is rejected.
    attempts: int = 60


def catmull_rom(
    points: Float[np.ndarray, "n d"], samples_per_segment: int
) -> Float[np.ndarray, "m d"]:
    """Uniform Catmull-Rom spline through ``points`` (end points repeated), densely sampled.

    Between P1 and P2: ``p(t) = 0.5 (2 P1 + (P2 - P0) t + (2 P0 - 5 P1 + 4 P2 - P3) t^2
    + (3 P1 - P0 - 3 P2 + P3) t^3)``; it passes through every point with a continuous tangent.
    """
    padded = np.concatenate([points[:1], points, points[-1:]], axis=0)
    t = np.linspace(0.0, 1.0, samples_per_segment, endpoint=False)[:, None]
    pieces = []
    for i in range(len(points) - 1):
        p0, p1, p2, p3 = padded[i], padded[i + 1], padded[i + 2], padded[i + 3]
        pieces.append(
            0.5
            * (
                2 * p1
                + (p2 - p0) * t
                + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                + (3 * p1 - p0 - 3 * p2 + p3) * t**3
            )
        )
    pieces.append(points[-1:])
    return np.concatenate(pieces, axis=0)


def slow_curve(
    rng: np.random.Generator, frames: int, knots: int, low: float, high: float
) -> Float[np.ndarray, " f"]:
    """Smooth random values in [low, high] over ``frames`` (spline through ``knots`` values)."""
    values = rng.uniform(low, high, size=(knots, 1))
    dense = catmull_rom(values, 64)[:, 0]
    positions = np.linspace(0.0, len(dense) - 1, frames)
    return np.clip(np.interp(positions, np.arange(len(dense)), dense), low, high)


def _gaussian_smooth(values: Float[np.ndarray, " f"], sigma: float) -> Float[np.ndarray, " f"]:
    radius = max(1, int(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    padded = np.pad(values, radius, mode="edge")
    return np.convolve(padded, kernel / kernel.sum(), mode="valid")


def look_rotation(
    yaw: Float[np.ndarray, " f"], pitch: Float[np.ndarray, " f"], roll: Float[np.ndarray, " f"]
) -> Float[np.ndarray, "f 3 3"]:
    """Camera-to-world rotations (OpenCV axes) of a z-up world, angles in radians.

    Forward ``z = (cos p cos y, cos p sin y, sin p)``, right ``x = z x up / |.|``, down
    ``y = z x x``, then x and y turn by the roll about z. Example: yaw = pitch = roll = 0 looks
    along world +x with image right = world -y and image down = world -z.
    """
    forward = np.stack(
        [np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)], axis=-1
    )
    right = np.cross(forward, np.array([0.0, 0.0, 1.0]))
    right /= np.linalg.norm(right, axis=-1, keepdims=True)
    down = np.cross(forward, right)
    cos, sin = np.cos(roll)[:, None], np.sin(roll)[:, None]
    right, down = cos * right + sin * down, -sin * right + cos * down
    return np.stack([right, down, forward], axis=-1)


def _clearance_map(room: Room, cfg: CameraPathCfg) -> Bool[np.ndarray, "gx gy"]:
    """Per floor cell: True where the camera may stand."""
    free = (~room.obstacles).astype(np.uint8)
    to_object = cv2.distanceTransform(free, cv2.DIST_L2, 5) * room.cell
    xs = (np.arange(free.shape[0]) + 0.5) * room.cell
    ys = (np.arange(free.shape[1]) + 0.5) * room.cell
    to_wall = np.minimum(
        np.minimum(xs[:, None], room.size[0] - xs[:, None]),
        np.minimum(ys[None, :], room.size[1] - ys[None, :]),
    )
    return (to_object >= cfg.object_clearance) & (to_wall >= cfg.wall_clearance)


def _distance_ahead(
    xy: Float[np.ndarray, "f 2"], yaw: Float[np.ndarray, " f"], size: tuple[float, float, float]
) -> Float[np.ndarray, " f"]:
    """Horizontal distance from each position to the wall straight ahead."""
    direction = np.stack([np.cos(yaw), np.sin(yaw)], axis=-1)
    safe = np.where(np.abs(direction) < 1e-9, 1e-9, direction)
    limits = np.where(direction > 0, np.array(size[:2]), 0.0)
    return ((limits - xy) / safe).clip(min=0.0).min(axis=-1)


def camera_path(
    rng: np.random.Generator, room: Room, cfg: CameraPathCfg, frames: int
) -> Float[np.ndarray, "f 4 4"] | None:
    """Camera-to-world poses of a smooth walk through ``room``, or None if none was found."""
    allowed = _clearance_map(room, cfg)
    cells = np.argwhere(allowed)
    if len(cells) < 4:
        return None
    centre = (cells.mean(axis=0) + 0.5) * room.cell
    room_centre = np.array(room.size[:2]) / 2
    for _ in range(cfg.attempts):
        count = int(rng.integers(cfg.control_points_min, cfg.control_points_max + 1))
        picks = cells[rng.choice(len(cells), size=count, replace=False)]
        points = (picks + rng.uniform(0.0, 1.0, size=picks.shape)) * room.cell
        angles = np.arctan2(points[:, 1] - centre[1], points[:, 0] - centre[0])
        order = np.argsort(angles)
        order = np.roll(order, -int(rng.integers(count)))
        dense = catmull_rom(points[order if rng.random() < 0.5 else order[::-1]], 64)
        arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(dense, axis=0), axis=1))])
        if arc[-1] < cfg.min_length:
            continue
        length = min(arc[-1], cfg.max_step * (frames - 1))
        start = rng.uniform(0.0, arc[-1] - length)
        keep = (arc >= start) & (arc <= start + length)
        index = np.floor(dense[keep] / room.cell).astype(np.int64)
        index = np.clip(index, 0, np.array(allowed.shape) - 1)
        if not allowed[index[:, 0], index[:, 1]].all():
            continue
        targets = start + np.linspace(0.0, length, frames)
        xy = np.stack([np.interp(targets, arc, dense[:, k]) for k in range(2)], axis=-1)
        heading = np.unwrap(np.arctan2(room_centre[1] - xy[:, 1], room_centre[0] - xy[:, 0]))
        offset = np.deg2rad(cfg.yaw_offset_deg)
        yaw = _gaussian_smooth(heading, cfg.heading_smoothing) + slow_curve(
            rng, frames, cfg.curve_knots, -offset, offset
        )
        if np.abs(np.diff(yaw)).max(initial=0.0) > np.deg2rad(cfg.max_turn_deg):
            continue
        if _distance_ahead(xy, yaw, room.size).min() < cfg.min_view_distance:
            continue
        height = slow_curve(rng, frames, cfg.curve_knots, cfg.height_min, cfg.height_max)
        pitch = np.deg2rad(
            slow_curve(rng, frames, cfg.curve_knots, cfg.pitch_min_deg, cfg.pitch_max_deg)
        )
        roll = np.deg2rad(slow_curve(rng, frames, cfg.curve_knots, -cfg.roll_deg, cfg.roll_deg))
        poses = np.tile(np.eye(4), (frames, 1, 1))
        poses[:, :3, :3] = look_rotation(yaw, pitch, roll)
        poses[:, :3, 3] = np.concatenate([xy, height[:, None]], axis=-1)
        return poses
    return None
