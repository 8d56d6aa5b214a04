"""Generating the synthetic dataset: configuration, one scene, the whole train/test set.

Scene ``i`` is named ``scene{i:04d}_00`` and drawn from the seed sequence ``(seed, i)``: the
first ``num_train_scenes`` form the training split, the next ``num_test_scenes`` the test split,
so test rooms are distinct rooms never seen in training. The same settings give byte-identical
files. A finished scene carries a marker with its settings; a rerun skips it when they match and
regenerates it when they differ. A scene is written to a staging folder and renamed into place,
so an interrupted run never leaves a half-written scene that looks complete.
"""

import ctypes
import logging
import multiprocessing
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from jaxtyping import Float

from gsnerf.data.synthetic.categories import labels_tsv
from gsnerf.data.synthetic.layout import RoomCfg
from gsnerf.data.synthetic.render import LightingCfg, RoomRenderer, sample_lighting
from gsnerf.data.synthetic.rooms import generate_room
from gsnerf.data.synthetic.trajectory import CameraPathCfg, camera_path
from gsnerf.data.synthetic.writer import (
    prepare_scene_dir,
    read_marker_settings,
    write_frame,
    write_intrinsics,
    write_marker,
    write_text_if_changed,
)

log = logging.getLogger(__name__)

# Version of the generator's output; bump it whenever the same settings would give other files.
GENERATOR_VERSION = 1
LABELS_TSV = "scannetv2-labels.combined.tsv"
# glibc mallopt parameters and the values set in worker processes (bytes).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_WORKER_TRIM_THRESHOLD, _WORKER_MMAP_THRESHOLD = 1 << 30, 1 << 25


@dataclass
class SyntheticCfg:
    # Training rooms, named scene0000_00 onwards.
    num_train_scenes: int = 16
    # Held-out test rooms, numbered after the training rooms.
    num_test_scenes: int = 4
    # Frames per room; the spec 1.5 test protocol needs >= 43 for 3 query frames.
    frames_per_scene: int = 80
    # Image width, pixels (the reader resizes to the model's size).
    width: int = 160
    # Image height, pixels.
    height: int = 120
    # Seed of every random choice; scene i draws from the seed sequence (seed, i).
    seed: int = 0
    # Horizontal field of view, degrees (ScanNet's colour camera: about 60-70).
    horizontal_fov_deg: float = 65.0
    # Colour rays per pixel and axis, averaged (depth and labels use the pixel-centre ray).
    supersampling: int = 2
    # Processes that generate rooms in parallel; 1 generates in the calling process.
    num_workers: int = 2
    # Rooms drawn per scene until one admits a camera path.
    max_room_attempts: int = 20
    # Room size, furniture counts and placement.
    room: RoomCfg = field(default_factory=RoomCfg)
    # Handheld camera path.
    camera: CameraPathCfg = field(default_factory=CameraPathCfg)
    # Lights and shading.
    lighting: LightingCfg = field(default_factory=LightingCfg)


@dataclass
class SyntheticSplit:
    """Scene names of the generated dataset."""

    train: list[str]
    test: list[str]


def scene_name(index: int) -> str:
    return f"scene{index:04d}_00"


def intrinsics_of(cfg: SyntheticCfg) -> Float[np.ndarray, "3 3"]:
    """Pinhole K, square pixels: ``fx = fy = (W / 2) / tan(fov / 2)``, ``c = ((W-1)/2, (H-1)/2)``.

    Example: W = 64, fov = 90 deg -> fx = 32, cx = 31.5 (pixel centres at integers).
    """
    focal = 0.5 * cfg.width / np.tan(0.5 * np.deg2rad(cfg.horizontal_fov_deg))
    return np.array(
        [[focal, 0.0, (cfg.width - 1) / 2], [0.0, focal, (cfg.height - 1) / 2], [0.0, 0.0, 1.0]]
    )


def scene_settings(cfg: SyntheticCfg, index: int) -> dict:
    """Everything that decides the files of scene ``index`` (not the split sizes or workers)."""
    settings = asdict(cfg)
    for key in ("num_train_scenes", "num_test_scenes", "num_workers"):
        settings.pop(key)
    settings.update(scene_index=index, generator_version=GENERATOR_VERSION)
    return settings


def _check(cfg: SyntheticCfg) -> None:
    problems = []
    if cfg.num_train_scenes < 1 or cfg.num_test_scenes < 0:
        problems.append("num_train_scenes must be >= 1 and num_test_scenes >= 0")
    if cfg.frames_per_scene < 2:
        problems.append("frames_per_scene must be >= 2")
    if cfg.width < 8 or cfg.height < 8:
        problems.append("width and height must be >= 8 pixels")
    if cfg.supersampling < 1 or cfg.num_workers < 1:
        problems.append("supersampling and num_workers must be >= 1")
    if not 10.0 <= cfg.horizontal_fov_deg <= 150.0:
        problems.append("horizontal_fov_deg must be within [10, 150]")
    if cfg.room.min_objects > cfg.room.max_objects:
        problems.append("room.min_objects must not exceed room.max_objects")
    if problems:
        raise ValueError(f"invalid SyntheticCfg {cfg}: " + "; ".join(problems))


def generate_scene(cfg: SyntheticCfg, root: Path, index: int) -> str:
    """Draw room ``index``, walk the camera through it and write it under ``root``.

    Returns a one-line summary for the log.
    """
    name, started = scene_name(index), time.perf_counter()
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, index]))
    for _ in range(cfg.max_room_attempts):
        room = generate_room(rng, cfg.room)
        poses = camera_path(rng, room, cfg.camera, cfg.frames_per_scene)
        if poses is not None:
            break
    else:
        raise RuntimeError(
            f"{name}: no room of {cfg.max_room_attempts} drawn admits a camera "
            f"path; relax camera.wall_clearance / camera.object_clearance"
        )
    renderer = RoomRenderer(room, sample_lighting(rng, cfg.lighting, room.size))
    intrinsics = intrinsics_of(cfg)
    staging = root / f".{name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    prepare_scene_dir(staging)
    for frame_index, pose in enumerate(poses):
        frame = renderer.render(intrinsics, pose, cfg.width, cfg.height, cfg.supersampling)
        write_frame(staging, frame_index, frame, pose)
    write_intrinsics(staging, intrinsics)
    summary = {
        "room_kind": room.kind.value,
        "room_size_m": list(room.size),
        "objects": room.object_counts,
        "primitives": len(room.primitives),
    }
    write_marker(staging, scene_settings(cfg, index), summary)
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    try:
        staging.rename(final)
    except OSError:
        # Another process finished the same scene first; keep its copy if it is complete.
        if read_marker_settings(final) != scene_settings(cfg, index):
            raise
        shutil.rmtree(staging)
    return (
        f"{name}: {room.kind.value}, {len(room.primitives)} primitives, {len(poses)} frames "
        f"in {time.perf_counter() - started:.1f} s"
    )


def _generate_job(job: tuple[SyntheticCfg, Path, int]) -> str:
    return generate_scene(*job)


def _tune_worker_allocator() -> None:
    """Keep freed memory in a worker's heap (glibc only; elsewhere nothing changes).

    Every frame allocates and frees the same large temporaries; by default glibc serves them
    with fresh pages from the system each time, and the page faults cost about a third of the
    rendering time. Only worker processes get this: the caller's allocator is left alone.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(_M_MMAP_THRESHOLD, _WORKER_MMAP_THRESHOLD)
    libc.mallopt(_M_TRIM_THRESHOLD, _WORKER_TRIM_THRESHOLD)


def generate_dataset(cfg: SyntheticCfg, root: str | Path) -> SyntheticSplit:
    """Make sure ``root`` holds the synthetic dataset of ``cfg``; generate what is missing.

    Writes the label tsv, every scene whose marker does not match ``cfg`` and the split files
    ``splits/train.txt`` and ``splits/test.txt``. Returns the scene names of both splits.
    """
    _check(cfg)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    write_text_if_changed(root / LABELS_TSV, labels_tsv())
    total = cfg.num_train_scenes + cfg.num_test_scenes
    names = [scene_name(i) for i in range(total)]
    missing = [
        i for i in range(total) if read_marker_settings(root / names[i]) != scene_settings(cfg, i)
    ]
    if missing:
        log.info("generating %d synthetic scenes under %s", len(missing), root)
        workers = min(cfg.num_workers, len(missing))
        if workers > 1:
            # Fresh interpreters: safe whatever threads the caller has started.
            context = multiprocessing.get_context("spawn")
            with context.Pool(workers, initializer=_tune_worker_allocator) as pool:
                jobs = [(cfg, root, index) for index in missing]
                for summary in pool.imap_unordered(_generate_job, jobs):
                    log.info("%s", summary)
        else:
            for index in missing:
                log.info("%s", generate_scene(cfg, root, index))
    split = SyntheticSplit(train=names[: cfg.num_train_scenes], test=names[cfg.num_train_scenes :])
    write_text_if_changed(root / "splits" / "train.txt", "\n".join(split.train) + "\n")
    write_text_if_changed(
        root / "splits" / "test.txt", "\n".join(split.test) + "\n" if split.test else ""
    )
    return split
