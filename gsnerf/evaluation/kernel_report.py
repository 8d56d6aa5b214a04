"""Registers, spills and compile time of the project's Triton kernels, without a GPU.

Triton compiles for a named GPU architecture on any machine: the code generator needs no
device, and the PTX assembler (``ptxas``) that turns its output into machine code ships with
Triton. ``ptxas -v`` reports, per kernel, the registers each thread uses and the bytes it
spills to local memory when they do not fit. Spills are the first thing to rule out in a
kernel that runs slower than its memory traffic allows: an earlier form of the fused attention
used all 255 registers and spilled 4.5 kB per thread on sm_90, which no CPU test showed.

Each case launches a kernel through its own launch function with a launcher that records the
arguments instead of running (small CPU tensors of the paper model's shapes), then compiles
exactly what the launch would compile: Triton's own specialisation of those arguments
(dtypes, 16-byte alignment, integers divisible by 16) for the target, in a fresh cache, so
that the compile time is that of a first launch.

    python scripts/kernel_report.py [arch=90]   # 90: H100 / H200, 80: A100, 86: RTX 3090
"""

import dataclasses
import datetime
import platform
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from gsnerf.evaluation.benchmark_records import parse_config, write_json_record
from gsnerf.model import (
    attention_kernel,
    fused_blocks,
    fused_patch_read,
    fused_radiance_views,
    fused_transformer,
    fused_view_gather,
)
from gsnerf.model.geo_reasoner import GeoReasonerCfg
from gsnerf.model.radiance_head import RadianceHead, RadianceHeadCfg
from gsnerf.model.transformer import TokenTransformer, TransformerCfg

try:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import get_ptxas
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature
except ImportError:  # A CPU-only torch comes without Triton: nothing to report.
    triton = None


@dataclass
class KernelReportCfg:
    # Compute capability to compile for, major * 10 + minor: 90 for the H100 and H200 (Triton
    # then targets sm_90a), 80 for the A100, 86 for the RTX 3090.
    arch: int = 90
    # Folder of the JSON record.
    output_dir: str = "benchmarks"


@dataclass
class KernelCase:
    """One kernel in one of the model's configurations."""

    kernel: str  # name of the kernel in the report
    case: str  # the configuration, in words
    jit_function: object  # the ``@triton.jit`` function
    # Calls the kernel's launch function with the launcher it is given.
    launch: Callable[[object], object]


class RecordingLauncher:
    """Stands in for a Triton kernel at ``launcher[grid](*args, **kwargs)``: keeps the call."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple, dict]] = []

    def __getitem__(self, grid: object) -> Callable[..., None]:
        def record(*args: object, **kwargs: object) -> None:
            self.calls.append((args, kwargs))

        return record


def model_kernel_cases() -> list[KernelCase]:
    """The fused kernels in the paper model's configurations (spec 2.6: width 32, 4 heads, 4
    blocks, feed-forward width 32).

    The view and semantic transformers attend over 9 tokens (8 views and the global token)
    with a key mask, the ray transformer over the N = 4 samples of a ray without one; bf16 is
    the CUDA inference precision, fp32 the reference one.
    """
    if triton is None:
        return []
    cfg = TransformerCfg()
    head_channels = cfg.width // cfg.heads
    sets = 640  # any count divisible by 16, as a frame's 307200 sets are

    def attention(tokens: int, masked: bool, dtype: torch.dtype) -> Callable[[object], object]:
        def launch(launcher: object) -> object:
            qkv = torch.zeros(3, cfg.heads, head_channels, tokens, sets, dtype=dtype)
            bias = torch.zeros(tokens, sets, dtype=dtype) if masked else None
            return attention_kernel.launch_attention_kernel(launcher, *qkv, bias)

        return launch

    def block_tail(has_next: bool, dtype: torch.dtype) -> Callable[[object], object]:
        def launch(launcher: object) -> object:
            count = 9 * sets
            columns = torch.zeros(cfg.width, count, dtype=dtype)
            square = torch.zeros(cfg.width, cfg.width, dtype=dtype)
            vector = torch.zeros(cfg.width)
            weights = [square, vector, vector, square, vector, square, vector, vector, vector]
            next_weight = torch.zeros(3 * cfg.width, cfg.width, dtype=dtype) if has_next else None
            eps = cfg.layer_norm_eps
            return fused_blocks.launch_block_tail(
                columns, columns, weights, next_weight, eps, launcher
            )

        return launch

    view_blocks = TokenTransformer(cfg).blocks
    # The radiance head's ray transformer has blocks of its own count (spec 2.6: 1).
    ray_layers = RadianceHeadCfg().ray_mixer_layers
    ray_blocks = TokenTransformer(dataclasses.replace(cfg, layers=ray_layers)).blocks

    def transformer(
        tokens: int, masked: bool, dtype: torch.dtype, tf32: bool = False
    ) -> Callable[[object], object]:
        blocks = view_blocks if masked else ray_blocks

        def launch(launcher: object) -> object:
            inputs = torch.zeros(sets, tokens, cfg.width, dtype=dtype)
            mask = torch.ones(sets, tokens, dtype=torch.bool) if masked else None
            weights = fused_transformer.stacked_weights(blocks, dtype)
            # The kernel multiplies float32 in TF32 when torch's matrix products may.
            saved = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
            try:
                return fused_transformer.launch_fused_transformer(
                    inputs, mask, weights, cfg.heads, cfg.layer_norm_eps, launcher
                )
            finally:
                torch.backends.cuda.matmul.allow_tf32 = saved

        return launch

    def view_gather(dtype: torch.dtype) -> Callable[[object], object]:
        # The paper's 8 views, levels at 1/4, 1/2 and full resolution with 8 channels, 8 image
        # channels and 4 angle frequencies, on 48 x 64 images (divisible by 16, as 240 x 320).
        views, height, width, channels = 8, 48, 64, 8
        depths = GeoReasonerCfg().n_depths

        def launch(launcher: object) -> object:
            points = torch.zeros(1, 1024, 4, 3)
            sizes = [(height >> level, width >> level) for level in (2, 1, 0)]
            windows = [torch.zeros(1, views, 2, *size, dtype=dtype) for size in sizes]
            maps = [torch.zeros(1, views, *size, dtype=dtype) for size in sizes]
            volumes = [
                torch.zeros(1, views, channels, count, *size, dtype=dtype)
                for count, size in zip(depths, sizes, strict=True)
            ]
            return fused_view_gather.launch_view_gather(
                points,
                points,
                torch.zeros(1, views, 21),
                torch.zeros(1, views, 3),
                torch.zeros(1, views, channels, height, width, dtype=dtype),
                torch.zeros(1, views, 3, height, width),
                windows,
                maps,
                volumes,
                0.2,
                True,
                4,
                launcher,
            )

        return launch

    def patch_read(dtype: torch.dtype) -> Callable[[object], object]:
        # 3 x 3 patches of 20 channels (ScanNet's classes) at every sample of 1024 rays (the
        # semantic head's default volume rendering).
        def launch(launcher: object) -> object:
            maps = torch.zeros(8, 20, 48, 64, dtype=dtype)
            grid = torch.zeros(8, 1024, 4, 2)
            return fused_patch_read.launch_patch_read(maps, grid, 8, 3, 1.0, [48, 64], launcher)

        return launch

    def radiance_views(dtype: torch.dtype) -> Callable[[object], object]:
        # The paper's radiance head: 8 views of 24 volume, 8 image and 8 angle channels.
        head = RadianceHead(RadianceHeadCfg(), 24, 8, 8)

        def launch(launcher: object) -> object:
            samples, views = 1024, 8
            parts = [torch.zeros(samples, views, channels) for channels in (24, 8, 3, 8)]
            flags = torch.zeros(3, samples, views, dtype=torch.uint8)
            weights = fused_radiance_views.head_weights(head, dtype)
            return fused_radiance_views.launch_radiance_views(
                *parts, flags, weights, cfg.heads, cfg.layer_norm_eps, launcher
            )

        return launch

    view_case = "view / semantic transformer: 9 tokens, key mask"
    tail_case = f"width {cfg.width}, feed-forward {cfg.ffn_width}"
    return [
        KernelCase(
            "attention", f"{view_case}, bf16", attention_kernel._attention_kernel,
            attention(9, True, torch.bfloat16),
        ),
        KernelCase(
            "attention", f"{view_case}, fp32", attention_kernel._attention_kernel,
            attention(9, True, torch.float32),
        ),
        KernelCase(
            "attention", "ray transformer: 4 tokens, no mask, bf16",
            attention_kernel._attention_kernel, attention(4, False, torch.bfloat16),
        ),
        KernelCase(
            "block tail", f"{tail_case}, next block's q k v, bf16",
            fused_blocks._block_tail_kernel, block_tail(True, torch.bfloat16),
        ),
        KernelCase(
            "block tail", f"{tail_case}, last block, bf16", fused_blocks._block_tail_kernel,
            block_tail(False, torch.bfloat16),
        ),
        KernelCase(
            "block tail", f"{tail_case}, next block's q k v, fp32",
            fused_blocks._block_tail_kernel, block_tail(True, torch.float32),
        ),
        KernelCase(
            "transformer", f"{view_case}, bf16", fused_transformer._transformer_kernel,
            transformer(9, True, torch.bfloat16),
        ),
        KernelCase(
            "transformer", f"{view_case}, fp32 (TF32 products)",
            fused_transformer._transformer_kernel, transformer(9, True, torch.float32, True),
        ),
        KernelCase(
            "transformer", f"{view_case}, fp32 (full-precision products)",
            fused_transformer._transformer_kernel, transformer(9, True, torch.float32),
        ),
        KernelCase(
            "transformer", "ray transformer: 4 tokens, no mask, 1 block, bf16",
            fused_transformer._transformer_kernel, transformer(4, False, torch.bfloat16),
        ),
        KernelCase(
            "view gather", "8 views, 3 levels of 8 channels, 8 image channels, bf16 maps",
            fused_view_gather._view_gather_kernel, view_gather(torch.bfloat16),
        ),
        KernelCase(
            "view gather", "the same, fp32 maps", fused_view_gather._view_gather_kernel,
            view_gather(torch.float32),
        ),
        KernelCase(
            "patch read", "3 x 3 patches of 20 channels, 8 views, bf16 maps",
            fused_patch_read._patch_read_kernel, patch_read(torch.bfloat16),
        ),
        KernelCase(
            "radiance views", "paper radiance head, 8 views, bf16",
            fused_radiance_views._radiance_views_kernel, radiance_views(torch.bfloat16),
        ),
        KernelCase(
            "radiance views", "the same, fp32 (full-precision products)",
            fused_radiance_views._radiance_views_kernel, radiance_views(torch.float32),
        ),
    ]  # fmt: skip


def compile_for_target(
    case: KernelCase, arch: int, float_scalars: str = "fp32"
) -> tuple[object, float]:
    """The kernel as its launch would compile it for compute capability ``arch``; seconds taken.

    Uses Triton's own argument specialisation (the binder its launches use) with the target's
    backend, and a fresh cache directory so that nothing is reused from earlier compiles.
    ``float_scalars="fp64"`` types Python float arguments as torch.compile's launches do
    (inductor passes them as fp64, Triton's own launches as fp32).
    """
    recorder = RecordingLauncher()
    case.launch(recorder)
    if len(recorder.calls) != 1:
        raise RuntimeError(f"{case.kernel}: expected one launch, recorded {len(recorder.calls)}")
    args, kwargs = recorder.calls[0]
    function = case.jit_function
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(function.signature, function.params, backend)
    bound, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = function._pack_args(
        backend, kwargs, bound, specialization, options
    )
    signature = {
        name: float_scalars if kind == "fp32" else kind for name, kind in signature.items()
    }
    source = ASTSource(function, signature, constexprs, attrs)
    with tempfile.TemporaryDirectory() as cache, triton.knobs.cache.scope():
        triton.knobs.cache.dir = cache
        start = time.perf_counter()
        compiled = triton.compile(source, target=target, options=options.__dict__)
        seconds = time.perf_counter() - start
    return compiled, seconds


def parse_ptxas_usage(report: str) -> dict[str, int]:
    """Registers per thread and local-memory bytes from ``ptxas -v``'s report of one kernel.

    Example: "0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads" and "Used 80
    registers" -> registers 80, stack 0, spill stores 0, spill loads 0.
    """
    frame = re.search(
        r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", report
    )
    registers = re.search(r"Used (\d+) registers", report)
    if frame is None or registers is None:
        raise ValueError(f"ptxas -v printed no register or stack report:\n{report[-2000:]}")
    stack, stores, loads = (int(value) for value in frame.groups())
    return {
        "registers": int(registers.group(1)),
        "stack_bytes": stack,
        "spill_store_bytes": stores,
        "spill_load_bytes": loads,
    }


def ptxas_usage(ptx: str, arch: int) -> dict[str, int]:
    """Assemble ``ptx`` with Triton's ``ptxas -v`` for the PTX's own target; the usage."""
    target = re.search(r"^\.target\s+(sm_\w+)", ptx, re.MULTILINE)
    if target is None:
        raise ValueError("the PTX names no .target")
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "kernel.ptx"
        source.write_text(ptx)
        result = subprocess.run(
            [get_ptxas(arch).path, f"-arch={target.group(1)}", "-v", str(source),
             "-o", str(Path(folder) / "kernel.cubin")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"ptxas failed on the kernel:\n{result.stderr[-2000:]}")
    return parse_ptxas_usage(result.stdout + result.stderr)


def kernel_row(case: KernelCase, arch: int) -> dict:
    """One row of the report: the case, its launch options and its resource use."""
    compiled, seconds = compile_for_target(case, arch)
    return {
        "kernel": case.kernel,
        "case": case.case,
        "num_warps": compiled.metadata.num_warps,
        **ptxas_usage(compiled.asm["ptx"], arch),
        "shared_bytes": compiled.metadata.shared,
        "compile_s": seconds,
    }


def run_kernel_report(cfg: KernelReportCfg) -> dict:
    """The record: target, versions and one row per case of :func:`model_kernel_cases`."""
    if triton is None:
        raise RuntimeError("the kernel report needs Triton, which this torch build lacks")
    return {
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "arch": cfg.arch,
        "host": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "rows": [kernel_row(case, cfg.arch) for case in model_kernel_cases()],
    }


def markdown_table(record: dict) -> str:
    """The rows as a Markdown table under a line naming the target."""
    lines = [
        f"Triton {record['triton']} kernels compiled for compute capability "
        f"{record['arch']} (no GPU needed)",
        "",
        "| kernel | case | warps | registers | spill stores (B) | spill loads (B) | stack (B) "
        "| shared (B) | compile (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in record["rows"]:
        lines.append(
            f"| {row['kernel']} | {row['case']} | {row['num_warps']} | {row['registers']} | "
            f"{row['spill_store_bytes']} | {row['spill_load_bytes']} | {row['stack_bytes']} | "
            f"{row['shared_bytes']} | {row['compile_s']:.2f} |"
        )
    return "\n".join(lines)


def parse_overrides(arguments: list[str]) -> KernelReportCfg:
    return parse_config(KernelReportCfg, arguments)


def write_kernel_record(record: dict, cfg: KernelReportCfg) -> Path:
    return write_json_record(record, cfg.output_dir, f"kernels_sm{record['arch']}")
