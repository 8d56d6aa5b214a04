"""Registers, spills and compile time of the fused Triton kernels; runs without a GPU.

    python scripts/kernel_report.py [arch=90] [output_dir=benchmarks]

Compiles each kernel as the paper model launches it for the GPU of compute capability ``arch``
(90: H100 / H200) and prints a Markdown table, then the path of the JSON record as last line.
See :mod:`gsnerf.evaluation.kernel_report`.
"""

import sys

from gsnerf.evaluation.benchmark_records import run_from_command_line
from gsnerf.evaluation.kernel_report import (
    markdown_table,
    parse_overrides,
    run_kernel_report,
    write_kernel_record,
)


def main(arguments: list[str]) -> None:
    run_from_command_line(
        arguments, parse_overrides, run_kernel_report, write_kernel_record, markdown_table
    )


if __name__ == "__main__":
    main(sys.argv[1:])
