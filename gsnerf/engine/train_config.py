"""The training run's settings (``train.*``): schedule, precision, checkpoints, speed options."""

from dataclasses import dataclass, field

from gsnerf.engine.schedule import OptimCfg
from gsnerf.model.compiled_heads import CUDA_TIMED_PARTS, check_compile_mode, check_compile_parts


@dataclass
class TrainCfg:
    # Optimiser steps of the run (spec 4: 300k).
    steps: int = 300_000
    # Target rays per step and scene (spec 4: 1024).
    rays_per_step: int = 1024
    # Scenes (examples) per step and process (spec 4: 1).
    batch_size: int = 1
    # Adam and its warm-up + cosine schedule (spec 4).
    optim: OptimCfg = field(default_factory=OptimCfg)
    # Gradient clipping: "value" (clamp each entry, spec 4), "norm" (global L2) or "none".
    grad_clip: str = "value"
    # Threshold of the gradient clipping (spec 4: 2.0, by value).
    grad_clip_threshold: float = 2.0
    # Numeric precision: "auto" (bf16 autocast on CUDA if supported, else fp32), "fp32",
    # "bf16" or "fp16" (fp16 uses a gradient scaler).
    precision: str = "auto"
    # Device: "auto" (CUDA when present, else CPU), "cpu" or "cuda".
    device: str = "auto"
    # TF32 tensor-core matmuls and convolutions for the fp32 parts on CUDA (no effect on the CPU).
    allow_tf32: bool = True
    # Data-loader worker processes: 0 loads in the training process; -1 chooses (none on a
    # CPU, up to 4 with CUDA: gsnerf.engine.device.data_workers).
    num_workers: int = -1
    # Steps between validations on the held-out scenes (0 = only at the end).
    val_every: int = 5000
    # Held-out views rendered per validation during training (null = all test views).
    val_max_views: int | None = 8
    # Steps between numbered checkpoints (last.pt is rewritten at the same time).
    checkpoint_every: int = 5000
    # Steps between scalar logs.
    log_every: int = 50
    # Stop this launch after this step (checkpoint written), to split a run over job-time
    # limits; resume=true continues it exactly. null = run to ``steps``.
    stop_at_step: int | None = None
    # Consecutive steps with a non-finite loss after which training stops with an error.
    max_nonfinite_steps: int = 20
    # Checkpoint whose weights (only) start the run, e.g. per-scene fine-tuning (spec 6).
    init_weights: str = ""
    # torch.compile of parts of the model for the training steps (forward and backward; the
    # validation renders use them too): "none" or a mode of eval.compile. The same losses and
    # gradients as eager steps up to float32 rounding (tests). Off by default: on a CPU the first
    # step compiles for minutes and the steps are no faster (tiny model, 512 rays, N = 4: 1.06
    # steps/s against 1.20 eager, benchmarks/), and on a GPU it is not yet timed (the benchmark's
    # train_compile).
    compile: str = "none"
    # What train.compile compiles (of eval.compile_parts' choices): the CUDA benchmark's three.
    compile_parts: list[str] = field(default_factory=lambda: list(CUDA_TIMED_PARTS))
    # C++ kernels on a CPU, forward and backward: the cost volumes' warp and group correlation
    # (gsnerf.model.cpu_correlation), GroupNorm + LeakyReLU pairs (cpu_volume_norm), depth-logit
    # convolutions (cpu_logit_conv) and the blocks' attention (cpu_set_attention); a tiny-model
    # step (512 rays, 4 views, one thread) 322 against 355 ms with the last, 373 against 477 with
    # the first two. Validation renders: all of eval.cpu_kernels. The same numbers to float32
    # rounding; no effect on CUDA; without a C++ compiler, a warning and the PyTorch code.
    cpu_kernels: bool = True
    # CUDA, Triton kernels (also in validation), off until timed in training steps (the
    # benchmark's options of these names): the cost volumes' warp, correlation and convolutions,
    # forward and backward (gsnerf/model/fused_correlation.py, fused_volume_conv.py; the same
    # gradients to rounding, tests), and D_T (fused_guide_depth.py; detached source depths).
    fused_volumes: bool = False
    fused_guide_depth: bool = False

    def __post_init__(self) -> None:
        check_compile_mode(self.compile, "train.compile")
        check_compile_parts(self.compile_parts, "train.compile_parts")
