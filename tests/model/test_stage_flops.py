"""FLOPs per stage: hand-counted products, stages by context and by module, several counters."""

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from gsnerf.model.stage_timer import StageFlops


def test_a_stage_gets_the_flops_of_its_products_and_nothing_outside() -> None:
    layer = nn.Linear(8, 4, bias=False)
    rows = torch.randn(10, 8)
    counter = FlopCounterMode(display=False)
    recorder = StageFlops(counter)
    with counter:
        layer(rows)  # outside every stage: 640 FLOPs for the counter, none for a stage
        with recorder("heads"):
            layer(rows)
            torch.mm(torch.randn(3, 5), torch.randn(5, 7))
    # Linear on 10 rows, 8 -> 4: 2 * 10 * 8 * 4 = 640; (3 x 5) @ (5 x 7): 2 * 3 * 5 * 7 = 210.
    assert recorder.flops == {"heads": 640 + 210}
    assert counter.get_total_flops() == 2 * 640 + 210


def test_module_stages_and_several_counters_add_up() -> None:
    encoder, head = nn.Linear(6, 6, bias=False), nn.Linear(6, 2, bias=False)
    first, second = FlopCounterMode(display=False), FlopCounterMode(display=False)
    recorder = StageFlops(first, second)
    handles = recorder.attach(encoder, "encoder")
    with first:
        encoded = encoder(torch.randn(4, 6))
    with second:
        encoder(encoded)
        with recorder("head"):
            head(encoded)
    for handle in handles:
        handle.remove()
    encoder(encoded)  # detached: no longer recorded
    # Two calls of 2 * 4 * 6 * 6 = 288 FLOPs, one under each counter; the head 2 * 4 * 6 * 2.
    assert recorder.flops == {"encoder": 2 * 288, "head": 96}
    assert dict(recorder.calls) == {"encoder": 2, "head": 1}


def test_flop_stages_cannot_nest() -> None:
    recorder = StageFlops(FlopCounterMode(display=False))
    with pytest.raises(RuntimeError, match="StageFlops: .*must not nest"):
        with recorder("outer"), recorder("inner"):
            pass
