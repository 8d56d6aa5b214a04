"""Raw ScanNet categories used by the synthetic rooms and their ``scannetv2-labels.combined.tsv``.

Label maps store raw category ids (the tsv's ``id`` column), exactly like ScanNet's
``label-filt``; the reader maps them to nyu40 ids through the tsv and then to the benchmark
classes (spec 1.4). Ceilings, pillows, books, lamps, boxes, screens and nightstands have nyu40
ids outside the 20 benchmark ids, so they map to "unlabelled", as in real ScanNet.
"""

from dataclasses import dataclass

# Column names of ScanNet's scannetv2-labels.combined.tsv, in the real order.
TSV_COLUMNS = (
    "id",
    "raw_category",
    "category",
    "count",
    "nyu40id",
    "eigen13id",
    "nyuClass",
    "nyu40class",
    "eigen13class",
    "ModelNet40",
    "ModelNet10",
    "ShapeNetCore55",
    "synsetoffset",
    "wnsynsetid",
    "wnsynsetkey",
    "mpcat40",
    "mpcat40index",
)


@dataclass(frozen=True)
class RawCategory:
    """One row of the label table."""

    raw_id: int  # "id": the value written to label-filt
    name: str  # "raw_category"
    nyu_class: str  # "nyuClass"
    nyu40_id: int  # "nyu40id"
    nyu40_class: str  # "nyu40class"
    eigen13_id: int  # "eigen13id"
    eigen13_class: str  # "eigen13class"
    mpcat40: str  # "mpcat40"
    mpcat40_index: int  # "mpcat40index"


RAW_CATEGORIES: tuple[RawCategory, ...] = (
    RawCategory(1, "wall", "wall", 1, "wall", 12, "wall", "wall", 1),
    RawCategory(2, "chair", "chair", 5, "chair", 4, "chair", "chair", 3),
    RawCategory(3, "floor", "floor", 2, "floor", 5, "floor", "floor", 2),
    RawCategory(4, "table", "table", 7, "table", 10, "table", "table", 5),
    RawCategory(5, "door", "door", 8, "door", 12, "wall", "door", 4),
    RawCategory(6, "couch", "sofa", 6, "sofa", 9, "sofa", "sofa", 10),
    RawCategory(7, "cabinet", "cabinet", 3, "cabinet", 6, "furniture", "cabinet", 7),
    RawCategory(9, "desk", "desk", 14, "desk", 10, "table", "table", 5),
    RawCategory(10, "office chair", "chair", 5, "chair", 4, "chair", "chair", 3),
    RawCategory(11, "bed", "bed", 4, "bed", 1, "bed", "bed", 11),
    RawCategory(12, "pillow", "pillow", 18, "pillow", 7, "objects", "cushion", 8),
    RawCategory(13, "sink", "sink", 34, "sink", 7, "objects", "sink", 15),
    RawCategory(14, "picture", "picture", 11, "picture", 8, "picture", "picture", 6),
    RawCategory(15, "window", "window", 9, "window", 13, "window", "window", 9),
    RawCategory(16, "toilet", "toilet", 33, "toilet", 7, "objects", "toilet", 18),
    RawCategory(17, "bookshelf", "bookshelf", 10, "bookshelf", 6, "furniture", "shelving", 31),
    RawCategory(18, "monitor", "monitor", 40, "otherprop", 11, "tv", "tv_monitor", 22),
    RawCategory(19, "curtain", "curtain", 16, "curtain", 13, "window", "curtain", 12),
    RawCategory(20, "book", "book", 23, "books", 2, "books", "objects", 39),
    RawCategory(22, "coffee table", "table", 7, "table", 10, "table", "table", 5),
    RawCategory(
        24, "refrigerator", "refridgerator", 24, "refridgerator", 6, "furniture", "appliances", 37
    ),
    RawCategory(25, "lamp", "lamp", 35, "lamp", 7, "objects", "lighting", 28),
    RawCategory(26, "kitchen cabinets", "cabinet", 3, "cabinet", 6, "furniture", "cabinet", 7),
    RawCategory(29, "box", "box", 29, "box", 7, "objects", "objects", 39),
    RawCategory(31, "counter", "counter", 12, "counter", 6, "furniture", "counter", 26),
    RawCategory(
        32, "nightstand", "night stand", 32, "night stand", 6, "furniture", "chest_of_drawers", 13
    ),
    RawCategory(37, "bathtub", "bathtub", 36, "bathtub", 7, "objects", "bathtub", 25),
    RawCategory(41, "ceiling", "ceiling", 22, "ceiling", 3, "ceiling", "ceiling", 17),
    RawCategory(44, "tv", "television", 25, "television", 11, "tv", "tv_monitor", 22),
    RawCategory(45, "tv stand", "tv stand", 39, "otherfurniture", 6, "furniture", "furniture", 36),
    RawCategory(56, "ottoman", "ottoman", 39, "otherfurniture", 6, "furniture", "seating", 34),
    RawCategory(
        58, "shower curtain", "shower curtain", 28, "shower curtain", 13, "window", "curtain", 12
    ),
    RawCategory(60, "doorframe", "door frame", 8, "door", 12, "wall", "door", 4),
)
_BY_NAME = {category.name: category for category in RAW_CATEGORIES}


def raw_id(name: str) -> int:
    """Raw id of a raw category name; the error lists the known names."""
    if name not in _BY_NAME:
        raise KeyError(f"unknown raw category {name!r}; known: {sorted(_BY_NAME)}")
    return _BY_NAME[name].raw_id


def labels_tsv() -> str:
    """Text of ``scannetv2-labels.combined.tsv`` for the synthetic rooms (ScanNet's columns).

    The ``count`` column holds 1 and the ModelNet / ShapeNet / WordNet columns are empty: no
    reader uses them. Category names are the raw names (ScanNet's "category" is a cleaned copy).
    """
    lines = ["\t".join(TSV_COLUMNS)]
    for c in RAW_CATEGORIES:
        row = (
            str(c.raw_id),
            c.name,
            c.name,
            "1",
            str(c.nyu40_id),
            str(c.eigen13_id),
            c.nyu_class,
            c.nyu40_class,
            c.eigen13_class,
            "",
            "",
            "",
            "",
            "",
            "",
            c.mpcat40,
            str(c.mpcat40_index),
        )
        lines.append("\t".join(row))
    return "\n".join(lines) + "\n"
