"""Built-in synthetic indoor dataset: procedural rooms written in the ScanNet layout.

``generate_dataset(SyntheticCfg(), root)`` writes furnished rooms (ScanNet benchmark classes built
from analytic primitives, shared-palette procedural textures, handheld camera walks) with exact
depth and labels, readable by the ScanNet reader (``open_scene("synthetic", root, name, size)``).
"""

from gsnerf.data.synthetic.generate import (
    SyntheticCfg,
    SyntheticSplit,
    generate_dataset,
    generate_scene,
    intrinsics_of,
    scene_name,
)

__all__ = [
    "SyntheticCfg",
    "SyntheticSplit",
    "generate_dataset",
    "generate_scene",
    "intrinsics_of",
    "scene_name",
]
