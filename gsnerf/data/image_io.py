"""Decoding of dataset files (images, depth, label ids, text matrices) and image resizing.

Every error names the file and the problem. A JPEG whose compressed data is damaged decodes
with wrong pixels and only a libjpeg warning on standard error; that warning is caught and made
an error (:func:`_imdecode_watching_stderr`).

Sizes are ``(width, height)`` like ``cv2.resize`` and the readers' ``image_size``. Resizes keep
pixel centres aligned (``x' = (x + 0.5) * s - 0.5``), the convention of
:func:`gsnerf.geometry.camera.scale_intrinsics`: colour uses area averaging when shrinking (an
antialiased reduction) and bilinear when enlarging; depth and label ids use nearest neighbour,
so no depth or id is ever invented by blending two surfaces. The reference antialiases colour
with a Gaussian pre-blur and a bilinear resize (spec 1.3); area averaging is the box-filter form
of the same idea and needs no tuned sigma.
"""

import os
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from jaxtyping import Float32, Float64, Int64, UInt8, UInt16
from PIL import Image

from gsnerf.data.scene_reader import DatasetFormatError

# Depth PNGs of ScanNet, Replica and the importer store millimetres (spec 1.2, 1.3).
MILLIMETRES_PER_METRE = 1000.0


@dataclass(frozen=True)
class FrameFiles:
    """Files of one frame of a scene; ``labels`` is None where the scene has no label maps."""

    color: Path
    depth: Path
    labels: Path | None


_JPEG_START = b"\xff\xd8"
_JPEG_END = b"\xff\xd9"
# Starts of libjpeg's warnings about damaged compressed data (jerror.h, JWRN_*): the decoder
# goes on, and every pixel from the damage on may be wrong.
_CORRUPT_JPEG_WARNINGS = (
    "Corrupt JPEG data",
    "Premature end of JPEG file",
    "Invalid SOS parameters",
    "Inconsistent progression sequence",
)
# Held while file descriptor 2 points elsewhere, so two threads never swap it at once.
_STDERR_LOCK = threading.Lock()


def _read_bytes(path: Path) -> UInt8[np.ndarray, " n"]:
    if not path.is_file():
        raise DatasetFormatError(f"{path}: file not found")
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise DatasetFormatError(f"{path}: empty file")
    return data


def _imdecode_watching_stderr(
    data: UInt8[np.ndarray, " n"], flags: int
) -> tuple[np.ndarray | None, str]:
    """``cv2.imdecode`` and whatever was written to file descriptor 2 during the call.

    libjpeg reports recoverable damage only by printing to standard error (OpenCV installs no
    message hook), so the descriptor points at a temporary file for the call. Costs about 0.1 ms.
    """
    with _STDERR_LOCK, tempfile.TemporaryFile() as capture:
        if sys.stderr is not None:
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:
            # No standard error to watch (descriptor closed): nothing could be printed anyway.
            return cv2.imdecode(data, flags), ""
        try:
            os.dup2(capture.fileno(), 2)
            image = cv2.imdecode(data, flags)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        printed = capture.read().decode(errors="replace")
    return image, printed


def _decode(path: Path, flags: int) -> np.ndarray:
    data = _read_bytes(path)
    # Some libjpeg builds decode a truncated JPEG with only a warning; the end marker catches it.
    is_jpeg = data[:2].tobytes() == _JPEG_START
    if is_jpeg and not data[-64:].tobytes().rstrip(b"\x00").endswith(_JPEG_END):
        raise DatasetFormatError(f"{path}: truncated JPEG (no end-of-image marker)")
    if is_jpeg:
        image, printed = _imdecode_watching_stderr(data, flags)
        lines = printed.splitlines(keepends=True)
        corrupt = [line.strip() for line in lines if line.startswith(_CORRUPT_JPEG_WARNINGS)]
        # Anything else (another thread's output, a harmless libjpeg note) goes where it was sent.
        others = "".join(line for line in lines if not line.startswith(_CORRUPT_JPEG_WARNINGS))
        if others and sys.stderr is not None:
            sys.stderr.write(others)
        if corrupt:
            raise DatasetFormatError(
                f"{path}: corrupt JPEG data, pixels past the damage are wrong "
                f"(libjpeg: {corrupt[0]})"
            )
    else:
        image = cv2.imdecode(data, flags)
    if image is None:
        raise DatasetFormatError(f"{path}: cannot decode image (corrupt or not an image)")
    return image


def read_rgb(path: Path) -> UInt8[np.ndarray, "h w 3"]:
    """8-bit RGB image (JPEG or PNG; grey or 16-bit inputs are converted), EXIF rotation ignored."""
    image = _decode(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    # cvtColor swaps channels in under 0.1 ms at 1296x968; copying a reversed view takes 3 ms.
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_depth_png(
    path: Path, units_per_metre: float = MILLIMETRES_PER_METRE
) -> Float32[np.ndarray, "h w"]:
    """Single-channel 16-bit depth PNG -> metres (``value / units_per_metre``); 0 stays invalid."""
    depth = _decode(path, cv2.IMREAD_UNCHANGED)
    if depth.ndim != 2 or depth.dtype != np.uint16:
        channels = 1 if depth.ndim == 2 else depth.shape[2]
        raise DatasetFormatError(
            f"{path}: expected a single-channel 16-bit depth PNG, got {depth.dtype} with "
            f"{channels} channel(s)"
        )
    return depth.astype(np.float32) / np.float32(units_per_metre)


def read_label_png(path: Path) -> UInt8[np.ndarray, "h w"] | UInt16[np.ndarray, "h w"]:
    """Single-channel 8- or 16-bit image of raw label ids, as stored."""
    labels = _decode(path, cv2.IMREAD_UNCHANGED)
    if labels.ndim != 2 or labels.dtype not in (np.uint8, np.uint16):
        channels = 1 if labels.ndim == 2 else labels.shape[2]
        raise DatasetFormatError(
            f"{path}: expected a single-channel 8/16-bit label-id PNG, got {labels.dtype} with "
            f"{channels} channel(s) (a colour visualisation instead of ids?)"
        )
    return labels


def size_of(image: np.ndarray) -> tuple[int, int]:
    """``(width, height)`` of an ``h w`` or ``h w c`` array."""
    return int(image.shape[1]), int(image.shape[0])


def stored_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image file, from its header only (EXIF rotation ignored)."""
    if not path.is_file():
        raise DatasetFormatError(f"{path}: file not found")
    try:
        with Image.open(path) as image:
            width, height = image.size
    except OSError as error:
        raise DatasetFormatError(f"{path}: cannot read the image header ({error})") from error
    return int(width), int(height)


def read_text(path: Path, what: str) -> str:
    """UTF-8 content of a text file of the dataset; ``what`` names the expected content."""
    if not path.is_file():
        raise DatasetFormatError(f"{path}: file not found")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DatasetFormatError(
            f"{path}: not a {what} (byte {error.start} is not UTF-8 text; a binary file?)"
        ) from error


def resize_rgb(
    image: UInt8[np.ndarray, "h w 3"], size: tuple[int, int]
) -> UInt8[np.ndarray, "_ _ 3"]:
    """Colour resize to ``size``: area averaging if no axis grows, bilinear otherwise."""
    width, height = size_of(image)
    if (width, height) == tuple(size):
        return image
    shrinking = size[0] <= width and size[1] <= height
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, tuple(size), interpolation=interpolation)


def centre_nearest_index(out_count: int, in_count: int) -> Int64[np.ndarray, " out"]:
    """Source index of each output index under centre-aligned nearest resizing.

    ``floor((i + 0.5) * in / out)`` in exact integer arithmetic (OpenCV's fixed-point
    ``INTER_NEAREST_EXACT`` rounds some exact ties down). Example: 640 -> 320 gives 1, 3, 5, ...;
    160 -> 320 gives 0, 0, 1, 1, ...
    """
    return ((2 * np.arange(out_count, dtype=np.int64) + 1) * in_count) // (2 * out_count)


def resize_nearest(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an ``h w`` or ``h w c`` array to ``size``, centre-aligned."""
    if size_of(image) == tuple(size):
        return image
    rows = centre_nearest_index(size[1], image.shape[0])
    cols = centre_nearest_index(size[0], image.shape[1])
    return image[rows[:, None], cols[None, :]]


def read_matrix_txt(path: Path, shapes: tuple[tuple[int, int], ...]) -> Float64[np.ndarray, "r c"]:
    """Whitespace-separated matrix text whose rows x columns is one of ``shapes``.

    Entries such as ``-inf`` and ``nan`` parse (ScanNet writes ``-inf`` poses); callers decide.
    """
    text = read_text(path, "text matrix")
    rows = [line.split() for line in text.splitlines() if line.strip()]
    shape = (len(rows), len(rows[0]) if rows else 0)
    if shape not in shapes or any(len(row) != shape[1] for row in rows):
        expected = " or ".join(f"{r}x{c}" for r, c in shapes)
        lengths = sorted({len(row) for row in rows})
        raise DatasetFormatError(
            f"{path}: expected a {expected} matrix, got {len(rows)} row(s) of {lengths} number(s)"
        )
    try:
        return np.array([[float(value) for value in row] for row in rows], dtype=np.float64)
    except ValueError as error:
        raise DatasetFormatError(f"{path}: unparsable number ({error})") from error


def read_pose_rows(path: Path) -> Float64[np.ndarray, "n 4 4"]:
    """Poses stored one per line as 16 numbers, each a row-major 4x4 (Replica ``traj_w_c.txt``)."""
    text = read_text(path, "text file of poses")
    poses = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        values = line.split()
        if len(values) != 16:
            raise DatasetFormatError(
                f"{path}: line {line_number}: expected 16 numbers (a 4x4 pose), got {len(values)}"
            )
        try:
            poses.append(np.array([float(value) for value in values]).reshape(4, 4))
        except ValueError as error:
            raise DatasetFormatError(f"{path}: line {line_number}: {error}") from error
    if not poses:
        raise DatasetFormatError(f"{path}: no pose")
    return np.stack(poses)
