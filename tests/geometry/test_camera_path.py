"""Camera paths: look-at poses, lerp + slerp between keyframes, spirals (hand-computed poses)."""

import math

import pytest
import torch

from gsnerf.geometry.camera_path import interpolate_poses, look_at, spiral_poses

DOWN = torch.tensor([0.0, 1.0, 0.0])


def rotation_about_y(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def pose(rotation: torch.Tensor, centre: list[float]) -> torch.Tensor:
    result = torch.eye(4)
    result[:3, :3], result[:3, 3] = rotation, torch.tensor(centre)
    return result


def test_look_at_straight_ahead_is_the_identity() -> None:
    torch.testing.assert_close(
        look_at(torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]), DOWN), torch.eye(4)
    )


def test_look_at_a_target_to_the_right_turns_45_degrees_about_y() -> None:
    result = look_at(torch.zeros(3), torch.tensor([1.0, 0.0, 1.0]), DOWN)
    torch.testing.assert_close(result[:3, :3], rotation_about_y(math.pi / 4))


def test_halfway_between_two_keyframes() -> None:
    keyframes = torch.stack(
        [pose(torch.eye(3), [0.0, 0.0, 0.0]), pose(rotation_about_y(math.pi / 2), [2.0, 0.0, 4.0])]
    )
    path = interpolate_poses(keyframes, 3)
    torch.testing.assert_close(path[0], keyframes[0])
    torch.testing.assert_close(path[2], keyframes[1], atol=1e-6, rtol=0)
    torch.testing.assert_close(path[1], pose(rotation_about_y(math.pi / 4), [1.0, 0.0, 2.0]))


def test_path_passes_through_every_keyframe() -> None:
    keyframes = torch.stack([pose(rotation_about_y(a), [a, 0.0, 0.0]) for a in (0.0, 0.3, -0.2)])
    path = interpolate_poses(keyframes, 5)
    torch.testing.assert_close(path[[0, 2, 4]], keyframes, atol=1e-6, rtol=0)
    # A quarter of the way from keyframe 0 to 1 in the frames' spacing: frame 1 at t = 0.5.
    torch.testing.assert_close(path[1][:3, :3], rotation_about_y(0.15), atol=1e-6, rtol=0)


def test_spiral_circles_the_axis_and_looks_at_the_target() -> None:
    centre, target = torch.tensor([0.0, -1.0, 3.0]), torch.tensor([0.0, 0.0, 3.0])
    path = spiral_poses(centre, target, DOWN, radius=2.0, height=0.0, frames=8)
    assert path.shape == (8, 4, 4)
    offsets = path[:, :3, 3] - centre
    # On the circle: radius 2 about the y axis through the centre, at the centre's height.
    torch.testing.assert_close(offsets[:, [0, 2]].norm(dim=-1), torch.full((8,), 2.0))
    torch.testing.assert_close(offsets[:, 1], torch.zeros(8))
    to_target = torch.nn.functional.normalize(target - path[:, :3, 3], dim=-1)
    torch.testing.assert_close(path[:, :3, 2], to_target)
    # Rotations stay orthonormal.
    rotations = path[:, :3, :3]
    torch.testing.assert_close(rotations @ rotations.transpose(1, 2), torch.eye(3).expand(8, 3, 3))


def test_spiral_rises_by_its_height() -> None:
    centre = torch.zeros(3)
    path = spiral_poses(centre, torch.tensor([0.0, 0.0, 5.0]), DOWN, 1.0, 0.5, frames=4)
    # Frame 1 is a quarter period in: sin = 1, so it sits 0.5 up, i.e. at y = -0.5.
    assert path[1, 1, 3] == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="radius"):
        spiral_poses(centre, centre, DOWN, 0.0, 0.0, frames=4)


@pytest.mark.parametrize("turns", [1.0, 0.5])
def test_spiral_steps_a_quarter_turn_per_frame_times_turns(turns: float) -> None:
    centre = torch.tensor([0.0, -1.0, 3.0])
    path = spiral_poses(centre, torch.tensor([0.0, 0.0, 3.0]), DOWN, 2.0, 0.0, 4, turns)
    offsets = path[:, :3, 3] - centre
    first = offsets[0]
    # Angle of each frame from frame 0 about the down axis: 0, 90, 180, 270 degrees times turns
    # (4 frames split the path evenly, the last one short of closing the loop).
    cosines = (offsets @ first) / 4.0
    sines = (torch.linalg.cross(first.expand(4, 3), offsets) @ DOWN) / 4.0
    expected = torch.tensor([0.0, 0.5, 1.0, 1.5]) * math.pi * turns
    torch.testing.assert_close(cosines, expected.cos(), atol=1e-5, rtol=0)
    # The docstring leaves the turning direction open: compare sines up to one common sign.
    direction = torch.sign(sines[1])
    torch.testing.assert_close(direction * sines, expected.sin(), atol=1e-5, rtol=0)


def test_spiral_height_follows_one_sine_period_whatever_the_turns() -> None:
    centre = torch.zeros(3)
    path = spiral_poses(centre, torch.tensor([0.0, 0.0, 5.0]), DOWN, 1.0, 0.5, frames=4, turns=2.0)
    # Up by 0.5 sin(2 pi f / 4) (up is -y), one period over the path even with two turns.
    expected_y = torch.tensor([0.0, -0.5, 0.0, 0.5])
    torch.testing.assert_close(path[:, 1, 3], expected_y, atol=1e-6, rtol=0)


@pytest.mark.gpu
def test_paths_on_cuda_match_the_cpu() -> None:
    keyframes = torch.stack([pose(rotation_about_y(a), [a, 0.0, 0.0]) for a in (0.0, 0.3, -0.2)])
    torch.testing.assert_close(
        interpolate_poses(keyframes.cuda(), 5).cpu(), interpolate_poses(keyframes, 5)
    )
    centre, target = torch.tensor([0.0, -1.0, 3.0]), torch.tensor([0.0, 0.0, 3.0])
    torch.testing.assert_close(
        spiral_poses(centre.cuda(), target.cuda(), DOWN.cuda(), 2.0, 0.5, frames=6).cpu(),
        spiral_poses(centre, target, DOWN, 2.0, 0.5, frames=6),
    )
