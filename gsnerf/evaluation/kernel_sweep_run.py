"""The kernel sweep on the paper model: its config, the passes it times (the uncached frame, a
training step) and its JSON record (:mod:`gsnerf.evaluation.kernel_sweep` explains the sweep).
"""

import dataclasses
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from gsnerf.engine.device import (
    autocast_context,
    configure_matmul_precision,
    resolve_device,
    resolve_precision,
    synchronize,
)
from gsnerf.engine.step import sample_pixels, training_losses
from gsnerf.evaluation.benchmark_records import load_model_cfg, parse_config, write_json_record
from gsnerf.evaluation.benchmark_scene import plane_example
from gsnerf.evaluation.kernel_sweep import (
    DEFAULT_KNOBS,
    DEFAULT_TRAIN_KNOBS,
    Measurement,
    parse_knob,
    sweep,
)
from gsnerf.evaluation.train_throughput import profiled_step
from gsnerf.losses import LossCfg
from gsnerf.model import build_model, fused_transformer
from gsnerf.model.fused_kernels import (
    FusedKernels,
    current_fused_kernels,
    set_fused_kernels,
    use_fused_kernels,
)
from gsnerf.model.gsnerf import GSNeRF
from gsnerf.model.stage_timer import StageTimer
from gsnerf.types import Example

# What a sweep times: the uncached frame, or a training step.
MEASURES = ("frame", "train_step")


@dataclass
class KernelSweepCfg:
    # Model config under configs/model/ (the paper's gsnerf) and the frame: W x H, source views.
    model: str = "gsnerf"
    width: int = 320
    height: int = 240
    views: int = 8
    # Guided samples per ray.
    samples: int = 4
    # "auto" (bf16 autocast where supported), "bf16", "fp16" or "fp32".
    precision: str = "auto"
    # The sweep times Triton kernels: a CUDA device.
    device: str = "cuda"
    # "frame" (the uncached frame) or "train_step" (a training step of train_rays rays).
    measure: str = "frame"
    # Rays of a training step (the paper training config's 1024).
    train_rays: int = 1024
    # Timed passes per value (median), after one untimed pass that compiles the kernels.
    repeats: int = 5
    # "module.CONSTANT=v1,v2,...": the values of one launch constant of a module of
    # SWEPT_MODULES (SWEPT_CONSTANTS, powers of two), tried one knob at a time. Unset: the
    # measure's defaults (DEFAULT_KNOBS, DEFAULT_TRAIN_KNOBS).
    knobs: list[str] | None = None
    num_classes: int = 20
    seed: int = 0
    # Folder of the JSON record.
    output_dir: str = "benchmarks"


def frame_measure(
    model: GSNeRF, example: Example, repeats: int, precision: str, device: torch.device
) -> Callable[[], Measurement]:
    """A measure of ``model``'s uncached frame of ``example`` (encoding and rendering): one
    untimed frame (kernels compile), then ``repeats`` frames with every stage timed."""

    def measure() -> Measurement:
        frames: list[float] = []
        stages: dict[str, list[float]] = {}
        with torch.inference_mode(), autocast_context(precision, device):
            model.render_image(example, model.encode_sources(example))
            for _ in range(max(repeats, 1)):
                timer = StageTimer(device)
                synchronize(device)
                started = time.perf_counter()
                with model.profiled(timer):
                    render = model.render_image(example, model.encode_sources(example))
                synchronize(device)
                frames.append(time.perf_counter() - started)
                for stage, seconds in timer.seconds.items():
                    stages.setdefault(stage, []).append(seconds)
        outputs = {
            "rgb": render.rgb,
            "depth": render.depth,
            "semantic_logits": render.semantic_logits,
        }
        return Measurement(
            frame_ms=1000 * statistics.median(frames),
            stages_ms={stage: 1000 * statistics.median(s) for stage, s in stages.items()},
            outputs=outputs,
        )

    return measure


def train_step_measure(
    model: GSNeRF, example: Example, rays: int, repeats: int, precision: str, device: torch.device
) -> Callable[[], Measurement]:
    """A measure of ``model``'s training step on ``rays`` pixels of ``example`` (forward, losses,
    backward; the weights stay as they are): one untimed step, then ``repeats`` steps with their
    phases timed (:func:`gsnerf.evaluation.train_throughput.profiled_step`). Every call draws
    the same pixels and random numbers; its outputs are the last step's loss and gradients, all
    of them flattened into one vector."""
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]

    def measure() -> Measurement:
        model.train()
        generator = torch.Generator().manual_seed(0)
        pixels = sample_pixels(example.target, rays, generator).to(device)
        totals: list[torch.Tensor] = []

        def forward() -> torch.Tensor:
            losses = training_losses(
                model, example, pixels, LossCfg(), generator, precision, device
            )
            totals.append(losses["total"].detach())
            return losses["total"]

        def backward(total: torch.Tensor) -> None:
            model.zero_grad(set_to_none=True)
            total.backward()

        backward(forward())
        steps = [
            profiled_step(model, forward, backward, lambda: None, device)
            for _ in range(max(repeats, 1))
        ]
        phases = {
            name: [step["phases_ms"][name] for step in steps] for name in steps[0]["phases_ms"]
        }
        gradients = [p.grad.flatten() for p in parameters if p.grad is not None]
        return Measurement(
            frame_ms=statistics.median(step["profiled_step_ms"] for step in steps),
            stages_ms={name: statistics.median(ms) for name, ms in phases.items()},
            outputs={"loss": totals[-1], "gradients": torch.cat(gradients)},
        )

    return measure


def run_kernel_sweep(cfg: KernelSweepCfg) -> dict:
    """The sweep of ``cfg.knobs`` on the paper frame or training step (module doc); the
    JSON-ready record."""
    if cfg.measure not in MEASURES:
        raise ValueError(f"kernel sweep measure={cfg.measure!r}: expected one of {MEASURES}")
    training = cfg.measure == "train_step"
    defaults = DEFAULT_TRAIN_KNOBS if training else DEFAULT_KNOBS
    knobs = [parse_knob(text) for text in (defaults if cfg.knobs is None else cfg.knobs)]
    cuda = torch.cuda.is_available() and cfg.device != "cpu"
    if not cuda or fused_transformer.triton is None:
        raise RuntimeError(
            f"kernel sweep: device={cfg.device} runs no Triton kernels here; the sweep times them "
            "on a CUDA device with Triton"
        )
    device = resolve_device(cfg.device, "device")
    precision = resolve_precision(cfg.precision, device)
    configure_matmul_precision(device, True)
    torch.manual_seed(cfg.seed)
    model = build_model(load_model_cfg(cfg.model, cfg.samples), cfg.num_classes).to(device)
    example = plane_example(cfg.views, cfg.height, cfg.width, cfg.num_classes, cfg.seed)
    if training:
        measure = train_step_measure(
            model, example.to(device), cfg.train_rays, cfg.repeats, precision, device
        )
    else:
        measure = frame_measure(model.eval(), example.to(device), cfg.repeats, precision, device)
    # The gathering, head and transformer kernels never serve a step with gradients.
    every_kernel = FusedKernels(
        transformer=True, gather=True, heads=True, volumes=True, guide_depth=True
    )
    before = current_fused_kernels()
    try:
        ran = use_fused_kernels(every_kernel, device)
        swept = sweep(knobs, measure)
    finally:
        set_fused_kernels(before)
    settings = {**dataclasses.asdict(cfg), "knobs": [f"{k.name}={list(k.values)}" for k in knobs]}
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "device": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "settings": {**settings, "precision": precision, **ran.as_options()},
        **swept,
    }


def parse_overrides(arguments: list[str]) -> KernelSweepCfg:
    return parse_config(KernelSweepCfg, arguments)


def write_sweep_record(record: dict, cfg: KernelSweepCfg) -> Path:
    """``<output_dir>/<time>_kernel_sweep_<measure>_<model>_<precision>.json``; its path."""
    used = record["settings"]
    name = f"kernel_sweep_{used['measure']}_{used['model']}_{used['precision']}"
    return write_json_record(record, cfg.output_dir, name)
