"""The switches of the fused Triton kernels for CUDA inference, set together.

Three formulations of the heads' transformers can replace the compiled or eager PyTorch one on
CUDA, each behind its module's ``enabled`` switch: the attention alone
(:mod:`gsnerf.model.attention_kernel`), every block as two kernels
(:mod:`gsnerf.model.fused_blocks`) and the whole transformer as one
(:mod:`gsnerf.model.fused_transformer`). Where several are on, the transformer takes the
widest that fits (:class:`gsnerf.model.transformer.TokenTransformer`).
"""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from gsnerf.model import attention_kernel, fused_blocks, fused_transformer


@dataclass(frozen=True)
class FusedKernels:
    attention: bool = False
    blocks: bool = False
    transformer: bool = False


def current_fused_kernels() -> FusedKernels:
    return FusedKernels(attention_kernel.enabled, fused_blocks.enabled, fused_transformer.enabled)


def set_fused_kernels(choice: FusedKernels) -> None:
    """Switch every fused kernel on or off as ``choice`` says."""
    attention_kernel.enabled = choice.attention
    fused_blocks.enabled = choice.blocks
    fused_transformer.enabled = choice.transformer


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
