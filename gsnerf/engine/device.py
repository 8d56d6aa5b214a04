"""Device and precision choices: CUDA when present, bf16/fp16 autocast and TF32 on CUDA only."""

import contextlib

import torch


def resolve_device(name: str, key: str = "train.device") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without CUDA is an error.

    ``key``: the config key the name came from, for the error message.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"{key}={name} but no CUDA device is available; use {key}=auto")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` -> bf16 on CUDA with bf16 support, fp32 otherwise (autocast is CUDA-only here)."""
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp32"
    return precision


def data_workers(requested: int, device: torch.device, cores: int) -> int:
    """Data-loader worker processes for ``train.num_workers = requested`` (-1: automatic).

    ``cores``: the CPU cores this process may use. Automatic: none on a CPU, whose cores do the
    training; with CUDA half the cores, at most 4, so that decoding and resizing overlap the
    GPU's steps (the quickstart on an H200 waited 9.6 % of its step time for data without
    workers). Example: -1, CUDA, 16 cores -> 4.
    """
    if requested < -1:
        raise ValueError(f"train.num_workers must be -1 (automatic) or >= 0, got {requested}")
    if requested >= 0:
        return requested
    if device.type != "cuda":
        return 0
    return min(4, cores // 2)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a CPU runs synchronously, so nothing there."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast for bf16/fp16; a null context for fp32."""
    resolved = resolve_precision(precision, device)
    if resolved == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if resolved == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def configure_matmul_precision(device: torch.device, allow_tf32: bool) -> None:
    """On CUDA, let float32 matrix products and convolutions use TF32 tensor cores or not.

    Sets ``torch.backends.cuda.matmul.allow_tf32`` and ``torch.backends.cudnn.allow_tf32`` to
    ``allow_tf32``. TF32 rounds the inputs of a product to a 10-bit mantissa (relative rounding
    2^-11, about 5e-4) and accumulates in float32. On the CPU nothing changes: TF32 is a format
    of NVIDIA tensor cores (Ampere and later), and the CPU kernels ignore both flags.
    Idempotent: it only writes torch's process-wide flags.
    """
    if device.type != "cuda":
        return
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32


def make_grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A gradient scaler for fp16 only (bf16 and fp32 do not need one)."""
    if resolve_precision(precision, device) != "fp16":
        return None
    return torch.amp.GradScaler(device.type)
