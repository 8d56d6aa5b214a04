"""Object parts in an object's own frame, and the objects built from them.

Object frame: x across the object, y from its front (-y) to its back (+y, the side that goes
against a wall), z up from the floor (z = 0); metres. ``finish`` recentres the parts so the
footprint rectangle is centred on the origin.
"""

from dataclasses import dataclass, replace

from gsnerf.data.synthetic.materials import Material
from gsnerf.data.synthetic.primitives import ShapeKind


@dataclass(frozen=True)
class Part:
    """One primitive of an object, in the object frame."""

    kind: ShapeKind
    # Centre, metres, object frame.
    center: tuple[float, float, float]
    # Box half extents, or (radius, radius, half height) for a cylinder; metres.
    half_size: tuple[float, float, float]
    # Raw ScanNet category name of the part (a bed's pillows are "pillow").
    category: str
    material: Material
    # Extra rotation about z relative to the object, radians.
    yaw: float = 0.0


@dataclass(frozen=True)
class Furniture:
    """An object ready to be placed: parts and the footprint they cover."""

    name: str
    parts: tuple[Part, ...]
    # Footprint half extents along the object's x and y, metres.
    half_width: float
    half_depth: float
    # Top of the highest part, metres above the floor.
    height: float


def box(x0, x1, y0, y1, z0, z1, category: str, material: Material, yaw: float = 0.0) -> Part:
    """Box part from its extents along x, y and z (metres, object frame)."""
    center = (0.5 * (x0 + x1), 0.5 * (y0 + y1), 0.5 * (z0 + z1))
    half = (0.5 * abs(x1 - x0), 0.5 * abs(y1 - y0), 0.5 * abs(z1 - z0))
    return Part(
        ShapeKind.BOX,
        tuple(map(float, center)),
        tuple(map(float, half)),
        category,
        material,
        float(yaw),
    )


def cylinder(x, y, radius, z0, z1, category: str, material: Material) -> Part:
    """Vertical cylinder part of ``radius`` between heights ``z0`` and ``z1``."""
    center = (float(x), float(y), float(0.5 * (z0 + z1)))
    half = (float(radius), float(radius), float(0.5 * abs(z1 - z0)))
    return Part(ShapeKind.CYLINDER, center, half, category, material)


def with_axis(material: Material, axis: int) -> Material:
    """The same material (colours, seed) with its grain along ``axis`` and no panels."""
    return replace(material, axis=axis, panels=(0, 0))


def handles(
    x0: float,
    x1: float,
    z0: float,
    z1: float,
    front: float,
    grid: tuple[int, int],
    category: str,
    material: Material,
) -> list[Part]:
    """Handles on the front face ``y = front`` of a panel grid spanning [x0, x1] x [z0, z1].

    Drawers (one column, several rows) get a horizontal bar in each drawer's middle; doors get a
    vertical bar beside each door's inner edge.
    """
    columns, rows = grid
    width, height = (x1 - x0) / columns, (z1 - z0) / rows
    parts = []
    for column in range(columns):
        for row in range(rows):
            cx = x0 + (column + 0.5) * width
            cz = z0 + (row + 0.5) * height
            if columns == 1 and rows > 1:
                parts.append(
                    box(
                        cx - 0.06,
                        cx + 0.06,
                        front - 0.025,
                        front,
                        cz - 0.01,
                        cz + 0.01,
                        category,
                        material,
                    )
                )
                continue
            side = 1.0 if column % 2 == 0 else -1.0
            hx = cx + side * (0.5 * width - 0.05) if columns > 1 else x0 + width - 0.05
            bar = min(0.12, 0.3 * height)
            parts.append(
                box(
                    hx - 0.01,
                    hx + 0.01,
                    front - 0.025,
                    front,
                    cz - bar,
                    cz + bar,
                    category,
                    material,
                )
            )
    return parts


def finish(name: str, parts: list[Part]) -> Furniture:
    """Recentre ``parts`` on their footprint and measure it."""
    xs0 = [p.center[0] - _reach(p, 0) for p in parts]
    xs1 = [p.center[0] + _reach(p, 0) for p in parts]
    ys0 = [p.center[1] - _reach(p, 1) for p in parts]
    ys1 = [p.center[1] + _reach(p, 1) for p in parts]
    mid_x, mid_y = 0.5 * (min(xs0) + max(xs1)), 0.5 * (min(ys0) + max(ys1))
    moved = tuple(
        replace(p, center=(p.center[0] - mid_x, p.center[1] - mid_y, p.center[2])) for p in parts
    )
    top = max(p.center[2] + p.half_size[2] for p in parts)
    return Furniture(
        name, moved, 0.5 * (max(xs1) - min(xs0)), 0.5 * (max(ys1) - min(ys0)), float(top)
    )


def _reach(part: Part, axis: int) -> float:
    """Half extent of a part's footprint along the object's x (0) or y (1)."""
    if part.yaw == 0.0 or part.kind == ShapeKind.CYLINDER:
        return part.half_size[axis]
    # A rotated box reaches its half diagonal at most.
    return float((part.half_size[0] ** 2 + part.half_size[1] ** 2) ** 0.5)
