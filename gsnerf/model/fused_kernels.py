"""The switches of the fused inference kernels, set together.

Three formulations of the heads' transformers can replace the compiled or eager PyTorch one on
CUDA, each behind its module's ``enabled`` switch: the attention alone
(:mod:`gsnerf.model.attention_kernel`), every block as two kernels
(:mod:`gsnerf.model.fused_blocks`) and the whole transformer as one
(:mod:`gsnerf.model.fused_transformer`). Where several are on, the transformer takes the
widest that fits (:class:`gsnerf.model.transformer.TokenTransformer`). The transformer's switch
also selects the whole transformer in one C++ kernel on a CPU
(:mod:`gsnerf.model.cpu_transformer`). One more switch is for the CPU only: C++ kernels for
the cost volumes' plane-sweep warp and group correlation (:mod:`gsnerf.model.cpu_correlation`),
their GroupNorm + LeakyReLU pairs (:mod:`gsnerf.model.cpu_volume_norm`) and depth-logit
convolutions (:mod:`gsnerf.model.cpu_logit_conv`) and the transformer blocks' attention
(:mod:`gsnerf.model.cpu_set_attention`), which also serve training (``train.cpu_kernels``),
and for the inference's gathering of the radiance head's inputs, volume reads and semantic
patches (:mod:`gsnerf.model.cpu_view_gather`, :mod:`gsnerf.model.cpu_volume_read`,
:mod:`gsnerf.model.cpu_patch_read`). One more is for CUDA only: Triton kernels for the
gathering of the radiance head's inputs and of the semantic patches
(:mod:`gsnerf.model.fused_view_gather`, :mod:`gsnerf.model.fused_patch_read`), and each
head's view stage in one Triton kernel (:mod:`gsnerf.model.fused_radiance_views`,
:mod:`gsnerf.model.fused_semantic_logits`). And one for the cost volumes on CUDA: their
plane-sweep warp and group correlation (:mod:`gsnerf.model.fused_correlation`) and 3-D
convolutions (:mod:`gsnerf.model.fused_volume_conv`), which with their backward passes also
serve training steps (``train.fused_volumes``). And one for the target view's guide depth
D_T on CUDA (:mod:`gsnerf.model.fused_guide_depth`).
"""

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from gsnerf.model import (
    attention_kernel,
    cpu_correlation,
    cpu_logit_conv,
    cpu_patch_read,
    cpu_set_attention,
    cpu_transformer,
    cpu_view_gather,
    cpu_volume_norm,
    cpu_volume_read,
    fused_blocks,
    fused_correlation,
    fused_guide_depth,
    fused_patch_read,
    fused_radiance_views,
    fused_semantic_logits,
    fused_transformer,
    fused_view_gather,
    fused_volume_conv,
)

log = logging.getLogger(__name__)

# The modules of the CPU inference kernels behind FusedKernels.cpu_kernels.
CPU_KERNEL_MODULES = (
    cpu_correlation,
    cpu_volume_read,
    cpu_view_gather,
    cpu_patch_read,
    cpu_volume_norm,
    cpu_logit_conv,
    cpu_set_attention,
)

# The modules of the CUDA gathering kernels behind FusedKernels.gather.
GATHER_KERNEL_MODULES = (fused_view_gather, fused_patch_read)

# The modules of the CUDA head kernels behind FusedKernels.heads.
HEAD_KERNEL_MODULES = (fused_radiance_views, fused_semantic_logits)

# The modules of the CUDA cost-volume kernels behind FusedKernels.volumes.
VOLUME_KERNEL_MODULES = (fused_correlation, fused_volume_conv)

# The fused blocks and the one-kernel transformer multiply bf16 or TF32 operands with tl.dot,
# which needs compute capability 8.0 (A100, RTX 30xx, H100 and later GPUs).
TENSOR_CORE_CAPABILITY = (8, 0)


# Each switch's option in the configs that set them (EvalCfg, BenchmarkCfg).
OPTION_NAMES = {
    "attention": "fused_attention",
    "blocks": "fused_blocks",
    "transformer": "fused_transformer",
    "cpu_kernels": "cpu_kernels",
    "gather": "fused_gather",
    "heads": "fused_heads",
    "volumes": "fused_volumes",
    "guide_depth": "fused_guide_depth",
}


@dataclass(frozen=True)
class FusedKernels:
    attention: bool = False
    blocks: bool = False
    transformer: bool = False
    # The C++ kernels of CPU_KERNEL_MODULES; no effect on CUDA.
    cpu_kernels: bool = False
    # The Triton kernels of GATHER_KERNEL_MODULES; CUDA only.
    gather: bool = False
    # The Triton kernels of HEAD_KERNEL_MODULES (each head's view stage); CUDA only.
    heads: bool = False
    # The Triton kernels of VOLUME_KERNEL_MODULES (the cost volumes' warp and correlation and
    # their convolutions, forward and backward); CUDA only.
    volumes: bool = False
    # The Triton kernels of D_T (gsnerf.model.fused_guide_depth); CUDA only.
    guide_depth: bool = False

    @classmethod
    def from_options(cls, options: object) -> "FusedKernels":
        """The switches a config's options (:data:`OPTION_NAMES`) ask for."""
        return cls(**{switch: getattr(options, name) for switch, name in OPTION_NAMES.items()})

    def as_options(self) -> dict[str, bool]:
        """The switches as a config's options (:data:`OPTION_NAMES`)."""
        return {name: getattr(self, switch) for switch, name in OPTION_NAMES.items()}


def supported_on(choice: FusedKernels, device: torch.device) -> FusedKernels:
    """``choice`` less what ``device`` cannot run.

    On a CUDA GPU older than :data:`TENSOR_CORE_CAPABILITY` the fused blocks and the
    one-kernel transformer are switched off, with a warning; so are the transformer and the
    other C++ kernels on a CPU where they do not build (no compiler: the warning names the
    cause). Example: on a V100 (7.0) ``FusedKernels(transformer=True)`` becomes
    ``FusedKernels()``.
    """
    if device.type == "cpu":
        # One shape stands for all: what fails is the compiler (a kernel that does not build
        # for some shape falls back on its own, with a warning).
        if choice.transformer and not cpu_transformer.kernel_available(32, 4, 32, 9):
            choice = dataclasses.replace(choice, transformer=False)
        if choice.cpu_kernels and not cpu_correlation.kernel_available(8, 8, 3):
            choice = dataclasses.replace(choice, cpu_kernels=False)
    else:
        # CPU kernels only: the switch does nothing elsewhere, and records should say so.
        choice = dataclasses.replace(choice, cpu_kernels=False)
    if device.type != "cuda":
        # The same for the CUDA-only gathering, head, volume and D_T kernels.
        choice = dataclasses.replace(
            choice, gather=False, heads=False, volumes=False, guide_depth=False
        )
    if device.type != "cuda" or not (choice.blocks or choice.transformer):
        return choice
    capability = torch.cuda.get_device_capability(device)
    if capability >= TENSOR_CORE_CAPABILITY:
        return choice
    log.warning(
        "fused blocks / transformer need compute capability %d.%d (this GPU: %d.%d): "
        "using the library's transformer blocks",
        *TENSOR_CORE_CAPABILITY,
        *capability,
    )
    return dataclasses.replace(choice, blocks=False, transformer=False)


def current_fused_kernels() -> FusedKernels:
    return FusedKernels(
        attention_kernel.enabled,
        fused_blocks.enabled,
        fused_transformer.enabled,
        all(module.enabled for module in CPU_KERNEL_MODULES),
        all(module.enabled for module in GATHER_KERNEL_MODULES),
        all(module.enabled for module in HEAD_KERNEL_MODULES),
        all(module.enabled for module in VOLUME_KERNEL_MODULES),
        fused_guide_depth.enabled,
    )


def set_fused_kernels(choice: FusedKernels) -> None:
    """Switch every fused kernel on or off as ``choice`` says."""
    attention_kernel.enabled = choice.attention
    fused_blocks.enabled = choice.blocks
    fused_transformer.enabled = choice.transformer
    for module in CPU_KERNEL_MODULES:
        module.enabled = choice.cpu_kernels
    for module in GATHER_KERNEL_MODULES:
        module.enabled = choice.gather
    for module in HEAD_KERNEL_MODULES:
        module.enabled = choice.heads
    for module in VOLUME_KERNEL_MODULES:
        module.enabled = choice.volumes
    fused_guide_depth.enabled = choice.guide_depth


def use_fused_kernels(wanted: FusedKernels, device: torch.device) -> FusedKernels:
    """Switch on what ``device`` can run of ``wanted`` (:func:`supported_on`); returns that."""
    chosen = supported_on(wanted, device)
    set_fused_kernels(chosen)
    return chosen


@contextlib.contextmanager
def kernels_disabled() -> Iterator[None]:
    """Every fused kernel switched off inside, the switches restored after.

    For FLOP counting: ``FlopCounterMode`` counts the library's products, not Triton kernels.
    """
    saved = current_fused_kernels()
    set_fused_kernels(FusedKernels())
    try:
        yield
    finally:
        set_fused_kernels(saved)
