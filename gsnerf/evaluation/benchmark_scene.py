"""A random but geometrically valid scene for benchmarks: cameras on an arc facing a plane.

The plane passes through the look-at point ``P = (0, 0, distance)`` with its normal tilted by
``tilt`` radians about the x axis from ``-z``, so the depth varies over each image (about 2-3 m
with the defaults). Source cameras sit on a horizontal arc of radius ``distance`` around ``P``,
spanning ``arc`` radians and all looking at ``P``; the target sits between the middle two.
Every pixel's depth is the exact ray-plane intersection and its colour and label are read from
random textures fixed to the plane, so the views agree with each other as real photographs of one
surface would. Example: the camera at arc angle 0 is at the origin looking along +z, and with
``tilt = 0`` its depth is ``distance`` everywhere.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from gsnerf.data.view_selection import mvs_neighbours
from gsnerf.geometry.camera import camera_rays, pixel_grid
from gsnerf.geometry.camera_path import look_at
from gsnerf.types import Example, Views


@dataclass
class PlaneSceneCfg:
    # Distance from every camera to the look-at point on the plane, metres.
    distance: float = 2.5
    # Tilt of the plane's normal away from the cameras' mean viewing axis, radians.
    tilt: float = 0.35
    # Angle spanned by the arc of source cameras, radians.
    arc: float = 0.5
    # Focal length as a fraction of the image width (ScanNet at 320x240: about 0.9).
    focal: float = 0.9
    # Near and far bound of every view, metres (spec 1.7: 0.1, 10).
    near: float = 0.1
    far: float = 10.0
    # Cells per side of the colour texture, over a square of 2 * texture_extent metres.
    texture_cells: int = 64
    # Cells per side of the label texture.
    label_cells: int = 8
    # Half-side of the textured square of the plane, metres.
    texture_extent: float = 4.0
    # MVS neighbours of each source view (spec 1.6: 3).
    num_mvs_neighbours: int = 3


def _render_plane(
    pose: Float[Tensor, "4 4"],
    intrinsics: Float[Tensor, "3 3"],
    height: int,
    width: int,
    colours: Float[Tensor, "3 n n"],
    labels: Float[Tensor, "1 m m"],
    cfg: PlaneSceneCfg,
) -> tuple[Float[Tensor, "3 h w"], Float[Tensor, "h w"], Tensor]:
    """Image, z-depth and labels of the plane seen by one camera."""
    normal = torch.tensor([0.0, math.sin(cfg.tilt), -math.cos(cfg.tilt)])
    anchor = torch.tensor([0.0, 0.0, cfg.distance])
    grid = pixel_grid(height, width).reshape(-1, 2)
    origins, directions, z_per_distance = camera_rays(intrinsics, pose, grid)
    # Ray-plane intersection: n . (o + t d - P) = 0.
    distance = ((anchor - origins) @ normal) / (directions @ normal)
    points = origins + distance[:, None] * directions
    # In-plane coordinates: x along world x, y along the tilted plane's down direction.
    plane_y = torch.linalg.cross(normal, torch.tensor([1.0, 0.0, 0.0]))
    uv = torch.stack(
        [(points - anchor) @ torch.tensor([1.0, 0.0, 0.0]), (points - anchor) @ plane_y]
    )
    uv = (uv.T / cfg.texture_extent).reshape(1, height, width, 2)
    image = F.grid_sample(
        colours[None], uv, mode="bilinear", padding_mode="reflection", align_corners=False
    )[0]
    label = F.grid_sample(
        labels[None], uv, mode="nearest", padding_mode="reflection", align_corners=False
    )[0, 0]
    depth = (distance * z_per_distance).reshape(height, width)
    return image, depth, label.round().long()


def plane_example(
    num_views: int,
    height: int,
    width: int,
    num_classes: int,
    seed: int,
    cfg: PlaneSceneCfg | None = None,
) -> Example:
    """A batch of one :class:`Example` of the plane scene (module doc), with GT depth and labels."""
    cfg = cfg or PlaneSceneCfg()
    if num_views < 2:
        raise ValueError(f"plane_example: needs at least 2 source views, got {num_views}")
    generator = torch.Generator().manual_seed(seed)
    colours = torch.rand(3, cfg.texture_cells, cfg.texture_cells, generator=generator)
    label_map = torch.randint(
        num_classes, (1, cfg.label_cells, cfg.label_cells), generator=generator
    )
    intrinsics = torch.tensor(
        [
            [cfg.focal * width, 0.0, (width - 1) / 2],
            [0.0, cfg.focal * width, (height - 1) / 2],
            [0.0, 0.0, 1.0],
        ]
    )
    anchor, down = torch.tensor([0.0, 0.0, cfg.distance]), torch.tensor([0.0, 1.0, 0.0])
    angles = torch.linspace(-cfg.arc / 2, cfg.arc / 2, num_views).tolist()
    middle = num_views // 2
    angles.append((angles[middle - 1] + angles[middle]) / 2)
    frames = []
    for angle in angles:
        centre = anchor + cfg.distance * torch.tensor([math.sin(angle), 0.0, -math.cos(angle)])
        pose = look_at(centre, anchor, down)
        frames.append(
            (pose, *_render_plane(pose, intrinsics, height, width, colours, label_map.float(), cfg))
        )

    def views(selected: list[tuple], first_id: int) -> Views:
        count = len(selected)
        return Views(
            images=torch.stack([frame[1] for frame in selected])[None],
            intrinsics=intrinsics.expand(1, count, 3, 3).clone(),
            cam_to_world=torch.stack([frame[0] for frame in selected])[None],
            near=torch.full((1, count), cfg.near),
            far=torch.full((1, count), cfg.far),
            depths=torch.stack([frame[2] for frame in selected])[None],
            labels=torch.stack([frame[3] for frame in selected])[None],
            frame_ids=torch.arange(first_id, first_id + count)[None],
        )

    sources = views(frames[:num_views], 0)
    neighbours = mvs_neighbours(
        sources.cam_to_world[0], min(cfg.num_mvs_neighbours, num_views - 1), 0.0
    )
    return Example(
        sources=sources,
        target=views(frames[num_views:], num_views),
        source_neighbours=neighbours[None],
        scenes=["benchmark_plane"],
    )
