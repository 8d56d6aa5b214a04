"""Launch constants of the Triton kernels, timed on the paper frame: which tile sizes and warp
counts are fastest on this GPU (spec 9).

Each fused kernel module of :mod:`gsnerf.model` reads its tile size (``BLOCK`` or ``ROWS``) and
warp count (``NUM_WARPS``) from module constants at every launch. They were chosen by register
counts (``python scripts/kernel_report.py``), not by time, since no GPU was at hand: a tile of
64 token rows keeps the tensor cores busy but may leave an SM only three programs' worth of
registers, and no CPU can say which matters more. The sweep renders the paper model's
uncached frame with every fused kernel on, once with the constants as they are and once per
value of each *knob* (``fused_transformer.ROWS=16,32,64``): one knob varies at a time, the
others keep their values. It reports per value the frame and its stages (the stage a knob's
kernel serves is the one to read) as ratios to the constants as they are, and how far the
frame's colour, depth and labels moved: a tile size changes the order of float32 sums, not
the result, so anything beyond rounding is a bug of that tile size. A value the GPU cannot
compile (too many registers or too much shared memory) is reported with its error.

The frames run eagerly: compiled graphs keep the constants they were traced with.

    python scripts/kernel_sweep.py                                  # the default knobs
    python scripts/kernel_sweep.py "knobs=[fused_volume_conv.BLOCK=64,128,256]"
"""

import contextlib
import dataclasses
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import torch

from gsnerf.engine.device import (
    autocast_context,
    configure_matmul_precision,
    resolve_device,
    resolve_precision,
    synchronize,
)
from gsnerf.evaluation.benchmark_records import load_model_cfg, parse_config, write_json_record
from gsnerf.evaluation.benchmark_scene import plane_example
from gsnerf.model import (
    build_model,
    fused_correlation,
    fused_guide_depth,
    fused_patch_read,
    fused_radiance_views,
    fused_semantic_logits,
    fused_transformer,
    fused_view_gather,
    fused_volume_conv,
)
from gsnerf.model.fused_kernels import (
    FusedKernels,
    current_fused_kernels,
    set_fused_kernels,
    use_fused_kernels,
)
from gsnerf.model.gsnerf import GSNeRF
from gsnerf.model.stage_timer import StageTimer
from gsnerf.types import Example

# The modules whose constants a knob may name, and the frame stage their kernels serve.
SWEPT_MODULES: dict[str, tuple[ModuleType, str]] = {
    "fused_transformer": (fused_transformer, "heads"),
    "fused_radiance_views": (fused_radiance_views, "heads"),
    "fused_semantic_logits": (fused_semantic_logits, "heads"),
    "fused_view_gather": (fused_view_gather, "sampling_gather"),
    "fused_patch_read": (fused_patch_read, "sampling_gather"),
    "fused_correlation": (fused_correlation, "cost_volumes"),
    "fused_volume_conv": (fused_volume_conv, "cost_volumes"),
    "fused_guide_depth": (fused_guide_depth, "guide_depth"),
}

# The constants a knob may set: tile sizes and warp counts, all powers of two (tl.arange and
# the launch's num_warps need them).
SWEPT_CONSTANTS = ("BLOCK", "ROWS", "NUM_WARPS")

DEFAULT_KNOBS = [
    # The one-kernel transformer, on by default on CUDA: 161 registers per thread at 64 rows.
    "fused_transformer.ROWS=16,32,64",
    "fused_transformer.NUM_WARPS=2,4,8",
    "fused_radiance_views.NUM_WARPS=4,8",
    "fused_semantic_logits.NUM_WARPS=4,8",
    "fused_view_gather.BLOCK=64,128,256",
    "fused_patch_read.BLOCK=32,64,128",
    "fused_correlation.BLOCK=64,128,256",
    "fused_volume_conv.BLOCK=64,128,256",
    "fused_volume_conv.NUM_WARPS=4,8",
    "fused_guide_depth.BLOCK=128,256,512",
]


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
    # Timed frames per value (median), after one untimed frame that compiles the kernels.
    repeats: int = 5
    # "module.CONSTANT=v1,v2,...": the values of one launch constant of a module of
    # SWEPT_MODULES (BLOCK, ROWS or NUM_WARPS, powers of two), tried one knob at a time.
    knobs: list[str] = field(default_factory=lambda: list(DEFAULT_KNOBS))
    num_classes: int = 20
    seed: int = 0
    # Folder of the JSON record.
    output_dir: str = "benchmarks"


@dataclass(frozen=True)
class Knob:
    """Values of one launch constant: ``module.CONSTANT=v1,v2,...``."""

    module_name: str
    constant: str
    values: tuple[int, ...]

    @property
    def module(self) -> ModuleType:
        return SWEPT_MODULES[self.module_name][0]

    @property
    def stage(self) -> str:
        return SWEPT_MODULES[self.module_name][1]

    @property
    def name(self) -> str:
        return f"{self.module_name}.{self.constant}"


def parse_knob(text: str) -> Knob:
    """``"fused_transformer.ROWS=16,32"`` as a :class:`Knob`; a ValueError naming the knob."""
    target, equals, listed = text.partition("=")
    module_name, dot, constant = target.strip().partition(".")
    problem = None
    if not equals or not dot:
        problem = "expected module.CONSTANT=v1,v2,..."
    elif module_name not in SWEPT_MODULES:
        problem = f"unknown module {module_name!r}, expected one of {sorted(SWEPT_MODULES)}"
    elif constant not in SWEPT_CONSTANTS or not hasattr(SWEPT_MODULES[module_name][0], constant):
        problem = f"{module_name} has no launch constant {constant!r} to sweep"
    if problem is None:
        try:
            values = tuple(int(value) for value in listed.split(","))
        except ValueError:
            values = ()
        if not values or any(value < 1 or value & (value - 1) for value in values):
            problem = f"values must be powers of two, got {listed!r}"
    if problem is not None:
        raise ValueError(f"kernel sweep knob {text!r}: {problem}")
    return Knob(module_name, constant, values)


@contextlib.contextmanager
def knob_set(knob: Knob, value: int) -> Iterator[None]:
    """``knob``'s constant set to ``value`` inside the block, restored after."""
    saved = getattr(knob.module, knob.constant)
    setattr(knob.module, knob.constant, value)
    try:
        yield
    finally:
        setattr(knob.module, knob.constant, saved)


@dataclass
class Measurement:
    """A frame's median time, its stages' median times and its outputs."""

    frame_ms: float
    stages_ms: dict[str, float]
    outputs: dict[str, torch.Tensor]


def output_change(outputs: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> dict:
    """Largest absolute difference per output, and the share of unchanged labels (argmax over
    ``semantic_logits``' class axis 1)."""
    change = {
        f"max_abs_{name}": (value.float() - reference[name].float()).abs().max().item()
        for name, value in outputs.items()
    }
    if "semantic_logits" in outputs:
        same = outputs["semantic_logits"].argmax(1) == reference["semantic_logits"].argmax(1)
        change["labels_unchanged"] = same.float().mean().item()
    return change


def sweep(knobs: list[Knob], measure: Callable[[], Measurement]) -> dict:
    """``measure`` with the constants as they are, then with each value of each knob.

    Returns ``{"reference": {...}, "rows": [...]}``, a row per knob value: its times, their
    ratios to the reference's (the frame's and the knob's stage's) and the outputs' change
    (:func:`output_change`). A value equal to the constant's own reuses the reference. A value
    whose frame raises (a kernel that does not compile for it) gets the error instead.
    """
    reference = measure()
    rows = []
    for knob in knobs:
        current = getattr(knob.module, knob.constant)
        for value in knob.values:
            row: dict = {"knob": knob.name, "value": value, "current": value == current}
            try:
                if value == current:
                    measured = reference
                else:
                    with knob_set(knob, value):
                        measured = measure()
            except Exception as error:  # noqa: BLE001 - a failing value is a result here
                first_line = (str(error).strip().splitlines() or ["no message"])[0]
                rows.append({**row, "error": f"{type(error).__name__}: {first_line}"})
                continue
            stage_ms = measured.stages_ms.get(knob.stage, float("nan"))
            reference_stage = reference.stages_ms.get(knob.stage, float("nan"))
            rows.append(
                {
                    **row,
                    "frame_ms": measured.frame_ms,
                    "frame_ratio": measured.frame_ms / reference.frame_ms,
                    "stage": knob.stage,
                    "stage_ms": stage_ms,
                    "stage_ratio": stage_ms / reference_stage if reference_stage else float("nan"),
                    **output_change(measured.outputs, reference.outputs),
                }
            )
    summary = {"frame_ms": reference.frame_ms, "stages_ms": reference.stages_ms}
    return {"reference": summary, "rows": rows}


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


def run_kernel_sweep(cfg: KernelSweepCfg) -> dict:
    """The sweep of ``cfg.knobs`` on the paper frame (module doc); the JSON-ready record."""
    knobs = [parse_knob(text) for text in cfg.knobs]
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
    model = build_model(load_model_cfg(cfg.model, cfg.samples), cfg.num_classes).to(device).eval()
    example = plane_example(cfg.views, cfg.height, cfg.width, cfg.num_classes, cfg.seed)
    measure = frame_measure(model, example.to(device), cfg.repeats, precision, device)
    every_kernel = FusedKernels(
        transformer=True, gather=True, heads=True, volumes=True, guide_depth=True
    )
    before = current_fused_kernels()
    try:
        ran = use_fused_kernels(every_kernel, device)
        swept = sweep(knobs, measure)
    finally:
        set_fused_kernels(before)
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "device": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "settings": {**dataclasses.asdict(cfg), "precision": precision, **ran.as_options()},
        **swept,
    }


def parse_overrides(arguments: list[str]) -> KernelSweepCfg:
    return parse_config(KernelSweepCfg, arguments)


def write_sweep_record(record: dict, cfg: KernelSweepCfg) -> Path:
    """``<output_dir>/<time>_kernel_sweep_<model>_<precision>.json``; its path."""
    used = record["settings"]
    return write_json_record(
        record, cfg.output_dir, f"kernel_sweep_{used['model']}_{used['precision']}"
    )


def markdown_table(record: dict) -> str:
    """The sweep as a Markdown table: a row per knob value, the current values marked."""
    reference = record["reference"]
    lines = [
        f"Reference frame (the constants as they are): {reference['frame_ms']:.2f} ms; stages: "
        + ", ".join(f"{stage} {ms:.2f} ms" for stage, ms in reference["stages_ms"].items()),
        "",
        "| knob | value | frame ms (ratio) | its stage | stage ms (ratio) | max abs change "
        "rgb / depth / logits | labels unchanged |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in record["rows"]:
        value = f"{row['value']}{' (current)' if row['current'] else ''}"
        if "error" in row:
            lines.append(f"| {row['knob']} | {value} | {row['error']} | | | | |")
            continue
        changes = " / ".join(
            f"{row[f'max_abs_{name}']:.2g}" for name in ("rgb", "depth", "semantic_logits")
        )
        lines.append(
            f"| {row['knob']} | {value} | {row['frame_ms']:.2f} ({row['frame_ratio']:.2f}x) | "
            f"{row['stage']} | {row['stage_ms']:.2f} ({row['stage_ratio']:.2f}x) | {changes} | "
            f"{100 * row['labels_unchanged']:.2f} % |"
        )
    return "\n".join(lines)
