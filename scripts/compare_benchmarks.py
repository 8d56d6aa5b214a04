"""Benchmark records side by side: per stage, which setting made it faster.

    python scripts/compare_benchmarks.py benchmarks/A.json benchmarks/B.json [...]

Prints one Markdown table per sample count the records share, one column per record (labelled
by the settings in which they differ), each value after the first with its ratio to the first
record's. See :mod:`gsnerf.evaluation.benchmark_compare`.
"""

import sys

from gsnerf.evaluation.benchmark_compare import load_record, markdown_comparison


def main(arguments: list[str]) -> None:
    if len(arguments) < 2:
        sys.exit("usage: python scripts/compare_benchmarks.py RECORD.json RECORD.json [...]")
    try:
        records = [load_record(name) for name in arguments]
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"compare_benchmarks: {error}")
    print(markdown_comparison(records, arguments))


if __name__ == "__main__":
    main(sys.argv[1:])
