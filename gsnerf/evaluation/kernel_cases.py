"""The project's Triton kernels as the paper model launches them: the cases of the kernel
report (:mod:`gsnerf.evaluation.kernel_report`).

Each case calls a kernel's own launch function with small CPU tensors of the paper model's
shapes and a launcher it is given (the report's records the launch instead of running it).
"""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from gsnerf.model import (
    attention_kernel,
    fused_blocks,
    fused_correlation,
    fused_guide_depth,
    fused_patch_read,
    fused_radiance_views,
    fused_semantic_logits,
    fused_transformer,
    fused_view_gather,
    fused_volume_conv,
    fused_volume_conv_grad,
)
from gsnerf.model.geo_reasoner import GeoReasonerCfg
from gsnerf.model.radiance_head import RadianceHead, RadianceHeadCfg
from gsnerf.model.semantic_head import SemanticHead, SemanticHeadCfg
from gsnerf.model.transformer import TokenTransformer, TransformerCfg


@dataclass
class KernelCase:
    """One kernel in one of the model's configurations."""

    kernel: str  # name of the kernel in the report
    case: str  # the configuration, in words
    jit_function: object  # the ``@triton.jit`` function
    # Calls the kernel's launch function with the launcher it is given.
    launch: Callable[[object], object]


def model_kernel_cases() -> list[KernelCase]:
    """The fused kernels in the paper model's configurations (spec 2.6: width 32, 4 heads, 4
    blocks, feed-forward width 32).

    The view and semantic transformers attend over 9 tokens (8 views and the global token)
    with a key mask, the ray transformer over the N = 4 samples of a ray without one; bf16 is
    the CUDA inference precision, fp32 the reference one.
    """
    if fused_transformer.triton is None:  # a CPU-only torch comes without Triton
        return []
    cfg = TransformerCfg()
    head_channels = cfg.width // cfg.heads
    sets = 640  # any count divisible by 16, as a frame's 307200 sets are

    def attention(tokens: int, masked: bool, dtype: torch.dtype) -> Callable[[object], object]:
        def launch(launcher: object) -> object:
            qkv = torch.zeros(3, cfg.heads, head_channels, tokens, sets, dtype=dtype)
            bias = torch.zeros(tokens, sets, dtype=dtype) if masked else None
            return attention_kernel.launch_attention_kernel(launcher, *qkv, bias)

        return launch

    def block_tail(has_next: bool, dtype: torch.dtype) -> Callable[[object], object]:
        def launch(launcher: object) -> object:
            count = 9 * sets
            columns = torch.zeros(cfg.width, count, dtype=dtype)
            square = torch.zeros(cfg.width, cfg.width, dtype=dtype)
            vector = torch.zeros(cfg.width)
            weights = [square, vector, vector, square, vector, square, vector, vector, vector]
            next_weight = torch.zeros(3 * cfg.width, cfg.width, dtype=dtype) if has_next else None
            eps = cfg.layer_norm_eps
            return fused_blocks.launch_block_tail(
                columns, columns, weights, next_weight, eps, launcher
            )

        return launch

    view_blocks = TokenTransformer(cfg).blocks
    # The radiance head's ray transformer has blocks of its own count (spec 2.6: 1).
    ray_layers = RadianceHeadCfg().ray_mixer_layers
    ray_blocks = TokenTransformer(dataclasses.replace(cfg, layers=ray_layers)).blocks

    def transformer(
        tokens: int, masked: bool, dtype: torch.dtype, tf32: bool = False
    ) -> Callable[[object], object]:
        blocks = view_blocks if masked else ray_blocks

        def launch(launcher: object) -> object:
            inputs = torch.zeros(sets, tokens, cfg.width, dtype=dtype)
            mask = torch.ones(sets, tokens, dtype=torch.bool) if masked else None
            weights = fused_transformer.stacked_weights(blocks, dtype)
            # The kernel multiplies float32 in TF32 when torch's matrix products may.
            saved = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
            try:
                return fused_transformer.launch_fused_transformer(
                    inputs, mask, weights, cfg.heads, cfg.layer_norm_eps, launcher
                )
            finally:
                torch.backends.cuda.matmul.allow_tf32 = saved

        return launch

    def view_gather(dtype: torch.dtype) -> Callable[[object], object]:
        # The paper's 8 views, levels at 1/4, 1/2 and full resolution with 8 channels, 8 image
        # channels and 4 angle frequencies, on 48 x 64 images (divisible by 16, as 240 x 320).
        views, height, width, channels = 8, 48, 64, 8
        depths = GeoReasonerCfg().n_depths

        def launch(launcher: object) -> object:
            points = torch.zeros(1, 1024, 4, 3)
            sizes = [(height >> level, width >> level) for level in (2, 1, 0)]
            windows = [torch.zeros(1, views, 2, *size, dtype=dtype) for size in sizes]
            maps = [torch.zeros(1, views, *size, dtype=dtype) for size in sizes]
            volumes = [
                torch.zeros(1, views, channels, count, *size, dtype=dtype)
                for count, size in zip(depths, sizes, strict=True)
            ]
            return fused_view_gather.launch_view_gather(
                points,
                points,
                torch.zeros(1, views, 21),
                torch.zeros(1, views, 3),
                torch.zeros(1, views, channels, height, width, dtype=dtype),
                torch.zeros(1, views, 3, height, width),
                windows,
                maps,
                volumes,
                0.2,
                True,
                4,
                launcher,
            )

        return launch

    def patch_read(dtype: torch.dtype) -> Callable[[object], object]:
        # 3 x 3 patches of 20 channels (ScanNet's classes) at every sample of 1024 rays (the
        # semantic head's default volume rendering).
        def launch(launcher: object) -> object:
            maps = torch.zeros(8, 20, 48, 64, dtype=dtype)
            grid = torch.zeros(8, 1024, 4, 2)
            return fused_patch_read.launch_patch_read(maps, grid, 8, 3, 1.0, [48, 64], launcher)

        return launch

    def radiance_views(dtype: torch.dtype) -> Callable[[object], object]:
        # The paper's radiance head: 8 views of 24 volume, 8 image and 8 angle channels.
        head = RadianceHead(RadianceHeadCfg(), 24, 8, 8)

        def launch(launcher: object) -> object:
            samples, views = 1024, 8
            parts = [torch.zeros(samples, views, channels) for channels in (24, 8, 3, 8)]
            flags = torch.zeros(3, samples, views, dtype=torch.uint8)
            weights = fused_radiance_views.head_weights(head, dtype)
            return fused_radiance_views.launch_radiance_views(
                *parts, flags, weights, cfg.heads, cfg.layer_norm_eps, launcher
            )

        return launch

    def semantic_logits(dtype: torch.dtype) -> Callable[[object], object]:
        # The paper's semantic head: 8 views of 3 x 3 patches of 20 classes.
        head = SemanticHead(SemanticHeadCfg(), 180, 20)

        def launch(launcher: object) -> object:
            features = torch.zeros(1024, 8, 180)
            flags = torch.zeros(3, 1024, 8, dtype=torch.uint8)
            weights = fused_semantic_logits.head_weights(head, dtype)
            return fused_semantic_logits.launch_semantic_logits(
                features, flags, weights, cfg.heads, cfg.layer_norm_eps, launcher
            )

        return launch

    def volume_conv(
        channels: tuple[int, int], mode: int, dtype: torch.dtype
    ) -> Callable[[object], object]:
        # A cost volume's 3-D U-Net (spec 2.2): float32 activations (autocast's norms) in, the
        # products in dtype; a full-resolution volume of 8 hypotheses at 1/4 of 240 x 320.
        in_channels, out_channels = channels
        shape = (
            (in_channels, out_channels)
            if mode == fused_volume_conv.TRANSPOSED_2
            else (out_channels, in_channels)
        )

        def launch(launcher: object) -> object:
            volume = torch.zeros(8, in_channels, 8, 60, 80)
            weight = torch.zeros(*shape, 3, 3, 3)
            # The kernel multiplies float32 in TF32 when cuDNN's convolutions may.
            saved = torch.backends.cudnn.allow_tf32
            torch.backends.cudnn.allow_tf32 = True
            try:
                return fused_volume_conv.launch_volume_conv(volume, weight, mode, dtype, launcher)
            finally:
                torch.backends.cudnn.allow_tf32 = saved

        return launch

    def volume_conv_weight_grad(
        channels: tuple[int, int], mode: int, dtype: torch.dtype
    ) -> Callable[[object], object]:
        # The kernels' gradient in a training step: the volume_conv cases' volumes.
        in_channels, out_channels = channels

        def launch(launcher: object) -> object:
            volume = torch.zeros(8, in_channels, 8, 60, 80)
            size = [fused_volume_conv.output_size(extent, mode) for extent in (8, 60, 80)]
            grad = torch.zeros(8, out_channels, *size, dtype=dtype)
            return fused_volume_conv_grad.launch_weight_grad(volume, grad, mode, launcher)

        return launch

    def correlation(level: tuple[int, int, int], backward: bool) -> Callable[[object], object]:
        # A cascade level's warp and correlation: 8 reference views of 3 MVS neighbours, bf16
        # features (autocast's feature net), 8 groups (spec 2.2).
        channels, depths, scale = level
        height, width = 240 // scale, 320 // scale

        def launch(launcher: object) -> object:
            reference = torch.zeros(8, channels, height, width, dtype=torch.bfloat16)
            neighbours = torch.zeros(8, 3, channels, height, width, dtype=torch.bfloat16)
            hypotheses, projections = torch.zeros(8, depths, height, width), torch.zeros(24, 12)
            if backward:
                grad = torch.zeros(8, 8, depths, height, width, dtype=torch.bfloat16)
                return fused_correlation.launch_correlation_grad(
                    grad, reference, neighbours, hypotheses, projections, launcher
                )
            return fused_correlation.launch_correlation(
                reference, neighbours, hypotheses, projections, 8, torch.bfloat16, launcher
            )

        return launch

    def guide_depth(kernel: str) -> Callable[[object], object]:
        # D_T of the paper's target view from 8 source depth maps at 240 x 320 (spec 2.3), the
        # default footprint, fill window and 5 x 5 filter.
        def launch(launcher: object) -> object:
            depth = torch.zeros(1, 240, 320)
            if kernel == "splat":
                sources, cameras = torch.zeros(1, 8, 240, 320), torch.zeros(8, 21)
                return fused_guide_depth.launch_splat(
                    sources, cameras[:, :9], cameras[:, 9:], cameras[:1, :9], 240, 320, 1.0,
                    1e-3, launcher,
                )  # fmt: skip
            if kernel == "fill":
                return fused_guide_depth.launch_fill(depth, 1, launcher)
            return fused_guide_depth.launch_bilateral(depth, torch.zeros(5, 5), -50.0, launcher)

        return launch

    view_case = "view / semantic transformer: 9 tokens, key mask"
    tail_case = f"width {cfg.width}, feed-forward {cfg.ffn_width}"
    return [
        KernelCase(
            "attention", f"{view_case}, bf16", attention_kernel._attention_kernel,
            attention(9, True, torch.bfloat16),
        ),
        KernelCase(
            "attention", f"{view_case}, fp32", attention_kernel._attention_kernel,
            attention(9, True, torch.float32),
        ),
        KernelCase(
            "attention", "ray transformer: 4 tokens, no mask, bf16",
            attention_kernel._attention_kernel, attention(4, False, torch.bfloat16),
        ),
        KernelCase(
            "block tail", f"{tail_case}, next block's q k v, bf16",
            fused_blocks._block_tail_kernel, block_tail(True, torch.bfloat16),
        ),
        KernelCase(
            "block tail", f"{tail_case}, last block, bf16", fused_blocks._block_tail_kernel,
            block_tail(False, torch.bfloat16),
        ),
        KernelCase(
            "block tail", f"{tail_case}, next block's q k v, fp32",
            fused_blocks._block_tail_kernel, block_tail(True, torch.float32),
        ),
        KernelCase(
            "transformer", f"{view_case}, bf16", fused_transformer._transformer_kernel,
            transformer(9, True, torch.bfloat16),
        ),
        KernelCase(
            "transformer", f"{view_case}, fp32 (TF32 products)",
            fused_transformer._transformer_kernel, transformer(9, True, torch.float32, True),
        ),
        KernelCase(
            "transformer", f"{view_case}, fp32 (full-precision products)",
            fused_transformer._transformer_kernel, transformer(9, True, torch.float32),
        ),
        KernelCase(
            "transformer", "ray transformer: 4 tokens, no mask, 1 block, bf16",
            fused_transformer._transformer_kernel, transformer(4, False, torch.bfloat16),
        ),
        KernelCase(
            "view gather", "8 views, 3 levels of 8 channels, 8 image channels, bf16 maps",
            fused_view_gather._view_gather_kernel, view_gather(torch.bfloat16),
        ),
        KernelCase(
            "view gather", "the same, fp32 maps", fused_view_gather._view_gather_kernel,
            view_gather(torch.float32),
        ),
        KernelCase(
            "patch read", "3 x 3 patches of 20 channels, 8 views, bf16 maps",
            fused_patch_read._patch_read_kernel, patch_read(torch.bfloat16),
        ),
        KernelCase(
            "radiance views", "paper radiance head, 8 views, bf16",
            fused_radiance_views._radiance_views_kernel, radiance_views(torch.bfloat16),
        ),
        KernelCase(
            "radiance views", "the same, fp32 (full-precision products)",
            fused_radiance_views._radiance_views_kernel, radiance_views(torch.float32),
        ),
        KernelCase(
            "semantic logits", "paper semantic head, 8 views of 180 channels, bf16",
            fused_semantic_logits._semantic_kernel, semantic_logits(torch.bfloat16),
        ),
        *[
            KernelCase(
                "volume conv", f"{form}, {a} -> {b} channels, {str(dtype)[6:]} products",
                fused_volume_conv._volume_conv_kernel, volume_conv((a, b), mode, dtype),
            )
            for form, mode, a, b, dtype in VOLUME_CONV_CASES
        ],
        *[
            KernelCase(
                "volume conv weight grad", f"{form}, {a} -> {b} channels, {str(dtype)[6:]}",
                fused_volume_conv_grad._weight_grad_kernel,
                volume_conv_weight_grad((a, b), mode, dtype),
            )
            for form, mode, a, b, dtype in VOLUME_CONV_CASES
            if (mode, a, b) != (fused_volume_conv.STRIDE_1, 8, 16)  # inference's merged heads
        ],
        *[
            KernelCase(
                name, f"{channels} channels, {depths} hypotheses at 1/{scale} of 240 x 320, bf16",
                kernel, correlation((channels, depths, scale), backward),
            )
            for channels, depths, scale in CORRELATION_LEVELS
            for name, kernel, backward in (
                ("correlation", fused_correlation._correlation_kernel, False),
                ("correlation grad", fused_correlation._correlation_grad_kernel, True),
            )
        ],
        KernelCase(
            "guide depth", "z-buffered splat: 8 source maps of 240 x 320, 2 x 2 footprints",
            fused_guide_depth._splat_kernel, guide_depth("splat"),
        ),
        KernelCase(
            "guide depth", "a fill pass, 3 x 3 window", fused_guide_depth._fill_kernel,
            guide_depth("fill"),
        ),
        KernelCase(
            "guide depth", "bilateral filter, 5 x 5", fused_guide_depth._bilateral_kernel,
            guide_depth("bilateral"),
        ),
    ]  # fmt: skip


# The U-Net's convolutions (form, kernel mode, channels in and out, product dtype): the first,
# the two heads' merged first ones and the depth logits; a downsampling; the widest; an
# upsampling; and float32 products.
VOLUME_CONV_CASES = [
    ("stride 1", fused_volume_conv.STRIDE_1, 8, 8, torch.bfloat16),
    ("stride 1", fused_volume_conv.STRIDE_1, 8, 16, torch.bfloat16),
    ("stride 1", fused_volume_conv.STRIDE_1, 8, 1, torch.bfloat16),
    ("stride 2", fused_volume_conv.STRIDE_2, 8, 16, torch.bfloat16),
    ("stride 1", fused_volume_conv.STRIDE_1, 64, 64, torch.bfloat16),
    ("transposed", fused_volume_conv.TRANSPOSED_2, 64, 32, torch.bfloat16),
    ("stride 1", fused_volume_conv.STRIDE_1, 8, 8, torch.float32),
]

# The paper's cascade levels (feature channels, hypotheses, image scale): 1/4, 1/2 and full
# resolution (spec 2.2).
CORRELATION_LEVELS = [(32, 48, 4), (16, 32, 2), (8, 8, 1)]
