"""The kernel sweep's knobs, its loop over their values and its report; the timing itself needs
a GPU (scripts/kernel_sweep.py). The swept tile sizes of the one-kernel transformer are checked
in tests/model/test_fused_transformer.py."""

import math

import pytest
import torch

from gsnerf.evaluation.benchmark_records import load_model_cfg
from gsnerf.evaluation.benchmark_report import STAGES
from gsnerf.evaluation.benchmark_scene import plane_example
from gsnerf.evaluation.kernel_sweep import (
    DEFAULT_KNOBS,
    DEFAULT_TRAIN_KNOBS,
    Measurement,
    knob_set,
    markdown_table,
    parse_knob,
    sweep,
)
from gsnerf.evaluation.kernel_sweep_run import (
    KernelSweepCfg,
    frame_measure,
    run_kernel_sweep,
    train_step_measure,
)
from gsnerf.model import build_model, fused_transformer, fused_view_gather


def test_knobs_parse_and_name_their_problem() -> None:
    knob = parse_knob("fused_transformer.ROWS=16,32,64")
    assert (knob.module, knob.constant, knob.values) == (fused_transformer, "ROWS", (16, 32, 64))
    assert knob.stage == "heads" and knob.name == "fused_transformer.ROWS"
    assert all(parse_knob(text).values for text in DEFAULT_KNOBS + DEFAULT_TRAIN_KNOBS)
    problems = {
        "fused_transformer.ROWS": "expected module.CONSTANT=v1,v2",
        "fused_everything.BLOCK=64": "unknown module 'fused_everything'",
        "fused_transformer.MAX_TOKENS=16": "no launch constant 'MAX_TOKENS'",
        "fused_guide_depth.ROWS=16": "no launch constant 'ROWS'",
        "fused_view_gather.BLOCK=96": "powers of two, got '96'",
        "fused_view_gather.BLOCK=0": "powers of two",
        "fused_view_gather.BLOCK=sixty": "powers of two",
    }
    for text, problem in problems.items():
        with pytest.raises(ValueError, match=rf"knob '{text}': .*{problem}"):
            parse_knob(text)


def test_a_knob_is_restored_after_its_block_even_on_an_error() -> None:
    knob = parse_knob("fused_view_gather.BLOCK=64")
    block = fused_view_gather.BLOCK
    with pytest.raises(RuntimeError, match="inside"), knob_set(knob, 64):
        assert fused_view_gather.BLOCK == 64
        raise RuntimeError("inside")
    assert fused_view_gather.BLOCK == block


def test_sweep_measures_each_value_once_against_the_constants_as_they_are() -> None:
    block = fused_view_gather.BLOCK  # 128
    calls: list[int] = []

    def measure() -> Measurement:
        # A stand-in frame: the gathering takes BLOCK / 64 ms, BLOCK 256 moves the colour by
        # 0.5 and turns a quarter of the labels, BLOCK 32 fails as a kernel out of registers.
        current = fused_view_gather.BLOCK
        calls.append(current)
        if current == 32:
            raise RuntimeError("out of resources: registers\nmore detail")
        logits = torch.zeros(1, 2, 2, 2)
        logits[:, 0] = 1.0
        rgb = torch.zeros(1, 3, 2, 2)
        if current == 256:
            logits[0, 1, 0, 0] = 2.0
            rgb[0, 0, 0, 0] = 0.5
        outputs = {"rgb": rgb, "depth": torch.ones(1, 2, 2), "semantic_logits": logits}
        return Measurement(10 + current / 64, {"sampling_gather": current / 64}, outputs)

    record = sweep([parse_knob("fused_view_gather.BLOCK=32,128,256")], measure)
    # The reference, then 32 and 256; 128 is the constant as it is and reuses the reference.
    assert calls == [block, 32, 256]
    assert fused_view_gather.BLOCK == block
    assert record["reference"] == {"frame_ms": 12.0, "stages_ms": {"sampling_gather": 2.0}}
    failed, current, wider = record["rows"]
    assert failed == {
        "knob": "fused_view_gather.BLOCK",
        "value": 32,
        "current": False,
        "error": "RuntimeError: out of resources: registers",
    }
    assert current["current"] and current["frame_ratio"] == 1.0 and current["max_abs_rgb"] == 0
    assert current["labels_unchanged"] == 1.0
    assert wider["stage"] == "sampling_gather"
    assert wider["stage_ms"] == 4.0 and wider["stage_ratio"] == 2.0
    assert math.isclose(wider["frame_ratio"], 14.0 / 12.0)
    assert wider["max_abs_rgb"] == 0.5 and wider["max_abs_depth"] == 0.0
    assert wider["max_abs_semantic_logits"] == 2.0 and wider["labels_unchanged"] == 0.75
    table = markdown_table(record)
    assert "| fused_view_gather.BLOCK | 32 | RuntimeError: out of resources: registers |" in table
    assert "| fused_view_gather.BLOCK | 128 (current) | 12.00 (1.00x) |" in table
    assert "| 4.00 (2.00x) | rgb 0.5, depth 0, semantic_logits 2 | 75.00 % |" in table


def test_frame_measure_times_every_stage_of_the_plain_render() -> None:
    torch.manual_seed(0)
    model = build_model(load_model_cfg("tiny", 4), 4).eval()
    example = plane_example(3, 24, 32, 4, seed=0)
    measured = frame_measure(model, example, 2, "fp32", torch.device("cpu"))()
    # Every stage of the benchmark's table (tests/evaluation/test_benchmark.py lists them).
    assert set(measured.stages_ms) == {stage for stage, _ in STAGES}
    assert all(ms > 0 for ms in measured.stages_ms.values())
    assert measured.frame_ms > max(measured.stages_ms.values())
    with torch.inference_mode():
        plain = model.render_image(example, model.encode_sources(example))
    assert torch.equal(measured.outputs["rgb"], plain.rgb)
    assert torch.equal(measured.outputs["semantic_logits"], plain.semantic_logits)


def test_train_step_measure_repeats_the_same_step_on_the_same_weights() -> None:
    torch.manual_seed(0)
    model = build_model(load_model_cfg("tiny", 4), 4)
    weights = [parameter.detach().clone() for parameter in model.parameters()]
    example = plane_example(3, 24, 32, 4, seed=0)
    measure = train_step_measure(model, example, 64, 2, "fp32", torch.device("cpu"))
    first, second = measure(), measure()
    assert {"feature_net", "cost_volumes", "backward", "losses_and_glue"} <= set(first.stages_ms)
    assert first.frame_ms >= first.stages_ms["backward"] > 0
    # No optimizer step: the weights, and so each call's loss and gradients, stay the same.
    for parameter, weight in zip(model.parameters(), weights):
        assert torch.equal(parameter, weight)
    assert first.outputs["loss"].isfinite() and first.outputs["gradients"].abs().sum() > 0
    assert first.outputs["gradients"].numel() == sum(p.numel() for p in model.parameters())
    for name, value in first.outputs.items():
        torch.testing.assert_close(second.outputs[name], value, rtol=0, atol=1e-6)


def test_sweep_without_a_cuda_device_says_what_it_needs() -> None:
    with pytest.raises(RuntimeError, match="a CUDA device with Triton"):
        run_kernel_sweep(KernelSweepCfg(device="cpu"))
    with pytest.raises(ValueError, match="measure='step'"):
        run_kernel_sweep(KernelSweepCfg(measure="step"))
