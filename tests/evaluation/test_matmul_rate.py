"""The dense matrix-product yardstick of the benchmark's per-stage FLOP/s."""

import pytest
import torch

from gsnerf.evaluation import matmul_rate
from gsnerf.evaluation.matmul_rate import dense_matmul_rate


def test_rate_is_the_product_flops_over_the_fastest_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    passes = iter([0.5, 0.25, 0.75])
    products = []

    def fake_timed(run: object, device: torch.device) -> float:
        products.append(run())
        return next(passes)

    monkeypatch.setattr(matmul_rate, "timed", fake_timed)
    rate = matmul_rate.dense_matmul_rate(torch.device("cpu"), "fp32", size=64, repeats=3)
    assert (rate["dtype"], rate["size"]) == ("float32", 64)
    # 2 * 64^3 = 524288 FLOPs in the fastest pass, 0.25 s.
    assert rate["gflop_per_s"] == pytest.approx(2 * 64**3 / 0.25 / 1e9)
    # Every timed pass is the full product.
    assert len(products) == 3 and products[0].shape == (64, 64)


def test_bf16_products_and_unknown_precisions() -> None:
    assert dense_matmul_rate(torch.device("cpu"), "bf16", size=32, repeats=1)["dtype"] == (
        "bfloat16"
    )
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        dense_matmul_rate(torch.device("cpu"), "fp16", size=32)
