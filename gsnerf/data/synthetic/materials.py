"""Materials of the synthetic rooms: texture families, shared palettes, per-instance sampling.

Palettes are deliberately shared between classes, as in real rooms: tables, desks, cabinets,
doors, bookshelves and wooden floors draw from one wood palette; sofas, beds, curtains, chair
cushions and carpets from one fabric palette; walls, ceilings, fridges, toilets, sinks, bathtubs
and painted doors from overlapping whites and pale paints. Colour alone therefore does not tell
the classes apart: shape, texture and context are needed.
"""

from dataclasses import dataclass
from enum import Enum

import numpy as np

Rgb = tuple[float, float, float]


class Family(str, Enum):
    """Texture family: how albedo varies over a surface (see textures.py)."""

    PLASTER = "plaster"  # paint with low-frequency blotches and fine speckle
    WALLPAPER = "wallpaper"  # vertical stripes in two paints
    WOOD = "wood"  # solid wood grain along `axis`
    PLANKS = "planks"  # floor boards with seams, per-board tone
    FABRIC = "fabric"  # plain weave
    FABRIC_STRIPES = "fabric_stripes"  # woven stripes across `axis`
    FABRIC_PLAID = "fabric_plaid"  # two-direction stripes
    CARPET = "carpet"  # speckled pile
    LEATHER = "leather"  # grain with creases
    TILES = "tiles"  # square tiles and grout lines
    TILES_CHECKER = "tiles_checker"  # alternating tile colours
    STONE = "stone"  # granite / marble mottling with speckles
    ENAMEL = "enamel"  # smooth glazed or painted appliance surface
    METAL = "metal"  # brushed metal streaks along `axis`
    GLASS = "glass"  # window pane: outside view, frame and mullions
    PAINTING = "painting"  # framed picture with random content
    BOOKS = "books"  # row of book spines


@dataclass(frozen=True)
class Material:
    """Albedo of one object part; all numbers are per instance."""

    family: Family
    # Albedos in [0, 1]: base first, then the family's extra colours (grain, grout, frame, ...).
    colors: tuple[Rgb, ...]
    # Characteristic feature size, metres (ring spacing, tile, stripe, plank, book width).
    scale: float
    # Local axis (0 x, 1 y, 2 z) of the grain / stripes, or the normal of the decorated face.
    axis: int
    # Seed of the instance's noise.
    seed: int
    # Door / drawer panel grid (columns, rows) grooved into the face normal to `axis`.
    panels: tuple[int, int] = (0, 0)
    # Family-specific numbers (painting blobs, horizon height, frame width fraction).
    params: tuple[float, ...] = ()


WOODS: tuple[Rgb, ...] = (
    (0.74, 0.57, 0.38),
    (0.66, 0.46, 0.27),
    (0.40, 0.27, 0.17),
    (0.48, 0.25, 0.16),
    (0.62, 0.58, 0.52),
    (0.25, 0.18, 0.13),
    (0.82, 0.72, 0.56),
    (0.55, 0.38, 0.24),
)
PAINTS: tuple[Rgb, ...] = (
    (0.92, 0.92, 0.90),
    (0.88, 0.85, 0.78),
    (0.76, 0.76, 0.75),
    (0.32, 0.33, 0.35),
    (0.14, 0.14, 0.15),
    (0.60, 0.66, 0.56),
    (0.24, 0.29, 0.40),
    (0.82, 0.74, 0.62),
)
WALL_PAINTS: tuple[Rgb, ...] = (
    (0.93, 0.93, 0.91),
    (0.90, 0.87, 0.80),
    (0.91, 0.87, 0.75),
    (0.78, 0.78, 0.77),
    (0.76, 0.83, 0.88),
    (0.79, 0.85, 0.76),
    (0.83, 0.75, 0.63),
    (0.93, 0.90, 0.72),
)
FABRICS: tuple[Rgb, ...] = (
    (0.52, 0.52, 0.52),
    (0.27, 0.27, 0.29),
    (0.76, 0.69, 0.57),
    (0.89, 0.86, 0.79),
    (0.22, 0.27, 0.42),
    (0.33, 0.43, 0.60),
    (0.36, 0.50, 0.37),
    (0.60, 0.22, 0.21),
    (0.76, 0.60, 0.27),
    (0.47, 0.33, 0.23),
    (0.91, 0.91, 0.90),
    (0.84, 0.66, 0.65),
    (0.25, 0.50, 0.52),
    (0.66, 0.58, 0.49),
)
LEATHERS: tuple[Rgb, ...] = (
    (0.13, 0.12, 0.12),
    (0.36, 0.22, 0.14),
    (0.60, 0.41, 0.26),
    (0.86, 0.82, 0.74),
)
METALS: tuple[Rgb, ...] = (
    (0.71, 0.72, 0.73),
    (0.36, 0.37, 0.38),
    (0.14, 0.14, 0.15),
    (0.82, 0.82, 0.80),
)
ENAMELS: tuple[Rgb, ...] = (
    (0.94, 0.94, 0.93),
    (0.91, 0.90, 0.86),
    (0.88, 0.88, 0.88),
    (0.92, 0.89, 0.82),
)
STONES: tuple[Rgb, ...] = (
    (0.90, 0.89, 0.87),
    (0.47, 0.46, 0.45),
    (0.16, 0.16, 0.17),
    (0.80, 0.75, 0.66),
)
TILE_COLORS: tuple[Rgb, ...] = (
    (0.93, 0.93, 0.92),
    (0.89, 0.86, 0.79),
    (0.78, 0.78, 0.78),
    (0.80, 0.74, 0.64),
    (0.72, 0.82, 0.88),
    (0.70, 0.42, 0.31),
    (0.30, 0.31, 0.33),
)
SKIES: tuple[Rgb, ...] = (
    (0.80, 0.88, 0.96),
    (0.92, 0.93, 0.94),
    (0.70, 0.78, 0.88),
    (0.97, 0.96, 0.92),
)
OUTSIDE: tuple[Rgb, ...] = (
    (0.36, 0.47, 0.30),
    (0.55, 0.55, 0.52),
    (0.62, 0.50, 0.40),
    (0.78, 0.76, 0.72),
)
BOOK_COLORS: tuple[Rgb, ...] = (
    (0.62, 0.18, 0.16),
    (0.20, 0.28, 0.50),
    (0.22, 0.42, 0.28),
    (0.85, 0.82, 0.72),
    (0.15, 0.15, 0.16),
    (0.80, 0.62, 0.25),
    (0.45, 0.30, 0.20),
    (0.92, 0.92, 0.90),
    (0.55, 0.55, 0.58),
    (0.70, 0.45, 0.50),
)
# Albedo jitter of one instance: multiplicative brightness and per-channel tint spread.
BRIGHTNESS_JITTER = 0.08
TINT_JITTER = 0.025


class MaterialSampler:
    """Draws per-instance materials from the shared palettes with one random generator."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def color(self, palette: tuple[Rgb, ...]) -> Rgb:
        """A palette colour with per-instance brightness and tint variation."""
        base = np.array(palette[int(self.rng.integers(len(palette)))])
        gain = 1.0 + self.rng.uniform(-BRIGHTNESS_JITTER, BRIGHTNESS_JITTER)
        tint = self.rng.uniform(-TINT_JITTER, TINT_JITTER, size=3)
        value = np.clip(base * gain + tint, 0.02, 0.98)
        return (float(value[0]), float(value[1]), float(value[2]))

    def make(
        self,
        family: Family,
        colors: tuple[Rgb, ...],
        scale: float,
        axis: int = 0,
        panels: tuple[int, int] = (0, 0),
        params: tuple[float, ...] = (),
    ) -> Material:
        seed = int(self.rng.integers(1 << 30))
        return Material(family, colors, float(scale), int(axis), seed, panels, params)

    def darker(self, rgb: Rgb, factor: float) -> Rgb:
        return (rgb[0] * factor, rgb[1] * factor, rgb[2] * factor)

    def wood(self, axis: int = 0, panels: tuple[int, int] = (0, 0)) -> Material:
        base = self.color(WOODS)
        grain = self.darker(base, self.rng.uniform(0.6, 0.8))
        return self.make(Family.WOOD, (base, grain), self.rng.uniform(0.015, 0.04), axis, panels)

    def planks(self) -> Material:
        base = self.color(WOODS)
        grain = self.darker(base, self.rng.uniform(0.65, 0.85))
        axis = int(self.rng.integers(2))
        return self.make(
            Family.PLANKS,
            (base, grain),
            self.rng.uniform(0.09, 0.2),
            axis,
            params=(self.rng.uniform(0.8, 1.6),),
        )

    def paint(self, axis: int = 0, panels: tuple[int, int] = (0, 0)) -> Material:
        return self.make(Family.ENAMEL, (self.color(PAINTS),), 1.0, axis, panels)

    def wood_or_paint(
        self, axis: int = 0, panels: tuple[int, int] = (0, 0), p_wood: float = 0.6
    ) -> Material:
        if self.rng.random() < p_wood:
            return self.wood(axis, panels)
        return self.paint(axis, panels)

    def fabric(self, axis: int = 0) -> Material:
        roll = self.rng.random()
        base, second = self.color(FABRICS), self.color(FABRICS)
        if roll < 0.6:
            return self.make(Family.FABRIC, (base,), self.rng.uniform(0.02, 0.035), axis)
        if roll < 0.85:
            return self.make(
                Family.FABRIC_STRIPES, (base, second), self.rng.uniform(0.03, 0.12), axis
            )
        return self.make(Family.FABRIC_PLAID, (base, second), self.rng.uniform(0.04, 0.1), axis)

    def leather(self) -> Material:
        return self.make(Family.LEATHER, (self.color(LEATHERS),), self.rng.uniform(0.02, 0.05))

    def upholstery(self, axis: int = 0, p_leather: float = 0.3) -> Material:
        return self.leather() if self.rng.random() < p_leather else self.fabric(axis)

    def metal(self, axis: int = 2) -> Material:
        return self.make(Family.METAL, (self.color(METALS),), self.rng.uniform(0.02, 0.05), axis)

    def enamel(self, panels: tuple[int, int] = (0, 0), axis: int = 1) -> Material:
        return self.make(Family.ENAMEL, (self.color(ENAMELS),), 1.0, axis, panels)

    def stone(self) -> Material:
        base, second = self.color(STONES), self.color(STONES)
        return self.make(Family.STONE, (base, second), self.rng.uniform(0.05, 0.2))

    def tiles(self, checker: bool = False) -> Material:
        base, grout = self.color(TILE_COLORS), self.color(TILE_COLORS[:4])
        size = self.rng.uniform(0.1, 0.4)
        if checker:
            return self.make(Family.TILES_CHECKER, (base, grout, self.color(TILE_COLORS)), size)
        return self.make(Family.TILES, (base, grout), size)

    def carpet(self) -> Material:
        return self.make(Family.CARPET, (self.color(FABRICS),), self.rng.uniform(0.015, 0.03))

    def plaster(self, palette: tuple[Rgb, ...] = WALL_PAINTS) -> Material:
        return self.make(Family.PLASTER, (self.color(palette),), self.rng.uniform(0.3, 1.0))

    def wallpaper(self) -> Material:
        base = self.color(WALL_PAINTS)
        return self.make(
            Family.WALLPAPER, (base, self.color(WALL_PAINTS)), self.rng.uniform(0.05, 0.15), axis=2
        )

    def glass(self, axis: int, columns: int, rows: int) -> Material:
        frame = self.color(PAINTS[:3] + WOODS[:3] + PAINTS[3:5])
        colors = (self.color(SKIES), frame, self.color(OUTSIDE), self.color(OUTSIDE))
        horizon = self.rng.uniform(0.35, 0.75)
        return self.make(
            Family.GLASS,
            colors,
            self.rng.uniform(0.1, 0.4),
            axis,
            (columns, rows),
            (horizon, self.rng.uniform(0.04, 0.08)),
        )

    def painting(self, axis: int) -> Material:
        """Framed picture: frame colour, background pair and blobs of any palette colour."""
        frame = self.color(WOODS + PAINTS[:1] + PAINTS[3:5] + ((0.72, 0.58, 0.30),))
        any_palette = WOODS + FABRICS + WALL_PAINTS + SKIES + OUTSIDE + BOOK_COLORS
        background = (self.color(any_palette), self.color(any_palette))
        blobs = int(self.rng.integers(3, 8))
        blob_colors = tuple(self.color(any_palette) for _ in range(blobs))
        # Per blob: centre (s, t) in [0, 1], radius (face fraction).
        geometry = tuple(
            float(v)
            for _ in range(blobs)
            for v in (
                self.rng.uniform(0.1, 0.9),
                self.rng.uniform(0.1, 0.9),
                self.rng.uniform(0.08, 0.3),
            )
        )
        frame_width = float(self.rng.uniform(0.05, 0.12))
        return self.make(
            Family.PAINTING,
            (frame,) + background + blob_colors,
            1.0,
            axis,
            params=(frame_width,) + geometry,
        )

    def books(self) -> Material:
        count = int(self.rng.integers(4, len(BOOK_COLORS) + 1))
        picks = self.rng.choice(len(BOOK_COLORS), size=count, replace=False)
        colors = tuple(self.color((BOOK_COLORS[int(i)],)) for i in picks)
        return self.make(Family.BOOKS, colors, self.rng.uniform(0.025, 0.05), axis=0)
