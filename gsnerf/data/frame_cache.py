"""On-disk cache of decoded-and-resized frames in front of any :class:`SceneReader`.

Decoding a ScanNet frame (1296x968 JPEG, 640x480 depth PNG, label PNG) and resizing it (spec
1.2-1.3) on every read costs more loader time than a training step can hide. A
:class:`CachedSceneReader` decodes each frame once and keeps it in
``<cache_dir>/<kind>/<scene name>/<W>x<H>/<frame_id>.pt``, a ``torch.save`` dict of the frame and
the fingerprint of what it was decoded from. A cached frame equals the decoded one exactly: the
image is stored as uint8 and depth as uint16 millimetres only where dividing them back by 255 and
1000 gives the decoded float32 values bit for bit (else as float32), labels as the smallest
integer type that holds them, and everything is converted back to the reader's dtypes.

A cached frame is served only if its stored fingerprint equals the current one, made of:

- the cache format version, the reader's class, the dataset kind, scene name and image size;
- the label mapping, class names, ignore index and whether the scene has labels;
- the reader's public scalar settings (e.g. Replica's field of view) and the frame's pose;
- size and modification time (ns) of the frame's colour, depth and label files, where the reader
  exposes them (``frame_files``);
- size and modification time of every other file in the scene folder (ScanNet intrinsics and
  poses, Replica trajectory; every file where the reader has no ``frame_files``) and of the
  ScanNet label table next to it, taken when the reader is wrapped.

Any difference decodes the frame again and rewrites its file. A source rewritten with the same
size and modification time (``cp -p`` of other content) is not noticed: delete the cache folder.
Files are written to a temporary name in the same folder and renamed, so a killed run or several
DataLoader workers writing one frame never leave a half file; a file that cannot be read back
(disk fault, power loss) is logged with its path, decoded again and rewritten. Temporary
``.tmp`` files left by a killed run are never read and may be deleted.
"""

import contextlib
import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Shaped
from torch import Tensor

from gsnerf.data.image_io import MILLIMETRES_PER_METRE
from gsnerf.data.labels import SCANNET_TSV_NAME
from gsnerf.data.scene_reader import DroppedFrame, Frame, SceneReader

log = logging.getLogger(__name__)

# Bump when the file layout changes, so files of an older layout are re-decoded, not misread.
CACHE_FORMAT_VERSION = 1
# Readers turn 8-bit colour into [0, 1] by dividing by this.
_UINT8_MAX = 255.0


def _scaled(values: Float[Tensor, "..."], scale: float, dtype: torch.dtype) -> dict[str, Any]:
    """``{"data", "scale"}`` with integer data if ``data / scale`` gives ``values`` exactly."""
    info = torch.iinfo(dtype)
    if values.dtype == torch.float32 and values.numel() > 0:
        rounded = torch.round(values * scale)
        if bool(rounded.min() >= info.min) and bool(rounded.max() <= info.max):
            packed = {"data": rounded.to(dtype), "scale": scale}
            if torch.equal(_unscaled(packed), values):
                return packed
    return {"data": values.clone(memory_format=torch.contiguous_format), "scale": None}


def _unscaled(packed: dict[str, Any]) -> Float[Tensor, "..."]:
    if packed["scale"] is None:
        return packed["data"]
    return packed["data"].float() / packed["scale"]


def _compact_ids(labels: Shaped[Tensor, "h w"]) -> dict[str, Any]:
    """Labels in the smallest of uint8 / int16 that holds every id, with the original dtype."""
    data = labels.clone(memory_format=torch.contiguous_format)
    if labels.numel() > 0 and not labels.dtype.is_floating_point:
        low, high = int(labels.min()), int(labels.max())
        for dtype in (torch.uint8, torch.int16):
            if torch.iinfo(dtype).min <= low and high <= torch.iinfo(dtype).max:
                data = labels.to(dtype)
                break
    return {"data": data, "dtype": str(labels.dtype).removeprefix("torch.")}


def _expanded_ids(packed: dict[str, Any]) -> Shaped[Tensor, "h w"]:
    return packed["data"].to(getattr(torch, packed["dtype"]))


def _stamp(path: Path, relative_to: Path | None = None) -> list[Any]:
    """``[name, size, mtime_ns]`` of a file; size and time -1 where it cannot be stat'ed."""
    name = str(path.relative_to(relative_to)) if relative_to else path.name
    try:
        status = path.stat()
    except OSError:
        return [name, -1, -1]
    return [name, status.st_size, status.st_mtime_ns]


def _scene_digest(scene_dir: Path, frame_dirs: set[Path], cache_dir: Path) -> str:
    """SHA-256 of the stamps of every file under ``scene_dir`` outside the per-frame folders."""
    skipped = {folder.resolve() for folder in frame_dirs} | {cache_dir.resolve()}
    stamps = []
    for folder, subfolders, files in os.walk(scene_dir):
        subfolders[:] = [s for s in subfolders if (Path(folder) / s).resolve() not in skipped]
        stamps += [_stamp(Path(folder) / name, scene_dir) for name in files]
    # The ScanNet label table lives beside the scene folders and maps every label map.
    tsv = scene_dir.parent / SCANNET_TSV_NAME
    if tsv.is_file():
        stamps.append(_stamp(tsv, scene_dir.parent))
    return hashlib.sha256(repr(sorted(stamps)).encode()).hexdigest()


class CachedSceneReader:
    """A :class:`SceneReader` that serves ``reader``'s frames from an on-disk cache.

    Args:
        reader: the scene reader to wrap (its protocol members are delegated to it).
        cache_dir: root folder of the cache; created if missing.
        kind: dataset kind of the reader ("synthetic", "scannet", "replica"), a path component.
        label_mapping: the class table the reader was opened with (spec 1.4), fingerprinted
            because Replica's class names are the same under both tables.
    """

    def __init__(
        self, reader: SceneReader, cache_dir: str | Path, kind: str, label_mapping: str
    ) -> None:
        scene_path = Path(reader.name)
        if scene_path.is_absolute() or ".." in scene_path.parts or not reader.name:
            raise ValueError(f"scene name {reader.name!r} cannot name a frame cache folder")
        self.wrapped = reader
        self.name = reader.name
        self.image_size = reader.image_size
        width, height = reader.image_size
        self.folder = Path(cache_dir) / kind / scene_path / f"{width}x{height}"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OSError(
                f"{self.folder}: cannot create the frame cache folder ({error}); set "
                "dataset.frame_cache to a writable folder or to null"
            ) from error
        self._positions = {frame_id: i for i, frame_id in enumerate(reader.frame_ids)}
        self._poses = reader.cam_to_world
        self._frame_files = getattr(reader, "frame_files", None)
        scene_dir = getattr(reader, "scene_dir", None)
        frame_dirs: set[Path] = set()
        if self._frame_files is not None and reader.frame_ids:
            frame_dirs = {path.parent for path in self._source_files(reader.frame_ids[0])}
        settings = {
            key: value
            for key, value in sorted(vars(reader).items())
            if not key.startswith("_") and isinstance(value, (bool, int, float, str))
        }
        self._scene_fingerprint = {
            "format": CACHE_FORMAT_VERSION,
            "reader": f"{type(reader).__module__}.{type(reader).__qualname__}",
            "kind": kind,
            "scene": reader.name,
            "image_size": [width, height],
            "label_mapping": str(label_mapping),
            "class_names": list(reader.class_names),
            "ignore_index": reader.ignore_index,
            "has_labels": reader.has_labels,
            "settings": settings,
            "scene_files": None
            if scene_dir is None
            else _scene_digest(Path(scene_dir), frame_dirs, Path(cache_dir)),
        }

    @property
    def frame_ids(self) -> list[int]:
        return self.wrapped.frame_ids

    @property
    def class_names(self) -> list[str]:
        return self.wrapped.class_names

    @property
    def num_classes(self) -> int:
        return self.wrapped.num_classes

    @property
    def ignore_index(self) -> int:
        return self.wrapped.ignore_index

    @property
    def has_labels(self) -> bool:
        return self.wrapped.has_labels

    @property
    def cam_to_world(self) -> Float[Tensor, "frames 4 4"]:
        return self.wrapped.cam_to_world

    @property
    def dropped_frames(self) -> list[DroppedFrame]:
        return self.wrapped.dropped_frames

    def frame_path(self, frame_id: int) -> Path:
        """The cache file of ``frame_id``."""
        return self.folder / f"{frame_id}.pt"

    def read(self, frame_id: int) -> Frame:
        """The frame from its cache file if valid, else decoded by the wrapped reader and stored."""
        if frame_id not in self._positions:
            # The wrapped reader raises its own error naming the scene and the valid ids.
            return self.wrapped.read(frame_id)
        path = self.frame_path(frame_id)
        # Taken before decoding: a source changed meanwhile leaves an older stamp, so the next
        # read decodes again rather than serving a frame of unknown origin.
        fingerprint = self._fingerprint(frame_id)
        frame = self._load(path, frame_id, fingerprint)
        if frame is None:
            frame = self.wrapped.read(frame_id)
            self._store(path, frame, fingerprint)
        return frame

    def _source_files(self, frame_id: int) -> list[Path]:
        files = self._frame_files(frame_id)
        return [path for path in (files.color, files.depth, files.labels) if path is not None]

    def _fingerprint(self, frame_id: int) -> dict[str, Any]:
        frame_files = None
        if self._frame_files is not None:
            frame_files = [_stamp(path) for path in self._source_files(frame_id)]
        return {
            **self._scene_fingerprint,
            "frame_id": frame_id,
            "pose": self._poses[self._positions[frame_id]].tolist(),
            "frame_files": frame_files,
        }

    def _load(self, path: Path, frame_id: int, fingerprint: dict[str, Any]) -> Frame | None:
        """The cached frame, or None when the file is missing, stale or unreadable (logged)."""
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            if payload["fingerprint"] != fingerprint:
                log.debug("%s: source or settings changed; decoding frame %d again", path, frame_id)
                return None
            return self._unpack(payload)
        except FileNotFoundError:
            return None
        # Whatever a damaged file makes torch.load or the unpacking raise, the source is still
        # there to decode the frame again.
        except Exception as error:
            log.warning(
                "%s: unreadable frame cache file (%s: %s); decoding frame %d of %s again",
                path,
                type(error).__name__,
                error,
                frame_id,
                self.name,
            )
            return None

    def _unpack(self, payload: dict[str, Any]) -> Frame:
        width, height = self.image_size
        image = _unscaled(payload["image"])
        depth = _unscaled(payload["depth"])
        labels = None if payload["labels"] is None else _expanded_ids(payload["labels"])
        tensors = {
            "image": (image, (3, height, width)),
            "depth": (depth, (height, width)),
            "labels": (labels, (height, width)),
            "intrinsics": (payload["intrinsics"], (3, 3)),
            "cam_to_world": (payload["cam_to_world"], (4, 4)),
        }
        for key, (tensor, expected) in tensors.items():
            if tensor is not None and tuple(tensor.shape) != expected:
                raise ValueError(f"{key} has shape {tuple(tensor.shape)}, expected {expected}")
        return Frame(
            image=image,
            depth=depth,
            labels=labels,
            intrinsics=payload["intrinsics"],
            cam_to_world=payload["cam_to_world"],
        )

    def _store(self, path: Path, frame: Frame, fingerprint: dict[str, Any]) -> None:
        """Write ``frame`` atomically; a failed write is logged and the frame served uncached."""
        payload = {
            "fingerprint": fingerprint,
            "image": _scaled(frame.image, _UINT8_MAX, torch.uint8),
            "depth": _scaled(frame.depth, MILLIMETRES_PER_METRE, torch.uint16),
            "labels": None if frame.labels is None else _compact_ids(frame.labels),
            "intrinsics": frame.intrinsics.clone(memory_format=torch.contiguous_format),
            "cam_to_world": frame.cam_to_world.clone(memory_format=torch.contiguous_format),
        }
        temporary = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(
                prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent
            )
            with os.fdopen(handle, "wb") as stream:
                torch.save(payload, stream)
            # Atomic on one file system: readers see the old file or the whole new one, and
            # workers racing on one frame each replace it with an equal file.
            os.replace(temporary, path)
        except OSError as error:
            log.warning("%s: cannot write frame cache file (%s)", path, error)
            if temporary is not None:
                with contextlib.suppress(OSError):
                    Path(temporary).unlink(missing_ok=True)


__all__ = ["CACHE_FORMAT_VERSION", "CachedSceneReader"]
