"""Launch constants of the Triton kernels, timed on the paper frame: which tile sizes and warp
counts are fastest on this GPU (spec 9).

Each fused kernel module of :mod:`gsnerf.model` reads its tile size (``BLOCK`` or ``ROWS``) and
warp count (``NUM_WARPS``) from module constants at every launch. Their values come from
register counts (``python scripts/kernel_report.py``), not from timings: a tile of 64 token
rows keeps the tensor cores busy but may leave an SM only three programs' worth of registers,
and only the GPU can say which matters more. The sweep renders the paper model's
uncached frame with every fused kernel on, once with the constants as they are and once per
value of each *knob* (``fused_transformer.ROWS=16,32,64``): one knob varies at a time, the
others keep their values. It reports per value the frame and its stages (the stage a knob's
kernel serves is the one to read) as ratios to the constants as they are, and how far the
frame's colour, depth and labels moved: a tile size changes the order of float32 sums, not
the result, so anything beyond rounding is a bug of that tile size. A value the GPU cannot
compile (too many registers or too much shared memory) is reported with its error.

``measure=train_step`` times the paper training config's step instead (1024 rays, forward,
losses and backward with the cost-volume and D_T kernels of ``train.fused_volumes`` and
``train.fused_guide_depth``; no optimizer step, so every value starts from the same weights),
per phase, and compares the loss and the gradients: its default knobs are those of the
convolutions' backward kernels and of the kernels the step's forward shares with inference.

Frames and steps run eagerly: compiled graphs keep the constants they were traced with.

    python scripts/kernel_sweep.py                                  # the default knobs
    python scripts/kernel_sweep.py "knobs=[fused_volume_conv.BLOCK=64,128,256]"
    python scripts/kernel_sweep.py measure=train_step

This module holds the knobs, the loop over their values and the report; the passes it times
on the paper model and the record are :mod:`gsnerf.evaluation.kernel_sweep_run`.
"""

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType

import torch

from gsnerf.model import fused_guide_depth, fused_transformer, fused_volume_conv_grad
from gsnerf.model.fused_kernels import (
    GATHER_KERNEL_MODULES,
    HEAD_KERNEL_MODULES,
    VOLUME_KERNEL_MODULES,
)

# The modules whose constants a knob may name, and the frame stage their kernels serve.
SWEPT_MODULES: dict[str, tuple[ModuleType, str]] = {
    module.__name__.rsplit(".", 1)[-1]: (module, stage)
    for modules, stage in (
        ((fused_transformer, *HEAD_KERNEL_MODULES), "heads"),
        (GATHER_KERNEL_MODULES, "sampling_gather"),
        (VOLUME_KERNEL_MODULES, "cost_volumes"),
        ((fused_volume_conv_grad,), "backward"),
        ((fused_guide_depth,), "guide_depth"),
    )
    for module in modules
}

# The constants a knob may set: tile sizes, voxels per program of the weight gradient and
# warp counts, all powers of two (tl.arange and the launch's num_warps need them).
SWEPT_CONSTANTS = ("BLOCK", "ROWS", "VOXELS_PER_PROGRAM", "NUM_WARPS", "WIDE_NUM_WARPS")

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

# The training step's knobs: the convolutions' backward kernels (input gradients run the
# forward kernel's transposed form), the correlation's (forward and backward) and D_T's.
DEFAULT_TRAIN_KNOBS = [
    "fused_volume_conv_grad.BLOCK=64,128,256",
    "fused_volume_conv_grad.VOXELS_PER_PROGRAM=1024,4096,16384",
    "fused_volume_conv_grad.NUM_WARPS=2,4,8",
    "fused_volume_conv_grad.WIDE_NUM_WARPS=4,8",
    "fused_volume_conv.BLOCK=64,128,256",
    "fused_correlation.BLOCK=64,128,256",
    "fused_correlation.WIDE_NUM_WARPS=4,8",
    "fused_guide_depth.BLOCK=128,256,512",
]


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
    """A measured pass's median time, its stages' (or training phases') median times and its
    outputs. ``frame_ms`` is the whole pass: a frame, or a training step (``measure=train_step``;
    the record keeps the one key for both)."""

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


def markdown_table(record: dict) -> str:
    """The sweep as a Markdown table: a row per knob value, the current values marked; the
    change of each output (colour, depth and logits of a frame; loss and gradients of a step)."""
    reference = record["reference"]
    lines = [
        f"Reference (the constants as they are): {reference['frame_ms']:.2f} ms; stages: "
        + ", ".join(f"{stage} {ms:.2f} ms" for stage, ms in reference["stages_ms"].items()),
        "",
        "| knob | value | ms (ratio) | its stage | stage ms (ratio) | max abs change | "
        "labels unchanged |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in record["rows"]:
        value = f"{row['value']}{' (current)' if row['current'] else ''}"
        if "error" in row:
            lines.append(f"| {row['knob']} | {value} | {row['error']} | | | | |")
            continue
        changes = ", ".join(
            f"{key.removeprefix('max_abs_')} {change:.2g}"
            for key, change in row.items()
            if key.startswith("max_abs_")
        )
        labels = row.get("labels_unchanged")
        labels_text = "" if labels is None else f"{100 * labels:.2f} %"
        lines.append(
            f"| {row['knob']} | {value} | {row['frame_ms']:.2f} ({row['frame_ratio']:.2f}x) | "
            f"{row['stage']} | {row['stage_ms']:.2f} ({row['stage_ratio']:.2f}x) | {changes} | "
            f"{labels_text} |"
        )
    return "\n".join(lines)
