"""Class tables of the real datasets: raw label ids -> training class ids (spec 1.4).

Two mappings, picked by :class:`LabelMapping`:

- ``benchmark`` (default, clean): ScanNet's 20 benchmark classes and Replica's 19 evaluated
  classes; every other id, including 0 (unannotated / void), becomes ``IGNORE_INDEX``.
- ``gsnerf_paper``: the reference code's post-hoc remap (spec 1.4, 7.1), kept only to compare
  with the paper's numbers. ScanNet: otherfurniture (nyu40 39) merges into table and every other
  id becomes a trained class ``other`` at index 19. Replica: every unlisted id becomes the class
  of id 40 (floor, index 6). Nothing is ignored.

A :class:`LabelTable` is a lookup array indexed by raw id; its last entry serves every id past
the table, so ``table.apply`` is one vectorised gather for any integer image.
"""

import csv
import io
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
from jaxtyping import Int64, Integer

from gsnerf.data.image_io import read_text
from gsnerf.data.scene_reader import IGNORE_INDEX, DatasetFormatError


class LabelMapping(str, Enum):
    """Which class table a reader applies (spec 1.4)."""

    BENCHMARK = "benchmark"
    GSNERF_PAPER = "gsnerf_paper"


# ScanNet benchmark classes: (nyu40 id, name), in class-index order (ScanNet v2 benchmark).
SCANNET_BENCHMARK_CLASSES: tuple[tuple[int, str], ...] = (
    (1, "wall"),
    (2, "floor"),
    (3, "cabinet"),
    (4, "bed"),
    (5, "chair"),
    (6, "sofa"),
    (7, "table"),
    (8, "door"),
    (9, "window"),
    (10, "bookshelf"),
    (11, "picture"),
    (12, "counter"),
    (14, "desk"),
    (16, "curtain"),
    (24, "refrigerator"),
    (28, "shower curtain"),
    (33, "toilet"),
    (34, "sink"),
    (36, "bathtub"),
    (39, "otherfurniture"),
)
SCANNET_NYU40_TABLE_ID = 7
SCANNET_NYU40_OTHERFURNITURE_ID = 39
SCANNET_OTHER_NAME = "other"
NYU40_MAX_ID = 40

# Replica evaluated classes: (Replica 101-class id, name), in class-index order. Names from the
# Replica taxonomy used by Semantic-NeRF's renders (ids 1..101, e.g. 40 floor, 93 wall).
REPLICA_CLASSES: tuple[tuple[int, str], ...] = (
    (12, "blinds"),
    (17, "camera"),
    (20, "chair"),
    (22, "clock"),
    (31, "ceiling"),
    (37, "door"),
    (40, "floor"),
    (44, "indoor-plant"),
    (47, "lamp"),
    (56, "panel"),
    (64, "plate"),
    (79, "switch"),
    (80, "table"),
    (87, "tv-screen"),
    (91, "vase"),
    (92, "vent"),
    (93, "wall"),
    (95, "wall-plug"),
    (97, "window"),
)
REPLICA_FLOOR_ID = 40
REPLICA_MAX_ID = 101

SCANNET_TSV_NAME = "scannetv2-labels.combined.tsv"


@dataclass(frozen=True)
class LabelTable:
    """Lookup from raw ids to class ids; ids past the end use the last entry."""

    class_names: tuple[str, ...]
    # lookup[raw id] = class index or IGNORE_INDEX; the last entry is the value of unknown ids.
    lookup: Int64[np.ndarray, " ids"]

    def apply(self, raw_ids: Integer[np.ndarray, "h w"]) -> Int64[np.ndarray, "h w"]:
        """Class id of every pixel; e.g. ScanNet benchmark maps raw 1 (wall) to 0, raw 0 to 255."""
        if raw_ids.size and raw_ids.min() < 0:
            raise ValueError(f"label ids must be non-negative, got minimum {raw_ids.min()}")
        index = np.minimum(raw_ids.astype(np.int64), len(self.lookup) - 1)
        return self.lookup[index]


def read_scannet_tsv(path: Path) -> dict[int, int]:
    """Raw ScanNet category id -> nyu40 id, from ``scannetv2-labels.combined.tsv``.

    Columns are found by their header names ``id`` and ``nyu40id``, not by position.
    """
    if not path.is_file():
        raise DatasetFormatError(f"{path}: label table not found (needed to map label-filt ids)")
    text = read_text(path, "tab-separated label table")
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter="\t"))
    if not rows:
        raise DatasetFormatError(f"{path}: empty label table")
    header = [name.strip() for name in rows[0]]
    missing = [name for name in ("id", "nyu40id") if name not in header]
    if missing:
        raise DatasetFormatError(f"{path}: header lacks column(s) {missing}; header is {header}")
    id_column, nyu_column = header.index("id"), header.index("nyu40id")
    raw_to_nyu40: dict[int, int] = {}
    for line_number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            raw_id, nyu40_id = int(row[id_column]), int(row[nyu_column])
        except (IndexError, ValueError) as error:
            raise DatasetFormatError(
                f"{path}: line {line_number}: bad id / nyu40id ({error})"
            ) from error
        if raw_id < 0 or not 0 <= nyu40_id <= NYU40_MAX_ID:
            raise DatasetFormatError(
                f"{path}: line {line_number}: id {raw_id} / nyu40id {nyu40_id} out of range"
            )
        raw_to_nyu40[raw_id] = nyu40_id
    if not raw_to_nyu40:
        raise DatasetFormatError(f"{path}: no data row")
    return raw_to_nyu40


def scannet_class_names(mapping: LabelMapping) -> tuple[str, ...]:
    """Benchmark: the 20 ScanNet classes; paper: the first 19 of them, then ``other``."""
    names = tuple(name for _, name in SCANNET_BENCHMARK_CLASSES)
    if mapping is LabelMapping.BENCHMARK:
        return names
    return names[:-1] + (SCANNET_OTHER_NAME,)


def nyu40_lookup(mapping: LabelMapping) -> Int64[np.ndarray, " ids"]:
    """nyu40 id (0..40) -> class id under ``mapping`` (spec 1.4 table)."""
    nyu40_ids = [nyu40_id for nyu40_id, _ in SCANNET_BENCHMARK_CLASSES]
    if mapping is LabelMapping.BENCHMARK:
        lookup = np.full(NYU40_MAX_ID + 1, IGNORE_INDEX, dtype=np.int64)
        lookup[nyu40_ids] = np.arange(len(nyu40_ids))
        return lookup
    # Paper remap: class 19 (otherfurniture) -> 6 (table), unlisted (class 20) -> 19 "other".
    lookup = np.full(NYU40_MAX_ID + 1, len(nyu40_ids) - 1, dtype=np.int64)
    lookup[nyu40_ids] = np.arange(len(nyu40_ids))
    lookup[SCANNET_NYU40_OTHERFURNITURE_ID] = lookup[SCANNET_NYU40_TABLE_ID]
    return lookup


def scannet_table(raw_to_nyu40: dict[int, int], mapping: LabelMapping) -> LabelTable:
    """Raw ScanNet id -> class id: the tsv composed with :func:`nyu40_lookup`.

    Raw ids the tsv does not list (including every id past its largest) act as nyu40 0,
    unannotated, as in the reference's lookup array (spec 1.4).
    """
    nyu40 = np.zeros(max(raw_to_nyu40) + 2, dtype=np.int64)
    nyu40[list(raw_to_nyu40)] = list(raw_to_nyu40.values())
    return LabelTable(scannet_class_names(mapping), nyu40_lookup(mapping)[nyu40])


def replica_table(mapping: LabelMapping) -> LabelTable:
    """Replica class id (0..101) -> class id under ``mapping``; ids past 101 act as unlisted."""
    replica_ids = [replica_id for replica_id, _ in REPLICA_CLASSES]
    names = tuple(name for _, name in REPLICA_CLASSES)
    if mapping is LabelMapping.BENCHMARK:
        fill = IGNORE_INDEX
    else:
        # Paper remap: unlisted ids (class 19 after PointSegClassMapping) -> 6, the floor class.
        fill = replica_ids.index(REPLICA_FLOOR_ID)
    lookup = np.full(REPLICA_MAX_ID + 2, fill, dtype=np.int64)
    lookup[replica_ids] = np.arange(len(replica_ids))
    return LabelTable(names, lookup)
