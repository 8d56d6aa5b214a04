"""Floor occupancy of a room, used to place objects without interpenetration.

The floor is a grid of square cells. Each cell remembers the top of the tallest part standing
in it (a part is standing when it starts near the floor) and the bottom of the lowest part
hanging over it (window, picture, table top, wall cabinet). A new object fits when, in every cell
it covers, its standing parts stay below what hangs there and its hanging parts stay above what
stands there. The same grid records which cells the camera must avoid.
"""

from dataclasses import dataclass

import numpy as np
from jaxtyping import Bool, Float

from gsnerf.data.synthetic.parts import Furniture
from gsnerf.data.synthetic.primitives import ShapeKind


@dataclass(frozen=True)
class Pose2d:
    """Placement of an object frame on the floor: position (metres) and yaw (radians)."""

    x: float
    y: float
    yaw: float


@dataclass(frozen=True)
class PartFootprint:
    """A part's floor rectangle and height range in world coordinates, metres."""

    center: tuple[float, float]
    half: tuple[float, float]
    yaw: float
    z0: float
    z1: float


def footprints(obj: Furniture, pose: Pose2d) -> list[PartFootprint]:
    """World footprints of every part of ``obj`` placed at ``pose``."""
    cos, sin = np.cos(pose.yaw), np.sin(pose.yaw)
    result = []
    for part in obj.parts:
        px, py, pz = part.center
        x = pose.x + cos * px - sin * py
        y = pose.y + sin * px + cos * py
        yaw = 0.0 if part.kind == ShapeKind.CYLINDER else pose.yaw + part.yaw
        result.append(
            PartFootprint(
                (float(x), float(y)),
                part.half_size[:2],
                float(yaw),
                pz - part.half_size[2],
                pz + part.half_size[2],
            )
        )
    return result


class FloorPlan:
    """Occupancy grid of a ``width`` x ``depth`` metre room with square cells of ``cell`` metres.

    Args:
        standing_limit: a part whose bottom is below this height (metres) stands on the floor.
        gap: clearance kept between objects, horizontally and vertically (metres).
    """

    def __init__(
        self, width: float, depth: float, cell: float, standing_limit: float, gap: float
    ) -> None:
        self.width, self.depth, self.cell = width, depth, cell
        self.standing_limit, self.gap = standing_limit, gap
        shape = (int(np.ceil(width / cell)), int(np.ceil(depth / cell)))
        self.standing_top: Float[np.ndarray, "gx gy"] = np.zeros(shape)
        self.hanging_bottom: Float[np.ndarray, "gx gy"] = np.full(shape, np.inf)
        self.obstacle: Bool[np.ndarray, "gx gy"] = np.zeros(shape, dtype=bool)
        self.xs = (np.arange(shape[0]) + 0.5) * cell
        self.ys = (np.arange(shape[1]) + 0.5) * cell

    def _cover(
        self, foot: PartFootprint, grow: float
    ) -> tuple[tuple[slice, slice], Bool[np.ndarray, "a b"]]:
        """Grid window and mask of the cells whose centre lies in the grown rectangle."""
        cos, sin = np.cos(foot.yaw), np.sin(foot.yaw)
        hx, hy = foot.half[0] + grow, foot.half[1] + grow
        reach_x, reach_y = abs(cos) * hx + abs(sin) * hy, abs(sin) * hx + abs(cos) * hy
        cx, cy = foot.center
        i0, i1 = np.searchsorted(self.xs, [cx - reach_x, cx + reach_x])
        j0, j1 = np.searchsorted(self.ys, [cy - reach_y, cy + reach_y])
        dx = self.xs[i0:i1, None] - cx
        dy = self.ys[None, j0:j1] - cy
        inside = (np.abs(cos * dx + sin * dy) <= hx) & (np.abs(-sin * dx + cos * dy) <= hy)
        return (slice(i0, i1), slice(j0, j1)), inside

    def inside_room(self, feet: list[PartFootprint]) -> bool:
        """Every part's rectangle lies inside the walls."""
        for foot in feet:
            cos, sin = abs(np.cos(foot.yaw)), abs(np.sin(foot.yaw))
            rx = cos * foot.half[0] + sin * foot.half[1]
            ry = sin * foot.half[0] + cos * foot.half[1]
            x, y = foot.center
            if x - rx < 0 or y - ry < 0 or x + rx > self.width or y + ry > self.depth:
                return False
        return True

    def fits(self, feet: list[PartFootprint]) -> bool:
        """The object is inside the room and clear of everything placed so far."""
        if not self.inside_room(feet):
            return False
        for foot in feet:
            window, inside = self._cover(foot, self.gap)
            if foot.z0 < self.standing_limit:
                blocked = self.hanging_bottom[window] < foot.z1 + self.gap
                blocked |= self.standing_top[window] > 0
            else:
                blocked = self.standing_top[window] > foot.z0 - self.gap
                blocked |= self.hanging_bottom[window] < foot.z1 + self.gap
            if np.any(blocked & inside):
                return False
        return True

    def add(self, feet: list[PartFootprint], obstacle: bool = True) -> None:
        """Record the parts; ``obstacle=False`` reserves floor the camera may still use (a door's
        swing)."""
        for foot in feet:
            # Half a cell of growth makes thin parts (pictures, doors) cover at least one cell.
            window, inside = self._cover(foot, 0.5 * self.cell)
            if foot.z0 < self.standing_limit:
                top = np.where(inside, foot.z1, 0.0)
                self.standing_top[window] = np.maximum(self.standing_top[window], top)
            else:
                bottom = np.where(inside, foot.z0, np.inf)
                self.hanging_bottom[window] = np.minimum(self.hanging_bottom[window], bottom)
            if obstacle:
                self.obstacle[window] |= inside
