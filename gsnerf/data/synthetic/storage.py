"""Storage furniture and work surfaces of the synthetic rooms: cabinets, bookshelves, desks,
TV stands and cardboard boxes, each built from several primitives.

Same conventions as furniture.py: sizes in metres from typical real-world ranges, per-instance
materials from the shared palettes, object frame with the front at -y.
"""

import numpy as np

from gsnerf.data.synthetic.furniture import lamp_parts
from gsnerf.data.synthetic.materials import Family, MaterialSampler
from gsnerf.data.synthetic.parts import Furniture, box, finish, handles, with_axis


def cabinet(
    rng: np.random.Generator,
    ms: MaterialSampler,
    tall: bool | None = None,
    category: str = "cabinet",
) -> Furniture:
    """Cabinet body with door or drawer panels, handles and a recessed plinth."""
    tall = rng.random() < 0.4 if tall is None else tall
    width = rng.uniform(0.8, 1.6) if tall else rng.uniform(0.5, 1.2)
    depth = rng.uniform(0.45, 0.62) if tall else rng.uniform(0.38, 0.55)
    height = rng.uniform(1.7, 2.1) if tall else rng.uniform(0.75, 1.05)
    columns = max(1, int(round(width / 0.45)))
    grid = (columns, 1) if tall or rng.random() < 0.6 else (1, int(rng.integers(2, 5)))
    body = ms.wood_or_paint(axis=1, panels=grid, p_wood=0.5)
    x, y = width / 2, depth / 2
    parts = [
        box(-x, x, -y, y, 0.08, height, category, body),
        box(-x + 0.03, x - 0.03, -y + 0.05, y, 0.0, 0.08, category, with_axis(body, 0)),
    ]
    parts += handles(-x, x, 0.08, height, -y, grid, category, ms.metal(axis=0))
    return finish(category, parts)


def bookshelf(rng: np.random.Generator, ms: MaterialSampler) -> Furniture:
    """Frame (sides, top, plinth, back) + shelves, with rows of books (labelled book)."""
    width, depth, height = rng.uniform(0.6, 1.2), rng.uniform(0.28, 0.38), rng.uniform(1.2, 2.1)
    board = rng.uniform(0.018, 0.03)
    wood = ms.wood_or_paint(axis=0)
    x, y = width / 2, depth / 2
    parts = [
        box(-x, -x + board, -y, y, 0.0, height, "bookshelf", with_axis(wood, 2)),
        box(x - board, x, -y, y, 0.0, height, "bookshelf", with_axis(wood, 2)),
        box(-x + board, x - board, -y, y, height - board, height, "bookshelf", wood),
        box(-x + board, x - board, -y, y, 0.0, 0.07, "bookshelf", wood),
        box(-x + board, x - board, y - 0.01, y, 0.07, height - board, "bookshelf", wood),
    ]
    shelves = max(2, int(round((height - 0.1) / rng.uniform(0.3, 0.38))))
    gap = (height - 0.07 - board) / shelves
    inner = width - 2 * board
    for i in range(shelves):
        z0 = 0.07 + i * gap
        if i > 0:
            parts.append(
                box(-x + board, x - board, -y, y - 0.01, z0 - board, z0, "bookshelf", wood)
            )
        if rng.random() < 0.75:
            fill = rng.uniform(0.35, 0.95) * inner
            start = -x + board + rng.uniform(0.0, inner - fill)
            tall = rng.uniform(0.55, 0.85) * (gap - board)
            parts.append(
                box(
                    start,
                    start + fill,
                    y - 0.01 - rng.uniform(0.6, 0.9) * depth,
                    y - 0.012,
                    z0,
                    z0 + tall,
                    "book",
                    ms.books(),
                )
            )
    return finish("bookshelf", parts)


def desk(rng: np.random.Generator, ms: MaterialSampler) -> Furniture:
    """Top + drawer pedestal on one side + legs or a panel on the other (+ monitor, lamp)."""
    width, depth = rng.uniform(1.0, 1.6), rng.uniform(0.55, 0.75)
    height, thick = rng.uniform(0.72, 0.76), rng.uniform(0.025, 0.04)
    top = ms.wood_or_paint(axis=0)
    x, y = width / 2, depth / 2
    side = 1.0 if rng.random() < 0.5 else -1.0
    grid = (1, int(rng.integers(2, 4)))
    drawers = ms.make(top.family, top.colors, top.scale, 1, grid)
    px0, px1 = sorted((side * x, side * (x - 0.42)))
    parts = [
        box(-x, x, -y, y, height - thick, height, "desk", top),
        box(px0, px1, -y + 0.02, y, 0.0, height - thick, "desk", drawers),
    ]
    parts += handles(px0, px1, 0.0, height - thick, -y + 0.02, grid, "desk", ms.metal(axis=0))
    ox = -side * (x - 0.02)
    if rng.random() < 0.5:
        parts.append(
            box(
                ox - 0.02,
                ox + 0.02,
                -y + 0.03,
                y - 0.03,
                0.0,
                height - thick,
                "desk",
                with_axis(top, 2),
            )
        )
    else:
        leg = with_axis(top, 2) if rng.random() < 0.5 else ms.metal()
        for ly in (-y + 0.05, y - 0.05):
            parts.append(
                box(ox - 0.02, ox + 0.02, ly - 0.02, ly + 0.02, 0.0, height - thick, "desk", leg)
            )
    if rng.random() < 0.7:
        screen = ms.make(Family.METAL, ((0.08, 0.08, 0.09),), 0.02, 0)
        sw, sh = rng.uniform(0.45, 0.65), rng.uniform(0.28, 0.4)
        parts += [
            box(-sw / 2, sw / 2, 0.05, 0.08, height + 0.1, height + 0.1 + sh, "monitor", screen),
            box(-0.1, 0.1, 0.0, 0.15, height, height + 0.012, "monitor", screen),
            box(-0.02, 0.02, 0.08, 0.11, height, height + 0.15, "monitor", screen),
        ]
    if rng.random() < 0.4:
        parts += lamp_parts(rng, ms, -side * (x - 0.2), y - 0.15, height)
    return finish("desk", parts)


def tv_stand(rng: np.random.Generator, ms: MaterialSampler) -> Furniture:
    """Low wide cabinet (other furniture) with a television on top."""
    width, depth, height = rng.uniform(1.0, 1.8), rng.uniform(0.35, 0.45), rng.uniform(0.4, 0.6)
    grid = (int(rng.integers(2, 4)), 1)
    body = ms.wood_or_paint(axis=1, panels=grid)
    x, y = width / 2, depth / 2
    parts = [box(-x, x, -y, y, 0.05, height, "tv stand", body)]
    parts += handles(-x, x, 0.05, height, -y, grid, "tv stand", ms.metal(axis=0))
    for sx in (-1, 1):
        parts.append(
            box(
                sx * x,
                sx * (x - 0.03),
                -y + 0.02,
                y - 0.02,
                0.0,
                0.05,
                "tv stand",
                with_axis(body, 2),
            )
        )
    if rng.random() < 0.85:
        tv = ms.make(Family.METAL, ((0.06, 0.06, 0.07),), 0.02, 0)
        tw = min(width - 0.1, rng.uniform(0.9, 1.3))
        th = tw * 0.58
        parts += [
            box(-tw / 2, tw / 2, -0.03, 0.02, height + 0.08, height + 0.08 + th, "tv", tv),
            box(-0.15, 0.15, -0.1, 0.1, height, height + 0.015, "tv", tv),
            box(-0.03, 0.03, -0.01, 0.03, height, height + 0.1, "tv", tv),
        ]
    return finish("tv stand", parts)


def storage_box(rng: np.random.Generator, ms: MaterialSampler) -> Furniture:
    """Cardboard box on the floor (labelled box; a brown that overlaps wood)."""
    x, y, height = rng.uniform(0.15, 0.3), rng.uniform(0.12, 0.25), rng.uniform(0.2, 0.5)
    card = ms.make(Family.ENAMEL, (ms.color(((0.66, 0.50, 0.33), (0.58, 0.44, 0.29))),), 1.0)
    return finish("box", [box(-x, x, -y, y, 0.0, height, "box", card)])
