"""The fused kernels in a whole render, and their switches: set together, off for FLOP
counting, and from eval options."""

import dataclasses

import pytest
import torch
from triton_interpreter import run_in_triton_interpreter

from gsnerf.evaluation.benchmark import BenchmarkCfg, load_model_cfg
from gsnerf.evaluation.evaluator import EvalCfg, apply_inference_options
from gsnerf.model import (
    attention_kernel,
    cpu_correlation,
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
from gsnerf.model.fused_kernels import (
    FusedKernels,
    current_fused_kernels,
    kernels_disabled,
    set_fused_kernels,
    supported_on,
)
from gsnerf.model.gsnerf import build_model
from gsnerf.model.native_library import compiler_present
from gsnerf.model.transformer import TokenTransformer, TransformerCfg

# A small model's whole image (view and semantic transformers of width 16 with key masks, a
# ray transformer over 4 guided + 2 uniform samples) rendered with each fused formulation in
# every transformer, and with each gathering kernel, against its plain render, in Triton's
# interpreter: the CUDA condition of each kernel is lifted and counted.
INTERPRETED_RENDERS = """
    import torch
    from small_models import small_gsnerf_cfg

    from gsnerf.evaluation.benchmark_scene import plane_example
    from gsnerf.model import (
        build_model, fused_blocks, fused_patch_read, fused_transformer, fused_view_gather,
        transformer,
    )

    served = {"attention": 0, "blocks": 0, "transformer": 0, "gather": 0, "patches": 0}

    def serving(name, fits):
        def applies(*args):
            served[name] += 1
            return not torch.is_grad_enabled() and fits(*args)
        return applies

    switches = {
        "attention": (transformer, "fused_attention_applies", lambda query: True),
        "blocks": (
            fused_blocks, "fused_blocks_apply",
            lambda blocks, tokens: fused_blocks.kernels_fit(blocks, tokens.shape[1]),
        ),
        "transformer": (
            fused_transformer, "fused_transformer_applies",
            lambda blocks, tokens: fused_transformer.kernel_fits(blocks, tokens.shape[1]),
        ),
        "gather": (
            fused_view_gather, "fused_view_gather_applies",
            lambda points, sources, geometry, cfg: fused_view_gather.kernel_fits(
                points, sources, geometry
            ),
        ),
        "patches": (
            fused_patch_read, "fused_patch_read_applies",
            lambda maps, grid: fused_patch_read.kernel_fits(maps, grid),
        ),
    }
    torch.manual_seed(0)
    model = build_model(small_gsnerf_cfg(num_uniform=2, rendering="volume"), 4).eval()
    example = plane_example(3, 8, 12, 4, seed=0)
    with torch.no_grad():
        geometry = model.encode_sources(example)
        plain = model.render_image(example, geometry)
        for name, (module, condition, fits) in switches.items():
            original = getattr(module, condition)
            setattr(module, condition, serving(name, fits))
            render = model.render_image(example, geometry)
            setattr(module, condition, original)
            # Each transformer (view, ray, semantic) at least once; the image's one chunk.
            assert served[name] >= (1 if name in ("gather", "patches") else 3), served
            for output in ("rgb", "depth", "semantic_logits", "opacity"):
                error = (getattr(render, output) - getattr(plain, output)).abs().max().item()
                assert error < 1e-4, (name, output, error)
    print("interpreted renders with each fused kernel: match")
"""


@pytest.fixture
def restored_switches():
    saved = current_fused_kernels()
    yield
    set_fused_kernels(saved)


def switches() -> tuple[bool, bool, bool, bool, bool]:
    kernels = (attention_kernel.enabled, fused_blocks.enabled, fused_transformer.enabled)
    assert cpu_correlation.enabled == cpu_volume_read.enabled  # one switch for both
    assert fused_view_gather.enabled == fused_patch_read.enabled  # and for these two
    return (*kernels, cpu_correlation.enabled, fused_view_gather.enabled)


@pytest.mark.skipif(fused_transformer.triton is None, reason="Triton is not installed")
def test_renders_with_each_fused_kernel_match_the_plain_render_in_the_interpreter() -> None:
    assert "match" in run_in_triton_interpreter(INTERPRETED_RENDERS)


def test_enabled_kernels_still_never_serve_cpu_tensors(restored_switches) -> None:
    set_fused_kernels(FusedKernels(True, True, True, True))
    paper = TokenTransformer(TransformerCfg())
    tokens = torch.zeros(4, 9, 32)
    with torch.no_grad():
        assert not fused_transformer.fused_transformer_applies(paper.blocks, tokens)
        assert not fused_blocks.fused_blocks_apply(paper.blocks, tokens)
        assert not attention_kernel.fused_attention_applies(torch.zeros(4, 8, 9, 4))


def test_switches_are_set_together_and_read_back(restored_switches) -> None:
    assert switches() == (False,) * 5  # every kernel off by default
    set_fused_kernels(FusedKernels(attention=True, transformer=True))
    assert switches() == (True, False, True, False, False)
    assert current_fused_kernels() == FusedKernels(True, False, True)
    set_fused_kernels(FusedKernels(cpu_kernels=True))
    assert switches() == (False, False, False, True, False)
    set_fused_kernels(FusedKernels(gather=True))
    assert switches() == (False, False, False, False, True)
    assert current_fused_kernels() == FusedKernels(gather=True)
    set_fused_kernels(FusedKernels(heads=True))
    assert fused_radiance_views.enabled and fused_semantic_logits.enabled
    assert switches() == (False,) * 5
    assert current_fused_kernels() == FusedKernels(heads=True)
    set_fused_kernels(FusedKernels(volumes=True))
    assert fused_volume_conv.enabled and fused_correlation.enabled
    assert not fused_radiance_views.enabled
    assert switches() == (False,) * 5
    assert current_fused_kernels() == FusedKernels(volumes=True)
    set_fused_kernels(FusedKernels(guide_depth=True))
    assert fused_guide_depth.enabled and not fused_volume_conv.enabled
    assert current_fused_kernels() == FusedKernels(guide_depth=True)


def test_kernels_disabled_switches_every_kernel_off_and_restores_them(restored_switches) -> None:
    set_fused_kernels(FusedKernels(True, True, True, True, True, True, True, True))
    with kernels_disabled():
        assert switches() == (False,) * 5
        assert not fused_volume_conv.enabled and not fused_correlation.enabled
        assert not fused_guide_depth.enabled
    assert switches() == (True,) * 5
    assert fused_volume_conv.enabled and fused_correlation.enabled and fused_guide_depth.enabled


def test_eval_options_switch_the_fused_kernels(restored_switches) -> None:
    model = build_model(load_model_cfg("tiny", 4), num_classes=3)  # eval.compile stays none
    cpu = torch.device("cpu")
    # By default the one-kernel transformer and (where they build) the CPU kernels.
    builds = compiler_present()
    apply_inference_options(model, EvalCfg(), cpu)
    assert switches() == (False, False, builds, builds, False)
    apply_inference_options(model, EvalCfg(fused_blocks=True, fused_transformer=False), cpu)
    assert switches() == (False, True, False, builds, False)
    apply_inference_options(model, EvalCfg(fused_attention=True, fused_transformer=False), cpu)
    assert switches() == (True, False, False, builds, False)
    apply_inference_options(model, EvalCfg(fused_transformer=False, cpu_kernels=False), cpu)
    assert switches() == (False,) * 5
    # The gathering kernel is CUDA's: asked for on a CPU, it stays off.
    apply_inference_options(model, EvalCfg(fused_transformer=False, fused_gather=True), cpu)
    assert switches() == (False, False, False, builds, False)


def test_switches_are_read_from_and_written_to_config_options() -> None:
    options = EvalCfg(fused_attention=True, fused_transformer=False, fused_gather=True)
    choice = FusedKernels.from_options(options)
    assert choice == FusedKernels(attention=True, cpu_kernels=True, gather=True)
    assert FusedKernels.from_options(EvalCfg(fused_heads=True)).heads
    assert FusedKernels.from_options(EvalCfg(fused_volumes=True)).volumes
    assert FusedKernels.from_options(EvalCfg(fused_guide_depth=True)).guide_depth
    written = dataclasses.replace(BenchmarkCfg(), **choice.as_options())
    assert FusedKernels.from_options(written) == choice


def test_gpus_without_bf16_tensor_cores_use_the_library_blocks(monkeypatch, caplog) -> None:
    everything = FusedKernels(True, True, True)
    capability = {"value": (9, 0)}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: capability["value"])
    cuda = torch.device("cuda")
    assert supported_on(everything, cuda) == everything
    # The CPU kernels' switch does nothing on CUDA, and a record says so; nor the CUDA
    # gathering kernel's on a CPU.
    assert supported_on(FusedKernels(True, True, True, True), cuda) == everything
    cuda_only = FusedKernels(gather=True, heads=True, volumes=True, guide_depth=True)
    assert supported_on(cuda_only, cuda) == cuda_only
    assert supported_on(cuda_only, torch.device("cpu")) == FusedKernels()
    cpu_choice = FusedKernels(True, True, True, True)
    if compiler_present():
        assert supported_on(cpu_choice, torch.device("cpu")) == cpu_choice
    # A V100 (7.0): tl.dot has no bf16 / TF32 there; the attention kernel needs no tl.dot.
    capability["value"] = (7, 0)
    assert supported_on(everything, cuda) == FusedKernels(True, False, False)
    assert "compute capability 8.0 (this GPU: 7.0)" in caplog.text
