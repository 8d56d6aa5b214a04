"""Procedural albedo of every texture family, evaluated on 3-D surface points.

A surface point is given in two frames of its primitive: ``tex`` (world axes rotated by the
primitive's yaw, not centred, so the parts of one object share a continuous pattern) and
``local`` (centred on the primitive, used for patterns laid out on a face: panels, frames,
window mullions, paintings, book spines). Both are fixed on the surface, so each point has the
same albedo in every view.
"""

from dataclasses import dataclass

import numpy as np
from jaxtyping import Float, Int

from gsnerf.data.synthetic.materials import Family, Material, Rgb
from gsnerf.data.synthetic.noise import cell_noise, fractal_noise, hash_cells, value_noise

# Face index of a cylinder's curved side (box faces are 0, 1, 2: the axis of their normal).
SIDE_FACE = 3
# Width of grout lines, board seams and panel grooves, metres.
LINE_WIDTH = 0.004
# Inset of the groove of a door / drawer panel from the panel's edge, metres.
PANEL_INSET = 0.05
# Albedo factor inside a groove or seam.
GROOVE_SHADE = 0.55
# Cell of the fine speckle of paint and stone, metres (about a pixel at 1.5 m and 160 px).
SPECKLE_CELL = 0.015
# Period of the weave of striped and plaid fabrics, metres.
WEAVE_PERIOD = 0.025
# Colour of book pages seen from above.
PAGES = (0.88, 0.85, 0.76)


@dataclass
class SurfacePoints:
    """Points on the surface of primitives, in the two frames of their primitive."""

    tex: Float[np.ndarray, "n 3"]  # world point rotated by -yaw, metres
    local: Float[np.ndarray, "n 3"]  # point relative to the primitive centre, local axes, metres
    half: Float[np.ndarray, "n 3"]  # half size of the primitive, metres
    face: Int[np.ndarray, " n"]  # 0, 1, 2: box face normal axis; 3: cylinder side


def face_uv(
    points: Float[np.ndarray, "n 3"], face: Int[np.ndarray, " n"]
) -> tuple[Float[np.ndarray, " n"], Float[np.ndarray, " n"]]:
    """2-D coordinates on each point's face: the two axes other than the normal (x, y on the
    cylinder side, where ``u`` is the angle); ``v`` is vertical on vertical faces."""
    u = np.where(face == 0, points[:, 1], points[:, 0])
    v = np.where(face == 2, points[:, 1], points[:, 2])
    return u, v


def face_fraction(
    surface: SurfacePoints,
) -> tuple[Float[np.ndarray, " n"], Float[np.ndarray, " n"]]:
    """Position ``(s, t)`` in [0, 1]^2 across each point's face (``t`` up on vertical faces)."""
    u, v = face_uv(surface.local, surface.face)
    half_u, half_v = face_uv(surface.half, surface.face)
    return 0.5 + 0.5 * u / half_u, 0.5 + 0.5 * v / half_v


def _lerp(
    a: Rgb | np.ndarray, b: Rgb | np.ndarray, weight: Float[np.ndarray, " n"]
) -> Float[np.ndarray, "n 3"]:
    """``a + (b - a) w`` per point; ``a`` and ``b`` are colours or per-point colours."""
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    return a + (b - a) * weight[:, None]


def _shade(rgb: Rgb, factor: Float[np.ndarray, " n"]) -> Float[np.ndarray, "n 3"]:
    return np.asarray(rgb, dtype=np.float32) * factor[:, None]


def _stripes(coordinate: Float[np.ndarray, " n"], period: float) -> Float[np.ndarray, " n"]:
    """1 on the first half of each period, 0 on the second, with a 10 % soft edge."""
    phase = np.mod(coordinate / period, 1.0)
    return np.clip((0.5 - np.abs(phase - 0.5) - 0.2) / 0.1 + 0.5, 0.0, 1.0)


def _wood(tex: Float[np.ndarray, "n 3"], mat: Material, offset: float) -> Float[np.ndarray, "n 3"]:
    """Growth rings around a line along ``axis``, warped by noise and streaked along it."""
    a, b = [(mat.axis + k) % 3 for k in (1, 2)]
    # Noise stretched along the grain: (along, across) with across = tex_a + tex_b, which is
    # the across-grain coordinate on each face parallel to the grain.
    grain = np.stack([tex[:, mat.axis], tex[:, a] + tex[:, b]], axis=1)
    warp = fractal_noise(grain * np.array([1.0, 12.0], np.float32), mat.seed, octaves=2)
    radius = np.hypot(tex[:, a] + offset, tex[:, b] + 0.7 * offset) + 0.02 * warp
    ring = np.mod(radius / mat.scale, 1.0)
    band = (0.5 + 0.5 * np.cos(2 * np.pi * ring)) ** 3
    streak = value_noise(grain * np.array([5.0, 60.0], np.float32), mat.seed + 1)
    return _lerp(mat.colors[0], mat.colors[1], 0.7 * band + 0.3 * streak)


def _planks(tex: Float[np.ndarray, "n 3"], mat: Material) -> Float[np.ndarray, "n 3"]:
    """Floor boards of width ``scale`` along ``axis`` with staggered end joints and seams."""
    across, along = (tex[:, 1], tex[:, 0]) if mat.axis == 0 else (tex[:, 0], tex[:, 1])
    length = mat.params[0]
    row = np.floor(across / mat.scale)
    shift = hash_cells(row[:, None].astype(np.int64), mat.seed) * length
    column = np.floor((along + shift) / length)
    board = np.stack([row, column], axis=1).astype(np.int64)
    tone = 0.85 + 0.3 * hash_cells(board, mat.seed + 2)
    grain_mat = Material(Family.WOOD, mat.colors, 0.025, mat.axis, mat.seed)
    rgb = _wood(tex, grain_mat, 0.5 + 3.0 * float(mat.seed % 97) / 97.0) * tone[:, None]
    edge_across = np.abs(np.mod(across / mat.scale + 0.5, 1.0) - 0.5) * mat.scale
    edge_along = np.abs(np.mod((along + shift) / length + 0.5, 1.0) - 0.5) * length
    seam = (edge_across < LINE_WIDTH / 2) | (edge_along < LINE_WIDTH / 2)
    return rgb * np.where(seam, GROOVE_SHADE, 1.0)[:, None]


def _tiles(surface: SurfacePoints, mat: Material) -> Float[np.ndarray, "n 3"]:
    u, v = face_uv(surface.tex, surface.face)
    cells = np.stack([np.floor(u / mat.scale), np.floor(v / mat.scale), surface.face], axis=1)
    cells = cells.astype(np.int64)
    tone = 0.95 + 0.1 * hash_cells(cells, mat.seed)
    if mat.family == Family.TILES_CHECKER:
        odd = np.mod(cells[:, 0] + cells[:, 1], 2).astype(np.float32)
        rgb = _lerp(mat.colors[0], mat.colors[2], odd) * tone[:, None]
    else:
        rgb = _shade(mat.colors[0], tone)
    du = np.abs(np.mod(u / mat.scale + 0.5, 1.0) - 0.5) * mat.scale
    dv = np.abs(np.mod(v / mat.scale + 0.5, 1.0) - 0.5) * mat.scale
    grout = ((du < LINE_WIDTH) | (dv < LINE_WIDTH)).astype(np.float32)
    return rgb * (1 - grout[:, None]) + _shade(mat.colors[1], grout)


def _fabric(surface: SurfacePoints, mat: Material) -> Float[np.ndarray, "n 3"]:
    tex = surface.tex
    u, v = face_uv(tex, surface.face)
    # Plain weaves vary their period per instance; patterned ones use the common period.
    period = mat.scale if mat.family == Family.FABRIC else WEAVE_PERIOD
    weave = 0.94 + 0.06 * np.sin(2 * np.pi * u / period) * np.sin(2 * np.pi * v / period)
    mottle = 0.9 + 0.2 * fractal_noise(_uv(surface) * 3.0, mat.seed, octaves=2)
    if mat.family == Family.FABRIC:
        rgb = np.broadcast_to(np.asarray(mat.colors[0], np.float32), tex.shape)
    else:
        across = (mat.axis + 1) % 2
        mix = _stripes(tex[:, mat.axis], mat.scale)
        if mat.family == Family.FABRIC_PLAID:
            mix = 0.5 * (mix + _stripes(tex[:, across], mat.scale * 1.3))
        rgb = _lerp(mat.colors[0], mat.colors[1], mix)
    return rgb * (weave * mottle)[:, None]


def _glass(surface: SurfacePoints, mat: Material) -> Float[np.ndarray, "n 3"]:
    """Window: frame border and mullions around panes showing sky above a blurred outside."""
    s, t = face_fraction(surface)
    horizon, frame_width = mat.params
    u, v = face_uv(surface.local, surface.face)
    outside = fractal_noise(np.stack([u, v], axis=1) / mat.scale, mat.seed, octaves=3)
    ground = _lerp(mat.colors[2], mat.colors[3], outside)
    sky = _shade(mat.colors[0], 0.9 + 0.15 * (1.0 - np.clip((t - horizon) * 2, 0, 1)))
    skyline = horizon + 0.15 * (outside - 0.5)
    rgb = np.where((t > skyline)[:, None], sky, ground)
    columns, rows = mat.panels
    grid_s = np.abs(np.mod(s * columns + 0.5, 1.0) - 0.5) / columns
    grid_t = np.abs(np.mod(t * rows + 0.5, 1.0) - 0.5) / rows
    bar = (grid_s < frame_width / 3) | (grid_t < frame_width / 3)
    border = (np.minimum(s, 1 - s) < frame_width) | (np.minimum(t, 1 - t) < frame_width)
    frame = bar | border | (surface.face != mat.axis)
    return np.where(frame[:, None], np.asarray(mat.colors[1], np.float32), rgb)


def _painting(surface: SurfacePoints, mat: Material) -> Float[np.ndarray, "n 3"]:
    s, t = face_fraction(surface)
    frame_width = mat.params[0]
    rgb = _lerp(mat.colors[1], mat.colors[2], t)
    geometry = np.asarray(mat.params[1:]).reshape(-1, 3)
    for color, (cs, ct, radius) in zip(mat.colors[3:], geometry):
        weight = np.exp(-((s - cs) ** 2 + (t - ct) ** 2) / (radius * radius))
        rgb = _lerp(rgb, np.asarray(color), weight.astype(np.float32))
    frame = (np.minimum(np.minimum(s, 1 - s), np.minimum(t, 1 - t)) < frame_width) | (
        surface.face != mat.axis
    )
    return np.where(frame[:, None], np.asarray(mat.colors[0], np.float32), rgb)


def _books(surface: SurfacePoints, mat: Material) -> Float[np.ndarray, "n 3"]:
    x = surface.local[:, 0] + surface.half[:, 0]
    book = np.floor(x / mat.scale).astype(np.int64)[:, None]
    pick = np.floor(hash_cells(book, mat.seed) * len(mat.colors)).astype(np.int64)
    palette = np.asarray(mat.colors, dtype=np.float32)
    rgb = palette[pick] * (0.85 + 0.15 * hash_cells(book, mat.seed + 1))[:, None]
    gap = np.abs(np.mod(x / mat.scale + 0.5, 1.0) - 0.5) * mat.scale < LINE_WIDTH / 2
    rgb = np.where((surface.face == 2)[:, None], np.asarray(PAGES, np.float32), rgb)
    return rgb * np.where(gap, GROOVE_SHADE, 1.0)[:, None]


def _panel_grooves(surface: SurfacePoints, mat: Material) -> Float[np.ndarray, " n"]:
    """Albedo factor of door / drawer grooves on the face normal to ``axis``."""
    columns, rows = mat.panels
    s, t = face_fraction(surface)
    half_u, half_v = face_uv(surface.half, surface.face)
    width, height = 2 * half_u / columns, 2 * half_v / rows
    fs, ft = np.mod(s * columns, 1.0), np.mod(t * rows, 1.0)
    edge = np.minimum(np.minimum(fs, 1 - fs) * width, np.minimum(ft, 1 - ft) * height)
    groove = (np.abs(edge - PANEL_INSET) < LINE_WIDTH / 2) | (edge < LINE_WIDTH / 2)
    return np.where(groove & (surface.face == mat.axis), GROOVE_SHADE, 1.0).astype(np.float32)


def _uv(surface: SurfacePoints) -> Float[np.ndarray, "n 2"]:
    """Face coordinates in the texture frame, offset per face so faces do not repeat."""
    u, v = face_uv(surface.tex, surface.face)
    return np.stack([u + 17.0 * surface.face, v], axis=1).astype(np.float32)


def albedo(surface: SurfacePoints, mat: Material) -> Float[np.ndarray, "n 3"]:
    """Albedo in [0, 1] of surface points that all carry the material ``mat``."""
    tex, family, base = surface.tex, mat.family, mat.colors[0]
    # Noise lives on the faces (2-D): as consistent across views as solid noise, half the cost.
    uv = _uv(surface)
    if family == Family.PLASTER:
        blotch = fractal_noise(uv / mat.scale, mat.seed, octaves=2)
        speckle = cell_noise(uv, SPECKLE_CELL, mat.seed + 1)
        rgb = _shade(base, (0.94 + 0.08 * blotch) * (0.975 + 0.05 * speckle))
    elif family == Family.WALLPAPER:
        u, _ = face_uv(tex, surface.face)
        speckle = cell_noise(uv, SPECKLE_CELL, mat.seed + 1)
        rgb = _lerp(base, mat.colors[1], _stripes(u, mat.scale)) * (0.97 + 0.05 * speckle)[:, None]
    elif family == Family.WOOD:
        rgb = _wood(tex, mat, 0.3 + float(mat.seed % 101) / 101.0)
    elif family == Family.PLANKS:
        rgb = _planks(tex, mat)
    elif family in (Family.FABRIC, Family.FABRIC_STRIPES, Family.FABRIC_PLAID):
        rgb = _fabric(surface, mat)
    elif family == Family.CARPET:
        pile = cell_noise(uv, mat.scale, mat.seed)
        rgb = _shade(base, (0.85 + 0.2 * pile) * (0.9 + 0.2 * fractal_noise(uv * 2.0, mat.seed)))
    elif family == Family.LEATHER:
        grain = fractal_noise(uv / mat.scale * 0.3, mat.seed, octaves=3)
        crease = np.abs(value_noise(uv / mat.scale, mat.seed + 1) - 0.5) < 0.04
        rgb = _shade(base, (0.85 + 0.25 * grain) * np.where(crease, 0.8, 1.0))
    elif family in (Family.TILES, Family.TILES_CHECKER):
        rgb = _tiles(surface, mat)
    elif family == Family.STONE:
        mix = 0.6 * np.clip((fractal_noise(uv / mat.scale, mat.seed, octaves=3) - 0.35) * 3, 0, 1)
        fleck = cell_noise(uv, SPECKLE_CELL, mat.seed + 1)
        rgb = _lerp(base, mat.colors[1], mix) * (0.92 + 0.15 * fleck)[:, None]
    elif family == Family.ENAMEL:
        rgb = _shade(base, 0.97 + 0.05 * fractal_noise(uv * 1.5, mat.seed, octaves=2))
    elif family == Family.METAL:
        # Brushed: fine across the brushing direction (vertical for axis 2), coarse along it.
        along = (uv[:, 1] if mat.axis == 2 else uv[:, 0])[:, None]
        across = (uv[:, 0] if mat.axis == 2 else uv[:, 1])[:, None]
        brushed = np.concatenate([along * 2.0, across / mat.scale], axis=1)
        rgb = _shade(base, 0.88 + 0.2 * fractal_noise(brushed, mat.seed, octaves=2))
    elif family == Family.GLASS:
        rgb = _glass(surface, mat)
    elif family == Family.PAINTING:
        rgb = _painting(surface, mat)
    elif family == Family.BOOKS:
        rgb = _books(surface, mat)
    else:
        raise ValueError(f"texture family {family!r} has no albedo function")
    if mat.panels != (0, 0) and family != Family.GLASS:
        rgb = rgb * _panel_grooves(surface, mat)[:, None]
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)
