"""The device's dense matrix-product rate: the yardstick for a stage's achieved FLOP/s (spec 9).

A stage's FLOP/s alone does not say whether it is slow: the benchmark sets it next to what the
same device reaches on one large square matrix product in the pass's precision, measured in the
same run with the same thread count and TF32 setting. That rate is close to the best a real
workload gets from the device's matrix units and its library (MKL / oneDNN on a CPU, cuBLAS on
CUDA), so a stage at a few percent of it is bound by memory traffic, launches or Python, not
arithmetic. A ceiling measured, not a datasheet's peak: a virtual CPU's turbo, a GPU's clocks
and the library's kernel choice are all in it.
"""

import torch

from gsnerf.evaluation.pass_timing import timed

# Side of the square matrices: large enough to reach the library's full rate, small enough to
# take well under a second (CPU: 2.1 GFLOP per product; CUDA: 1.1 TFLOP).
DEFAULT_SIZES = {"cpu": 1024, "cuda": 8192}
# The matrices' dtype per precision of the passes (bf16: the dtype autocast computes products in).
PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def dense_matmul_rate(
    device: torch.device, precision: str, size: int | None = None, repeats: int = 5
) -> dict:
    """GFLOP/s of the fastest of ``repeats`` ``size x size`` products (after one untimed one).

    ``precision``: ``"fp32"`` or ``"bf16"`` (``PRECISION_DTYPES``); float32 products use TF32 on
    CUDA when the caller allowed it. Returns ``{"dtype", "size", "gflop_per_s"}``; ``size``
    defaults per device type (``DEFAULT_SIZES``). FLOPs of one product: ``2 size^3``.
    """
    if precision not in PRECISION_DTYPES:
        raise ValueError(
            f"dense_matmul_rate: unknown precision {precision!r}, expected one of "
            f"{list(PRECISION_DTYPES)}"
        )
    size = DEFAULT_SIZES.get(device.type, 1024) if size is None else size
    if size < 1 or repeats < 1:
        raise ValueError(f"dense_matmul_rate: size and repeats must be >= 1, got {size}, {repeats}")
    dtype = PRECISION_DTYPES[precision]
    # Made on the device (two 8192 x 8192 matrices take seconds on a CPU); their values do not
    # matter, and callers seed their own work afterwards (the benchmark seeds every model).
    left, right = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    out = torch.empty(size, size, device=device, dtype=dtype)
    # The first call initialises the library (threads, handles, kernel selection).
    torch.mm(left, right, out=out)
    seconds = min(timed(lambda: torch.mm(left, right, out=out), device) for _ in range(repeats))
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "size": size,
        "gflop_per_s": 2 * size**3 / seconds / 1e9,
    }
