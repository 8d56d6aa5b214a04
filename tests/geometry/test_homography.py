"""Plane-sweep warp against hand-computed shifts and the camera.py projection path."""

import math

import torch

from gsnerf.geometry.camera import project_points, unproject_depth
from gsnerf.geometry.homography import plane_sweep_warp


def intrinsics(focal: float, height: int, width: int) -> torch.Tensor:
    """[1, 3, 3] pinhole with the principal point at the image centre."""
    return torch.tensor(
        [[[focal, 0.0, (width - 1) / 2], [0.0, focal, (height - 1) / 2], [0.0, 0.0, 1.0]]]
    )


def pose(rotation: torch.Tensor, translation: list[float]) -> torch.Tensor:
    """[1, 4, 4] camera-to-world from a 3x3 rotation and a camera centre."""
    out = torch.eye(4)
    out[:3, :3] = rotation
    out[:3, 3] = torch.tensor(translation)
    return out[None]


def rotation_xyz(ax: float, ay: float, az: float) -> torch.Tensor:
    cx, sx, cy, sy, cz, sz = (
        math.cos(ax),
        math.sin(ax),
        math.cos(ay),
        math.sin(ay),
        math.cos(az),
        math.sin(az),
    )
    rx = torch.tensor([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = torch.tensor([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return (rz @ ry @ rx).float()


def test_identical_cameras_give_identity_warp_at_every_depth() -> None:
    torch.manual_seed(0)
    height, width = 5, 7
    k = intrinsics(6.0, height, width)
    c2w = pose(rotation_xyz(0.3, -0.2, 0.5), [1.0, -2.0, 0.5])
    features = torch.randn(1, 4, height, width)
    depths = torch.tensor([0.5, 1.0, 3.0, 7.5]).view(1, 4, 1, 1).expand(1, 4, height, width)

    warped, valid = plane_sweep_warp(features, k, c2w, k, c2w, depths)

    assert warped.shape == (1, 4, 4, height, width)
    for slice_index in range(4):
        torch.testing.assert_close(warped[:, :, slice_index], features, atol=1e-5, rtol=0)
    assert valid.all()


def test_translated_source_shifts_by_focal_times_baseline_over_depth() -> None:
    # Source moved by t_x = 0.2 m along +x, f = 10 px: shift = f t_x / d = 2, 1, 4 px at
    # d = 1, 2, 0.5 m, so warped[u] = source[u - shift] and zero where u - shift < 0.
    torch.manual_seed(1)
    height, width = 4, 9
    k = intrinsics(10.0, height, width)
    ref = pose(torch.eye(3), [0.0, 0.0, 0.0])
    src = pose(torch.eye(3), [0.2, 0.0, 0.0])
    ramp = torch.arange(width, dtype=torch.float32).expand(height, width)
    features = torch.stack([ramp, torch.randn(height, width)])[None]
    depths = torch.tensor([1.0, 2.0, 0.5]).view(1, 3, 1, 1).expand(1, 3, height, width)

    warped, valid = plane_sweep_warp(features, k, src, k, ref, depths)

    for slice_index, shift in enumerate([2, 1, 4]):
        expected = torch.zeros_like(features)
        expected[..., shift:] = features[..., : width - shift]
        torch.testing.assert_close(warped[:, :, slice_index], expected, atol=1e-5, rtol=0)
        # On the ramp channel the warp reads the column index minus the shift, exactly.
        columns = torch.arange(shift, width, dtype=torch.float32)
        torch.testing.assert_close(warped[0, 0, slice_index, 0, shift:], columns - shift)
        # Column shift - 1 reads u' = -1, outside the pixel area [-0.5, w - 0.5].
        assert not valid[0, slice_index, :, :shift].any()
        assert valid[0, slice_index, :, shift:].all()


def test_rows_past_the_bottom_edge_are_invalid_in_a_wide_image() -> None:
    # Source moved by t_y = -0.2 m, f = 10 px, d = 1 m: row v reads source row v + 2, so rows 2
    # and 3 of a 4-row image read rows 4 and 5, past the pixel area's bottom edge at 3.5 (and
    # inside its width of 9 columns: the rows must be checked against the height).
    height, width = 4, 9
    k = intrinsics(10.0, height, width)
    ref = pose(torch.eye(3), [0.0, 0.0, 0.0])
    src = pose(torch.eye(3), [0.0, -0.2, 0.0])
    rows = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
    depths = torch.ones(1, 1, height, width)

    warped, valid = plane_sweep_warp(rows[None, None], k, src, k, ref, depths)

    torch.testing.assert_close(warped[0, 0, 0, :2], rows[2:])
    assert valid[0, 0, :2].all() and not valid[0, 0, 2:].any()


def test_point_behind_source_camera_samples_zeros() -> None:
    # Source 5 m in front of the reference, same orientation: at d = 1 m the point is 4 m behind
    # it (its mirrored projection would land inside the image); at d = 10 m it is 5 m in front.
    height, width = 6, 6
    k = intrinsics(4.0, height, width)
    ref = pose(torch.eye(3), [0.0, 0.0, 0.0])
    src = pose(torch.eye(3), [0.0, 0.0, 5.0])
    features = torch.ones(1, 2, height, width)
    depths = torch.tensor([1.0, 5.0, 10.0]).view(1, 3, 1, 1).expand(1, 3, height, width)

    warped, valid = plane_sweep_warp(features, k, src, k, ref, depths)

    assert torch.equal(warped[:, :, 0], torch.zeros(1, 2, height, width))
    assert not valid[:, 0].any()
    # d = 5 m puts the point on the source camera plane (z = 0): zeros, no NaN or inf.
    assert torch.equal(warped[:, :, 1], torch.zeros(1, 2, height, width))
    # d = 10 m: the point is at half the reference depth in front of the source, so pixel
    # offsets from the centre double; the central 2x2 pixels stay inside the image.
    torch.testing.assert_close(warped[0, :, 2, 2:4, 2:4], torch.ones(2, 2, 2))
    assert valid[0, 2, 2:4, 2:4].all()


def test_warp_matches_unproject_then_project() -> None:
    # Features that are the pixel coordinates themselves: bilinear sampling of a linear function
    # is exact, so the warp must return the camera.py projection wherever it is valid.
    torch.manual_seed(2)
    height, width = 12, 16
    k_ref = intrinsics(14.0, height, width)
    k_src = torch.tensor([[[12.0, 0.0, 8.2], [0.0, 13.0, 5.1], [0.0, 0.0, 1.0]]])
    ref = pose(rotation_xyz(0.1, 0.2, -0.1), [0.5, 0.3, -1.0])
    src = pose(rotation_xyz(0.05, 0.35, 0.0), [0.9, 0.2, -1.1])
    columns = torch.arange(width, dtype=torch.float32).expand(height, width)
    rows = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
    features = torch.stack([columns, rows])[None]
    depths = 1.0 + 3.0 * torch.rand(1, 3, height, width)

    warped, valid = plane_sweep_warp(features, k_src, src, k_ref, ref, depths)

    for slice_index in range(3):
        world = unproject_depth(depths[:, slice_index], k_ref, ref).reshape(1, -1, 3)
        pixels, z = project_points(world, k_src, src)
        pixels = pixels.reshape(height, width, 2)
        inside = (
            (z.reshape(height, width) > 0)
            & (pixels[..., 0] >= -0.5)
            & (pixels[..., 0] <= width - 0.5)
            & (pixels[..., 1] >= -0.5)
            & (pixels[..., 1] <= height - 0.5)
        )
        assert torch.equal(valid[0, slice_index], inside)
        # Away from the border the bilinear support lies fully inside the image.
        interior = (
            (z.reshape(height, width) > 0)
            & (pixels[..., 0] >= 0)
            & (pixels[..., 0] <= width - 1)
            & (pixels[..., 1] >= 0)
            & (pixels[..., 1] <= height - 1)
        )
        assert interior.sum() > height * width // 4
        got = warped[0, :, slice_index].permute(1, 2, 0)
        torch.testing.assert_close(got[interior], pixels[interior], atol=1e-3, rtol=0)


def test_gradient_reaches_source_features_and_is_finite() -> None:
    height, width = 4, 5
    k = intrinsics(5.0, height, width)
    ref = pose(torch.eye(3), [0.0, 0.0, 0.0])
    src = pose(rotation_xyz(0.0, 0.3, 0.0), [0.1, 0.0, 1.0])
    features = torch.randn(2, 3, height, width, requires_grad=True)
    depths = torch.tensor([1.0, 2.0]).view(1, 2, 1, 1).expand(2, 2, height, width)

    warped, _ = plane_sweep_warp(
        features,
        k.expand(2, 3, 3),
        src.expand(2, 4, 4),
        k.expand(2, 3, 3),
        ref.expand(2, 4, 4),
        depths,
    )
    warped.square().sum().backward()

    assert torch.isfinite(warped).all()
    assert torch.isfinite(features.grad).all() and features.grad.abs().sum() > 0
