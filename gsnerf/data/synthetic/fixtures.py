"""Wall fixtures, kitchen and bathroom objects of the synthetic rooms.

Same conventions as furniture.py: object frame with the front at -y and the wall side at +y.
Doors, windows (with their curtains) and pictures are thin boxes proud of the wall.
"""

import numpy as np

from gsnerf.data.synthetic.materials import Family, MaterialSampler
from gsnerf.data.synthetic.parts import Furniture, Part, box, cylinder, finish, handles, with_axis


def door(rng: np.random.Generator, ms: MaterialSampler) -> Furniture:
    """Door leaf with panels and a lever handle, in a frame (the frame is labelled doorframe)."""
    width, height = rng.uniform(0.78, 0.95), rng.uniform(1.98, 2.1)
    grid = [(0, 0), (1, 2), (2, 3), (1, 1)][int(rng.integers(4))]
    leaf = ms.wood_or_paint(axis=1, panels=grid, p_wood=0.5)
    frame = with_axis(leaf, 2) if rng.random() < 0.5 else ms.paint(axis=2)
    x, wall = width / 2, 0.05
    side = 1.0 if rng.random() < 0.5 else -1.0
    hx = side * (x - 0.08)
    return finish(
        "door",
        [
            box(-x, x, 0.012, wall, 0.0, height, "door", leaf),
            box(-x - 0.06, -x, 0.0, wall, 0.0, height + 0.06, "doorframe", frame),
            box(x, x + 0.06, 0.0, wall, 0.0, height + 0.06, "doorframe", frame),
            box(-x, x, 0.0, wall, height, height + 0.06, "doorframe", frame),
            cylinder(hx, -0.015, 0.025, 0.98, 1.06, "door", ms.metal()),
            box(hx, hx - side * 0.13, -0.045, -0.025, 1.01, 1.03, "door", ms.metal(axis=0)),
        ],
    )


def window(
    rng: np.random.Generator, ms: MaterialSampler, room_height: float, curtains: bool
) -> Furniture:
    """Glazed window with sill and, optionally, curtains of vertical folds on one or both sides."""
    width = rng.uniform(0.8, 1.8)
    sill = rng.uniform(0.8, 1.0)
    top = min(room_height - 0.2, sill + rng.uniform(1.0, 1.5))
    columns, rows = max(1, int(round(width / rng.uniform(0.5, 0.9)))), int(rng.integers(1, 3))
    x, wall = width / 2, 0.12
    frame_mat = ms.paint(axis=0)
    parts = [
        box(-x, x, wall - 0.03, wall, sill, top, "window", ms.glass(1, columns, rows)),
        box(-x - 0.05, x + 0.05, 0.0, wall, sill - 0.03, sill, "window", frame_mat),
    ]
    if curtains:
        parts += _curtains(rng, ms, x, sill, top, room_height, wall)
    return finish("window", parts)


def _curtains(
    rng: np.random.Generator,
    ms: MaterialSampler,
    x: float,
    sill: float,
    top: float,
    room_height: float,
    wall: float,
) -> list[Part]:
    """Folds (touching vertical cylinders) beside the window, down to the floor or the sill."""
    cloth = ms.fabric(axis=0)
    radius = rng.uniform(0.035, 0.06)
    folds = int(rng.integers(3, 7))
    z1 = min(room_height - 0.03, top + rng.uniform(0.05, 0.25))
    z0 = 0.02 if rng.random() < 0.7 else sill - 0.15
    y = wall - 0.07 - radius
    sides = (-1.0, 1.0) if rng.random() < 0.7 else ((-1.0,) if rng.random() < 0.5 else (1.0,))
    parts = []
    for side in sides:
        # Folds start just over the window edge and spread outwards.
        for k in range(folds):
            cx = side * (x - radius + k * 1.6 * radius)
            offset = radius * 0.35 * (k % 2)
            parts.append(cylinder(cx, y - offset, radius, z0, z1, "curtain", cloth))
    return parts


def picture(rng: np.random.Generator, ms: MaterialSampler) -> Furniture:
    """Framed picture: a thin box whose front shows the painting (frame colour on its sides)."""
    width, height, thick = rng.uniform(0.3, 1.0), rng.uniform(0.25, 0.8), rng.uniform(0.02, 0.04)
    z0 = rng.uniform(1.2, 1.7) - height / 2 + 0.2
    return finish(
        "picture",
        [box(-width / 2, width / 2, 0.0, thick, z0, z0 + height, "picture", ms.painting(axis=1))],
    )


def refrigerator(rng: np.random.Generator, ms: MaterialSampler) -> Furniture:
    """Tall box with one or two doors and vertical handles; white, steel or black."""
    width, depth, height = rng.uniform(0.6, 0.9), rng.uniform(0.62, 0.75), rng.uniform(1.65, 1.95)
    grid = (1, int(rng.integers(1, 3)))
    roll = rng.random()
    if roll < 0.5:
        body = ms.enamel(panels=grid)
    elif roll < 0.9:
        body = ms.make(Family.METAL, ms.metal().colors, 0.02, 1, grid)
    else:
        body = ms.paint(axis=1, panels=grid)
    x, y = width / 2, depth / 2
    parts = [
        box(-x, x, -y, y, 0.02, height, "refrigerator", body),
        box(-x + 0.02, x - 0.02, -y + 0.04, y, 0.0, 0.02, "refrigerator", ms.metal()),
    ]
    parts += handles(-x, x, 0.02, height, -y, (1, 1), "refrigerator", ms.metal())
    if grid[1] == 2:
        parts += handles(
            -x, x, 0.02, 0.02 + (height - 0.02) / 2, -y, (1, 1), "refrigerator", ms.metal()
        )
    return finish("refrigerator", parts)


def toilet(rng: np.random.Generator, ms: MaterialSampler) -> Furniture:
    """Tank (box) + bowl and foot (cylinders) + seat ring (flat cylinder)."""
    china = ms.enamel()
    tank_w, tank_d, radius = rng.uniform(0.36, 0.45), rng.uniform(0.16, 0.2), rng.uniform(0.17, 0.2)
    bowl_y = -tank_d - radius + 0.06
    seat = china if rng.random() < 0.7 else ms.paint()
    return finish(
        "toilet",
        [
            box(
                -tank_w / 2, tank_w / 2, -tank_d, 0.0, 0.4, rng.uniform(0.75, 0.82), "toilet", china
            ),
            cylinder(0.0, bowl_y, 0.12, 0.0, 0.2, "toilet", china),
            cylinder(0.0, bowl_y, radius, 0.2, 0.39, "toilet", china),
            cylinder(0.0, bowl_y - 0.01, radius + 0.01, 0.39, 0.42, "toilet", seat),
        ],
    )


def _basin(
    rng: np.random.Generator, ms: MaterialSampler, z: float, width: float, depth: float
) -> list[Part]:
    """Sink top at height ``z``: rim slab, darker bowl inset and a faucet at the back."""
    china = ms.enamel() if rng.random() < 0.7 else ms.metal()
    inner = ms.make(china.family, (ms.darker(china.colors[0], 0.78),), china.scale, china.axis)
    x, y = width / 2, depth / 2
    tap = ms.metal()
    return [
        box(-x, x, -y, y, z - 0.14, z, "sink", china),
        box(-x + 0.05, x - 0.05, -y + 0.05, y - 0.1, z, z + 0.004, "sink", inner),
        cylinder(0.0, y - 0.05, 0.015, z, z + 0.16, "sink", tap),
        box(-0.012, 0.012, y - 0.17, y - 0.05, z + 0.14, z + 0.16, "sink", tap),
    ]


def bathroom_sink(rng: np.random.Generator, ms: MaterialSampler) -> Furniture:
    """Pedestal sink, or a basin on a vanity cabinet (the cabinet keeps its own label)."""
    width, depth, top = rng.uniform(0.5, 0.65), rng.uniform(0.4, 0.5), rng.uniform(0.82, 0.88)
    parts = _basin(rng, ms, top, width, depth)
    if rng.random() < 0.5:
        parts.append(cylinder(0.0, 0.0, 0.09, 0.0, top - 0.14, "sink", parts[0].material))
        return finish("sink", parts)
    body = ms.wood_or_paint(axis=1, panels=(2, 1), p_wood=0.5)
    x, y, z1 = width / 2, depth / 2, top - 0.14
    parts += [
        box(-x + 0.01, x - 0.01, -y + 0.01, y, 0.08, z1, "cabinet", body),
        box(-x + 0.04, x - 0.04, -y + 0.06, y, 0.0, 0.08, "cabinet", with_axis(body, 0)),
    ]
    parts += handles(-x + 0.01, x - 0.01, 0.08, z1, -y + 0.01, (2, 1), "cabinet", ms.metal(axis=0))
    return finish("sink", parts)


def bathtub(rng: np.random.Generator, ms: MaterialSampler) -> Furniture:
    """Enamel tub: outer box, darker inner basin inset on top, faucet at one end."""
    length, width, height = rng.uniform(1.5, 1.75), rng.uniform(0.7, 0.8), rng.uniform(0.5, 0.6)
    china = ms.enamel()
    inner = ms.make(Family.ENAMEL, (ms.darker(china.colors[0], 0.8),), 1.0, 1)
    x, y = length / 2, width / 2
    end = 1.0 if rng.random() < 0.5 else -1.0
    parts = [
        box(-x, x, -y, y, 0.0, height, "bathtub", china),
        box(-x + 0.08, x - 0.08, -y + 0.07, y - 0.07, height, height + 0.004, "bathtub", inner),
        cylinder(end * (x - 0.04), 0.0, 0.02, height, height + 0.18, "bathtub", ms.metal()),
    ]
    if rng.random() < 0.35:
        # Shower curtain drawn over part of the tub's open side, folds hanging from a rail.
        cloth, radius = ms.fabric(axis=0), rng.uniform(0.025, 0.04)
        folds = int(rng.uniform(0.25, 0.6) * length / (1.6 * radius))
        for k in range(folds):
            cx = -end * (x - radius - 1.6 * radius * k)
            parts.append(
                cylinder(
                    cx,
                    -y + 0.05 + 0.3 * radius * (k % 2),
                    radius,
                    height + 0.1,
                    rng.uniform(1.95, 2.05),
                    "shower curtain",
                    cloth,
                )
            )
    return finish("bathtub", parts)


def counter(
    rng: np.random.Generator, ms: MaterialSampler, length: float, room_height: float
) -> Furniture:
    """Kitchen run: base cabinets (kitchen cabinets) under a worktop (counter), optional inset
    sink and wall cabinets above (kitchen cabinets)."""
    depth, height = rng.uniform(0.58, 0.66), rng.uniform(0.88, 0.92)
    doors = max(1, int(round(length / 0.5)))
    fronts = ms.wood_or_paint(axis=1, panels=(doors, 1), p_wood=0.5)
    top_mat = ms.stone() if rng.random() < 0.6 else ms.wood()
    x, y, slab = length / 2, depth / 2, rng.uniform(0.03, 0.045)
    parts = [
        box(-x, x, -y + 0.02, y, 0.1, height - slab, "kitchen cabinets", fronts),
        box(-x, x, -y + 0.07, y, 0.0, 0.1, "kitchen cabinets", with_axis(fronts, 0)),
        box(-x, x, -y, y, height - slab, height, "counter", top_mat),
    ]
    parts += handles(
        -x, x, 0.1, height - slab, -y + 0.02, (doors, 1), "kitchen cabinets", ms.metal(axis=0)
    )
    if rng.random() < 0.6 and length > 1.2:
        sx = rng.uniform(-x + 0.4, x - 0.4)
        steel = ms.metal()
        parts += [
            box(sx - 0.3, sx + 0.3, -y + 0.08, y - 0.08, height, height + 0.004, "sink", steel),
            cylinder(sx, y - 0.05, 0.015, height, height + 0.25, "sink", steel),
            box(
                sx - 0.012,
                sx + 0.012,
                y - 0.2,
                y - 0.05,
                height + 0.22,
                height + 0.25,
                "sink",
                steel,
            ),
        ]
    if rng.random() < 0.6:
        z0, z1 = 1.45, min(room_height - 0.05, rng.uniform(2.1, 2.3))
        upper = ms.make(fronts.family, fronts.colors, fronts.scale, 1, (doors, 1))
        parts.append(box(-x, x, y - 0.35, y, z0, z1, "kitchen cabinets", upper))
        parts += handles(-x, x, z0, z1, y - 0.35, (doors, 1), "kitchen cabinets", ms.metal(axis=0))
    return finish("counter", parts)
