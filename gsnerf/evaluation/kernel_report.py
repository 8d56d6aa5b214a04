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
from gsnerf.evaluation.kernel_cases import KernelCase, model_kernel_cases

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


class RecordingLauncher:
    """Stands in for a Triton kernel at ``launcher[grid](*args, **kwargs)``: keeps the call."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple, dict]] = []

    def __getitem__(self, grid: object) -> Callable[..., None]:
        def record(*args: object, **kwargs: object) -> None:
            self.calls.append((args, kwargs))

        return record


def _launch_signature(case: KernelCase, arch: int) -> tuple:
    """The case's launch bound as Triton's own launches bind it (the binder they use) for
    compute capability ``arch``: the target, its backend, options, signature, constants and
    attributes."""
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
    return target, options, signature, constexprs, attrs


def float_scalar_arguments(case: KernelCase) -> list[str]:
    """The kernel's arguments that its launch passes as Python floats (typed ``fp32``)."""
    signature = _launch_signature(case, arch=90)[2]
    return [name for name, kind in signature.items() if kind == "fp32"]


def compile_for_target(
    case: KernelCase, arch: int, float_scalars: str = "fp32"
) -> tuple[object, float]:
    """The kernel as its launch would compile it for compute capability ``arch``; seconds taken.

    Uses Triton's own argument specialisation with the target's backend, and a fresh cache
    directory so that nothing is reused from earlier compiles. ``float_scalars="fp64"`` types
    Python float arguments as torch.compile's launches do (inductor passes them as fp64,
    Triton's own launches as fp32).
    """
    target, options, signature, constexprs, attrs = _launch_signature(case, arch)
    signature = {
        name: float_scalars if kind == "fp32" else kind for name, kind in signature.items()
    }
    source = ASTSource(case.jit_function, signature, constexprs, attrs)
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
