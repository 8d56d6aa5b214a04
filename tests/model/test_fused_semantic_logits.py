"""The Triton semantic head against :class:`SemanticHead` (its render: test_fused_radiance_views).

On a CPU the kernel runs in Triton's interpreter (``TRITON_INTERPRET=1``, in a process of its
own), in float32 and in float16 under CPU autocast; on CUDA in float32 and bf16.
"""

import pytest
import torch
from triton_interpreter import run_in_triton_interpreter

from gsnerf.model import fused_semantic_logits
from gsnerf.model.feature_gather import attention_view_mask
from gsnerf.model.fused_semantic_logits import fused_semantic_logits_applies, kernel_fits
from gsnerf.model.semantic_head import SemanticHead, SemanticHeadCfg
from gsnerf.model.transformer import TransformerCfg

needs_triton = pytest.mark.skipif(fused_semantic_logits.triton is None, reason="needs Triton")

# (views, patch channels, classes, transformer width, layers, samples): the paper's head (8
# views of 3 x 3 patches of 20 classes: 180 channels, not a multiple of the 32-column blocks),
# the CPU model's shape, and a narrow one whose patch fits in one block.
CASES = [
    (8, 180, 20, 32, 4, 40),
    (8, 180, 20, 32, 2, 25),
    (3, 27, 3, 16, 1, 30),
]


def head_case(case: tuple, device: str) -> tuple[SemanticHead, tuple]:
    """A head with perturbed weights and random inputs: features, in_frustum, visible and the
    attention mask (one sample with a single attended view)."""
    views, channels, classes, width, layers, samples = case
    torch.manual_seed(views + channels + samples)
    cfg = SemanticHeadCfg(transformer=TransformerCfg(width, 4 if width == 32 else 2, layers, width))
    head = SemanticHead(cfg, channels, classes).eval().to(device)
    with torch.no_grad():
        for parameter in head.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    shape = (1, samples // 5, 5, views)
    in_frustum = torch.rand(shape, device=device) > 0.3
    visible = torch.rand(shape, device=device) > 0.3
    in_frustum[0, 0, 0] = False
    in_frustum[0, 0, 0, 1] = True
    features = torch.randn(*shape, channels, device=device)
    return head, (features, in_frustum, visible, attention_view_mask(in_frustum, visible))


def head_and_kernel(case: tuple, device: str, autocast: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The PyTorch head's logits in float32 and the kernel's, under autocast if ``autocast``
    (float16 on a CPU, bf16 on CUDA)."""
    head, inputs = head_case(case, device)
    dtype = torch.float16 if device == "cpu" else torch.bfloat16
    with torch.no_grad():
        expected = head(*inputs)
        with torch.autocast(device, dtype=dtype, enabled=autocast):
            kernel = fused_semantic_logits.fused_semantic_logits(head, *inputs)
    return expected, kernel


COMPARISON = """
    from test_fused_semantic_logits import CASES, head_and_kernel

    for autocast, tolerance in ((False, 1e-4), (True, 2e-2)):
        for case in CASES:
            expected, kernel = head_and_kernel(case, "cpu", autocast)
            assert kernel.shape == expected.shape, (case, kernel.shape)
            error = (kernel - expected).abs().max().item()
            assert error < tolerance, (case, autocast, error)
    print("interpreted semantic heads: all cases match")
"""


@needs_triton
def test_kernel_equals_the_semantic_head_in_the_interpreter() -> None:
    assert "all cases match" in run_in_triton_interpreter(COMPARISON)


@needs_triton
def test_kernel_is_compiled_from_its_modules_own_functions() -> None:
    # A kernel wrapped by the test suite's jaxtyping hook would lose the module's ``tl``.
    assert fused_semantic_logits._semantic_kernel.fn.__globals__ is vars(fused_semantic_logits)


def test_conditions(monkeypatch: pytest.MonkeyPatch) -> None:
    head, (features, *_) = head_case(CASES[0], "cpu")
    assert kernel_fits(head, features)
    assert not kernel_fits(head, features.double())
    # Other tokens, a class MLP of one hidden layer, more classes than the tile holds.
    for cfg, classes in (
        (SemanticHeadCfg(tokens="global_only"), 20),
        (SemanticHeadCfg(hidden=[64]), 20),
        (SemanticHeadCfg(), fused_semantic_logits.MAX_CLASSES + 1),
    ):
        assert not kernel_fits(SemanticHead(cfg, 180, classes), features)
    # Never for CPU tensors: the interpreter serves the tests only.
    monkeypatch.setattr(fused_semantic_logits, "enabled", True)
    with torch.no_grad():
        assert not fused_semantic_logits_applies(head, features)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_kernel_equals_the_semantic_head_on_cuda() -> None:
    allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for autocast, tolerance in ((False, 1e-4), (True, 1e-1)):
            for case in CASES:
                expected, kernel = head_and_kernel(case, "cuda", autocast)
                assert (kernel - expected).abs().max() < tolerance, (case, autocast)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
