"""Inference fast paths against the plain fp32 path: compiled heads and TF32 (spec 9)."""

import copy
import dataclasses

import pytest
import torch
from compiled_checks import (
    assert_close_training,
    assert_same_render,
    plain_and_compiled_encodings,
    plain_and_compiled_renders,
    runtime_type_checks_off,
    train_both,
)
from small_models import small_gsnerf_cfg
from torch._dynamo.utils import counters
from torch.profiler import profile

from gsnerf.engine.device import autocast_context, configure_matmul_precision
from gsnerf.engine.train_config import TrainCfg
from gsnerf.evaluation.benchmark import BenchmarkCfg, load_model_cfg
from gsnerf.evaluation.benchmark_scene import plane_example
from gsnerf.evaluation.evaluator import EvalCfg
from gsnerf.model import GSNeRF, build_model
from gsnerf.model.compiled_heads import _with_own_memory, compile_heads
from gsnerf.model.radiance_head import RadianceOutput
from gsnerf.model.transformer import ELU

CLASSES, HEIGHT, WIDTH = 4, 16, 24
# Devices of the tests that run on both; the CUDA case only where a GPU is present.
CPU_AND_CUDA = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
        ],
    ),
]


def tiny_model() -> GSNeRF:
    """One-layer heads of width 16: the smallest graphs to compile; every sample is rendered."""
    cfg = small_gsnerf_cfg(num_uniform=0)
    torch.manual_seed(0)
    return build_model(cfg, CLASSES).eval()


def test_compiled_heads_render_the_plain_image_for_two_chunk_sizes() -> None:
    # The graph counts below assume no compiled code from earlier tests in this process: frames
    # that other tests compiled (the transformer's forward) recompile here and add graphs.
    torch._dynamo.reset()
    model = tiny_model()
    example = plane_example(3, HEIGHT, WIDTH, CLASSES, seed=0)
    keys = list(model.state_dict())
    weights = {name: value.clone() for name, value in model.state_dict().items()}
    # 384 rays in chunks of at most 90: five of 77, the last padded by one ray; then all at once.
    chunk_sizes = (90, 384)
    with torch.inference_mode():
        geometry = model.encode_sources(example)
        plain = [model.render_image(example, geometry, chunk) for chunk in chunk_sizes]
        graphs = counters["stats"]["unique_graphs"]
        compile_heads(model, "default")
        fast = []
        new_graphs = []
        for chunk in chunk_sizes:
            fast.append(model.render_image(example, geometry, chunk))
            new_graphs.append(counters["stats"]["unique_graphs"] - graphs)
            graphs = counters["stats"]["unique_graphs"]
    # Static shapes compile once per shape: the five chunks of 77 rays (the last one padded)
    # compile as many graphs as the single chunk of 384; without padding, twice as many.
    assert new_graphs[0] == new_graphs[1] > 0
    assert "forward" in vars(model.radiance_head) and "forward" in vars(model.semantic_head)
    assert model.equal_chunks
    for fast_render, plain_render in zip(fast, plain):
        assert_same_render(fast_render, plain_render)
    # Compiling replaced forward only: same parameters under the same state_dict keys.
    assert list(model.state_dict()) == keys
    for name, value in model.state_dict().items():
        assert torch.equal(value, weights[name])


def test_compiled_heads_under_bf16_autocast_stay_close_to_fp32() -> None:
    """The GPU check's combination (compiled heads in bf16), traced and run on the CPU."""
    model = tiny_model()
    example = plane_example(3, HEIGHT, WIDTH, CLASSES, seed=0)
    cpu = torch.device("cpu")
    with torch.inference_mode():
        reference = model.render_image(example, model.encode_sources(example), 96)
        compile_heads(model, "default")
        with autocast_context("bf16", cpu):
            low = model.render_image(example, model.encode_sources(example), 96)
    assert low.rgb.dtype == low.depth.dtype == torch.float32
    # bf16 keeps 8 significant bits. Measured here, eager and compiled bf16 alike: mean |d rgb|
    # 0.0016, mean depth error 0.23 % (largest 3 %), 99.5 % of the labels unchanged.
    assert (low.rgb - reference.rgb).abs().mean() < 0.005
    depth_error = (low.depth - reference.depth).abs() / reference.depth
    assert depth_error.mean() < 0.005 and depth_error.max() < 0.05
    agree = low.semantic_logits.argmax(1) == reference.semantic_logits.argmax(1)
    assert agree.float().mean() > 0.98


@pytest.mark.parametrize("device", CPU_AND_CUDA)
def test_compiled_cost_volumes_encode_the_plain_geometry(device: str) -> None:
    torch.manual_seed(0)
    model = build_model(load_model_cfg("tiny", 4), CLASSES).to(device).eval()
    example = plane_example(3, 32, 48, CLASSES, seed=0).to(device)
    plain, fast = plain_and_compiled_encodings(model, example, ["cost_volumes"])
    for level in model.geo_reasoner.cost_volumes:
        assert "forward" in vars(level.regularizer)
    assert "forward" not in vars(model.radiance_head)
    # Float32 rounding of the fused normalisation: measured up to 1e-5 on the CPU.
    for fast_depth, plain_depth in zip(fast.depths, plain.depths):
        torch.testing.assert_close(fast_depth, plain_depth, atol=1e-4, rtol=0)
    for fast_volume, plain_volume in zip(fast.volume_features, plain.volume_features):
        torch.testing.assert_close(fast_volume, plain_volume, atol=1e-4, rtol=0)


@pytest.mark.parametrize("device", CPU_AND_CUDA)
def test_compiled_cost_volumes_train_with_the_plain_loss_and_gradients(device: str) -> None:
    # train.compile: forward and backward of a training step through the compiled 3-D U-Nets.
    torch.manual_seed(0)
    plain = build_model(load_model_cfg("tiny", 4), CLASSES).to(device).train()
    fast = copy.deepcopy(plain)
    compile_heads(fast, "default", parts=["cost_volumes"])
    example = plane_example(3, 32, 48, CLASSES, seed=0).to(device)
    plain_loss, plain_gradients, fast_loss, fast_gradients = train_both(plain, fast, example)
    assert "forward" in vars(fast.geo_reasoner.cost_volumes[0].regularizer)
    assert any("regularizer" in name for name in fast_gradients)
    # Float32 rounding of the fused normalisation: losses measured 6e-6 apart; gradients, whose
    # rounding grows through the whole backward pass, up to 3e-3 of each tensor's largest entry
    # (1.2e-4 of 0.13; the reduction order depends on the CPU's vector width). A wrong gradient
    # formula is off by the order of the gradient itself.
    assert_close_training(fast_loss, fast_gradients, plain_loss, plain_gradients)


@pytest.mark.parametrize("device", CPU_AND_CUDA)
def test_compiled_gathering_renders_the_plain_image(device: str) -> None:
    torch.manual_seed(0)
    # Both semantic renderings: the guide sample's patch (tiny) and every sample's (volume).
    cfg = load_model_cfg("tiny", 4)
    for rendering in ("guide_point", "volume"):
        semantic = dataclasses.replace(cfg.renderer.semantic, rendering=rendering)
        renderer = dataclasses.replace(cfg.renderer, semantic=semantic)
        model = build_model(dataclasses.replace(cfg, renderer=renderer), CLASSES)
        model = model.to(device).eval()
        example = plane_example(3, 24, 32, CLASSES, seed=0).to(device)
        plain, fast = plain_and_compiled_renders(model, example, ["gather"])
        with torch.inference_mode(), runtime_type_checks_off():
            geometry = model.encode_sources(example)
            with profile() as recorded:
                model.render_image(example, geometry, 200)
        assert "gather" in vars(model) and "forward" not in vars(model.radiance_head)
        assert_same_render(fast, plain)
        if device == "cpu":
            # The compiled code reads through the library's kernels (border_grid_read), not
            # inductor's lowering: per chunk (4 of 192 rays) the volumes and the depth-range
            # maps of 3 levels, the full-resolution features and the semantic patch.
            names = [event.name for event in recorded.events()]
            reads = names.count("aten::grid_sampler_2d") + names.count("aten::grid_sampler_3d")
            assert reads == 4 * 8


@dataclasses.dataclass
class Nested:
    inner: RadianceOutput
    count: int


def test_outputs_are_copied_out_of_static_buffers() -> None:
    """CUDA graphs write every call's outputs into the same memory; callers get copies."""
    static = torch.zeros(3)

    def forward(value: float) -> torch.Tensor:
        static.fill_(value)
        return static

    fields = {"density": (1, 2, 3), "rgb": (1, 2, 3, 3), "blend_weights": (1, 2, 3, 4)}
    static_fields = {name: torch.zeros(shape) for name, shape in fields.items()}

    def forward_fields(value: float) -> RadianceOutput:
        for buffer in static_fields.values():
            buffer.fill_(value)
        return RadianceOutput(**static_fields)

    first, second = _with_own_memory(forward)(1.0), _with_own_memory(forward)(2.0)
    assert first.tolist() == [1.0] * 3 and second.tolist() == [2.0] * 3
    # A cost-volume U-Net returns a tuple (logits, volume).
    pair = _with_own_memory(lambda value: (forward(value), forward(value)))(5.0)
    forward(6.0)
    assert [item.tolist() for item in pair] == [[5.0] * 3] * 2
    kept = _with_own_memory(forward_fields)(3.0)
    _with_own_memory(forward_fields)(4.0)
    for name in fields:
        assert (getattr(kept, name) == 3.0).all()
    # Gathered features come as dataclasses of dataclasses (RayFeatures): copied all the way.
    nested = _with_own_memory(lambda value: Nested(forward_fields(value), 7))(5.0)
    forward_fields(6.0)
    assert nested.count == 7
    for name in fields:
        assert (getattr(nested.inner, name) == 5.0).all()


def test_mode_none_leaves_the_heads_untouched() -> None:
    model = tiny_model()

    def attributes() -> dict[str, dict[str, int]]:
        heads = {"radiance": model.radiance_head, "semantic": model.semantic_head}
        return {name: {k: id(v) for k, v in vars(head).items()} for name, head in heads.items()}

    before = attributes()
    compile_heads(model, "none")
    assert attributes() == before
    assert "forward" not in vars(model.radiance_head)


def test_unknown_mode_is_an_error_naming_the_config_key() -> None:
    with pytest.raises(ValueError, match=r"eval\.compile.*'fastest'.*max-autotune"):
        compile_heads(tiny_model(), "fastest")
    with pytest.raises(ValueError, match=r"eval\.compile"):
        EvalCfg(compile="fastest")
    with pytest.raises(ValueError, match=r"benchmark compile"):
        BenchmarkCfg(compile="fastest")
    with pytest.raises(ValueError, match=r"train\.compile: unknown compile mode 'fastest'"):
        TrainCfg(compile="fastest")
    with pytest.raises(ValueError, match=r"benchmark train_compile"):
        BenchmarkCfg(train_compile="fastest")


def test_compile_parts_are_checked_and_need_a_compile_mode() -> None:
    with pytest.raises(ValueError, match=r"eval\.compile_parts.*eval\.compile other than none"):
        EvalCfg(compile_parts=["heads", "gather"])
    with pytest.raises(ValueError, match=r"eval\.compile_parts: unknown parts \['decoder'\]"):
        EvalCfg(compile="default", compile_parts=["decoder"])
    with pytest.raises(ValueError, match=r"benchmark compile_parts"):
        BenchmarkCfg(compile_parts=["heads", "everything"])
    with pytest.raises(ValueError, match=r"train\.compile_parts: unknown parts \['decoder'\]"):
        TrainCfg(compile="default", compile_parts=["decoder"])
    with pytest.raises(ValueError, match=r"benchmark train_compile_parts"):
        BenchmarkCfg(train_compile_parts=["everything"])
    model = tiny_model()
    with pytest.raises(ValueError, match=r"compile_parts.*compile mode other than none"):
        compile_heads(model, "none", parts=["cost_volumes"])
    assert "forward" not in vars(model.geo_reasoner.cost_volumes[0].regularizer)


@pytest.mark.parametrize("allow_tf32", [True, False])
def test_matmul_precision_on_the_cpu_changes_no_flag(allow_tf32: bool) -> None:
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not allow_tf32
        configure_matmul_precision(torch.device("cpu"), allow_tf32)
        assert torch.backends.cuda.matmul.allow_tf32 is (not allow_tf32)
        assert torch.backends.cudnn.allow_tf32 is (not allow_tf32)
        # On a CUDA device both flags follow the argument, whether or not one is present.
        configure_matmul_precision(torch.device("cuda"), allow_tf32)
        assert torch.backends.cuda.matmul.allow_tf32 is allow_tf32
        assert torch.backends.cudnn.allow_tf32 is allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tf32_render_stays_close_to_fp32_on_cuda() -> None:
    cuda = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model(load_model_cfg("tiny", 4), CLASSES).to(cuda).eval()
    example = plane_example(3, 32, 48, CLASSES, seed=0).to(cuda)
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    renders = []
    try:
        for allow_tf32 in (False, True):
            configure_matmul_precision(cuda, allow_tf32)
            with torch.inference_mode():
                renders.append(model.render_image(example, model.encode_sources(example), 0))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    plain, tf32 = renders
    # TF32 rounds product inputs to 10 mantissa bits (2^-11 relative), a quarter of bf16's
    # rounding; the bf16 test's bounds (tests/model/test_fast_inference.py) hold with room.
    rgb_error = (tf32.rgb - plain.rgb).abs()
    assert 0 < rgb_error.max() and rgb_error.mean() < 0.01
    depth_error = (tf32.depth - plain.depth).abs() / plain.depth
    assert depth_error.mean() < 0.005
    agree = tf32.semantic_logits.argmax(1) == plain.semantic_logits.argmax(1)
    assert agree.float().mean() > 0.97


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_heads_on_cuda_render_the_plain_image(mode: str) -> None:
    cuda = torch.device("cuda")
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    configure_matmul_precision(cuda, False)
    try:
        # The tiny config reads the guide sample's logits, kept per chunk until all are joined:
        # CUDA graphs (reduce-overhead) must not overwrite them with the next chunk's.
        torch.manual_seed(0)
        model = build_model(load_model_cfg("tiny", 4), CLASSES).to(cuda).eval()
        example = plane_example(3, 32, 48, CLASSES, seed=0).to(cuda)
        with torch.inference_mode():
            geometry = model.encode_sources(example)
            plain = [model.render_image(example, geometry, chunk) for chunk in (500, 1536)]
            compile_heads(model, mode)
            with runtime_type_checks_off():
                fast = [model.render_image(example, geometry, chunk) for chunk in (500, 1536)]
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    for fast_render, plain_render in zip(fast, plain):
        assert_same_render(fast_render, plain_render)


def test_compiled_elu_is_the_library_elu_with_its_gradient() -> None:
    # Large positive inputs too: exp(100) overflows, which must not reach the gradient.
    values = torch.tensor([-30.0, -2.0, -1e-3, -1e-8, 0.0, 1e-8, 0.5, 100.0], requires_grad=True)
    compiled = torch.compile(ELU(), dynamic=False)
    output = compiled(values)
    (gradient,) = torch.autograd.grad(output.sum(), values)
    reference = values.detach().clone().requires_grad_(True)
    expected = torch.nn.functional.elu(reference)
    (expected_gradient,) = torch.autograd.grad(expected.sum(), reference)
    torch.testing.assert_close(output, expected, rtol=0, atol=1e-7)
    # d ELU / dx: 1 above 0, exp(x) below.
    torch.testing.assert_close(gradient, expected_gradient, rtol=1e-6, atol=1e-7)
    assert torch.isfinite(gradient).all()
    # bf16 (autocast on a CPU): computed in float32, so a small negative input keeps its value
    # (-1e-3; exp(x) - 1 in bf16 would give 0), up to one bf16 rounding.
    low = values.detach().to(torch.bfloat16)
    torch.testing.assert_close(
        compiled(low).float(), torch.nn.functional.elu(low).float(), atol=1e-7, rtol=2**-8
    )
