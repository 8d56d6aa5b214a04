"""Rendering speed per sample count N, per stage, cached and uncached (spec 9).

For each N the model renders one full novel view of :func:`plane_example` (random weights):

- *uncached*: ``encode_sources`` + ``render_image``, what one new target with new sources costs;
- *cached*: ``render_image`` from a precomputed :class:`SourceGeometry`, the cost of every
  further target of the same sources (:class:`gsnerf.model.scene_cache.SceneEncodingCache`);
- *stages*: one more uncached pass under :meth:`GSNeRF.profiled`; ``residual`` is that pass's
  time minus the sum of its stages (glue code outside every stage);
- *top operators*: one more uncached pass under ``torch.profiler``, the ``profile_ops``
  operators (on CUDA also kernels) with the most self time (:mod:`.op_profile`);
- *FLOPs* of matrix products, convolutions and attention (``FlopCounterMode``; grid sampling and
  element-wise work are not counted) of an eager pass, in all and per stage, and FLOP/s =
  FLOPs / median (per stage: / the stage's time), next to the rate of one large matrix product
  on the same device (:mod:`.matmul_rate`);
- *training*: steps/s and rays/s of forward + losses + backward + Adam on ``train_rays`` rays
  of a target view with ``train_views`` source views (by default the paper's training config
  on CUDA, the quickstart's step on a CPU), in the passes' precision (AMP on CUDA).

Unset keys take ``DEVICE_DEFAULTS`` (CUDA: the paper model at 320 x 240; CPU: tiny, 80 x 60).

With ``compile`` (by default) the rendering passes run the ``compile_parts`` compiled
(:mod:`gsnerf.model.compiled_heads`) during the warm-up, so no timed pass includes compile time;
a failed compile is an error that names ``compile=none``. Training steps run the plain model,
or with ``train_compile`` the ``train_compile_parts`` compiled (in two untimed steps).

Times are medians over ``repeats`` passes after ``warmup`` passes; uncached and cached passes
alternate, so that a drift of a shared machine's speed does not bias their ratio, and stop
repeating once they took ``budget_s`` seconds (at least one pair), so N = 128 on a CPU runs once.
Peak memory: ``torch.cuda.max_memory_allocated`` over the first uncached (encoding included,
read before memory-sized chunks reset the statistics) and the first cached pass on CUDA; on
the CPU the process's peak resident set size so far (``ru_maxrss``, never decreasing).
"""

import contextlib
import copy
import dataclasses
import logging
import platform
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from gsnerf.engine.device import (
    autocast_context,
    configure_matmul_precision,
    resolve_device,
    resolve_precision,
)
from gsnerf.evaluation.benchmark_records import (
    load_model_cfg,
    parse_config,
    ratios,
    write_json_record,
)
from gsnerf.evaluation.benchmark_scene import plane_example
from gsnerf.evaluation.matmul_rate import dense_matmul_rate
from gsnerf.evaluation.op_profile import top_operators
from gsnerf.evaluation.pass_timing import alternate_passes, peak_memory_mb, timed
from gsnerf.evaluation.train_throughput import measure_training
from gsnerf.model.compiled_heads import (
    CUDA_TIMED_PARTS,
    CompileMode,
    check_compile_mode,
    check_compile_parts,
    compile_heads,
)
from gsnerf.model.fused_kernels import FusedKernels, kernels_disabled, use_fused_kernels
from gsnerf.model.gsnerf import GSNeRF, build_model
from gsnerf.model.stage_timer import StageFlops, StageTimer
from gsnerf.rendering.chunked import rays_for_samples
from gsnerf.types import Example

log = logging.getLogger(__name__)


@dataclass
class BenchmarkCfg:
    # Model configuration, a file of configs/model: "gsnerf" (the paper's) or "tiny" (CPU-sized).
    # Unset: the paper's on CUDA, tiny on a CPU (DEVICE_DEFAULTS).
    model: str | None = None
    # Image width and height, pixels (spec 1.3: 320 x 240; multiples of 4 for the cascade).
    # Unset: 320 x 240 on CUDA, 80 x 60 on a CPU.
    width: int | None = None
    height: int | None = None
    # Source views K (spec 1.6: 8).
    views: int = 8
    # Guided samples per ray N to compare, without uniform samples (spec 9: 4 and 128).
    samples: list[int] = field(default_factory=lambda: [4, 128])
    # Device: "auto" (CUDA when present), "cpu" or "cuda".
    device: str = "auto"
    # CPU threads of torch; 0 keeps torch's default (one per core). One keeps CPU times steady
    # on shared cores (loaded 2-core machine: two threads rendered N = 4 3.7 times slower).
    threads: int = 1
    # Numeric precision of the passes: "fp32", "bf16" (autocast) or "auto" (bf16 on CUDA with
    # bf16 support, as the paper's training config's AMP; fp32 otherwise).
    precision: str = "auto"
    # torch.compile in the rendering passes (compiled during warm-up, not timed): "none",
    # "default", "reduce-overhead" or "max-autotune". Unset: "default", fastest on CPU and CUDA.
    compile: str | None = None
    # What compile compiles: some of heads, gather (sampling and feature gathering), cost_volumes
    # and feature_net (uncached passes only), guide_depth (D_T) and compositing;
    # compile_heads. Unset: the first three on CUDA (H100 frame 123 / 76 ms against 150 / 90 ms
    # heads only), heads, gather and guide_depth on a CPU (D_T 3.9 against 6.7 ms).
    compile_parts: list[str] | None = None
    # Fused inference kernels (gsnerf/model/fused_kernels.py): on CUDA the attention, whole blocks
    # or (H100 heads 18.7 against 61.6 ms a frame) each transformer in Triton; on a CPU each
    # transformer with the heads' view-token stage around it, and (cpu_kernels) the C++ kernels
    # of gsnerf.model.fused_kernels.CPU_KERNEL_MODULES: the cost volumes' correlation, norms and
    # depth logits, the gathering's reads, and in the timed training steps the attention.
    fused_attention: bool = False
    fused_blocks: bool = False
    fused_transformer: bool = True
    cpu_kernels: bool = True
    # CUDA, off until timed: Triton kernels (gsnerf.model.fused_kernels) for the gathering
    # (GATHER_KERNEL_MODULES), each head's view stage (HEAD_KERNEL_MODULES), the cost volumes'
    # correlation and convolutions, also in timed training (VOLUME_KERNEL_MODULES), and D_T.
    fused_gather: bool = False
    fused_heads: bool = False
    fused_volumes: bool = False
    fused_guide_depth: bool = False
    # TF32 float32 matrix products on CUDA for every pass (no effect on a CPU).
    allow_tf32: bool = True
    # cuDNN autotuning of the convolutions on CUDA (torch.backends.cudnn.benchmark; the warm-up
    # absorbs the search). Off: no faster on an H100 (188 / 113 against 184 / 115 ms).
    cudnn_benchmark: bool = False
    # Timed passes per measurement (median reported); on a shared CPU single passes vary 10-20 %.
    repeats: int = 5
    # Untimed passes before timing, at least one; with compile at least two (the first compiles
    # the heads). The FLOPs are counted in a pass of their own (measure_rendering).
    warmup: int = 1
    # Operators listed from one more uncached pass under torch.profiler, most self time first
    # (gsnerf/evaluation/op_profile.py); 0 skips that pass.
    profile_ops: int = 12
    # Seconds after which a measurement stops repeating (it always runs once).
    budget_s: float = 60.0
    # Samples per chunk of a full-image render: chunk_samples // N rays per chunk, the same
    # memory for every N. A CPU is fastest with small chunks (N = 4: 1.2 times faster than the
    # spec's 4096 rays). 0 uses chunk_rays instead. Unset: 0 on CUDA, 4096 on a CPU.
    chunk_samples: int | None = None
    # Rays per chunk when chunk_samples is 0 (spec 5.1: 4096). 0 sizes the chunks to the free
    # CUDA memory (on a CPU: chunks of model.renderer.cpu_chunk_samples samples).
    chunk_rays: int = 0
    # Overrides of the model config, e.g. [geo_reasoner.cost_volume.channels_last=true].
    model_overrides: list[str] = field(default_factory=list)
    # Semantic classes of the random model (ScanNet: 20).
    num_classes: int = 20
    # Rays per training step of the throughput measurement. Unset: the paper's training config's
    # 1024 on CUDA (spec 4), the quickstart's 512 on a CPU (configs/train.yaml).
    train_rays: int | None = None
    # Source views of the training steps. Unset: the paper's 8 on CUDA (spec 1.6), the
    # quickstart's 4 on a CPU (configs/dataset/synthetic.yaml). Rendering passes use `views`.
    train_views: int | None = None
    # Timed training steps (after one warm-up step); 0 skips the training measurement.
    train_steps: int = 2
    # torch.compile of the training steps and what it compiles (train.compile, .compile_parts).
    train_compile: str = "none"
    train_compile_parts: list[str] = field(default_factory=lambda: list(CUDA_TIMED_PARTS))
    # Seed of the weights and of the scene's textures.
    seed: int = 0
    # Folder of the JSON records.
    output_dir: str = "benchmarks"

    def __post_init__(self) -> None:
        if self.compile is not None:
            check_compile_mode(self.compile, "benchmark compile")
        if self.compile_parts is not None:
            check_compile_parts(self.compile_parts, "benchmark compile_parts")
        check_compile_mode(self.train_compile, "benchmark train_compile")
        check_compile_parts(self.train_compile_parts, "benchmark train_compile_parts")


# What the unset keys of BenchmarkCfg become on each device type: on CUDA the paper's setting
# (its model at 320 x 240, chunks sized to the free memory, its training config), on a CPU one
# that runs in minutes on two cores (spec 9).
DEVICE_DEFAULTS = {
    "cuda": {
        "model": "gsnerf",
        "width": 320,
        "height": 240,
        "chunk_samples": 0,
        "compile": "default",
        "compile_parts": list(CUDA_TIMED_PARTS),
        "train_rays": 1024,
        "train_views": 8,
    },
    "cpu": {
        "model": "tiny",
        "width": 80,
        "height": 60,
        "chunk_samples": 4096,
        "compile": "default",
        "compile_parts": ["heads", "gather", "guide_depth"],
        "train_rays": 512,
        "train_views": 4,
    },
}


def with_device_defaults(cfg: BenchmarkCfg, device: torch.device) -> BenchmarkCfg:
    """``cfg`` with its unset keys filled from DEVICE_DEFAULTS and its precision resolved."""
    defaults = DEVICE_DEFAULTS["cuda" if device.type == "cuda" else "cpu"]
    unset = {key: value for key, value in defaults.items() if getattr(cfg, key) is None}
    if (cfg.compile or defaults["compile"]) == CompileMode.NONE.value and cfg.compile_parts is None:
        # Nothing is compiled: the device's parts would only be an error (compile_heads).
        unset["compile_parts"] = ["heads"]
    return dataclasses.replace(cfg, **unset, precision=resolve_precision(cfg.precision, device))


def parse_overrides(arguments: list[str]) -> BenchmarkCfg:
    """``key=value`` command-line overrides merged onto :class:`BenchmarkCfg`."""
    return parse_config(BenchmarkCfg, arguments)


def _summary(seconds: list[float], flops: int) -> dict:
    median = statistics.median(seconds)
    return {
        "ms": 1000 * median,
        "fps": 1 / median,
        "runs_ms": [1000 * s for s in seconds],
        "gflop": flops / 1e9,
        "gflop_per_s": flops / median / 1e9,
    }


def rays_per_chunk(cfg: BenchmarkCfg, num_samples: int) -> int:
    """``chunk_samples // N`` (at least one ray), or ``chunk_rays`` when chunk_samples is 0.

    0 means the renderer's automatic chunks (:meth:`GSNeRF.render_image`). ``cfg`` has its
    device defaults (:func:`with_device_defaults`).
    """
    if cfg.chunk_samples > 0:
        return rays_for_samples(cfg.chunk_samples, num_samples)
    return cfg.chunk_rays


@contextlib.contextmanager
def compile_failure_named(mode: str) -> Iterator[None]:
    """Re-raise a failure of the passes that compile (compile_parts) as one naming the way out."""
    try:
        yield
    except Exception as error:  # inductor fails with many types (no compiler, no Triton, ...)
        first_line = (str(error).strip().splitlines() or ["no message"])[0]
        raise RuntimeError(
            f"benchmark compile={mode}: compiling failed ({type(error).__name__}: "
            f"{first_line}). Inductor needs a C++ compiler on a CPU and Triton on CUDA; "
            "compile=none measures the eager heads."
        ) from error


def measure_rendering(
    model: GSNeRF, plain: GSNeRF, example: Example, cfg: BenchmarkCfg, device: torch.device
) -> dict:
    """Uncached, cached and per-stage timings, FLOPs and peak memory of one sample count.

    ``model`` is timed; the FLOPs are counted on ``plain`` (same weights, eager heads, no fused
    kernels). On an H200 (torch 2.11) compiled heads first called under the counter ran at eager
    speed.
    """
    model.eval()
    plain.eval()
    chunk = rays_per_chunk(cfg, model.cfg.sampler.num_samples)
    with torch.inference_mode(), autocast_context(cfg.precision, device):
        encode_counter = FlopCounterMode(display=False)
        render_counter = FlopCounterMode(display=False)
        stage_flops = StageFlops(encode_counter, render_counter)
        with plain.profiled(stage_flops), kernels_disabled():
            with encode_counter:
                geometry = plain.encode_sources(example)
            with render_counter:
                plain.render_image(example, geometry, chunk)
        compiling = cfg.compile != CompileMode.NONE.value
        # Compiled heads: the first pass compiles, the second runs (and records CUDA graphs).
        warmup = max(cfg.warmup, 2) if compiling else cfg.warmup
        with compile_failure_named(cfg.compile) if compiling else contextlib.nullcontext():
            for _ in range(warmup):
                model.render_image(example, model.encode_sources(example), chunk)
        encode_flops = encode_counter.get_total_flops()
        render_flops = render_counter.get_total_flops()

        encode_peaks_mb: list[float] = []

        def uncached() -> None:
            geometry = model.encode_sources(example)
            # Chunks sized to the free CUDA memory reset the peak statistics after the encoding.
            encode_peaks_mb.append(peak_memory_mb(device))
            model.render_image(example, geometry, chunk)

        def cached() -> None:
            model.render_image(example, geometry, chunk)

        uncached_seconds, cached_seconds, uncached_peak, cached_peak = alternate_passes(
            uncached, cached, cfg.repeats, cfg.budget_s, device
        )

        timer = StageTimer(device)
        with model.profiled(timer):
            profiled_seconds = timed(uncached, device)
        top_ops = top_operators(uncached, device, cfg.profile_ops) if cfg.profile_ops > 0 else []
    stages_ms = {stage: 1000 * seconds for stage, seconds in timer.seconds.items()}
    return {
        "uncached": {
            **_summary(uncached_seconds, encode_flops + render_flops),
            "peak_memory_mb": max(uncached_peak, encode_peaks_mb[0]),
        },
        "cached": {**_summary(cached_seconds, render_flops), "peak_memory_mb": cached_peak},
        "stages_ms": stages_ms,
        "stage_gflop": {stage: flops / 1e9 for stage, flops in stage_flops.flops.items()},
        "profiled_frame_ms": 1000 * profiled_seconds,
        "residual_ms": 1000 * profiled_seconds - sum(stages_ms.values()),
        "top_ops": top_ops,
        "chunk_rays": chunk,
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run_benchmark(cfg: BenchmarkCfg) -> dict:
    """Measure every sample count of ``cfg``; returns the JSON-ready record.

    Unset keys take the device's defaults (:func:`with_device_defaults`); the record's settings
    hold the values used.
    """
    device = resolve_device(cfg.device, "device")
    cfg = with_device_defaults(cfg, device)
    configure_matmul_precision(device, cfg.allow_tf32)
    torch.backends.cudnn.benchmark = cfg.cudnn_benchmark and device.type == "cuda"
    ran = use_fused_kernels(FusedKernels.from_options(cfg), device)
    # The record's settings say what ran (an older GPU cannot run some kernels).
    cfg = dataclasses.replace(cfg, **ran.as_options())
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    example = plane_example(cfg.views, cfg.height, cfg.width, cfg.num_classes, cfg.seed).to(device)
    train_example = plane_example(
        cfg.train_views, cfg.height, cfg.width, cfg.num_classes, cfg.seed
    ).to(device)
    # The yardstick of the stages' FLOP/s: one large product in the passes' precision.
    dense_matmul = dense_matmul_rate(device, cfg.precision)
    results = []
    for num_samples in cfg.samples:
        torch.manual_seed(cfg.seed)
        model = build_model(
            load_model_cfg(cfg.model, num_samples, cfg.model_overrides), cfg.num_classes
        ).to(device)
        log.info(
            "N=%d: rendering %dx%d from %d views", num_samples, cfg.width, cfg.height, cfg.views
        )
        # A copy with the same weights gets the compiled heads; training keeps the plain ones.
        renderer = copy.deepcopy(model)
        compile_heads(renderer, cfg.compile, cfg.compile_parts)
        rendering = measure_rendering(renderer, model, example, cfg, device)
        times = (rendering["uncached"]["ms"], rendering["cached"]["ms"])
        log.info("N=%d: uncached %.1f ms, cached %.1f ms; training", num_samples, *times)
        training = None
        if cfg.train_steps > 0:
            training = measure_training(
                model,
                train_example,
                cfg.train_rays,
                cfg.train_steps,
                cfg.precision,
                cfg.budget_s,
                cfg.seed,
                cfg.train_compile,
                cfg.train_compile_parts,
            )
        results.append({"samples": num_samples, **rendering, "training": training})
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "settings": dataclasses.asdict(cfg),
        "parameters": sum(p.numel() for p in model.parameters()),
        "dense_matmul": dense_matmul,
        "results": results,
        "ratios": ratios(results),
    }


def write_record(record: dict, cfg: BenchmarkCfg) -> Path:
    """``<output_dir>/<time>_<model>_<width>x<height>_<device>_<precision>.json``; its path.

    Model, size and precision are those the record was measured with (its settings).
    """
    used = record["settings"]
    name = (
        f"{used['model']}_{used['width']}x{used['height']}_{record['device_type']}_"
        f"{used['precision']}"
    )
    return write_json_record(record, cfg.output_dir, name)
