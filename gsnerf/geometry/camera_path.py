"""Camera paths for fly-through videos: look-at poses, keyframe interpolation, spirals.

Poses are camera-to-world 4x4 with OpenCV axes (x right, y down, z forward).

- :func:`look_at`: ``z = unit(target - centre)``, ``x = unit(down x z)``, ``y = z x x``.
- :func:`interpolate_poses`: ``frames`` poses spread evenly over the ``k - 1`` segments between
  consecutive keyframes; within a segment at fraction ``t`` the centre is ``(1 - t) c_i + t c_j``
  and the rotation the spherical interpolation (slerp) of the two rotations, which turns at a
  constant rate about one axis.
- :func:`spiral_poses`: one pose per frame on a circle of ``radius`` about the axis through
  ``centre`` along ``down``, rising and falling by ``height`` (one sine period over the path),
  every camera looking at ``target``.
"""

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float
from kornia.geometry.quaternion import Quaternion
from torch import Tensor


def look_at(
    centre: Float[Tensor, "3"], target: Float[Tensor, "3"], down: Float[Tensor, "3"]
) -> Float[Tensor, "4 4"]:
    """Pose at ``centre`` looking at ``target`` with its y axis toward ``down`` (module doc).

    Example: centre 0, target (0, 0, 1), down (0, 1, 0) -> the identity.
    """
    forward = F.normalize(target - centre, dim=0)
    right = F.normalize(torch.linalg.cross(down, forward), dim=0)
    pose = torch.eye(4, dtype=centre.dtype, device=centre.device)
    pose[:3, 0], pose[:3, 1], pose[:3, 2] = right, torch.linalg.cross(forward, right), forward
    pose[:3, 3] = centre
    return pose


def interpolate_poses(keyframes: Float[Tensor, "k 4 4"], frames: int) -> Float[Tensor, "n 4 4"]:
    """``frames`` poses through the keyframes in order: lerp of centres, slerp of rotations.

    Frame ``f`` sits at ``u = f (k - 1) / (frames - 1)`` keyframe intervals, so the first and
    last frames are the first and last keyframes. Example: two keyframes, three frames -> the
    first keyframe, the halfway pose, the second keyframe.
    """
    count = keyframes.shape[0]
    if count < 1 or frames < 1:
        raise ValueError(
            f"interpolate_poses: needs >= 1 keyframe and >= 1 frame, got {count} and {frames}"
        )
    if count == 1 or frames == 1:
        return keyframes[:1].expand(frames, 4, 4).clone()
    # On the keyframes' device: kornia's slerp mixes its inputs' devices without moving them.
    positions = torch.linspace(0, count - 1, frames, dtype=torch.float64, device=keyframes.device)
    start = positions.floor().long().clamp(max=count - 2)
    fraction = (positions - start).to(keyframes.dtype)
    first, second = keyframes[start], keyframes[start + 1]
    rotation = (
        Quaternion.from_matrix(first[:, :3, :3])
        .slerp(Quaternion.from_matrix(second[:, :3, :3]), fraction[:, None])
        .matrix()
    )
    poses = torch.eye(4, dtype=keyframes.dtype, device=keyframes.device).repeat(frames, 1, 1)
    poses[:, :3, :3] = rotation
    weight = fraction[:, None]
    poses[:, :3, 3] = (1 - weight) * first[:, :3, 3] + weight * second[:, :3, 3]
    return poses


def spiral_poses(
    centre: Float[Tensor, "3"],
    target: Float[Tensor, "3"],
    down: Float[Tensor, "3"],
    radius: float,
    height: float,
    frames: int,
    turns: float = 1.0,
) -> Float[Tensor, "n 4 4"]:
    """``frames`` look-at poses on a spiral about the ``down`` axis through ``centre``.

    Frame ``f`` at angle ``a = 2 pi turns f / frames`` sits at ``centre + radius (cos a e1 +
    sin a e2) - height sin(2 pi f / frames) down`` with ``e1, e2`` orthonormal and orthogonal to
    ``down``. Example: down = (0, 1, 0) puts the circle in the x-z plane.
    """
    if frames < 1 or radius <= 0:
        raise ValueError(f"spiral_poses: needs frames >= 1 and radius > 0, got {frames}, {radius}")
    down = F.normalize(down, dim=0)
    # Any axis not parallel to down gives the circle's first direction.
    helper = torch.zeros_like(down)
    helper[int(down.abs().argmin())] = 1.0
    first = F.normalize(torch.linalg.cross(down, helper), dim=0)
    second = torch.linalg.cross(down, first)
    poses = []
    for frame in range(frames):
        angle = 2 * math.pi * turns * frame / frames
        bob = height * math.sin(2 * math.pi * frame / frames)
        position = centre + radius * (math.cos(angle) * first + math.sin(angle) * second)
        poses.append(look_at(position - bob * down, target, down))
    return torch.stack(poses)
