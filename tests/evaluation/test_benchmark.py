"""Benchmark: the plane scene's geometry, typed overrides, the record and the script's output."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf.errors import ConfigKeyError, ValidationError

from gsnerf.evaluation.benchmark import (
    BenchmarkCfg,
    compile_failure_named,
    load_model_cfg,
    parse_overrides,
    rays_per_chunk,
    run_benchmark,
    with_device_defaults,
    write_record,
)
from gsnerf.evaluation.benchmark_report import markdown_report, paper_comparison, training_failed
from gsnerf.evaluation.benchmark_scene import PlaneSceneCfg, plane_example
from gsnerf.evaluation.pass_timing import alternate_passes
from gsnerf.geometry.camera import project_points, unproject_depth
from gsnerf.model.compiled_heads import compile_heads
from gsnerf.model.gsnerf import build_model

PROJECT = Path(__file__).resolve().parents[2]


def test_middle_camera_sees_an_untilted_plane_at_the_arc_radius() -> None:
    # Three sources on the arc: the middle one sits at angle 0, at the origin facing +z.
    example = plane_example(3, 12, 16, 4, seed=0, cfg=PlaneSceneCfg(tilt=0.0, distance=2.0))
    torch.testing.assert_close(example.sources.cam_to_world[0, 1], torch.eye(4))
    torch.testing.assert_close(example.sources.depths[0, 1], torch.full((12, 16), 2.0))


def test_views_agree_on_the_plane_geometry() -> None:
    example = plane_example(4, 24, 32, 4, seed=0)
    sources, target = example.sources, example.target
    points = unproject_depth(
        sources.depths[0, 0], sources.intrinsics[0, 0], sources.cam_to_world[0, 0]
    ).reshape(-1, 3)
    pixels, z = project_points(points, target.intrinsics[0, 0], target.cam_to_world[0, 0])
    # Points landing on a target pixel centre must have the target's depth there.
    rounded = pixels.round()
    on_centre = ((pixels - rounded).abs() < 0.05).all(-1)
    inside = (rounded[:, 0] >= 0) & (rounded[:, 0] < 32) & (rounded[:, 1] >= 0)
    inside &= rounded[:, 1] < 24
    keep = on_centre & inside
    assert keep.sum() > 5
    cols, rows = rounded[keep].long().unbind(-1)
    torch.testing.assert_close(target.depths[0, 0][rows, cols], z[keep], atol=2e-2, rtol=0)
    assert example.source_neighbours.shape == (1, 4, 3)


def test_overrides_are_typed_and_strict() -> None:
    cfg = parse_overrides(["width=24", "samples=[2,3]", "precision=bf16"])
    assert (cfg.width, cfg.samples, cfg.precision, cfg.height) == (24, [2, 3], "bf16", None)
    with pytest.raises(ConfigKeyError, match="not_a_key"):
        parse_overrides(["not_a_key=1"])
    with pytest.raises(ValidationError, match="repeats"):
        parse_overrides(["repeats=many"])


def test_uncached_and_cached_passes_alternate_until_repeats_or_budget() -> None:
    calls: list[str] = []
    cpu = torch.device("cpu")
    first, second = (lambda: calls.append("first")), (lambda: calls.append("second"))
    runs = alternate_passes(first, second, 3, 60.0, cpu)
    assert calls == ["first", "second"] * 3
    assert (len(runs[0]), len(runs[1])) == (3, 3)
    assert runs[2] > 0 and runs[3] > 0  # peak resident memory, MB

    def slow() -> None:
        calls.append("slow")
        time.sleep(0.02)

    calls.clear()
    # A pair that spends the budget ends the series: still one full pair.
    runs = alternate_passes(slow, second, 3, 0.01, cpu)
    assert calls == ["slow", "second"]
    assert runs[0][0] >= 0.02


def test_model_config_comes_from_the_yaml_with_only_guided_samples() -> None:
    cfg = load_model_cfg("gsnerf", 128)
    assert cfg.geo_reasoner.n_depths == [48, 32, 8]
    assert (cfg.sampler.num_samples, cfg.sampler.num_uniform) == (128, 0)
    with pytest.raises(ValueError, match="tiny"):
        load_model_cfg("huge", 4)


def test_unset_keys_take_the_device_defaults() -> None:
    cfg = parse_overrides(["width=24"])
    cpu = with_device_defaults(cfg, torch.device("cpu"))
    assert (cpu.model, cpu.width, cpu.height, cpu.precision) == ("tiny", 24, 60, "fp32")
    assert (cpu.chunk_samples, cpu.train_rays, cpu.train_views) == (4096, 512, 4)
    assert (cpu.compile, cpu.compile_parts) == ("default", ["heads", "gather", "guide_depth"])
    # CUDA: the paper's model, image size and training config, chunks sized to free memory.
    cuda = with_device_defaults(parse_overrides(["precision=fp32"]), torch.device("cuda"))
    assert (cuda.model, cuda.width, cuda.height, cuda.precision) == ("gsnerf", 320, 240, "fp32")
    assert (cuda.chunk_samples, cuda.chunk_rays, cuda.train_rays, cuda.train_views) == (
        0,
        0,
        1024,
        8,
    )
    assert cuda.compile == "default"
    assert cuda.compile_parts == ["heads", "gather", "cost_volumes"]
    # One kernel per transformer by default on both (Triton on CUDA, C++ on a CPU); off on request.
    assert cuda.fused_transformer and cpu.fused_transformer
    assert not parse_overrides(["fused_transformer=false"]).fused_transformer
    # Eager on CUDA: the device's compile parts do not apply, and the heads' default is no error.
    eager = with_device_defaults(parse_overrides(["compile=none"]), torch.device("cuda"))
    assert (eager.compile, eager.compile_parts) == ("none", ["heads"])
    compile_heads(build_model(load_model_cfg("tiny", 4), 3), eager.compile, eager.compile_parts)
    with pytest.raises(ValueError, match="fast"):
        parse_overrides(["compile=fast"])


def test_a_failed_compile_names_the_eager_override() -> None:
    with pytest.raises(RuntimeError, match="compile=default: .*OSError: no cc.*compile=none"):
        with compile_failure_named("default"):
            raise OSError("no cc\nsecond line")


def test_rays_per_chunk_keep_the_samples_per_chunk() -> None:
    assert rays_per_chunk(BenchmarkCfg(chunk_samples=4096), 128) == 32
    assert rays_per_chunk(BenchmarkCfg(chunk_samples=100), 128) == 1
    assert rays_per_chunk(BenchmarkCfg(chunk_samples=0, chunk_rays=512), 128) == 512


def test_record_of_a_small_run(tmp_path: Path) -> None:
    cfg = BenchmarkCfg(
        width=24,
        height=16,
        views=2,
        samples=[1, 2],
        repeats=2,
        warmup=1,
        device="cpu",
        threads=0,
        compile="none",
        train_rays=8,
        train_views=3,
        train_steps=1,
        output_dir=str(tmp_path),
    )
    record = run_benchmark(cfg)
    first, second = record["results"]
    # 4096 samples per chunk by default: 4096 rays at N = 1, 2048 at N = 2.
    assert (first["chunk_rays"], second["chunk_rays"]) == (4096, 2048)
    for result in record["results"]:
        stages = result["stages_ms"]
        assert set(stages) == {
            "feature_net",
            "cost_volumes",
            "guide_depth",
            "sampling_gather",
            "heads",
            "compositing",
        }
        # Stages never overlap, so together they cannot exceed the frame they were timed in.
        assert sum(stages.values()) <= result["profiled_frame_ms"]
        assert result["residual_ms"] == pytest.approx(
            result["profiled_frame_ms"] - sum(stages.values())
        )
        assert 1 <= len(result["uncached"]["runs_ms"]) <= 2
        # FLOPs per stage: the encoding's are the feature net's and the cost volumes', the
        # rendering's those of the heads and (a few products) D_T and the gathering.
        flops = result["stage_gflop"]
        assert set(flops) == set(stages)
        encode = result["uncached"]["gflop"] - result["cached"]["gflop"]
        assert flops["feature_net"] + flops["cost_volumes"] == pytest.approx(encode, rel=1e-6)
        assert flops["heads"] > 0.9 * result["cached"]["gflop"]
        assert sum(flops.values()) <= result["uncached"]["gflop"] * (1 + 1e-9)
        # The operator table of the frame: at most profile_ops rows, the most self time first.
        top = [row["self_ms"] for row in result["top_ops"]]
        assert 0 < len(top) <= 12 and top == sorted(top, reverse=True)
        training = result["training"]
        assert training["rays_per_s"] == pytest.approx(8 * training["steps_per_s"])
        # The profiled training step: the forward's stages, the losses, backward, optimizer,
        # timed one after the other within the step, so they cannot exceed it together.
        phases = training["phases_ms"]
        assert set(phases) == set(stages) | {"losses_and_glue", "backward", "optimizer"}
        assert all(phases[key] > 0 for key in ("cost_volumes", "heads", "backward", "optimizer"))
        assert phases["losses_and_glue"] >= 0
        assert sum(phases.values()) <= training["profiled_step_ms"]
    # The source encoding does not depend on N: uncached minus cached FLOPs are the same.
    encode = [r["uncached"]["gflop"] - r["cached"]["gflop"] for r in record["results"]]
    assert encode[0] > 0 and encode[0] == pytest.approx(encode[1], rel=1e-9)
    assert second["cached"]["gflop"] > first["cached"]["gflop"]

    assert record["dense_matmul"]["gflop_per_s"] > 0
    path = write_record(record, cfg)
    settings = json.loads(path.read_text())["settings"]
    assert settings["samples"] == [1, 2]
    # The record holds the values used: the CPU defaults of the keys left unset.
    assert (settings["model"], settings["precision"], settings["chunk_samples"]) == (
        "tiny",
        "fp32",
        4096,
    )
    assert path.name.endswith("_tiny_24x16_cpu_fp32.json")
    report = markdown_report(record)
    assert "\n| 1 | " in report and "\n| 2 | " in report
    assert "most self time in one uncached frame, N=2" in report
    assert "| N | 2-D feature net | cost volumes | D_T | sampling + gather | heads | " in report
    assert "| losses + glue | backward | optimizer | sum | step (profiled) | step |" in report
    assert "| N | stage | ms | GFLOP | GFLOP/s | of dense matmul |" in report
    assert "\n| 2 | cost volumes | " in report and "\n| 2 | frame | " in report


def test_script_prints_the_record_path_last(tmp_path: Path) -> None:
    arguments = [
        "width=16",
        "height=8",
        "views=2",
        "samples=[1]",
        "repeats=1",
        "train_steps=0",
        "device=cpu",
        "compile=none",
        f"output_dir={tmp_path}",
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, str(PROJECT / "scripts" / "benchmark.py"), *arguments],
        capture_output=True,
        text=True,
        check=True,
        env=environment,
    )
    last = completed.stdout.strip().splitlines()[-1]
    assert Path(last).parent == tmp_path and Path(last).is_file()
    assert "| N | rays/chunk | uncached ms" in completed.stdout


def test_paper_comparison_only_in_the_papers_setting() -> None:
    result = {"samples": 4, "uncached": {"fps": 8.4}, "cached": {"fps": 42.0}}
    paper = {"model": "gsnerf", "width": 320, "height": 240, "views": 8}
    line = paper_comparison({"settings": paper, "results": [result]})
    assert "8.4 FPS uncached (10.0x the paper's), 42 FPS cached (50.0x)" in line
    tiny = {**paper, "model": "tiny", "width": 80, "height": 60}
    line = paper_comparison({"settings": tiny, "results": [result]})
    assert "0.84 FPS at N = 4" in line and "not comparable" in line


def test_a_failing_training_step_is_recorded_not_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    import gsnerf.evaluation.train_throughput as train_throughput

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("mha_graph.execute failed\ndetails")

    model = build_model(load_model_cfg("tiny", 4), 4)
    example = plane_example(2, 8, 16, 4, seed=0)
    fine = train_throughput.measure_training(model, example, 8, 1, "fp32", 60.0, 0)
    assert fine["rays_per_s"] == pytest.approx(8 * fine["steps_per_s"])
    monkeypatch.setattr(train_throughput, "training_losses", refuse)
    failed = train_throughput.measure_training(model, example, 8, 1, "fp32", 60.0, 0)
    assert failed == {"error": "RuntimeError: mha_graph.execute failed"}
    assert training_failed({"training": failed})
    assert not training_failed({"training": fine}) and not training_failed({"training": None})
