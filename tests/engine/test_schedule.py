import math

import pytest
import torch

from gsnerf.engine.schedule import OptimCfg, build_optimizer, build_scheduler, lr_factor


def test_warmup_is_linear_from_one_step() -> None:
    cfg = OptimCfg(lr=5e-4, warmup_steps=500, lr_min=1e-5)
    # Spec 4: lr = 5e-4 * (step + 1) / 500 during warm-up.
    assert lr_factor(0, 300_000, cfg) == pytest.approx(1 / 500)
    assert lr_factor(249, 300_000, cfg) == pytest.approx(250 / 500)
    assert lr_factor(499, 300_000, cfg) == pytest.approx(1.0)


def test_cosine_reaches_lr_min_at_the_last_step() -> None:
    cfg = OptimCfg(lr=5e-4, warmup_steps=10, lr_min=1e-5)
    assert lr_factor(10, 110, cfg) == pytest.approx(1.0)
    # Half way through the cosine: (1 + floor) / 2 with floor = 1e-5 / 5e-4 = 0.02.
    assert lr_factor(60, 110, cfg) == pytest.approx(0.51)
    assert lr_factor(110, 110, cfg) == pytest.approx(0.02)
    assert lr_factor(500, 110, cfg) == pytest.approx(0.02)


def test_scheduler_state_resumes_the_same_learning_rates() -> None:
    cfg = OptimCfg(lr=1e-3, warmup_steps=3, lr_min=1e-4)
    parameter = torch.nn.Parameter(torch.zeros(1))

    def rates_after(steps_before_reload: int) -> list[float]:
        optimizer = build_optimizer([parameter], cfg)
        scheduler = build_scheduler(optimizer, 10, cfg)
        for _ in range(steps_before_reload):
            optimizer.step()
            scheduler.step()
        # The trainer restores both: the optimiser holds the current lr, the scheduler the step.
        optimizer_state, scheduler_state = optimizer.state_dict(), scheduler.state_dict()
        optimizer = build_optimizer([parameter], cfg)
        scheduler = build_scheduler(optimizer, 10, cfg)
        optimizer.load_state_dict(optimizer_state)
        scheduler.load_state_dict(scheduler_state)
        optimizer.step()
        scheduler.step()
        return [optimizer.param_groups[0]["lr"]]

    expected = 1e-3 * lr_factor(6, 10, cfg)
    assert rates_after(5)[0] == pytest.approx(expected)
    assert not math.isclose(expected, 1e-3 * lr_factor(1, 10, cfg))


def test_fused_adam_takes_the_steps_of_the_per_tensor_loop() -> None:
    # The library's two implementations of one update, with weight decay and the schedule's
    # warm-up: five steps on random gradients of a few parameter tensors.
    torch.manual_seed(0)
    shapes = [(3, 4), (7,), (2, 3, 5)]
    start = [torch.randn(shape) for shape in shapes]
    gradients = [[torch.randn(shape) for shape in shapes] for _ in range(5)]
    cfg = OptimCfg(lr=1e-2, warmup_steps=2, weight_decay=1e-3)

    def trained(fused: bool) -> list[torch.Tensor]:
        parameters = [torch.nn.Parameter(value.clone()) for value in start]
        optimizer = build_optimizer(parameters, OptimCfg(**{**vars(cfg), "fused": fused}))
        assert optimizer.defaults["fused"] is (True if fused else None)
        scheduler = build_scheduler(optimizer, 10, cfg)
        for step_gradients in gradients:
            for parameter, gradient in zip(parameters, step_gradients):
                parameter.grad = gradient.clone()
            optimizer.step()
            scheduler.step()
        return [parameter.detach() for parameter in parameters]

    fused, loop = trained(True), trained(False)
    for fused_value, loop_value, initial in zip(fused, loop, start):
        assert not torch.equal(loop_value, initial)
        torch.testing.assert_close(fused_value, loop_value, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("fused", [True, False])
def test_the_optimiser_is_adam_with_the_spec_settings_and_l2_weight_decay(fused: bool) -> None:
    cfg = OptimCfg(fused=fused)
    weight = torch.nn.Parameter(torch.tensor([1.0]))
    optimizer = build_optimizer([weight], cfg)
    group = optimizer.param_groups[0]
    assert (group["lr"], tuple(group["betas"]), group["weight_decay"]) == (5e-4, (0.9, 0.999), 1e-5)
    # With a zero gradient only the decay moves the weight. Adam's L2 decay adds wd * w to the
    # gradient, and its first step is lr * g / (|g| + eps): 5e-4 * 1e-5 / (1e-5 + 1e-8). AdamW's
    # decoupled decay would move it by lr * wd * w = 5e-9 only.
    weight.grad = torch.zeros(1)
    optimizer.step()
    expected = 1.0 - 5e-4 * 1e-5 / (1e-5 + 1e-8)
    torch.testing.assert_close(weight.detach(), torch.tensor([expected]), rtol=0, atol=1e-9)
