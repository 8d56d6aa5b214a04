"""The benchmark's operator table: the operator that does the work comes first, with its calls."""

import pytest
import torch

from gsnerf.evaluation.op_profile import top_operators


def test_the_largest_product_comes_first_with_its_call_count() -> None:
    large, small = torch.randn(384, 384), torch.randn(8, 8)

    def run() -> None:
        for _ in range(3):
            large @ large  # about 113 MFLOP each
        small + 1

    rows = top_operators(run, torch.device("cpu"), 2)
    assert len(rows) == 2
    assert rows[0]["name"] == "aten::mm" and rows[0]["calls"] == 3
    assert rows[0]["self_ms"] >= rows[1]["self_ms"] > 0
    everything = top_operators(run, torch.device("cpu"), 100)
    names = [row["name"] for row in everything]
    assert "aten::add" in names and len(names) == len(set(names))
    assert [row["self_ms"] for row in everything] == sorted(
        (row["self_ms"] for row in everything), reverse=True
    )


def test_compiled_code_is_named_as_such() -> None:
    compiled = torch.compile(lambda x: (x.sin() * 2).cos(), dynamic=False)
    value = torch.randn(1000)
    compiled(value)
    rows = top_operators(lambda: compiled(value), torch.device("cpu"), 20)
    assert any(row["name"].startswith("compiled graph ") for row in rows)


def test_a_failing_profiler_gives_no_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    import gsnerf.evaluation.op_profile as op_profile

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("profiler refused")

    monkeypatch.setattr(op_profile, "profile", refuse)
    assert op_profile.top_operators(lambda: None, torch.device("cpu"), 5) == []
