"""Speed of the heads' transformer formulations on one frame's tokens (spec 9).

The heads' view and semantic transformers take most of a frame on a GPU (62 ms of 123 ms on an
H100 with everything compiled, benchmarks/README.md). This benchmark times one such transformer
alone, on random tokens of the shape of one 320x240 frame at N = 4 (307200 sets of 9 tokens,
width 32, 4 heads, 4 blocks, a key mask), in each formulation:

- ``plain``: the token-major blocks in eager PyTorch (:mod:`gsnerf.model.transformer`);
- ``compiled``: the same under ``torch.compile`` (inductor), as the compiled heads run them;
- ``fused_attention`` / ``fused_attention_compiled``: with the attention in one Triton kernel
  (:mod:`gsnerf.model.attention_kernel`), eager and compiled;
- ``fused_blocks`` / ``fused_blocks_compiled``: whole blocks in two Triton kernels each
  (:mod:`gsnerf.model.fused_blocks`), eager and compiled;
- ``fused_transformer`` / ``fused_transformer_compiled``: the whole transformer in one Triton
  kernel (:mod:`gsnerf.model.fused_transformer`), eager and compiled; on a CPU, in one C++
  kernel (:mod:`gsnerf.model.cpu_transformer`, float32 only: under ``precision=bf16`` the
  tokens are bf16 and the PyTorch blocks run);
- ``attention_call_compiled`` / ``attention_call_kernel``: one attention call alone, inductor's
  kernels against the fused kernel (the per-call comparison of the attention kernel's notes).

Each variant is warmed up (compiling), then timed over ``repeats`` CUDA-synchronised calls
(median), and its output compared with ``plain`` in float32 (largest absolute difference).
The other fused variants need CUDA and Triton.
"""

import copy
import dataclasses
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from einops import rearrange

from gsnerf.engine.device import autocast_context, resolve_device
from gsnerf.evaluation.benchmark_records import parse_config, write_json_record
from gsnerf.evaluation.pass_timing import timed
from gsnerf.model import attention_kernel
from gsnerf.model.cpu_transformer import kernel_available
from gsnerf.model.fused_kernels import (
    FusedKernels,
    current_fused_kernels,
    set_fused_kernels,
)
from gsnerf.model.transformer import TokenTransformer, TransformerCfg, key_bias, sets_last_attention

# Every variant, in the order of the report (module doc).
VARIANTS = [
    "plain",
    "compiled",
    "fused_attention",
    "fused_attention_compiled",
    "fused_blocks",
    "fused_blocks_compiled",
    "fused_transformer",
    "fused_transformer_compiled",
    "attention_call_compiled",
    "attention_call_kernel",
]
CPU_VARIANTS = ["plain", "compiled", "fused_transformer", "fused_transformer_compiled"]


@dataclass
class TransformerBenchmarkCfg:
    # Sets of tokens (307200: the samples of a 320x240 frame at N = 4) and tokens per set (9:
    # 8 source views and the global token).
    sets: int = 307200
    tokens: int = 9
    # The transformer (spec 2.6: width 32, 4 heads, 4 blocks, feed-forward width 32).
    width: int = 32
    heads: int = 4
    layers: int = 4
    ffn_width: int = 32
    # A random key mask (one attended key per set at least), as the view transformers have.
    masked: bool = True
    # "fp32" or "bf16" (autocast, the CUDA default of the speed benchmark).
    precision: str = "bf16"
    # Variants to time (VARIANTS); unset: all that the device runs.
    variants: list[str] | None = None
    # "auto" (CUDA when present), "cpu" or "cuda".
    device: str = "auto"
    # Timed calls per variant (the median is reported), after two untimed ones.
    repeats: int = 20
    seed: int = 0
    # Folder of the JSON record.
    output_dir: str = "benchmarks"

    def __post_init__(self) -> None:
        unknown = [name for name in self.variants or [] if name not in VARIANTS]
        if unknown:
            raise ValueError(f"transformer benchmark variants: unknown {unknown}, of {VARIANTS}")


def parse_overrides(arguments: list[str]) -> TransformerBenchmarkCfg:
    """``key=value`` command-line overrides merged onto :class:`TransformerBenchmarkCfg`."""
    return parse_config(TransformerBenchmarkCfg, arguments)


def _variant_call(
    name: str, transformer: TokenTransformer, tokens: torch.Tensor, mask: torch.Tensor | None
) -> Callable[[], torch.Tensor]:
    """The call that variant ``name`` times; the fused kernels' switches set as it needs."""
    set_fused_kernels(
        FusedKernels(
            attention=name.startswith("fused_attention") or name.endswith("_kernel"),
            blocks=name.startswith("fused_blocks"),
            transformer=name.startswith("fused_transformer"),
        )
    )
    if name.startswith("attention_call"):
        # One attention call on the token-major q k v of the first block.
        rows = rearrange(tokens, "n t c -> (t n) c")
        qkv = torch.mm(transformer.blocks[0].qkv.weight, rows.t())
        query, key, value = rearrange(
            qkv,
            "(three h c) (t n) -> three h c t n",
            three=3,
            h=transformer.blocks[0].heads,
            t=tokens.shape[1],
        )
        bias = None if mask is None else key_bias(mask, qkv.dtype)
        if name.endswith("_kernel"):
            return lambda: attention_kernel.fused_sets_last_attention(query, key, value, bias)
        compiled = torch.compile(sets_last_attention, dynamic=False)
        return lambda: compiled(query, key, value, bias)
    # A copy per variant: compiled code keeps guards on the switches it saw.
    model = copy.deepcopy(transformer)
    forward = torch.compile(model.forward, dynamic=False) if "compiled" in name else model
    return lambda: forward(tokens, mask)


def run_transformer_benchmark(cfg: TransformerBenchmarkCfg) -> dict:
    """Time every chosen variant (module doc); returns the JSON-ready record."""
    device = resolve_device(cfg.device, "device")
    runnable = VARIANTS if device.type == "cuda" else CPU_VARIANTS
    if device.type == "cpu" and not kernel_available(
        cfg.width, cfg.heads, cfg.ffn_width, cfg.tokens
    ):
        runnable = CPU_VARIANTS[:2]  # no C++ kernel (the warning says why)
    chosen = cfg.variants or runnable
    skipped = [name for name in chosen if name not in runnable]
    if skipped:
        raise ValueError(
            f"transformer benchmark variants {skipped} need CUDA and Triton (a CPU runs "
            f"{CPU_VARIANTS}, the fused ones where the C++ kernel builds)"
        )
    torch.manual_seed(cfg.seed)
    transformer_cfg = TransformerCfg(cfg.width, cfg.heads, cfg.layers, cfg.ffn_width)
    transformer = TokenTransformer(transformer_cfg).to(device).eval()
    tokens = torch.randn(cfg.sets, cfg.tokens, cfg.width, device=device)
    mask = None
    if cfg.masked:
        mask = torch.rand(cfg.sets, cfg.tokens, device=device) > 0.3
        mask[torch.arange(cfg.sets), torch.randint(cfg.tokens, (cfg.sets,))] = True
    saved = current_fused_kernels()
    results: dict[str, dict] = {}
    reference: dict[str, torch.Tensor] = {}
    try:
        with torch.inference_mode(), autocast_context(cfg.precision, device):
            for name in chosen:
                call = _variant_call(name, transformer, tokens, mask)
                output = call()
                call()
                seconds = [timed(call, device) for _ in range(max(cfg.repeats, 1))]
                # Transformers are compared with the plain one, attention calls with each other.
                family = "attention" if name.startswith("attention_call") else "transformer"
                output = output.float()
                first = reference.setdefault(family, output)
                results[name] = {
                    "ms": 1000 * statistics.median(seconds),
                    "runs_ms": [1000 * s for s in seconds],
                    "max_abs_difference": (output - first).abs().max().item(),
                }
    finally:
        set_fused_kernels(saved)
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "settings": dataclasses.asdict(cfg),
        "results": results,
    }


def markdown_table(record: dict) -> str:
    """One row per variant: median ms and the largest difference from the first of its kind."""
    lines = [
        f"Transformer on {record['device']} (torch {record['torch']}), "
        f"{record['settings']['sets']} sets of {record['settings']['tokens']} tokens, "
        f"{record['settings']['precision']}:",
        "",
        "| variant | median ms | difference from the first of its kind |",
        "|---|---|---|",
    ]
    for name, result in record["results"].items():
        lines.append(f"| {name} | {result['ms']:.3f} | {result['max_abs_difference']:.2e} |")
    return "\n".join(lines)


def write_transformer_record(record: dict, cfg: TransformerBenchmarkCfg) -> Path:
    """``<output_dir>/<time>_transformer_<device type>_<precision>.json``; its path."""
    kind = "cuda" if record["device"] != "cpu" else "cpu"
    return write_json_record(record, cfg.output_dir, f"transformer_{kind}_{cfg.precision}")
