"""The Triton volume convolution against ``F.conv3d`` / ``F.conv_transpose3d`` and the cost
volumes' 3-D U-Net with it against the plain one.

On a CPU the kernel runs, through its torch operator, in Triton's interpreter
(``TRITON_INTERPRET=1``, in a process of its own), with its CUDA condition lifted there, in
float32 and float16: the interpreter multiplies bfloat16 ``tl.dot`` operands wrongly
(test_fused_blocks.py), so float16 stands in for autocast's 16-bit products and bfloat16 is
checked on CUDA.
"""

import pytest
import torch
from torch import nn
from triton_interpreter import run_in_triton_interpreter

from gsnerf.model import fused_volume_conv
from gsnerf.model.cost_volume import CostRegularizer, CostVolumeCfg, LogitConv3d
from gsnerf.model.fused_volume_conv import (
    STRIDE_1,
    STRIDE_2,
    TRANSPOSED_2,
    conv_mode,
    fused_volume_conv_applies,
)

needs_triton = pytest.mark.skipif(fused_volume_conv.triton is None, reason="needs Triton")

# (form, input channels, output channels, input volume size, product dtype): every form of the
# U-Net, its narrowest (1, the depth logits) and widest (64) channels, odd sizes (a stride-2
# output of 3 from 5) and 16-bit products (bfloat16 on CUDA only, module doc).
CASES = [
    (STRIDE_1, 8, 8, (4, 6, 8), "float32"),
    (STRIDE_1, 8, 1, (3, 5, 7), "float32"),
    (STRIDE_1, 64, 64, (2, 2, 3), "float32"),
    (STRIDE_2, 8, 16, (4, 5, 8), "float32"),
    (STRIDE_2, 32, 64, (2, 4, 4), "float16"),
    (TRANSPOSED_2, 64, 32, (1, 2, 3), "float32"),
    (TRANSPOSED_2, 16, 8, (2, 3, 4), "float16"),
    (STRIDE_1, 12, 20, (2, 3, 5), "float16"),
]
CUDA_CASES = [(*case[:-1], "bfloat16") for case in CASES if case[-1] == "float16"]


def convolutions(case: tuple, device: str) -> tuple[torch.Tensor, ...]:
    """The library's convolution of ``case`` (on the operands rounded to its product dtype, in
    float32) and the kernel's, on random volumes and kernels."""
    mode, in_channels, out_channels, size, dtype = case
    generator = torch.Generator().manual_seed(in_channels * 100 + out_channels)
    volume = torch.randn(2, in_channels, *size, generator=generator).to(device)
    if mode == TRANSPOSED_2:
        conv = nn.ConvTranspose3d(
            in_channels, out_channels, 3, stride=2, padding=1, output_padding=1, bias=False
        )
    else:
        conv = nn.Conv3d(in_channels, out_channels, 3, stride=mode + 1, padding=1, bias=False)
    conv = conv.to(device)
    assert conv_mode(conv) == mode
    product = getattr(torch, dtype)
    with torch.no_grad():
        rounded = conv.weight.to(product).float()
        conv.weight.copy_(rounded)
        expected = conv(volume.to(product).float())
        out = fused_volume_conv.fused_volume_conv(volume, rounded, mode, product)
    return expected, out


COMPARISON = """
    import torch
    from test_fused_volume_conv import CASES, convolutions

    for case in CASES:
        expected, out = convolutions(case, "cpu")
        product = getattr(torch, case[-1])
        assert out.shape == expected.shape and out.dtype == product, case
        assert out.is_contiguous(memory_format=torch.channels_last_3d), case
        # Float32 sums in another order; float16 outputs keep 11 bits.
        tolerance = 1e-5 if product == torch.float32 else 2e-2 * expected.abs().max().item()
        error = (out.float() - expected).abs().max().item()
        assert error < tolerance, (case, error)
    print("interpreted volume convolutions: all cases match")
"""


@needs_triton
def test_kernel_equals_the_library_convolutions_in_the_interpreter() -> None:
    assert "all cases match" in run_in_triton_interpreter(COMPARISON)


# The 3-D U-Net of the paper's widths on a [2, 8, 8, 8, 16] cost volume (the encoding's below
# need padding), with the kernel serving every convolution (its CUDA
# condition lifted and counted) against the plain U-Net, in float32 and under float16 autocast.
INTERPRETED_UNET = """
    import torch
    from gsnerf.model import fused_volume_conv
    from gsnerf.model.cost_volume import CostRegularizer, CostVolumeCfg
    from gsnerf.model.fused_kernels import FusedKernels, set_fused_kernels

    set_fused_kernels(FusedKernels())
    # Fewer, larger programs: the interpreter's time goes by operation, not by voxel.
    fused_volume_conv.BLOCK = 512
    served = []

    def applies(volume, conv):
        served.append(conv)
        has_form = volume.dim() == 5 and fused_volume_conv.conv_mode(conv) is not None
        return not torch.is_grad_enabled() and has_form

    torch.manual_seed(0)
    unet = CostRegularizer(8, CostVolumeCfg()).eval()
    for norm in unet.modules():
        if isinstance(norm, torch.nn.GroupNorm):  # not the identity of a fresh norm
            torch.nn.init.uniform_(norm.weight, 0.5, 1.5)
            torch.nn.init.uniform_(norm.bias, -0.2, 0.2)
    cost = torch.randn(2, 8, 8, 8, 16)
    with torch.no_grad():
        plain = unet(cost)
        fused_volume_conv.fused_volume_conv_applies = applies
        fused_volume_conv.serves = lambda device: True
        fused = unet(cost)
        with torch.autocast("cpu", dtype=torch.float16):
            autocast = unet(cost)
    # Asked for 10 blocks, the two heads' first convolutions (merged) and the logits, twice.
    assert len(served) == 2 * 12, len(served)
    for name, a, b, c in zip(("logits", "volume"), plain, fused, autocast):
        assert a.shape == b.shape == c.shape and a.is_contiguous() and b.is_contiguous()
        scale = a.abs().max().item()
        error = (a - b).abs().max().item()
        assert error < 1e-4 * scale, (name, error, scale)
        error = (a - c.float()).abs().max().item()
        # At 1/8 scale these volumes hold 2 voxels, whose norms magnify rounding (the plain
        # U-Net under autocast: 0.2 % in float16, 3 % in bfloat16).
        assert error < 0.02 * scale, (name, "float16", error, scale)
    print("interpreted U-Nets: match")
"""


@needs_triton
def test_unet_with_the_kernel_equals_the_plain_unet_in_the_interpreter() -> None:
    assert "match" in run_in_triton_interpreter(INTERPRETED_UNET)


# A small model's source encoding (every cascade level's U-Net) and its render with the kernel
# serving every volume convolution against the plain ones, in float32.
INTERPRETED_ENCODING = """
    import torch
    from small_models import small_gsnerf_cfg

    from gsnerf.evaluation.benchmark_scene import plane_example
    from gsnerf.model import build_model, fused_volume_conv
    from gsnerf.model.fused_kernels import FusedKernels, set_fused_kernels

    set_fused_kernels(FusedKernels())
    fused_volume_conv.BLOCK = 512  # INTERPRETED_UNET
    torch.manual_seed(0)
    model = build_model(small_gsnerf_cfg(), 4).eval()
    # Two views: the interpreter's time grows with the launches (12 per U-Net) more than with
    # the volumes' size.
    example = plane_example(2, 16, 24, 4, seed=0)
    served = []

    def applies(volume, conv):
        served.append(volume.shape)
        return not torch.is_grad_enabled()

    with torch.no_grad():
        plain = model.encode_sources(example)
        plain_render = model.render_image(example, plain)
        fused_volume_conv.fused_volume_conv_applies = applies
        fused_volume_conv.serves = lambda device: True
        fused = model.encode_sources(example)
        fused_render = model.render_image(example, fused)
    # 12 asked per cascade level's U-Net (INTERPRETED_UNET).
    assert len(served) == 12 * len(plain.depths), len(served)
    for name in ("depths", "volume_features", "depth_ranges"):
        for a, b in zip(getattr(plain, name), getattr(fused, name), strict=True):
            error = (a - b).abs().max().item()
            assert error < 1e-4 * max(1.0, a.abs().max().item()), (name, error)
    for output in ("rgb", "depth", "semantic_logits"):
        error = (getattr(plain_render, output) - getattr(fused_render, output)).abs().max().item()
        assert error < 1e-4, (output, error)
    print("interpreted encodings: match")
"""


@needs_triton
def test_encoding_with_the_kernel_equals_the_plain_encoding_in_the_interpreter() -> None:
    assert "match" in run_in_triton_interpreter(INTERPRETED_ENCODING)


@needs_triton
def test_kernel_is_compiled_from_its_modules_own_functions() -> None:
    # A kernel wrapped by the test suite's jaxtyping hook would lose the module's ``tl``.
    assert fused_volume_conv._volume_conv_kernel.fn.__globals__ is vars(fused_volume_conv)


def test_forms_of_the_unets_convolutions() -> None:
    unet = CostRegularizer(8, CostVolumeCfg())
    modes = [conv_mode(module) for module in unet.modules() if isinstance(module, nn.Conv3d)]
    modes += [conv_mode(m) for m in unet.modules() if isinstance(m, nn.ConvTranspose3d)]
    # conv0, 3 x (down, same), 2 heads' convolutions, the logits; 3 transposed.
    assert sorted(modes) == [STRIDE_1] * 7 + [STRIDE_2] * 3 + [TRANSPOSED_2] * 3
    assert conv_mode(nn.Conv3d(8, 8, 3, padding=1)) is None  # a bias
    assert conv_mode(nn.Conv3d(8, 8, 5, padding=2, bias=False)) is None
    assert conv_mode(nn.Conv3d(8, 8, 3, padding=1, groups=2, bias=False)) is None
    assert conv_mode(nn.Conv3d(8, 65, 3, padding=1, bias=False)) is None
    assert conv_mode(nn.ConvTranspose3d(8, 8, 3, stride=2, padding=1, bias=False)) is None
    assert conv_mode(nn.Linear(8, 8)) is None


def test_conditions(monkeypatch: pytest.MonkeyPatch) -> None:
    conv = LogitConv3d(8, 1, 3, padding=1, bias=False)
    volume = torch.zeros(1, 8, 2, 4, 4)
    with pytest.raises(ValueError, match=r"kernels \(1, 8, 3, 3, 3\) for a 4-channel volume"):
        fused_volume_conv.launch_volume_conv(volume[:, :4], conv.weight, STRIDE_1, torch.float32)
    # Never for CPU tensors: the interpreter serves the tests only.
    monkeypatch.setattr(fused_volume_conv, "enabled", True)
    with torch.no_grad():
        assert not fused_volume_conv_applies(volume, conv)
        assert not fused_volume_conv.serves(torch.device("cpu"))
        # The CPU U-Net keeps its layout rule.
        assert CostRegularizer(8, CostVolumeCfg()).memory_format(torch.device("cpu")) == (
            torch.channels_last_3d
        )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_kernel_and_unet_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    for case in CASES + CUDA_CASES:
        expected, out = convolutions(case, "cuda")
        tolerance = 1e-3 if case[-1] == "float32" else 2e-2 * expected.abs().max().item()
        assert (out.float() - expected).abs().max() < tolerance, case
    unet = CostRegularizer(8, CostVolumeCfg()).cuda().eval()
    cost = torch.randn(2, 8, 16, 32, 40, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        plain = unet(cost)
        monkeypatch.setattr(fused_volume_conv, "enabled", True)
        fused = unet(cost)
        compiled = torch.compile(unet)(cost)
    for a, b, c in zip(plain, fused, compiled):
        scale = a.float().abs().max().item()
        assert (a.float() - b.float()).abs().max() < 0.05 * scale
        assert (b.float() - c.float()).abs().max() < 1e-2 * scale
