"""Benchmark records side by side (gsnerf/evaluation/benchmark_compare.py, its script)."""

import json
import runpy
import sys
from pathlib import Path

import pytest

from gsnerf.evaluation.benchmark_compare import load_record, markdown_comparison, record_labels

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "compare_benchmarks.py"


def record(fused: bool | None, uncached_ms: float, samples: tuple[int, ...] = (4,)) -> dict:
    """A record as scripts/benchmark.py writes it, with made-up figures; ``fused`` None: an
    older record without the fused_volumes setting."""
    settings = {"model": "gsnerf", "output_dir": f"out{uncached_ms}", "fused_heads": False}
    if fused is not None:
        settings["fused_volumes"] = fused
    results = [
        {
            "samples": n,
            "uncached": {"ms": uncached_ms * n / 4, "peak_memory_mb": 2000.0},
            "cached": {"ms": 40.0},
            "stages_ms": {"feature_net": 6.0, "cost_volumes": uncached_ms - 50.0},
            "training": {
                "step_ms": 200.0,
                "phases_ms": {"backward": 120.0, "losses_and_glue": 5.0},
            },
        }
        for n in samples
    ]
    return {"device": "NVIDIA H100", "settings": settings, "results": results}


def test_table_gives_each_figure_and_its_ratio_to_the_first_record() -> None:
    records = [record(False, 90.0), record(True, 70.0)]
    table = markdown_comparison(records, ["a.json", "b.json"])
    # Only the setting that differs labels the records (the output folder is ignored).
    assert "1. a.json (fused_volumes=False)" in table
    assert "2. b.json (fused_volumes=True)" in table
    assert "| uncached frame (ms) | 90.00 | 70.00 (0.78x) |" in table
    assert "| stage: cost volumes (ms) | 40.00 | 20.00 (0.50x) |" in table
    assert "| cached frame (ms) | 40.00 | 40.00 (1.00x) |" in table
    assert "| step: backward (ms) | 120.00 | 120.00 (1.00x) |" in table
    assert "| step: losses and glue (ms) | 5.00 | 5.00 (1.00x) |" in table
    # A stage no record measured is not listed; one a record lacks reads "-".
    assert "D_T" not in table
    del records[1]["results"][0]["stages_ms"]["feature_net"]
    table = markdown_comparison(records, ["a.json", "b.json"])
    assert "| stage: 2-D feature net (ms) | 6.00 | - |" in table
    assert "Warning" not in table


def test_labels_name_missing_settings_and_identical_records() -> None:
    assert record_labels([record(None, 90.0), record(True, 90.0)]) == [
        "fused_volumes=-",
        "fused_volumes=True",
    ]
    assert record_labels([record(True, 90.0), record(True, 80.0)]) == ["record 1", "record 2"]


def test_only_the_sample_counts_all_records_measured_are_compared() -> None:
    records = [record(False, 90.0, (4, 128)), record(True, 70.0, (4,))]
    records[1]["device"] = "NVIDIA H200"
    table = markdown_comparison(records, ["a", "b"])
    assert "| N = 4 |" in table and "N = 128" not in table
    assert "different devices" in table
    table = markdown_comparison([record(False, 90.0, (128,)), records[1]], ["a", "b"])
    assert "No sample count N is common to all records." in table


def test_bad_files_are_errors_that_name_them(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.json: no such benchmark record"):
        load_record(tmp_path / "missing.json")
    text = tmp_path / "notes.json"
    text.write_text("not json")
    with pytest.raises(ValueError, match="notes.json: not a JSON file"):
        load_record(text)
    other = tmp_path / "kernels.json"
    other.write_text(json.dumps({"rows": []}))
    with pytest.raises(ValueError, match="kernels.json: not a benchmark record"):
        load_record(other)


def test_script_prints_the_comparison_of_two_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = []
    for fused, milliseconds in ((False, 90.0), (True, 45.0)):
        path = tmp_path / f"{fused}.json"
        path.write_text(json.dumps(record(fused, milliseconds)))
        paths.append(str(path))
    monkeypatch.setattr(sys, "argv", ["compare_benchmarks.py", *paths])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    assert "| uncached frame (ms) | 90.00 | 45.00 (0.50x) |" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["compare_benchmarks.py", paths[0], str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="x: no such benchmark record"):
        runpy.run_path(str(SCRIPT), run_name="__main__")
    monkeypatch.setattr(sys, "argv", ["compare_benchmarks.py", paths[0]])
    with pytest.raises(SystemExit, match="usage"):
        runpy.run_path(str(SCRIPT), run_name="__main__")
