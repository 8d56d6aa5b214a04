"""Fixtures of the data tests: small scenes written in the real on-disk formats.

The writers and the patterns they paint live in ``scene_files.py`` so tests can recompute what a
reader must return.
"""

from pathlib import Path

import pytest
from scene_files import write_replica_scene, write_scannet_scene


@pytest.fixture
def scannet_root(tmp_path: Path) -> Path:
    """Root with the tsv and ``scene0000_00``: frames 0, 1, 2, 3, 10; frame 2 has a -inf pose."""
    write_scannet_scene(tmp_path)
    return tmp_path


@pytest.fixture
def replica_root(tmp_path: Path) -> Path:
    """Root with ``office_0/Sequence_1``: frames rgb_0 .. rgb_10 at 64x48."""
    write_replica_scene(tmp_path)
    return tmp_path
