"""Random transformers and tokens for the fused kernels' tests, with the plain blocks' result.

A case is ``(width, heads, layers, ffn_width, tokens, masked)``. The plain result runs the
library attention, sets first (:meth:`MaskedAttentionBlock.forward`), in float32.
"""

from dataclasses import dataclass

import torch
from compiled_checks import runtime_type_checks_off
from triton_interpreter import run_in_triton_interpreter

from gsnerf.model.transformer import TokenTransformer, TransformerCfg


@dataclass
class TransformerCase:
    transformer: TokenTransformer
    tokens: torch.Tensor  # (sets, t, width), float32
    key_mask: torch.Tensor | None  # (sets, t)
    plain: torch.Tensor  # the plain blocks' result, float32


def transformer_case(case: tuple, device: str) -> TransformerCase:
    """A random transformer with perturbed LayerNorms and 150 sets of random tokens.

    150 sets divide no kernel's tile; about half the keys are masked, every set keeps one, and
    the first set keeps only its last key (a running softmax must not start from it).
    """
    width, heads, layers, ffn_width, tokens, masked = case
    torch.manual_seed(layers * 10 + tokens)
    transformer = TokenTransformer(TransformerCfg(width, heads, layers, ffn_width)).to(device)
    # Non-trivial LayerNorm parameters, so that a swapped weight and bias would show.
    with torch.no_grad():
        for parameter in transformer.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    sets = 150
    inputs = torch.randn(sets, tokens, width, device=device)
    mask = torch.rand(sets, tokens, device=device) > 0.5
    mask[torch.arange(sets), torch.randint(tokens, (sets,))] = True
    mask[0] = False
    mask[0, -1] = True
    mask = mask if masked else None
    with torch.no_grad():
        plain = inputs
        for block in transformer.blocks:
            plain = block(plain, mask)
    return TransformerCase(transformer, inputs, mask, plain)


# Imports plain_and_fused(case, device, dtype) and CASES from the test module named {module}.
_COMPARISON = """
    import torch
    from {module} import CASES, plain_and_fused

    # float16 keeps 11 significant bits: measured up to 4e-3 from the float32 blocks.
    for dtype, tolerance in ((torch.float32, 1e-4), (torch.float16, 2e-2)):
        for case in CASES:
            plain, fused = plain_and_fused(case, "cpu", dtype)
            assert fused.shape == plain.shape and fused.dtype == dtype, (case, fused.shape)
            error = (fused.float() - plain).abs().max().item()
            assert error < tolerance, (case, dtype, error)
    print("interpreted: all cases match")
"""


def compare_in_interpreter(module: str) -> None:
    """Run ``module``'s plain_and_fused over its CASES in Triton's interpreter, in float32 and
    float16 (the interpreter cannot multiply bfloat16); fails with the worst case's error."""
    assert "all cases match" in run_in_triton_interpreter(_COMPARISON.format(module=module))


def compiled_on_cuda() -> tuple[torch.Tensor, torch.Tensor]:
    """A paper-size transformer under ``torch.compile`` with bf16 autocast on 3000 CUDA sets of
    9 tokens, and the plain blocks in float32: ``(compiled result, plain result)``.

    Whichever fused kernels are enabled serve the compiled one, called within its graph.
    """
    torch.manual_seed(0)
    transformer = TokenTransformer(TransformerCfg()).cuda()
    tokens = torch.randn(3000, 9, 32, device="cuda")
    mask = torch.rand(3000, 9, device="cuda") > 0.3
    mask[:, 0] = True
    compiled = torch.compile(transformer.forward, dynamic=False)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16)
    # jaxtyping's checks off while compiling, as for the compiled heads (test_compiled_heads).
    with runtime_type_checks_off(), torch.inference_mode(), autocast:
        fused = compiled(tokens, mask)
    with torch.no_grad():
        plain = tokens
        for block in transformer.blocks:
            plain = block(plain, mask)
    return fused, plain
