"""The Triton view gathering against the PyTorch projection and gathering.

On a CPU the kernel runs, through its torch operator, in Triton's interpreter
(``TRITON_INTERPRET=1``, in a process of its own); its whole render is compared there too
(test_fused_kernels.py). On CUDA it is compared eagerly and in a compiled render.
"""

import copy
import dataclasses

import pytest
import torch
from compiled_checks import runtime_type_checks_off
from gather_scenes import encoded_scene, sample_points
from kernel_checks import assert_renders_close, renders_off_and_on
from triton_interpreter import run_in_triton_interpreter

from gsnerf.model import fused_view_gather, triton_grid_read
from gsnerf.model.feature_gather import GatherCfg, gather_features, project_to_sources
from gsnerf.model.fused_view_gather import fused_view_gather_applies, kernel_fits

needs_triton = pytest.mark.skipif(fused_view_gather.triton is None, reason="needs Triton")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# (batch, views, volume channels, levels kept (the finest), maps' dtype, GatherCfg keywords).
# 40 rays of 5 samples: 200 points a view, more than one program's BLOCK and not a multiple.
CASES = [
    (1, 3, 4, 3, "float32", {}),
    (2, 2, 8, 3, "float32", {"occlusion_unit": "metres", "occlusion_tolerance": 0.05}),
    (1, 4, 3, 3, "float32", {"angle_frequencies": 2, "occlusion_tolerance": 0.5}),
    (1, 3, 8, 1, "float32", {}),
    (1, 3, 8, 2, "bfloat16", {}),
    (1, 2, 4, 3, "float16", {"angle_frequencies": 1}),
]

# Compares the kernel with project_to_sources + gather_features on every case; both read the
# same (possibly 16-bit) maps, converted to float32.
COMPARISON = """
    import torch
    from gather_scenes import encoded_scene, joined_batches, sample_points
    from test_fused_view_gather import CASES, with_levels

    from gsnerf.model import fused_view_gather
    from gsnerf.model.feature_gather import GatherCfg, gather_features, project_to_sources

    for batch, views, channels, levels, dtype, keywords in CASES:
        cfg = GatherCfg(**keywords)
        scenes = [encoded_scene(seed, views, channels) for seed in range(batch)]
        sources, geometry, target = scenes[0]
        for other in scenes[1:]:
            joined = zip((sources, geometry, target), other)
            sources, geometry, target = (joined_batches(a, b) for a, b in joined)
        geometry = with_levels(geometry, levels, getattr(torch, dtype))
        points, directions = sample_points(target, seed=batch + views)
        with torch.no_grad():
            assert fused_view_gather.kernel_fits(points, sources, geometry)
            projection, gathered = fused_view_gather.gather_views(
                points, directions, sources, geometry, cfg
            )
            expected_projection = project_to_sources(points, sources)
            expected = gather_features(
                expected_projection, points, directions, sources, geometry, cfg
            )
        case = (batch, views, channels, levels, dtype)
        # The same sums in another order: a few float32 ulps of pixel coordinates and depths.
        assert torch.allclose(projection.grid, expected_projection.grid, atol=1e-5), case
        assert torch.allclose(projection.depth, expected_projection.depth, atol=1e-5), case
        assert torch.equal(projection.in_frustum, expected_projection.in_frustum), case
        for name in ("volume", "image", "colours", "angle"):
            kernel, reference = getattr(gathered, name), getattr(expected, name)
            assert kernel.shape == reference.shape and kernel.dtype == torch.float32, name
            assert (kernel - reference).abs().max() < 1e-4, (case, name)
        assert torch.equal(gathered.in_frustum, expected.in_frustum), case
        assert torch.equal(gathered.visible, expected.visible), case
        # Both outcomes occur, or the comparison proves little.
        for mask in (expected.in_frustum, expected.visible):
            assert mask.any() and not mask.all(), case
    print("interpreted gathering: all cases match")
"""


def with_levels(geometry: object, levels: int, dtype: torch.dtype) -> object:
    """``geometry`` with its finest ``levels`` cascade levels only, its maps and volumes in
    ``dtype`` (as bf16 autocast leaves them)."""
    return dataclasses.replace(
        geometry,
        depths=[depth.to(dtype) for depth in geometry.depths[-levels:]],
        depth_ranges=[window.to(dtype) for window in geometry.depth_ranges[-levels:]],
        volume_features=[volume.to(dtype) for volume in geometry.volume_features[-levels:]],
        image_features=geometry.image_features.to(dtype),
    )


@needs_triton
def test_kernel_equals_the_pytorch_gathering_in_the_interpreter() -> None:
    assert "all cases match" in run_in_triton_interpreter(COMPARISON)


@needs_triton
def test_kernel_is_compiled_from_its_modules_own_functions() -> None:
    # A kernel wrapped by the test suite's jaxtyping hook would lose the module's ``tl``
    # (test_fused_blocks.py); the shared reads keep their own module's.
    for kernel in (fused_view_gather._view_gather_kernel, fused_view_gather._read_level):
        assert kernel.fn.__globals__ is vars(fused_view_gather)
    for helper in (triton_grid_read.corners, triton_grid_read.read_plane):
        assert helper.fn.__globals__ is vars(triton_grid_read)


def test_conditions(monkeypatch: pytest.MonkeyPatch) -> None:
    sources, geometry, target = encoded_scene(5, 2, 4)
    points, _ = sample_points(target, seed=5)
    assert kernel_fits(points, sources, geometry)
    assert kernel_fits(points, sources, with_levels(geometry, 3, torch.bfloat16))
    assert not kernel_fits(points.double(), sources, geometry)
    assert not kernel_fits(points, sources, with_levels(geometry, 3, torch.float64))
    # More levels than the kernel's arguments hold.
    deeper = copy.copy(geometry)
    for name in ("depths", "depth_ranges", "volume_features"):
        levels = getattr(geometry, name)
        setattr(deeper, name, [levels[0]] * (fused_view_gather.MAX_LEVELS + 1))
    assert not kernel_fits(points, sources, deeper)
    # Levels of different channel counts (set after construction: the annotations forbid them).
    uneven = copy.copy(geometry)
    uneven.volume_features = list(geometry.volume_features)
    uneven.volume_features[1] = uneven.volume_features[1].repeat(1, 1, 2, 1, 1, 1)
    assert not kernel_fits(points, sources, uneven)
    # Never for CPU tensors: the interpreter serves the tests only.
    monkeypatch.setattr(fused_view_gather, "enabled", True)
    with torch.no_grad():
        assert not fused_view_gather_applies(points, sources, geometry, GatherCfg())


class GraphCaptured(Exception):
    """Raised in place of running a captured graph (the kernel cannot run without a GPU)."""


@needs_triton
def test_compiled_gathering_traces_the_kernel_into_its_graph_as_one_operator() -> None:
    # What torch.compile does with the operator before code generation (which needs a GPU):
    # tracing it with fake tensors, whose shapes come from the launch function.
    sources, geometry, target = encoded_scene(7, 3, 4)
    points, directions = sample_points(target, seed=7)
    calls: list[str] = []
    shapes = []

    def capture(graph: torch.fx.GraphModule, example_inputs: list) -> object:
        targets = [str(node.target) for node in graph.graph.nodes if node.op == "call_function"]
        calls.extend(targets)
        output = next(node for node in graph.graph.nodes if node.op == "output")
        shapes.extend(node.meta["example_value"].shape for node in output.args[0])

        def not_run(*args: object) -> None:
            raise GraphCaptured

        return not_run

    def gather(*arguments: object) -> tuple:
        projection, gathered = fused_view_gather.gather_views(*arguments)
        return projection.grid, gathered.volume, gathered.visible

    torch._dynamo.reset()
    compiled = torch.compile(gather, backend=capture, dynamic=False)
    with runtime_type_checks_off(), torch.no_grad(), pytest.raises(GraphCaptured):
        compiled(points, directions, sources, geometry, GatherCfg())
    torch._dynamo.reset()
    assert calls.count("gsnerf.fused_view_gather.default") == 1, calls
    # Nothing of the PyTorch gathering is left: no grid reads.
    assert not [name for name in calls if "grid_sampler" in name], calls
    # The traced outputs' shapes (the graph returns every output the dataclasses hold): 3
    # views' grids, 3 levels of 4 volume channels, 4 image channels, 4 angle frequencies.
    assert shapes[0] == (3, 40, 5, 2)
    for shape in [(1, 40, 5, 3, 12), (1, 40, 5, 3, 4), (1, 40, 5, 3, 8), (1, 40, 5, 3)]:
        assert shape in shapes, shapes


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_equals_the_pytorch_gathering_on_cuda(dtype: torch.dtype) -> None:
    sources, geometry, target = encoded_scene(0, 4, 8, device="cuda")
    geometry = with_levels(geometry, 3, dtype)
    points, directions = sample_points(target, seed=1)
    with torch.no_grad():
        _, gathered = fused_view_gather.gather_views(
            points, directions, sources, geometry, GatherCfg()
        )
        expected = gather_features(
            project_to_sources(points, sources), points, directions, sources, geometry, GatherCfg()
        )
    for name in ("volume", "image", "colours", "angle"):
        error = (getattr(gathered, name) - getattr(expected, name)).abs().max()
        assert error < 1e-4, (name, error)
    # A sample within float32 rounding of a threshold may flip (GPU sums in another order).
    assert (gathered.visible != expected.visible).float().mean() < 1e-3
    assert (gathered.in_frustum != expected.in_frustum).float().mean() < 1e-3


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("compiled", [False, True])
def test_renders_with_the_kernel_match_the_pytorch_gathering_on_cuda(
    monkeypatch: pytest.MonkeyPatch, compiled: bool
) -> None:
    monkeypatch.setattr(fused_view_gather, "enabled", False)  # restored after the test
    with runtime_type_checks_off():
        plain, render = renders_off_and_on(fused_view_gather, compiled, device="cuda")
    assert_renders_close(render, plain)
