"""The one API every dataset reader implements: frame ids, class names and per-frame data.

A reader is opened on one scene and resizes everything it returns to the requested
``image_size = (width, height)``; intrinsics are rescaled to match (see
:func:`gsnerf.geometry.camera.scale_intrinsics`).
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from jaxtyping import Float, Int64
from torch import Tensor

IGNORE_INDEX = 255
"""Label value of unlabeled / unmapped pixels, shared by every dataset."""


class DatasetFormatError(RuntimeError):
    """A file of a dataset is missing or malformed; the message names the file and the problem."""


@dataclass
class Frame:
    """One posed RGB-D frame at the reader's image size."""

    image: Float[Tensor, "3 h w"]  # RGB in [0, 1]
    depth: Float[Tensor, "h w"]  # metres, 0 = invalid
    labels: Int64[Tensor, "h w"] | None  # class ids, IGNORE_INDEX where unlabeled
    intrinsics: Float[Tensor, "3 3"]  # pixels at the reader's image size
    cam_to_world: Float[Tensor, "4 4"]  # OpenCV axes


@dataclass
class DroppedFrame:
    """A frame a reader skips: a ScanNet ``-inf`` pose (the dataset convention) or a broken one."""

    frame_id: int
    path: Path
    reason: str
    # Index of the pose in ``path`` when one file holds every pose (Replica's trajectory).
    row: int | None = None

    @property
    def source(self) -> str:
        """Where the pose was read, short: ``pose/3.txt`` or ``traj_w_c.txt row 3``."""
        if self.row is None:
            return f"{self.path.parent.name}/{self.path.name}"
        return f"{self.path.name} row {self.row}"


@dataclass
class SceneInfo:
    """What a reader knows about a scene without decoding any image."""

    name: str
    frame_ids: list[int]  # frames with a valid pose, in order
    cam_to_world: Float[Tensor, "frames 4 4"]  # poses of ``frame_ids``, same order
    class_names: list[str]
    ignore_index: int
    has_labels: bool
    dropped: list[DroppedFrame] = field(default_factory=list)


@runtime_checkable
class SceneReader(Protocol):
    """Protocol of ``open_scene``'s result."""

    name: str
    image_size: tuple[int, int]  # (width, height) of everything ``read`` returns

    @property
    def frame_ids(self) -> list[int]: ...

    @property
    def class_names(self) -> list[str]: ...

    @property
    def num_classes(self) -> int: ...

    @property
    def ignore_index(self) -> int: ...

    @property
    def has_labels(self) -> bool: ...

    @property
    def cam_to_world(self) -> Float[Tensor, "frames 4 4"]:
        """Poses of all ``frame_ids`` in order, read without decoding images."""
        ...

    @property
    def dropped_frames(self) -> list[DroppedFrame]: ...

    def read(self, frame_id: int) -> Frame: ...


class SceneBase(ABC):
    """Shared bookkeeping for readers: holds a :class:`SceneInfo` and exposes the protocol."""

    def __init__(self, info: SceneInfo, image_size: tuple[int, int]) -> None:
        width, height = image_size
        if width <= 0 or height <= 0:
            raise ValueError(f"image_size must be positive (width, height), got {image_size}")
        if not info.frame_ids:
            raise DatasetFormatError(
                f"scene {info.name}: no frame with a valid pose "
                f"({len(info.dropped)} dropped: {info.dropped[:3]})"
            )
        self.info = info
        self.name = info.name
        self.image_size = (int(width), int(height))
        self._position = {frame_id: i for i, frame_id in enumerate(info.frame_ids)}

    @property
    def frame_ids(self) -> list[int]:
        return list(self.info.frame_ids)

    @property
    def class_names(self) -> list[str]:
        return list(self.info.class_names)

    @property
    def num_classes(self) -> int:
        return len(self.info.class_names)

    @property
    def ignore_index(self) -> int:
        return self.info.ignore_index

    @property
    def has_labels(self) -> bool:
        return self.info.has_labels

    @property
    def cam_to_world(self) -> Float[Tensor, "frames 4 4"]:
        return self.info.cam_to_world

    @property
    def dropped_frames(self) -> list[DroppedFrame]:
        return list(self.info.dropped)

    def pose(self, frame_id: int) -> Float[Tensor, "4 4"]:
        return self.info.cam_to_world[self._position_of(frame_id)]

    def _position_of(self, frame_id: int) -> int:
        if frame_id not in self._position:
            raise KeyError(
                f"scene {self.name}: frame {frame_id} is not a valid frame "
                f"(valid ids {self.info.frame_ids[0]}..{self.info.frame_ids[-1]}, "
                f"{len(self.info.frame_ids)} frames)"
            )
        return self._position[frame_id]

    @abstractmethod
    def read(self, frame_id: int) -> Frame:
        """Decode one frame at ``image_size``; errors name the file and the problem."""


__all__ = [
    "IGNORE_INDEX",
    "DatasetFormatError",
    "DroppedFrame",
    "Frame",
    "SceneBase",
    "SceneInfo",
    "SceneReader",
]
