"""Render every test view, score it, and write ``metrics.json``, ``per_view.csv`` and strips.

Metrics (each named by its definition in ``metrics.json``):
- ``miou`` / ``total_accuracy`` / ``class_average_accuracy``: one confusion matrix over all
  pixels of all views (dataset level, the standard);
- ``paper_*``: the same three per image over the classes present in its GT, averaged over
  images (spec 5.2; comparable with the GSNeRF tables when the labels go through their
  mapping too, ``dataset.label_mapping=gsnerf_paper``, spec 1.4);
- ``psnr`` over valid-depth pixels, ``ssim`` (scikit-image) and ``lpips`` (VGG) on zero-masked
  images (spec 5.2), averaged over images;
- ``depth_*`` of the rendered depth and ``guide_*`` of the guide depth D_T (abs rel, RMSE,
  delta < 1.25, ...), per image then averaged; ``depth_pooled_*`` and ``guide_pooled_*`` the
  same over the valid pixels of all views together (the reference's form);
- ``fps``: rendered frames per second including the source encoding, on the named device,
  over every view but the first when there are several: the first view's time
  (``first_view_s``) includes one-off work, above all compiling the heads with
  ``eval.compile`` (tens of seconds on a CPU).
"""

import csv
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from gsnerf.data.dataset import collate_examples
from gsnerf.engine.device import autocast_context, configure_matmul_precision, synchronize
from gsnerf.engine.logging import RunLogger
from gsnerf.evaluation.image_strip import source_semantics, view_strip
from gsnerf.evaluation.metrics import (
    ConfusionAccumulator,
    DepthMetricsAccumulator,
    LpipsMetric,
    MetricValue,
    PaperProtocolAccumulator,
    psnr,
    ssim,
)
from gsnerf.model.compiled_heads import (
    CompiledPart,
    check_compile_mode,
    check_compile_parts,
    compile_heads,
)
from gsnerf.model.fused_kernels import FusedKernels, use_fused_kernels
from gsnerf.model.gsnerf import GSNeRF
from gsnerf.model.scene_cache import SceneEncodingCache

log = logging.getLogger(__name__)


@dataclass
class EvalCfg:
    # Rays rendered per chunk of a full image (the reference: 4096, spec 5.1). 0 chooses: chunks
    # sized to the free memory on CUDA (after a probe chunk; at most
    # model.renderer.auto_chunk_max_mb each), chunks of model.renderer.cpu_chunk_samples samples
    # on a CPU.
    chunk_rays: int = 0
    # Precision of the test renders: "fp32", "bf16" (autocast) or "auto" (bf16 on CUDA if
    # supported, else fp32).
    precision: str = "fp32"
    # Source encodings kept for later test views with the same source views (0 keeps none).
    scene_cache_size: int = 1
    # Heads' torch.compile in test eval and render.py: none, default, reduce-overhead, max-autotune.
    # Compiles once per image size on the first view (about 20 s on a 2-core CPU for the
    # quickstart, which then evaluates about 1.2 times faster); worth it for many views of one size.
    compile: str = "none"
    # What eval.compile compiles (compile_heads): some of heads, gather (the per-chunk sampling
    # and feature gathering), cost_volumes (their 3-D U-Nets: only where sources are encoded
    # for a view, i.e. with scene_cache_size = 0 or new sources), guide_depth (D_T),
    # feature_net (the 2-D feature net, where sources are encoded) and compositing.
    compile_parts: list[str] = field(default_factory=lambda: ["heads"])
    # CUDA: the heads' attention in one fused Triton kernel (gsnerf/model/attention_kernel.py),
    # eager or compiled; off by default until it is timed within a whole frame.
    fused_attention: bool = False
    # CUDA: whole transformer blocks in two fused Triton kernels each (the attention and the
    # rest, gsnerf/model/fused_blocks.py); its CUDA tests pass, not yet timed in a frame: off.
    fused_blocks: bool = False
    # Each of the heads' transformers in one fused kernel: Triton on CUDA
    # (gsnerf/model/fused_transformer.py; the heads 3.3 times faster in an H100 frame, the same
    # metrics), C++ on a CPU (gsnerf/model/cpu_transformer.py, and the heads' whole view-token
    # stage around the view and semantic transformers: cpu_token_heads.py; benchmarks/README.md).
    fused_transformer: bool = True
    # CPU: the C++ kernels of gsnerf.model.fused_kernels.CPU_KERNEL_MODULES: the cost volumes'
    # plane-sweep warp and group correlation, GroupNorm + LeakyReLU pairs and depth-logit
    # convolutions, the gathering of the radiance head's inputs, volume and patch reads (and the
    # training attention, which inference does not reach). The same renders to float32
    # rounding. No effect on CUDA.
    cpu_kernels: bool = True
    # CUDA: the gathering of the radiance head's inputs (projection, level windows and volume
    # reads, image and colour reads, occlusion, view angles) in one Triton kernel
    # (gsnerf/model/fused_view_gather.py) and of the semantic patches in another
    # (fused_patch_read.py), eager or compiled; the same numbers to float32 rounding. Off by
    # default until they are timed within a whole frame.
    fused_gather: bool = False
    # CUDA: each head's view stage (embeddings, moments, transformer, then blending or the
    # class MLP) in one Triton kernel (gsnerf/model/fused_radiance_views.py,
    # fused_semantic_logits.py), eager or compiled; off until timed within a whole frame.
    fused_heads: bool = False
    # CUDA: the cost volumes' warp and correlation (gsnerf/model/fused_correlation.py) and 3-D
    # convolutions (fused_volume_conv.py) in Triton kernels on channels-last volumes, eager or
    # compiled; the same numbers to rounding. Off until timed within a whole frame.
    fused_volumes: bool = False
    # CUDA: the guide depth D_T (splat, fill passes, bilateral filter) in Triton kernels
    # (gsnerf/model/fused_guide_depth.py); the same depths to float32 rounding. Off until timed.
    fused_guide_depth: bool = False
    # TF32 float32 matrix products on CUDA in test evaluation and render.py (no effect on a CPU).
    allow_tf32: bool = True
    # Write one image strip per view (GT | render | semantics | GT semantics | error | depth).
    save_images: bool = True
    # Compute LPIPS (VGG, spec 5.2); reported unavailable when its weights are not present.
    lpips: bool = True
    # Evaluate after training on all held-out views (the quickstart's final table).
    after_training: bool = True

    def __post_init__(self) -> None:
        check_compile_mode(self.compile, "eval.compile")
        parts = check_compile_parts(self.compile_parts, "eval.compile_parts")
        if self.compile == "none" and set(parts) != {CompiledPart.HEADS}:
            raise ValueError(
                f"eval.compile_parts={self.compile_parts} needs eval.compile other than none "
                "(e.g. default)"
            )


def apply_inference_options(model: GSNeRF, cfg: EvalCfg, device: torch.device) -> None:
    """eval.allow_tf32, the fused kernels and eval.compile (its parts) for all later renders.

    Shared by test evaluation and render.py, so both render the same way.
    """
    configure_matmul_precision(device, cfg.allow_tf32)
    use_fused_kernels(FusedKernels.from_options(cfg), device)
    compile_heads(model, cfg.compile, cfg.compile_parts)


class SceneScores:
    """Accumulators of one scene (or of the whole test set)."""

    def __init__(self, num_classes: int, ignore_index: int) -> None:
        self.confusion = ConfusionAccumulator(num_classes, ignore_index)
        self.paper = PaperProtocolAccumulator(num_classes, ignore_index)
        self.depth = DepthMetricsAccumulator()
        self.guide = DepthMetricsAccumulator()
        self.image_scores: dict[str, list[float]] = {"psnr": [], "ssim": [], "lpips": []}
        self.lpips_reason: str | None = None
        self.has_labels = False

    def summary(self) -> dict[str, float | None]:
        values: dict[str, MetricValue] = {}
        if self.has_labels:
            values.update(self.confusion.summary())
            values.update({f"paper_{k}": v for k, v in self.paper.summary().items()})
        for key, scores in self.image_scores.items():
            if scores:
                values[key] = MetricValue.of(float(np.mean(scores)))
            elif key == "lpips" and self.lpips_reason:
                values[key] = MetricValue.unavailable(self.lpips_reason)
        values.update({f"depth_{k}": v for k, v in self.depth.per_image_mean().items()})
        values.update({f"guide_{k}": v for k, v in self.guide.per_image_mean().items()})
        # The reference's depth figures pool every valid pixel of all views (spec 5.2).
        values.update({f"depth_pooled_{k}": v for k, v in self.depth.pooled().items()})
        values.update({f"guide_pooled_{k}": v for k, v in self.guide.pooled().items()})
        return {key: value.value for key, value in values.items()}

    def unavailable(self) -> dict[str, str]:
        reasons = {}
        if not self.image_scores["lpips"] and self.lpips_reason:
            reasons["lpips"] = self.lpips_reason
        if not self.has_labels:
            reasons["miou"] = "the evaluated scenes have no semantic labels"
        return reasons


def rate_after_first(seconds: list[float]) -> float | None:
    """Frames per second over every frame but the first, or over the only one; None if untimed.

    The first frame carries one-off work (compiling the heads with ``eval.compile``).
    Example: (20.0, 0.5, 0.5) -> 2.0.
    """
    timed = seconds[1:] if len(seconds) > 1 else seconds
    return len(timed) / sum(timed) if sum(timed) > 0 else None


def evaluate(
    model: torch.nn.Module,
    dataset: Dataset,
    cfg: EvalCfg,
    class_names: list[str],
    ignore_index: int,
    out_dir: Path,
    device: torch.device,
    logger: RunLogger | None = None,
    step: int = 0,
) -> dict:
    """Score ``model`` on every item of ``dataset``; returns the overall metrics dict."""
    out_dir.mkdir(parents=True, exist_ok=True)
    num_classes = len(class_names)
    overall = SceneScores(num_classes, ignore_index)
    per_scene: dict[str, SceneScores] = {}
    lpips_metric = LpipsMetric() if cfg.lpips else None
    lpips_reason = None if lpips_metric is None else lpips_metric.unavailable_reason()
    if not cfg.lpips:
        lpips_reason = "disabled by eval.lpips=false"
    rows = []
    view_seconds: list[float] = []
    model.eval()
    scene_cache = SceneEncodingCache(cfg.scene_cache_size)
    loader = DataLoader(dataset, batch_size=1, shuffle=False, collate_fn=collate_examples)
    for example in loader:
        example = example.to(device)
        synchronize(device)
        started = time.perf_counter()
        with torch.inference_mode(), autocast_context(cfg.precision, device):
            geometry = scene_cache.encode(model, example)
            image = model.render_image(example, geometry, cfg.chunk_rays)
        synchronize(device)
        view_seconds.append(time.perf_counter() - started)

        scene = example.scenes[0]
        frame_id = int(example.target.frame_ids[0, 0])
        scores = per_scene.setdefault(scene, SceneScores(num_classes, ignore_index))
        row = _score_view(example, image, scores, overall, lpips_metric, lpips_reason)
        rows.append({"scene": scene, "frame": frame_id, **row})
        if cfg.save_images or logger is not None:
            strip = view_strip(example, image, class_names, ignore_index)
            if cfg.save_images:
                stem = out_dir / "images" / f"{scene.replace('/', '_')}_{frame_id:06d}"
                stem.parent.mkdir(exist_ok=True)
                cv2.imwrite(f"{stem}.png", strip[..., ::-1])
                predicted, labelled = source_semantics(example, geometry, ignore_index)
                cv2.imwrite(f"{stem}_semantic.png", predicted[..., ::-1])
                if labelled is not None:
                    cv2.imwrite(f"{stem}_semantic_gt.png", labelled[..., ::-1])
            if logger is not None and len(rows) <= 4:
                logger.image(f"val/view_{len(rows) - 1}", strip, step)

    frames = len(rows)
    log.info("source encodings: %d computed, %d reused", scene_cache.misses, scene_cache.hits)
    results = {
        "overall": overall.summary(),
        "per_scene": {name: scores.summary() for name, scores in per_scene.items()},
        "unavailable": overall.unavailable(),
        "class_names": class_names,
        "views": frames,
        "fps": rate_after_first(view_seconds),
        "first_view_s": view_seconds[0] if view_seconds else None,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "definitions": {
            "miou": "dataset-level confusion matrix over all views, mean IoU of classes seen",
            "paper_miou": "per image over classes present in its GT, averaged (spec 5.2); "
            "the paper's tables also map labels with dataset.label_mapping=gsnerf_paper",
            "psnr": "dB over pixels with GT depth > 0, averaged over views",
            "ssim": "scikit-image, invalid-depth pixels zeroed in both images (spec 5.2)",
            "lpips": "lpips VGG v0.1 on zero-masked images in [-1, 1] (spec 5.2)",
            "depth_*": "rendered depth (z) vs GT depth, per view then averaged",
            "guide_*": "guide depth D_T vs GT depth, per view then averaged",
            "depth_pooled_*, guide_pooled_*": "the same over all valid pixels of all views "
            "together, as the reference sums and normalises them (spec 5.2)",
            "fps": "views per second including source encoding (unless reused) and D_T, "
            "every view but the first when there are several",
            "first_view_s": "seconds of the first view, with one-off work such as compiling",
        },
    }
    results["overall"]["fps"] = results["fps"]
    (out_dir / "metrics.json").write_text(json.dumps(results, indent=2))
    _write_csv(out_dir / "per_view.csv", rows)
    if logger is not None:
        logger.scalars(results["overall"], step, "val")
    return results["overall"]


def _score_view(example, image, scores, overall, lpips_metric, lpips_reason) -> dict:
    """Add one view to its scene's and the overall accumulators; returns its CSV row."""
    target = example.target
    gt_rgb = target.images[0, 0].float()
    gt_depth = None if target.depths is None else target.depths[0, 0].float()
    mask = None if gt_depth is None else gt_depth > 0
    rgb = image.rgb[0].float().clamp(0, 1)
    row: dict[str, float | None] = {
        "psnr": psnr(rgb, gt_rgb, mask),
        "ssim": ssim(rgb, gt_rgb, mask),
        "lpips": None,
    }
    if lpips_metric is not None and lpips_reason is None:
        row["lpips"] = lpips_metric(rgb, gt_rgb, mask).value
    for accumulator in (scores, overall):
        for key in ("psnr", "ssim", "lpips"):
            if row[key] is not None:
                accumulator.image_scores[key].append(row[key])
        accumulator.lpips_reason = lpips_reason
    if target.labels is not None:
        prediction = image.semantic_logits[0].argmax(0)
        gt_labels = target.labels[0, 0]
        for accumulator in (scores, overall):
            accumulator.has_labels = True
            accumulator.confusion.add(prediction, gt_labels)
            paper = accumulator.paper.add(prediction, gt_labels)
        row["paper_miou"] = paper.miou
        row["pixel_accuracy"] = paper.total_accuracy
    if gt_depth is not None:
        for accumulator in (scores, overall):
            accumulator.depth.add(image.depth[0].float(), gt_depth)
            accumulator.guide.add(image.guide_depth[0].float(), gt_depth, image.guide_valid[0])
        valid = mask & (image.guide_valid[0])
        if bool(valid.any()):
            rel = (image.guide_depth[0][valid] - gt_depth[valid]).abs() / gt_depth[valid]
            row["guide_abs_rel"] = float(rel.mean())
    return row


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys: list[str] = []
    for row in rows:
        keys.extend(key for key in row if key not in keys)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


TABLE_COLUMNS = (
    ("mIoU", "miou"),
    ("paper mIoU", "paper_miou"),
    ("Total Acc", "total_accuracy"),
    ("Class Acc", "class_average_accuracy"),
    ("PSNR", "psnr"),
    ("SSIM", "ssim"),
    ("LPIPS", "lpips"),
    ("D_T absrel", "guide_abs_rel"),
    ("depth absrel", "depth_abs_rel"),
    ("FPS", "fps"),
)


def format_table(metrics: dict, title: str) -> str:
    """A Markdown table shaped like the paper's (mIoU, accuracies, PSNR, SSIM, LPIPS) + depth."""
    header = "| " + " | ".join(["setting"] + [name for name, _ in TABLE_COLUMNS]) + " |"
    rule = "|" + "---|" * (len(TABLE_COLUMNS) + 1)
    cells = []
    for _, key in TABLE_COLUMNS:
        value = metrics.get(key)
        if value is None:
            cells.append("n/a")
        elif key in ("miou", "paper_miou", "total_accuracy", "class_average_accuracy"):
            cells.append(f"{100 * value:.2f}")
        elif key in ("psnr", "fps"):
            cells.append(f"{value:.2f}")
        else:
            cells.append(f"{value:.3f}")
    return "\n".join([header, rule, "| " + " | ".join([title] + cells) + " |"])
