"""Scene readers behind one API: ``open_scene(kind, root, scene_name, image_size)``.

``kind`` is one of :data:`SCENE_KINDS`. The built-in synthetic scenes are written in the ScanNet
on-disk layout, so ``"synthetic"`` opens them with the ScanNet reader.
"""

from pathlib import Path

from gsnerf.data.labels import LabelMapping
from gsnerf.data.replica import ReplicaScene
from gsnerf.data.scannet import ScanNetScene
from gsnerf.data.scene_reader import (
    IGNORE_INDEX,
    DatasetFormatError,
    DroppedFrame,
    Frame,
    SceneReader,
)

SCENE_KINDS = ("synthetic", "scannet", "replica")


def open_scene(
    kind: str,
    root: str | Path,
    scene_name: str,
    image_size: tuple[int, int],
    label_mapping: LabelMapping | str = LabelMapping.BENCHMARK,
) -> SceneReader:
    """Open one scene of a dataset; ``image_size`` is ``(width, height)`` of what ``read`` returns.

    ``label_mapping`` picks the class table: ``benchmark`` (default) or ``gsnerf_paper`` (the
    reference code's remap, spec 1.4, for comparing with the paper's numbers).
    """
    mapping = LabelMapping(label_mapping)
    root = Path(root)
    if kind in ("scannet", "synthetic"):
        return ScanNetScene(root, scene_name, image_size, mapping)
    if kind == "replica":
        return ReplicaScene(root, scene_name, image_size, mapping)
    raise ValueError(f"unknown scene kind {kind!r}; expected one of {SCENE_KINDS}")


__all__ = [
    "IGNORE_INDEX",
    "SCENE_KINDS",
    "DatasetFormatError",
    "DroppedFrame",
    "Frame",
    "LabelMapping",
    "SceneReader",
    "open_scene",
]
