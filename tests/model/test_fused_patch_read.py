"""The Triton semantic patch reads against the PyTorch offset grid and ``grid_sample``.

On a CPU the kernel runs, through its torch operator, in Triton's interpreter
(``TRITON_INTERPRET=1``, in a process of its own); its whole render is compared there too
(test_fused_kernels.py).
"""

import pytest
import torch
from triton_interpreter import run_in_triton_interpreter

from gsnerf.model import fused_patch_read
from gsnerf.model.feature_gather import GatherCfg, SourceProjection, gather_semantic_features
from gsnerf.model.fused_patch_read import fused_patch_read_applies, kernel_fits

needs_triton = pytest.mark.skipif(fused_patch_read.triton is None, reason="needs Triton")

# (batch, views, channels, map size, samples per ray, maps' dtype, patch, spacing). The image
# is 12 x 20 pixels; maps at that size or half of it; 1 sample per ray is the guide sample's
# read (semantic rendering "guide_point"), 3 every sample's ("volume").
CASES = [
    (1, 3, 5, (12, 20), 1, "float32", 3, 1.0),
    (2, 2, 20, (12, 20), 3, "float32", 3, 1.0),
    (1, 2, 7, (6, 10), 1, "bfloat16", 3, 1.5),
    (1, 4, 3, (12, 20), 3, "float16", 1, 1.0),
]
IMAGE_SIZE = (12, 20)


def patches(case: tuple, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The PyTorch path's patches and the kernel's for ``case``, on random maps and on grid
    points inside the image, at its edges and beyond them (the border clamp)."""
    batch, views, channels, size, samples, dtype, patch, spacing = case
    generator = torch.Generator().manual_seed(sum(size) + channels)
    maps = torch.randn(batch, views, channels, *size, generator=generator)
    maps = maps.to(getattr(torch, dtype)).to(device)
    grid = (torch.rand(batch * views, 70, samples, 2, generator=generator) * 2.6 - 1.3).to(device)
    projection = SourceProjection(
        grid=grid,
        depth=torch.ones(grid.shape[:-1], device=device),
        in_frustum=torch.ones(grid.shape[:-1], dtype=torch.bool, device=device),
        num_views=views,
        image_size=IMAGE_SIZE,
    )
    cfg = GatherCfg(semantic_patch=patch, semantic_patch_spacing=spacing)
    with torch.no_grad():
        expected = gather_semantic_features(projection, maps, cfg)
        read = fused_patch_read.fused_patch_read(
            maps.flatten(0, 1), grid, views, patch, spacing, list(IMAGE_SIZE)
        )
    return expected, read


COMPARISON = """
    import torch
    from test_fused_patch_read import CASES, patches

    for case in CASES:
        expected, read = patches(case, "cpu")
        assert read.shape == expected.shape and read.dtype == torch.float32, case
        # The same bilinear weights, summed in another order.
        error = (read - expected).abs().max().item()
        assert error < 1e-5, (case, error)
    print("interpreted patch reads: all cases match")
"""


@needs_triton
def test_kernel_equals_the_pytorch_patch_reads_in_the_interpreter() -> None:
    assert "all cases match" in run_in_triton_interpreter(COMPARISON)


@needs_triton
def test_kernel_is_compiled_from_its_modules_own_functions() -> None:
    # A kernel wrapped by the test suite's jaxtyping hook would lose the module's ``tl``.
    assert fused_patch_read._patch_read_kernel.fn.__globals__ is vars(fused_patch_read)


def test_conditions(monkeypatch: pytest.MonkeyPatch) -> None:
    maps, grid = torch.zeros(6, 20, 12, 20), torch.zeros(6, 70, 1, 2)
    assert kernel_fits(maps, grid)
    assert kernel_fits(maps.bfloat16(), grid)
    assert not kernel_fits(maps.double(), grid)
    assert not kernel_fits(maps, grid.half())
    assert not kernel_fits(torch.zeros(6, fused_patch_read.MAX_CHANNELS + 1, 12, 20), grid)
    assert not kernel_fits(maps[:4], grid)  # a map per grid
    with pytest.raises(ValueError, match="6 maps are not a batch of 4 views"):
        fused_patch_read.launch_patch_read(maps, grid, 4, 3, 1.0, [12, 20])
    # Never for CPU tensors: the interpreter serves the tests only.
    monkeypatch.setattr(fused_patch_read, "enabled", True)
    with torch.no_grad():
        assert not fused_patch_read_applies(maps, grid)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_kernel_equals_the_pytorch_patch_reads_on_cuda() -> None:
    for case in CASES:
        expected, read = patches(case, "cuda")
        assert (read - expected).abs().max() < 1e-5, case
