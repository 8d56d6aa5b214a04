"""The kernel report: compiles the fused kernels for an H100 without one, and finds spills."""

import json
import re
from typing import no_type_check

import pytest

from gsnerf.evaluation import kernel_report
from gsnerf.evaluation.kernel_report import (
    KernelCase,
    KernelReportCfg,
    compile_for_target,
    float_scalar_arguments,
    kernel_row,
    markdown_table,
    parse_ptxas_usage,
    run_kernel_report,
    write_kernel_record,
)

needs_triton = pytest.mark.skipif(kernel_report.triton is None, reason="needs Triton")

if kernel_report.triton is not None:
    import triton
    import triton.language as tl

    @triton.jit
    @no_type_check
    def _wide_tile_kernel(in_ptr, out_ptr, COLUMNS: tl.constexpr):
        """Keeps a 64 x COLUMNS float32 tile live across a reduction: 64 COLUMNS / 32 values
        per thread of one warp, far more than 255 registers for COLUMNS = 256."""
        rows = tl.arange(0, 64)
        columns = tl.arange(0, COLUMNS)
        tile = tl.load(in_ptr + rows[:, None] * COLUMNS + columns[None, :])
        norms = tl.sum(tile * tile, axis=1)
        tl.store(out_ptr + rows[:, None] * COLUMNS + columns[None, :], tile / norms[:, None])


def test_ptxas_report_is_parsed_and_a_missing_one_is_an_error() -> None:
    report = (
        "ptxas info    : Function properties for k\n"
        "    1984 bytes stack frame, 4532 bytes spill stores, 8420 bytes spill loads\n"
        "ptxas info    : Used 255 registers, used 0 barriers, 1984 bytes cumulative stack size\n"
    )
    assert parse_ptxas_usage(report) == {
        "registers": 255,
        "stack_bytes": 1984,
        "spill_store_bytes": 4532,
        "spill_load_bytes": 8420,
    }
    with pytest.raises(ValueError, match="no register or stack report"):
        parse_ptxas_usage("ptxas fatal : unknown architecture")


@needs_triton
def test_a_kernel_too_wide_for_the_registers_is_reported_as_spilling() -> None:
    import torch

    def launch(columns: int):
        def run(launcher: object) -> None:
            tile = torch.zeros(64, columns)
            launcher[(1,)](tile, tile, COLUMNS=columns, num_warps=1)

        return run

    wide = kernel_row(KernelCase("wide", "", _wide_tile_kernel, launch(256)), arch=90)
    narrow = kernel_row(KernelCase("narrow", "", _wide_tile_kernel, launch(16)), arch=90)
    assert wide["registers"] == 255 and wide["spill_store_bytes"] > 0
    assert narrow["spill_store_bytes"] == 0 and 0 < narrow["registers"] < 255


@needs_triton
def test_the_model_kernels_compile_for_sm90_without_spilling(tmp_path) -> None:
    cfg = KernelReportCfg(arch=90, output_dir=str(tmp_path))
    record = run_kernel_report(cfg)
    kernels = {row["kernel"] for row in record["rows"]}
    kernels_expected = {"attention", "block tail", "transformer", "view gather", "patch read"}
    kernels_expected |= {"radiance views", "semantic logits", "volume conv"}
    kernels_expected |= {"volume conv weight grad", "correlation", "correlation grad"}
    kernels_expected |= {"guide depth"}
    assert kernels == kernels_expected
    for row in record["rows"]:
        # A spill moves values to local memory (the cache hierarchy) on every use. The
        # attention kernel with unrolled token loops spilled here (172 bytes per thread).
        assert row["spill_store_bytes"] == 0 and row["spill_load_bytes"] == 0, row
        assert 0 < row["registers"] <= 255 and row["compile_s"] > 0
    path = write_kernel_record(record, cfg)
    assert path.name.endswith("_kernels_sm90.json")
    assert json.loads(path.read_text())["rows"] == record["rows"]
    assert "| attention | view / semantic transformer" in markdown_table(record)


@needs_triton
def test_the_model_kernels_compile_with_float_scalars_as_torch_compile_passes_them() -> None:
    # Inductor launches a user kernel with its Python float arguments typed fp64: a float32
    # value multiplied by one becomes fp64, which broke a loop-carried float32 on an H100.
    # The kernels convert such a scalar once: no float64 arithmetic is left in them.
    float64_arithmetic = re.compile(r"^\s*(add|sub|mul|fma|div|max|min)[.\w]*\.f64\b", re.MULTILINE)
    checked = set()
    for case in kernel_report.model_kernel_cases():
        # A kernel given no float compiles the same either way (the other test compiles it).
        if not float_scalar_arguments(case):
            continue
        compiled, _ = compile_for_target(case, arch=90, float_scalars="fp64")
        assert float64_arithmetic.search(compiled.asm["ptx"]) is None, case.case
        checked.add(case.kernel)
    # Every kernel that takes a float scale, epsilon, spacing or tolerance was checked.
    kernels_with_floats = {"attention", "block tail", "transformer", "view gather", "patch read"}
    kernels_with_floats |= {"radiance views", "semantic logits", "guide depth"}
    assert checked == kernels_with_floats
