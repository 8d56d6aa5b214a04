"""The one module that writes logs: Python logging to a file, TensorBoard, tqdm progress bars.

Only rank 0 of a distributed run writes; other ranks get a logger that drops everything.
"""

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

log = logging.getLogger("gsnerf")


def setup_file_logging(run_dir: Path, name: str) -> Path:
    """Send ``gsnerf`` log records to ``<run_dir>/<name>.log`` and to the console."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / f"{name}.log"
    root = logging.getLogger()
    if not any(
        isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path.resolve()
        for h in root.handlers
    ):
        handler = logging.FileHandler(path)
        handler.setFormatter(
            logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] %(message)s")
        )
        root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    if not any(type(h) is logging.StreamHandler for h in root.handlers):
        root.addHandler(logging.StreamHandler())
    return path


class RunLogger:
    """TensorBoard scalars and images plus a tqdm bar; a no-op on non-zero ranks."""

    def __init__(self, run_dir: Path, enabled: bool, use_tensorboard: bool) -> None:
        self.enabled = enabled
        self.writer = (
            SummaryWriter(log_dir=str(run_dir / "tensorboard"))
            if enabled and use_tensorboard
            else None
        )

    def scalars(self, values: dict[str, float], step: int, prefix: str) -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            if value is not None:
                self.writer.add_scalar(f"{prefix}/{key}", float(value), step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """Log an ``h w 3`` uint8 image."""
        if self.writer is not None:
            self.writer.add_image(tag, torch.from_numpy(image).permute(2, 0, 1), step)

    def progress(self, total: int, initial: int, desc: str) -> tqdm:
        return tqdm(
            total=total, initial=initial, desc=desc, disable=not self.enabled, dynamic_ncols=True
        )

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
