"""Rendering and training speed of gsnerf per sample count N (spec 9); see benchmarks/README.md.

    python scripts/benchmark.py [key=value ...]     # e.g. compile=none samples=[4]

Keys are the fields of :class:`gsnerf.evaluation.benchmark.BenchmarkCfg`. Model, image size,
chunks, precision, compiled heads and training step default per device. On CUDA: the paper's
setting, its model at 320x240 with 8 source views, chunks sized to the free memory, bf16
autocast where supported, the paper's training config (1024 rays, 8 views). On a CPU, sized for
two cores: the tiny model at 80x60, chunks of 4096 samples (a CPU is fastest with small
chunks), fp32, the quickstart's training step (512 rays, 4 views). Both: heads and more
(``compile_parts``) compiled with torch.compile (``compile=none`` for eager heads; the compile
needs a C++ compiler on a CPU and Triton on CUDA), N = 4 and 128, one CPU thread, 5 repeats
with a 60 s budget per measurement (so N = 128 runs a few times on the CPU). On that CPU one
uncached frame of the tiny model at 320x240 takes about 40 s at N = 4 eager and would take over
12 minutes at N = 128, so its default renders a sixteenth of the pixels: every per-ray cost
scales with the pixel count, and the whole run stays within minutes.

Prints the Markdown tables, then the path of the JSON record (under benchmarks/) as last line;
exits with status 1 if a training measurement failed (its error is in the record).
"""

import sys

from gsnerf.evaluation.benchmark import parse_overrides, run_benchmark, write_record
from gsnerf.evaluation.benchmark_records import run_from_command_line
from gsnerf.evaluation.benchmark_report import markdown_report, training_failed


def main(arguments: list[str]) -> None:
    record = run_from_command_line(
        arguments, parse_overrides, run_benchmark, write_record, markdown_report
    )
    # The record keeps every figure, but a failed measurement must not pass for a clean run.
    if any(training_failed(result) for result in record["results"]):
        raise SystemExit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
