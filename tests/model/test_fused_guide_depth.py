"""The Triton guide depth D_T against the PyTorch one (:mod:`gsnerf.model.target_depth`).

On a CPU the kernels run, through their torch operator, in Triton's interpreter
(``TRITON_INTERPRET=1``, in a process of their own).
"""

import pytest
import torch
from test_cpu_correlation import _intrinsics, _poses
from test_fused_volume_conv_grad import captured_inference_graph
from triton_interpreter import run_in_triton_interpreter

from gsnerf.model import fused_guide_depth
from gsnerf.model.fused_guide_depth import fused_guide_depth_applies
from gsnerf.model.target_depth import TargetDepthCfg, estimate_guide_depth

needs_triton = pytest.mark.skipif(fused_guide_depth.triton is None, reason="needs Triton")

# (batch, views, source height, width, target height, width, target focal / width, config):
# the default D_T at the source size and at twice it, a wider target (empty margins that the
# fill passes cannot reach), a 4 x 4 footprint with a wider fill window and no smoothing, and
# no fill passes with a 3 x 3 filter.
CASES = [
    (2, 3, 24, 32, 24, 32, 0.9, {}),
    (1, 4, 12, 16, 24, 32, 0.9, {}),
    (1, 3, 20, 24, 40, 48, 0.25, {}),
    (2, 2, 20, 20, 21, 19, 0.9, {"footprint_radius": 1.5, "fill_radius": 2, "smoothing": "none"}),
    (1, 3, 16, 24, 16, 24, 0.9, {"fill_iterations": 0, "kernel_size": 3, "sigma_color": 0.5}),
]


def scene(case: tuple, device: str = "cpu") -> tuple:
    """``estimate_guide_depth``'s arguments for ``case``: per source view a background plane
    with a nearer rectangle, scattered holes and a few invalid values (NaN, inf, negative),
    seen from random poses."""
    batch, views, source_height, source_width, height, width, focal, overrides = case
    generator = torch.Generator().manual_seed(views * 10 + batch)
    depth = 3.0 + 0.5 * torch.rand(batch, views, 1, 1, generator=generator)
    depth = depth.expand(batch, views, source_height, source_width).clone()
    for b in range(batch):
        for v in range(views):
            y, x = torch.randint(0, source_height // 2, (2,), generator=generator).tolist()
            rectangle = depth[b, v, y : y + source_height // 3, x : x + source_width // 3]
            rectangle.fill_(1.0 + torch.rand(1, generator=generator).item())
    depth = depth * (torch.rand(depth.shape, generator=generator) > 0.1)
    depth[:, 0, 1, 1], depth[:, 0, 2, 2], depth[:, 0, 3, 3] = float("nan"), float("inf"), -1.0
    poses = _poses(batch * (views + 1), generator, spread=0.6)
    source_k = _intrinsics(batch * views, source_height, source_width)
    target_k = _intrinsics(batch, height, width)
    target_k[:, :2, :2] *= focal / 0.9
    arguments = (
        depth,
        source_k.view(batch, views, 3, 3),
        poses[batch:].view(batch, views, 4, 4),
        target_k,
        poses[:batch],
    )
    return (*(t.to(device) for t in arguments), height, width, TargetDepthCfg(**overrides))


COMPARISON = """
    import torch
    from test_fused_guide_depth import CASES, scene

    from gsnerf.geometry.splatting import reproject_depth_batched
    from gsnerf.model import fused_guide_depth as fused
    from gsnerf.model.target_depth import (
        HoleFill,
        estimate_guide_depth,
        fill_holes,
        smooth_depth,
    )

    # Fewer, larger programs: the interpreter's time goes by operation, not by pixel.
    fused.BLOCK = 4096

    def differs(a, b):
        # Pixels where depth maps a and b differ beyond float32 rounding, or in validity.
        return ((a - b).abs() > 1e-5 * b.abs().clamp_min(1)) | ((a > 0) != (b > 0))

    holes = still_invalid = 0
    for case in CASES:
        arguments = scene(case)
        cfg = arguments[-1]
        parameters = fused.splat_parameters(*arguments[1:5])
        size = arguments[5:7]
        # The splat. Its coordinates round in another order than the PyTorch path's, so a
        # point within rounding of a footprint's edge may cover a pixel more or less: allowed
        # as often as the PyTorch float32 splat differs from its float64 self, plus two.
        splat, splatted = reproject_depth_batched(*arguments[:7], cfg.footprint_radius)
        exact, _ = reproject_depth_batched(
            *(a.double() for a in arguments[:5]), *size, cfg.footprint_radius
        )
        radius, tolerance = cfg.footprint_radius, cfg.snap_tolerance
        kernel = fused.launch_splat(arguments[0], *parameters, *size, radius, tolerance)
        allowed = differs(splat, exact.float()).sum().item() + 2
        assert differs(kernel, exact.float()).sum().item() <= allowed, case
        assert differs(kernel, splat).sum().item() <= 2 * allowed, case
        holes += (~splatted).sum().item()
        # The fill passes and the filter on the PyTorch splat: the same arithmetic.
        filled, valid = fill_holes(
            splat, splatted, HoleFill.FARTHEST, cfg.fill_radius, cfg.fill_iterations
        )
        depth = splat
        for _ in range(cfg.fill_iterations):
            depth = fused.launch_fill(depth, cfg.fill_radius)
        assert torch.equal(depth, filled) and torch.equal(depth > 0, valid), case
        smoothed = smooth_depth(filled, valid, cfg.kernel_size, cfg.sigma_color, cfg.sigma_space)
        guide = fused.fused_estimate_guide_depth(*arguments)
        spatial = fused.get_gaussian_kernel2d(
            (cfg.kernel_size,) * 2, (cfg.sigma_space,) * 2
        )[0]
        kernel_smoothed = fused.launch_bilateral(filled, spatial, -0.5 / cfg.sigma_color**2)
        assert not differs(kernel_smoothed, smoothed).any(), case
        still_invalid += (~valid).sum().item()
        # The whole D_T: a differing splat pixel spreads over the filter's window at most.
        plain = estimate_guide_depth(*arguments)
        assert guide.depth.dtype == torch.float32 and guide.depth.shape == plain.depth.shape
        assert (guide.valid == (guide.depth > 0)).all()
        window = cfg.kernel_size**2 if cfg.smoothing == "bilateral" else 1
        assert differs(guide.depth, plain.depth).sum().item() <= 2 * allowed * window, case
    # The scenes exercise the fill passes and leave pixels they cannot reach.
    assert holes > 100 and still_invalid > 20, (holes, still_invalid)
    print("interpreted guide depths: all cases match")
"""


@needs_triton
def test_kernels_equal_the_pytorch_guide_depth_in_the_interpreter() -> None:
    assert "all cases match" in run_in_triton_interpreter(COMPARISON)


IDENTITY = """
    import torch
    from gsnerf.model import fused_guide_depth
    from gsnerf.model.target_depth import TargetDepthCfg, estimate_guide_depth

    # Source and target cameras alike: every point lands on its own pixel centre, so the
    # splat reproduces the source map (the nearest of the views), holes stay holes without
    # fill passes, and a flat map comes through the filter unchanged.
    intrinsics = torch.tensor([[20.0, 0, 7.5], [0, 20.0, 5.5], [0, 0, 1]])
    pose = torch.eye(4)
    depth = torch.full((1, 2, 12, 16), 2.0)
    depth[0, 1] = 2.5  # a farther second view: the z-buffer keeps 2
    depth[0, 0, 4:6, 4:6] = 0
    cfg = TargetDepthCfg(fill_iterations=0, smoothing="none")
    guide = fused_guide_depth.fused_estimate_guide_depth(
        depth, intrinsics.expand(1, 2, 3, 3), pose.expand(1, 2, 4, 4), intrinsics[None],
        pose[None], 12, 16, cfg,
    )
    expected = torch.where(depth[0, 0] > 0, 2.0, 2.5)
    assert torch.equal(guide.depth[0], expected), guide.depth
    depth[0, 1] = 0
    guide = fused_guide_depth.fused_estimate_guide_depth(
        depth, intrinsics.expand(1, 2, 3, 3), pose.expand(1, 2, 4, 4), intrinsics[None],
        pose[None], 12, 16, TargetDepthCfg(fill_iterations=0),
    )
    assert guide.valid.sum() == 12 * 16 - 4
    assert (guide.depth[guide.valid] - 2.0).abs().max() < 1e-6
    print("identity: the source map")
"""


@needs_triton
def test_identical_cameras_reproduce_the_nearest_source_map_in_the_interpreter() -> None:
    assert "the source map" in run_in_triton_interpreter(IDENTITY)


# A small model's render with the kernels computing its D_T against the plain render.
INTERPRETED_RENDER = """
    import torch
    from small_models import small_gsnerf_cfg

    from gsnerf.evaluation.benchmark_scene import plane_example
    from gsnerf.model import build_model, fused_guide_depth
    from gsnerf.model.fused_kernels import FusedKernels, set_fused_kernels

    set_fused_kernels(FusedKernels())
    fused_guide_depth.BLOCK = 4096
    torch.manual_seed(0)
    model = build_model(small_gsnerf_cfg(), 4).eval()
    example = plane_example(3, 16, 24, 4, seed=0)
    served = []
    with torch.no_grad():
        geometry = model.encode_sources(example)
        plain = model.render_image(example, geometry)
        fused_guide_depth.fused_guide_depth_applies = lambda *args: served.append(args) or True
        fused = model.render_image(example, geometry)
    assert len(served) == 1
    for output in ("rgb", "depth", "semantic_logits"):
        error = (getattr(plain, output) - getattr(fused, output)).abs().max().item()
        assert error < 1e-4, (output, error)
    print("interpreted renders: match")
"""


@needs_triton
def test_render_with_the_kernels_equals_the_plain_render_in_the_interpreter() -> None:
    assert "match" in run_in_triton_interpreter(INTERPRETED_RENDER)


@needs_triton
def test_kernels_are_compiled_from_their_modules_own_functions() -> None:
    # A kernel wrapped by the test suite's jaxtyping hook would lose the module's ``tl``.
    for kernel in (
        fused_guide_depth._splat_kernel,
        fused_guide_depth._fill_kernel,
        fused_guide_depth._bilateral_kernel,
    ):
        assert kernel.fn.__globals__ is vars(fused_guide_depth)


@needs_triton
def test_compiled_guide_depth_keeps_the_kernels_in_its_graph(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What compile_parts=[guide_depth] does with the operator before code generation (which
    # needs a GPU): the kernels' CUDA condition lifted, fake tensors trace it on the CPU.
    monkeypatch.setattr(fused_guide_depth, "fused_guide_depth_applies", lambda *args: True)
    calls = captured_inference_graph(estimate_guide_depth, *scene(CASES[0]))
    kernels = [name for name in calls if name.endswith("_kernel")]
    fills = TargetDepthCfg().fill_iterations
    assert kernels == ["_splat_kernel", *["_fill_kernel"] * fills, "_bilateral_kernel"], calls
    assert not [name for name in calls if "scatter_reduce" in name or "max_pool" in name]


def test_conditions(monkeypatch: pytest.MonkeyPatch) -> None:
    depths = torch.ones(1, 2, 4, 4)
    assert not fused_guide_depth_applies(depths, "farthest")  # switched off
    monkeypatch.setattr(fused_guide_depth, "enabled", True)
    # Never for CPU tensors: the interpreter serves the tests only.
    assert not fused_guide_depth_applies(depths, "farthest")
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda tensor: True))
    available = fused_guide_depth.triton is not None
    assert fused_guide_depth_applies(depths, "farthest") == available
    # The median fill keeps the PyTorch code, and so do depths that want a gradient.
    assert not fused_guide_depth_applies(depths, "median")
    assert not fused_guide_depth_applies(depths.requires_grad_(), "farthest")
    with torch.no_grad():
        assert fused_guide_depth_applies(depths, "farthest") == available


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_kernels_on_cuda() -> None:
    for case in CASES:
        arguments = scene(case, "cuda")
        plain = estimate_guide_depth(*arguments)
        fused = fused_guide_depth.fused_estimate_guide_depth(*arguments)
        differs = (fused.depth - plain.depth).abs() > 1e-5 * plain.depth.abs().clamp_min(1)
        assert differs.float().mean() < 0.01, case
        compiled = torch.compile(fused_guide_depth.fused_estimate_guide_depth)(*arguments)
        # The same kernels; inductor computes the filter's spatial kernel, to rounding.
        assert torch.allclose(compiled.depth, fused.depth, rtol=1e-5, atol=0), case
