"""Beds, tables, seats and their companions in the synthetic rooms, built from several primitives.

Every builder draws its sizes (metres, typical real-world ranges) and per-instance materials
from the shared palettes and returns a :class:`Furniture` in its own frame (front at -y).
"""

import numpy as np

from gsnerf.data.synthetic.materials import FABRICS, Family, MaterialSampler
from gsnerf.data.synthetic.parts import (
    Furniture,
    Part,
    box,
    cylinder,
    finish,
    handles,
    with_axis,
)


def bed(rng: np.random.Generator, ms: MaterialSampler) -> Furniture:
    """Frame + mattress + blanket + headboard (+ pillows, labelled pillow)."""
    width = float(rng.choice([0.9, 1.4, 1.6, 1.8])) + rng.uniform(-0.05, 0.05)
    length, frame_h = rng.uniform(1.95, 2.15), rng.uniform(0.25, 0.4)
    frame = ms.wood_or_paint(axis=1)
    sheet = ms.make(Family.FABRIC, (ms.color(FABRICS[2:4] + FABRICS[10:11]),), 0.025)
    blanket = ms.fabric(axis=0)
    x, y = width / 2, length / 2
    top = frame_h + 0.22
    parts = [
        box(-x, x, -y, y, 0.0, frame_h, "bed", frame),
        box(-x + 0.03, x - 0.03, -y + 0.03, y - 0.03, frame_h, top, "bed", sheet),
        box(
            -x - 0.02,
            x + 0.02,
            -y - 0.02,
            -y + 0.65 * length,
            frame_h - 0.08,
            top + 0.03,
            "bed",
            blanket,
        ),
        box(
            -x - 0.04,
            x + 0.04,
            y,
            y + 0.06,
            0.0,
            rng.uniform(0.9, 1.2),
            "bed",
            with_axis(frame, 0) if rng.random() < 0.6 else ms.upholstery(),
        ),
    ]
    pillow = ms.fabric()
    count = 2 if width > 1.2 else 1
    for i in range(count):
        cx = -x + (i + 0.5) * width / count
        parts.append(
            box(
                cx - 0.3 * width / count,
                cx + 0.3 * width / count,
                y - 0.45,
                y - 0.08,
                top,
                top + 0.13,
                "pillow",
                pillow,
            )
        )
    return finish("bed", parts)


def nightstand(rng: np.random.Generator, ms: MaterialSampler) -> Furniture:
    """Small chest of drawers with handles and, often, a lamp on top."""
    width, depth, height = rng.uniform(0.4, 0.55), rng.uniform(0.35, 0.45), rng.uniform(0.5, 0.65)
    grid = (1, int(rng.integers(1, 3)))
    body = ms.wood_or_paint(axis=1, panels=grid)
    x, y = width / 2, depth / 2
    parts = [box(-x, x, -y, y, 0.0, height, "nightstand", body)]
    parts += handles(-x, x, 0.0, height, -y, grid, "nightstand", ms.metal(axis=0))
    if rng.random() < 0.7:
        parts += lamp_parts(rng, ms, 0.0, 0.0, height)
    return finish("nightstand", parts)


def lamp_parts(
    rng: np.random.Generator, ms: MaterialSampler, x: float, y: float, z: float
) -> list[Part]:
    """Table lamp standing at (x, y, z): base, stem and fabric shade."""
    stem = ms.metal()
    shade_r, stem_h = rng.uniform(0.1, 0.15), rng.uniform(0.2, 0.3)
    return [
        cylinder(x, y, 0.07, z, z + 0.03, "lamp", stem),
        cylinder(x, y, 0.012, z + 0.03, z + stem_h, "lamp", stem),
        cylinder(
            x,
            y,
            shade_r,
            z + stem_h,
            z + stem_h + rng.uniform(0.15, 0.22),
            "lamp",
            ms.plaster(FABRICS[2:4] + FABRICS[10:11]),
        ),
    ]


def table(rng: np.random.Generator, ms: MaterialSampler, coffee: bool = False) -> Furniture:
    """Top slab + four legs, or a round top on a pedestal; coffee tables are lower."""
    category = "coffee table" if coffee else "table"
    roll = rng.random()
    top_mat = ms.wood() if roll < 0.6 else (ms.stone() if roll < 0.8 else ms.paint())
    leg_mat = with_axis(top_mat, 2) if rng.random() < 0.6 else ms.metal()
    height = rng.uniform(0.38, 0.48) if coffee else rng.uniform(0.72, 0.77)
    thick = rng.uniform(0.025, 0.05)
    if not coffee and rng.random() < 0.25:
        radius = rng.uniform(0.45, 0.6)
        return finish(
            category,
            [
                cylinder(0.0, 0.0, radius, height - thick, height, category, top_mat),
                cylinder(0.0, 0.0, 0.05, 0.03, height - thick, category, leg_mat),
                cylinder(0.0, 0.0, 0.25, 0.0, 0.03, category, leg_mat),
            ],
        )
    if coffee:
        width, depth = rng.uniform(0.8, 1.3), rng.uniform(0.45, 0.7)
    else:
        width, depth = rng.uniform(0.8, 1.8), rng.uniform(0.65, 1.0)
    x, y, leg = width / 2, depth / 2, rng.uniform(0.035, 0.07)
    inset = rng.uniform(0.02, 0.08)
    parts = [box(-x, x, -y, y, height - thick, height, category, top_mat)]
    for sx in (-1, 1):
        for sy in (-1, 1):
            lx, ly = sx * (x - inset - leg / 2), sy * (y - inset - leg / 2)
            parts.append(
                box(
                    lx - leg / 2,
                    lx + leg / 2,
                    ly - leg / 2,
                    ly + leg / 2,
                    0.0,
                    height - thick,
                    category,
                    leg_mat,
                )
            )
    if coffee and rng.random() < 0.5:
        parts.append(
            box(-x + inset, x - inset, -y + inset, y - inset, 0.12, 0.14, category, top_mat)
        )
    return finish(category, parts)


def chair(rng: np.random.Generator, ms: MaterialSampler) -> Furniture:
    """Dining chair (seat, back, legs, optional cushion) or office chair (star base, stem)."""
    if rng.random() < 0.3:
        return _office_chair(rng, ms)
    width, depth = rng.uniform(0.42, 0.5), rng.uniform(0.42, 0.5)
    seat_h, seat_t = rng.uniform(0.43, 0.48), rng.uniform(0.03, 0.05)
    back_h, leg = rng.uniform(0.38, 0.5), rng.uniform(0.03, 0.045)
    frame = ms.wood() if rng.random() < 0.6 else (ms.metal() if rng.random() < 0.5 else ms.paint())
    x, y = width / 2, depth / 2
    parts = [
        box(-x, x, -y, y, seat_h - seat_t, seat_h, "chair", frame),
        box(-x, x, y - 0.03, y, seat_h, seat_h + back_h, "chair", with_axis(frame, 0)),
    ]
    for sx in (-1, 1):
        for sy in (-1, 1):
            lx, ly = sx * (x - leg / 2), sy * (y - leg / 2)
            parts.append(
                box(
                    lx - leg / 2,
                    lx + leg / 2,
                    ly - leg / 2,
                    ly + leg / 2,
                    0.0,
                    seat_h - seat_t,
                    "chair",
                    with_axis(frame, 2),
                )
            )
    if rng.random() < 0.5:
        parts.append(
            box(
                -x + 0.02,
                x - 0.02,
                -y + 0.02,
                y - 0.04,
                seat_h,
                seat_h + 0.04,
                "chair",
                ms.upholstery(),
            )
        )
    return finish("chair", parts)


def _office_chair(rng: np.random.Generator, ms: MaterialSampler) -> Furniture:
    cover, frame = ms.upholstery(p_leather=0.4), ms.metal()
    seat_h, width = rng.uniform(0.45, 0.52), rng.uniform(0.46, 0.54)
    x = width / 2
    parts = [
        box(-0.3, 0.3, -0.025, 0.025, 0.03, 0.07, "office chair", frame, yaw=np.pi / 4),
        box(-0.3, 0.3, -0.025, 0.025, 0.03, 0.07, "office chair", frame, yaw=-np.pi / 4),
        cylinder(0.0, 0.0, 0.025, 0.07, seat_h - 0.08, "office chair", frame),
        box(-x, x, -x, x, seat_h - 0.08, seat_h, "office chair", cover),
        box(
            -x + 0.02,
            x - 0.02,
            x - 0.02,
            x + 0.05,
            seat_h + 0.05,
            seat_h + rng.uniform(0.4, 0.6),
            "office chair",
            cover,
        ),
    ]
    return finish("office chair", parts)


def sofa(rng: np.random.Generator, ms: MaterialSampler) -> Furniture:
    """Base + seat cushions + back + two arms on short legs."""
    width, depth = rng.uniform(1.5, 2.4), rng.uniform(0.82, 0.98)
    seat_h, back_top = rng.uniform(0.42, 0.47), rng.uniform(0.78, 0.92)
    arm_w, arm_h, back_t = rng.uniform(0.12, 0.22), rng.uniform(0.56, 0.68), rng.uniform(0.15, 0.22)
    cover, legs = ms.upholstery(axis=0), with_axis(ms.wood(), 2)
    x, y, base = width / 2, depth / 2, 0.08
    parts = [
        box(-x + arm_w, x - arm_w, -y, y - back_t, base, seat_h - 0.1, "couch", cover),
        box(-x, x, y - back_t, y, base, back_top, "couch", cover),
        box(-x, -x + arm_w, -y, y - back_t, base, arm_h, "couch", cover),
        box(x - arm_w, x, -y, y - back_t, base, arm_h, "couch", cover),
    ]
    seats = int(rng.integers(2, 4))
    inner = (width - 2 * arm_w) / seats
    for i in range(seats):
        x0 = -x + arm_w + i * inner
        parts.append(
            box(
                x0 + 0.005,
                x0 + inner - 0.005,
                -y + 0.01,
                y - back_t,
                seat_h - 0.1,
                seat_h,
                "couch",
                cover,
            )
        )
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(cylinder(sx * (x - 0.06), sy * (y - 0.06), 0.02, 0.0, base, "couch", legs))
    return finish("couch", parts)


def ottoman(rng: np.random.Generator, ms: MaterialSampler) -> Furniture:
    """Upholstered footstool (other furniture): a box or a drum."""
    cover, height = ms.upholstery(), rng.uniform(0.38, 0.46)
    if rng.random() < 0.4:
        return finish(
            "ottoman", [cylinder(0.0, 0.0, rng.uniform(0.25, 0.35), 0.0, height, "ottoman", cover)]
        )
    x, y = rng.uniform(0.22, 0.4), rng.uniform(0.22, 0.4)
    return finish(
        "ottoman",
        [
            box(-x, x, -y, y, 0.04, height, "ottoman", cover),
            box(-x + 0.03, x - 0.03, -y + 0.03, y - 0.03, 0.0, 0.04, "ottoman", ms.wood()),
        ],
    )
