"""Speed of the heads' transformer formulations on one frame's tokens; see benchmarks/README.md.

    python scripts/transformer_benchmark.py [key=value ...]   # e.g. precision=fp32 sets=76800

Keys are the fields of
:class:`gsnerf.evaluation.transformer_benchmark.TransformerBenchmarkCfg`. On CUDA it times the
plain, compiled, fused-attention and fused-block formulations of one paper-size transformer on
one 320x240 frame's tokens, and one attention call with inductor's kernels and with the fused
kernel; on a CPU the plain and compiled ones. Prints a Markdown table, then the path of the
JSON record (under benchmarks/) as last line.
"""

import sys

from gsnerf.evaluation.benchmark_records import run_from_command_line
from gsnerf.evaluation.transformer_benchmark import (
    markdown_table,
    parse_overrides,
    run_transformer_benchmark,
    write_transformer_record,
)


def main(arguments: list[str]) -> None:
    run_from_command_line(
        arguments,
        parse_overrides,
        run_transformer_benchmark,
        write_transformer_record,
        markdown_table,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
