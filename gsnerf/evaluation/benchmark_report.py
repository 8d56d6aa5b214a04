"""Markdown tables of a benchmark record (:func:`gsnerf.evaluation.benchmark.run_benchmark`)."""

# Stages in pipeline order, with their table headers.
STAGES = (
    ("feature_net", "2-D feature net"),
    ("cost_volumes", "cost volumes"),
    ("guide_depth", "D_T"),
    ("sampling_gather", "sampling + gather"),
    ("heads", "heads"),
    ("compositing", "compositing"),
)
# Phases of a profiled training step (train_throughput.profiled_step): the forward's stages,
# then the rest of the forward with the losses, the backward pass and the optimizer.
TRAINING_PHASES = (
    *STAGES,
    ("losses_and_glue", "losses + glue"),
    ("backward", "backward"),
    ("optimizer", "optimizer"),
)


# The paper's speed claim (spec 9): N = 4 at 240x320 from 8 source views on an RTX 3090, and
# Semantic-Ray at N = 128.
PAPER_FPS = {"gsnerf_n4": 0.84, "semantic_ray_n128": 0.16}
PAPER_SETTING = {"model": "gsnerf", "width": 320, "height": 240, "views": 8}


def paper_comparison(record: dict) -> str:
    """The paper's figures, and this run's N = 4 FPS against them when the setting matches.

    Example: an uncached N = 4 view at 8.4 FPS in the paper's setting -> "10.0x the paper's".
    """
    settings = record["settings"]
    reference = (
        f"Paper (RTX 3090, gsnerf at 320x240, 8 views): {PAPER_FPS['gsnerf_n4']} FPS at N = 4; "
        f"Semantic-Ray {PAPER_FPS['semantic_ray_n128']} FPS at N = 128."
    )
    same = all(settings[key] == value for key, value in PAPER_SETTING.items())
    n4 = [result for result in record["results"] if result["samples"] == 4]
    if not same or not n4:
        return f"{reference} This run's setting differs, so its FPS are not comparable."
    uncached, cached = n4[0]["uncached"]["fps"], n4[0]["cached"]["fps"]
    paper = PAPER_FPS["gsnerf_n4"]
    return (
        f"{reference} This run at N = 4: {uncached:.3g} FPS uncached ({uncached / paper:.1f}x "
        f"the paper's), {cached:.3g} FPS cached ({cached / paper:.1f}x)."
    )


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join([_row(header), "|" + "---|" * len(header), *(_row(r) for r in rows)])


def _training(training: dict | None) -> list[str]:
    if training is None:
        return ["n/a", "n/a"]
    if "error" in training:
        return ["failed", "failed"]
    return [f"{training['steps_per_s']:.3g}", f"{training['rays_per_s']:.0f}"]


def frame_table(record: dict) -> str:
    """One row per N: uncached and cached ms/frame and fps, FLOPs, memory, training speed."""
    header = [
        "N",
        "rays/chunk",
        "uncached ms",
        "uncached fps",
        "cached ms",
        "cached fps",
        "cache speed-up",
        "GFLOP (unc.)",
        "GFLOP/s (unc.)",
        "peak MB (unc.)",
        "train steps/s",
        "train rays/s",
    ]
    rows = []
    for result in record["results"]:
        uncached, cached = result["uncached"], result["cached"]
        rows.append(
            [
                str(result["samples"]),
                str(result["chunk_rays"] or "auto"),
                f"{uncached['ms']:.1f}",
                f"{uncached['fps']:.3g}",
                f"{cached['ms']:.1f}",
                f"{cached['fps']:.3g}",
                f"{uncached['ms'] / cached['ms']:.2f}x",
                f"{uncached['gflop']:.2f}",
                f"{uncached['gflop_per_s']:.2f}",
                f"{uncached['peak_memory_mb']:.0f}",
                *_training(result["training"]),
            ]
        )
    return _table(header, rows)


def stage_table(record: dict) -> str:
    """One row per N: milliseconds per stage of one uncached frame, their sum and the rest."""
    header = ["N", *(name for _, name in STAGES), "sum", "frame (profiled)", "residual"]
    rows = []
    for result in record["results"]:
        stages = result["stages_ms"]
        rows.append(
            [
                str(result["samples"]),
                *(f"{stages.get(key, 0.0):.1f}" for key, _ in STAGES),
                f"{sum(stages.values()):.1f}",
                f"{result['profiled_frame_ms']:.1f}",
                f"{result['residual_ms']:.1f}",
            ]
        )
    return _table(header, rows)


def stage_flops_table(record: dict) -> str | None:
    """Per N and stage: ms, GFLOP, achieved GFLOP/s and its share of the dense-matmul rate.

    None for records without per-stage FLOPs (older ones). A stage without counted FLOPs
    (splatting, grid reads, element-wise work) shows ``-``. The last rows per N: the FLOPs
    outside every stage and the whole profiled frame.
    """
    matmul = record.get("dense_matmul")
    results = [result for result in record["results"] if "stage_gflop" in result]
    if matmul is None or not results:
        return None
    ceiling = matmul["gflop_per_s"]

    def cells(samples: int, name: str, ms: float | None, gflop: float) -> list[str]:
        rate = gflop / (ms / 1000) if ms is not None and ms > 0 and gflop > 0 else None
        return [
            str(samples),
            name,
            "-" if ms is None else f"{ms:.1f}",
            f"{gflop:.3f}" if gflop > 0 else "-",
            "-" if rate is None else f"{rate:.1f}",
            "-" if rate is None else f"{100 * rate / ceiling:.1f} %",
        ]

    rows = []
    for result in results:
        samples, stages, flops = result["samples"], result["stages_ms"], result["stage_gflop"]
        rows += [cells(samples, name, stages.get(key), flops.get(key, 0.0)) for key, name in STAGES]
        outside = result["uncached"]["gflop"] - sum(flops.values())
        rows.append(cells(samples, "outside the stages", result["residual_ms"], outside))
        rows.append(
            cells(samples, "frame", result["profiled_frame_ms"], result["uncached"]["gflop"])
        )
    header = ["N", "stage", "ms", "GFLOP", "GFLOP/s", "of dense matmul"]
    caption = (
        "FLOPs (counted on eager code) and achieved FLOP/s per stage of one uncached frame; "
        f"dense matmul: one {matmul['size']}x{matmul['size']} {matmul['dtype']} product on "
        f"this device, {ceiling:.1f} GFLOP/s:"
    )
    return caption + "\n\n" + _table(header, rows)


def training_phase_table(record: dict) -> str | None:
    """One row per N with a profiled training step: ms per phase, their sum, that step's time
    and the median step; None when no result has one (no training, a failure, older records)."""
    header = ["N", *(name for _, name in TRAINING_PHASES), "sum", "step (profiled)", "step"]
    rows = []
    for result in record["results"]:
        training = result["training"] or {}
        phases = training.get("phases_ms")
        if phases:
            rows.append(
                [
                    str(result["samples"]),
                    *(f"{phases.get(key, 0.0):.1f}" for key, _ in TRAINING_PHASES),
                    f"{sum(phases.values()):.1f}",
                    f"{training['profiled_step_ms']:.1f}",
                    f"{training['step_ms']:.1f}",
                ]
            )
    return _table(header, rows) if rows else None


def operator_tables(record: dict) -> list[str]:
    """Per N with a profile: its most expensive operators, self ms and calls."""
    tables = []
    for result in record["results"]:
        rows = result.get("top_ops") or []
        if rows:
            cells = [[row["name"][:70], f"{row['self_ms']:.1f}", str(row["calls"])] for row in rows]
            tables.append(
                f"Operators with the most self time in one uncached frame, N={result['samples']}:"
            )
            tables.append(_table(["operator / kernel", "self ms", "calls"], cells))
    return tables


def _training_compile(settings: dict) -> str:
    """How the training steps ran: eager, or which parts compiled (records before: eager)."""
    mode = settings.get("train_compile", "none")
    if mode == "none":
        return "eager"
    return f"compiled {' + '.join(settings['train_compile_parts'])} (train_compile={mode})"


def markdown_report(record: dict) -> str:
    """Title line, the two tables and the ratios between sample counts."""
    settings = record["settings"]
    compile_mode = settings["compile"]
    # Records older than compile_parts compiled the heads only.
    parts = settings.get("compile_parts", ["heads"])
    compiled = "eager heads" if compile_mode == "none" else "compiled " + " + ".join(parts)
    if record["device_type"] == "cuda":
        # Records older than the options ran the plain attention.
        if settings.get("fused_transformer", False):
            compiled += ", fused Triton transformers"
        elif settings.get("fused_blocks", False):
            compiled += ", fused Triton blocks"
        elif settings.get("fused_attention", False):
            compiled += ", fused Triton attention"
        else:
            compiled += ", plain attention"
        if settings.get("fused_gather", False):
            compiled += ", Triton gathering kernels"
        if settings.get("fused_heads", False):
            compiled += ", Triton head kernels"
        if settings.get("fused_volumes", False):
            compiled += ", Triton cost-volume kernels"
        if settings.get("fused_guide_depth", False):
            compiled += ", Triton D_T"
    elif settings.get("fused_transformer", False):
        compiled += ", C++ transformers"
    title = (
        f"gsnerf benchmark: model={settings['model']} {settings['width']}x{settings['height']}, "
        f"{settings['views']} views, {settings['precision']}, "
        f"{compiled} (compile={compile_mode}), "
        f"training steps {_training_compile(settings)}, "
        f"on {record['device']}, "
        f"torch {record['torch']}"
    )
    parts = [
        title,
        frame_table(record),
        "Milliseconds per stage of one uncached frame:",
        stage_table(record),
    ]
    flops = stage_flops_table(record)
    if flops is not None:
        parts.append(flops)
    phases = training_phase_table(record)
    if phases is not None:
        parts += ["Milliseconds per phase of one profiled training step:", phases]
    parts.extend(operator_tables(record))
    counts = sorted(result["samples"] for result in record["results"])
    # One sample count has nothing to be compared with.
    if counts[0] != counts[-1]:
        spread = record["ratios"]["largest_over_smallest_n"]
        parts.append(
            f"N={counts[-1]} over N={counts[0]}: uncached {spread['uncached']:.2f}x, "
            f"cached {spread['cached']:.2f}x the time per frame"
        )
    parts.append(paper_comparison(record))
    parts.extend(
        f"Training step at N={result['samples']} failed: {result['training']['error']}"
        for result in record["results"]
        if training_failed(result)
    )
    return "\n\n".join(parts)


def training_failed(result: dict) -> bool:
    """Whether the training measurement of one sample count's result raised."""
    return "error" in (result["training"] or {})
