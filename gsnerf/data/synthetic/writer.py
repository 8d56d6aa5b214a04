"""Writing synthetic scenes in the ScanNet SensReader layout (spec 1.2).

```
<root>/scannetv2-labels.combined.tsv
<root>/splits/train.txt, test.txt          one scene name per line
<root>/<scene>/color/<i>.png               RGB, lossless
<root>/<scene>/depth/<i>.png               uint16 millimetres, 0 = invalid
<root>/<scene>/label-filt/<i>.png          uint16 raw category ids (tsv "id" column)
<root>/<scene>/pose/<i>.txt                4x4 camera-to-world, OpenCV axes
<root>/<scene>/intrinsic/intrinsic_color.txt, intrinsic_depth.txt   4x4
<root>/<scene>/intrinsic/extrinsic_color.txt, extrinsic_depth.txt   4x4 identity
<root>/<scene>/synthetic_scene.json        written last: the settings that made the scene
```
"""

import json
import os
from pathlib import Path

import cv2
import numpy as np
from jaxtyping import Float

from gsnerf.data.synthetic.render import RenderedFrame

MARKER_NAME = "synthetic_scene.json"
# Largest depth a uint16 millimetre map holds, metres.
MAX_DEPTH_M = 65.535


def _matrix_text(matrix: Float[np.ndarray, "4 4"]) -> str:
    return "\n".join(" ".join(f"{value:.9f}" for value in row) for row in matrix) + "\n"


def write_frame(
    scene_dir: Path, index: int, frame: RenderedFrame, cam_to_world: Float[np.ndarray, "4 4"]
) -> None:
    """Colour, depth (mm), raw labels and pose of frame ``index``."""
    depth_mm = np.round(np.clip(frame.depth, 0.0, MAX_DEPTH_M) * 1000.0).astype(np.uint16)
    images = {
        scene_dir / "color" / f"{index}.png": cv2.cvtColor(frame.color, cv2.COLOR_RGB2BGR),
        scene_dir / "depth" / f"{index}.png": depth_mm,
        scene_dir / "label-filt" / f"{index}.png": frame.raw_labels.astype(np.uint16),
    }
    for path, image in images.items():
        if not cv2.imwrite(str(path), image):
            raise OSError(f"{path}: could not write the image")
    (scene_dir / "pose" / f"{index}.txt").write_text(_matrix_text(cam_to_world))


def prepare_scene_dir(scene_dir: Path) -> None:
    for sub in ("color", "depth", "label-filt", "pose", "intrinsic"):
        (scene_dir / sub).mkdir(parents=True, exist_ok=True)


def write_intrinsics(scene_dir: Path, intrinsics: Float[np.ndarray, "3 3"]) -> None:
    """SensReader's intrinsic folder: colour and depth share the camera, so both are ``K``."""
    full = np.eye(4)
    full[:3, :3] = intrinsics
    folder = scene_dir / "intrinsic"
    for name in ("intrinsic_color.txt", "intrinsic_depth.txt"):
        (folder / name).write_text(_matrix_text(full))
    for name in ("extrinsic_color.txt", "extrinsic_depth.txt"):
        (folder / name).write_text(_matrix_text(np.eye(4)))


def write_marker(scene_dir: Path, settings: dict, summary: dict) -> None:
    """Mark the scene complete; ``settings`` decide whether a rerun may skip it."""
    text = json.dumps({"settings": settings, "summary": summary}, indent=2, sort_keys=True)
    (scene_dir / MARKER_NAME).write_text(text + "\n")


def read_marker_settings(scene_dir: Path) -> dict | None:
    """Settings of a completed scene, or None when it is missing, partial or unreadable."""
    path = scene_dir / MARKER_NAME
    try:
        return json.loads(path.read_text())["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_text_if_changed(path: Path, text: str) -> None:
    """Write ``text`` unless the file already holds exactly it (keeps reruns from touching it)."""
    if path.is_file() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # A per-process temporary name: concurrent runs (one per rank) must not share it.
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    temporary.replace(path)
