"""Class tables of spec 1.4: names, order, benchmark vs paper remap, tsv parsing."""

from pathlib import Path

import numpy as np
import pytest
from scene_files import (
    REPLICA_BENCHMARK_EXPECTED,
    REPLICA_PAPER_EXPECTED,
    REPLICA_RAW_IDS,
    SCANNET_BENCHMARK_EXPECTED,
    SCANNET_PAPER_EXPECTED,
    SCANNET_RAW_IDS,
    write_tsv,
)

from gsnerf.data.labels import (
    LabelMapping,
    nyu40_lookup,
    read_scannet_tsv,
    replica_table,
    scannet_class_names,
    scannet_table,
)
from gsnerf.data.scene_reader import IGNORE_INDEX, DatasetFormatError

BENCHMARK_NAMES = [
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink",
    "bathtub", "otherfurniture",
]  # fmt: skip
BENCHMARK_NYU40 = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39]
REPLICA_IDS = [12, 17, 20, 22, 31, 37, 40, 44, 47, 56, 64, 79, 80, 87, 91, 92, 93, 95, 97]


def test_mapping_parses_from_config_strings() -> None:
    assert LabelMapping("benchmark") is LabelMapping.BENCHMARK
    assert LabelMapping("gsnerf_paper") is LabelMapping.GSNERF_PAPER
    with pytest.raises(ValueError):
        LabelMapping("faithful")


def test_scannet_names_in_benchmark_order() -> None:
    assert list(scannet_class_names(LabelMapping.BENCHMARK)) == BENCHMARK_NAMES
    paper = list(scannet_class_names(LabelMapping.GSNERF_PAPER))
    assert paper == BENCHMARK_NAMES[:19] + ["other"]


def test_nyu40_benchmark_lookup_keeps_the_20_classes_and_ignores_the_rest() -> None:
    lookup = nyu40_lookup(LabelMapping.BENCHMARK)
    assert lookup[BENCHMARK_NYU40].tolist() == list(range(20))
    others = sorted(set(range(41)) - set(BENCHMARK_NYU40))
    assert (lookup[others] == IGNORE_INDEX).all()


def test_nyu40_paper_lookup_merges_otherfurniture_and_never_ignores() -> None:
    lookup = nyu40_lookup(LabelMapping.GSNERF_PAPER)
    # Spec 1.4 table: 39 -> 6 (table), 0 and unlisted ids -> 19, the 19 others unchanged.
    assert lookup[39] == 6 and lookup[7] == 6
    assert lookup[0] == 19 and lookup[40] == 19 and lookup[13] == 19
    assert lookup[BENCHMARK_NYU40[:19]].tolist() == list(range(19))
    assert (lookup != IGNORE_INDEX).all()


def test_tsv_columns_are_found_by_name(tmp_path: Path) -> None:
    # The fixture tsv puts nyu40id second and id last.
    table = read_scannet_tsv(write_tsv(tmp_path))
    assert table == {1: 1, 2: 5, 3: 39, 4: 40, 7: 22, 13: 7, 21: 28}


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        (LabelMapping.BENCHMARK, SCANNET_BENCHMARK_EXPECTED),
        (LabelMapping.GSNERF_PAPER, SCANNET_PAPER_EXPECTED),
    ],
)
def test_scannet_raw_ids_map_through_the_tsv(
    tmp_path: Path, mapping: LabelMapping, expected: tuple[int, ...]
) -> None:
    table = scannet_table(read_scannet_tsv(write_tsv(tmp_path)), mapping)
    raw = np.array([SCANNET_RAW_IDS], dtype=np.uint16)
    assert table.apply(raw).tolist() == [list(expected)]
    assert table.apply(raw).dtype == np.int64


def test_scannet_paper_mode_never_ignores_any_raw_id(tmp_path: Path) -> None:
    table = scannet_table(read_scannet_tsv(write_tsv(tmp_path)), LabelMapping.GSNERF_PAPER)
    assert (table.apply(np.arange(70000).reshape(1, -1)) != IGNORE_INDEX).all()


def test_tsv_without_nyu40_column_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "labels.tsv"
    path.write_text("id\tcategory\n1\twall\n")
    with pytest.raises(DatasetFormatError, match="nyu40id") as error:
        read_scannet_tsv(path)
    assert str(path) in str(error.value)


def test_tsv_bad_row_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "labels.tsv"
    path.write_text("id\tnyu40id\n1\t1\n2\tchair\n")
    with pytest.raises(DatasetFormatError, match="line 3") as error:
        read_scannet_tsv(path)
    assert str(path) in str(error.value)


def test_binary_tsv_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "scannetv2-labels.combined.tsv"
    path.write_bytes(b"id\tnyu40id\n1\t\xff\n")
    with pytest.raises(DatasetFormatError) as error:
        read_scannet_tsv(path)
    assert str(error.value).startswith(f"{path}: not a tab-separated label table (byte 13 is")


def test_missing_tsv_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError) as error:
        read_scannet_tsv(tmp_path / "scannetv2-labels.combined.tsv")
    assert str(tmp_path / "scannetv2-labels.combined.tsv") in str(error.value)


def test_replica_names_follow_the_101_class_taxonomy() -> None:
    table = replica_table(LabelMapping.BENCHMARK)
    assert len(table.class_names) == 19
    names = dict(zip(REPLICA_IDS, table.class_names))
    assert names[12] == "blinds" and names[40] == "floor" and names[93] == "wall"
    assert names[31] == "ceiling" and names[97] == "window" and names[95] == "wall-plug"
    assert table.apply(np.array([REPLICA_IDS])).tolist() == [list(range(19))]


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        (LabelMapping.BENCHMARK, REPLICA_BENCHMARK_EXPECTED),
        (LabelMapping.GSNERF_PAPER, REPLICA_PAPER_EXPECTED),
    ],
)
def test_replica_unlisted_ids(mapping: LabelMapping, expected: tuple[int, ...]) -> None:
    raw = np.array([REPLICA_RAW_IDS], dtype=np.uint8)
    assert replica_table(mapping).apply(raw).tolist() == [list(expected)]


def test_replica_paper_mode_sends_every_unlisted_id_to_floor() -> None:
    table = replica_table(LabelMapping.GSNERF_PAPER)
    unlisted = sorted(set(range(256)) - set(REPLICA_IDS))
    assert (table.apply(np.array([unlisted])) == 6).all()
