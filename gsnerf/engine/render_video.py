"""Fly-through video of one scene: K source frames encoded once, a smooth camera path rendered.

The path's keyframes are ``path_keyframes`` consecutive frames from the middle of the scene's
test-protocol source pool (spec 1.5); the sources are the K pool frames nearest to the
keyframes' mean camera centre, in frame order. Their Semantic Geo-Reasoner output is computed
once and reused for every frame (spec 9: only D_T and the rays are per frame). Paths:

- ``interpolate``: through the keyframes in order (centres lerped, rotations slerped);
- ``spiral``: around the vertical axis through the centroid of the sources' predicted depths, at
  the sources' mean height, looking at that centroid; "down" is the sources' mean y axis.

Each video frame is colour | semantic colour map | depth | class legend, side by side. Depth
colours use one range for the whole video (quantiles of the source depths), so they do not
flicker from frame to frame.
"""

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import cv2
import imageio.v2 as imageio
import numpy as np
import torch
import torch.nn.functional as F
from hydra.core.config_store import ConfigStore
from jaxtyping import Float, UInt8
from omegaconf import DictConfig
from torch import Tensor

from gsnerf.config import RootCfg, load_config
from gsnerf.data.dataset import open_split
from gsnerf.data.scene_reader import SceneReader
from gsnerf.data.view_selection import mvs_neighbours, split_test_frames
from gsnerf.engine.device import (
    autocast_context,
    resolve_device,
    synchronize,
)
from gsnerf.engine.logging import RunLogger, setup_file_logging
from gsnerf.engine.runs import _load_for_evaluation, require_scene
from gsnerf.evaluation.evaluator import apply_inference_options, rate_after_first
from gsnerf.evaluation.palette import colorize_labels, legend_image
from gsnerf.geometry.camera import scale_intrinsics, unproject_depth
from gsnerf.geometry.camera_path import interpolate_poses, spiral_poses
from gsnerf.types import Example, ImageRender, SourceGeometry, Views

log = logging.getLogger(__name__)


class Trajectory(str, Enum):
    """Shape of the camera path."""

    # Through the source poses in frame order.
    INTERPOLATE = "interpolate"
    # Around the scene centre at the sources' mean height.
    SPIRAL = "spiral"


@dataclass
class RenderCfg:
    # Camera path: "interpolate" (through the source poses) or "spiral" (module doc).
    trajectory: str = Trajectory.INTERPOLATE.value
    # Frames of the video.
    frames: int = 120
    # Frames per second of the video file.
    fps: float = 24.0
    # Video file; a relative path is taken inside the run directory.
    output: str = "video.mp4"
    # Consecutive source-pool frames, from the middle of the pool, the interpolated path passes
    # through; their mean camera centre picks the sources.
    path_keyframes: int = 4
    # Spiral radius as a fraction of the sources' mean distance from the spiral's axis.
    spiral_radius: float = 0.5
    # Rise and fall of the spiral as a fraction of its radius.
    spiral_height: float = 0.1
    # Turns of the spiral over the whole video.
    spiral_turns: float = 1.0
    # Quantiles of the source depths mapped to the ends of the depth colour map.
    depth_quantiles: list[float] = field(default_factory=lambda: [0.02, 0.98])

    def __post_init__(self) -> None:
        if self.trajectory not in {choice.value for choice in Trajectory}:
            raise ValueError(
                f"render.trajectory: unknown value {self.trajectory!r}, expected one of "
                f"{[choice.value for choice in Trajectory]}"
            )
        if self.frames < 1 or self.fps <= 0 or self.path_keyframes < 1:
            raise ValueError(
                "render: frames and path_keyframes must be >= 1 and fps > 0, got "
                f"{self.frames}, {self.path_keyframes} and {self.fps}"
            )


@dataclass
class RenderRootCfg(RootCfg):
    # Fly-through settings of render.py.
    render: RenderCfg = field(default_factory=RenderCfg)


RENDER_SCHEMA_NAME = "gsnerf_render_schema"


def register_render_schema() -> None:
    """Give Hydra the typed schema of render.yaml (the training tree plus ``render``)."""
    ConfigStore.instance().store(name=RENDER_SCHEMA_NAME, node=RenderRootCfg)


def load_render_config(dict_cfg: DictConfig) -> RenderRootCfg:
    """:func:`gsnerf.config.load_config` with the :class:`RenderRootCfg` schema."""
    return load_config(dict_cfg, RenderRootCfg)


def choose_frames(scene: SceneReader, cfg: RenderRootCfg) -> tuple[list[int], list[int]]:
    """Path keyframes and the K source frames nearest their mean centre (module doc)."""
    views = cfg.dataset.views
    pool, _ = split_test_frames(
        scene.frame_ids,
        views.pool_stride,
        views.pool_limit,
        views.query_offset,
        views.query_stride,
        views.max_queries,
    )
    if len(pool) < views.num_source_views:
        raise ValueError(
            f"scene {scene.name}: the source pool has {len(pool)} frames, fewer than "
            f"dataset.views.num_source_views={views.num_source_views}"
        )
    count = min(cfg.render.path_keyframes, len(pool))
    start = (len(pool) - count) // 2
    keyframes = pool[start : start + count]
    position = {frame_id: i for i, frame_id in enumerate(scene.frame_ids)}
    centres = scene.cam_to_world[[position[frame_id] for frame_id in pool], :3, 3]
    path_centre = centres[start : start + count].mean(dim=0)
    distances = (centres - path_centre).norm(dim=-1)
    nearest = torch.sort(distances, stable=True).indices[: views.num_source_views]
    return keyframes, sorted(pool[i] for i in nearest.tolist())


def source_example(scene: SceneReader, frame_ids: list[int], cfg: RootCfg) -> Example:
    """A batch of one example with the chosen sources; its target is the first source."""
    frames = [scene.read(frame_id) for frame_id in frame_ids]
    count = len(frames)
    sources = Views(
        images=torch.stack([frame.image for frame in frames])[None],
        intrinsics=torch.stack([frame.intrinsics for frame in frames])[None],
        cam_to_world=torch.stack([frame.cam_to_world for frame in frames])[None],
        near=torch.full((1, count), cfg.dataset.near),
        far=torch.full((1, count), cfg.dataset.far),
        depths=None,
        labels=None,
        frame_ids=torch.tensor([frame_ids]),
    )
    neighbours = mvs_neighbours(
        sources.cam_to_world[0],
        min(cfg.dataset.views.num_mvs_neighbours, count - 1),
        cfg.dataset.views.direction_weight,
    )
    return Example(
        sources=sources,
        target=target_views(sources, sources.cam_to_world[0, 0]),
        source_neighbours=neighbours[None],
        scenes=[scene.name],
    )


def target_views(sources: Views, pose: Float[Tensor, "4 4"]) -> Views:
    """A target camera at ``pose`` with the first source's intrinsics, size and depth range."""
    return Views(
        images=torch.zeros_like(sources.images[:, :1]),
        intrinsics=sources.intrinsics[:, :1],
        cam_to_world=pose[None, None].to(sources.cam_to_world),
        near=sources.near[:, :1],
        far=sources.far[:, :1],
        depths=None,
        labels=None,
        frame_ids=torch.full_like(sources.frame_ids[:, :1], -1),
    )


def source_points(geometry: SourceGeometry, sources: Views) -> Float[Tensor, "n 3"]:
    """World points of the finest source depths inside each view's depth range."""
    depths = geometry.depths[-1][0].float()
    image_size = (sources.images.shape[-1], sources.images.shape[-2])
    intrinsics = scale_intrinsics(
        sources.intrinsics[0], image_size, (depths.shape[-1], depths.shape[-2])
    )
    points = unproject_depth(depths, intrinsics, sources.cam_to_world[0])
    near, far = sources.near[0, :, None, None], sources.far[0, :, None, None]
    return points[(depths > near) & (depths < far)]


def camera_path(
    cfg: RenderCfg,
    keyframes: Float[Tensor, "k 4 4"],
    sources: Views,
    points: Float[Tensor, "n 3"],
) -> Tensor:
    """The poses of every video frame (module doc)."""
    if Trajectory(cfg.trajectory) is Trajectory.INTERPOLATE:
        return interpolate_poses(keyframes.float(), cfg.frames)
    poses = sources.cam_to_world[0].float()
    if points.shape[0] == 0:
        raise ValueError(
            "render.trajectory=spiral: no source depth lies inside [near, far], so the scene "
            "centre is unknown; use render.trajectory=interpolate"
        )
    down = F.normalize(poses[:, :3, 1].mean(dim=0), dim=0)
    centroid = points.mean(dim=0)
    offsets = poses[:, :3, 3] - centroid
    height = (offsets @ down).mean()
    horizontal = offsets - (offsets @ down)[:, None] * down
    radius = cfg.spiral_radius * float(horizontal.norm(dim=-1).mean())
    axis_point = centroid + height * down
    return spiral_poses(
        axis_point, centroid, down, radius, cfg.spiral_height * radius, cfg.frames, cfg.spiral_turns
    )


def compose_frame(
    image: ImageRender, depth_range: tuple[float, float], legend: UInt8[np.ndarray, "h _ 3"]
) -> UInt8[np.ndarray, "_ _ 3"]:
    """Colour | semantic colours | depth (fixed range, turbo) | legend, padded to even sides."""
    rgb = (image.rgb[0].float().clamp(0, 1).permute(1, 2, 0) * 255).round().byte().cpu().numpy()
    labels = colorize_labels(image.semantic_logits[0].argmax(0))
    low, high = depth_range
    scaled = ((image.depth[0].float() - low) / max(high - low, 1e-6)).clamp(0, 1)
    gray = (scaled * 255).round().byte().cpu().numpy()
    depth = cv2.cvtColor(cv2.applyColorMap(gray, cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)
    frame = np.concatenate([rgb, labels, depth, legend], axis=1)
    # H.264 with 4:2:0 chroma needs even sides.
    pad = ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0))
    return np.pad(frame, pad)


def run_render(cfg: RenderRootCfg) -> dict:
    """Render the fly-through of ``cfg.scene`` with ``cfg.ckpt``; returns a summary."""
    scene_name = require_scene(cfg, "the scene to fly through")
    run_dir = Path(cfg.paths.output_dir)
    setup_file_logging(run_dir, "render")
    device = resolve_device(cfg.train.device)
    model, class_names = _load_for_evaluation(cfg, device)
    model.eval()
    # The first frame compiles what eval.compile compiles; the fps logged below leaves it out.
    apply_inference_options(model, cfg.eval, device)
    dataset = dataclasses.replace(cfg.dataset, test_scenes=[scene_name])
    scene = open_split(dataset, "test")[0]
    keyframe_ids, frame_ids = choose_frames(scene, cfg)
    example = source_example(scene, frame_ids, cfg).to(device)
    keyframes = scene.cam_to_world[[scene.frame_ids.index(frame_id) for frame_id in keyframe_ids]]
    log.info(
        "scene %s: sources %s, %s path of %d frames (keyframes %s)",
        scene.name,
        frame_ids,
        cfg.render.trajectory,
        cfg.render.frames,
        keyframe_ids,
    )

    output = Path(cfg.render.output)
    output = output if output.is_absolute() else run_dir / output
    output.parent.mkdir(parents=True, exist_ok=True)
    height = example.sources.images.shape[-2]
    legend = legend_image(class_names, height, row_height=max(8, min(20, height // 10)))
    progress = RunLogger(run_dir, enabled=True, use_tensorboard=False).progress(
        cfg.render.frames, 0, "render"
    )
    with torch.inference_mode(), autocast_context(cfg.eval.precision, device):
        started = time.perf_counter()
        geometry = model.encode_sources(example)
        synchronize(device)
        encode_seconds = time.perf_counter() - started
        points = source_points(geometry, example.sources)
        quantiles = torch.tensor(cfg.render.depth_quantiles, device=device)
        # torch.quantile takes at most 2^24 values; an even subset of about 1e5 is plenty.
        z = geometry.depths[-1].float().flatten()
        low, high = torch.quantile(z[:: max(1, z.numel() // 100_000)], quantiles).tolist()
        poses = camera_path(cfg.render, keyframes.to(device), example.sources, points)
        frame_seconds: list[float] = []
        writer = imageio.get_writer(
            output,
            fps=cfg.render.fps,
            codec="libx264",
            macro_block_size=1,
            ffmpeg_log_level="error",
        )
        with writer:
            for pose in poses:
                frame_example = dataclasses.replace(
                    example, target=target_views(example.sources, pose)
                )
                started = time.perf_counter()
                image = model.render_image(frame_example, geometry, cfg.eval.chunk_rays)
                synchronize(device)
                frame_seconds.append(time.perf_counter() - started)
                writer.append_data(compose_frame(image, (low, high), legend))
                progress.update(1)
    progress.close()
    fps = rate_after_first(frame_seconds)
    log.info(
        "wrote %s: %d frames, %.2f fps rendered after the first frame (first frame %.2f s, "
        "source encoding %.2f s, once)",
        output,
        len(poses),
        fps,
        frame_seconds[0],
        encode_seconds,
    )
    return {
        "path": str(output),
        "frames": len(poses),
        "fps": fps,
        "first_frame_seconds": frame_seconds[0],
        "encode_seconds": encode_seconds,
    }
