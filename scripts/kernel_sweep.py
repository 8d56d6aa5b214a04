"""Tile sizes and warp counts of the Triton kernels, timed on the paper frame; needs a GPU.

    python scripts/kernel_sweep.py [knobs=[fused_transformer.ROWS=16,32,64]] [repeats=5]
    python scripts/kernel_sweep.py measure=train_step   # the training step's kernels

Renders the paper model's uncached frame (or runs its training step) with every fused kernel,
once with the launch constants as they are and once per value of each knob, and prints per
value the time and its stages as ratios, and how far the outputs moved; then the path of the
JSON record as last line. See :mod:`gsnerf.evaluation.kernel_sweep`.
"""

import sys

from gsnerf.evaluation.benchmark_records import run_from_command_line
from gsnerf.evaluation.kernel_sweep import markdown_table
from gsnerf.evaluation.kernel_sweep_run import parse_overrides, run_kernel_sweep, write_sweep_record


def main(arguments: list[str]) -> None:
    run_from_command_line(
        arguments, parse_overrides, run_kernel_sweep, write_sweep_record, markdown_table
    )


if __name__ == "__main__":
    main(sys.argv[1:])
