"""Side-by-side figures of benchmark records (``scripts/benchmark.py``): which setting made
which stage faster, for choosing an option's default.

For every sample count N that all records measured: the uncached and the cached frame, each
stage of the profiled uncached frame, peak memory, and the training step with its phases; one
column per record, labelled by the settings in which the records differ, and after the first
each value's ratio to the first record's (below 1: less time or memory than the first).

Example: the records of ``benchmark.py`` with the CUDA defaults and with
``fused_volumes=true`` give columns labelled ``fused_volumes=False`` and
``fused_volumes=True``, and a row ``stage: cost volumes (ms) | 45.06 | 20.12 (0.45x)``.
"""

import json
from pathlib import Path

# Settings that differ between any two runs without changing what is measured.
IGNORED_SETTINGS = ("output_dir",)

# Stage keys of a record (GSNeRF.profiled) and their names in the table.
STAGE_NAMES = {
    "feature_net": "2-D feature net",
    "cost_volumes": "cost volumes",
    "guide_depth": "D_T",
    "sampling_gather": "sampling + gather",
    "heads": "heads",
    "compositing": "compositing",
}


def load_record(path: str | Path) -> dict:
    """The benchmark record in the JSON file ``path``; a clear error naming the file where it
    is missing, not JSON, or not a benchmark record."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such benchmark record")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not a JSON file ({error})") from error
    if not isinstance(record, dict) or not {"settings", "results"} <= record.keys():
        raise ValueError(f"{path}: not a benchmark record (no 'settings' and 'results')")
    return record


def record_labels(records: list[dict]) -> list[str]:
    """Each record's settings that differ among the records, as ``key=value`` joined by
    ``, `` (a setting an older record lacks reads ``-``); ``record i`` where none differs."""
    keys = sorted({key for record in records for key in record["settings"]})
    differing = [
        key
        for key in keys
        if key not in IGNORED_SETTINGS
        and len({json.dumps(record["settings"].get(key, "-")) for record in records}) > 1
    ]
    labels = []
    for index, record in enumerate(records):
        parts = [f"{key}={record['settings'].get(key, '-')}" for key in differing]
        labels.append(", ".join(parts) or f"record {index + 1}")
    return labels


def _figures(result: dict) -> dict[str, float | None]:
    """One sample count's rows (name to value) of a record's result."""
    uncached, cached = result.get("uncached", {}), result.get("cached", {})
    rows: dict[str, float | None] = {
        "uncached frame (ms)": uncached.get("ms"),
        "cached frame (ms)": cached.get("ms"),
    }
    for key, name in STAGE_NAMES.items():
        rows[f"stage: {name} (ms)"] = result.get("stages_ms", {}).get(key)
    rows["peak memory, uncached (MB)"] = uncached.get("peak_memory_mb")
    training = result.get("training") or {}
    rows["training step (ms)"] = training.get("step_ms")
    for phase, value in (training.get("phases_ms") or {}).items():
        rows[f"step: {STAGE_NAMES.get(phase, phase.replace('_', ' '))} (ms)"] = value
    return rows


def _cell(value: float | None, first: float | None, ratio: bool) -> str:
    if value is None:
        return "-"
    text = f"{value:.2f}"
    if ratio and first:
        text += f" ({value / first:.2f}x)"
    return text


def markdown_comparison(records: list[dict], names: list[str]) -> str:
    """The comparison tables of ``records`` (read from the files ``names``), one per sample
    count they all measured."""
    labels = record_labels(records)
    lines = ["Records:"]
    for index, (name, label) in enumerate(zip(names, labels, strict=True)):
        lines.append(f"{index + 1}. {name} ({label})")
    devices = sorted({str(record.get("device")) for record in records})
    if len(devices) > 1:
        lines.append(f"Warning: the records come from different devices: {devices}")
    per_record = [{result["samples"]: result for result in record["results"]} for record in records]
    shared = sorted(set.intersection(*(set(results) for results in per_record)))
    if not shared:
        lines.append("No sample count N is common to all records.")
    for samples in shared:
        figures = [_figures(results[samples]) for results in per_record]
        # Every row some record measured, in the records' order.
        rows = [row for figure in figures for row, value in figure.items() if value is not None]
        rows = list(dict.fromkeys(rows))
        columns = " | ".join(str(index + 1) for index in range(len(records)))
        lines += ["", f"| N = {samples} | {columns} |", "|---" * (len(records) + 1) + "|"]
        for row in rows:
            first = figures[0].get(row)
            cells = [_cell(figure.get(row), first, i > 0) for i, figure in enumerate(figures)]
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
