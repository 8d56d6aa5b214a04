"""The transformer benchmark on a CPU: its plain, compiled and C++ variants, its record, its
errors."""

import json

import pytest

from gsnerf.evaluation.transformer_benchmark import (
    TransformerBenchmarkCfg,
    markdown_table,
    run_transformer_benchmark,
    write_transformer_record,
)
from gsnerf.model.native_library import compiler_present


def test_cpu_run_times_plain_and_compiled_and_writes_its_record(tmp_path) -> None:
    cfg = TransformerBenchmarkCfg(
        sets=64,
        precision="fp32",
        device="cpu",
        repeats=2,
        output_dir=str(tmp_path),
        variants=["plain", "compiled"],
    )
    record = run_transformer_benchmark(cfg)
    assert list(record["results"]) == ["plain", "compiled"]
    for result in record["results"].values():
        assert result["ms"] > 0 and len(result["runs_ms"]) == 2
    # The compiled transformer computes the plain one's numbers (float32 rounding).
    assert record["results"]["plain"]["max_abs_difference"] == 0.0
    assert record["results"]["compiled"]["max_abs_difference"] < 1e-4
    path = write_transformer_record(record, cfg)
    assert path.parent == tmp_path and path.name.endswith("_transformer_cpu_fp32.json")
    assert json.loads(path.read_text())["settings"]["sets"] == 64
    assert "| compiled |" in markdown_table(record)


@pytest.mark.skipif(not compiler_present(), reason="no C++ compiler")
def test_cpu_kernel_variants_compute_the_plain_numbers(tmp_path) -> None:
    cfg = TransformerBenchmarkCfg(
        sets=40, layers=2, precision="fp32", device="cpu", repeats=1, output_dir=str(tmp_path)
    )
    record = run_transformer_benchmark(cfg)
    assert list(record["results"]) == [
        "plain",
        "compiled",
        "fused_transformer",
        "fused_transformer_compiled",
    ]
    for name in ("fused_transformer", "fused_transformer_compiled"):
        assert 0.0 < record["results"][name]["max_abs_difference"] < 1e-4


def test_unknown_and_cuda_only_variants_are_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown \['fastest'\]"):
        TransformerBenchmarkCfg(variants=["fastest"])
    cfg = TransformerBenchmarkCfg(sets=8, device="cpu", variants=["plain", "fused_blocks"])
    with pytest.raises(ValueError, match=r"\['fused_blocks'\] need CUDA"):
        run_transformer_benchmark(cfg)
